// Fences a session reset (INIT on an open session, DESTROY) off from the
// requests in flight on other queues: a reset waits until every request that
// entered before it has left, and requests that arrive meanwhile wait until
// the new session is open. So no request of the old session runs into the
// new one (a LOOKUP finishing after destroy() would leave an inode the new
// session never asked for), and the filesystem's destroy() sees no request
// in progress.
//
// The request path takes no lock and executes no locked instruction: each
// thread counts the requests it let in and the ones it let out in its own
// slot (ThreadSlots), with plain stores, and the store-then-load handshake
// with a reset is an AsymmetricFence whose cost the reset pays. A locked
// increment and decrement per request cost 7-9% of its CPU time: the
// decrement waited for the reply's stores to guest memory to drain. Readers
// never block unless a reset is in progress. A reset is preferred over new
// requests, so a busy queue cannot starve it.
// Pinned by: session_gate_test.cc(SessionGate.*),
// session_reset_test.cc(SessionReset.*),
// server_test.cc(ServerTest.SecondInitDestroysThenInitsAgain, ServerTest.DestroyEndsSession)
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "util/asymmetric_fence.h"
#include "util/thread_slots.h"

namespace vfsd::fuse {

class SessionGate {
 public:
  /// Held by a request for as long as it uses the session. May be released
  /// on another thread than the one that entered.
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

  explicit SessionGate(AsymmetricFence::Mode mode = AsymmetricFence::best_mode()) : fence_(mode) {}

  /// Enters the session; waits while a reset is in progress.
  Pass enter() {
    for (;;) {
      bump_owned(counts_.local().entered);
      // Dekker's handshake with close_and_wait() (its store of closing_,
      // heavy fence, loads of the counts): either the reset sees this
      // entry, or this entry sees the reset.
      fence_.light();
      if (!closing_.load(std::memory_order_relaxed)) return Pass(this);
      leave();
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return !closing_.load(); });
    }
  }

  /// Starts a reset: returns once no request is inside; until reopen(),
  /// enter() waits.
  void close_and_wait();

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
  /// Requests inside now. For diagnostics: while requests come and go it
  /// may count one that is just leaving, never miss one that stays.
  uint64_t in_flight() const;
  /// How the handshake with a reset is fenced (tests).
  AsymmetricFence::Mode fence_mode() const { return fence_.mode(); }

 private:
  // One thread's counts, each only ever growing.
  struct alignas(64) Counts {
    std::atomic<uint64_t> entered{0};
    std::atomic<uint64_t> left{0};
  };

  void leave() {
    bump_owned(counts_.local().left);
    fence_.light();
    if (closing_.load(std::memory_order_relaxed)) {
      // A reset may be waiting for this one: wake it (under the lock, so
      // that the reset cannot miss it between its check and its wait).
      std::lock_guard lock(mu_);
      cv_.notify_all();
    }
  }

  ThreadSlots<Counts> counts_;
  AsymmetricFence fence_;
  std::atomic<bool> closing_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace vfsd::fuse
