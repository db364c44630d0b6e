#include "passthrough/inode_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "passthrough/safe_open.h"

namespace vfsd::passthrough {

void InodeStore::set_root(UniqueFd fd, InodeKey key) {
  auto data = std::make_shared<InodeData>();
  data->id = fuse::kRootInode;
  // The root keeps its fd in every mode: one fd, and the anchor of the share.
  if (auto mount = mount_for(key.mnt_id, fd.get(), S_IFDIR, /*charged=*/false)) {
    data->mount = std::move(*mount);
  }
  data->fd = std::move(fd);
  data->key = key;
  data->type = S_IFDIR;
  std::unique_lock lock(mutex_);
  by_key_[key] = fuse::kRootInode;
  by_id_[fuse::kRootInode] = Slot{std::move(data), 1};
}

std::shared_ptr<const InodeData> InodeStore::stored(fuse::InodeId id) const {
  std::shared_lock lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.data;
}

Result<std::shared_ptr<const InodeData>> InodeStore::get_stored(fuse::InodeId id) const {
  auto data = stored(id);
  if (!data) return fail(EBADF);
  return data;
}

Result<std::shared_ptr<const InodeData>> InodeStore::open(fuse::InodeId id) const {
  auto data = stored(id);
  if (!data) return fail(EBADF);
  if (!data->handle) return data;
  if (!data->mount) return fail(EBADF);  // insert_or_ref never makes one
  // A private fd for this request: a concurrent FORGET may drop the stored
  // inode, but cannot close what the caller is using. The MountFd stays alive
  // through `data`, so its fd is not closed under this call either.
  VFSD_ASSIGN_OR_RETURN(auto fd, data->handle->open(data->mount->fd.get(), O_PATH));
  auto copy = std::make_shared<InodeData>();
  copy->id = data->id;
  copy->fd = std::move(fd);
  copy->key = data->key;
  copy->type = data->type;
  copy->handle = data->handle;
  copy->mount = data->mount;
  return std::shared_ptr<const InodeData>(std::move(copy));
}

Result<std::shared_ptr<const MountFd>> InodeStore::mount_for(uint64_t mnt_id, int fd_on_mount,
                                                             mode_t type, bool charged) {
  {
    std::shared_lock lock(mounts_mutex_);
    auto it = mounts_.find(mnt_id);
    if (it != mounts_.end()) {
      if (auto live = it->second.lock()) return live;
    }
  }
  std::unique_lock lock(mounts_mutex_);
  auto& slot = mounts_[mnt_id];
  if (auto live = slot.lock()) return live;  // made by another thread meanwhile
  auto mount = std::make_shared<MountFd>();
  mount->mnt_id = mnt_id;
  if (charged && fd_budget_ != nullptr) {
    auto charge = fd_budget_->acquire();
    if (!charge) {
      mounts_.erase(mnt_id);
      return tl::unexpected(charge.error());
    }
    mount->charge = std::move(*charge);
  }
  // open_by_handle_at refuses O_PATH mount fds (EBADF): a directory
  // is opened for real (reading it has no side effects); anything else (a
  // bind-mounted file) stays O_PATH and only keeps the mount known.
  if (S_ISDIR(type)) {
    auto opened = open_beneath(fd_on_mount, ".", O_RDONLY | O_DIRECTORY);
    if (opened) mount->fd = std::move(*opened);
    errno = opened ? 0 : opened.error().value;
  } else {
    mount->fd.reset(::fcntl(fd_on_mount, F_DUPFD_CLOEXEC, 0));
  }
  if (!mount->fd) {
    int error = errno;
    mounts_.erase(mnt_id);
    return fail(error);
  }
  mount->type = type & S_IFMT;
  std::shared_ptr<const MountFd> published = std::move(mount);
  slot = published;
  // Drop the entries of mounts whose inodes are all gone.
  std::erase_if(mounts_, [](const auto& entry) { return entry.second.expired(); });
  return published;
}

Result<std::shared_ptr<const InodeData>> InodeStore::insert_or_ref(UniqueFd fd, InodeKey key,
                                                                   mode_t type,
                                                                   std::optional<FileHandle> handle,
                                                                   Budget::Charge* prepaid) {
  // An inode needs one of the two (a caller with a handle may pass no fd).
  if (!fd && !handle) return fail(EBADF);
  std::shared_ptr<const MountFd> mount;
  {
    // Found before the store's lock (the two locks are never held together).
    // The handle's own mount id is the one open_by_handle_at needs.
    uint64_t mnt_id = handle ? handle->mount_id() : key.mnt_id;
    auto found = mount_for(mnt_id, fd.get(), type);
    if (found) {
      mount = std::move(*found);
    } else if (handle) {
      return tl::unexpected(found.error());
    }
    // A mount known only through a non-directory (a bind-mounted file, whose
    // only inode this is) has no fd to open handles with: keep the fd.
    if (handle && !mount->opens_handles()) {
      if (!fd) return fail(EBADF);
      handle.reset();
    }
  }
  std::shared_ptr<const InodeData> replaced;  // released after the lock
  std::unique_lock lock(mutex_);
  if (auto known = by_key_.find(key); known != by_key_.end()) {
    Slot& slot = by_id_.at(known->second);
    // A held fd pins its inode, so its number cannot have been reused; two
    // handles of different objects mean the stored one was deleted.
    const bool same = !handle || !slot.data->handle || slot.data->handle->same_object(*handle);
    if (same) {
      ++slot.refcount;
      auto data = slot.data;
      lock.unlock();
      return data;  // `fd` (a duplicate O_PATH of the same inode) closes here
    }
  }
  auto data = std::make_shared<InodeData>();
  // A new inode: its unit first, so that one past the budget changes nothing.
  if (!handle && prepaid != nullptr && prepaid->units() > 0) {
    data->charge = prepaid->take(1);
  } else if (Budget* budget = handle ? handle_budget_ : fd_budget_) {
    VFSD_ASSIGN_OR_RETURN(auto charge, budget->acquire());
    data->charge = std::move(charge);
  }
  data->id = fuse::InodeId{next_id_++};
  if (handle) {
    data->handle = std::make_shared<const FileHandle>(*handle);
  } else {
    data->fd = std::move(fd);
  }
  data->key = key;
  data->type = type & S_IFMT;
  data->mount = std::move(mount);
  by_key_[key] = data->id;
  by_id_[data->id] = Slot{data, 1};
  return std::shared_ptr<const InodeData>(std::move(data));
}

void InodeStore::keep_fd(const InodeKey& key, UniqueFd fd) {
  std::shared_ptr<const InodeData> replaced;  // released after the lock
  std::unique_lock lock(mutex_);
  auto known = by_key_.find(key);
  if (known == by_key_.end()) return;
  Slot& slot = by_id_.at(known->second);
  if (!slot.data->handle) return;
  auto data = std::make_shared<InodeData>();
  if (fd_budget_ != nullptr) {
    auto charge = fd_budget_->acquire();
    if (!charge) return;
    data->charge = std::move(*charge);
  }
  data->id = slot.data->id;
  data->fd = std::move(fd);
  data->key = key;
  data->type = slot.data->type;
  data->mount = slot.data->mount;
  // Requests under way keep the copy they hold; the handle's budget unit
  // goes with the old data.
  replaced = std::exchange(slot.data, std::move(data));
}

std::shared_ptr<const InodeData> InodeStore::find(const InodeKey& key) const {
  std::shared_lock lock(mutex_);
  auto known = by_key_.find(key);
  if (known == by_key_.end()) return nullptr;
  auto it = by_id_.find(known->second);
  return it == by_id_.end() ? nullptr : it->second.data;
}

std::shared_ptr<const InodeData> InodeStore::ref_by_key(const InodeKey& key) {
  std::unique_lock lock(mutex_);
  auto known = by_key_.find(key);
  if (known == by_key_.end()) return nullptr;
  auto it = by_id_.find(known->second);
  if (it == by_id_.end()) return nullptr;
  ++it->second.refcount;
  return it->second.data;
}

bool InodeStore::add_ref(fuse::InodeId id) {
  std::unique_lock lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  ++it->second.refcount;
  return true;
}

void InodeStore::forget(fuse::InodeId id, uint64_t count) {
  std::shared_ptr<const InodeData> freed;  // released after the lock
  std::unique_lock lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Slot& slot = it->second;
  slot.refcount -= std::min(count, slot.refcount);
  if (slot.refcount > 0 || id == fuse::kRootInode) return;
  freed = std::move(slot.data);
  // The key may already name a newer inode that reused the number.
  if (auto k = by_key_.find(freed->key); k != by_key_.end() && k->second == id) by_key_.erase(k);
  by_id_.erase(it);
  lock.unlock();
}

void InodeStore::clear_except_root() {
  std::vector<std::shared_ptr<const InodeData>> freed;  // closed after the lock
  std::unique_lock lock(mutex_);
  for (auto it = by_id_.begin(); it != by_id_.end();) {
    if (it->first == fuse::kRootInode) {
      it->second.refcount = 1;
      ++it;
      continue;
    }
    const InodeKey& key = it->second.data->key;
    if (auto k = by_key_.find(key); k != by_key_.end() && k->second == it->first) by_key_.erase(k);
    freed.push_back(std::move(it->second.data));
    it = by_id_.erase(it);
  }
  lock.unlock();
}

bool InodeStore::first_report_for_mount(uint64_t mnt_id) {
  std::unique_lock lock(mounts_mutex_);
  return reported_mounts_.insert(mnt_id).second;
}

InodeKey InodeStore::root_key() const {
  std::shared_lock lock(mutex_);
  auto it = by_id_.find(fuse::kRootInode);
  return it == by_id_.end() ? InodeKey{} : it->second.data->key;
}

size_t InodeStore::size() const {
  std::shared_lock lock(mutex_);
  return by_id_.size();
}

uint64_t InodeStore::refcount(fuse::InodeId id) const {
  std::shared_lock lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? 0 : it->second.refcount;
}

std::vector<std::pair<std::shared_ptr<const InodeData>, uint64_t>> InodeStore::snapshot() const {
  std::shared_lock lock(mutex_);
  std::vector<std::pair<std::shared_ptr<const InodeData>, uint64_t>> out;
  out.reserve(by_id_.size());
  for (const auto& [id, slot] : by_id_) out.emplace_back(slot.data, slot.refcount);
  return out;
}

uint64_t InodeStore::next_id() const {
  std::shared_lock lock(mutex_);
  return next_id_;
}

void InodeStore::set_next_id(uint64_t id) {
  std::unique_lock lock(mutex_);
  next_id_ = id;
}

bool InodeStore::set_refcount(fuse::InodeId id, uint64_t count) {
  std::unique_lock lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  it->second.refcount = count;
  return true;
}

}  // namespace vfsd::passthrough
