// Test helper: plays the guest driver of a split virtqueue (virtio 1.x,
// section 2.7) laid out in memory that the test owns. The device under test
// sees the same bytes through MappedRegion::wrap, so a test can build good
// and malformed chains, publish them and inspect the used ring.
//
// Little-endian host assumed (virtio 1.x rings are little-endian).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace vfsd::test {

inline constexpr uint16_t kVirtqDescFNext = 1;
inline constexpr uint16_t kVirtqDescFWrite = 2;
inline constexpr uint16_t kVirtqDescFIndirect = 4;
inline constexpr uint16_t kVirtqAvailFNoInterrupt = 1;
inline constexpr uint16_t kVirtqUsedFNoNotify = 1;

/// One descriptor exactly as it sits in the descriptor table.
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);

class VirtqDriver {
 public:
  /// Lays out the descriptor table, the avail ring (+used_event) and the
  /// used ring (+avail_event) at the start of [host_base, host_base+mem_size),
  /// which the device sees at guest-physical `gpa_base`. The rest of the area
  /// is a bump allocator for buffers and indirect tables. Zeroes the rings.
  VirtqDriver(char* host_base, uint64_t gpa_base, size_t mem_size, uint32_t queue_size)
      : base_(host_base), gpa_base_(gpa_base), mem_size_(mem_size), size_(queue_size) {
    desc_off_ = 0;
    avail_off_ = align(desc_off_ + 16ull * size_, 2);
    used_off_ = align(avail_off_ + 6 + 2ull * size_, 4);
    data_off_ = align(used_off_ + 6 + 8ull * size_, 16);
    if (data_off_ > mem_size_) throw std::runtime_error("VirtqDriver: area too small for rings");
    std::memset(base_, 0, data_off_);
    bump_ = data_off_;
  }

  uint32_t queue_size() const { return size_; }
  uint64_t desc_gpa() const { return gpa_base_ + desc_off_; }
  uint64_t avail_gpa() const { return gpa_base_ + avail_off_; }
  uint64_t used_gpa() const { return gpa_base_ + used_off_; }
  /// Guest-physical start of the data area (after the rings).
  uint64_t data_gpa() const { return gpa_base_ + data_off_; }

  /// Allocates `len` bytes (16-aligned) of the data area; returns its gpa.
  uint64_t alloc(size_t len) {
    size_t start = align(bump_, 16);
    if (start > mem_size_ || len > mem_size_ - start) {
      throw std::runtime_error("VirtqDriver: data area exhausted");
    }
    bump_ = start + len;
    return gpa_base_ + start;
  }
  /// Forgets every allocation (buffers of chains already consumed).
  void reset_alloc() { bump_ = data_off_; }

  /// Host pointer of a gpa inside the area.
  char* host(uint64_t gpa) {
    if (gpa < gpa_base_ || gpa - gpa_base_ > mem_size_) {
      throw std::runtime_error("VirtqDriver: gpa outside the area");
    }
    return base_ + (gpa - gpa_base_);
  }

  /// Builds a chain from free descriptors: one readable buffer per string
  /// (copied in), then one writable buffer per size; returns the head index.
  /// Does not publish it.
  uint16_t add_chain(const std::vector<std::string>& readable,
                     const std::vector<uint32_t>& writable_sizes) {
    size_t n = readable.size() + writable_sizes.size();
    if (n == 0) throw std::runtime_error("VirtqDriver: empty chain");
    std::vector<uint16_t> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back(take_free());
    fill(
        ids, [this](uint16_t i) -> VirtqDesc& { return desc(i); }, readable, writable_sizes);
    return ids.front();
  }

