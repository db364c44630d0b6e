// Bounded cursors over a list of memory segments (iovecs). The FUSE server
// reads requests and writes replies through these; the segments come from
// validated guest buffers (virtio), a /dev/fuse buffer, or a test's vectors.
// File data moves with preadv/pwritev straight on the segments: take the
// iovecs with `iovecs(n)`, do the syscall, then `advance(done)`.
// Pinned by: iovec_io_test.cc(IovecReader.*, IovecWriter.*),
// passthrough_fs_test.cc(PassthroughFsTest.ReadAndWriteGoStraightThroughSegments)
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/container/inlined_vector.h"

namespace vfsd {

// A request's segments. A Linux guest's small requests come in 2-4 segments
// per direction; keeping up to 8 inline takes the heap off the request path
// (a chain's lists, a cursor's copy of them, a split reply) until a large
// READ or WRITE brings one segment per page.
using IovecList = absl::InlinedVector<iovec, 8>;

namespace detail {
// Shared cursor logic for Reader and Writer.
class IovecCursor {
 public:
  IovecCursor() = default;
  explicit IovecCursor(IovecList segments);

  /// Bytes left after the cursor.
  size_t remaining() const { return remaining_; }
  /// Bytes moved so far.
  size_t consumed() const { return consumed_; }

  /// Up to `max_bytes` of the remaining segments, without moving the cursor.
  IovecList iovecs(size_t max_bytes) const;
  /// Moves the cursor by `n` bytes (clamped to remaining()).
  void advance(size_t n);
  /// Moves the cursor by n bytes; false (and no move) if fewer remain.
  bool skip(size_t n);

 protected:
  // Copies n bytes between the cursor position and `buf`; the caller
  // checked n <= remaining().
  void copy(void* buf, size_t n, bool to_segments);
  // Cuts the cursor at `n` bytes from its position: this keeps the first n,
  // the returned segments hold the rest.
  IovecList split_off(size_t n);
  void skip_empty_segments();

  IovecList segments_;
  size_t index_ = 0;   // current segment
  size_t offset_ = 0;  // offset inside the current segment
  size_t remaining_ = 0;
  size_t consumed_ = 0;
};
}  // namespace detail

/// Reads a request out of a list of segments.
class IovecReader : public detail::IovecCursor {
 public:
  using IovecCursor::IovecCursor;
  /// Copies exactly n bytes out; false (nothing consumed) if fewer remain.
  bool read(void* dst, size_t n);
  template <class T>
  bool read_obj(T& out) {
    static_assert(std::is_trivially_copyable_v<T>);
    return read(&out, sizeof(T));
  }
};

/// Writes a reply into a list of segments.
class IovecWriter : public detail::IovecCursor {
 public:
  using IovecCursor::IovecCursor;
  /// Copies exactly n bytes in; false (nothing written) if less room remains.
  bool write(const void* src, size_t n);
  template <class T>
  bool write_obj(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(&value, sizeof(T));
  }
  /// Splits the writer at `n` bytes from the cursor: this writer keeps the
  /// first n bytes (e.g. a reply header), the returned one covers the rest
  /// (e.g. file data filled in by preadv before the header is known).
  IovecWriter split_at(size_t n) { return IovecWriter(split_off(n)); }
};

}  // namespace vfsd
