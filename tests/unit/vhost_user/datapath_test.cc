// Rings and workers: a fake front-end sets up virtqueues in a memfd, a
// VirtqDriver plays the guest, and the test handler upper-cases requests.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "support/virtq_driver.h"
#include "test_support.h"

namespace vfsd::vhost_user::test {
namespace {

using vfsd::test::VirtqDriver;

constexpr uint32_t kQueueSize = 16;
constexpr size_t kRingArea = 256 * 1024;  // per queue: rings + buffers
constexpr uint64_t kNoEventIdx = kOfferedFeatures & ~kFeatureEventIdx;

class DataPath : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      kick_[i] = make_eventfd();
      call_[i] = make_eventfd();
    }
    fds_before_ = count_open_fds();
    fe_ = std::make_unique<FakeFrontend>(handler_);
  }
  void TearDown() override {
    handler_.release();
    if (fe_) {
      EXPECT_TRUE(fe_->hang_up().has_value());
    }
    fe_.reset();
  }

  // What QEMU 7.2 sends when the device is realized and the guest driver
  // starts it, in that order (the first SET_VRING_CALLs come before
  // SET_FEATURES and before any ring exists).
  void boot(uint64_t features = kOfferedFeatures, bool use_mem_table = false) {
    FakeFrontend& fe = *fe_;
    ASSERT_EQ(fe.call(Request::kGetFeatures).u64(), kOfferedFeatures);
    ASSERT_EQ(fe.call(Request::kGetProtocolFeatures).u64(), kOfferedProtocolFeatures);
    fe.send(Request::kSetProtocolFeatures, bytes(kOfferedProtocolFeatures));
    ASSERT_EQ(fe.call(Request::kGetQueueNum).u64(), 2u);
    ASSERT_EQ(fe.call(Request::kGetMaxMemSlots).u64(), 509u);
    UniqueFd backend_req = make_eventfd();
    ASSERT_EQ(fe.acked(Request::kSetBackendReqFd, {}, {backend_req.get()}), 0u);
    ASSERT_EQ(fe.acked(Request::kSetOwner), 0u);
    ASSERT_EQ(fe.call(Request::kGetFeatures).u64(), kOfferedFeatures);
    for (uint64_t i = 0; i < 2; ++i) {
      UniqueFd early_call = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes(i), {early_call.get()}), 0u);
    }
    for (uint64_t i = 0; i < 2; ++i) {
      UniqueFd err = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringErr, bytes(i), {err.get()}), 0u);
    }
    ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(features)), 0u);
    if (use_mem_table) {
      std::vector<uint8_t> p = bytes(MemoryTableHead{1, 0});
      auto r = bytes(ram_.region());
      p.insert(p.end(), r.begin(), r.end());
      ASSERT_EQ(fe.acked(Request::kSetMemTable, p, {ram_.fd.get()}), 0u);
    } else {
      ASSERT_EQ(fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, ram_.region()}),
                         {ram_.fd.get()}),
                0u);
    }
    for (uint32_t i = 0; i < 2; ++i) {
      driver_[i] = std::make_unique<VirtqDriver>(
          ram_.host + i * kRingArea, GuestRam::kGpa + i * kRingArea, kRingArea, kQueueSize);
      setup_ring(i, 0, /*enable=*/(features & kFeatureProtocolFeatures) != 0);
    }
  }

  // SET_VRING_NUM/BASE/ADDR/KICK/CALL (+ENABLE), as QEMU's vhost_virtqueue_start.
  void setup_ring(uint32_t i, uint16_t base, bool enable) {
    FakeFrontend& fe = *fe_;
    VirtqDriver& d = *driver_[i];
    ASSERT_EQ(fe.acked(Request::kSetVringNum, bytes(VringState{i, kQueueSize})), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringBase, bytes(VringState{i, base})), 0u);
    VringAddr addr{
        i, 0, ram_.uva_of(d.desc_gpa()), ram_.uva_of(d.used_gpa()), ram_.uva_of(d.avail_gpa()), 0};
    ASSERT_EQ(fe.acked(Request::kSetVringAddr, bytes(addr)), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringKick, bytes<uint64_t>(i), {kick_[i].get()}), 0u);
    ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes<uint64_t>(i), {call_[i].get()}), 0u);
    if (enable) {
      ASSERT_EQ(fe.acked(Request::kSetVringEnable, bytes(VringState{i, 1})), 0u);
    }
  }

  void kick(uint32_t i) {
    uint64_t one = 1;
    ASSERT_EQ(write(kick_[i].get(), &one, sizeof one), 8);
  }

  // Publishes a one-in/one-out chain and kicks; returns its head.
  uint16_t submit(uint32_t q, const std::string& request, uint32_t reply_size = 64) {
    VirtqDriver& d = *driver_[q];
    uint16_t head = d.add_chain({request}, {reply_size});
    d.publish(head);
    kick(q);
    return head;
  }

  bool wait_used(uint32_t q, uint16_t idx) {
    return wait_until([&] { return driver_[q]->used_idx() == idx; });
  }

  // The reply bytes of the chain whose writable descriptor follows `head`.
  std::string reply_of(uint32_t q, uint16_t head, uint32_t len) {
    VirtqDriver& d = *driver_[q];
    auto& out = d.desc(d.desc(head).next);
    return d.read(out.addr, len);
  }

  // What the daemon logged while `body` ran (the default logger is swapped
  // for the call; the workers must be quiet when it returns).
  static std::string logged_while(const std::function<void()>& body) {
    std::ostringstream out;
    auto previous = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out)));
    body();
    spdlog::set_default_logger(previous);
    return out.str();
  }

  GuestRam ram_{1 << 20};
  UpperHandler handler_;
  std::unique_ptr<FakeFrontend> fe_;
  std::unique_ptr<VirtqDriver> driver_[2];
  UniqueFd kick_[2], call_[2];
  int fds_before_ = 0;
};

