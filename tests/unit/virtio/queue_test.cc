#include "virtio/queue.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "support/virtq_driver.h"

namespace vfsd::virtio {
namespace {

using test::kVirtqAvailFNoInterrupt;
using test::kVirtqDescFIndirect;
using test::kVirtqDescFNext;
using test::kVirtqDescFWrite;
using test::kVirtqUsedFNoNotify;
using test::VirtqDesc;
using test::VirtqDriver;

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1234500000;
constexpr size_t kMemSize = 2 << 20;

std::string bytes(const iovec& v) {
  return std::string(static_cast<char*>(v.iov_base), v.iov_len);
}

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

class QueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_.reset(static_cast<char*>(std::aligned_alloc(4096, kMemSize)));
    std::memset(mem_.get(), 0, kMemSize);
    auto gm = GuestMemory::create({MappedRegion::wrap(mem_.get(), kGpaBase, kMemSize, kUvaBase)});
    ASSERT_TRUE(gm.has_value());
    memory_ = std::make_shared<const GuestMemory>(std::move(*gm));
  }

  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }

  QueueConfig config_for(const VirtqDriver& d) const {
    QueueConfig c;
    c.size = d.queue_size();
    c.desc_user_addr = uva(d.desc_gpa());
    c.avail_user_addr = uva(d.avail_gpa());
    c.used_user_addr = uva(d.used_gpa());
    return c;
  }

  // A driver with `size` entries and a queue over it.
  void start(uint32_t size, bool event_idx = false, bool indirect = true, uint16_t next_avail = 0) {
    driver_ = std::make_unique<VirtqDriver>(mem_.get(), kGpaBase, kMemSize, size);
    QueueConfig c = config_for(*driver_);
    c.event_idx = event_idx;
    c.indirect = indirect;
    c.next_avail = next_avail;
    auto q = SplitQueue::create(memory_, c);
    ASSERT_TRUE(q.has_value());
    queue_ = std::make_unique<SplitQueue>(std::move(*q));
  }

  PoppedChain pop_one() {
    auto p = queue_->pop(*memory_);
    EXPECT_TRUE(p.has_value());
    return p ? std::move(*p) : PoppedChain{};
  }

  // Publishes `head`, pops it and expects it refused with `error`.
  void expect_refused(uint16_t head, ChainError error) {
    driver_->publish(head);
    PoppedChain p = pop_one();
    EXPECT_EQ(p.head, head);
    ASSERT_FALSE(p.chain.has_value());
    EXPECT_EQ(p.chain.error(), error) << to_string(p.chain.error());
    queue_->add_used(p.head, 0);
  }

  // The queue keeps serving: a well-formed chain published next pops intact.
  void expect_next_good_chain_pops() {
    uint16_t head = driver_->add_chain({"request"}, {64});
    driver_->publish(head);
    PoppedChain p = pop_one();
    EXPECT_EQ(p.head, head);
    ASSERT_TRUE(p.chain.has_value());
    ASSERT_EQ(p.chain->readable.size(), 1u);
    EXPECT_EQ(bytes(p.chain->readable[0]), "request");
    ASSERT_EQ(p.chain->writable.size(), 1u);
    EXPECT_EQ(p.chain->writable[0].iov_len, 64u);
    EXPECT_FALSE(queue_->pop(*memory_).has_value());
  }

  std::unique_ptr<char, FreeDeleter> mem_;
  std::shared_ptr<const GuestMemory> memory_;
  std::unique_ptr<VirtqDriver> driver_;
  std::unique_ptr<SplitQueue> queue_;
};

TEST_F(QueueTest, CreateRejectsBadSizes) {
  VirtqDriver d(mem_.get(), kGpaBase, kMemSize, 256);
  for (uint32_t size : {0u, 3u, 100u, 32769u, 65536u}) {
    QueueConfig c = config_for(d);
    c.size = size;
    EXPECT_FALSE(SplitQueue::create(memory_, c).has_value()) << size;
  }
  QueueConfig c = config_for(d);
  EXPECT_FALSE(SplitQueue::create(nullptr, c).has_value());
  for (uint32_t size : {1u, 2u, 256u}) {
    c.size = size;
    EXPECT_TRUE(SplitQueue::create(memory_, c).has_value()) << size;
  }
}

