#include "fuse/request.h"

#include <algorithm>

namespace vfsd::fuse::detail {

Request::Request(const fuse_in_header& header, size_t body_len, size_t ext_len, IovecReader& body,
                 IovecWriter& reply)
    : header(header), body(body), reply(reply), body_left_(body_len), ext_len_(ext_len) {
  ctx.uid = header.uid;
  ctx.gid = header.gid;
  ctx.pid = static_cast<pid_t>(header.pid);
}

std::string Request::read_extension_area() const {
  IovecReader ext(body.iovecs(body_left_ + ext_len_));
  std::string area(ext_len_, '\0');
  // Cannot fail: handle() checked that header.len bytes are present.
  if (!ext.skip(body_left_) || !ext.read(area.data(), area.size())) area.clear();
  return area;
}

bool Request::read_bytes(void* dst, size_t n) {
  if (n > body_left_ || !body.read(dst, n)) return false;
  body_left_ -= n;
  return true;
}

bool Request::read_rest(std::string& out, size_t cap) {
  if (body_left_ > cap) return false;
  out.resize(body_left_);
  return read_bytes(out.data(), out.size());
}

void Request::consume(size_t n) {
  n = std::min(n, body_left_);
  body.advance(n);
  body_left_ -= n;
}

size_t Request::reply_ok(const void* a, size_t a_len, const void* b, size_t b_len) {
  if (!has_room(a_len + b_len)) return reply_error(EIO);
  return write_reply(0, a, a_len, b, b_len);
}

size_t Request::reply_header(size_t payload_len) {
  fuse_out_header out{};
  out.len = static_cast<uint32_t>(sizeof(out) + payload_len);
  out.error = 0;
  out.unique = header.unique;
  if (!reply.write_obj(out)) return 0;
  return out.len;
}

size_t Request::write_reply(int32_t error, const void* a, size_t a_len, const void* b,
                            size_t b_len) {
  fuse_out_header out{};
  out.len = static_cast<uint32_t>(sizeof(out) + a_len + b_len);
  out.error = error;
  out.unique = header.unique;
  replied_error_ = error;
  if (reply.remaining() < out.len) return 0;
  reply.write_obj(out);
  if (a_len > 0) reply.write(a, a_len);
  if (b_len > 0) reply.write(b, b_len);
  return out.len;
}

}  // namespace vfsd::fuse::detail