TEST_F(DataPath, Qemu72BootSequenceThenARequestIsServedAndSignalled) {
  boot();
  uint16_t head = submit(1, "hello virtio");
  ASSERT_TRUE(wait_used(1, 1));
  auto [id, len] = driver_[1]->used_elem(0);
  EXPECT_EQ(id, head);
  EXPECT_EQ(len, 12u);
  EXPECT_EQ(reply_of(1, head, len), "HELLO VIRTIO");
  EXPECT_EQ(handler_.last_queue(), 1u);
  EXPECT_TRUE(wait_until([&] { return drain_eventfd(call_[1].get()) == 1; }));
  // The hiprio queue is served by its own worker.
  uint16_t h0 = submit(0, "forget");
  ASSERT_TRUE(wait_used(0, 1));
  EXPECT_EQ(reply_of(0, h0, 6), "FORGET");
  EXPECT_EQ(handler_.last_queue(), 0u);
}

TEST_F(DataPath, SetMemTableServesLikeAddMemReg) {
  boot(kOfferedFeatures, /*use_mem_table=*/true);
  uint16_t head = submit(1, "abc");
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(reply_of(1, head, 3), "ABC");
}

TEST_F(DataPath, DisconnectStopsWorkersAndClosesEveryFd) {
  boot();
  submit(1, "x");
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_TRUE(fe_->hang_up().has_value());
  fe_.reset();
  // Left: our kick/call eventfds and the memfd, as before the session.
  EXPECT_EQ(count_open_fds(), fds_before_);
}

TEST_F(DataPath, ReplacedCallFdIsSignalledAndTheOldOneNot) {
  boot(kNoEventIdx);
  submit(1, "one");
  ASSERT_TRUE(wait_used(1, 1));
  ASSERT_TRUE(wait_until([&] { return drain_eventfd(call_[1].get()) == 1; }));

  UniqueFd old_call = std::move(call_[1]);
  call_[1] = make_eventfd();
  int before = count_open_fds();
  ASSERT_EQ(fe_->acked(Request::kSetVringCall, bytes<uint64_t>(1), {call_[1].get()}), 0u);
  EXPECT_EQ(count_open_fds(), before) << "back-end's copy of the old call fd closed";

  submit(1, "two");
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_TRUE(wait_until([&] { return drain_eventfd(call_[1].get()) == 1; }));
  // Join the worker so that every notification decision has been made.
  fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  EXPECT_EQ(drain_eventfd(old_call.get()), 0u);
}

