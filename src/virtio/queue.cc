#include "virtio/queue.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "util/log.h"

namespace vfsd::virtio {

namespace {

constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;
constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint16_t kUsedFNoNotify = 1;
constexpr size_t kDescSize = 16;

// One descriptor as laid out in guest memory. The rings are little-endian
// (virtio 1.x) and are read here as host integers, without byte swapping.
struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == kDescSize);
static_assert(std::endian::native == std::endian::little,
              "the ring layouts are read as host integers: a big-endian host needs byte swaps");

// The ring's fields, by byte offset from the start of each ring.
constexpr size_t kAvailIdx = 2;
constexpr size_t kAvailRing = 4;
constexpr size_t kUsedIdx = 2;
constexpr size_t kUsedRing = 4;
constexpr size_t kUsedElemSize = 8;

std::atomic_ref<uint16_t> u16_at(void* ring, size_t off) {
  return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(static_cast<char*>(ring) + off));
}

bool aligned(uint64_t v, uint64_t a) {
  return (v & (a - 1)) == 0;
}

// virtio 1.x, 2.7.10: notify iff new_idx passed used_event since old_idx,
// all in 16-bit wrapping arithmetic.
bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// Walks the descriptors of one chain in order: follows `next` links,
// descends into an indirect table (a private copy of it), and bounds the
// walk by the size of the table it is in. It refuses a chain whose shape is
// broken but does not look at the buffers the descriptors point to: that is
// ChainBuilder's part.
class DescriptorWalk {
 public:
  DescriptorWalk(const void* ring, uint32_t ring_size, uint16_t head, bool indirect_negotiated,
                 const GuestMemory& memory, std::vector<unsigned char>& indirect_copy)
      : memory_(memory),
        indirect_copy_(indirect_copy),
        table_(static_cast<const char*>(ring)),
        table_size_(ring_size),
        index_(head),
        indirect_negotiated_(indirect_negotiated) {}

  // The next buffer descriptor (never an indirect one), nullopt after the
  // last one, or why the chain is malformed. A descriptor handed out has a
  // `next` index inside its table when it has NEXT set.
  tl::expected<std::optional<Desc>, ChainError> next() {
    for (;;) {
      if (done_) return std::nullopt;
      // Bounded walk: a table of N descriptors cannot hold a longer chain.
      if (++visited_ > table_size_) return tl::unexpected(ChainError::kLoop);
      // Copy first, then check the copy: the guest may rewrite it meanwhile.
      Desc d;
      std::memcpy(&d, table_ + kDescSize * index_, sizeof d);
      if (d.flags & kDescFIndirect) {
        if (auto error = enter_indirect(d)) return tl::unexpected(*error);
        continue;
      }
      if (d.flags & kDescFNext) {
        if (d.next >= table_size_) return tl::unexpected(ChainError::kIndexOutOfRange);
        index_ = d.next;
      } else {
        done_ = true;
      }
      return d;
    }
  }

 private:
  // Makes a private copy of the indirect table `d` points to and goes on
  // from its first entry.
  std::optional<ChainError> enter_indirect(const Desc& d) {
    if (!indirect_negotiated_) return ChainError::kIndirectNotNegotiated;
    if (in_indirect_) return ChainError::kNestedIndirect;
    // The spec forbids NEXT together with INDIRECT; a table must hold whole
    // descriptors and no more than a queue could.
    if ((d.flags & kDescFNext) || d.len == 0 || d.len % kDescSize != 0 ||
        d.len / kDescSize > kMaxQueueSize) {
      return ChainError::kBadIndirectTable;
    }
    IovecList parts;
    if (!memory_.gpa_to_iovecs(d.addr, d.len, parts)) return ChainError::kAddressOutOfRange;
    indirect_copy_.resize(d.len);
    size_t at = 0;
    for (const iovec& part : parts) {
      std::memcpy(indirect_copy_.data() + at, part.iov_base, part.iov_len);
      at += part.iov_len;
    }
    table_ = reinterpret_cast<const char*>(indirect_copy_.data());
    table_size_ = d.len / kDescSize;
    in_indirect_ = true;
    visited_ = 0;
    index_ = 0;
    return std::nullopt;
  }

