#include "passthrough/locks.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <limits>
#include <list>
#include <system_error>
#include <thread>

#include "passthrough/passthrough_fs.h"
#include "passthrough/safe_open.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace vfsd::passthrough {

namespace {

constexpr uint64_t kOffsetMax = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
// How many interrupts for requests not found are remembered.
constexpr size_t kEarlyInterrupts = 64;
// How often a cancelled waiter that has not left its call yet is signalled
// again.
constexpr auto kResignalPeriod = std::chrono::milliseconds(2);

void wake_handler(int) {}

void install_wake_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = wake_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the blocked lock call returns EINTR
    if (::sigaction(kWakeSignal, &sa, nullptr) != 0) {
      log::error("locks: cannot install the wake-up signal handler: {}", errno_name(errno));
    }
  });
}

// The guest's lock as a host struct flock (whence SEEK_SET, pid 0 as OFD
// locks require). `end` is inclusive, kOffsetMax meaning "to end of file".
Result<struct flock> to_host(const fuse::FileLock& lock) {
  if (lock.type != F_RDLCK && lock.type != F_WRLCK && lock.type != F_UNLCK) return fail(EINVAL);
  if (lock.start > kOffsetMax || lock.end > kOffsetMax || lock.end < lock.start) {
    return fail(EINVAL);
  }
  struct flock fl {};
  fl.l_type = static_cast<short>(lock.type);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(lock.start);
  fl.l_len = lock.end == kOffsetMax ? 0 : static_cast<off_t>(lock.end - lock.start + 1);
  fl.l_pid = 0;
  return fl;
}

fuse::FileLock from_host(const struct flock& fl) {
  fuse::FileLock out;
  out.type = static_cast<uint32_t>(fl.l_type);
  if (fl.l_type == F_UNLCK) return out;
  out.start = static_cast<uint64_t>(fl.l_start);
  out.end = fl.l_len == 0 ? kOffsetMax : static_cast<uint64_t>(fl.l_start + fl.l_len - 1);
  out.pid = 0;  // an OFD holder (l_pid -1) or a host pid: nothing the guest can name
  return out;
}

Result<int> flock_op(uint32_t type) {
  switch (type) {
    case F_RDLCK:
      return LOCK_SH;
    case F_WRLCK:
      return LOCK_EX;
    case F_UNLCK:
      return LOCK_UN;
    default:
      return fail(EINVAL);
  }
}

// The access mode of an fd (O_RDONLY, O_WRONLY or O_RDWR).
Result<int> access_mode(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return fail_errno();
  return flags & O_ACCMODE;
}

bool mode_allows(int mode, uint32_t type) {
  if (type == F_WRLCK) return mode == O_WRONLY || mode == O_RDWR;
  if (type == F_RDLCK) return mode == O_RDONLY || mode == O_RDWR;
  return true;
}

// Whether a SETLKW may start its wait, and if not, why not.
enum class Admission {
  kAdmitted,        // registered as waiting: a thread is to block for it
  kSessionEnding,   // reset() is ending the session's waits (EINTR)
  kInterrupted,     // its INTERRUPT came before it (EINTR)
  kTooManyWaiters,  // max_waiters wait already (ENOLCK, "lock table full")
};

// What a SETLKW that was not admitted answers.
int refusal_errno(Admission admission) {
  return admission == Admission::kTooManyWaiters ? ENOLCK : EINTR;
}

void unblock_wake_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kWakeSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace

struct LockManager::OwnerFd {
  UniqueFd fd;
  Budget::Charge charge;                // `fd` in the guest's fd budget
  int mode = O_RDONLY;                  // its access mode
  std::vector<fuse::HandleId> handles;  // used through these (guarded by owners_mu_)
};

struct LockManager::Waiter {
  uint64_t unique = 0;  // the SETLKW's request, as interrupt() names it (0 too)
  // The call the thread blocks in: flock(op) on the handle's own fd, or
  // F_OFD_SETLKW with `fl` on the owner's description. Both are held here,
  // so that their fds stay open until the wait is over.
  bool flock_lock = false;
  int op = 0;
  struct flock fl {};
  std::shared_ptr<HandleData> handle;
  std::shared_ptr<OwnerFd> owner;
  pthread_t thread{};
  bool started = false;    // `thread` is set and the thread may be in its call
  bool cancelled = false;  // the wait must end with EINTR
  std::function<void(VoidResult)> done;

