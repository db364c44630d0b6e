// The vhost-user message layer against a fake front-end: every message we
// handle, well-formed and malformed, and what happens to the connection next.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "test_support.h"
#include "vhost_user/backend.h"
#include "vhost_user/listener.h"

namespace vfsd::vhost_user::test {
namespace {

constexpr uint32_t kNeedReply = kVersion | kFlagNeedReply;

uint32_t code(Request r) {
  return static_cast<uint32_t>(r);
}

class Protocol : public ::testing::Test {
 protected:
  void SetUp() override { fds_before_ = count_open_fds(); }
  // Negotiates REPLY_ACK so that every refusal is visible as a status.
  void negotiate_reply_ack(FakeFrontend& fe) {
    fe.send(Request::kSetProtocolFeatures, bytes<uint64_t>(kOfferedProtocolFeatures));
    ASSERT_TRUE(fe.alive());
  }
  int fds_before_ = 0;
  UpperHandler handler_;
};

// A device state that records what the back-end asked of it.
struct RecordingState final : DeviceStateHandler {
  void migration_started() override { ++started; }
  void migration_ended() override { ++ended; }
  Result<std::vector<uint8_t>> save_state() override { return std::vector<uint8_t>{1, 2, 3}; }
  VoidResult load_state(std::span<const uint8_t> state) override {
    loaded.assign(state.begin(), state.end());
    return ok();
  }
  int started = 0, ended = 0;
  std::vector<uint8_t> loaded;
};

TEST_F(Protocol, MigrationIsOfferedOnlyWithADeviceStateHandler) {
  {
    FakeFrontend fe(handler_);
    EXPECT_EQ(fe.call(Request::kGetFeatures).u64() & kFeatureLogAll, 0u);
    EXPECT_EQ(fe.call(Request::kGetProtocolFeatures).u64() & kMigrationProtocolFeatures, 0u);
    negotiate_reply_ack(fe);
    EXPECT_EQ(fe.acked(Request::kSetFeatures, bytes<uint64_t>(kOfferedFeatures | kFeatureLogAll)),
              static_cast<uint64_t>(EINVAL));
  }
  RecordingState state;
  FakeFrontend fe(handler_, BackendOptions{.device_state = &state});
  EXPECT_EQ(fe.call(Request::kGetFeatures).u64(), kOfferedFeatures | kFeatureLogAll);
  EXPECT_EQ(fe.call(Request::kGetProtocolFeatures).u64(),
            kOfferedProtocolFeatures | kProtocolLogShmfd | kProtocolDeviceState);
  fe.send(Request::kSetProtocolFeatures,
          bytes<uint64_t>(kOfferedProtocolFeatures | kMigrationProtocolFeatures));
  // LOG_ALL on and off: the handler hears that a migration began and ended.
  EXPECT_EQ(fe.acked(Request::kSetFeatures, bytes<uint64_t>(kOfferedFeatures | kFeatureLogAll)),
            0u);
  EXPECT_EQ(fe.acked(Request::kSetFeatures, bytes<uint64_t>(kOfferedFeatures | kFeatureLogAll)),
            0u);
  EXPECT_EQ(state.started, 1);
  EXPECT_EQ(fe.acked(Request::kSetFeatures, bytes<uint64_t>(kOfferedFeatures)), 0u);
  EXPECT_EQ(state.ended, 1);
  // A load: the bytes the front-end writes reach the handler at the check.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  EXPECT_EQ(fe.call(Request::kSetDeviceStateFd, bytes(DeviceStateTransfer{kStateLoad, 0}),
                    {read_end.get()})
                .u64(),
            kStateReplyNoFd);
  read_end.reset();
  ASSERT_EQ(::write(write_end.get(), "abc", 3), 3);
  write_end.reset();
  EXPECT_EQ(fe.call(Request::kCheckDeviceState).u64(), 0u);
  EXPECT_EQ(state.loaded, (std::vector<uint8_t>{'a', 'b', 'c'}));
  // A check without a transfer, an unknown direction or phase: failures.
  EXPECT_EQ(fe.call(Request::kCheckDeviceState).u64(), 1u);
  UniqueFd e = make_eventfd();
  EXPECT_EQ(fe.call(Request::kSetDeviceStateFd, bytes(DeviceStateTransfer{2, 0}), {e.get()}).u64(),
            kStateReplyError | kStateReplyNoFd);
  EXPECT_EQ(fe.call(Request::kSetDeviceStateFd, bytes(DeviceStateTransfer{0, 1}), {e.get()}).u64(),
            kStateReplyError | kStateReplyNoFd);
  // Without its fd the message is malformed (refused, connection alive).
  EXPECT_EQ(fe.acked(Request::kSetDeviceStateFd, bytes(DeviceStateTransfer{0, 0})),
            static_cast<uint64_t>(EINVAL));
  EXPECT_TRUE(fe.alive());
}

