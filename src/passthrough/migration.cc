// PassthroughFs's part of a live migration: what the guest holds (inodes
// and handles) turned into migration::State records on the source, and
// rebuilt from them on the destination (docs/migration.md).
//
// find-paths: preparation (from LOG_ALL on, the guest running) finds every
// inode's path: from /proc/self/fd (the kernel follows renames and unlinks,
// also those made behind our back), else by a search of the shared
// directory. At switch-over each path is confirmed (opened again from the
// share, the inode compared: what --migration-confirm-paths asks for,
// always); one that no longer names its inode, and an inode preparation did
// not see, is found again the same way. file-handles: the inode's host file
// handle, which also reaches a file the guest holds open after its last
// name went.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "passthrough/passthrough_fs.h"
#include "passthrough/safe_open.h"
#include "util/log.h"

namespace vfsd::passthrough {

namespace {

using migration::InodeLocation;
using migration::InodeRecord;

// (dev, ino, mount id) of what `fd` refers to, as the inode store keys it.
Result<std::pair<InodeKey, mode_t>> key_of(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_INO | STATX_MNT_ID,
              &stx) != 0)
    return fail_errno();
  InodeKey key{makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino,
               (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0};
  return std::pair{key, static_cast<mode_t>(stx.stx_mode & S_IFMT)};
}

// The link /proc/self/fd shows for our fd.
Result<std::string> proc_path(int proc_self_fd, const UniqueFd& fd) {
  std::string buf(PATH_MAX + 1, '\0');
  const ssize_t n = ::readlinkat(proc_self_fd, ProcFdName(fd).c_str(), buf.data(), buf.size());
  if (n < 0) return fail_errno();
  if (static_cast<size_t>(n) >= buf.size()) return fail(ENAMETOOLONG);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// Opens `path` (components below `root_fd`, "" for the root) one component
// at a time beneath the previous one: no symlink and no ".." is followed.
Result<UniqueFd> open_below(int root_fd, const std::string& path) {
  UniqueFd dir(::fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!dir) return fail_errno();
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string component = path.substr(start, end - start);
    VFSD_ASSIGN_OR_RETURN(dir, open_beneath(dir.get(), component.c_str(), O_PATH));
    start = end + 1;
  }
  return dir;
}

// The most entries the fallback search looks at: the guest makes the tree,
// and the search runs while the guest is stopped.
constexpr size_t kMaxSearchEntries = size_t{1} << 20;

// Paths for the keys in `wanted`, found by walking the shared directory
// (the fallback when /proc/self/fd names no usable path). Stays on the
// root's filesystem; stops once everything is found, or after
// kMaxSearchEntries entries (what is not found then goes as invalid).
void search_paths(int root_fd, std::map<std::pair<uint64_t, uint64_t>, std::string*>& wanted) {
  struct Dir {
    UniqueFd fd;
    std::string path;
  };
  struct stat root_st {};
  if (::fstat(root_fd, &root_st) != 0) return;
  std::vector<Dir> todo;
  if (auto root = open_beneath(root_fd, ".", O_RDONLY | O_DIRECTORY))
    todo.push_back({std::move(*root), ""});
  size_t left = wanted.size();
  size_t seen = 0;
  while (!todo.empty() && left > 0 && seen < kMaxSearchEntries) {
    Dir dir = std::move(todo.back());
    todo.pop_back();
    DIR* stream = ::fdopendir(::fcntl(dir.fd.get(), F_DUPFD_CLOEXEC, 0));
    if (stream == nullptr) continue;
    while (dirent* e = ::readdir(stream)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (++seen >= kMaxSearchEntries) {
        log::warn("migration: the search for paths stopped after {} entries", seen);
        break;
      }
      struct stat st {};
      if (::fstatat(::dirfd(stream), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      const std::string path = dir.path.empty() ? std::string(name) : dir.path + "/" + e->d_name;
      if (auto it = wanted.find({st.st_dev, st.st_ino});
          it != wanted.end() && it->second->empty()) {
        *it->second = path;
        if (--left == 0) break;
      }
      if (S_ISDIR(st.st_mode) && st.st_dev == root_st.st_dev) {
        if (auto sub = open_beneath(::dirfd(stream), e->d_name, O_RDONLY | O_DIRECTORY))
          todo.push_back({std::move(*sub), path});
      }
    }
    ::closedir(stream);
  }
}

// Text from the source's state, fit for one log line: its bytes come
// through the front-end, so control bytes are shown as \xNN.
std::string printable(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

migration::FileHandleBytes bytes_of(const FileHandle& handle) {
  auto bytes = handle.bytes();
  return {handle.type(), std::vector<uint8_t>(bytes.begin(), bytes.end())};
}

// Whether the open description `fd` holds a lock (flock, OFD or POSIX):
// /proc/self/fdinfo lists them as "lock:" lines.
bool description_holds_lock(int proc_self_fd, const UniqueFd& fd) {
  const std::string name = std::string("../fdinfo/") + ProcFdName(fd).c_str();
  UniqueFd info(::openat(proc_self_fd, name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!info) return false;
  char buf[4096];
  std::string text;
  for (ssize_t n; (n = ::read(info.get(), buf, sizeof buf)) > 0;) text.append(buf, n);
  return text.find("\nlock:") != std::string::npos || text.starts_with("lock:");
}

}  // namespace

bool PassthroughFs::locks_in_use(std::string& why) {
  if (const size_t waiting = locks_.waiter_count(); waiting > 0) {
    why = std::to_string(waiting) + " lock request(s) of the guest are waiting";
    return true;
  }
  const int proc = proc_self_fd_.get();
  size_t held = locks_.count_descriptions(
      [proc](const UniqueFd& fd) { return description_holds_lock(proc, fd); });
  for (const auto& [id, handle] : handles_.snapshot())
    held += description_holds_lock(proc, handle->fd) ? 1 : 0;
  if (held == 0) return false;
  why = "the guest holds " + std::to_string(held) +
        " forwarded lock(s) (--posix-lock/--flock), which cannot be handed to another process";
  return true;
}

Result<std::string> PassthroughFs::root_proc_path() const {
  VFSD_ASSIGN_OR_RETURN(auto root, inodes_.get_stored(fuse::kRootInode));
  auto path = proc_path(proc_self_fd_.get(), root->fd);
  // Every path inside the share starts with this (the sandbox may make the
  // share "/" itself).
  if (path && *path != "/") path->push_back('/');
  return path;
}

bool PassthroughFs::path_names(const std::string& path, const InodeData& data) const {
  if (path.empty()) return false;
  auto root = inodes_.get_stored(fuse::kRootInode);
  if (!root) return false;
  auto opened = open_below((*root)->fd.get(), path);
  if (!opened) return false;
  auto key = key_of(opened->get());
  return key && key->first.dev == data.key.dev && key->first.ino == data.key.ino;
}

InodeRecord PassthroughFs::describe_inode(const MigrationOptions& options, const InodeData& data,
                                          uint64_t lookups, const std::string& root_path,
                                          const std::string* prepared) {
  InodeRecord record;
  record.id = data.id.value();
  record.lookups = lookups;
  record.type = data.type;
  auto invalid = [&](std::string why) {
    record.location = InodeLocation::kInvalid;
    record.path.clear();
    record.handle.reset();
    record.error = std::move(why);
    return record;
  };
  // The file handle: kept, or made now from the inode's fd.
  std::optional<FileHandle> handle;
  if (data.handle) {
    handle = *data.handle;
  } else if (options.file_handles || options.verify_handles) {
    auto made = FileHandle::from_fd(data.fd.get());
    if (!made) return invalid("no file handle: " + errno_name(made.error().value));
    handle = *made;
  }
  if (options.file_handles) {
    record.location = InodeLocation::kFileHandle;
    record.handle = bytes_of(*handle);
    return record;
  }
  record.location = InodeLocation::kPath;
  if (handle && options.verify_handles) record.handle = bytes_of(*handle);
  // Confirmed: the path names this very inode now (not a file that took
  // the name of one unlinked, whose link ends in " (deleted)").
  if (prepared != nullptr && path_names(*prepared, data)) {
    record.path = *prepared;
    return record;
  }
  // The kernel's path of an fd of the inode.
  auto opened = inodes_.open(data.id);
  if (!opened) return invalid("cannot open it: " + errno_name(opened.error().value));
  auto link = proc_path(proc_self_fd_.get(), (*opened)->fd);
  if (link && link->size() > root_path.size() &&
      link->compare(0, root_path.size(), root_path) == 0) {
    record.path = link->substr(root_path.size());
    if (!path_names(record.path, data)) record.path.clear();
  }
  return record;  // an empty path: the caller searches
}

void PassthroughFs::prepare_migration(const MigrationOptions& options,
                                      const std::atomic<bool>& cancel) {
  if (options.file_handles) return;  // handles need no finding
  auto root_path = root_proc_path();
  if (!root_path) return;
  MigrationOptions find = options;
  find.verify_handles = false;  // only the paths are kept
  std::unordered_map<uint64_t, std::string> found;
  std::map<std::pair<uint64_t, uint64_t>, std::string*> unnamed;
  std::vector<std::pair<std::shared_ptr<const InodeData>, std::string>> missing;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& [data, lookups] : inodes_.snapshot()) {
    if (cancel.load(std::memory_order_relaxed)) return;
    if (data->id == fuse::kRootInode) continue;
    InodeRecord record = describe_inode(find, *data, lookups, *root_path);
    if (record.location != InodeLocation::kPath) continue;
    if (record.path.empty()) {
      missing.emplace_back(data, std::string());
    } else {
      found.emplace(record.id, std::move(record.path));
    }
  }
  for (auto& [data, path] : missing) unnamed[{data->key.dev, data->key.ino}] = &path;
  if (!unnamed.empty() && !cancel.load(std::memory_order_relaxed))
    search_paths(inodes_.get_stored(fuse::kRootInode).value()->fd.get(), unnamed);
  for (auto& [data, path] : missing) {
    if (!path.empty()) found.emplace(data->id.value(), std::move(path));
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  log::info("migration: prepared the paths of {} inode(s) in {} ms", found.size(), ms);
  std::lock_guard lock(prepared_mutex_);
  prepared_paths_ = std::move(found);
}

void PassthroughFs::drop_migration_preparation() {
  std::lock_guard lock(prepared_mutex_);
  prepared_paths_.clear();
}

size_t PassthroughFs::prepared_path_count() const {
  std::lock_guard lock(prepared_mutex_);
  return prepared_paths_.size();
}

VoidResult PassthroughFs::save_migration_state(const MigrationOptions& options,
                                               migration::State& out) {
  if (std::string why; locks_in_use(why)) {
    log::error("migration refused: {}", why);
    return fail(EBUSY);
  }
  const auto root = inodes_.get_stored(fuse::kRootInode);
  if (!root) return tl::unexpected(root.error());
  VFSD_ASSIGN_OR_RETURN(const std::string root_path, root_proc_path());
  std::unordered_map<uint64_t, std::string> prepared;
  {
    std::lock_guard lock(prepared_mutex_);
    prepared.swap(prepared_paths_);
  }

  out.inodes.clear();
  std::map<std::pair<uint64_t, uint64_t>, std::string*> unnamed;
  auto inodes = inodes_.snapshot();
  out.inodes.reserve(inodes.size());
  for (const auto& [data, lookups] : inodes) {
    if (data->id == fuse::kRootInode) {
      InodeRecord record;
      record.id = data->id.value();
      record.lookups = lookups;
      record.type = S_IFDIR;
      record.location = InodeLocation::kPath;
      out.inodes.push_back(std::move(record));
      continue;
    }
    auto it = prepared.find(data->id.value());
    out.inodes.push_back(describe_inode(options, *data, lookups, root_path,
                                        it == prepared.end() ? nullptr : &it->second));
  }
  for (InodeRecord& record : out.inodes) {
    if (record.location == InodeLocation::kPath && record.path.empty() &&
        record.id != fuse::kRootInode.value()) {
      auto data = inodes_.get_stored(fuse::InodeId{record.id});
      if (data) unnamed[{(*data)->key.dev, (*data)->key.ino}] = &record.path;
    }
  }
  if (!unnamed.empty()) {
    log::info("migration: searching the shared directory for {} inode(s) without a usable path",
              unnamed.size());
    search_paths((*root)->fd.get(), unnamed);
  }
  size_t invalid = 0;
  for (InodeRecord& record : out.inodes) {
    if (record.location == InodeLocation::kPath && record.path.empty() &&
        record.id != fuse::kRootInode.value()) {
      record.location = InodeLocation::kInvalid;
      record.handle.reset();
      record.error = "no path inside the shared directory (unlinked, or moved out of it)";
    }
    if (record.location == InodeLocation::kInvalid) {
      ++invalid;
      log::warn("migration: inode {} cannot be migrated: {}", record.id, record.error);
    }
  }

  out.handles.clear();
  for (const auto& [id, handle] : handles_.snapshot()) {
    migration::HandleRecord record;
    record.id = id.value();
    record.inode = handle->inode.value();
    const int flags = ::fcntl(handle->fd.get(), F_GETFL);
    if (flags < 0) return fail_errno();
    // What reopening needs: the access mode and the flags that change I/O.
    record.open_flags = flags & (O_ACCMODE | O_DIRECT | O_NOATIME | O_SYNC | O_DSYNC | O_NONBLOCK);
    record.is_dir = handle->is_dir;
    record.append = handle->append;
    out.handles.push_back(record);
  }
  out.next_inode_id = inodes_.next_id();
  out.next_handle_id = handles_.next_id();
  log::info("migration: state of {} inode(s) ({} not migratable) and {} handle(s) saved",
            out.inodes.size(), invalid, out.handles.size());
  return ok();
}

Result<UniqueFd> PassthroughFs::find_migrated_inode(const MigrationOptions& options,
                                                    const InodeRecord& record, std::string& why) {
  const auto root = inodes_.get_stored(fuse::kRootInode).value();
  Result<UniqueFd> fd = fail(EINVAL);
  switch (record.location) {
    case InodeLocation::kInvalid:
      why = "the source could not migrate it: " + printable(record.error);
      return fail(EIO);
    case InodeLocation::kPath:
      fd = open_below(root->fd.get(), record.path);
      if (!fd)
        why = "cannot open '" + printable(record.path) + "': " + errno_name(fd.error().value);
      break;
    case InodeLocation::kFileHandle: {
      auto handle = FileHandle::from_bytes(record.handle->type, record.handle->bytes, 0);
      if (handle) fd = handle->open(root->mount->fd.get(), O_PATH);
      if (!handle || !fd)
        why = "cannot open its file handle: " +
              errno_name(handle ? fd.error().value : handle.error().value);
      break;
    }
  }
  if (!fd) return fd;
  VFSD_ASSIGN_OR_RETURN(auto key, key_of(fd->get()));
  if (key.second != record.type) {
    why = "inode " + std::to_string(record.id) + " is not of the source's file type here";
    return fail(ESTALE);
  }
  if (record.location == InodeLocation::kPath && options.verify_handles && record.handle) {
    auto here = FileHandle::from_fd(fd->get());
    auto there = FileHandle::from_bytes(record.handle->type, record.handle->bytes, 0);
    if (!here || !there || !here->same_object(*there)) {
      why = "'" + printable(record.path) +
            "' is another file than the source's (its file handle differs)";
      return fail(ESTALE);
    }
  }
  return fd;
}

VoidResult PassthroughFs::load_migration_state(const MigrationOptions& options,
                                               const migration::State& in) {
  if (inodes_.size() != 1 || handles_.size() != 0) {
    log::error("migration: this daemon serves inodes already; refusing the source's state");
    return fail(EBUSY);
  }
  size_t failed = 0;
  auto give_up = [&](const InodeRecord& record, const std::string& why) -> VoidResult {
    log::error("migration: inode {} ({}): {}", record.id,
               options.abort_on_error ? "the migration is aborted" : "it answers errors", why);
    ++failed;
    if (!options.abort_on_error) return ok();
    destroy();  // nothing of the half-loaded state stays
    return fail(ESTALE);
  };
  for (const InodeRecord& record : in.inodes) {
    const fuse::InodeId id{record.id};
    if (id == fuse::kRootInode) {
      inodes_.set_refcount(id, record.lookups);
      continue;
    }
    std::string why;
    auto fd = find_migrated_inode(options, record, why);
    if (!fd) {
      VFSD_TRY(give_up(record, why));
      continue;
    }
    auto key = key_of(fd->get());
    std::optional<FileHandle> handle;
    if (config_.inode_file_handles != InodeFileHandles::kNever) {
      if (auto made = FileHandle::from_fd(fd->get())) handle = *made;
    }
    inodes_.set_next_id(record.id);
    auto data = key ? inodes_.insert_or_ref(std::move(*fd), key->first, key->second, handle)
                    : Result<std::shared_ptr<const InodeData>>(tl::unexpected(key.error()));
    if (!data || (*data)->id != id) {
      VFSD_TRY(give_up(
          record, data ? "it is the same host inode as inode " + std::to_string((*data)->id.value())
                       : "cannot register it: " + errno_name(data.error().value)));
      continue;
    }
    inodes_.set_refcount(id, record.lookups);
  }
  inodes_.set_next_id(in.next_inode_id);

  for (const migration::HandleRecord& record : in.handles) {
    const fuse::InodeId inode{record.inode};
    auto data = inodes_.get_stored(inode);
    if (!data) continue;  // its inode failed above (guest-error): the handle answers EBADF
    auto charge = fd_budget_.acquire();
    auto fd = charge ? reopen_io(**data, record.open_flags | O_CLOEXEC)
                     : Result<UniqueFd>(tl::unexpected(charge.error()));
    if (!fd) {
      InodeRecord named;
      named.id = record.inode;
      VFSD_TRY(give_up(named, "cannot reopen handle " + std::to_string(record.id) + ": " +
                                  errno_name(fd.error().value)));
      continue;
    }
    auto h = std::make_shared<HandleData>();
    h->inode = inode;
    h->fd = std::move(*fd);
    h->charge = std::move(*charge);
    h->is_dir = record.is_dir;
    h->append = record.append;
    handles_.insert_with_id(fuse::HandleId{record.id}, std::move(h));
  }
  handles_.set_next_id(in.next_handle_id);
  log::info("migration: {} inode(s) and {} handle(s) restored{}", inodes_.size(), handles_.size(),
            failed ? " (" + std::to_string(failed) + " failed: they answer errors)" : "");
  return ok();
}

}  // namespace vfsd::passthrough