TEST_F(QueueTest, CreateAcceptsTheLargestQueue) {
  VirtqDriver d(mem_.get(), kGpaBase, kMemSize, kMaxQueueSize);
  auto q = SplitQueue::create(memory_, config_for(d));
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->size(), kMaxQueueSize);
}

TEST_F(QueueTest, CreateRejectsRingsOutsideMemory) {
  VirtqDriver d(mem_.get(), kGpaBase, kMemSize, 256);
  QueueConfig good = config_for(d);
  QueueConfig c = good;
  c.desc_user_addr = kUvaBase + kMemSize - 16 * 128;  // table runs past the end
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  c = good;
  c.avail_user_addr = kGpaBase + 0x4000;  // a gpa is not a user address
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  c = good;
  c.used_user_addr = kUvaBase + kMemSize - 4;
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  c = good;
  c.used_user_addr = 0xfffffffffffffff0;  // wraps
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  // The used ring with EVENT_IDX needs 2 more bytes (avail_event) than without.
  c = good;
  c.used_user_addr = kUvaBase + kMemSize - (4 + 8 * 256);
  EXPECT_TRUE(SplitQueue::create(memory_, c).has_value());
  c.event_idx = true;
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
}

TEST_F(QueueTest, CreateRejectsMisalignedRings) {
  VirtqDriver d(mem_.get(), kGpaBase, kMemSize, 256);
  QueueConfig c = config_for(d);
  c.desc_user_addr += 8;
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  c = config_for(d);
  c.avail_user_addr += 1;
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
  c = config_for(d);
  c.used_user_addr += 2;
  EXPECT_FALSE(SplitQueue::create(memory_, c).has_value());
}

TEST_F(QueueTest, EmptyQueuePopsNothing) {
  start(8);
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
  EXPECT_EQ(queue_->next_avail(), 0);
}

TEST_F(QueueTest, DirectChainYieldsReadableThenWritableSegments) {
  start(16);
  uint16_t head = driver_->add_chain({"hello", "", "world!"}, {100, 50});
  driver_->publish(head);
  PoppedChain p = pop_one();
  EXPECT_EQ(p.head, head);
  ASSERT_TRUE(p.chain.has_value());
  EXPECT_EQ(p.chain->head, head);
  // The empty buffer is legal and contributes no segment.
  ASSERT_EQ(p.chain->readable.size(), 2u);
  EXPECT_EQ(bytes(p.chain->readable[0]), "hello");
  EXPECT_EQ(bytes(p.chain->readable[1]), "world!");
  ASSERT_EQ(p.chain->writable.size(), 2u);
  EXPECT_EQ(p.chain->writable[0].iov_len, 100u);
  EXPECT_EQ(p.chain->writable[1].iov_len, 50u);
  // Writable segments are the guest's buffers themselves.
  uint16_t w0 = driver_->desc(head).next;
  w0 = driver_->desc(w0).next;
  w0 = driver_->desc(w0).next;
  EXPECT_EQ(p.chain->writable[0].iov_base, driver_->host(driver_->desc(w0).addr));
  EXPECT_EQ(queue_->next_avail(), 1);
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
}

