// --thread-pool-size: a pool of at most N threads that serve requests handed
// over by the queue threads. Threads start as work arrives (an idle daemon
// holds none) and stay until the pool is destroyed.
//
// Threads are started by whoever calls submit(): they inherit its signal
// mask, capabilities and seccomp filter, so the pool must only be used after
// the daemon confined itself (the queue workers are).
// Pinned by: thread_pool_test.cc(ThreadPool.*), deferred_test.cc(Pool.*)
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vfsd {

class ThreadPool {
 public:
  /// `max_threads` >= 1.
  explicit ThreadPool(size_t max_threads);
  /// Runs every task already queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Queues `task`, starting a thread when none is free and fewer than
  /// max_threads run. When the pool has no thread at all and cannot start
  /// one (out of threads), runs `task` on the caller's thread instead.
  /// Tasks are expected to handle their own errors.
  void submit(std::function<void()> task);

  /// Threads started so far (tests, logs).
  size_t threads() const;

  /// Whether the calling thread is one of some ThreadPool's (tests: which
  /// side of the hand-off served a request).
  static bool on_pool_thread();

 private:
  void run();

  const size_t max_threads_;
  mutable std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  std::vector<std::thread> threads_;         // guarded by mu_
  size_t idle_ = 0;                          // threads waiting for a task; guarded by mu_
  bool closing_ = false;                     // guarded by mu_
};

}  // namespace vfsd