TEST_F(DataPath, NoFdCallMeansNoNotificationsButRequestsAreServed) {
  boot(kNoEventIdx);
  ASSERT_EQ(fe_->acked(Request::kSetVringCall, bytes<uint64_t>(1 | kVringNoFdMask)), 0u);
  submit(1, "quiet");
  ASSERT_TRUE(wait_used(1, 1));
  fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  EXPECT_EQ(drain_eventfd(call_[1].get()), 0u);
}

// A ring stopped with chains the driver published but never kicked for says
// so: after a guest hang, that tells a lost kick from a lost interrupt.
TEST_F(DataPath, AStopWithUnkickedChainsLogsHowManyWereLeft) {
  boot();  // no polling: only a kick wakes the worker
  submit(1, "served");
  ASSERT_TRUE(wait_used(1, 1));
  VirtqDriver& d = *driver_[1];
  d.publish(d.add_chain({"left"}, {16}));
  d.publish(d.add_chain({"left too"}, {16}));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(d.used_idx(), 1) << "served without a kick";

  std::optional<FakeFrontend::Reply> r;
  const std::string logged = logged_while([&] {
    r = fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  });
  EXPECT_EQ(r->state().num, 1u);
  EXPECT_NE(logged.find("vring 1: stopped with 2 published chain(s) not taken, at avail index 1"),
            std::string::npos)
      << logged;
}

TEST_F(DataPath, AStopWithNothingLeftLogsNoChainsLeft) {
  boot();
  submit(1, "served");
  ASSERT_TRUE(wait_used(1, 1));
  std::optional<FakeFrontend::Reply> r;
  const std::string logged = logged_while([&] {
    r = fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  });
  EXPECT_EQ(r->state().num, 1u);
  EXPECT_EQ(logged.find("not taken"), std::string::npos) << logged;
}

TEST_F(DataPath, GetVringBaseWaitsForTheRequestInFlight) {
  boot();
  handler_.block();
  VirtqDriver& d = *driver_[1];
  uint16_t a = d.add_chain({"first"}, {16});
  uint16_t b = d.add_chain({"second"}, {16});
  d.publish(a);
  d.publish(b);
  kick(1);
  ASSERT_TRUE(wait_until([&] { return handler_.entered() == 1; }));

  fe_->send(Request::kGetVringBase, bytes(VringState{1, 0}));
  EXPECT_FALSE(fe_->recv(200)) << "answered while a request was in flight";
  handler_.release();
  auto r = fe_->recv();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.request, static_cast<uint32_t>(Request::kGetVringBase));
  EXPECT_EQ(r->state().index, 1u);
  EXPECT_EQ(r->state().num, 1u) << "the chain in flight completed, the next one was left";
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_EQ(d.used_elem(0).first, a);
  EXPECT_EQ(handler_.calls(), 1);

  // Stopped: a kick on the old fd does nothing (the back-end closed its copy).
  kick(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(d.used_idx(), 1);

  // Restarted from the reported base, as QEMU does: the second chain is served.
  kick_[1] = make_eventfd();
  setup_ring(1, r->state().num, /*enable=*/true);
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_EQ(d.used_elem(1).first, b);
  EXPECT_EQ(reply_of(1, b, 6), "SECOND");
}

