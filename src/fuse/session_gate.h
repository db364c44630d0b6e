// Fences a session reset (INIT on an open session, DESTROY) off from the
// requests in flight on other queues: a reset waits until every request that
// entered before it has left, and requests that arrive meanwhile wait until
// the new session is open. So no request of the old session runs into the
// new one (a LOOKUP finishing after destroy() would leave an inode the new
// session never asked for), and the filesystem's destroy() sees no request
// in progress.
//
// The request path costs one atomic increment and one decrement; readers
// never block unless a reset is in progress. A reset is preferred over new
// requests, so a busy queue cannot starve it.
// Pinned by: session_reset_test.cc(SessionReset.*),
// server_test.cc(ServerTest.SecondInitDestroysThenInitsAgain, ServerTest.DestroyEndsSession)
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace vfsd::fuse {

class SessionGate {
 public:
  /// Held by a request for as long as it uses the session.
  class Pass {
   public:
    explicit Pass(SessionGate* gate) : gate_(gate) {}
    Pass(Pass&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Pass& operator=(Pass&&) = delete;
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    ~Pass() { release(); }
    /// Leaves early (a request about to wait for something a reset ends).
    void release() {
      if (gate_ != nullptr) gate_->leave();
      gate_ = nullptr;
    }

   private:
    SessionGate* gate_;
  };

  /// Enters the session; waits while a reset is in progress.
  Pass enter() {
    for (;;) {
      // seq_cst on both sides (this increment and the load of closing_, the
      // reset's store of closing_ and its load of in_flight_): either the
      // reset sees this request, or this request sees the reset.
      in_flight_.fetch_add(1);
      if (!closing_.load()) return Pass(this);
      leave();
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return !closing_.load(); });
    }
  }

  /// Starts a reset: returns once no request is inside; until reopen(),
  /// enter() waits.
  void close_and_wait() {
    std::unique_lock lock(mu_);
    closing_.store(true);
    cv_.wait(lock, [this] { return in_flight_.load() == 0; });
  }

  /// Ends the reset: waiting requests go on, into the new session.
  void reopen() {
    {
      std::lock_guard lock(mu_);
      closing_.store(false);
    }
    cv_.notify_all();
  }

  /// A reset is waiting for requests to leave, or running (tests).
  bool closing() const { return closing_.load(); }
  /// Requests inside now. For diagnostics.
  uint64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

 private:
  void leave() {
    if (in_flight_.fetch_sub(1) == 1 && closing_.load()) {
      // The last one out wakes the reset (under the lock, so that the
      // reset cannot miss it between its check and its wait).
      std::lock_guard lock(mu_);
      cv_.notify_all();
    }
  }

  std::atomic<uint64_t> in_flight_{0};
  std::atomic<bool> closing_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace vfsd::fuse