TEST_F(Protocol, GetFeaturesOffersExactlyTheFourFeatureBits) {
  FakeFrontend fe(handler_);
  Reply r = fe.call(Request::kGetFeatures);
  EXPECT_EQ(r.header.request, code(Request::kGetFeatures));
  EXPECT_EQ(r.header.flags, kVersion | kFlagReply);
  EXPECT_EQ(r.u64(), (1ull << 32) | (1ull << 28) | (1ull << 29) | (1ull << 30));
}

TEST_F(Protocol, GetProtocolFeaturesOffersMqReplyAckBackendReqMemSlotsButNotConfig) {
  FakeFrontend fe(handler_);
  uint64_t f = fe.call(Request::kGetProtocolFeatures).u64();
  EXPECT_EQ(f, (1ull << 0) | (1ull << 3) | (1ull << 5) | (1ull << 15));
  EXPECT_EQ(f & (1ull << 9), 0u) << "CONFIG crashes QEMU 7.1-8.0";
}

// GET_CONFIG's payload: the window asked for, then room for its bytes.
std::vector<uint8_t> config_window(uint32_t offset, uint32_t size) {
  std::vector<uint8_t> out(sizeof(ConfigHead) + size);
  ConfigHead head{offset, size, 0};
  std::memcpy(out.data(), &head, sizeof head);
  return out;
}

// --tag: CONFIG is offered, and GET_CONFIG serves struct virtio_fs_config
// (the tag NUL-padded to 36 bytes, then the number of request queues);
// nothing else of the config space can be read or written.
TEST_F(Protocol, WithATagConfigIsOfferedAndServesTheTag) {
  BackendOptions options;
  options.num_queues = 3;
  options.tag = "myfs";
  FakeFrontend fe(handler_, options);
  const uint64_t offered = fe.call(Request::kGetProtocolFeatures).u64();
  EXPECT_EQ(offered, kOfferedProtocolFeatures | kProtocolConfig);
  // Before CONFIG is negotiated the config space is not there.
  fe.send(Request::kSetProtocolFeatures, bytes<uint64_t>(kOfferedProtocolFeatures));
  EXPECT_NE(fe.acked(Request::kGetConfig, config_window(0, 40)), 0u);
  fe.send(Request::kSetProtocolFeatures, bytes<uint64_t>(offered));

  Reply whole = fe.call(Request::kGetConfig, config_window(0, 40));
  ASSERT_EQ(whole.payload.size(), sizeof(ConfigHead) + 40);
  const std::string tag(reinterpret_cast<const char*>(whole.payload.data()) + sizeof(ConfigHead),
                        36);
  EXPECT_EQ(tag, std::string("myfs") + std::string(32, '\0'));
  uint32_t request_queues = 0;
  std::memcpy(&request_queues, whole.payload.data() + sizeof(ConfigHead) + 36, 4);
  EXPECT_EQ(request_queues, 2u);
  // A window inside it.
  Reply part = fe.call(Request::kGetConfig, config_window(2, 2));
  ASSERT_EQ(part.payload.size(), sizeof(ConfigHead) + 2);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(part.payload.data()) + sizeof(ConfigHead), 2),
            "fs");
  // Outside it, malformed, or a write: refused, and the connection serves on.
  EXPECT_NE(fe.acked(Request::kGetConfig, config_window(36, 8)), 0u);
  EXPECT_NE(fe.acked(Request::kGetConfig, config_window(0xffffffffu, 2)), 0u);
  std::vector<uint8_t> short_window = config_window(0, 40);
  short_window.resize(sizeof(ConfigHead) + 4);
  EXPECT_NE(fe.acked(Request::kGetConfig, short_window), 0u);
  EXPECT_NE(fe.acked(Request::kSetConfig, config_window(0, 4)), 0u);
  EXPECT_EQ(fe.call(Request::kGetQueueNum).u64(), 3u);
}