TEST_F(DataPath, MalformedChainsAreReturnedEmptyAndTheQueueGoesOn) {
  boot();
  VirtqDriver& d = *driver_[1];
  // A buffer outside guest memory.
  uint16_t bad = d.add_chain({"bad"}, {16});
  d.desc(bad).addr = 0xdead00000000;
  d.publish(bad);
  // A head index beyond the ring: nothing can be returned for it.
  d.publish(kQueueSize + 3);
  uint16_t good = d.add_chain({"good"}, {16});
  d.publish(good);
  kick(1);
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_EQ(d.used_elem(0), (std::pair<uint32_t, uint32_t>(bad, 0)));
  EXPECT_EQ(d.used_elem(1).first, good);
  EXPECT_EQ(reply_of(1, good, 4), "GOOD");
  EXPECT_EQ(handler_.calls(), 1);
  // And later requests still work.
  uint16_t again = submit(1, "again");
  ASSERT_TRUE(wait_used(1, 3));
  EXPECT_EQ(reply_of(1, again, 5), "AGAIN");
}

// Nothing a request does may end the worker: one that throws goes back
// empty, and the queue serves the next.
TEST_F(DataPath, ARequestThatThrowsIsReturnedEmptyAndTheQueueGoesOn) {
  boot();
  uint16_t bad = submit(1, "throw");
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(driver_[1]->used_elem(0), (std::pair<uint32_t, uint32_t>(bad, 0)));
  uint16_t good = submit(1, "after");
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_EQ(reply_of(1, good, 5), "AFTER");
}

TEST_F(DataPath, EventIdxSuppressedNotificationIsNotSignalled) {
  boot();  // EVENT_IDX negotiated
  VirtqDriver& d = *driver_[1];
  submit(1, "a");
  ASSERT_TRUE(wait_used(1, 1));
  // The first batch after start always notifies.
  ASSERT_TRUE(wait_until([&] { return drain_eventfd(call_[1].get()) == 1; }));

  // The driver wants an interrupt only after used idx passes 10.
  d.set_used_event(10);
  submit(1, "b");
  ASSERT_TRUE(wait_used(1, 2));
  // Now it wants one for the next used element (used idx 2 -> 3).
  d.set_used_event(2);
  submit(1, "c");
  ASSERT_TRUE(wait_used(1, 3));
  // Joining the worker makes every decision final; exactly one signal (for
  // "c"): the one for "b" was suppressed.
  fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  EXPECT_EQ(drain_eventfd(call_[1].get()), 1u);
}

// Publishes a chain and kicks only when avail_event asks for it, as the
// Linux driver does; returns whether it kicked.
bool publish_as_linux_does(VirtqDriver& d, const std::function<void()>& kick) {
  const uint16_t old_idx = d.avail_idx();
  d.publish(d.add_chain({"p"}, {8}));
  // The driver's full barrier between publishing and reading avail_event.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t new_idx = static_cast<uint16_t>(old_idx + 1);
  const bool need = static_cast<uint16_t>(new_idx - d.avail_event() - 1) <
                    static_cast<uint16_t>(new_idx - old_idx);
  if (need) kick();
  return need;
}

TEST_F(DataPath, APollingWorkerTellsTheDriverNotToKickAndServesWhatItPublished) {
  ASSERT_TRUE(fe_->hang_up().has_value());
  fe_ =
      std::make_unique<FakeFrontend>(handler_, BackendOptions{.max_poll = std::chrono::seconds(1)});
  boot();
  VirtqDriver& d = *driver_[1];
  int unkicked = 0;
  for (uint16_t i = 1; i <= 100; ++i) {
    if (!publish_as_linux_does(d, [&] { kick(1); })) ++unkicked;
    // A chain published without a kick is still served: no stall.
    ASSERT_TRUE(wait_used(1, i)) << "request " << i;
  }
  // The window opened (the requests follow each other within a second),
  // and while it was open the driver was told not to kick.
  EXPECT_GT(unkicked, 50);
}

TEST_F(DataPath, WithoutPollingTheDriverKicksForEveryRequest) {
  boot();  // BackendOptions{}: max_poll zero
  VirtqDriver& d = *driver_[1];
  int unkicked = 0;
  for (uint16_t i = 1; i <= 20; ++i) {
    if (!publish_as_linux_does(d, [&] { kick(1); })) ++unkicked;
    ASSERT_TRUE(wait_used(1, i));
  }
  EXPECT_EQ(unkicked, 0);
}

