// A split virtqueue (virtio 1.x, section 2.7) driven by the device side:
// pop available descriptor chains, push used elements, decide whether the
// driver wants an interrupt (VIRTIO_RING_F_EVENT_IDX or the NO_INTERRUPT flag).
//
// Not thread-safe: one worker owns one queue.
// Pinned by: queue_test.cc(QueueTest.*), virtqueue_fuzzer.cc
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "util/deferred_reply.h"
#include "util/iovec_io.h"
#include "util/result.h"
#include "virtio/guest_memory.h"

namespace vfsd::virtio {

inline constexpr uint32_t kMaxQueueSize = 32768;

/// A validated descriptor chain: host segments of its device-readable part
/// (the request) followed by its device-writable part (room for the reply).
struct DescriptorChain {
  uint16_t head = 0;
  IovecList readable;
  IovecList writable;
};

/// Why a chain was refused (logged; the chain goes back with length 0,
/// except kHeadOutOfRange).
enum class ChainError {
  // Found by the walk (the chain's shape):
  kHeadOutOfRange,   // the head index >= queue size: nothing can go on the used ring
  kIndexOutOfRange,  // a `next` index >= queue (or indirect table) size
  kLoop,             // more descriptors than the queue (or table) holds
  kIndirectNotNegotiated,
  kNestedIndirect,    // an indirect descriptor inside an indirect table
  kBadIndirectTable,  // table len 0, not a multiple of 16, > kMaxQueueSize entries, or NEXT set
  // Found by the validation of each buffer:
  kAddressOutOfRange,  // a buffer or indirect table outside guest memory
  kReadableAfterWritable,
  kTooLong,  // total length overflows 32 bits
};

const char* to_string(ChainError);

/// What pop() found at the next available slot: the head the driver
/// published and the chain it starts, or why that chain was refused.
struct PoppedChain {
  uint16_t head = 0;
  tl::expected<DescriptorChain, ChainError> chain;
};

struct QueueConfig {
  uint32_t size = 0;            // power of two, 1..kMaxQueueSize
  uint64_t desc_user_addr = 0;  // frontend virtual addresses (SET_VRING_ADDR)
  uint64_t avail_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint16_t next_avail = 0;  // SET_VRING_BASE
  bool event_idx = false;   // VIRTIO_RING_F_EVENT_IDX negotiated
  bool indirect = true;     // VIRTIO_RING_F_INDIRECT_DESC negotiated
};

class SplitQueue {
 public:
  /// Translates the ring addresses through `memory` (frontend virtual
  /// addresses) and checks that each ring lies wholly in mapped memory and
  /// is suitably aligned. The queue keeps `memory` alive for its rings.
  static Result<SplitQueue> create(std::shared_ptr<const GuestMemory> memory,
                                   const QueueConfig& config);

  /// The next available chain, or nullopt when the driver has published no
  /// more. Descriptors are translated through `memory` (guest-physical).
  /// A refused chain (other than kHeadOutOfRange) still belongs to the
  /// device: the caller puts it on the used ring with length 0.
  /// Pinned by: datapath_test.cc(DataPath.MalformedChainsAreReturnedEmptyAndTheQueueGoesOn)
  std::optional<PoppedChain> pop(const GuestMemory& memory);

  /// Puts a chain on the used ring with `len` bytes written into it. The
  /// used idx that hands it to the driver moves once every chain up to the
  /// avail idx last read has been popped (nothing known still waits), every
  /// kUsedPublishBatch elements, and at publish_used(), should_notify() and
  /// enable_notification(), whichever comes first.
  void add_used(uint16_t head, uint32_t len);
  /// Moves the used idx past every element added so far.
  void publish_used();
  static constexpr uint16_t kUsedPublishBatch = 8;

  /// Publishes what was added (publish_used()) and says whether the driver
  /// asked to be notified for it (used_event with EVENT_IDX, else
  /// !VRING_AVAIL_F_NO_INTERRUPT).
  bool should_notify();