TEST_F(QueueTest, IndirectChain) {
  start(16);
  uint16_t head = driver_->add_indirect_chain({"in1", "in2"}, {32, 16, 8});
  driver_->publish(head);
  PoppedChain p = pop_one();
  EXPECT_EQ(p.head, head);
  ASSERT_TRUE(p.chain.has_value());
  ASSERT_EQ(p.chain->readable.size(), 2u);
  EXPECT_EQ(bytes(p.chain->readable[0]), "in1");
  EXPECT_EQ(bytes(p.chain->readable[1]), "in2");
  ASSERT_EQ(p.chain->writable.size(), 3u);
  EXPECT_EQ(p.chain->writable[2].iov_len, 8u);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, BufferOutsideGuestMemory) {
  start(16);
  uint16_t head = driver_->add_chain({"x"}, {64});
  driver_->desc(driver_->desc(head).next).addr = kGpaBase + kMemSize - 32;  // 32 bytes past end
  expect_refused(head, ChainError::kAddressOutOfRange);
  expect_next_good_chain_pops();
  head = driver_->add_chain({"x"}, {64});
  driver_->desc(head).addr = 0xfffffffffffffff0;  // wraps past 2^64
  driver_->desc(head).len = 0x20;
  expect_refused(head, ChainError::kAddressOutOfRange);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, IndirectTableOutsideGuestMemory) {
  start(16);
  uint16_t head = driver_->add_indirect_chain({"x"}, {64});
  driver_->desc(head).addr = kGpaBase + kMemSize - 16;
  expect_refused(head, ChainError::kAddressOutOfRange);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, LoopIsDetected) {
  start(16);
  uint16_t head = driver_->add_chain({"a", "b"}, {});
  uint16_t second = driver_->desc(head).next;
  driver_->desc(second).flags |= kVirtqDescFNext;
  driver_->desc(second).next = head;  // back to the start
  expect_refused(head, ChainError::kLoop);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, ChainLongerThanQueueIsRefused) {
  start(4);
  // Every descriptor of the table in one cycle: the walk would never end.
  for (uint16_t i = 0; i < 4; ++i) {
    driver_->desc(i) =
        VirtqDesc{driver_->alloc(8), 8, kVirtqDescFNext, static_cast<uint16_t>((i + 1) % 4)};
  }
  expect_refused(0, ChainError::kLoop);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, LoopInsideIndirectTableIsDetected) {
  start(16);
  uint16_t head = driver_->add_indirect_chain({"a", "b", "c"}, {});
  auto* table = reinterpret_cast<VirtqDesc*>(driver_->host(driver_->desc(head).addr));
  table[2].flags |= kVirtqDescFNext;
  table[2].next = 1;
  expect_refused(head, ChainError::kLoop);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, IndirectTableLargerThanMaxQueueIsRefused) {
  start(16);
  uint16_t head = driver_->add_indirect_chain({"a"}, {});
  uint64_t table = driver_->alloc(16ull * (kMaxQueueSize + 1));
  driver_->desc(head).addr = table;
  driver_->desc(head).len = 16 * (kMaxQueueSize + 1);
  expect_refused(head, ChainError::kBadIndirectTable);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, NestedIndirectIsRefused) {
  start(16);
  uint16_t inner = driver_->add_indirect_chain({"a"}, {});
  uint16_t head = driver_->add_indirect_chain({"b"}, {});
  auto* table = reinterpret_cast<VirtqDesc*>(driver_->host(driver_->desc(head).addr));
  table[0] = driver_->desc(inner);  // an indirect descriptor inside the table
  expect_refused(head, ChainError::kNestedIndirect);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, IndirectWithoutNegotiationIsRefused) {
  start(16, /*event_idx=*/false, /*indirect=*/false);
  uint16_t head = driver_->add_indirect_chain({"a"}, {8});
  expect_refused(head, ChainError::kIndirectNotNegotiated);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, BadIndirectTableLengthOrFlags) {
  start(16);
  for (uint32_t len : {0u, 8u, 17u, 40u}) {
    uint16_t head = driver_->add_indirect_chain({"a", "b", "c"}, {});
    driver_->desc(head).len = len;
    expect_refused(head, ChainError::kBadIndirectTable);
    expect_next_good_chain_pops();
  }
  // INDIRECT together with NEXT is forbidden by the spec.
  uint16_t head = driver_->add_indirect_chain({"a"}, {});
  driver_->desc(head).flags |= kVirtqDescFNext;
  driver_->desc(head).next = 0;
  expect_refused(head, ChainError::kBadIndirectTable);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, ReadableAfterWritableIsRefused) {
  start(16);
  uint16_t head = driver_->add_chain({"a", "b"}, {8});
  driver_->desc(head).flags |= kVirtqDescFWrite;  // writable, then a readable "b"
  expect_refused(head, ChainError::kReadableAfterWritable);
  expect_next_good_chain_pops();
  // Same inside an indirect table.
  head = driver_->add_indirect_chain({"a", "b"}, {8});
  auto* table = reinterpret_cast<VirtqDesc*>(driver_->host(driver_->desc(head).addr));
  table[0].flags |= kVirtqDescFWrite;
  expect_refused(head, ChainError::kReadableAfterWritable);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, NextIndexOutOfRangeIsRefused) {
  start(16);
  uint16_t head = driver_->add_chain({"a", "b"}, {});
  driver_->desc(head).next = 16;
  expect_refused(head, ChainError::kIndexOutOfRange);
  expect_next_good_chain_pops();
  // Inside an indirect table the bound is the table's own length.
  head = driver_->add_indirect_chain({"a", "b"}, {});
  auto* table = reinterpret_cast<VirtqDesc*>(driver_->host(driver_->desc(head).addr));
  table[0].next = 2;
  expect_refused(head, ChainError::kIndexOutOfRange);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, TotalLengthOver32BitsIsRefused) {
  start(16);
  // 4096 writable descriptors of 1 MiB each, all inside guest memory (they
  // share one buffer): the sum reaches 2^32 at the last one.
  constexpr uint32_t kCount = 4096;
  constexpr uint32_t kMiB = 1 << 20;
  uint64_t buffer = driver_->alloc(kMiB);
  uint64_t table_gpa = driver_->alloc(16 * kCount);
  auto* table = reinterpret_cast<VirtqDesc*>(driver_->host(table_gpa));
  for (uint32_t i = 0; i < kCount; ++i) {
    table[i] = VirtqDesc{buffer, kMiB, static_cast<uint16_t>(kVirtqDescFWrite | kVirtqDescFNext),
                         static_cast<uint16_t>(i + 1)};
  }
  table[kCount - 1].flags = kVirtqDescFWrite;
  uint16_t head = driver_->add_chain({"x"}, {});
  driver_->desc(head) = VirtqDesc{table_gpa, 16 * kCount, kVirtqDescFIndirect, 0};
  expect_refused(head, ChainError::kTooLong);
  // One descriptor fewer (2^32 - 1 MiB) is fine.
  table[kCount - 2].flags = kVirtqDescFWrite;
  driver_->publish(head);
  PoppedChain p = pop_one();
  ASSERT_TRUE(p.chain.has_value());
  EXPECT_EQ(p.chain->writable.size(), kCount - 1);
  driver_->reset_alloc();
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, HeadIndexOutOfRange) {
  start(16);
  driver_->publish(16);
  PoppedChain p = pop_one();
  EXPECT_EQ(p.head, 16);
  ASSERT_FALSE(p.chain.has_value());
  EXPECT_EQ(p.chain.error(), ChainError::kHeadOutOfRange);
  EXPECT_EQ(queue_->next_avail(), 1);
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, AvailIdxRunningMoreThanSizeAheadIsIgnored) {
  start(8);
  driver_->set_avail_idx(9);
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
  EXPECT_EQ(queue_->next_avail(), 0);
  // Not reported as work either, or a worker would spin on it.
  EXPECT_FALSE(queue_->enable_notification());
  // Exactly `size` ahead is legal (a full ring).
  for (int i = 0; i < 8; ++i) driver_->desc(i) = VirtqDesc{driver_->alloc(4), 4, 0, 0};
  driver_->set_avail_idx(0);
  for (uint16_t i = 0; i < 8; ++i) driver_->publish(i);
  for (uint16_t i = 0; i < 8; ++i) {
    PoppedChain p = pop_one();
    EXPECT_EQ(p.head, i);
    EXPECT_TRUE(p.chain.has_value());
  }
  expect_next_good_chain_pops();
}

