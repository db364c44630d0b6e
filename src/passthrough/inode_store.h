// The inodes the guest knows: FUSE node id -> O_PATH fd of the host inode.
#pragma once

#include <sys/types.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <unordered_map>

#include "fuse/filesystem.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// What makes a host inode unique: the same (dev, ino) may exist on two
/// mounts of the same filesystem (bind mounts), so the mount id is part of it.
struct InodeKey {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t mnt_id = 0;
  auto operator<=>(const InodeKey&) const = default;
};

/// One inode. Immutable once published; the lookup count lives in the store.
struct InodeData {
  fuse::InodeId id = 0;
  UniqueFd fd;  // O_PATH | O_NOFOLLOW: never usable for I/O by itself
  InodeKey key;
  mode_t type = 0;  // S_IFMT bits, fixed for the inode's life
};

/// Thread-safe map of node ids to inodes, with the reverse key -> id map so
/// that one host inode always has one node id. Ids are never reused within
/// the store's life. Callers hold a shared_ptr while they use an inode, so a
/// concurrent FORGET never closes an fd under a running syscall: the fd closes
/// when the last user lets go.
class InodeStore {
 public:
  /// Installs the root (node id 1). It is never freed by forget or clear.
  void set_root(UniqueFd fd, InodeKey key);

  /// The inode with this id, or null.
  std::shared_ptr<const InodeData> get(fuse::InodeId id) const;

  /// Takes one lookup reference on the inode with `key`, creating it from
  /// `fd` when it is not known yet (else `fd` is closed). Returns the inode.
  std::shared_ptr<const InodeData> insert_or_ref(UniqueFd fd, InodeKey key, mode_t type);

  /// Takes one more lookup reference on a known inode; false if unknown.
  bool add_ref(fuse::InodeId id);

  /// Drops `count` references (saturating); the inode is removed at zero.
  /// Unknown ids are ignored: the guest may forget what a reset dropped.
  void forget(fuse::InodeId id, uint64_t count);

  /// Removes every inode except the root (session end).
  void clear_except_root();

  size_t size() const;
  /// Lookup references held on `id` (0 if unknown). For tests and diagnostics.
  uint64_t refcount(fuse::InodeId id) const;

 private:
  struct Slot {
    std::shared_ptr<const InodeData> data;
    uint64_t refcount = 0;
  };

  mutable std::shared_mutex mutex_;
  std::unordered_map<fuse::InodeId, Slot> by_id_;
  std::map<InodeKey, fuse::InodeId> by_key_;
  fuse::InodeId next_id_ = fuse::kRootInode + 1;
};

}  // namespace vfsd::passthrough