TEST_F(Protocol, WithoutATagGetConfigIsRefused) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  EXPECT_NE(fe.acked(Request::kGetConfig, config_window(0, 40)), 0u);
  EXPECT_NE(fe.acked(Request::kSetProtocolFeatures,
                     bytes<uint64_t>(kOfferedProtocolFeatures | kProtocolConfig)),
            0u);
}

TEST_F(Protocol, GetQueueNumAndMaxMemSlots) {
  FakeFrontend fe(handler_, BackendOptions{3});
  EXPECT_EQ(fe.call(Request::kGetQueueNum).u64(), 3u);
  EXPECT_EQ(fe.call(Request::kGetMaxMemSlots).u64(), 509u);
}

TEST_F(Protocol, ReplyAckOnlyAfterNegotiation) {
  FakeFrontend fe(handler_);
  // Not negotiated: NEED_REPLY is not answered (the next reply is GET_QUEUE_NUM's).
  fe.send(Request::kSetOwner, {}, {}, kNeedReply);
  EXPECT_TRUE(fe.alive());
  negotiate_reply_ack(fe);
  EXPECT_EQ(fe.acked(Request::kSetOwner), 0u);
}

TEST_F(Protocol, SetProtocolFeaturesRefusesUnofferedBits) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  EXPECT_NE(fe.acked(Request::kSetProtocolFeatures, bytes<uint64_t>(1ull << 9)), 0u);
  // Refused: REPLY_ACK is still negotiated, so the next status still comes.
  EXPECT_EQ(fe.acked(Request::kSetOwner), 0u);
}

TEST_F(Protocol, SetFeaturesAcceptsOfferedAndRefusesOthers) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  EXPECT_EQ(fe.acked(Request::kSetFeatures, bytes<uint64_t>(kOfferedFeatures)), 0u);
  EXPECT_NE(fe.acked(Request::kSetFeatures, bytes<uint64_t>(1ull << 26)), 0u);  // LOG_ALL
  EXPECT_TRUE(fe.alive());
}

TEST_F(Protocol, OwnerAndResetMessagesAreAcked) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  EXPECT_EQ(fe.acked(Request::kSetOwner), 0u);
  EXPECT_EQ(fe.acked(Request::kResetOwner), 0u);
  EXPECT_EQ(fe.acked(Request::kSetOwner), 0u);
  EXPECT_EQ(fe.acked(Request::kResetDevice), 0u);
  // Protocol features survive a reset: REPLY_ACK still answers.
  EXPECT_EQ(fe.acked(Request::kSetOwner), 0u);
}

TEST_F(Protocol, SetBackendReqFdKeepsTheFdUntilDisconnect) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  UniqueFd e = make_eventfd();
  int before = count_open_fds();
  EXPECT_EQ(fe.acked(Request::kSetBackendReqFd, {}, {e.get()}), 0u);
  EXPECT_EQ(count_open_fds(), before + 1);  // the back-end's copy
  EXPECT_TRUE(fe.hang_up().has_value());
  // The back-end's copy is gone, and so are both ends of the socketpair.
  EXPECT_EQ(count_open_fds(), before - 2);
}

// One request whose payload size, then fd count, is wrong.
struct Case {
  Request request;
  uint32_t good_size;
  uint32_t good_fds;
  bool fixed_size = true;  // SET_MEM_TABLE accepts a range
};

const Case kCases[] = {
    {Request::kGetFeatures, 0, 0},
    {Request::kSetFeatures, 8, 0},
    {Request::kSetOwner, 0, 0},
    {Request::kResetOwner, 0, 0},
    {Request::kSetMemTable, 8 + 32, 1, false},
    {Request::kSetVringNum, 8, 0},
    {Request::kSetVringAddr, 40, 0},
    {Request::kSetVringBase, 8, 0},
    {Request::kGetVringBase, 8, 0},
    {Request::kSetVringKick, 8, 1},
    {Request::kSetVringCall, 8, 1},
    {Request::kSetVringErr, 8, 1},
    {Request::kGetProtocolFeatures, 0, 0},
    {Request::kSetProtocolFeatures, 8, 0},
    {Request::kGetQueueNum, 0, 0},
    {Request::kSetVringEnable, 8, 0},
    {Request::kSetBackendReqFd, 0, 1},
    {Request::kResetDevice, 0, 0},
    {Request::kGetMaxMemSlots, 0, 0},
    {Request::kAddMemReg, 40, 1},
    {Request::kRemMemReg, 40, 0},
};

