// A store-then-load fence split unevenly between a hot side and a rare side
// (Dekker's handshake where one side runs per request and the other once per
// session reset). The hot side pays only a compiler barrier; the rare side
// makes every running thread of the process execute a full barrier
// (membarrier(2), MEMBARRIER_CMD_PRIVATE_EXPEDITED: an interrupt to each CPU
// running one of our threads; a thread not running passes one on its next
// context switch). Where the kernel lacks it, the hot side falls back to a
// real fence, chosen once when the fence is made.
// Pinned by: session_gate_test.cc(SessionGate.*),
// seccomp_test.cc(Seccomp.TheSessionResetBarrierRuns)
#pragma once

#include <atomic>

namespace vfsd {

class AsymmetricFence {
 public:
  enum class Mode { kAsymmetric, kSymmetric };

  /// kAsymmetric if membarrier's private expedited barrier works here.
  static Mode best_mode();

  explicit AsymmetricFence(Mode mode = best_mode()) : mode_(mode) {}

  Mode mode() const { return mode_; }

  /// The hot side: orders this thread's earlier stores before its later
  /// loads, together with heavy() on the other side.
  void light() const {
    if (mode_ == Mode::kAsymmetric) {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
  }

  /// The rare side. Returns false if the process-wide barrier failed where
  /// it worked before (it cannot, unless a seccomp filter or the kernel
  /// changed under us); the caller then has no ordering against light().
  [[nodiscard]] bool heavy() const;

 private:
  Mode mode_;
};

}  // namespace vfsd
