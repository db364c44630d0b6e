// Guest file locks forwarded to the host (--posix-lock, --flock), so that two
// guests sharing a directory, or a guest and a host process, exclude each
// other.
//
// POSIX record locks (GETLK/SETLK/SETLKW) become OFD locks (F_OFD_*). An OFD
// lock belongs to an open file description, while a guest lock belongs to a
// lock owner (a process's file table): each (inode, owner) pair gets a
// description of its own, reopened through /proc/self/fd. Keyed by inode and
// not by handle because a process never conflicts with itself: its locks
// taken through two fds of the same file must share one description. The
// description is dropped on FLUSH by that owner (POSIX: any close() by the
// process releases all its locks on the file; the kernel's FUSE client leaves
// that to FLUSH), when every handle it was used through is released, and on
// reset().
//
// flock() (FUSE_LK_FLOCK) becomes a host flock() on the handle's own open
// file description: the guest's flock owner is its open file, which is what a
// FUSE handle is, so exclusion, conversion and release-on-last-close are the
// host's own flock semantics, and guest flock locks meet host flock locks
// (e.g. flock(1) on both sides). This departs from "flock as a whole-file OFD
// lock", which would make a guest flock conflict with the same process's
// fcntl locks (mail programs take both) and miss host flock() holders.
//
// GETLK reports the holder's type and range with pid 0: an OFD or host
// holder has no process the guest could name.
//
// SETLKW never blocks its caller. It first tries without waiting; only a
// conflict starts a waiter thread (one per waiting request, at most
// max_waiters; beyond that SETLKW answers ENOLCK, the errno for "lock table
// full") blocked in F_OFD_SETLKW or flock(). interrupt(), reset() and the
// destructor end a wait by marking it cancelled and sending the thread
// kWakeSignal, whose no-op handler is installed without SA_RESTART so the
// blocked call returns EINTR; the signal is repeated until the thread has
// left the call (it may not have entered it yet when the first one comes).
// The request then answers EINTR; `done` is called exactly once per SETLKW.
// Pinned by: locks_test.cc(LocksTest.*, LockManagerLimits.*, LockManagerReset.*),
//   fd_budget_test.cc(FdBudgetTest.LockOwnerDescriptionsCountAndAnswerEnolckPastIt),
//   session_test.cc(SessionTest.InterruptEndsAWaitingSetlkw)
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "fuse/filesystem.h"
#include "passthrough/budget.h"
#include "passthrough/handle_table.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// The signal that ends a lock wait. Its handler (a no-op, no SA_RESTART) is
/// installed process-wide by the first LockManager; nothing else in the
/// daemon may use it.
inline const int kWakeSignal = SIGUSR2;

struct LockLimits {
  /// SETLKW requests waiting at once; more answer ENOLCK.
  size_t max_waiters = 64;
  /// Open descriptions for POSIX lock owners; a guest cannot make us hold
  /// more host fds than this through locks (more answer ENOLCK).
  size_t max_owner_fds = 4096;
  /// A read-only share: a lock owner's description has the handle's own
  /// access mode, never a wider one (no fd made for the guest can write).
  bool read_only = false;
  /// The guest's fd budget: each description is one unit of it (null: not
  /// counted). Past it SETLK/SETLKW answer ENOLCK, fcntl's errno for "lock
  /// table full". Must outlive the LockManager and every waiter thread.
  Budget* fd_budget = nullptr;
};

class LockManager {
 public:
  /// `proc_self_fd` (borrowed, must outlive this) is an O_PATH fd of
  /// /proc/self/fd, used to reopen a handle's file per lock owner.
  explicit LockManager(int proc_self_fd, LockLimits limits = {});
  /// Ends every wait (EINTR) and waits until their `done` calls returned.
  ~LockManager();
  LockManager(const LockManager&) = delete;
  LockManager& operator=(const LockManager&) = delete;

  /// GETLK: the first lock that would conflict with `lock` for `owner`, or
  /// type F_UNLCK. POSIX locks only (FUSE_LK_FLOCK answers EINVAL).
  Result<fuse::FileLock> getlk(fuse::InodeId inode, const HandleData& handle, uint64_t owner,
                               const fuse::FileLock& lock, bool flock);
  /// SETLK: takes, changes or releases a lock without waiting (EAGAIN if
  /// held by someone else).
  VoidResult setlk(fuse::InodeId inode, fuse::HandleId handle_id,
                   const std::shared_ptr<HandleData>& handle, uint64_t owner,
                   const fuse::FileLock& lock, bool flock);
  /// SETLKW: as setlk, but waits on a waiter thread; `done` is called exactly
  /// once, on this thread if no wait is needed.
  void setlkw(fuse::InodeId inode, fuse::HandleId handle_id, std::shared_ptr<HandleData> handle,
              uint64_t owner, const fuse::FileLock& lock, bool flock, uint64_t unique,
              std::function<void(VoidResult)> done);
  /// Ends the wait of SETLKW `unique` with EINTR. An interrupt for a request
  /// not (yet) waiting is remembered (the last few), so that a SETLKW racing
  /// with its own INTERRUPT still ends.
  void interrupt(uint64_t unique);

  /// FLUSH by `owner` on `inode`: drops the owner's POSIX locks there.
  void flush(fuse::InodeId inode, uint64_t owner);
  /// RELEASE of `handle_id`: drops the POSIX lock descriptions used only
  /// through it. (Its flock locks go with the handle's own fd.)
  void release(fuse::InodeId inode, fuse::HandleId handle_id);
  /// Session end (DESTROY, guest reset): ends every wait with EINTR, waits
  /// until their `done` calls returned, and drops every lock description.
  void reset();

  /// For tests and diagnostics.
  size_t waiter_count() const;
  size_t owner_fd_count() const;
  /// The POSIX lock owners' descriptions for which `pick` is true (a
  /// migration asks which still hold a lock).
  size_t count_descriptions(const std::function<bool(const UniqueFd&)>& pick) const;

 private:
  struct OwnerFd;
  struct Waiter;
  struct WaitState;

  // The description `owner` locks `inode` with, made on first use; checks
  // that `handle` allows the lock type (EBADF as fcntl on that fd would).
  Result<std::shared_ptr<OwnerFd>> owner_fd(fuse::InodeId inode, fuse::HandleId handle_id,
                                            const HandleData& handle, uint64_t owner, uint32_t type,
                                            bool create);
  // Ends the waits `pick` selects and returns once they left their call.
  void cancel(const std::function<bool(const Waiter&)>& pick);

  const int proc_self_fd_;
  const LockLimits limits_;

  mutable std::mutex owners_mu_;
  std::map<std::pair<fuse::InodeId, uint64_t>, std::shared_ptr<OwnerFd>> owners_;

  // Shared with the waiter threads, which are detached and may finish after
  // this object is gone (they only touch the state).
  std::shared_ptr<WaitState> wait_;
};

}  // namespace vfsd::passthrough