TEST_F(Protocol, EveryMessageWithAWrongPayloadSizeIsRefusedAndTheNextServed) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  for (const Case& c : kCases) {
    SCOPED_TRACE(request_name(code(c.request)));
    std::vector<int> fds;
    std::vector<UniqueFd> keep;
    for (uint32_t i = 0; i < c.good_fds; ++i) {
      keep.push_back(make_eventfd());
      fds.push_back(keep.back().get());
    }
    int before = count_open_fds();
    // Too long (past the largest accepted size).
    uint32_t too_long = c.fixed_size ? c.good_size + 8 : 8 + 8 * 32 + 8;
    fe.send(code(c.request), std::vector<uint8_t>(too_long, 0), fds, kNeedReply);
    auto r = fe.recv();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header.request, code(c.request));
    EXPECT_NE(r->u64(), 0u);
    EXPECT_TRUE(fe.alive());
    if (c.good_size > 0) {
      // Too short.
      fe.send(code(c.request), std::vector<uint8_t>(c.good_size - 4, 0), fds, kNeedReply);
      r = fe.recv();
      ASSERT_TRUE(r);
      EXPECT_NE(r->u64(), 0u);
      EXPECT_TRUE(fe.alive());
    }
    EXPECT_EQ(count_open_fds(), before) << "the refused message's fds must be closed";
  }
}

TEST_F(Protocol, EveryMessageWithAWrongFdCountIsRefusedAndItsFdsClosed) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  for (const Case& c : kCases) {
    SCOPED_TRACE(request_name(code(c.request)));
    // A payload of the right size that would be accepted with the right
    // fds (index 0, no no-fd bit, one region).
    std::vector<uint8_t> payload(c.good_size, 0);
    if (c.request == Request::kSetMemTable) payload[0] = 1;  // nregions = 1
    UniqueFd a = make_eventfd(), b = make_eventfd();
    int before = count_open_fds();
    std::vector<int> wrong;
    if (c.good_fds == 0) {
      // REM_MEM_REG tolerates one fd (older QEMU): two are wrong.
      wrong = c.request == Request::kRemMemReg ? std::vector<int>{a.get(), b.get()}
                                               : std::vector<int>{a.get()};
    } else {
      wrong = {a.get(), b.get()};
    }
    fe.send(code(c.request), payload, wrong, kNeedReply);
    auto r = fe.recv();
    ASSERT_TRUE(r);
    EXPECT_NE(r->u64(), 0u);
    if (c.good_fds > 0) {
      // And with none.
      fe.send(code(c.request), payload, {}, kNeedReply);
      r = fe.recv();
      ASSERT_TRUE(r);
      EXPECT_NE(r->u64(), 0u);
    }
    EXPECT_TRUE(fe.alive());
    EXPECT_EQ(count_open_fds(), before);
  }
}

TEST_F(Protocol, NoFdBitMustMatchTheFdsSent) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  UniqueFd e = make_eventfd();
  int before = count_open_fds();
  // No-fd bit but an fd.
  EXPECT_NE(fe.acked(Request::kSetVringCall, bytes<uint64_t>(kVringNoFdMask), {e.get()}), 0u);
  // Bits other than index and no-fd.
  EXPECT_NE(fe.acked(Request::kSetVringCall, bytes<uint64_t>(1ull << 20), {e.get()}), 0u);
  EXPECT_EQ(count_open_fds(), before);
  // Well-formed no-fd messages are accepted.
  EXPECT_EQ(fe.acked(Request::kSetVringCall, bytes<uint64_t>(kVringNoFdMask | 1)), 0u);
  EXPECT_EQ(fe.acked(Request::kSetVringErr, bytes<uint64_t>(kVringNoFdMask)), 0u);
  EXPECT_EQ(fe.acked(Request::kSetVringKick, bytes<uint64_t>(kVringNoFdMask)), 0u);
  // Index 2 does not exist (2 queues).
  EXPECT_NE(fe.acked(Request::kSetVringCall, bytes<uint64_t>(2), {e.get()}), 0u);
  EXPECT_EQ(count_open_fds(), before);
}

