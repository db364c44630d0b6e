#include "vhost_user/dirty_log.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace vfsd::vhost_user {

Result<std::shared_ptr<DirtyLog>> DirtyLog::map(int fd, uint64_t size, uint64_t offset) {
  if (size == 0 || offset > UINT64_MAX - size) return fail(EINVAL);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno();
  // A range past the end of the file would SIGBUS on the first mark.
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < offset + size)
    return fail(EINVAL);
  // mmap wants a page-aligned offset: map from the page below it.
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t aligned = offset - offset % page;
  const uint64_t lead = offset - aligned;
  const size_t len = static_cast<size_t>(size + lead);
  void* p =
      ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(aligned));
  if (p == MAP_FAILED) return fail_errno();
  return std::shared_ptr<DirtyLog>(new DirtyLog(static_cast<uint8_t*>(p) + lead, size, p, len));
}

std::shared_ptr<DirtyLog> DirtyLog::wrap(uint8_t* bitmap, uint64_t size) {
  return std::shared_ptr<DirtyLog>(new DirtyLog(bitmap, size, nullptr, 0));
}

DirtyLog::DirtyLog(uint8_t* bitmap, uint64_t size, void* mapping, size_t mapping_len)
    : bitmap_(bitmap), size_(size), mapping_(mapping), mapping_len_(mapping_len) {}

DirtyLog::~DirtyLog() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_len_);
}

void DirtyLog::mark(uint64_t gpa, uint64_t len) const {
  if (len == 0) return;
  const uint64_t first = gpa / kLogPageSize;
  // The last byte's page; a range wrapping past 2^64 ends at the top page.
  const uint64_t last = (len - 1 > UINT64_MAX - gpa ? UINT64_MAX : gpa + len - 1) / kLogPageSize;
  const uint64_t end = std::min(last + 1, pages());
  for (uint64_t page = first; page < end; ++page) {
    __atomic_fetch_or(&bitmap_[page / 8], static_cast<uint8_t>(1u << (page % 8)), __ATOMIC_RELAXED);
  }
}

void DirtyLog::mark_written(const virtio::GuestMemory& memory, const IovecList& writable,
                            size_t len) const {
  for (const iovec& segment : writable) {
    if (len == 0) return;
    const size_t written = std::min(len, segment.iov_len);
    if (auto gpa = memory.host_to_gpa(segment.iov_base)) mark(*gpa, written);
    len -= written;
  }
}

}  // namespace vfsd::vhost_user