  const GuestMemory& memory_;
  std::vector<unsigned char>& indirect_copy_;
  const char* table_;
  uint32_t table_size_;
  uint16_t index_;
  uint32_t visited_ = 0;
  const bool indirect_negotiated_;
  bool in_indirect_ = false;
  bool done_ = false;
};

// Checks the buffer descriptors of a chain, in order, and collects their
// host segments: every buffer inside guest memory, no readable buffer after
// a writable one, a total length that fits the used ring's 32 bits.
class ChainBuilder {
 public:
  ChainBuilder(uint16_t head, const GuestMemory& memory) : memory_(memory) { chain_.head = head; }

  std::optional<ChainError> add(const Desc& d) {
    const bool writable = (d.flags & kDescFWrite) != 0;
    if (!writable && seen_writable_) return ChainError::kReadableAfterWritable;
    seen_writable_ = seen_writable_ || writable;
    total_ += d.len;
    if (total_ > std::numeric_limits<uint32_t>::max()) return ChainError::kTooLong;
    if (!memory_.gpa_to_iovecs(d.addr, d.len, writable ? chain_.writable : chain_.readable)) {
      return ChainError::kAddressOutOfRange;
    }
    return std::nullopt;
  }

  DescriptorChain take() { return std::move(chain_); }

 private:
  const GuestMemory& memory_;
  DescriptorChain chain_;
  bool seen_writable_ = false;
  uint64_t total_ = 0;
};

}  // namespace

const char* to_string(ChainError e) {
  switch (e) {
    case ChainError::kHeadOutOfRange:
      return "head index out of range";
    case ChainError::kAddressOutOfRange:
      return "buffer or indirect table outside guest memory";
    case ChainError::kLoop:
      return "chain longer than its descriptor table (loop)";
    case ChainError::kNestedIndirect:
      return "indirect descriptor inside an indirect table";
    case ChainError::kBadIndirectTable:
      return "bad indirect table (length, size or flags)";
    case ChainError::kIndexOutOfRange:
      return "descriptor index out of range";
    case ChainError::kReadableAfterWritable:
      return "readable descriptor after a writable one";
    case ChainError::kIndirectNotNegotiated:
      return "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
    case ChainError::kTooLong:
      return "chain length overflows 32 bits";
  }
  return "unknown chain error";
}

Result<SplitQueue> SplitQueue::create(std::shared_ptr<const GuestMemory> memory,
                                      const QueueConfig& config) {
  const uint32_t n = config.size;
  if (!memory || n == 0 || n > kMaxQueueSize || (n & (n - 1)) != 0) return fail(EINVAL);
  // Ring alignments of virtio 1.x 2.7 (desc 16, avail 2, used 4).
  if (!aligned(config.desc_user_addr, 16) || !aligned(config.avail_user_addr, 2) ||
      !aligned(config.used_user_addr, 4)) {
    return fail(EINVAL);
  }
  // used_event / avail_event trail the rings only with EVENT_IDX.
  const uint64_t event = config.event_idx ? 2 : 0;
  const uint64_t desc_len = kDescSize * n;
  const uint64_t avail_len = kAvailRing + 2ull * n + event;
  const uint64_t used_len = kUsedRing + kUsedElemSize * n + event;
  void* desc = memory->uva_to_host(config.desc_user_addr, desc_len);
  void* avail = memory->uva_to_host(config.avail_user_addr, avail_len);
  void* used = memory->uva_to_host(config.used_user_addr, used_len);
  if (desc == nullptr || avail == nullptr || used == nullptr) return fail(EFAULT);
  // The atomics below need naturally aligned host addresses; a region mapped
  // at an odd offset could break that even when the user address is aligned.
  if (!aligned(reinterpret_cast<uintptr_t>(avail), 2) ||
      !aligned(reinterpret_cast<uintptr_t>(used), 4)) {
    return fail(EINVAL);
  }

  SplitQueue q;
  q.ring_memory_ = std::move(memory);
  q.size_ = n;
  q.desc_ = desc;
  q.avail_ = avail;
  q.used_ = used;
  q.next_avail_ = config.next_avail;
  q.avail_idx_seen_ = config.next_avail;
  // Resume the used index where the ring says it is (a reconnecting or
  // restarted backend continues the previous one's sequence). Relaxed: the
  // driver does not write this field.
  q.next_used_ = u16_at(used, kUsedIdx).load(std::memory_order_relaxed);
  q.signalled_used_ = q.next_used_;
  q.signalled_used_valid_ = false;
  q.event_idx_ = config.event_idx;
  q.indirect_ = config.indirect;
  return q;
}