TEST_F(Protocol, UnknownAndUnsupportedRequestsAreRefusedWithoutLeaks) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  UniqueFd e = make_eventfd();
  int before = count_open_fds();
  for (uint32_t req : {0u, 7u /*SET_LOG_FD*/, 99u, 0xffffffffu}) {
    SCOPED_TRACE(req);
    fe.send(req, std::vector<uint8_t>(16, 0), {e.get()}, kNeedReply);
    auto r = fe.recv();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header.request, req);
    EXPECT_EQ(r->u64(), static_cast<uint64_t>(ENOSYS));
    EXPECT_TRUE(fe.alive());
  }
  // SET_LOG_BASE is known, but only with LOG_SHMFD agreed (and offered
  // only with migration): refused as invalid, its fd closed.
  fe.send(6u /*SET_LOG_BASE*/, std::vector<uint8_t>(16, 0), {e.get()}, kNeedReply);
  auto log_base = fe.recv();
  ASSERT_TRUE(log_base);
  EXPECT_EQ(log_base->u64(), static_cast<uint64_t>(EINVAL));
  // Without NEED_REPLY: refused silently.
  fe.send(99u, {}, {e.get()});
  EXPECT_TRUE(fe.alive());
  EXPECT_EQ(count_open_fds(), before);
}

TEST_F(Protocol, MoreFdsThanAnyMessageCarriesAreRefusedAndClosed) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  std::vector<UniqueFd> keep;
  std::vector<int> fds;
  for (int i = 0; i < 12; ++i) {
    keep.push_back(make_eventfd());
    fds.push_back(keep.back().get());
  }
  int before = count_open_fds();
  MemoryTableHead head{8, 0};
  std::vector<uint8_t> payload = bytes(head);
  payload.resize(8 + 8 * 32, 0);
  fe.send(code(Request::kSetMemTable), payload, fds, kNeedReply);
  auto r = fe.recv();
  ASSERT_TRUE(r);
  EXPECT_NE(r->u64(), 0u);
  EXPECT_TRUE(fe.alive());
  EXPECT_EQ(count_open_fds(), before);
}

TEST_F(Protocol, GarbageHeaderClosesTheConnectionWithoutLeaks) {
  UniqueFd e = make_eventfd();
  {
    FakeFrontend fe(handler_);
    fe.send(code(Request::kGetFeatures), {}, {e.get()}, /*flags=*/0x2);  // version 2
    auto result = fe.wait_served();
    EXPECT_FALSE(result.has_value());
    EXPECT_EQ(result.error().value, EPROTO);
  }
  EXPECT_EQ(count_open_fds(), fds_before_ + 1);  // only our eventfd
}

TEST_F(Protocol, OversizePayloadClosesTheConnection) {
  FakeFrontend fe(handler_);
  fe.send(code(Request::kSetFeatures), {}, {}, kVersion, /*size=*/1u << 30);
  auto result = fe.wait_served();
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().value, EMSGSIZE);
}

TEST_F(Protocol, EofInsideAMessageIsAnErrorAndCleanEofIsNot) {
  {
    FakeFrontend fe(handler_);
    Header h{code(Request::kSetFeatures), kVersion, 8};
    fe.send_raw(&h, sizeof h, {1, 2, 3}, {});  // 3 of 8 payload bytes
    auto result = fe.hang_up();
    EXPECT_FALSE(result.has_value());
  }
  {
    FakeFrontend fe(handler_);
    uint32_t half[2] = {1, kVersion};
    fe.send_raw(half, sizeof half, {}, {});  // 8 of 12 header bytes
    EXPECT_FALSE(fe.hang_up().has_value());
  }
  {
    FakeFrontend fe(handler_);
    EXPECT_TRUE(fe.alive());
    EXPECT_TRUE(fe.hang_up().has_value());
  }
  EXPECT_EQ(count_open_fds(), fds_before_);
}

