// The guest's RAM as the frontend shared it (memfd regions). Every host
// pointer into guest memory is obtained here, after a check that the whole
// requested range lies inside mapped regions.
// Pinned by: guest_memory_test.cc(GuestMemory.*), virtqueue_fuzzer.cc,
// queue_test.cc(QueueTest.BufferOutsideGuestMemory)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "util/iovec_io.h"
#include "util/result.h"

namespace vfsd::virtio {

/// One region of guest RAM mapped into our address space.
class MappedRegion {
 public:
  /// mmap()s `size` bytes of `fd` from `mmap_offset` (MAP_SHARED, RW).
  /// EINVAL unless `fd` is a regular file holding the whole range (a range
  /// past its end would SIGBUS on first access).
  /// The fd may be closed afterwards; the mapping lives as long as this object.
  static Result<std::shared_ptr<MappedRegion>> map(int fd, uint64_t guest_phys_addr, uint64_t size,
                                                   uint64_t user_addr, uint64_t mmap_offset);
  /// Wraps memory the caller owns and keeps alive (tests); never unmapped.
  static std::shared_ptr<MappedRegion> wrap(void* host, uint64_t guest_phys_addr, uint64_t size,
                                            uint64_t user_addr);
  ~MappedRegion();
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  uint64_t guest_phys_addr() const { return gpa_; }
  uint64_t size() const { return size_; }
  /// The frontend's (QEMU's) virtual address of the region's start.
  uint64_t user_addr() const { return uva_; }
  uint64_t mmap_offset() const { return mmap_offset_; }
  char* host_base() const { return host_; }

 private:
  MappedRegion(char* host, size_t mapped_len, uint64_t gpa, uint64_t size, uint64_t uva,
               uint64_t mmap_offset, bool owned);
  char* host_;
  size_t mapped_len_;
  uint64_t gpa_, size_, uva_, mmap_offset_;
  bool owned_;
};

/// An immutable set of regions. The vhost-user layer builds a new one on
/// every memory-table change and hands it to queue workers as a
/// shared_ptr snapshot; mappings stay alive while any snapshot uses them.
class GuestMemory {
 public:
  GuestMemory() = default;
  /// Fails with EINVAL if a region is null or empty, if regions overlap in
  /// guest-physical or user space, or if a region's range overflows 64 bits.
  static Result<GuestMemory> create(std::vector<std::shared_ptr<MappedRegion>> regions);

  const std::vector<std::shared_ptr<MappedRegion>>& regions() const { return regions_; }

  /// Host pointer for guest-physical [gpa, gpa+len) if it lies within one
  /// region, else nullptr (also for len 0: there is nothing to point to).
  void* gpa_to_host(uint64_t gpa, uint64_t len) const;
  /// Host pointer for the frontend-virtual range [uva, uva+len) (ring
  /// addresses of SET_VRING_ADDR) if it lies within one region, else nullptr
  /// (also for len 0).
  void* uva_to_host(uint64_t uva, uint64_t len) const;
  /// Appends host iovecs covering guest-physical [gpa, gpa+len), split where
  /// the range crosses into an adjacent region. False (out unchanged) if any
  /// byte is unmapped or the range overflows. A zero-length range touches no
  /// memory: true, nothing appended, whatever `gpa` is (virtio allows
  /// zero-length buffers).
  /// Pinned by: guest_memory_test.cc(GuestMemory.*),
  /// stack_test.cc(StackTest.WriteBufferStraddlingARegionBoundary)
  bool gpa_to_iovecs(uint64_t gpa, uint64_t len, IovecList& out) const;
  /// The guest-physical address of host pointer `host` if it points into a
  /// region, else nullopt: how dirty logging names the pages a reply wrote.
  /// Pinned by: guest_memory_test.cc(GuestMemory.HostToGpaInvertsTheTranslation)
  std::optional<uint64_t> host_to_gpa(const void* host) const;

 private:
  explicit GuestMemory(std::vector<std::shared_ptr<MappedRegion>> regions)
      : regions_(std::move(regions)) {}
  // The region containing guest-physical `gpa`, or nullptr.
  const MappedRegion* region_of_gpa(uint64_t gpa) const;
  std::vector<std::shared_ptr<MappedRegion>> regions_;  // sorted by guest_phys_addr
};

}  // namespace vfsd::virtio
