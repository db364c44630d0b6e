#include "passthrough/deletion_watch.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <unordered_map>

#include "passthrough/safe_open.h"
#include "util/log.h"
#include "util/result.h"

namespace vfsd::passthrough {

struct WatchSlot::Core {
  UniqueFd inotify;
  int proc_self_fd = -1;
  size_t max_marks = 0;
  std::atomic<size_t> marks{0};
  // Threads between reading events and applying them: a thread that finds
  // the queue empty must not trust a state such a thread is about to change.
  std::atomic<int> draining{0};
  std::mutex mutex;                           // guards by_wd and every slot's wd_
  std::unordered_map<int, WatchSlot*> by_wd;  // slots whose mark may still exist
  bool overflow_reported = false;

  // Reads every queued event and applies it. Under `mutex`.
  void drain_locked() {
    draining.fetch_add(1);
    alignas(inotify_event) char buf[4096];
    for (;;) {
      ssize_t n = ::read(inotify.get(), buf, sizeof(buf));
      if (n <= 0) break;  // EAGAIN: nothing more queued
      for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buf + at);
        apply_locked(*event);
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
    draining.fetch_sub(1);
  }

  void apply_locked(const inotify_event& event) {
    if (event.mask & IN_Q_OVERFLOW) {
      // Events were lost: no mark can be trusted again. The marks stay
      // until their slots go, so that the inodes they hold are let go.
      for (auto& [wd, slot] : by_wd) slot->state_.store(kGone, std::memory_order_release);
      if (!overflow_reported) {
        overflow_reported = true;
        log::warn("inotify queue overflowed: lookups of known inodes check their handle again");
      }
      return;
    }
    auto it = by_wd.find(event.wd);
    if (it == by_wd.end()) return;  // a mark this watch removed itself
    if (event.mask & (IN_DELETE_SELF | IN_UNMOUNT | IN_IGNORED)) {
      it->second->state_.store(kGone, std::memory_order_release);
    }
    if (event.mask & IN_IGNORED) {  // the kernel removed the mark
      by_wd.erase(it);
      marks.fetch_sub(1);
    }
  }

  // A slot goes (its inode was forgotten): its mark goes with it.
  void release(WatchSlot& slot) {
    std::lock_guard lock(mutex);
    auto it = by_wd.find(slot.wd_);
    if (it == by_wd.end() || it->second != &slot) return;
    by_wd.erase(it);
    ::inotify_rm_watch(inotify.get(), slot.wd_);
    marks.fetch_sub(1);
  }
};

bool marks_prove_identity_on(int64_t filesystem_type) {
  switch (filesystem_type) {
    case EXT4_SUPER_MAGIC:  // ext2 and ext3 too
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case F2FS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      return true;
    default:
      return false;
  }
}

WatchSlot::~WatchSlot() {
  if (core_) core_->release(*this);
}

std::unique_ptr<DeletionWatch> DeletionWatch::create(int proc_self_fd, size_t max_marks) {
  if (max_marks == 0 || proc_self_fd < 0) return nullptr;
  auto core = std::make_shared<WatchSlot::Core>();
  core->inotify.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!core->inotify) {
    log::warn("inotify unavailable ({}): lookups of known inodes check their handle",
              errno_name(errno));
    return nullptr;
  }
  core->proc_self_fd = proc_self_fd;
  core->max_marks = max_marks;
  return std::unique_ptr<DeletionWatch>(new DeletionWatch(std::move(core)));
}

DeletionWatch::DeletionWatch(std::shared_ptr<WatchSlot::Core> core) : core_(std::move(core)) {}

DeletionWatch::~DeletionWatch() = default;

bool DeletionWatch::wants(const WatchSlot& slot) const {
  return slot.state_.load(std::memory_order_relaxed) == WatchSlot::kUnmarked &&
         core_->marks.load(std::memory_order_relaxed) < core_->max_marks;
}

bool DeletionWatch::mark(WatchSlot& slot, const UniqueFd& path_fd) {
  uint8_t expected = WatchSlot::kUnmarked;
  if (!slot.state_.compare_exchange_strong(expected, WatchSlot::kClaimed)) return false;
  auto give_up = [&](WatchSlot::State state) {
    slot.state_.store(state, std::memory_order_release);
    return false;
  };
  if (core_->marks.load() >= core_->max_marks) return give_up(WatchSlot::kUnmarked);
  struct statfs fs {};
  if (::fstatfs(path_fd.get(), &fs) != 0 || !marks_prove_identity_on(fs.f_type)) {
    return give_up(WatchSlot::kGone);
  }
  // inotify_add_watch takes a path only: the fd's magic link, followed to
  // exactly its inode (a symlink's own inode included).
  auto cwd = ProcFdWorkingDirectory::enter(core_->proc_self_fd);
  if (!cwd) return give_up(WatchSlot::kGone);
  ProcFdName name(path_fd);
  // Under the lock from the mark's making to its entry, so that an event for
  // it is applied only after the entry exists.
  std::lock_guard lock(core_->mutex);
  const int wd = ::inotify_add_watch(core_->inotify.get(), name.c_str(), IN_DELETE_SELF);
  if (wd < 0) {
    // ENOSPC: the user's max_user_watches is used up by others; retried later.
    return give_up(errno == ENOSPC ? WatchSlot::kUnmarked : WatchSlot::kGone);
  }
  if (core_->by_wd.contains(wd)) return give_up(WatchSlot::kGone);
  // A mark made after the last link went gets no IN_DELETE_SELF and would
  // hold the deleted inode until forgotten.
  struct statx stx {};
  if (::statx(path_fd.get(), "", AT_EMPTY_PATH, STATX_NLINK, &stx) != 0 || stx.stx_nlink == 0) {
    ::inotify_rm_watch(core_->inotify.get(), wd);
    return give_up(WatchSlot::kGone);
  }
  core_->by_wd.emplace(wd, &slot);
  core_->marks.fetch_add(1);
  slot.wd_ = wd;
  slot.core_ = core_;
  slot.state_.store(WatchSlot::kMarked, std::memory_order_release);
  return true;
}

bool DeletionWatch::pinned(const WatchSlot& slot) {
  if (slot.state_.load(std::memory_order_acquire) != WatchSlot::kMarked) return false;
  int queued = 0;
  if (::ioctl(core_->inotify.get(), FIONREAD, &queued) != 0) return false;
  // An event queued before this call, or one read but not yet applied by
  // another thread, may say the mark went: apply them all first.
  if (queued > 0 || core_->draining.load() != 0) {
    std::lock_guard lock(core_->mutex);
    core_->drain_locked();
  }
  return slot.state_.load(std::memory_order_acquire) == WatchSlot::kMarked;
}

size_t DeletionWatch::marks() const {
  // Up to date: the marks the kernel removed since the last lookup count off.
  std::lock_guard lock(core_->mutex);
  core_->drain_locked();
  return core_->marks.load(std::memory_order_relaxed);
}

}  // namespace vfsd::passthrough