TEST_F(Protocol, VringSettingsAreValidated) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  auto num = [&](uint32_t index, uint32_t n) {
    return fe.acked(Request::kSetVringNum, bytes(VringState{index, n}));
  };
  EXPECT_EQ(num(0, 1024), 0u);
  EXPECT_EQ(num(1, 32768), 0u);
  EXPECT_NE(num(0, 0), 0u);
  EXPECT_NE(num(0, 1000), 0u);   // not a power of two
  EXPECT_NE(num(0, 65536), 0u);  // above 32768
  EXPECT_NE(num(2, 16), 0u);     // no such queue
  EXPECT_EQ(fe.acked(Request::kSetVringBase, bytes(VringState{0, 0xffff})), 0u);
  EXPECT_NE(fe.acked(Request::kSetVringBase, bytes(VringState{0, 0x10000})), 0u);
  EXPECT_NE(fe.acked(Request::kSetVringBase, bytes(VringState{7, 0})), 0u);
  EXPECT_EQ(fe.acked(Request::kSetVringAddr, bytes(VringAddr{1, 0, 0x1000, 0x3000, 0x2000, 0})),
            0u);
  EXPECT_NE(fe.acked(Request::kSetVringAddr, bytes(VringAddr{2, 0, 0x1000, 0x3000, 0x2000, 0})),
            0u);
  EXPECT_EQ(fe.acked(Request::kSetVringEnable, bytes(VringState{0, 1})), 0u);
  EXPECT_EQ(fe.acked(Request::kSetVringEnable, bytes(VringState{0, 0})), 0u);
  EXPECT_NE(fe.acked(Request::kSetVringEnable, bytes(VringState{0, 2})), 0u);
  EXPECT_NE(fe.acked(Request::kSetVringEnable, bytes(VringState{2, 1})), 0u);
  // GET_VRING_BASE on a ring that never ran answers its base.
  Reply r = fe.call(Request::kGetVringBase, bytes(VringState{0, 0}));
  EXPECT_EQ(r.state().index, 0u);
  EXPECT_EQ(r.state().num, 0xffffu);
  // ...and on a queue that does not exist, nothing (refused) and we go on.
  fe.send(Request::kGetVringBase, bytes(VringState{5, 0}));
  EXPECT_TRUE(fe.alive());
}

TEST_F(Protocol, MemoryTableMessages) {
  FakeFrontend fe(handler_);
  negotiate_reply_ack(fe);
  GuestRam ram(1 << 20);
  int before = count_open_fds();
  auto table = [&](std::vector<MemoryRegion> regions) {
    std::vector<uint8_t> p = bytes(MemoryTableHead{static_cast<uint32_t>(regions.size()), 0});
    for (auto& r : regions) {
      auto b = bytes(r);
      p.insert(p.end(), b.begin(), b.end());
    }
    return p;
  };
  // Two regions of the same memfd, at different gpa/uva.
  MemoryRegion lo{0, 1 << 19, 0x10000000, 0};
  MemoryRegion hi{1 << 20, 1 << 19, 0x20000000, 1 << 19};
  EXPECT_EQ(fe.acked(Request::kSetMemTable, table({lo, hi}), {ram.fd.get(), ram.fd.get()}), 0u);
  // Overlapping in guest-physical space: refused, table unchanged.
  MemoryRegion overlap{1 << 18, 1 << 19, 0x30000000, 0};
  EXPECT_NE(fe.acked(Request::kSetMemTable, table({lo, overlap}), {ram.fd.get(), ram.fd.get()}),
            0u);
  EXPECT_NE(fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, overlap}), {ram.fd.get()}),
            0u);
  // Past the end of the memfd (1 MiB): would SIGBUS on first access.
  MemoryRegion past_end{1 << 23, 1 << 20, 0x50000000, 1 << 19};
  EXPECT_NE(fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, past_end}), {ram.fd.get()}),
            0u);
  EXPECT_NE(fe.acked(Request::kSetMemTable, table({lo, past_end}), {ram.fd.get(), ram.fd.get()}),
            0u);
  // Zero size.
  MemoryRegion empty{1 << 22, 0, 0x40000000, 0};
  EXPECT_NE(fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, empty}), {ram.fd.get()}), 0u);
  // Count and fds disagree.
  EXPECT_NE(fe.acked(Request::kSetMemTable, table({lo, hi}), {ram.fd.get()}), 0u);
  // A region count larger than the payload holds.
  std::vector<uint8_t> lying = table({lo});
  lying[0] = 2;
  EXPECT_NE(fe.acked(Request::kSetMemTable, lying, {ram.fd.get(), ram.fd.get()}), 0u);

  // REM_MEM_REG: unknown region refused; known removed (once).
  EXPECT_NE(fe.acked(Request::kRemMemReg, bytes(SingleMemoryRegion{0, overlap})), 0u);
  EXPECT_EQ(fe.acked(Request::kRemMemReg, bytes(SingleMemoryRegion{0, hi})), 0u);
  EXPECT_NE(fe.acked(Request::kRemMemReg, bytes(SingleMemoryRegion{0, hi})), 0u);
  // Added back, then removed the old-QEMU way (with an fd, ignored).
  EXPECT_EQ(fe.acked(Request::kAddMemReg, bytes(SingleMemoryRegion{0, hi}), {ram.fd.get()}), 0u);
  EXPECT_EQ(fe.acked(Request::kRemMemReg, bytes(SingleMemoryRegion{0, hi}), {ram.fd.get()}), 0u);
  // An empty table is valid.
  EXPECT_EQ(fe.acked(Request::kSetMemTable, table({}), {}), 0u);
  EXPECT_EQ(count_open_fds(), before) << "region fds are closed once mapped";
}