// The hiprio queue (0) with kick batching: on these 16-entry rings a batch
// is a quarter of the ring.
constexpr uint32_t kHiprioBatch = kQueueSize / 4;

class HiprioBatching : public DataPath {
 protected:
  void start_with_linger(std::chrono::nanoseconds linger, uint64_t features = kOfferedFeatures) {
    ASSERT_TRUE(fe_->hang_up().has_value());
    fe_ = std::make_unique<FakeFrontend>(
        handler_, BackendOptions{.hiprio_kick_batch = 32, .hiprio_linger = linger});
    boot(features);
  }
  bool publish_hiprio() {
    return publish_as_linux_does(*driver_[0], [&] { kick(0); });
  }
  // Waits until the worker, done with what was used, asked for the next kick
  // only at the batch's last chain.
  bool wait_batch_armed() {
    VirtqDriver& d = *driver_[0];
    return wait_until(
        [&] { return d.avail_event() == static_cast<uint16_t>(d.used_idx() + kHiprioBatch - 1); });
  }
};

TEST_F(HiprioBatching, TheDriverKicksOncePerBatchAndEachBatchIsServedOnItsKick) {
  // A linger far beyond the test's waits: whatever is served, a kick served.
  start_with_linger(std::chrono::hours(1));
  VirtqDriver& d = *driver_[0];
  // After an idle start the first chain kicks and is served at once.
  ASSERT_TRUE(publish_hiprio());
  ASSERT_TRUE(wait_used(0, 1));
  int kicks = 1;
  for (uint16_t batch = 0; batch < 5; ++batch) {
    ASSERT_TRUE(wait_batch_armed()) << "batch " << batch;
    for (uint32_t i = 1; i < kHiprioBatch; ++i) {
      ASSERT_FALSE(publish_hiprio()) << "batch " << batch << " chain " << i;
    }
    // Short of a batch nothing was kicked, so nothing is served yet.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(d.used_idx(), 1 + batch * kHiprioBatch);
    // The batch's last chain kicks, and the whole batch is served.
    ASSERT_TRUE(publish_hiprio()) << "batch " << batch;
    ++kicks;
    ASSERT_TRUE(wait_used(0, static_cast<uint16_t>(1 + (batch + 1) * kHiprioBatch)));
  }
  EXPECT_EQ(kicks, 6);
}

TEST_F(HiprioBatching, AChainShortOfABatchIsServedAfterTheLingerAndAnIdleQueueKicksPerChain) {
  start_with_linger(std::chrono::milliseconds(20));
  VirtqDriver& d = *driver_[0];
  ASSERT_TRUE(publish_hiprio());
  ASSERT_TRUE(wait_used(0, 1));
  ASSERT_TRUE(wait_batch_armed());
  // One more, short of a batch: no kick, yet served when the linger ends.
  ASSERT_FALSE(publish_hiprio());
  ASSERT_TRUE(wait_used(0, 2));
  // Then the queue is idle: after one more linger with nothing, the worker
  // asks for a kick per chain again (and sleeps without a timeout), so the
  // next lone chain kicks and is served at once.
  ASSERT_TRUE(wait_until([&] { return d.avail_event() == d.avail_idx(); }));
  // (Seen once, it may be process() passing by; five lingers later it is the
  // state the worker sleeps in.)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(d.avail_event(), d.avail_idx());
  ASSERT_TRUE(publish_hiprio());
  ASSERT_TRUE(wait_used(0, 3));
}

TEST_F(HiprioBatching, WithoutEventIdxEveryChainKicks) {
  start_with_linger(std::chrono::hours(1), kNoEventIdx);
  VirtqDriver& d = *driver_[0];
  for (uint16_t i = 1; i <= 3 * kHiprioBatch; ++i) {
    // Without EVENT_IDX the driver kicks unless the used flags say not to.
    ASSERT_TRUE(wait_until([&] { return (d.used_flags() & vfsd::test::kVirtqUsedFNoNotify) == 0; }))
        << "chain " << i;
    submit(0, "f");
    ASSERT_TRUE(wait_used(0, i)) << "chain " << i;
  }
}

