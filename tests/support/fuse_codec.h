// A tiny FUSE client for the tests and the benchmark: encodes requests as the
// guest kernel would put them on the wire (<linux/fuse.h> structs) and
// decodes replies. The one request builder of the tree: the integration
// tests feed its bytes to fuse::Server directly, the stack test and
// VhostUserGuest put them in guest RAM, the fuse::Server unit tests and
// bench/protocol_bench build their requests with it too.
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "util/iovec_io.h"

namespace vfsd::test {

using Bytes = std::vector<uint8_t>;

/// Builds one request: a fuse_in_header followed by the body pieces added.
/// `len` is filled in by finish() unless the test overrides it (claimed_len).
class RequestBuilder {
 public:
  RequestBuilder(uint32_t opcode, uint64_t nodeid, uint64_t unique) {
    header_.opcode = opcode;
    header_.nodeid = nodeid;
    header_.unique = unique;
  }

  RequestBuilder& creds(uint32_t uid, uint32_t gid, uint32_t pid = 1) {
    header_.uid = uid;
    header_.gid = gid;
    header_.pid = pid;
    return *this;
  }

  /// Sets the header's unique (e.g. a fresh one per send of a kept request).
  RequestBuilder& unique(uint64_t unique) {
    header_.unique = unique;
    return *this;
  }
  /// The length the header claims instead of the true one (a malformed
  /// request); 0 goes back to the true length.
  RequestBuilder& claimed_len(uint32_t len) {
    claimed_len_ = len;
    return *this;
  }

  template <class T>
  RequestBuilder& add(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return add_bytes(&value, sizeof(T));
  }
  RequestBuilder& add_bytes(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    body_.insert(body_.end(), p, p + n);
    return *this;
  }
  RequestBuilder& add_bytes(std::string_view bytes) {
    return add_bytes(bytes.data(), bytes.size());
  }
  /// A name as the kernel sends it: the bytes and one terminating NUL.
  RequestBuilder& add_name(std::string_view name) {
    add_bytes(name.data(), name.size());
    body_.push_back(0);
    return *this;
  }

  /// The body added so far (without the header).
  const Bytes& body() const { return body_; }

  Bytes finish() const {
    fuse_in_header h = header_;
    h.len = claimed_len_ != 0 ? claimed_len_ : static_cast<uint32_t>(sizeof(h) + body_.size());
    // Sized once and filled with memcpy: g++ 12 at -O2 misreads an insert
    // after a 40-byte vector as out of bounds (-Warray-bounds).
    Bytes out(sizeof(h) + body_.size());
    std::memcpy(out.data(), &h, sizeof(h));
    if (!body_.empty()) std::memcpy(out.data() + sizeof(h), body_.data(), body_.size());
    return out;
  }

 private:
  fuse_in_header header_{};
  uint32_t claimed_len_ = 0;
  Bytes body_;
};

/// A decoded reply. `bytes` is what the server said it wrote (0: no reply).
struct Reply {
  size_t bytes = 0;
  fuse_out_header header{};
  Bytes payload;

  /// The errno the guest sees (0 on success).
  int error() const { return -header.error; }
  bool ok() const { return bytes >= sizeof(fuse_out_header) && header.error == 0; }

  /// Copies a struct out of the payload at `offset` (zeroed if too short).
  template <class T>
  T as(size_t offset = 0) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T out{};
    if (offset + sizeof(T) <= payload.size()) std::memcpy(&out, payload.data() + offset, sizeof(T));
    return out;
  }
  std::string text() const { return std::string(payload.begin(), payload.end()); }
};

/// Decodes `written` bytes of a reply buffer.
inline Reply decode_reply(const Bytes& buffer, size_t written) {
  Reply r;
  r.bytes = written;
  if (written >= sizeof(fuse_out_header)) {
    std::memcpy(&r.header, buffer.data(), sizeof(r.header));
    r.payload.assign(buffer.begin() + sizeof(fuse_out_header),
                     buffer.begin() + static_cast<std::ptrdiff_t>(written));
  }
  return r;
}

/// Cuts `buf` into segments of `chunk` bytes (0: one segment), so that
/// structs, names and file data straddle segment boundaries.
inline vfsd::IovecList segments(uint8_t* data, size_t size, size_t chunk) {
  vfsd::IovecList out;
  if (chunk == 0) chunk = std::max<size_t>(size, 1);
  for (size_t pos = 0; pos < size; pos += chunk) {
    out.push_back(iovec{data + pos, std::min(chunk, size - pos)});
  }
  return out;
}

/// One directory entry decoded from a READDIR / READDIRPLUS payload.
struct DecodedDirent {
  uint64_t ino = 0;
  uint64_t off = 0;
  uint32_t type = 0;
  std::string name;
  fuse_entry_out entry{};  // READDIRPLUS only
};

/// Decodes a READDIR (plus=false) or READDIRPLUS payload; stops at the first
/// record that does not fit (the test then sees fewer entries than expected).
inline std::vector<DecodedDirent> decode_dirents(const Bytes& payload, bool plus) {
  std::vector<DecodedDirent> out;
  size_t pos = 0;
  const size_t prefix = plus ? sizeof(fuse_entry_out) : 0;
  while (pos + prefix + FUSE_NAME_OFFSET <= payload.size()) {
    DecodedDirent d;
    if (plus) std::memcpy(&d.entry, payload.data() + pos, sizeof(d.entry));
    fuse_dirent de{};
    std::memcpy(&de, payload.data() + pos + prefix, FUSE_NAME_OFFSET);
    size_t rec = FUSE_DIRENT_ALIGN(prefix + FUSE_NAME_OFFSET + de.namelen);
    if (pos + rec > payload.size()) break;
    d.ino = de.ino;
    d.off = de.off;
    d.type = de.type;
    d.name.assign(reinterpret_cast<const char*>(payload.data() + pos + prefix + FUSE_NAME_OFFSET),
                  de.namelen);
    out.push_back(std::move(d));
    pos += rec;
  }
  return out;
}

/// The INIT flags a Linux 6.1 virtiofs guest sends (flags2 in the upper half).
inline constexpr uint64_t kLinux61InitFlags =
    FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
    FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_SPLICE_WRITE | FUSE_SPLICE_MOVE | FUSE_SPLICE_READ |
    FUSE_FLOCK_LOCKS | FUSE_HAS_IOCTL_DIR | FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS |
    FUSE_READDIRPLUS_AUTO | FUSE_ASYNC_DIO | FUSE_WRITEBACK_CACHE | FUSE_NO_OPEN_SUPPORT |
    FUSE_PARALLEL_DIROPS | FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL | FUSE_ABORT_ERROR |
    FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_EXPLICIT_INVAL_DATA |
    FUSE_MAP_ALIGNMENT | FUSE_SUBMOUNTS | FUSE_HANDLE_KILLPRIV_V2 | FUSE_SETXATTR_EXT |
    FUSE_INIT_EXT;

/// The INIT request a Linux 6.1 virtiofs guest sends (protocol 7.38, flags2).
inline Bytes init_request(uint64_t unique, uint32_t minor = 38) {
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = minor;
  in.max_readahead = 128 * 1024;
  in.flags = static_cast<uint32_t>(kLinux61InitFlags);
  in.flags2 = static_cast<uint32_t>(kLinux61InitFlags >> 32);
  return RequestBuilder(FUSE_INIT, 0, unique).add(in).finish();
}

}  // namespace vfsd::test
