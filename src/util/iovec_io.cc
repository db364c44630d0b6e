#include "util/iovec_io.h"

#include <algorithm>
#include <cstring>

namespace vfsd::detail {

IovecCursor::IovecCursor(IovecList segments) : segments_(std::move(segments)) {
  for (const auto& s : segments_) remaining_ += s.iov_len;
  skip_empty_segments();
}

IovecList IovecCursor::iovecs(size_t max_bytes) const {
  IovecList out;
  size_t offset = offset_;
  for (size_t i = index_; i < segments_.size() && max_bytes > 0; ++i) {
    size_t len = std::min(segments_[i].iov_len - offset, max_bytes);
    if (len > 0) {
      out.push_back({static_cast<char*>(segments_[i].iov_base) + offset, len});
      max_bytes -= len;
    }
    offset = 0;
  }
  return out;
}

void IovecCursor::advance(size_t n) {
  n = std::min(n, remaining_);
  remaining_ -= n;
  consumed_ += n;
  while (n > 0) {
    size_t here = std::min(segments_[index_].iov_len - offset_, n);
    offset_ += here;
    n -= here;
    skip_empty_segments();
  }
}

void IovecCursor::skip_empty_segments() {
  // Steps past the finished segment and any empty ones after it, so that
  // index_ always points at a byte while remaining_ > 0 (an empty segment's
  // base may be null, and memcpy must never see it).
  while (index_ < segments_.size() && offset_ == segments_[index_].iov_len) {
    ++index_;
    offset_ = 0;
  }
}

bool IovecCursor::skip(size_t n) {
  if (n > remaining_) return false;
  advance(n);
  return true;
}

void IovecCursor::copy(void* buf, size_t n, bool to_segments) {
  // Walks the segments in place (a header or a small argument per call, so
  // no list is built) and leaves the cursor after the last byte moved.
  auto* bytes = static_cast<char*>(buf);
  remaining_ -= n;
  consumed_ += n;
  while (n > 0) {
    char* at = static_cast<char*>(segments_[index_].iov_base) + offset_;
    const size_t here = std::min(segments_[index_].iov_len - offset_, n);
    if (to_segments) {
      std::memcpy(at, bytes, here);
    } else {
      std::memcpy(bytes, at, here);
    }
    bytes += here;
    n -= here;
    offset_ += here;
    skip_empty_segments();
  }
}

IovecList IovecCursor::split_off(size_t n) {
  n = std::min(n, remaining_);
  IovecList rest;
  size_t offset = offset_;
  size_t keep = n;
  IovecList kept;
  for (size_t i = index_; i < segments_.size(); ++i) {
    char* base = static_cast<char*>(segments_[i].iov_base) + offset;
    size_t len = segments_[i].iov_len - offset;
    offset = 0;
    size_t mine = std::min(len, keep);
    if (mine > 0) kept.push_back({base, mine});
    keep -= mine;
    if (len > mine) rest.push_back({base + mine, len - mine});
  }
  segments_ = std::move(kept);
  index_ = 0;
  offset_ = 0;
  remaining_ = n;
  return rest;
}

}  // namespace vfsd::detail

namespace vfsd {

bool IovecReader::read(void* dst, size_t n) {
  if (n > remaining_) return false;
  copy(dst, n, /*to_segments=*/false);
  return true;
}

bool IovecWriter::write(const void* src, size_t n) {
  if (n > remaining_) return false;
  copy(const_cast<void*>(src), n, /*to_segments=*/true);
  return true;
}

}  // namespace vfsd
