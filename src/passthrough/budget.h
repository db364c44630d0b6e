// Bounds on what a guest can make the daemon hold.
//
// A Budget counts units (host fds, or inodes kept as file handles) against a
// limit with one atomic counter: acquire() is a compare-and-swap, a Charge
// gives its units back when it is destroyed. The Charge lives in the object
// that holds the resource (InodeData, HandleData, a lock owner's description,
// MountFd), so a unit is counted exactly as long as the fd stays open.
//
// Past the limit acquire() fails with ENFILE ("too many open files in the
// system"), which is what the guest gets; nothing else is refused, so the
// daemon keeps serving every request that needs no new held resource.
//
// Lifetime: a Budget must outlive every Charge taken from it (PassthroughFs
// declares its budgets before everything that holds charges).
// Pinned by: budget_test.cc(BudgetTest.*), fd_budget_test.cc(FdBudgetTest.*),
// stack_test.cc(StackBudgetTest.*), soak_test.cc(Soak.*)
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <utility>

#include "util/result.h"

namespace vfsd::passthrough {

class Budget {
 public:
  /// Units taken from a Budget; returned when destroyed (or release()d).
  class Charge {
   public:
    Charge() = default;
    Charge(Charge&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)), units_(std::exchange(other.units_, 0)) {}
    Charge& operator=(Charge&& other) noexcept {
      if (this != &other) {
        release();
        budget_ = std::exchange(other.budget_, nullptr);
        units_ = std::exchange(other.units_, 0);
      }
      return *this;
    }
    Charge(const Charge&) = delete;
    Charge& operator=(const Charge&) = delete;
    ~Charge() { release(); }

    uint64_t units() const { return units_; }
    /// Moves `n` of this charge's units (at most units()) into a new charge.
    Charge take(uint64_t n) {
      if (n > units_) n = units_;
      units_ -= n;
      return Charge(n > 0 ? budget_ : nullptr, n);
    }
    void release() {
      if (budget_ != nullptr && units_ > 0) budget_->give_back(units_);
      budget_ = nullptr;
      units_ = 0;
    }

   private:
    friend class Budget;
    Charge(Budget* budget, uint64_t units) : budget_(budget), units_(units) {}
    Budget* budget_ = nullptr;
    uint64_t units_ = 0;
  };

  /// `limit` 0: unlimited (units are still counted, for diagnostics).
  /// `what` names the resource in the warning logged when it runs out.
  explicit Budget(uint64_t limit = 0, std::string_view what = "file descriptors")
      : limit_(limit), what_(what) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  /// `n` units, or ENFILE when they would take the count past the limit.
  Result<Charge> acquire(uint64_t n = 1);

  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  void give_back(uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }

  const uint64_t limit_;
  const std::string_view what_;  // a string literal
  std::atomic<uint64_t> used_{0};
};

}  // namespace vfsd::passthrough