  // The blocking lock call: 0, or -1 and errno.
  int lock_blocking() const {
    return flock_lock ? ::flock(handle->fd.get(), op) : ::fcntl(owner->fd.get(), F_OFD_SETLKW, &fl);
  }
};

struct LockManager::WaitState : std::enable_shared_from_this<WaitState> {
  std::mutex mu;
  std::condition_variable cv;
  std::list<std::shared_ptr<Waiter>> waiting;  // registered, not yet out of the call
  size_t running = 0;                          // threads whose `done` has not returned
  std::deque<uint64_t> early_interrupts;
  // Set while reset() ends the session's waits: a SETLKW registering then
  // (a request racing with DESTROY or INIT on another queue) ends at once
  // with EINTR instead of starting a wait that nothing would end.
  bool closing = false;

  // Starts the wait of `w` on a thread of its own, or ends it at once (EINTR
  // or ENOLCK) when it may not start.
  void begin(const std::shared_ptr<Waiter>& w, size_t max_waiters);

 private:
  // Registers `w` as waiting (and running) if it may wait.
  Admission admit(const std::shared_ptr<Waiter>& w, size_t max_waiters);
  // Undoes admit() for a wait whose thread could not start.
  void withdraw(const std::shared_ptr<Waiter>& w);
  // The waiter thread's body.
  void run(const std::shared_ptr<Waiter>& w);
  // Blocks until the lock is taken, the call fails or the wait is cancelled.
  VoidResult wait_for_lock(const Waiter& w);
  // Answers the request and lets go of what the wait held.
  void finish(Waiter& w, const VoidResult& result);
};

void LockManager::WaitState::begin(const std::shared_ptr<Waiter>& w, size_t max_waiters) {
  if (Admission admission = admit(w, max_waiters); admission != Admission::kAdmitted) {
    w->done(fail(refusal_errno(admission)));
    return;
  }
  try {
    std::thread([self = shared_from_this(), w] { self->run(w); }).detach();
  } catch (const std::system_error&) {
    withdraw(w);
    log::guest_fault(log::GuestFault::kLimitReached,
                     "locks: cannot start a lock waiter thread; SETLKW answers ENOLCK");
    w->done(fail(ENOLCK));
  }
}

Admission LockManager::WaitState::admit(const std::shared_ptr<Waiter>& w, size_t max_waiters) {
  std::lock_guard guard(mu);
  // The session is ending: as if DESTROY came a moment later.
  if (closing) return Admission::kSessionEnding;
  auto early = std::find(early_interrupts.begin(), early_interrupts.end(), w->unique);
  if (early != early_interrupts.end()) {
    early_interrupts.erase(early);
    return Admission::kInterrupted;
  }
  if (waiting.size() >= max_waiters) {
    log::guest_fault(log::GuestFault::kLimitReached,
                     "locks: {} lock waits already; SETLKW answers ENOLCK", max_waiters);
    return Admission::kTooManyWaiters;
  }
  waiting.push_back(w);
  ++running;
  return Admission::kAdmitted;
}

void LockManager::WaitState::withdraw(const std::shared_ptr<Waiter>& w) {
  std::lock_guard guard(mu);
  waiting.remove(w);
  --running;
  cv.notify_all();
}

void LockManager::WaitState::run(const std::shared_ptr<Waiter>& w) {
  // Worker threads may block signals; this one must receive the wake-up.
  unblock_wake_signal();
  {
    std::lock_guard guard(mu);
    w->thread = pthread_self();
    w->started = true;
  }
  VoidResult result = wait_for_lock(*w);
  {
    std::lock_guard guard(mu);
    waiting.remove(w);  // no signal is sent to this thread after this
    cv.notify_all();
  }
  finish(*w, result);
}

VoidResult LockManager::WaitState::wait_for_lock(const Waiter& w) {
  for (;;) {
    {
      std::lock_guard guard(mu);
      if (w.cancelled) return fail(EINTR);
    }
    // A cancel between the check above and the call below is caught by the
    // canceller signalling again until we are out.
    if (w.lock_blocking() == 0) return ok();
    if (errno != EINTR) return fail_errno();
    // EINTR: cancelled (checked above) or a stray signal (wait again).
  }
}

