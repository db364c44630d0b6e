#include "util/asymmetric_fence.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vfsd {
namespace {

long membarrier(int cmd) {
  return ::syscall(SYS_membarrier, cmd, 0, 0);
}

// Registering is idempotent and cheap once done. It is done before every
// barrier, not once: a child forked after the first barrier has a new
// address space, which starts unregistered.
bool private_expedited_barrier() {
  return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
         membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
}

}  // namespace

AsymmetricFence::Mode AsymmetricFence::best_mode() {
  const long supported = membarrier(MEMBARRIER_CMD_QUERY);
  if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return Mode::kSymmetric;
  return private_expedited_barrier() ? Mode::kAsymmetric : Mode::kSymmetric;
}

bool AsymmetricFence::heavy() const {
  // The symmetric hot side fences itself; this one still fences, for the
  // rare side's own store before its loads.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (mode_ == Mode::kSymmetric) return true;
  return private_expedited_barrier();
}

}  // namespace vfsd
