// Deferred replies through a real ring: a handler defers some chains and
// answers others; the deferred ones are finished later from another thread.
// Every test runs twice: chains served on the queue's thread, and by a
// thread pool (--thread-pool-size). The pool's own rules are tested last.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/virtq_driver.h"
#include "test_support.h"
#include "util/deferred_reply.h"
#include "util/thread_pool.h"

namespace vfsd::vhost_user::test {
namespace {

using vfsd::test::VirtqDriver;

constexpr uint32_t kQueueSize = 16;
constexpr size_t kGuestRam = 4 << 20;
constexpr size_t kRingArea = 3 << 20;  // rings and buffers, room for a 1 MiB reply
constexpr uint32_t kQueue = 1;

// Defers every request that starts with "defer"; "block" waits until
// release(); "big N" answers N bytes of a pattern; echoes the others.
class DeferringHandler : public virtio::RequestHandler {
 public:
  uint32_t handle(uint32_t, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* deferrer) override {
    std::string in(request.remaining(), '\0');
    request.read(in.data(), in.size());
    {
      std::lock_guard lock(mu_);
      threads_.push_back(std::this_thread::get_id());
      on_pool_.push_back(ThreadPool::on_pool_thread());
      max_inside_ = std::max(max_inside_, ++inside_);
    }
    uint32_t len = answer(in, reply, deferrer);
    std::lock_guard lock(mu_);
    --inside_;
    return len;
  }

  uint32_t answer(const std::string& in, IovecWriter& reply, ReplyDeferrer* deferrer) {
    if (in.rfind("block", 0) == 0) {
      std::unique_lock lock(mu_);
      ++blocked_;
      released_cv_.notify_all();
      released_cv_.wait(lock, [&] { return released_; });
    }
    if (in.rfind("big ", 0) == 0) {
      std::string out(std::stoul(in.substr(4)), '\0');
      for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>('a' + i % 26);
      reply.write(out.data(), out.size());
      return static_cast<uint32_t>(out.size());
    }
    if (in.rfind("defer", 0) == 0 && deferrer != nullptr) {
      auto d = deferrer->defer();
      // At most once per request.
      second_defer_was_null_ = deferrer->defer() == nullptr;
      std::lock_guard lock(mu_);
      deferred_.push_back(std::move(d));
      deferred_requests_.push_back(in);
      return 4;  // ignored: the chain was deferred
    }
    size_t n = std::min(in.size(), reply.remaining());
    reply.write(in.data(), n);
    return static_cast<uint32_t>(n);
  }

  size_t deferred_count() {
    std::lock_guard lock(mu_);
    return deferred_.size();
  }
  std::unique_ptr<DeferredReply> take(size_t i) {
    std::lock_guard lock(mu_);
    return std::move(deferred_.at(i));
  }
  // The request the i-th deferral came with (a pool defers in any order).
  std::string request_of(size_t i) {
    std::lock_guard lock(mu_);
    return deferred_requests_.at(i);
  }
  bool second_defer_was_null() const { return second_defer_was_null_; }

