#include "passthrough/budget.h"

#include "util/log.h"
#include "util/rate_limit.h"

namespace vfsd::passthrough {

Result<Budget::Charge> Budget::acquire(uint64_t n) {
  if (limit_ == 0) {
    used_.fetch_add(n, std::memory_order_relaxed);
    return Charge(this, n);
  }
  uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (n > limit_ || used > limit_ - n) {
      log::guest_fault(log::GuestFault::kLimitReached,
                       "the guest holds {} of the {} {} it may; more answer ENFILE", used, limit_,
                       what_);
      return fail(ENFILE);
    }
  } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  return Charge(this, n);
}

}  // namespace vfsd::passthrough
