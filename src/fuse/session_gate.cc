#include "fuse/session_gate.h"

#include <chrono>
#include <thread>

#include "util/log.h"

namespace vfsd::fuse {

void SessionGate::close_and_wait() {
  std::unique_lock lock(mu_);
  closing_.store(true);
  if (!fence_.heavy()) {
    // Cannot happen while the kernel and the seccomp filter stay as they
    // were when the gate was made. Without the barrier, an entry's count
    // may still sit in its core's store buffer; that drains in far less
    // than a millisecond, so waiting one makes it visible.
    log::error("fuse: membarrier failed during a session reset; waiting 1 ms instead");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  cv_.wait(lock, [this] { return in_flight() == 0; });
}

uint64_t SessionGate::in_flight() const {
  // Every exit first, then every entry: an exit seen (acquire) brings its
  // entry into view, so the difference never misses a request inside.
  uint64_t left = 0;
  counts_.for_each([&](const Counts& c) { left += c.left.load(std::memory_order_acquire); });
  uint64_t entered = 0;
  counts_.for_each([&](const Counts& c) { entered += c.entered.load(std::memory_order_acquire); });
  return entered - left;
}

}  // namespace vfsd::fuse
