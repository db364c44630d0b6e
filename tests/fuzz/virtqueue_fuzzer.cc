// Target virtqueue: virtio::SplitQueue over fuzzed rings in fake guest memory
// (MappedRegion::wrap over heap blocks, so a host pointer past any region is
// an AddressSanitizer report): create(), then pop() until the ring is
// drained, every chain's readable part read and writable part written, the
// used ring filled and the notification logic run; optionally each chain
// goes through the FUSE server (FakeFs), as in the daemon.
//
// Input: 13 configuration bytes, then frames.
//   byte 0     bits 0-3: queue size (kSizes); bit 4 EVENT_IDX; bit 5
//              INDIRECT_DESC; bit 6 a gap between the two regions (else
//              they are adjacent in both address spaces); bit 7 serve each
//              chain with fuse::Server over FakeFs (after an INIT)
//   bytes 1-2  next_avail (SET_VRING_BASE)
//   bytes 3-8  descriptor table, avail and used ring offsets in the memory
//              (u16 each, in units of 16, 2 and 4 bytes)
//   bytes 9-10 memory size: 256 + value bytes
//   bytes 11-12 where the second region starts (mod the memory size)
//   frames     each a patch: u16 offset into the memory, then the bytes to
//              write there; after each patch the queue is drained
// Memory offsets map to guest-physical 0x10000 + offset (plus the gap for
// the second region); ring addresses to the frontend-virtual space
// 0x7f0000000000 + the same.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "fake_fs.h"
#include "fuse/server.h"
#include "fuzz_common.h"
#include "guest_init.h"
#include "virtio/guest_memory.h"
#include "virtio/queue.h"

using namespace vfsd;
using namespace vfsd::fuzz;

namespace {

constexpr uint32_t kSizes[16] = {1,   2,   4,    8,     16, 32, 64,    128,
                                 256, 512, 1024, 32768, 0,  3,  65536, 8};
constexpr uint64_t kGpaBase = 0x10000;
constexpr uint64_t kUvaBase = 0x7f0000000000;
constexpr uint64_t kGap = 0x100000;

// The guest memory: two heap blocks seen as one flat range of offsets.
struct Memory {
  size_t size = 0, split = 0;
  bool gap = false;
  std::unique_ptr<uint8_t[]> lo, hi;

  uint64_t shift(size_t off) const { return off >= split && gap ? kGap : 0; }
  void write(size_t off, std::span<const uint8_t> bytes) {
    for (size_t i = 0; i < bytes.size() && off + i < size; ++i) {
      size_t at = off + i;
      if (at < split) {
        lo[at] = bytes[i];
      } else {
        hi[at - split] = bytes[i];
      }
    }
  }
};

// Serves chains the way the daemon's FuseRequestHandler does.
struct ChainServer {
  FakeFs fs{FakeFs::Options{.park_setlkw = false}};
  fuse::Server server{fs, fuse::ServerOptions{}};
  ChainServer() {
    Bytes init = guest_init(1, GuestKind::kLinux61);
    IovecReader r(IovecList{iovec{init.data(), init.size()}});
    std::vector<uint8_t> out(4096);
    IovecWriter w(IovecList{iovec{out.data(), out.size()}});
    server.handle(r, w);
  }
};

uint32_t consume(const virtio::DescriptorChain& chain, ChainServer* serve) {
  IovecReader reader(chain.readable);
  IovecWriter writer(chain.writable);
  if (serve != nullptr) return static_cast<uint32_t>(serve->server.handle(reader, writer));
  // Every byte of the chain is touched, as a request and a reply would.
  uint8_t buf[512];
  while (reader.remaining() > 0) {
    size_t k = std::min(reader.remaining(), sizeof(buf));
    VFSD_FUZZ_CHECK(reader.read(buf, k));
  }
  std::memset(buf, 0xab, sizeof(buf));
  size_t written = 0;
  while (writer.remaining() > 0) {
    size_t k = std::min(writer.remaining(), sizeof(buf));
    VFSD_FUZZ_CHECK(writer.write(buf, k));
    written += k;
  }
  return static_cast<uint32_t>(written);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t flags = input.u8();
  virtio::QueueConfig config;
  config.size = kSizes[flags & 15];
  config.event_idx = (flags & 16) != 0;
  config.indirect = (flags & 32) != 0;
  config.next_avail = input.u16();
  const size_t desc_off = size_t{input.u16()} * 16;
  const size_t avail_off = size_t{input.u16()} * 2;
  const size_t used_off = size_t{input.u16()} * 4;

  Memory mem;
  mem.size = 256 + size_t{input.u16()};
  mem.split = input.u16() % mem.size;
  mem.gap = (flags & 64) != 0;
  mem.lo.reset(new uint8_t[std::max<size_t>(mem.split, 1)]());
  mem.hi.reset(new uint8_t[mem.size - mem.split]());

  std::vector<std::shared_ptr<virtio::MappedRegion>> regions;
  if (mem.split > 0) {
    regions.push_back(virtio::MappedRegion::wrap(mem.lo.get(), kGpaBase, mem.split, kUvaBase));
  }
  regions.push_back(virtio::MappedRegion::wrap(
      mem.hi.get(), kGpaBase + mem.split + mem.shift(mem.split), mem.size - mem.split,
      kUvaBase + mem.split + mem.shift(mem.split)));
  auto memory = virtio::GuestMemory::create(regions);
  VFSD_FUZZ_CHECK(memory.has_value());
  auto shared = std::make_shared<const virtio::GuestMemory>(std::move(*memory));
  auto uva = [&](size_t off) { return kUvaBase + off + mem.shift(off); };
  config.desc_user_addr = uva(desc_off % mem.size);
  config.avail_user_addr = uva(avail_off % mem.size);
  config.used_user_addr = uva(used_off % mem.size);

  std::optional<ChainServer> server;
  if (flags & 128) server.emplace();

  // The rings' contents come from the patches; create() reads the used
  // index, so the first patch is applied before it.
  std::span<const uint8_t> frame;
  bool have_frame = input.frame(frame);
  auto apply = [&](std::span<const uint8_t> patch) {
    if (patch.size() < 2) return;
    size_t off = patch[0] | (size_t{patch[1]} << 8);
    mem.write(off % mem.size, patch.subspan(2));
  };
  if (have_frame) apply(frame);
  auto queue = virtio::SplitQueue::create(shared, config);
  if (!queue) return 0;

  auto drain = [&]() {
    // Bounded: rings that overlap can make the device's own used-ring
    // writes look like new chains (a guest can always keep a queue busy).
    for (uint32_t round = 0; round < 4; ++round) {
      for (uint32_t i = 0; i <= queue->size(); ++i) {
        auto popped = queue->pop(*shared);
        if (!popped) break;
        if (!popped->chain && popped->chain.error() == virtio::ChainError::kHeadOutOfRange) {
          VFSD_FUZZ_CHECK(popped->head >= queue->size());
          continue;
        }
        VFSD_FUZZ_CHECK(popped->head < queue->size());
        uint32_t len = popped->chain ? consume(*popped->chain, server ? &*server : nullptr) : 0;
        queue->add_used(popped->head, len);
        (void)queue->should_notify();
      }
      if (!queue->enable_notification()) break;
      queue->disable_notification();
    }
  };
  drain();
  while (input.frame(frame)) {
    apply(frame);
    drain();
  }
  return 0;
}
