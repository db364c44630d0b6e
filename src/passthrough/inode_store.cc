#include "passthrough/inode_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace vfsd::passthrough {

void InodeStore::set_root(UniqueFd fd, InodeKey key) {
  auto data = std::make_shared<InodeData>();
  data->id = fuse::kRootInode;
  data->fd = std::move(fd);
  data->key = key;
  data->type = S_IFDIR;
  std::unique_lock lock(mutex_);
  by_key_[key] = fuse::kRootInode;
  by_id_[fuse::kRootInode] = Slot{std::move(data), 1};
}

std::shared_ptr<const InodeData> InodeStore::get(fuse::InodeId id) const {
  std::shared_lock lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.data;
}

std::shared_ptr<const InodeData> InodeStore::insert_or_ref(UniqueFd fd, InodeKey key, mode_t type) {
  std::unique_lock lock(mutex_);
  if (auto known = by_key_.find(key); known != by_key_.end()) {
    Slot& slot = by_id_.at(known->second);
    ++slot.refcount;
    auto data = slot.data;
    lock.unlock();
    return data;  // `fd` (a duplicate O_PATH of the same inode) closes here
  }
  auto data = std::make_shared<InodeData>();
  data->id = next_id_++;
  data->fd = std::move(fd);
  data->key = key;
  data->type = type & S_IFMT;
  by_key_[key] = data->id;
  by_id_[data->id] = Slot{data, 1};
  return data;
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
  by_key_.erase(freed->key);
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
    by_key_.erase(it->second.data->key);
    freed.push_back(std::move(it->second.data));
    it = by_id_.erase(it);
  }
  lock.unlock();
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

}  // namespace vfsd::passthrough