  // Waits until `n` "block" requests are inside the handler at once.
  bool wait_blocked(int n) {
    std::unique_lock lock(mu_);
    return released_cv_.wait_for(lock, std::chrono::seconds(30), [&] { return blocked_ >= n; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    released_cv_.notify_all();
  }
  int max_inside() {
    std::lock_guard lock(mu_);
    return max_inside_;
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }
  // Whether each request so far ran on a pool thread.
  std::vector<bool> on_pool() {
    std::lock_guard lock(mu_);
    return on_pool_;
  }

 private:
  std::mutex mu_;
  std::condition_variable released_cv_;
  bool released_ = false;
  int blocked_ = 0;
  int inside_ = 0;
  int max_inside_ = 0;
  std::vector<std::thread::id> threads_;
  std::vector<bool> on_pool_;
  std::vector<std::unique_ptr<DeferredReply>> deferred_;
  std::vector<std::string> deferred_requests_;
  std::atomic<bool> second_defer_was_null_{false};
};

// Finishes `reply` with `text` on a thread of its own, as a lock waiter does.
void finish_from_thread(std::unique_ptr<DeferredReply> reply, const std::string& text) {
  std::thread([r = std::move(reply), text]() mutable {
    r->writer().write(text.data(), text.size());
    r->finish(text.size());
  }).join();
}

// The parameter is --thread-pool-size (0: no pool).
class Deferred : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    kick_ = make_eventfd();
    call_ = make_eventfd();
    fe_ = std::make_unique<FakeFrontend>(handler_, BackendOptions{.thread_pool_size = GetParam()});
    FakeFrontend& fe = *fe_;
    fe.send(Request::kSetProtocolFeatures, bytes(kOfferedProtocolFeatures));
    ASSERT_EQ(fe.acked(Request::kSetOwner), 0u);
    ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kOfferedFeatures)), 0u);  // EVENT_IDX on
    ASSERT_EQ(
        fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, ram_.region()}), {ram_.fd.get()}),
        0u);
    driver_ = std::make_unique<VirtqDriver>(ram_.host, GuestRam::kGpa, kRingArea, kQueueSize);
    start_ring(0);
  }
  void TearDown() override {
    handler_.release();
    if (fe_) {
      EXPECT_TRUE(fe_->hang_up().has_value());
    }
    fe_.reset();
  }

  void start_ring(uint16_t base) {
    FakeFrontend& fe = *fe_;
    VirtqDriver& d = *driver_;
    ASSERT_EQ(fe.acked(Request::kSetVringNum, bytes(VringState{kQueue, kQueueSize})), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringBase, bytes(VringState{kQueue, base})), 0u);
    VringAddr addr{
        kQueue, 0, ram_.uva_of(d.desc_gpa()), ram_.uva_of(d.used_gpa()), ram_.uva_of(d.avail_gpa()),
        0};
    ASSERT_EQ(fe.acked(Request::kSetVringAddr, bytes(addr)), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringKick, bytes<uint64_t>(kQueue), {kick_.get()}), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes<uint64_t>(kQueue), {call_.get()}), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringEnable, bytes(VringState{kQueue, 1})), 0u);
  }

  uint16_t submit(const std::string& request, uint32_t reply_size = 64) {
    uint16_t head = driver_->add_chain({request}, {reply_size});
    driver_->publish(head);
    uint64_t one = 1;
    EXPECT_EQ(write(kick_.get(), &one, sizeof one), 8);
    return head;
  }
  // Publishes every request, then kicks once: the worker finds them all
  // pending at once (as a pool needs, see kPoolFromPending).
  std::vector<uint16_t> submit_all(const std::vector<std::string>& requests) {
    std::vector<uint16_t> heads;
    for (const std::string& request : requests)
      heads.push_back(driver_->add_chain({request}, {64}));
    for (uint16_t head : heads) driver_->publish(head);
    uint64_t one = 1;
    EXPECT_EQ(write(kick_.get(), &one, sizeof one), 8);
    return heads;
  }
  std::string reply_of(uint16_t head, uint32_t len) {
    auto& out = driver_->desc(driver_->desc(head).next);
    return driver_->read(out.addr, len);
  }
  bool wait_used(uint16_t idx) {
    return wait_until([&] { return driver_->used_idx() == idx; });
  }
  // GET_VRING_BASE: stops the ring. A back-end that waited for a deferred
  // chain would never answer (no test finishes that chain first), so the
  // bound only needs to exceed a slow (ASan, loaded 2-core) answer by far.
  std::optional<Reply> get_vring_base() {
    fe_->send(Request::kGetVringBase, bytes(VringState{kQueue, 0}));
    return fe_->recv(10000);
  }

  GuestRam ram_{kGuestRam};
  DeferringHandler handler_;
  std::unique_ptr<FakeFrontend> fe_;
  std::unique_ptr<VirtqDriver> driver_;
  UniqueFd kick_, call_;
};

