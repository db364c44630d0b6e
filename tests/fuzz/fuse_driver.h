// Feeds FUSE requests to fuse::Server the way a transport does, and checks
// what the server promises about every reply. Shared by the fuse_fake and
// fuse_passthrough targets (and the virtqueue target's optional server).
//
// One frame is one request:
//   byte 0  reply room: bits 0-3 pick the room the reply gets (kRooms),
//           bits 4-7 the size of its segments (kChunks)
//   byte 1  bits 0-3 the size of the request's segments (kChunks);
//           bit 7: set fuse_in_header.len to the request's real length
//           (so that mutated bodies stay framed)
//   rest    the request bytes (fuse_in_header, body, extensions)
// Every segment is its own heap block, so a read or write past any segment
// is an AddressSanitizer report.
//
// Checked for every reply: no more bytes than the room; a reply is 0 bytes
// or a whole fuse_out_header whose len is the byte count, whose unique is
// the request's, and whose error is 0 or a negative errno (> -4096), with
// no payload after an error; FORGET, BATCH_FORGET and INTERRUPT get no
// reply. A deferred reply (SETLKW) is finished exactly once, within its room.
#pragma once

#include <linux/fuse.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "fuse/server.h"
#include "fuzz_common.h"
#include "util/deferred_reply.h"
#include "util/iovec_io.h"

namespace vfsd::fuzz {

inline constexpr size_t kRooms[16] = {
    0,   8,   16,   24,   40,        64,         96,          144,
    160, 272, 1024, 4096, 4096 + 16, 65536 + 16, 131072 + 16, (1u << 20) + 16};
inline constexpr size_t kChunks[16] = {0, 1, 2, 3, 4, 7, 8, 13, 16, 24, 40, 64, 100, 512, 4096, 0};

/// Heap segments over `size` bytes, `chunk` bytes each (0: one segment),
/// never more than 64 of them. Each segment is a heap block of exactly its
/// size; blocks are reused between requests (allocating a fresh MiB per
/// request would make the targets several times slower).
class Segments {
 public:
  Segments(size_t size, size_t chunk) {
    if (chunk == 0) chunk = std::max<size_t>(size, 1);
    if (size / chunk >= 64) chunk = size / 64 + 1;
    for (size_t pos = 0; pos < size; pos += chunk) {
      size_t n = std::min(chunk, size - pos);
      blocks_.push_back(take(n));
      iov_.push_back(iovec{blocks_.back().get(), n});
    }
  }
  ~Segments() {
    std::lock_guard lock(pool_mu());
    for (size_t i = 0; i < blocks_.size(); ++i) {
      auto& free_list = pool()[iov_[i].iov_len];
      if (free_list.size() < 8) free_list.push_back(std::move(blocks_[i]));
    }
  }
  Segments(const Segments&) = delete;
  Segments& operator=(const Segments&) = delete;

  /// Fills the segments with `bytes` (which must be as long).
  void fill(std::span<const uint8_t> bytes) {
    size_t at = 0;
    for (const iovec& v : iov_) {
      std::memcpy(v.iov_base, bytes.data() + at, v.iov_len);
      at += v.iov_len;
    }
  }
  /// Copies the first `n` bytes out.
  void copy_out(void* dst, size_t n) const {
    auto* out = static_cast<uint8_t*>(dst);
    for (const iovec& v : iov_) {
      if (n == 0) break;
      size_t k = std::min(n, v.iov_len);
      std::memcpy(out, v.iov_base, k);
      out += k;
      n -= k;
    }
  }
  const IovecList& iovecs() const { return iov_; }

 private:
  using Block = std::unique_ptr<uint8_t[]>;
  static std::mutex& pool_mu() {
    static std::mutex mu;
    return mu;
  }
  static std::map<size_t, std::vector<Block>>& pool() {
    static auto* blocks = new std::map<size_t, std::vector<Block>>();  // never freed: reachable
    return *blocks;
  }
  static Block take(size_t n) {
    {
      std::lock_guard lock(pool_mu());
      auto it = pool().find(n);
      if (it != pool().end() && !it->second.empty()) {
        Block b = std::move(it->second.back());
        it->second.pop_back();
        return b;
      }
    }
    return Block(new uint8_t[n]);
  }

