// Per-thread slots: one per thread at a time, reused after a thread ends,
// and safe when the owner goes first.
#include "util/thread_slots.h"

#include <gtest/gtest.h>

#include <barrier>
#include <set>
#include <thread>
#include <vector>

namespace vfsd {
namespace {

struct Counter {
  std::atomic<uint64_t> n{0};
};

uint64_t total(const ThreadSlots<Counter>& slots) {
  uint64_t sum = 0;
  slots.for_each([&](const Counter& c) { sum += c.n.load(std::memory_order_acquire); });
  return sum;
}

TEST(ThreadSlots, ThreadsRunningTogetherGetSlotsOfTheirOwn) {
  ThreadSlots<Counter> slots;
  constexpr int kThreads = 4;
  std::barrier all_attached(kThreads);
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = slots.local();
      EXPECT_EQ(&mine, &slots.local()) << "a thread keeps its slot";
      seen[t] = &mine;
      for (int i = 0; i < 1000; ++i) bump_owned(mine.n);
      all_attached.arrive_and_wait();  // none has ended yet: no reuse
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<Counter*>(seen.begin(), seen.end()).size(), size_t{kThreads});
  EXPECT_EQ(slots.size(), size_t{kThreads});
  EXPECT_EQ(total(slots), uint64_t{kThreads * 1000});
}

TEST(ThreadSlots, AnEndedThreadsSlotGoesToTheNextWithItsCounts) {
  ThreadSlots<Counter> slots;
  for (int round = 0; round < 5; ++round) {
    std::thread([&] { bump_owned(slots.local().n, 3); }).join();
  }
  EXPECT_EQ(slots.size(), 1u);
  EXPECT_EQ(total(slots), 15u);
}

TEST(ThreadSlots, ASecondOwnerOnOneThreadKeepsTheFirstOnesCounts) {
  ThreadSlots<Counter> a;
  ThreadSlots<Counter> b;
  for (int i = 0; i < 3; ++i) {
    bump_owned(a.local().n);
    bump_owned(b.local().n, 10);
  }
  EXPECT_EQ(total(a), 3u);
  EXPECT_EQ(total(b), 30u);
  EXPECT_EQ(a.size(), 1u) << "the slot handed back is the one taken again";
}

TEST(ThreadSlots, AThreadOutlivingItsOwnerEndsCleanly) {
  std::atomic<bool> owner_gone{false};
  std::thread late;
  {
    ThreadSlots<Counter> slots;
    std::atomic<bool> attached{false};
    late = std::thread([&slots, &attached, &owner_gone] {
      bump_owned(slots.local().n);
      attached = true;
      while (!owner_gone) std::this_thread::yield();
      // Ends now, after the owner: handing its slot back must not touch it.
    });
    while (!attached) std::this_thread::yield();
  }
  owner_gone = true;
  late.join();  // under ASan, a use after free here fails the test
  SUCCEED();
}

}  // namespace
}  // namespace vfsd