TEST_P(Deferred, LaterChainIsAnsweredFirstAndTheDeferredOneWhenFinished) {
  VirtqDriver& d = *driver_;
  uint16_t a = submit("defer A");
  uint16_t b = submit("B");
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(d.used_elem(0), (std::pair<uint32_t, uint32_t>(b, 1)));
  EXPECT_EQ(reply_of(b, 1), "B");
  ASSERT_EQ(handler_.deferred_count(), 1u);
  EXPECT_TRUE(handler_.second_defer_was_null());
  // A stays off the used ring, and nothing was written into its buffer.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_EQ(reply_of(a, 4), std::string(4, '\0'));

  ASSERT_TRUE(wait_until([&] { return drain_eventfd(call_.get()) >= 1; }));
  d.set_used_event(1);  // EVENT_IDX: the driver wants a call for the next used entry
  finish_from_thread(handler_.take(0), "late reply");
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(d.used_elem(1), (std::pair<uint32_t, uint32_t>(a, 10)));
  EXPECT_EQ(reply_of(a, 10), "late reply");
  EXPECT_TRUE(wait_until([&] { return drain_eventfd(call_.get()) == 1; }));
}

TEST_P(Deferred, FinishedChainIsNotSignalledWhenEventIdxSaysSo) {
  VirtqDriver& d = *driver_;
  submit("defer A");
  submit("B");
  ASSERT_TRUE(wait_used(1));
  ASSERT_TRUE(wait_until([&] { return drain_eventfd(call_.get()) >= 1; }));
  d.set_used_event(10);
  finish_from_thread(handler_.take(0), "x");
  ASSERT_TRUE(wait_used(2));
  // Joining the worker makes every notification decision final.
  ASSERT_TRUE(get_vring_base());
  EXPECT_EQ(drain_eventfd(call_.get()), 0u);
}

TEST_P(Deferred, ReplyLongerThanTheChainIsCut) {
  uint16_t a = submit("defer", /*reply_size=*/4);
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto r = handler_.take(0);
  EXPECT_EQ(r->writer().remaining(), 4u);
  EXPECT_FALSE(r->writer().write("too long", 8));
  ASSERT_TRUE(r->writer().write("abcd", 4));
  r->finish(1000);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(driver_->used_elem(0), (std::pair<uint32_t, uint32_t>(a, 4)));
  EXPECT_EQ(reply_of(a, 4), "abcd");
}

TEST_P(Deferred, GetVringBaseDoesNotWaitForDeferredChains) {
  submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto r = get_vring_base();
  ASSERT_TRUE(r) << "GET_VRING_BASE waited for a deferred chain";
  EXPECT_EQ(r->header.request, static_cast<uint32_t>(Request::kGetVringBase));
  EXPECT_EQ(r->state().num, 1u) << "the deferred chain counts as consumed";
}

TEST_P(Deferred, FinishAfterTheRingStoppedDoesNothing) {
  VirtqDriver& d = *driver_;
  uint16_t a = submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto r = get_vring_base();
  ASSERT_TRUE(r);
  // Started again from the reported base (as after a guest reset the ring is
  // reused): a completion of the old worker's chain must not reach it.
  kick_ = make_eventfd();
  start_ring(r->state().num);
  drain_eventfd(call_.get());
  finish_from_thread(handler_.take(0), "stale");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(d.used_idx(), 0);
  EXPECT_EQ(reply_of(a, 5), std::string(5, '\0')) << "guest memory written after stop";
  EXPECT_EQ(drain_eventfd(call_.get()), 0u);
  // The restarted ring works.
  uint16_t b = submit("after");
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(d.used_elem(0).first, b);
}

TEST_P(Deferred, FinishBeforeStopIsHonoured) {
  VirtqDriver& d = *driver_;
  uint16_t a = submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  // Whether the worker or stop() puts it on the ring, it gets there.
  finish_from_thread(handler_.take(0), "done");
  ASSERT_TRUE(get_vring_base());
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_EQ(d.used_elem(0), (std::pair<uint32_t, uint32_t>(a, 4)));
}

TEST_P(Deferred, FinishAfterDisconnectDoesNothing) {
  submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto reply = handler_.take(0);
  EXPECT_TRUE(fe_->hang_up().has_value());
  fe_.reset();  // the Backend, its workers and memory table are gone
  // The reply still holds the snapshot: writing and finishing are safe.
  finish_from_thread(std::move(reply), "nobody listens");
  EXPECT_EQ(driver_->used_idx(), 0);
}