void LockManager::WaitState::finish(Waiter& w, const VoidResult& result) {
  try {
    w.done(result);
  } catch (...) {
    // Nothing may escape a detached thread (std::terminate); the reply is
    // the transport's to lose.
    log::error("locks: completing a lock wait failed");
  }
  w.done = nullptr;
  // The description and the handle (and their fd budget units) go before
  // `running` says this thread is done: reset() and the destructor wait for
  // that, and the budget may go with the filesystem right after.
  w.owner.reset();
  w.handle.reset();
  std::lock_guard guard(mu);
  --running;
  cv.notify_all();
}

LockManager::LockManager(int proc_self_fd, LockLimits limits)
    : proc_self_fd_(proc_self_fd), limits_(limits), wait_(std::make_shared<WaitState>()) {
  install_wake_handler();
}

LockManager::~LockManager() {
  reset();
}

Result<std::shared_ptr<LockManager::OwnerFd>> LockManager::owner_fd(fuse::InodeId inode,
                                                                    fuse::HandleId handle_id,
                                                                    const HandleData& handle,
                                                                    uint64_t owner, uint32_t type,
                                                                    bool create) {
  VFSD_ASSIGN_OR_RETURN(auto mode, access_mode(handle.fd.get()));
  // The guest opened this handle with some access; a lock type it does not
  // allow fails as fcntl on that fd would, whatever description we use.
  if (!mode_allows(mode, type)) return fail(EBADF);

  std::lock_guard lock(owners_mu_);
  const auto key = std::make_pair(inode, owner);
  auto it = owners_.find(key);
  if (it != owners_.end()) {
    OwnerFd& o = *it->second;
    if (!mode_allows(o.mode, type)) return fail(EBADF);
    if (std::find(o.handles.begin(), o.handles.end(), handle_id) == o.handles.end()) {
      o.handles.push_back(handle_id);
    }
    return it->second;
  }
  if (!create) return std::shared_ptr<OwnerFd>();
  if (owners_.size() >= limits_.max_owner_fds) {
    log::guest_fault(log::GuestFault::kLimitReached,
                     "locks: {} lock owner descriptions already; the lock answers ENOLCK",
                     limits_.max_owner_fds);
    return fail(ENOLCK);
  }
  Budget::Charge charge;
  if (limits_.fd_budget != nullptr) {
    // Past the guest's fd budget: "lock table full" is the lock's errno.
    auto taken = limits_.fd_budget->acquire();
    if (!taken) return fail(ENOLCK);
    charge = std::move(*taken);
  }
  // A new description of the same file: the magic link names exactly the
  // handle's file. Read-write when the host allows it, so that one owner's
  // read and write locks taken through differently opened guest fds share
  // it; else the handle's own mode. O_NONBLOCK: never wait for a lease break.
  // (The handle's fd is a regular file's: reopen() made it.)
  auto o = std::make_shared<OwnerFd>();
  if (!limits_.read_only) {
    if (auto fd = reopen_own_fd(proc_self_fd_, handle.fd, O_RDWR | O_NONBLOCK | O_NOCTTY)) {
      o->fd = std::move(*fd);
      o->mode = O_RDWR;
    }
  }
  if (!o->fd) {
    VFSD_ASSIGN_OR_RETURN(auto fd,
                          reopen_own_fd(proc_self_fd_, handle.fd, mode | O_NONBLOCK | O_NOCTTY));
    o->fd = std::move(fd);
    o->mode = mode;
  }
  o->charge = std::move(charge);
  o->handles.push_back(handle_id);
  owners_.emplace(key, o);
  return o;
}

Result<fuse::FileLock> LockManager::getlk(fuse::InodeId inode, const HandleData& handle,
                                          uint64_t owner, const fuse::FileLock& lock, bool flock) {
  if (flock) return fail(EINVAL);  // the kernel keeps no GETLK for flock()
  VFSD_ASSIGN_OR_RETURN(auto fl, to_host(lock));
  if (fl.l_type == F_UNLCK) return fail(EINVAL);
  // The owner's own locks never conflict with it: ask through its
  // description if it has one. The handle's fd holds no OFD lock.
  int fd = handle.fd.get();
  std::shared_ptr<OwnerFd> o;
  {
    std::lock_guard guard(owners_mu_);
    auto it = owners_.find({inode, owner});
    if (it != owners_.end()) o = it->second;
  }
  if (o) fd = o->fd.get();
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return fail_errno();
  return from_host(fl);
}