  /// Asks the driver to kick for new buffers (avail_event / used flags).
  /// Returns true if buffers became available meanwhile: the caller must
  /// then keep popping instead of sleeping.
  bool enable_notification();
  /// With EVENT_IDX, asks the driver to kick only once `chains` more chains
  /// (counted from next_avail) are published, so a stream of small requests
  /// costs one wake-up per `chains`; without EVENT_IDX (or for `chains` <= 1)
  /// it is enable_notification(). Returns how many chains are available
  /// after the request took effect: the caller serves them at once if they
  /// reach `chains` (that kick may have been skipped), and otherwise must not
  /// sleep for good while any are pending (their kick may never come).
  /// Pinned by: queue_test.cc(QueueTest.KickAfter*)
  uint32_t request_kick_after(uint32_t chains);
  /// Tells the driver that kicks are not needed while we are busy.
  void disable_notification();
  /// Tells the driver not to kick even for its next buffer: the device is
  /// polling the avail ring. enable_notification() undoes it.
  void suppress_notification();
  /// Whether VIRTIO_RING_F_EVENT_IDX was negotiated for this ring.
  bool event_idx() const { return event_idx_; }
  /// Whether the driver published chains not popped yet: a load and a
  /// compare, for polling (a runaway index is not work, as in pop()).
  bool has_available() const;
  /// How many chains the driver published and we have not popped (0 for a
  /// runaway index, as in has_available()).
  uint32_t available_count() const;

  /// Bytes of a used ring of `size` entries, avail_event included: what
  /// dirty logging marks for it.
  static uint64_t used_ring_bytes(uint32_t size) { return 4 + 8 * uint64_t{size} + 2; }

  /// The index of the next chain to pop (what GET_VRING_BASE reports).
  uint16_t next_avail() const { return next_avail_; }
  uint32_t size() const { return size_; }

 private:
  SplitQueue() = default;
  // The head at next_avail_, consumed; nullopt when nothing (sane) is pending.
  std::optional<uint16_t> take_avail_head();
  // Walks and validates the chain starting at `head` (< size_).
  tl::expected<DescriptorChain, ChainError> read_chain(uint16_t head, const GuestMemory& memory);

  std::shared_ptr<const GuestMemory> ring_memory_;
  uint32_t size_ = 0;
  void* desc_ = nullptr;   // struct of 16-byte descriptors
  void* avail_ = nullptr;  // flags, idx, ring[size], used_event
  void* used_ = nullptr;   // flags, idx, ring[size] of {id, len}, avail_event
  uint16_t next_avail_ = 0;
  // The avail idx last read: chains up to it are known published.
  uint16_t avail_idx_seen_ = 0;
  uint16_t next_used_ = 0;
  uint16_t unpublished_used_ = 0;  // elements added past the used idx
  uint16_t signalled_used_ = 0;    // used idx at the last notification decision
  bool signalled_used_valid_ = false;
  bool event_idx_ = false;
  bool indirect_ = true;
  bool warned_avail_jump_ = false;  // the runaway avail idx is logged once
  // A private copy of the indirect table being walked: validated and used
  // without the guest being able to change it under us. Reused across pops.
  std::vector<unsigned char> indirect_copy_;
};

/// Served by the layer above (the FUSE server, through the app): one request
/// in, one reply out.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  /// Returns the number of bytes written into `reply`. A request that must
  /// wait (SETLKW) calls `deferrer->defer()` instead: the return value is then
  /// ignored and the chain goes back when the DeferredReply is finished.
  /// `deferrer` is valid during this call only; null where the caller cannot
  /// defer.
  /// Pinned by: deferred_test.cc(Deferred.*)
  virtual uint32_t handle(uint32_t queue_index, IovecReader& request, IovecWriter& reply,
                          ReplyDeferrer* deferrer) = 0;
};

}  // namespace vfsd::virtio