std::optional<uint16_t> SplitQueue::take_avail_head() {
  // The driver's avail idx is read again only once the chains it announced
  // last time are popped: the load misses the cache (the driver writes that
  // line as it publishes), and a batch of pops would otherwise pay it each.
  if (next_avail_ == avail_idx_seen_) {
    // Acquire: the ring slots and the descriptors the driver wrote before
    // publishing this index are visible to the reads that follow (and stay
    // so for the later pops up to it).
    const uint16_t avail_idx = u16_at(avail_, kAvailIdx).load(std::memory_order_acquire);
    const uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
    if (pending == 0) return std::nullopt;
    if (pending > size_) {
      // The driver claims more chains than the ring holds: it is broken.
      if (!warned_avail_jump_) {
        log::error("virtqueue: avail idx {} is {} ahead of next_avail {} (size {}); ignoring",
                   avail_idx, pending, next_avail_, size_);
        warned_avail_jump_ = true;
      }
      return std::nullopt;
    }
    avail_idx_seen_ = avail_idx;
  }
  // Relaxed is enough: ordered by the acquire load above.
  const auto ring_entry = [this](uint16_t idx) {
    return u16_at(avail_, kAvailRing + 2u * (idx % size_)).load(std::memory_order_relaxed);
  };
  const uint16_t head = ring_entry(next_avail_);
  ++next_avail_;
  if (next_avail_ != avail_idx_seen_) {
    // The next chain is published already: start fetching its first
    // descriptor, which the next pop reads, while this one is served. (A
    // hint only: the next pop reads and checks the slot again.)
    const uint16_t next_head = ring_entry(next_avail_);
    if (next_head < size_)
      __builtin_prefetch(static_cast<const char*>(desc_) + kDescSize * next_head);
  }
  return head;
}

tl::expected<DescriptorChain, ChainError> SplitQueue::read_chain(uint16_t head,
                                                                 const GuestMemory& memory) {
  DescriptorWalk walk(desc_, size_, head, indirect_, memory, indirect_copy_);
  ChainBuilder chain(head, memory);
  for (;;) {
    auto desc = walk.next();
    if (!desc) return tl::unexpected(desc.error());
    if (!*desc) return chain.take();
    if (auto error = chain.add(**desc)) return tl::unexpected(*error);
  }
}

std::optional<PoppedChain> SplitQueue::pop(const GuestMemory& memory) {
  const std::optional<uint16_t> head = take_avail_head();
  if (!head) return std::nullopt;
  PoppedChain out;
  out.head = *head;
  if (*head >= size_) {
    out.chain = tl::unexpected(ChainError::kHeadOutOfRange);
  } else {
    out.chain = read_chain(*head, memory);
    // The request's first bytes (the FUSE header and its argument) are
    // what the caller reads next, from lines the driver's core just wrote:
    // start fetching them while the chain is handed up.
    if (out.chain && !out.chain->readable.empty()) {
      const iovec& first = out.chain->readable.front();
      __builtin_prefetch(first.iov_base);
      if (first.iov_len > 64) __builtin_prefetch(static_cast<const char*>(first.iov_base) + 64);
    }
  }
  return out;
}

void SplitQueue::add_used(uint16_t head, uint32_t len) {
  char* elem = static_cast<char*>(used_) + kUsedRing + kUsedElemSize * (next_used_ % size_);
  const uint32_t id = head;
  std::memcpy(elem, &id, 4);
  std::memcpy(elem + 4, &len, 4);
  ++next_used_;
  // The used idx is the line the driver polls: storing it per element would
  // pull that line back from the driver's core each time. So it moves once
  // per kUsedPublishBatch answers while more requests are known to wait,
  // and at once after the last of them (one in flight waits for nothing).
  if (++unpublished_used_ >= kUsedPublishBatch || next_avail_ == avail_idx_seen_) publish_used();
}