VoidResult LockManager::setlk(fuse::InodeId inode, fuse::HandleId handle_id,
                              const std::shared_ptr<HandleData>& handle, uint64_t owner,
                              const fuse::FileLock& lock, bool flock) {
  if (flock) {
    VFSD_ASSIGN_OR_RETURN(auto op, flock_op(lock.type));
    if (::flock(handle->fd.get(), op | LOCK_NB) != 0) return fail_errno();
    return ok();
  }
  VFSD_ASSIGN_OR_RETURN(auto fl, to_host(lock));
  // Unlocking an owner that holds nothing needs no description.
  VFSD_ASSIGN_OR_RETURN(
      auto o, owner_fd(inode, handle_id, *handle, owner, lock.type, lock.type != F_UNLCK));
  if (!o) return ok();
  if (::fcntl(o->fd.get(), F_OFD_SETLK, &fl) != 0) return fail_errno();
  return ok();
}

void LockManager::setlkw(fuse::InodeId inode, fuse::HandleId handle_id,
                         std::shared_ptr<HandleData> handle, uint64_t owner,
                         const fuse::FileLock& lock, bool flock, uint64_t unique,
                         std::function<void(VoidResult)> done) {
  // Most requests find the lock free (and unlocking never waits): answer on
  // the caller's thread.
  VoidResult first = setlk(inode, handle_id, handle, owner, lock, flock);
  if (first || first.error().value != EAGAIN) {
    done(first);
    return;
  }
  auto w = std::make_shared<Waiter>();
  w->unique = unique;
  w->flock_lock = flock;
  if (flock) {
    w->op = *flock_op(lock.type);  // valid: setlk() checked it
  } else {
    w->fl = *to_host(lock);
    auto found = owner_fd(inode, handle_id, *handle, owner, lock.type, true);
    if (!found) {
      done(tl::unexpected(found.error()));
      return;
    }
    w->owner = std::move(*found);
  }
  w->handle = std::move(handle);
  w->done = std::move(done);
  wait_->begin(w, limits_.max_waiters);
}

void LockManager::cancel(const std::function<bool(const Waiter&)>& pick) {
  std::unique_lock guard(wait_->mu);
  std::vector<std::shared_ptr<Waiter>> targets;
  for (const auto& w : wait_->waiting) {
    if (pick(*w)) {
      w->cancelled = true;
      targets.push_back(w);
    }
  }
  auto still_waiting = [&] {
    for (const auto& w : targets) {
      if (std::find(wait_->waiting.begin(), wait_->waiting.end(), w) != wait_->waiting.end()) {
        return true;
      }
    }
    return false;
  };
  while (still_waiting()) {
    // Only registered threads are signalled: a thread leaves `waiting`
    // (under this lock) before it can exit, so `thread` is still valid.
    for (const auto& w : targets) {
      if (w->started &&
          std::find(wait_->waiting.begin(), wait_->waiting.end(), w) != wait_->waiting.end()) {
        pthread_kill(w->thread, kWakeSignal);
      }
    }
    wait_->cv.wait_for(guard, kResignalPeriod);
  }
}

void LockManager::interrupt(uint64_t unique) {
  {
    std::lock_guard guard(wait_->mu);
    bool found = std::any_of(wait_->waiting.begin(), wait_->waiting.end(),
                             [&](const auto& w) { return w->unique == unique; });
    if (!found) {
      wait_->early_interrupts.push_back(unique);
      if (wait_->early_interrupts.size() > kEarlyInterrupts) wait_->early_interrupts.pop_front();
      return;
    }
  }
  cancel([unique](const Waiter& w) { return w.unique == unique; });
}

void LockManager::flush(fuse::InodeId inode, uint64_t owner) {
  std::shared_ptr<OwnerFd> dropped;  // closed outside the lock (unless a waiter holds it)
  std::lock_guard lock(owners_mu_);
  auto it = owners_.find({inode, owner});
  if (it == owners_.end()) return;
  dropped = std::move(it->second);
  owners_.erase(it);
}

