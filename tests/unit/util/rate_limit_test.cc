#include "util/rate_limit.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include <spdlog/sinks/ostream_sink.h>

namespace vfsd {
namespace {

using namespace std::chrono_literals;

TEST(RateLimiter, OnePerIntervalAndCountsTheRest) {
  RateLimiter limiter(10s);
  const auto t0 = RateLimiter::Clock::time_point{} + 100s;
  uint64_t suppressed = 99;
  ASSERT_TRUE(limiter.allow(t0, suppressed));
  EXPECT_EQ(suppressed, 0u);
  for (int i = 1; i <= 1000; ++i) EXPECT_FALSE(limiter.allow(t0 + 1ms * i, suppressed));
  EXPECT_FALSE(limiter.allow(t0 + 9999ms, suppressed));
  ASSERT_TRUE(limiter.allow(t0 + 10s, suppressed));
  EXPECT_EQ(suppressed, 1001u);
  ASSERT_TRUE(limiter.allow(t0 + 30s, suppressed));
  EXPECT_EQ(suppressed, 0u);
}

// A flood of one kind of guest fault reaches the log once; another kind
// still gets through.
TEST(GuestFaultLog, AFloodIsLoggedOncePerKind) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto logger = std::make_shared<spdlog::logger>("test", sink);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  for (int i = 0; i < 100000; ++i)
    log::guest_fault(log::GuestFault::kMalformedChain, "chain {}", i);
  log::guest_fault(log::GuestFault::kInvalidHead, "head {}", 7);
  spdlog::set_default_logger(previous);
  const std::string text = out.str();
  EXPECT_NE(text.find("chain 0"), std::string::npos);
  EXPECT_EQ(text.find("chain 1"), std::string::npos) << text;
  EXPECT_NE(text.find("head 7"), std::string::npos);
  size_t lines = 0;
  for (char c : text) lines += c == '\n';
  EXPECT_EQ(lines, 2u) << text;
}

}  // namespace
}  // namespace vfsd