void SplitQueue::publish_used() {
  if (unpublished_used_ == 0) return;
  unpublished_used_ = 0;
  // Release: the elements and the reply bytes written into the chains'
  // buffers become visible to the driver no later than the new index.
  u16_at(used_, kUsedIdx).store(next_used_, std::memory_order_release);
}

bool SplitQueue::should_notify() {
  publish_used();
  // Full fence: orders our used-idx store (add_used) before the loads of
  // used_event / avail flags below. Without it we could read a stale
  // used_event while the driver reads a stale used idx, and both sleep.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_idx = signalled_used_;
  const uint16_t new_idx = next_used_;
  const bool known = signalled_used_valid_;
  signalled_used_ = new_idx;
  signalled_used_valid_ = true;
  if (known && new_idx == old_idx) return false;  // nothing added since last time
  if (!event_idx_) {
    return (u16_at(avail_, 0).load(std::memory_order_relaxed) & kAvailFNoInterrupt) == 0;
  }
  // Right after (re)start we do not know what the driver last saw: an extra
  // interrupt is harmless, a missed one stalls the guest.
  if (!known) return true;
  const uint16_t used_event =
      u16_at(avail_, kAvailRing + 2u * size_).load(std::memory_order_relaxed);
  return need_event(used_event, new_idx, old_idx);
}

bool SplitQueue::enable_notification() {
  // About to sleep, or to look for more: what was answered goes out first.
  publish_used();
  if (event_idx_) {
    // avail_event: kick us once avail idx moves past what we consumed.
    u16_at(used_, kUsedRing + kUsedElemSize * size_).store(next_avail_, std::memory_order_relaxed);
  } else {
    u16_at(used_, 0).store(0, std::memory_order_relaxed);  // clear VRING_USED_F_NO_NOTIFY
  }
  // Full fence: orders the store above before the re-read of avail idx, so
  // either the driver sees our request and kicks, or we see its new buffers.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // A runaway index (see pop) is not work: reporting it would make the
  // caller spin on a queue that pop() refuses.
  return has_available();
}

uint32_t SplitQueue::request_kick_after(uint32_t chains) {
  if (!event_idx_ || chains <= 1) return enable_notification() ? available_count() : 0;
  publish_used();
  // The driver kicks when its avail idx moves past avail_event: the chain
  // at next_avail_ + chains - 1 is the one that crosses it. A ring holds at
  // most size_ chains, so the distance stays below 2^16.
  const auto last = static_cast<uint16_t>(next_avail_ + std::min(chains, size_) - 1);
  u16_at(used_, kUsedRing + kUsedElemSize * size_).store(last, std::memory_order_relaxed);
  // As in enable_notification(): the store before the re-read of avail idx.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return available_count();
}

void SplitQueue::suppress_notification() {
  if (event_idx_) {
    // The driver kicks when its avail idx crosses avail_event; one behind
    // what we consumed is crossed by nothing it can publish next.
    u16_at(used_, kUsedRing + kUsedElemSize * size_)
        .store(static_cast<uint16_t>(next_avail_ - 1), std::memory_order_relaxed);
  } else {
    u16_at(used_, 0).store(kUsedFNoNotify, std::memory_order_relaxed);
  }
}

bool SplitQueue::has_available() const {
  return available_count() != 0;
}

uint32_t SplitQueue::available_count() const {
  // Acquire: the descriptors of what is counted are visible to pop().
  const uint16_t avail_idx = u16_at(avail_, kAvailIdx).load(std::memory_order_acquire);
  const uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
  return pending <= size_ ? pending : 0;
}

void SplitQueue::disable_notification() {
  // With EVENT_IDX, leaving avail_event behind is enough: the driver kicks
  // only when crossing it. Otherwise ask explicitly.
  if (!event_idx_) u16_at(used_, 0).store(kUsedFNoNotify, std::memory_order_relaxed);
}

}  // namespace vfsd::virtio