void LockManager::release(fuse::InodeId inode, fuse::HandleId handle_id) {
  std::vector<std::shared_ptr<OwnerFd>> dropped;
  std::lock_guard lock(owners_mu_);
  auto it = owners_.lower_bound({inode, 0});
  while (it != owners_.end() && it->first.first == inode) {
    auto& handles = it->second->handles;
    handles.erase(std::remove(handles.begin(), handles.end(), handle_id), handles.end());
    if (handles.empty()) {
      dropped.push_back(std::move(it->second));
      it = owners_.erase(it);
    } else {
      ++it;
    }
  }
}

void LockManager::reset() {
  {
    // Every `done` of this session has returned before the next one starts.
    // No snapshot of the waiters: one that registers while this runs (from
    // another queue) would never be woken. New waits are refused instead,
    // and whoever is registered is woken until nobody runs.
    std::unique_lock guard(wait_->mu);
    wait_->closing = true;
    while (wait_->running > 0) {
      for (const auto& w : wait_->waiting) {
        w->cancelled = true;
        // Registered threads only: a thread leaves `waiting` (under this
        // lock) before it can exit, so `thread` is still valid.
        if (w->started) pthread_kill(w->thread, kWakeSignal);
      }
      wait_->cv.wait_for(guard, kResignalPeriod);
    }
    wait_->early_interrupts.clear();
    wait_->closing = false;
  }
  decltype(owners_) dropped;
  std::lock_guard lock(owners_mu_);
  dropped.swap(owners_);
}

size_t LockManager::waiter_count() const {
  std::lock_guard guard(wait_->mu);
  return wait_->waiting.size();
}

size_t LockManager::owner_fd_count() const {
  std::lock_guard lock(owners_mu_);
  return owners_.size();
}

size_t LockManager::count_descriptions(const std::function<bool(const UniqueFd&)>& pick) const {
  std::lock_guard lock(owners_mu_);
  size_t n = 0;
  for (const auto& [key, owner] : owners_) n += pick(owner->fd) ? 1 : 0;
  return n;
}

// --- PassthroughFs lock operations ---------------------------------------

namespace {
// Whether the option for this kind of lock is on; the guest only sends lock
// requests when INIT agreed, this is the second line.
bool lock_kind_enabled(const PassthroughConfig& config, uint32_t lock_flags) {
  return (lock_flags & FUSE_LK_FLOCK) != 0 ? config.flock : config.posix_lock;
}
}  // namespace

Result<fuse::FileLock> PassthroughFs::getlk(const fuse::Context&, fuse::InodeId ino,
                                            fuse::HandleId fh, uint64_t owner,
                                            const fuse::FileLock& lock, uint32_t lock_flags) {
  if (!lock_kind_enabled(config_, lock_flags)) return fail(ENOSYS);
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  return locks_.getlk(ino, *h, owner, lock, (lock_flags & FUSE_LK_FLOCK) != 0);
}

VoidResult PassthroughFs::setlk(const fuse::Context&, fuse::InodeId ino, fuse::HandleId fh,
                                uint64_t owner, const fuse::FileLock& lock, uint32_t lock_flags) {
  if (!lock_kind_enabled(config_, lock_flags)) return fail(ENOSYS);
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  if (h->is_dir) return fail(EBADF);  // the guest locks files only
  return locks_.setlk(ino, fh, h, owner, lock, (lock_flags & FUSE_LK_FLOCK) != 0);
}

void PassthroughFs::setlkw(const fuse::Context&, fuse::InodeId ino, fuse::HandleId fh,
                           uint64_t owner, const fuse::FileLock& lock, uint32_t lock_flags,
                           uint64_t unique, std::function<void(VoidResult)> done) {
  if (!lock_kind_enabled(config_, lock_flags)) return done(fail(ENOSYS));
  auto h = handle(fh, ino);
  if (!h) return done(tl::unexpected(h.error()));
  if ((*h)->is_dir) return done(fail(EBADF));
  locks_.setlkw(ino, fh, std::move(*h), owner, lock, (lock_flags & FUSE_LK_FLOCK) != 0, unique,
                std::move(done));
}

void PassthroughFs::interrupt(uint64_t unique) {
  locks_.interrupt(unique);
}

}  // namespace vfsd::passthrough