  /// Same, but the buffers live in an indirect table referenced from a
  /// single descriptor.
  uint16_t add_indirect_chain(const std::vector<std::string>& readable,
                              const std::vector<uint32_t>& writable_sizes) {
    size_t n = readable.size() + writable_sizes.size();
    if (n == 0) throw std::runtime_error("VirtqDriver: empty chain");
    uint64_t table_gpa = alloc(16 * n);
    auto* table = reinterpret_cast<VirtqDesc*>(host(table_gpa));
    std::vector<uint16_t> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<uint16_t>(i));
    fill(
        ids, [table](uint16_t i) -> VirtqDesc& { return table[i]; }, readable, writable_sizes);
    uint16_t head = take_free();
    desc(head) = VirtqDesc{table_gpa, static_cast<uint32_t>(16 * n), kVirtqDescFIndirect, 0};
    return head;
  }

  /// Raw access, to craft malformed chains.
  VirtqDesc& desc(uint16_t index) {
    if (index >= size_) throw std::runtime_error("VirtqDriver: descriptor index out of range");
    return reinterpret_cast<VirtqDesc*>(base_ + desc_off_)[index];
  }

  /// Puts `head` in the next avail slot, then bumps avail.idx. The release
  /// store orders the slot (and the descriptors) before the index the device
  /// reads with acquire.
  void publish(uint16_t head) {
    uint16_t idx = avail_idx();
    u16(avail_off_ + 4 + 2 * (idx % size_)) = head;
    std::atomic_ref<uint16_t>(u16(avail_off_ + 2))
        .store(static_cast<uint16_t>(idx + 1), std::memory_order_release);
  }
  /// Sets avail.idx directly (e.g. to jump far ahead or start near 65535).
  void set_avail_idx(uint16_t idx) {
    std::atomic_ref<uint16_t>(u16(avail_off_ + 2)).store(idx, std::memory_order_release);
  }
  uint16_t avail_idx() const {
    return std::atomic_ref<uint16_t>(u16(avail_off_ + 2)).load(std::memory_order_relaxed);
  }

  uint16_t used_idx() const {
    return std::atomic_ref<uint16_t>(u16(used_off_ + 2)).load(std::memory_order_acquire);
  }
  /// {id, len} at used.ring[slot % size].
  std::pair<uint32_t, uint32_t> used_elem(uint16_t slot) const {
    size_t off = used_off_ + 4 + 8ull * (slot % size_);
    uint32_t id, len;
    std::memcpy(&id, base_ + off, 4);
    std::memcpy(&len, base_ + off + 4, 4);
    return {id, len};
  }

  void set_used_event(uint16_t v) {
    std::atomic_ref<uint16_t>(u16(avail_off_ + 4 + 2ull * size_))
        .store(v, std::memory_order_seq_cst);
  }
  uint16_t avail_event() const {
    return std::atomic_ref<uint16_t>(u16(used_off_ + 4 + 8ull * size_))
        .load(std::memory_order_seq_cst);
  }
  void set_avail_flags(uint16_t flags) {
    std::atomic_ref<uint16_t>(u16(avail_off_)).store(flags, std::memory_order_seq_cst);
  }
  uint16_t used_flags() const {
    return std::atomic_ref<uint16_t>(u16(used_off_)).load(std::memory_order_seq_cst);
  }

  /// Copy out of the area.
  std::string read(uint64_t gpa, size_t len) const {
    if (gpa < gpa_base_ || gpa - gpa_base_ > mem_size_ || len > mem_size_ - (gpa - gpa_base_)) {
      throw std::runtime_error("VirtqDriver: read outside the area");
    }
    return std::string(base_ + (gpa - gpa_base_), len);
  }

 private:
  static size_t align(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }
  uint16_t& u16(size_t off) const { return *reinterpret_cast<uint16_t*>(base_ + off); }

  // Hands out descriptor slots round robin: tests recycle slots only after
  // the device consumed the chains that used them.
  uint16_t take_free() {
    uint16_t id = static_cast<uint16_t>(next_free_ % size_);
    next_free_ = (next_free_ + 1) % size_;
    return id;
  }

  template <class DescAt>
  void fill(const std::vector<uint16_t>& ids, DescAt at, const std::vector<std::string>& readable,
            const std::vector<uint32_t>& writable_sizes) {
    size_t k = 0;
    for (const std::string& s : readable) {
      uint64_t gpa = alloc(s.size());
      if (!s.empty()) std::memcpy(host(gpa), s.data(), s.size());
      at(ids[k]) = VirtqDesc{gpa, static_cast<uint32_t>(s.size()), 0, 0};
      ++k;
    }
    for (uint32_t len : writable_sizes) {
      uint64_t gpa = alloc(len);
      at(ids[k]) = VirtqDesc{gpa, len, kVirtqDescFWrite, 0};
      ++k;
    }
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      at(ids[i]).flags |= kVirtqDescFNext;
      at(ids[i]).next = ids[i + 1];
    }
  }

  char* base_;
  uint64_t gpa_base_;
  size_t mem_size_;
  uint32_t size_;
  size_t desc_off_, avail_off_, used_off_, data_off_;
  size_t bump_;
  uint32_t next_free_ = 0;
};

}  // namespace vfsd::test