TEST_F(DataPath, WithoutEventIdxNoInterruptFlagSuppresses) {
  boot(kNoEventIdx);
  VirtqDriver& d = *driver_[1];
  d.set_avail_flags(vfsd::test::kVirtqAvailFNoInterrupt);
  submit(1, "a");
  ASSERT_TRUE(wait_used(1, 1));
  fe_->call(Request::kGetVringBase, bytes(VringState{1, 0}));
  EXPECT_EQ(drain_eventfd(call_[1].get()), 0u);
}

TEST_F(DataPath, NoFdKickLeavesTheRingStoppedUntilARealKick) {
  boot();
  VirtqDriver& d = *driver_[1];
  ASSERT_EQ(fe_->acked(Request::kSetVringKick, bytes<uint64_t>(1 | kVringNoFdMask)), 0u);
  uint16_t head = d.add_chain({"wait"}, {16});
  d.publish(head);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(d.used_idx(), 0);
  kick_[1] = make_eventfd();
  ASSERT_EQ(fe_->acked(Request::kSetVringKick, bytes<uint64_t>(1), {kick_[1].get()}), 0u);
  // A (re)started worker serves what is already there, without a kick.
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(reply_of(1, head, 4), "WAIT");
}

TEST_F(DataPath, KickFdReplacementWhileRunning) {
  boot();
  submit(1, "a");
  ASSERT_TRUE(wait_used(1, 1));
  UniqueFd old_kick = std::move(kick_[1]);
  kick_[1] = make_eventfd();
  ASSERT_EQ(fe_->acked(Request::kSetVringKick, bytes<uint64_t>(1), {kick_[1].get()}), 0u);
  uint16_t head = submit(1, "b");  // kicks the new fd
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_EQ(reply_of(1, head, 1), "B");
}

TEST_F(DataPath, DisabledRingIsNotServedUntilEnabled) {
  boot();
  VirtqDriver& d = *driver_[1];
  ASSERT_EQ(fe_->acked(Request::kSetVringEnable, bytes(VringState{1, 0})), 0u);
  submit(1, "later");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(d.used_idx(), 0);
  ASSERT_EQ(fe_->acked(Request::kSetVringEnable, bytes(VringState{1, 1})), 0u);
  ASSERT_TRUE(wait_used(1, 1));
}

TEST_F(DataPath, WithProtocolFeaturesRingsStartDisabled) {
  FakeFrontend& fe = *fe_;
  fe.send(Request::kSetProtocolFeatures, bytes(kOfferedProtocolFeatures));
  ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kOfferedFeatures)), 0u);
  ASSERT_EQ(
      fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, ram_.region()}), {ram_.fd.get()}),
      0u);
  driver_[1] = std::make_unique<VirtqDriver>(ram_.host, GuestRam::kGpa, kRingArea, kQueueSize);
  setup_ring(1, 0, /*enable=*/false);
  submit(1, "x");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(driver_[1]->used_idx(), 0);
  ASSERT_EQ(fe.acked(Request::kSetVringEnable, bytes(VringState{1, 1})), 0u);
  ASSERT_TRUE(wait_used(1, 1));
}

TEST_F(DataPath, WithoutProtocolFeaturesTheKickStartsTheRing) {
  FakeFrontend& fe = *fe_;
  fe.send(Request::kSetFeatures, bytes(kFeatureVersion1));
  std::vector<uint8_t> p = bytes(MemoryTableHead{1, 0});
  auto r = bytes(ram_.region());
  p.insert(p.end(), r.begin(), r.end());
  fe.send(Request::kSetMemTable, p, {ram_.fd.get()});
  driver_[1] = std::make_unique<VirtqDriver>(ram_.host, GuestRam::kGpa, kRingArea, kQueueSize);
  VirtqDriver& d = *driver_[1];
  fe.send(Request::kSetVringNum, bytes(VringState{1, kQueueSize}));
  fe.send(Request::kSetVringAddr,
          bytes(VringAddr{1, 0, ram_.uva_of(d.desc_gpa()), ram_.uva_of(d.used_gpa()),
                          ram_.uva_of(d.avail_gpa()), 0}));
  fe.send(Request::kSetVringKick, bytes<uint64_t>(1), {kick_[1].get()});
  uint16_t head = submit(1, "no enable");
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(reply_of(1, head, 9), "NO ENABLE");
  // Without REPLY_ACK nothing but real replies came back.
  EXPECT_TRUE(fe.alive());
}

