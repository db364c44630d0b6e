#include "util/thread_pool.h"

#include <system_error>
#include <utility>

namespace vfsd {

ThreadPool::ThreadPool(size_t max_threads) : max_threads_(max_threads < 1 ? 1 : max_threads) {}

ThreadPool::~ThreadPool() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    closing_ = true;
    threads.swap(threads_);
  }
  work_.notify_all();
  for (auto& t : threads) t.join();
}

void ThreadPool::submit(std::function<void()> task) {
  std::unique_lock lock(mu_);
  tasks_.push_back(std::move(task));
  // A free thread takes it; otherwise grow, up to the limit.
  if (tasks_.size() > idle_ && threads_.size() < max_threads_) {
    try {
      threads_.emplace_back([this] { run(); });
    } catch (const std::system_error&) {
      // Out of threads: the ones we have will get to it; with none, the
      // caller serves it.
      if (threads_.empty()) {
        task = std::move(tasks_.back());
        tasks_.pop_back();
        lock.unlock();
        task();
        return;
      }
    }
  }
  lock.unlock();
  work_.notify_one();
}

size_t ThreadPool::threads() const {
  std::lock_guard lock(mu_);
  return threads_.size();
}

namespace {
thread_local bool t_pool_thread = false;
}  // namespace

bool ThreadPool::on_pool_thread() {
  return t_pool_thread;
}

void ThreadPool::run() {
  t_pool_thread = true;
  std::unique_lock lock(mu_);
  for (;;) {
    ++idle_;
    work_.wait(lock, [this] { return closing_ || !tasks_.empty(); });
    --idle_;
    if (tasks_.empty()) return;  // closing, and nothing left to run
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    try {
      task();
    } catch (...) {
      // Tasks answer their own errors; this only keeps the thread alive.
    }
    lock.lock();
  }
}

}  // namespace vfsd
