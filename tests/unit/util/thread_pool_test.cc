#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace vfsd {
namespace {

TEST(ThreadPool, StartsNoThreadUntilWorkArrives) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.threads(), 0u);
}

TEST(ThreadPool, RunsAtMostMaxThreadsTasksAtOnce) {
  constexpr int kMax = 3;
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0, most = 0;
  bool go = false;
  {
    ThreadPool pool(kMax);
    for (int i = 0; i < 10; ++i) {
      pool.submit([&] {
        std::unique_lock lock(mu);
        most = std::max(most, ++inside);
        cv.notify_all();
        cv.wait(lock, [&] { return go; });
        --inside;
      });
    }
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return inside == kMax; }));
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(pool.threads(), static_cast<size_t>(kMax));
    lock.lock();
    go = true;
    cv.notify_all();
  }
  EXPECT_EQ(most, kMax);
}

TEST(ThreadPool, DestructionRunsWhatWasQueued) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2);
    for (int i = 0; i < 1000; ++i) pool.submit([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(ThreadPool, ATaskThatThrowsDoesNotStopThePool) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(1);
    pool.submit([] { throw std::runtime_error("boom"); });
    pool.submit([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace vfsd
