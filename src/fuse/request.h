// One FUSE request as the server sees it: the header, a reader over its
// body (bounded by the length the header announced) and the writer of its
// reply. Internal to src/fuse: the handlers in server.cc read requests and
// write replies only through this class.
// Pinned by: server_test.cc(MalformedTest.*)
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include "fuse/filesystem.h"
#include "fuse/session_gate.h"
#include "util/deferred_reply.h"
#include "util/iovec_io.h"
#include "util/result.h"

namespace vfsd::fuse::detail {

class Request {
 public:
  /// `body_len` and `ext_len` are what the header announced, already checked
  /// against the bytes `body` holds.
  Request(const fuse_in_header& header, size_t body_len, size_t ext_len, IovecReader& body,
          IovecWriter& reply);

  const fuse_in_header header;
  // Who is asking (from the header).
  Context ctx;
  // The request extensions (supplementary groups, security context), parsed
  // before the operation sees the request; creating operations get them.
  Extensions extensions;
  // The body (positioned after the header) and the reply room.
  IovecReader& body;
  IovecWriter& reply;
  // The session's agreed FUSE_* flags (set by dispatch once INIT is done).
  uint64_t agreed = 0;
  // A pre-7.38 guest with FUSE_SECURITY_CTX: creating requests carry the
  // security context block in the body, after the name(s).
  bool legacy_secctx = false;
  // Held while the request uses the session (all but INIT and DESTROY).
  std::optional<SessionGate::Pass> pass;
  // Where a reply that must wait (SETLKW) is deferred to; null: the
  // transport has none, the request blocks its thread instead.
  ReplyDeferrer* deferrer = nullptr;
  // The server's max_write: a longer WRITE is refused.
  uint32_t max_write = 0;

  /// The node the request is about (the header's nodeid).
  InodeId node() const { return InodeId{header.nodeid}; }

  // --- reading the body

  size_t body_left() const { return body_left_; }
  size_t ext_len() const { return ext_len_; }

  /// Copies the extension area (the ext_len() bytes after the body) without
  /// moving the body cursor; call before the body is read.
  std::string read_extension_area() const;

  /// Copies a struct out of the body; false if the body is too short.
  template <class T>
  bool read(T& out) {
    static_assert(std::is_trivially_copyable_v<T>);
    return read_bytes(&out, sizeof(T));
  }
  bool read_bytes(void* dst, size_t n);
  /// Copies the rest of the body into `out`; false if it exceeds `cap` bytes.
  bool read_rest(std::string& out, size_t cap);
  /// Marks `n` body bytes as consumed by someone else (WRITE data).
  void consume(size_t n);

  // --- writing the reply

  /// Whether a successful reply with `payload` bytes fits.
  bool has_room(size_t payload) const {
    return reply.remaining() >= sizeof(fuse_out_header) + payload;
  }

  /// fuse_out_header.error for an errno. Only a real errno may travel back:
  /// 0 would read as success and a value outside the kernel's errno range as
  /// garbage.
  static int32_t wire_error(int error) {
    if (error <= 0 || error >= 4096) error = EIO;
    return -error;
  }
  size_t reply_error(int error) { return write_reply(wire_error(error), nullptr, 0, nullptr, 0); }
  size_t reply_error(Errno e) { return reply_error(e.value); }
  /// The error the reply carried (negative errno), 0 for success.
  int32_t replied_error() const { return replied_error_; }

  /// A successful reply carrying `a` then `b`; EIO if they do not fit.
  size_t reply_ok(const void* a = nullptr, size_t a_len = 0, const void* b = nullptr,
                  size_t b_len = 0);
  template <class T>
  size_t reply_obj(const T& payload) {
    static_assert(std::is_trivially_copyable_v<T>);
    return reply_ok(&payload, sizeof(T));
  }

  /// Writes only the header of a reply whose `payload_len` bytes were
  /// already written through a writer split off after the header.
  size_t reply_header(size_t payload_len);

 private:
  size_t write_reply(int32_t error, const void* a, size_t a_len, const void* b, size_t b_len);

  size_t body_left_;
  const size_t ext_len_;
  int32_t replied_error_ = 0;
};

}  // namespace vfsd::fuse::detail