TEST(Listener, BindsReplacesAStaleSocketAndAccepts) {
  char dir_template[] = "/tmp/vfsd-listen-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string path = std::string(dir_template) + "/sock";
  {
    auto first = listen_unix(path);
    ASSERT_TRUE(first.has_value());
  }  // closed, the socket file stays: stale
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  auto listener = listen_unix(path);
  ASSERT_TRUE(listener.has_value()) << errno_name(listener.error().value);

  UniqueFd client(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  auto conn = accept_one(listener->get());
  ASSERT_TRUE(conn.has_value());
  EXPECT_EQ(write(client.get(), "x", 1), 1);
  char c = 0;
  EXPECT_EQ(read(conn->get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  unlink(path.c_str());
  rmdir(dir_template);
}

// Connects to `path` from a child process running as uid/gid 65534 with
// `groups`; returns 0 on success or the connect errno.
int connect_as_other_user(const std::string& path, std::vector<gid_t> groups) {
  pid_t child = fork();
  if (child == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      _exit(200);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    _exit(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

// Whoever connects first is the frontend and the guest: nobody but the
// daemon's user (and with --socket-group, that group) may.
TEST(Listener, OnlyTheOwnerOrTheSocketGroupCanConnect) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  char dir_template[] = "/tmp/vfsd-listen-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  ASSERT_EQ(chmod(dir_template, 0755), 0);
  const std::string path = std::string(dir_template) + "/sock";
  // The daemon runs with umask 0 (the guest's umask is applied per request).
  const mode_t old_umask = umask(0);
  {
    auto listener = listen_unix(path);
    ASSERT_TRUE(listener.has_value()) << errno_name(listener.error().value);
    struct stat st {};
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(connect_as_other_user(path, {}), EACCES);
  }
  constexpr gid_t kGroup = 4242;
  {
    auto listener = listen_unix(path, kGroup);
    ASSERT_TRUE(listener.has_value()) << errno_name(listener.error().value);
    struct stat st {};
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0770u);
    EXPECT_EQ(st.st_gid, kGroup);
    EXPECT_EQ(connect_as_other_user(path, {}), EACCES);
    EXPECT_EQ(connect_as_other_user(path, {kGroup}), 0);
  }
  // The umask of the process is what it was.
  EXPECT_EQ(umask(old_umask), 0u);
  unlink(path.c_str());
  rmdir(dir_template);
}

TEST(Listener, LeavesANonSocketFileAloneAndRejectsLongPaths) {
  char dir_template[] = "/tmp/vfsd-listen-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string path = std::string(dir_template) + "/file";
  UniqueFd f(open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_TRUE(f.valid());
  auto r = listen_unix(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().value, EADDRINUSE);
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  auto long_path = listen_unix(std::string(dir_template) + "/" + std::string(200, 'a'));
  ASSERT_FALSE(long_path.has_value());
  EXPECT_EQ(long_path.error().value, ENAMETOOLONG);
  EXPECT_FALSE(listen_unix("").has_value());
  unlink(path.c_str());
  rmdir(dir_template);
}

TEST(Listener, AcceptOnANonListeningFdFails) {
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_FALSE(accept_one(s.get()).has_value());
}

}  // namespace
}  // namespace vfsd::vhost_user::test