TEST_P(Deferred, DroppedWithoutFinishReturnsTheChainEmpty) {
  uint16_t a = submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  handler_.take(0).reset();
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(driver_->used_elem(0), (std::pair<uint32_t, uint32_t>(a, 0)));
}

TEST_P(Deferred, ManyDeferredChainsFinishInAnyOrder) {
  std::vector<uint16_t> heads;
  for (int i = 0; i < 5; ++i) heads.push_back(submit("defer " + std::to_string(i)));
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 5; }));
  std::vector<std::thread> threads;
  for (int i = 4; i >= 0; --i) {
    // "defer N" is answered "rN", whichever slot its deferral took.
    const std::string s = "r" + handler_.request_of(static_cast<size_t>(i)).substr(6);
    threads.emplace_back([r = handler_.take(static_cast<size_t>(i)), s]() mutable {
      r->writer().write(s.data(), s.size());
      r->finish(s.size());
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(wait_used(5));
  std::vector<bool> seen(5, false);
  for (uint16_t slot = 0; slot < 5; ++slot) {
    auto [id, len] = driver_->used_elem(slot);
    EXPECT_EQ(len, 2u);
    for (int i = 0; i < 5; ++i) {
      if (id == heads[static_cast<size_t>(i)]) {
        EXPECT_EQ(reply_of(heads[static_cast<size_t>(i)], 2), "r" + std::to_string(i));
        seen[static_cast<size_t>(i)] = true;
      }
    }
  }
  EXPECT_EQ(seen, std::vector<bool>(5, true));
}

INSTANTIATE_TEST_SUITE_P(OnQueueThreadAndInPool, Deferred, ::testing::Values(0u, 2u),
                         [](const auto& info) {
                           return info.param == 0 ? std::string("NoPool")
                                                  : "Pool" + std::to_string(info.param);
                         });

// --thread-pool-size's own rules.
using Pool = Deferred;

// Blocking requests, enough to be pending together above both the pool's
// size and the point where the worker hands chains to the pool.
std::vector<std::string> blocks(size_t n) {
  n = std::max(n, kPoolFromPending);
  std::vector<std::string> requests;
  for (size_t i = 0; i < n; ++i) requests.push_back("block " + std::to_string(i));
  return requests;
}

TEST_P(Pool, AsManyChainsRunAtOnceAsThePoolHasThreads) {
  const int size = static_cast<int>(GetParam());
  const auto requests = blocks(static_cast<size_t>(size) + 1);
  submit_all(requests);
  // On the queue's thread the second could not start before the first ends.
  ASSERT_TRUE(handler_.wait_blocked(size));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(handler_.max_inside(), size);
  handler_.release();
  ASSERT_TRUE(wait_used(static_cast<uint16_t>(requests.size())));
  auto threads = handler_.threads();
  std::sort(threads.begin(), threads.end());
  threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
  EXPECT_EQ(threads.size(), static_cast<size_t>(size));
  EXPECT_EQ(handler_.on_pool(), std::vector<bool>(requests.size(), true));
}

// Inline below kPoolFromPending pending requests: one at a time, every chain
// is served by the queue's own thread (no hand-off); a burst goes to the pool.
TEST_P(Pool, FewPendingChainsAreServedOnTheQueueThreadAndABurstInThePool) {
  const size_t size = GetParam();
  for (uint16_t i = 1; i <= 8; ++i) {
    submit("one " + std::to_string(i));
    ASSERT_TRUE(wait_used(i));
  }
  const auto inline_threads = handler_.threads();
  ASSERT_EQ(inline_threads.size(), 8u);
  EXPECT_EQ(handler_.on_pool(), std::vector<bool>(8, false))
      << "one request at a time must stay on the queue's thread";
  EXPECT_EQ(std::count(inline_threads.begin(), inline_threads.end(), inline_threads[0]), 8);

  const auto requests = blocks(size);
  submit_all(requests);
  ASSERT_TRUE(handler_.wait_blocked(static_cast<int>(size)));
  handler_.release();
  ASSERT_TRUE(wait_used(static_cast<uint16_t>(8 + requests.size())));
  const std::vector<bool> on_pool = handler_.on_pool();
  ASSERT_EQ(on_pool.size(), 8 + requests.size());
  for (size_t i = 8; i < on_pool.size(); ++i)
    EXPECT_TRUE(on_pool[i]) << "burst request " << i - 8 << " on the queue's thread";
}

TEST_P(Pool, LargeReplyLandsWhole) {
  // 1 MiB (the guest's max_read) in one writable descriptor: a pool that
  // bounced replies through a smaller buffer would cut or garble it.
  constexpr uint32_t kSize = 1 << 20;
  uint16_t head = submit("big " + std::to_string(kSize), kSize);
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(driver_->used_elem(0), (std::pair<uint32_t, uint32_t>(head, kSize)));
  std::string got = reply_of(head, kSize);
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i] != static_cast<char>('a' + i % 26);
  EXPECT_EQ(bad, 0u);
}

TEST_P(Pool, GetVringBaseWaitsForPooledChains) {
  const auto requests = blocks(1);
  const std::vector<uint16_t> heads = submit_all(requests);
  ASSERT_TRUE(handler_.wait_blocked(1));
  // The pooled chains write into guest memory: the ring must not be handed
  // back while they run.
  fe_->send(Request::kGetVringBase, bytes(VringState{kQueue, 0}));
  EXPECT_FALSE(fe_->recv(300)) << "GET_VRING_BASE answered while a pooled chain ran";
  handler_.release();
  auto r = fe_->recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->state().num, requests.size());
  // Every one answered before the ring was handed back.
  ASSERT_EQ(driver_->used_idx(), requests.size());
  std::vector<uint16_t> used;
  for (uint16_t slot = 0; slot < requests.size(); ++slot) {
    EXPECT_EQ(driver_->used_elem(slot).second, 7u);  // "block N" echoed
    used.push_back(static_cast<uint16_t>(driver_->used_elem(slot).first));
  }
  std::sort(used.begin(), used.end());
  std::vector<uint16_t> want = heads;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(used, want);
}