  std::vector<Block> blocks_;
  IovecList iov_;
};

/// Checks one reply of `n` bytes in `reply` to the request whose header is
/// `in` (`have_header`: the request held a whole header).
inline void check_reply(const Segments& reply, size_t room, size_t n, bool have_header,
                        const fuse_in_header& in) {
  VFSD_FUZZ_CHECK(n <= room);
  if (n == 0) return;
  VFSD_FUZZ_CHECK(have_header);
  VFSD_FUZZ_CHECK(n >= sizeof(fuse_out_header));
  VFSD_FUZZ_CHECK(in.opcode != FUSE_FORGET && in.opcode != FUSE_BATCH_FORGET &&
                  in.opcode != FUSE_INTERRUPT);
  fuse_out_header out{};
  reply.copy_out(&out, sizeof(out));
  VFSD_FUZZ_CHECK(out.len == n);
  VFSD_FUZZ_CHECK(out.unique == in.unique);
  VFSD_FUZZ_CHECK(out.error <= 0 && out.error > -4096);
  VFSD_FUZZ_CHECK(out.error == 0 || out.len == sizeof(out));
}

/// Deferred replies handed out while fuzzing: each must be finished exactly
/// once, within its buffer; outstanding() says how many are not yet.
class DeferredLedger {
 public:
  class Reply final : public DeferredReply {
   public:
    Reply(DeferredLedger& ledger, size_t room, uint64_t unique)
        : ledger_(ledger),
          segments_(std::min<size_t>(room, 64 * 1024), 0),
          room_(std::min<size_t>(room, 64 * 1024)),
          writer_(segments_.iovecs()),
          unique_(unique) {}
    ~Reply() override {
      // A reply dropped unfinished leaves the guest's request hanging forever.
      VFSD_FUZZ_CHECK(finished_.load());
    }
    IovecWriter& writer() override { return writer_; }
    void finish(size_t bytes) override {
      VFSD_FUZZ_CHECK(!finished_.exchange(true));
      fuse_in_header in{};
      in.unique = unique_;
      check_reply(segments_, room_, bytes, true, in);
      ledger_.outstanding_.fetch_sub(1);
    }

   private:
    DeferredLedger& ledger_;
    Segments segments_;
    size_t room_;
    IovecWriter writer_;
    uint64_t unique_;
    std::atomic<bool> finished_{false};
  };

  /// The deferrer offered with one request.
  class Deferrer final : public ReplyDeferrer {
   public:
    Deferrer(DeferredLedger& ledger, size_t room, uint64_t unique)
        : ledger_(ledger), room_(room), unique_(unique) {}
    std::unique_ptr<DeferredReply> defer() override {
      VFSD_FUZZ_CHECK(!used_);  // at most once per request
      used_ = true;
      ledger_.outstanding_.fetch_add(1);
      return std::make_unique<Reply>(ledger_, room_, unique_);
    }
    bool used() const { return used_; }

   private:
    DeferredLedger& ledger_;
    size_t room_;
    uint64_t unique_;
    bool used_ = false;
  };

  long outstanding() const { return outstanding_.load(); }

 private:
  std::atomic<long> outstanding_{0};
};

/// Runs frames against `server`. `defer`: offer a deferrer with every request
/// (else SETLKW waits on the calling thread).
class FuseDriver {
 public:
  FuseDriver(fuse::Server& server, DeferredLedger& ledger, bool defer)
      : server_(server), ledger_(ledger), defer_(defer) {}

  void run_frame(std::span<const uint8_t> frame) {
    if (frame.size() < 2) return;
    const uint8_t room_byte = frame[0];
    const uint8_t seg_byte = frame[1];
    Bytes request(frame.begin() + 2, frame.end());
    run(request, kRooms[room_byte & 15], kChunks[room_byte >> 4], kChunks[seg_byte & 15],
        (seg_byte & 0x80) != 0);
  }

  /// One request with explicit parameters.
  void run(Bytes& request, size_t room, size_t reply_chunk, size_t request_chunk, bool fix_len) {
    fuse_in_header in{};
    const bool have_header = request.size() >= sizeof(in);
    if (have_header) {
      if (fix_len) {
        const uint32_t len = static_cast<uint32_t>(request.size());
        std::memcpy(request.data() + offsetof(fuse_in_header, len), &len, sizeof(len));
      }
      std::memcpy(&in, request.data(), sizeof(in));
    }
    Segments req(request.size(), request_chunk);
    req.fill(request);
    Segments rep(room, reply_chunk);
    IovecReader reader(req.iovecs());
    IovecWriter writer(rep.iovecs());
    DeferredLedger::Deferrer deferrer(ledger_, room, in.unique);
    const size_t n = server_.handle(reader, writer, defer_ ? &deferrer : nullptr);
    if (deferrer.used()) VFSD_FUZZ_CHECK(n == 0);
    check_reply(rep, room, n, have_header, in);
    if (trace_) {
      fuse_out_header out{};
      if (n >= sizeof(out)) rep.copy_out(&out, sizeof(out));
      std::fprintf(stderr, "fuse: opcode %u node %llu unique %llu -> %zu bytes, error %d%s\n",
                   in.opcode, static_cast<unsigned long long>(in.nodeid),
                   static_cast<unsigned long long>(in.unique), n, -out.error,
                   deferrer.used() ? " (deferred)" : "");
    }
  }

 private:
  fuse::Server& server_;
  DeferredLedger& ledger_;
  const bool defer_;
  // VFSD_FUZZ_TRACE=1: one line per request on stderr (to see what a seed
  // or a crashing input does).
  const bool trace_ = std::getenv("VFSD_FUZZ_TRACE") != nullptr;
};

}  // namespace vfsd::fuzz
