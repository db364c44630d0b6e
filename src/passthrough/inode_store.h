// The inodes the guest knows: FUSE node id -> host inode, held either as an
// O_PATH fd or (--inode-file-handles) as a file handle.
#pragma once

#include <sys/types.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "fuse/filesystem.h"
#include "passthrough/budget.h"
#include "passthrough/deletion_watch.h"
#include "passthrough/file_handle.h"
#include "util/result.h"
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

struct InodeKeyHash {
  size_t operator()(const InodeKey& key) const noexcept {
    // ino varies most; dev and mnt_id tell the few filesystems apart.
    uint64_t h = key.ino * 0x9e3779b97f4a7c15ULL;
    h ^= (key.dev + (key.mnt_id << 32)) * 0xc2b2ae3d27d4eb4fULL;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

/// One inode. Immutable once published; the lookup count lives in the store.
struct InodeData {
  fuse::InodeId id{0};
  /// O_PATH | O_NOFOLLOW: never usable for I/O by itself. An inode kept as a
  /// handle has no fd in the store; open() hands out a per-request copy
  /// whose fd was opened from the handle and closes with that copy.
  UniqueFd fd;
  InodeKey key;
  mode_t type = 0;  // S_IFMT bits, fixed for the inode's life
  /// Set when the inode is kept as a file handle instead of a held fd.
  std::shared_ptr<const FileHandle> handle;
  /// The mount the inode lives on (null only for an fd inode when no fd could
  /// be spared for a new mount): opens the handle.
  std::shared_ptr<const MountFd> mount;
  /// The unit this inode holds in a budget: one fd of the guest's fd budget
  /// for an fd inode, one of the handle-inode budget for a handle inode; none
  /// for the root and for the per-request copies open() hands out (those fds
  /// live for one request and are covered by the daemon's reserve).
  Budget::Charge charge;
  /// A handle inode's inotify mark, once it has one (DeletionWatch): proves
  /// it alive to a lookup without a second walk. Not copied with the rest.
  mutable WatchSlot watch;
};

/// Thread-safe map of node ids to inodes, with the reverse key -> id map so
/// that one host inode always has one node id. Ids are never reused within
/// the store's life. Callers hold a shared_ptr while they use an inode, so a
/// concurrent FORGET never closes an fd under a running syscall: the fd closes
/// when the last user lets go.
///
/// Also keeps one fd per host mount that has live inodes (MountFd,
/// shared by those inodes): mounts are few and host-made, so this stays
/// bounded, and a mount's fd closes once the guest has forgotten every inode
/// on it (the host can unmount it again).
///
/// Bounded: with budgets set (set_budgets), every inode but the root costs one
/// unit, of `fds` when it holds an O_PATH fd and of `handle_inodes` when it
/// is kept as a file handle, and every MountFd but the root's one unit of
/// `fds`; a new inode past its budget is refused with ENFILE. Lookups of
/// inodes already known take no unit, so they keep working at the limit.
/// Pinned by: file_handle_test.cc(FileHandleTest.StoreGivesAReusedInodeNumberANewNodeId,
///   FileHandleTest.StoreKeepsNoFdForAHandleInodeAndEachGetOpensAPrivateOne),
///   fd_budget_test.cc(FdBudgetTest.*)
class InodeStore {
 public:
  /// Charges new inodes and mount fds to these budgets (null: not counted).
  /// Call before set_root; both must outlive the store.
  void set_budgets(Budget* fds, Budget* handle_inodes) {
    fd_budget_ = fds;
    handle_budget_ = handle_inodes;
  }

  /// Installs the root (node id 1), held as an fd. It is never freed by
  /// forget or clear. Also records the root's mount.
  void set_root(UniqueFd fd, InodeKey key);

  /// The inode with this id, ready for use (its fd stays valid while the
  /// pointer is held), or why not: EBADF for an unknown id; for a handle inode
  /// the open_by_handle_at error, ESTALE when the host deleted the inode
  /// (the guest gets ESTALE too: the inode is gone, not the node id).
  /// Costs one open_by_handle_at (and a close) per call for handle inodes.
  Result<std::shared_ptr<const InodeData>> open(fuse::InodeId id) const;
  /// The inode as stored, with no syscall: a handle inode comes without an
  /// fd (for callers that open it from its handle themselves). EBADF for an
  /// unknown id.
  Result<std::shared_ptr<const InodeData>> get_stored(fuse::InodeId id) const;

  /// Takes one lookup reference on the inode with `key`, creating it from
  /// `fd` when it is not known yet (else `fd` is closed). With `handle`, a
  /// new inode keeps the handle and no fd (`fd`, an O_PATH fd of the inode,
  /// only serves to find a mount fd and then closes; it may be empty when the
  /// handle's mount is known and opens handles, else EBADF). A known key whose
  /// stored handle is a different object is an inode the host deleted and
  /// whose number it reused: the new inode gets a new node id (the old one
  /// answers ESTALE until forgotten). Fails when a new mount's fd cannot be
  /// duplicated, and with ENFILE when a new inode (or the fd of its new
  /// mount) is past its budget. A new fd inode takes its unit from `prepaid`
  /// when that has one left (a creating request reserves its units before it
  /// changes the host).
  Result<std::shared_ptr<const InodeData>> insert_or_ref(UniqueFd fd, InodeKey key, mode_t type,
                                                         std::optional<FileHandle> handle,
                                                         Budget::Charge* prepaid = nullptr);

  /// A handle inode with `key` keeps `fd` (an O_PATH fd of it) from now on:
  /// once its last name is gone (unlink, rename over it) a handle no longer
  /// opens, but the guest may still use the inode (write back its times).
  /// Nothing happens for an fd inode, an unknown key, or past the fd budget.
  /// Pinned by: file_handle_test.cc(FileHandleTest.WhatTheGuestUnlinksOrRenamesOverStaysReachable)
  void keep_fd(const InodeKey& key, UniqueFd fd);

  /// The inode stored under `key`, or null; takes no reference.
  std::shared_ptr<const InodeData> find(const InodeKey& key) const;
  /// The inode stored under `key` with one more lookup reference taken, or
  /// null (nothing taken). A caller that then finds it is not the inode it
  /// wanted gives the reference back with forget(id, 1).
  std::shared_ptr<const InodeData> ref_by_key(const InodeKey& key);

  /// Takes one more lookup reference on a known inode; false if unknown.
  bool add_ref(fuse::InodeId id);

  /// Drops `count` references (saturating); the inode is removed at zero.
  /// Unknown ids are ignored: the guest may forget what a reset dropped.
  void forget(fuse::InodeId id, uint64_t count);

  /// Removes every inode except the root (session end).
  void clear_except_root();

  /// True the first time it is called for `mnt_id`: lets a caller log a
  /// per-filesystem condition (no file handles) once.
  bool first_report_for_mount(uint64_t mnt_id);

  /// The root's key (set_root()).
  InodeKey root_key() const;

  size_t size() const;
  /// Lookup references held on `id` (0 if unknown). For tests and diagnostics.
  uint64_t refcount(fuse::InodeId id) const;

  // --- migration ---------------------------------------------------------
  /// Every stored inode with its lookup count (root included), for a
  /// migration's source. Handle inodes come as stored (without an fd).
  std::vector<std::pair<std::shared_ptr<const InodeData>, uint64_t>> snapshot() const;
  /// The id the next new inode gets.
  uint64_t next_id() const;
  /// A migration's destination: the next new inode gets `id` (above every
  /// id in use), so that insert_or_ref() recreates the source's numbering.
  void set_next_id(uint64_t id);
  /// Sets the lookup count of a known inode (the source's); false if unknown.
  bool set_refcount(fuse::InodeId id, uint64_t count);

 private:
  struct Slot {
    std::shared_ptr<const InodeData> data;
    uint64_t refcount = 0;
  };

  // The MountFd of `mnt_id`, made from a duplicate of `fd_on_mount` (an fd on
  // that mount, of type `type`) when the mount has none yet.
  // Charged to the fd budget unless `charged` is false (the root's mount).
  Result<std::shared_ptr<const MountFd>> mount_for(uint64_t mnt_id, int fd_on_mount, mode_t type,
                                                   bool charged = true);
  std::shared_ptr<const InodeData> stored(fuse::InodeId id) const;

  mutable std::shared_mutex mutex_;
  std::unordered_map<fuse::InodeId, Slot> by_id_;
  std::unordered_map<InodeKey, fuse::InodeId, InodeKeyHash> by_key_;
  uint64_t next_id_ = fuse::kRootInode.value() + 1;  // the next InodeId
  Budget* fd_budget_ = nullptr;
  Budget* handle_budget_ = nullptr;

  // Never held together with mutex_.
  mutable std::shared_mutex mounts_mutex_;
  std::map<uint64_t, std::weak_ptr<const MountFd>> mounts_;
  std::set<uint64_t> reported_mounts_;
};

}  // namespace vfsd::passthrough
