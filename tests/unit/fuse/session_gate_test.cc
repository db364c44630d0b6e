// The session gate on its own, in both fence modes: a reset waits for every
// pass let in before it, wherever the pass is released, and nothing gets in
// while it runs.
#include "fuse/session_gate.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <optional>
#include <thread>
#include <vector>

namespace vfsd::fuse {
namespace {

using Mode = AsymmetricFence::Mode;
using namespace std::chrono_literals;

class SessionGateTest : public ::testing::TestWithParam<Mode> {};

TEST(SessionGate, ThisKernelGivesTheRequestPathTheCheapFence) {
  EXPECT_EQ(SessionGate().fence_mode(), Mode::kAsymmetric);
}

TEST_P(SessionGateTest, InFlightCountsPassesReleasedOnOtherThreads) {
  SessionGate gate(GetParam());
  std::vector<SessionGate::Pass> passes;
  for (int t = 0; t < 3; ++t) {
    std::thread([&] { passes.push_back(gate.enter()); }).join();
  }
  EXPECT_EQ(gate.in_flight(), 3u);
  std::thread([&] { passes[0].release(); }).join();
  EXPECT_EQ(gate.in_flight(), 2u);
  passes.clear();
  EXPECT_EQ(gate.in_flight(), 0u);
}

TEST_P(SessionGateTest, AResetWaitsForAPassThatMovedToAnotherThread) {
  SessionGate gate(GetParam());
  std::optional<SessionGate::Pass> pass;
  std::thread([&] { pass.emplace(gate.enter()); }).join();

  auto reset = std::async(std::launch::async, [&] { gate.close_and_wait(); });
  EXPECT_EQ(reset.wait_for(100ms), std::future_status::timeout)
      << "the reset went on while a request was inside";
  EXPECT_TRUE(gate.closing());

  std::thread([&] { pass.reset(); }).join();  // released on a third thread
  ASSERT_EQ(reset.wait_for(10s), std::future_status::ready) << "the last one out did not wake it";
  EXPECT_EQ(gate.in_flight(), 0u);
  gate.reopen();
}

TEST_P(SessionGateTest, EntriesDuringAResetWaitForReopen) {
  SessionGate gate(GetParam());
  gate.close_and_wait();
  auto entry = std::async(std::launch::async, [&] { auto pass = gate.enter(); });
  EXPECT_EQ(entry.wait_for(100ms), std::future_status::timeout) << "got in during a reset";
  EXPECT_EQ(gate.in_flight(), 0u) << "a waiting entry counts as outside";
  gate.reopen();
  ASSERT_EQ(entry.wait_for(10s), std::future_status::ready);
}

// Requests on two threads race with back-to-back resets; every third pass
// is handed to a third thread that releases it (as a reply finished by a
// pool thread). Each reset checks that nothing is inside and no pass is
// still held when it runs.
TEST_P(SessionGateTest, NoRequestIsInsideWhileAResetRuns) {
  SessionGate gate(GetParam());
  std::atomic<int> inside{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0};
  std::atomic<uint64_t> entries{0};
  std::mutex handoff_mu;
  std::vector<SessionGate::Pass> handoff;

  auto requests = [&] {
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      SessionGate::Pass pass = gate.enter();
      inside.fetch_add(1);
      entries.fetch_add(1);
      std::this_thread::yield();  // let a reset try to slip in
      inside.fetch_sub(1);
      if (++n % 3 == 0) {
        std::lock_guard lock(handoff_mu);
        handoff.push_back(std::move(pass));
      }
    }
    served.fetch_add(n);
  };
  auto releaser = [&] {
    for (;;) {
      const bool last = stop.load();
      {
        std::lock_guard lock(handoff_mu);
        handoff.clear();
      }
      if (last) return;
      std::this_thread::yield();
    }
  };
  std::thread a(requests);
  std::thread b(requests);
  std::thread c(releaser);

  int inside_during_reset = 0;
  int held_during_reset = 0;
  for (int reset = 0; reset < 2000; ++reset) {
    // Each reset races with requests that are running, not with idle ones.
    const uint64_t before = entries.load();
    while (entries.load() < before + 2) std::this_thread::yield();
    gate.close_and_wait();
    if (inside.load() != 0) ++inside_during_reset;
    {
      std::lock_guard lock(handoff_mu);
      if (!handoff.empty()) ++held_during_reset;
    }
    gate.reopen();
  }
  stop = true;
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(inside_during_reset, 0);
  EXPECT_EQ(held_during_reset, 0);
  EXPECT_GT(served.load(), 0u);
  handoff.clear();  // the passes pushed after the releaser's last round
  EXPECT_EQ(gate.in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(BothFences, SessionGateTest,
                         ::testing::Values(Mode::kAsymmetric, Mode::kSymmetric),
                         [](const auto& info) {
                           return info.param == Mode::kAsymmetric ? "Asymmetric" : "Symmetric";
                         });

}  // namespace
}  // namespace vfsd::fuse