TEST_F(QueueTest, ChainsPublishedWhilePoppingAreSeenInOrder) {
  // The queue rereads avail idx only after popping what it saw last time:
  // chains the driver adds in between must still come out, in order, and
  // none twice.
  start(8);
  std::vector<uint16_t> heads;
  auto publish = [&](int n) {
    for (int i = 0; i < n; ++i) {
      heads.push_back(driver_->add_chain({"r" + std::to_string(heads.size())}, {}));
      driver_->publish(heads.back());
    }
  };
  publish(3);
  size_t popped = 0;
  auto expect_pop = [&] {
    PoppedChain p = pop_one();
    ASSERT_LT(popped, heads.size());
    EXPECT_EQ(p.head, heads[popped]);
    ASSERT_TRUE(p.chain.has_value());
    EXPECT_EQ(bytes(p.chain->readable[0]), "r" + std::to_string(popped));
    ++popped;
  };
  expect_pop();
  publish(2);  // while two of the first three are still unpopped
  for (int i = 0; i < 4; ++i) expect_pop();
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
  publish(1);
  expect_pop();
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
  EXPECT_EQ(queue_->next_avail(), 6);
}

TEST_F(QueueTest, AvailIdxWrapsAround65535) {
  start(4, false, true, /*next_avail=*/65534);
  driver_->set_avail_idx(65534);
  std::vector<uint16_t> heads;
  for (int i = 0; i < 3; ++i) {
    heads.push_back(driver_->add_chain({"r" + std::to_string(i)}, {}));
    driver_->publish(heads.back());
  }
  EXPECT_EQ(driver_->avail_idx(), 1);
  for (int i = 0; i < 3; ++i) {
    PoppedChain p = pop_one();
    EXPECT_EQ(p.head, heads[i]);
    ASSERT_TRUE(p.chain.has_value());
    EXPECT_EQ(bytes(p.chain->readable[0]), "r" + std::to_string(i));
  }
  EXPECT_EQ(queue_->next_avail(), 1);
  EXPECT_FALSE(queue_->pop(*memory_).has_value());
}

