// Deferred replies through a real ring: a handler defers some chains and
// answers others; the deferred ones are finished later from another thread.
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fake_frontend.h"
#include "support/virtq_driver.h"
#include "util/deferred_reply.h"

namespace vfsd::vhost_user::test {
namespace {

using vfsd::test::VirtqDriver;

constexpr uint32_t kQueueSize = 16;
constexpr size_t kRingArea = 256 * 1024;
constexpr uint32_t kQueue = 1;

// Defers every request that starts with "defer"; echoes the others.
class DeferringHandler : public virtio::RequestHandler {
 public:
  uint32_t handle(uint32_t, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* deferrer) override {
    std::string in(request.remaining(), '\0');
    request.read(in.data(), in.size());
    if (in.rfind("defer", 0) == 0 && deferrer != nullptr) {
      auto d = deferrer->defer();
      // At most once per request.
      second_defer_was_null_ = deferrer->defer() == nullptr;
      std::lock_guard lock(mu_);
      deferred_.push_back(std::move(d));
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
  bool second_defer_was_null() const { return second_defer_was_null_; }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<DeferredReply>> deferred_;
  std::atomic<bool> second_defer_was_null_{false};
};

// Finishes `reply` with `text` on a thread of its own, as a lock waiter does.
void finish_from_thread(std::unique_ptr<DeferredReply> reply, const std::string& text) {
  std::thread([r = std::move(reply), text]() mutable {
    r->writer().write(text.data(), text.size());
    r->finish(text.size());
  }).join();
}

class Deferred : public ::testing::Test {
 protected:
  void SetUp() override {
    kick_ = make_eventfd();
    call_ = make_eventfd();
    fe_ = std::make_unique<FakeFrontend>(handler_);
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

  GuestRam ram_{1 << 20};
  DeferringHandler handler_;
  std::unique_ptr<FakeFrontend> fe_;
  std::unique_ptr<VirtqDriver> driver_;
  UniqueFd kick_, call_;
};

TEST_F(Deferred, LaterChainIsAnsweredFirstAndTheDeferredOneWhenFinished) {
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

TEST_F(Deferred, FinishedChainIsNotSignalledWhenEventIdxSaysSo) {
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

TEST_F(Deferred, ReplyLongerThanTheChainIsCut) {
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

TEST_F(Deferred, GetVringBaseDoesNotWaitForDeferredChains) {
  submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto r = get_vring_base();
  ASSERT_TRUE(r) << "GET_VRING_BASE waited for a deferred chain";
  EXPECT_EQ(r->header.request, static_cast<uint32_t>(Request::kGetVringBase));
  EXPECT_EQ(r->state().num, 1u) << "the deferred chain counts as consumed";
}

TEST_F(Deferred, FinishAfterTheRingStoppedDoesNothing) {
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

TEST_F(Deferred, FinishBeforeStopIsHonoured) {
  VirtqDriver& d = *driver_;
  uint16_t a = submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  // Whether the worker or stop() puts it on the ring, it gets there.
  finish_from_thread(handler_.take(0), "done");
  ASSERT_TRUE(get_vring_base());
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_EQ(d.used_elem(0), (std::pair<uint32_t, uint32_t>(a, 4)));
}

TEST_F(Deferred, FinishAfterDisconnectDoesNothing) {
  submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  auto reply = handler_.take(0);
  EXPECT_TRUE(fe_->hang_up().has_value());
  fe_.reset();  // the Backend, its workers and memory table are gone
  // The reply still holds the snapshot: writing and finishing are safe.
  finish_from_thread(std::move(reply), "nobody listens");
  EXPECT_EQ(driver_->used_idx(), 0);
}

TEST_F(Deferred, DroppedWithoutFinishReturnsTheChainEmpty) {
  uint16_t a = submit("defer A");
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 1; }));
  handler_.take(0).reset();
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(driver_->used_elem(0), (std::pair<uint32_t, uint32_t>(a, 0)));
}

TEST_F(Deferred, ManyDeferredChainsFinishInAnyOrder) {
  std::vector<uint16_t> heads;
  for (int i = 0; i < 5; ++i) heads.push_back(submit("defer " + std::to_string(i)));
  ASSERT_TRUE(wait_until([&] { return handler_.deferred_count() == 5; }));
  std::vector<std::thread> threads;
  for (int i = 4; i >= 0; --i) {
    threads.emplace_back([r = handler_.take(static_cast<size_t>(i)), i]() mutable {
      std::string s = "r" + std::to_string(i);
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

}  // namespace
}  // namespace vfsd::vhost_user::test