TEST_F(DataPath, RingSettingsAreRefusedWhileRunning) {
  boot();
  EXPECT_NE(fe_->acked(Request::kSetVringNum, bytes(VringState{1, 8})), 0u);
  EXPECT_NE(fe_->acked(Request::kSetVringBase, bytes(VringState{1, 5})), 0u);
  EXPECT_NE(fe_->acked(Request::kSetVringAddr, bytes(VringAddr{1, 0, 0, 0, 0, 0})), 0u);
  uint16_t head = submit(1, "still fine");
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(reply_of(1, head, 10), "STILL FINE");
}

TEST_F(DataPath, RingAddressesOutsideMemoryDoNotStartTheRing) {
  FakeFrontend& fe = *fe_;
  fe.send(Request::kSetProtocolFeatures, bytes(kOfferedProtocolFeatures));
  ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kOfferedFeatures)), 0u);
  ASSERT_EQ(
      fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, ram_.region()}), {ram_.fd.get()}),
      0u);
  ASSERT_EQ(fe.acked(Request::kSetVringNum, bytes(VringState{1, kQueueSize})), 0u);
  // Guest-physical addresses where user addresses belong: not mapped.
  ASSERT_EQ(fe.acked(Request::kSetVringAddr,
                     bytes(VringAddr{1, 0, GuestRam::kGpa, GuestRam::kGpa + 0x1000,
                                     GuestRam::kGpa + 0x2000, 0})),
            0u);
  ASSERT_EQ(fe.acked(Request::kSetVringKick, bytes<uint64_t>(1), {kick_[1].get()}), 0u);
  EXPECT_NE(fe.acked(Request::kSetVringEnable, bytes(VringState{1, 1})), 0u);
  EXPECT_TRUE(fe.alive());
}

TEST_F(DataPath, RemovedRegionMakesChainsFailButNotTheDaemon) {
  boot();
  submit(1, "before");
  ASSERT_TRUE(wait_used(1, 1));
  // The worker's ring mapping stays alive; new buffers no longer translate.
  ASSERT_EQ(fe_->acked(Request::kRemMemReg, bytes(SingleMemoryRegion{0, ram_.region()})), 0u);
  submit(1, "during");
  ASSERT_TRUE(wait_used(1, 2));
  EXPECT_EQ(driver_[1]->used_elem(1).second, 0u);
  ASSERT_EQ(
      fe_->acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, ram_.region()}), {ram_.fd.get()}),
      0u);
  uint16_t head = submit(1, "after");
  ASSERT_TRUE(wait_used(1, 3));
  EXPECT_EQ(reply_of(1, head, 5), "AFTER");
}

TEST_F(DataPath, ResetDeviceStopsRings) {
  boot();
  submit(1, "a");
  ASSERT_TRUE(wait_used(1, 1));
  ASSERT_EQ(fe_->acked(Request::kResetDevice), 0u);
  submit(1, "b");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(driver_[1]->used_idx(), 1);
  // Set up again (features, ring): served again from the ring's position.
  ASSERT_EQ(fe_->acked(Request::kSetFeatures, bytes(kOfferedFeatures)), 0u);
  kick_[1] = make_eventfd();
  setup_ring(1, 1, true);
  ASSERT_TRUE(wait_used(1, 2));
}

TEST_F(DataPath, ResetOwnerStopsRings) {
  boot();
  ASSERT_EQ(fe_->acked(Request::kResetOwner), 0u);
  submit(1, "b");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(driver_[1]->used_idx(), 0);
  EXPECT_TRUE(fe_->alive());
}

}  // namespace
}  // namespace vfsd::vhost_user::test