TEST_F(QueueTest, AddUsedFillsElementAndBumpsIdx) {
  start(4);
  for (uint16_t i = 0; i < 6; ++i) {  // wraps around the 4-entry used ring
    queue_->add_used(static_cast<uint16_t>(3 - i % 4), 100 + i);
    queue_->publish_used();
    EXPECT_EQ(driver_->used_idx(), i + 1);
    auto [id, len] = driver_->used_elem(i);
    EXPECT_EQ(id, 3u - i % 4);
    EXPECT_EQ(len, 100u + i);
  }
}

TEST_F(QueueTest, UsedIdxMovesPerBatchAndWheneverTheDriverIsToLearnOfIt) {
  start(32, /*event_idx=*/true);
  constexpr uint16_t kBatch = SplitQueue::kUsedPublishBatch;
  const uint16_t published = kBatch + 3;
  for (uint16_t i = 0; i < published; ++i) driver_->publish(driver_->add_chain({"r"}, {}));
  // While more requests wait, answers go out kBatch at a time...
  for (uint16_t i = 1; i < published; ++i) {
    queue_->add_used(pop_one().head, 1);
    EXPECT_EQ(driver_->used_idx(), i < kBatch ? 0 : kBatch) << "after answer " << i;
  }
  // ...and the answer to the last one known goes out at once.
  queue_->add_used(pop_one().head, 1);
  EXPECT_EQ(driver_->used_idx(), published);

  // Deciding on an interrupt hands over what is held back: the driver must
  // find the answers it is told about.
  driver_->publish(driver_->add_chain({"r"}, {}));
  driver_->publish(driver_->add_chain({"r"}, {}));
  queue_->add_used(pop_one().head, 1);
  EXPECT_EQ(driver_->used_idx(), published);
  queue_->should_notify();
  EXPECT_EQ(driver_->used_idx(), published + 1);
  queue_->add_used(pop_one().head, 1);  // the last known one
  EXPECT_EQ(driver_->used_idx(), published + 2);
  // So does going back to waiting for kicks.
  driver_->publish(driver_->add_chain({"r"}, {}));
  driver_->publish(driver_->add_chain({"r"}, {}));
  queue_->add_used(pop_one().head, 1);
  EXPECT_EQ(driver_->used_idx(), published + 2);
  queue_->enable_notification();
  EXPECT_EQ(driver_->used_idx(), published + 3);
  queue_->add_used(pop_one().head, 1);
  EXPECT_EQ(driver_->used_idx(), published + 4);
}

