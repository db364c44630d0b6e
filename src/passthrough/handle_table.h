// Open files and directories the guest holds: FUSE handle -> real fd.
#pragma once

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "fuse/filesystem.h"
#include "passthrough/budget.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

struct HandleData {
  fuse::InodeId inode{0};
  UniqueFd fd;            // opened for I/O (never O_PATH)
  Budget::Charge charge;  // `fd` in the guest's fd budget
  bool is_dir = false;
  // The guest opened the file with O_APPEND. The host fd never has O_APPEND
  // (the guest may mmap the file or change the flag with fcntl); WRITE
  // appends per request instead.
  bool append = false;
  // Directories: READDIR seeks the shared fd to the guest's cookie and reads
  // from there; the pair must not interleave with another READDIR's.
  std::mutex dir_mutex;
  // Directories, guarded by dir_mutex: what getdents64 returned that no
  // reply had room for. A guest reading on from where the last reply ended
  // (the usual case) is served from here: no seek, which would make the
  // host filesystem find its place in the directory again, and no entry
  // read twice from the host.
  struct DirStream {
    std::vector<char> records;  // allocated by the first READDIR
    size_t pos = 0;             // records[pos, end) are not given out yet
    size_t end = 0;
    uint64_t offset = 0;  // the guest's cookie that records[pos] follows
    bool valid = false;   // false: the next READDIR seeks
  } dir_stream;
};

/// Thread-safe handle map. A handle is only usable with the inode it was
/// opened on, so a guest cannot reach a file through another node id.
class HandleTable {
 public:
  fuse::HandleId insert(std::shared_ptr<HandleData> data) {
    std::unique_lock lock(mutex_);
    fuse::HandleId id{next_id_++};
    handles_.emplace(id, std::move(data));
    return id;
  }

  /// The handle if it exists and belongs to `inode`, else null.
  std::shared_ptr<HandleData> get(fuse::HandleId id, fuse::InodeId inode) const {
    std::shared_lock lock(mutex_);
    auto it = handles_.find(id);
    if (it == handles_.end() || it->second->inode != inode) return nullptr;
    return it->second;
  }

  /// Removes the handle (same ownership check as get); the fd closes once no
  /// request still uses it.
  std::shared_ptr<HandleData> remove(fuse::HandleId id, fuse::InodeId inode) {
    std::unique_lock lock(mutex_);
    auto it = handles_.find(id);
    if (it == handles_.end() || it->second->inode != inode) return nullptr;
    auto data = std::move(it->second);
    handles_.erase(it);
    return data;
  }

  void clear() {
    std::unordered_map<fuse::HandleId, std::shared_ptr<HandleData>> old;
    {
      std::unique_lock lock(mutex_);
      old.swap(handles_);
    }
    // `old` closes its fds here, outside the lock.
  }

  size_t size() const {
    std::shared_lock lock(mutex_);
    return handles_.size();
  }

  // --- migration ---------------------------------------------------------
  /// Every handle, for a migration's source.
  std::vector<std::pair<fuse::HandleId, std::shared_ptr<HandleData>>> snapshot() const {
    std::shared_lock lock(mutex_);
    return {handles_.begin(), handles_.end()};
  }
  uint64_t next_id() const {
    std::shared_lock lock(mutex_);
    return next_id_;
  }
  /// A migration's destination: the source's handle under the source's id;
  /// false if the id is taken.
  bool insert_with_id(fuse::HandleId id, std::shared_ptr<HandleData> data) {
    std::unique_lock lock(mutex_);
    return handles_.emplace(id, std::move(data)).second;
  }
  void set_next_id(uint64_t id) {
    std::unique_lock lock(mutex_);
    next_id_ = id;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<fuse::HandleId, std::shared_ptr<HandleData>> handles_;
  uint64_t next_id_ = 1;  // the next HandleId
};

}  // namespace vfsd::passthrough
