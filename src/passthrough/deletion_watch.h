// Proof that a handle inode is still alive, without a second path walk.
//
// Under --inode-file-handles the daemon holds no fd per inode, so the host may
// delete an inode the guest knows and give its number to a new file. A lookup
// that stats a name and finds a known number must then prove that the stored
// object is the one there, which costs a name_to_handle_at (a second walk, a
// third of a lookup's CPU). An inotify mark on the inode proves it more
// cheaply: the mark holds the in-memory inode, so its number stays taken, yet
// the kernel removes the mark by itself when the inode's last link goes
// (IN_DELETE_SELF, IN_IGNORED) and when its filesystem is unmounted. So it
// keeps no deleted file's space and blocks no unmount, the two things an fd
// per inode would do and prefer exists to avoid. While the mark is there and
// no event says it went, a stat that shows the inode's number shows the inode
// itself; the check is one ioctl (FIONREAD) on the inotify fd.
//
// Only where a live inode holds its number against every other change: local
// filesystems (ext2/3/4, xfs, btrfs, f2fs, tmpfs). On NFS, CIFS, 9p, FUSE or
// overlayfs another machine or layer may delete the file and give its number
// to a new one with no event here, so their inodes keep the handle compare.
//
// Marks are few: at most the limit the app derives from the host's
// max_user_watches (which every program of the same user shares), and given
// lazily, to inodes the guest looks up again.
// Pinned by: deletion_watch_test.cc(DeletionWatchTest.*),
//   file_handle_test.cc(FileHandleTest.MarkedInodeNumberReusedByTheHostIsANewInode)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "util/unique_fd.h"

namespace vfsd::passthrough {

class DeletionWatch;

/// One inode's place in a DeletionWatch: a member of its InodeData. Removes
/// the inode's mark when destroyed.
class WatchSlot {
 public:
  WatchSlot() = default;
  WatchSlot(const WatchSlot&) = delete;
  WatchSlot& operator=(const WatchSlot&) = delete;
  ~WatchSlot();

 private:
  friend class DeletionWatch;
  enum State : uint8_t {
    kUnmarked,  // no mark yet; one may be tried
    kClaimed,   // a thread is marking it
    kMarked,    // the mark is (or an event still queued says it was) on the inode
    kGone,      // no mark, and none will be tried again
  };
  std::atomic<uint8_t> state_{kUnmarked};
  struct Core;
  std::shared_ptr<Core> core_;  // set with kMarked: keeps the inotify fd alive
  int wd_ = -1;
};

/// Whether a mark proves identity on a filesystem of this statfs f_type:
/// deletion there is always local and a live inode keeps its number.
bool marks_prove_identity_on(int64_t filesystem_type);

class DeletionWatch {
 public:
  /// At most `max_marks` marks; null when inotify is unavailable or
  /// `max_marks` is 0 (lookups then keep the second walk).
  /// `proc_self_fd` (an fd of /proc/self/fd) must outlive the watch.
  static std::unique_ptr<DeletionWatch> create(int proc_self_fd, size_t max_marks);
  ~DeletionWatch();

  /// Whether mark() would try `slot` now (a cheap check before the caller
  /// opens the inode for it).
  bool wants(const WatchSlot& slot) const;
  /// Marks the inode `path_fd` holds (an fd of exactly that inode, O_PATH
  /// will do) for `slot`. False when not marked: past the limit (tried again
  /// later), or for good when the inode has no link left (a mark would pin a
  /// deleted file), when its filesystem is not one where a mark proves
  /// identity, when another slot already marks the same inode (it is
  /// reachable through two mounts), or on any error.
  bool mark(WatchSlot& slot, const UniqueFd& path_fd);
  /// True when `slot`'s mark is certainly still on its inode, so the inode
  /// is alive and no other file has its number. Reads the queued events
  /// first when there are any.
  bool pinned(const WatchSlot& slot);

  /// Marks held now (reads the queued events first). For tests and
  /// diagnostics.
  size_t marks() const;

 private:
  explicit DeletionWatch(std::shared_ptr<WatchSlot::Core> core);
  std::shared_ptr<WatchSlot::Core> core_;
};

}  // namespace vfsd::passthrough