TEST_F(QueueTest, UsedIdxResumesFromRing) {
  driver_ = std::make_unique<VirtqDriver>(mem_.get(), kGpaBase, kMemSize, 4);
  // A previous backend left used.idx at 7.
  *reinterpret_cast<uint16_t*>(driver_->host(driver_->used_gpa() + 2)) = 7;
  auto q = SplitQueue::create(memory_, config_for(*driver_));
  ASSERT_TRUE(q.has_value());
  q->add_used(2, 5);
  q->publish_used();
  EXPECT_EQ(driver_->used_idx(), 8);
  EXPECT_EQ(driver_->used_elem(7).first, 2u);
}

TEST_F(QueueTest, EventIdxSuppressesNotificationUntilUsedEventIsCrossed) {
  start(16, /*event_idx=*/true);
  queue_->add_used(0, 1);  // used idx 1
  // First decision after start: the driver's view is unknown, so notify.
  EXPECT_TRUE(queue_->should_notify());
  // Nothing added since: nothing to notify.
  EXPECT_FALSE(queue_->should_notify());

  // The driver wants an interrupt only once used idx passes 2 (reaches 3).
  driver_->set_used_event(2);
  queue_->add_used(1, 1);                 // used idx 2
  EXPECT_FALSE(queue_->should_notify());  // suppressed
  queue_->add_used(2, 1);                 // used idx 3: crosses used_event
  EXPECT_TRUE(queue_->should_notify());

  // used_event left behind (driver has not re-armed): no more interrupts.
  queue_->add_used(3, 1);
  queue_->add_used(4, 1);  // used idx 5
  EXPECT_FALSE(queue_->should_notify());

  // Several elements in one batch that jump over used_event: notify once.
  driver_->set_used_event(6);
  queue_->add_used(5, 1);
  queue_->add_used(6, 1);
  queue_->add_used(7, 1);  // 5 -> 8 crosses 6
  EXPECT_TRUE(queue_->should_notify());
  // The NO_INTERRUPT flag is ignored with EVENT_IDX.
  driver_->set_avail_flags(kVirtqAvailFNoInterrupt);
  driver_->set_used_event(8);
  queue_->add_used(8, 1);  // 8 -> 9
  EXPECT_TRUE(queue_->should_notify());
}

TEST_F(QueueTest, EventIdxAcrossIndexWrap) {
  driver_ = std::make_unique<VirtqDriver>(mem_.get(), kGpaBase, kMemSize, 4);
  *reinterpret_cast<uint16_t*>(driver_->host(driver_->used_gpa() + 2)) = 65534;
  QueueConfig c = config_for(*driver_);
  c.event_idx = true;
  auto q = SplitQueue::create(memory_, c);
  ASSERT_TRUE(q.has_value());
  q->add_used(0, 0);  // 65535
  EXPECT_TRUE(q->should_notify());
  driver_->set_used_event(0);  // notify when idx passes 0, i.e. reaches 1
  q->add_used(1, 0);           // 0
  EXPECT_FALSE(q->should_notify());
  q->add_used(2, 0);  // 1
  EXPECT_TRUE(q->should_notify());
}

TEST_F(QueueTest, NoInterruptFlagWithoutEventIdx) {
  start(16);
  driver_->set_used_event(1000);  // ignored without EVENT_IDX
  driver_->set_avail_flags(kVirtqAvailFNoInterrupt);
  queue_->add_used(0, 1);
  EXPECT_FALSE(queue_->should_notify());
  driver_->set_avail_flags(0);
  queue_->add_used(1, 1);
  EXPECT_TRUE(queue_->should_notify());
  EXPECT_FALSE(queue_->should_notify());  // nothing new
}