// A driver can republish a head that is still in the pool. The worker takes
// at most a queue's worth of chains into the pool, and takes more, without a
// kick, as answers come back.
TEST_P(Pool, FullPoolResumesWhenAnswersComeBack) {
  uint16_t head = driver_->add_chain({"block"}, {8});
  const auto first = blocks(1);
  submit_all(first);
  ASSERT_TRUE(handler_.wait_blocked(1));
  // A queue's worth in the pool, then ten more published behind it.
  for (int batch : {static_cast<int>(kQueueSize - first.size()), 10}) {
    for (int i = 0; i < batch; ++i) driver_->publish(head);
    uint64_t one = 1;
    ASSERT_EQ(write(kick_.get(), &one, sizeof one), 8);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  handler_.release();
  EXPECT_TRUE(wait_used(static_cast<uint16_t>(kQueueSize + 10)))
      << "used index " << driver_->used_idx();
}

TEST_P(Pool, PoolTakesAtMostAQueueOfChains) {
  uint16_t head = driver_->add_chain({"block"}, {8});
  submit_all(blocks(1));
  ASSERT_TRUE(handler_.wait_blocked(1));
  // Keep republishing, a little under a queue ahead each time: a worker that
  // kept popping would take them all into the pool.
  for (int round = 0; round < 4; ++round) {
    for (uint32_t i = 0; i < kQueueSize - 1; ++i) driver_->publish(head);
    uint64_t one = 1;
    ASSERT_EQ(write(kick_.get(), &one, sizeof one), 8);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  handler_.release();
  // The pool's queue's worth is answered, and at most one more queue's worth
  // that the driver had published sanely when the worker last read the avail
  // index; by now that index is far past what may be outstanding, so pop()
  // refuses the rest and the used index settles.
  ASSERT_TRUE(wait_until([&] { return driver_->used_idx() >= kQueueSize; }));
  uint16_t settled = 0;
  do {
    settled = driver_->used_idx();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (driver_->used_idx() != settled);
  EXPECT_LE(settled, 2 * kQueueSize);
  EXPECT_EQ(handler_.threads().size(), settled);
}

INSTANTIATE_TEST_SUITE_P(ThreadPool, Pool, ::testing::Values(1u, 3u),
                         [](const auto& info) { return "Size" + std::to_string(info.param); });

}  // namespace
}  // namespace vfsd::vhost_user::test
