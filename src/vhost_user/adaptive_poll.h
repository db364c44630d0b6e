// How long a vring worker polls the avail ring after it ran dry, before it
// sleeps on the kick eventfd.
//
// Sleeping costs two wake-ups per request at one request in flight (ours on
// the kick, the driver's on the call) and the driver's kick syscall. Polling
// for a few microseconds after a completion saves ours and the kick when the
// next request follows quickly, and costs CPU when it does not. The window
// therefore follows what the waits show, as KVM's halt polling does: a wait
// that ended within the largest window (the poll would have caught it had it
// been longer) grows the window; a wait longer than that shrinks it, so an
// idle or slow driver soon gets no polling at all and no core spins while
// the queue is idle.
// Pinned by: adaptive_poll_test.cc(AdaptivePoll.*)
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace vfsd::vhost_user {

class AdaptivePoll {
 public:
  using Duration = std::chrono::nanoseconds;

  /// `max` zero turns polling off.
  explicit AdaptivePoll(Duration max) : max_(max) {}

  /// How long to poll before the next sleep.
  Duration window() const { return window_; }
  Duration max() const { return max_; }

  /// The poll found work: the window was long enough; keep it.
  void found_work() {}

  /// The poll (of window() length, perhaps zero) found nothing and the worker
  /// then slept for `slept` before work (or an event) arrived.
  void slept(Duration slept) {
    if (max_.count() == 0) return;
    const Duration total = window_ + slept;
    if (total <= max_) {
      // A longer poll would have caught it.
      window_ = std::clamp(std::max(window_ * 2, kStart), kStart, max_);
    } else if (window_ > Duration::zero()) {
      // The driver is idle or slow: polling only burns CPU.
      window_ = window_ / 2 < kStart ? Duration::zero() : window_ / 2;
    }
  }

 private:
  static constexpr Duration kStart{2000};
  const Duration max_;
  Duration window_{0};
};

}  // namespace vfsd::vhost_user
