// Rate limiting for logs a guest can trigger at will (malformed chains,
// malformed requests, requests that failed inside the daemon): without it a
// hostile guest fills the host's disk or journal through our log.
// Pinned by: rate_limit_test.cc(RateLimiter.*, GuestFaultLog.*)
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>

#include "util/log.h"

namespace vfsd {

/// Lets one event through per interval; counts the ones it holds back.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimiter(Clock::duration interval) : interval_(interval) {}

  /// True if an event at `now` may be reported; then `suppressed` is the
  /// number of events held back since the last one reported.
  bool allow(Clock::time_point now, uint64_t& suppressed) {
    std::lock_guard lock(mu_);
    if (reported_once_ && now - last_ < interval_) {
      ++held_back_;
      return false;
    }
    reported_once_ = true;
    last_ = now;
    suppressed = std::exchange(held_back_, 0);
    return true;
  }

 private:
  const Clock::duration interval_;
  std::mutex mu_;
  bool reported_once_ = false;
  Clock::time_point last_{};
  uint64_t held_back_ = 0;
};

namespace log {

/// The kinds of guest misbehaviour that are logged; each kind is limited on
/// its own, so one flood does not hide a different fault.
enum class GuestFault : size_t {
  kMalformedChain,    // a descriptor chain that failed validation
  kInvalidHead,       // an avail ring entry naming no descriptor
  kMalformedRequest,  // a FUSE request that cannot be parsed
  kRequestFailed,     // a request that threw inside the daemon (answered EIO)
  kLimitReached,      // a per-guest bound was hit (lock waits, lock descriptions, fds)
  kEscapeAttempt,     // a lookup that would have left the shared directory
  kCount,
};

/// At most one message per kind per this interval.
inline constexpr auto kGuestFaultInterval = std::chrono::seconds(10);

namespace detail {
template <size_t... I>
std::array<RateLimiter, sizeof...(I)> make_limiters(std::index_sequence<I...>) {
  return {((void)I, RateLimiter(kGuestFaultInterval))...};
}
inline RateLimiter& guest_fault_limiter(GuestFault kind) {
  constexpr size_t kKinds = static_cast<size_t>(GuestFault::kCount);
  static std::array<RateLimiter, kKinds> limiters =
      make_limiters(std::make_index_sequence<kKinds>());
  return limiters[static_cast<size_t>(kind)];
}
}  // namespace detail

/// Logs a guest fault at warning level, rate-limited per kind; the message
/// after a quiet spell says how many were held back.
template <class... Args>
void guest_fault(GuestFault kind, fmt::format_string<Args...> format, Args&&... args) {
  uint64_t suppressed = 0;
  if (!detail::guest_fault_limiter(kind).allow(RateLimiter::Clock::now(), suppressed)) return;
  std::string text = fmt::format(format, std::forward<Args>(args)...);
  if (suppressed > 0) {
    spdlog::warn("{} ({} similar messages suppressed)", text, suppressed);
  } else {
    spdlog::warn("{}", text);
  }
}

}  // namespace log
}  // namespace vfsd