TEST_F(QueueTest, EnableNotificationWritesAvailEventAndReportsLateArrivals) {
  start(16, /*event_idx=*/true);
  EXPECT_FALSE(queue_->enable_notification());
  EXPECT_EQ(driver_->avail_event(), 0);
  driver_->publish(driver_->add_chain({"a"}, {}));
  driver_->publish(driver_->add_chain({"b"}, {}));
  // Buffers arrived before we re-armed: the caller must keep popping.
  EXPECT_TRUE(queue_->enable_notification());
  EXPECT_TRUE(pop_one().chain.has_value());
  EXPECT_TRUE(pop_one().chain.has_value());
  EXPECT_FALSE(queue_->enable_notification());
  EXPECT_EQ(driver_->avail_event(), 2);
}

TEST_F(QueueTest, EnableDisableNotificationWithoutEventIdxUsesUsedFlags) {
  start(16);
  queue_->disable_notification();
  EXPECT_EQ(driver_->used_flags() & kVirtqUsedFNoNotify, kVirtqUsedFNoNotify);
  EXPECT_FALSE(queue_->enable_notification());
  EXPECT_EQ(driver_->used_flags() & kVirtqUsedFNoNotify, 0);
  driver_->publish(driver_->add_chain({"a"}, {}));
  EXPECT_TRUE(queue_->enable_notification());
}

// Whether a Linux driver kicks after publishing avail idx old -> new
// (vring_need_event).
bool driver_kicks(uint16_t avail_event, uint16_t old_idx, uint16_t new_idx) {
  return static_cast<uint16_t>(new_idx - avail_event - 1) <
         static_cast<uint16_t>(new_idx - old_idx);
}

TEST_F(QueueTest, KickAfterAsksForTheNthChainAndCountsWhatIsThere) {
  start(16, /*event_idx=*/true, /*indirect=*/true, /*next_avail=*/65534);
  driver_->set_avail_idx(65534);
  EXPECT_EQ(queue_->request_kick_after(4), 0u);
  // Counted from next_avail, across the 16-bit wrap: the fourth chain kicks.
  EXPECT_EQ(driver_->avail_event(), 1);
  for (uint16_t i = 0; i < 4; ++i) {
    const auto old_idx = static_cast<uint16_t>(65534 + i);
    EXPECT_EQ(driver_kicks(driver_->avail_event(), old_idx, static_cast<uint16_t>(old_idx + 1)),
              i == 3)
        << "chain " << i;
  }
  // Three chains are there now: fewer than a batch, reported for the caller
  // to serve within its linger.
  driver_->set_avail_idx(65535);
  driver_->publish(driver_->add_chain({"a"}, {}));
  driver_->publish(driver_->add_chain({"b"}, {}));
  EXPECT_EQ(queue_->request_kick_after(4), 3u);
  // A batch larger than the ring asks for at most a ring's worth.
  EXPECT_EQ(queue_->request_kick_after(1000), 3u);
  EXPECT_EQ(driver_->avail_event(), static_cast<uint16_t>(65534 + 16 - 1));
}

TEST_F(QueueTest, KickAfterWithoutEventIdxAsksForEveryChain) {
  start(16);
  queue_->disable_notification();
  EXPECT_EQ(queue_->request_kick_after(8), 0u);
  EXPECT_EQ(driver_->used_flags() & kVirtqUsedFNoNotify, 0);
  driver_->publish(driver_->add_chain({"a"}, {}));
  EXPECT_EQ(queue_->request_kick_after(8), 1u);
}

TEST(ChainError, EveryValueHasAName) {
  for (ChainError e :
       {ChainError::kHeadOutOfRange, ChainError::kAddressOutOfRange, ChainError::kLoop,
        ChainError::kNestedIndirect, ChainError::kBadIndirectTable, ChainError::kIndexOutOfRange,
        ChainError::kReadableAfterWritable, ChainError::kIndirectNotNegotiated,
        ChainError::kTooLong}) {
    EXPECT_STRNE(to_string(e), "unknown chain error");
  }
}

}  // namespace
}  // namespace vfsd::virtio
