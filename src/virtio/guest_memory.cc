#include "virtio/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace vfsd::virtio {

namespace {

// True if [start, start+len) wraps past 2^64.
bool overflows(uint64_t start, uint64_t len) {
  return len > std::numeric_limits<uint64_t>::max() - start;
}

// Host pointer of [addr, addr+len) when it lies inside `r`, where `base` is
// the region's start in the address space being looked up (gpa or uva).
void* within(const MappedRegion& r, uint64_t base, uint64_t addr, uint64_t len) {
  if (addr < base) return nullptr;
  uint64_t off = addr - base;
  if (off >= r.size() || len > r.size() - off) return nullptr;
  return r.host_base() + off;
}

}  // namespace

MappedRegion::MappedRegion(char* host, size_t mapped_len, uint64_t gpa, uint64_t size, uint64_t uva,
                           uint64_t mmap_offset, bool owned)
    : host_(host),
      mapped_len_(mapped_len),
      gpa_(gpa),
      size_(size),
      uva_(uva),
      mmap_offset_(mmap_offset),
      owned_(owned) {}

Result<std::shared_ptr<MappedRegion>> MappedRegion::map(int fd, uint64_t guest_phys_addr,
                                                        uint64_t size, uint64_t user_addr,
                                                        uint64_t mmap_offset) {
  if (fd < 0 || size == 0 || overflows(guest_phys_addr, size) || overflows(user_addr, size)) {
    return fail(EINVAL);
  }
  // mmap wants a page-aligned file offset: map from the aligned-down offset
  // and skip the difference (QEMU's offsets are normally 0, but the protocol
  // does not promise alignment).
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t aligned = mmap_offset & ~(page - 1);
  const uint64_t delta = mmap_offset - aligned;
  if (overflows(size, delta) ||
      aligned > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) ||
      size + delta > std::numeric_limits<size_t>::max()) {
    return fail(EINVAL);
  }
  // Guest RAM is a regular file (memfd, hugetlbfs, a file backend). A
  // mapping that runs past its end maps fine and then kills us with SIGBUS
  // on the first access to the missing part: refuse it now.
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno();
  if (!S_ISREG(st.st_mode)) return fail(EINVAL);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (mmap_offset > file_size || size > file_size - mmap_offset) return fail(EINVAL);
  const size_t mapped_len = static_cast<size_t>(size + delta);
  void* p = ::mmap(nullptr, mapped_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                   static_cast<off_t>(aligned));
  if (p == MAP_FAILED) return fail_errno();
  return std::shared_ptr<MappedRegion>(new MappedRegion(static_cast<char*>(p) + delta, mapped_len,
                                                        guest_phys_addr, size, user_addr,
                                                        mmap_offset, /*owned=*/true));
}

std::shared_ptr<MappedRegion> MappedRegion::wrap(void* host, uint64_t guest_phys_addr,
                                                 uint64_t size, uint64_t user_addr) {
  return std::shared_ptr<MappedRegion>(new MappedRegion(static_cast<char*>(host), size,
                                                        guest_phys_addr, size, user_addr, 0,
                                                        /*owned=*/false));
}

MappedRegion::~MappedRegion() {
  if (!owned_) return;
  // The mapping starts `mapped_len_ - size_` bytes before host_ (the
  // alignment delta of map()).
  ::munmap(host_ - (mapped_len_ - size_), mapped_len_);
}

Result<GuestMemory> GuestMemory::create(std::vector<std::shared_ptr<MappedRegion>> regions) {
  for (const auto& r : regions) {
    if (!r || r->size() == 0 || overflows(r->guest_phys_addr(), r->size()) ||
        overflows(r->user_addr(), r->size())) {
      return fail(EINVAL);
    }
  }
  // Sorted, two neighbours overlap iff the first ends after the second starts.
  auto overlapping = [&regions](auto start_of) {
    std::vector<const MappedRegion*> v;
    v.reserve(regions.size());
    for (const auto& r : regions) v.push_back(r.get());
    std::sort(v.begin(), v.end(), [&](auto* a, auto* b) { return start_of(*a) < start_of(*b); });
    for (size_t i = 1; i < v.size(); ++i) {
      if (start_of(*v[i - 1]) + v[i - 1]->size() > start_of(*v[i])) return true;
    }
    return false;
  };
  if (overlapping([](const MappedRegion& r) { return r.guest_phys_addr(); }) ||
      overlapping([](const MappedRegion& r) { return r.user_addr(); })) {
    return fail(EINVAL);
  }
  std::sort(regions.begin(), regions.end(), [](const auto& a, const auto& b) {
    return a->guest_phys_addr() < b->guest_phys_addr();
  });
  return GuestMemory(std::move(regions));
}

const MappedRegion* GuestMemory::region_of_gpa(uint64_t gpa) const {
  // The last region starting at or below gpa is the only candidate.
  auto it = std::upper_bound(regions_.begin(), regions_.end(), gpa,
                             [](uint64_t a, const auto& r) { return a < r->guest_phys_addr(); });
  if (it == regions_.begin()) return nullptr;
  const MappedRegion& r = **std::prev(it);
  return gpa - r.guest_phys_addr() < r.size() ? &r : nullptr;
}

void* GuestMemory::gpa_to_host(uint64_t gpa, uint64_t len) const {
  if (len == 0) return nullptr;
  const MappedRegion* r = region_of_gpa(gpa);
  return r ? within(*r, r->guest_phys_addr(), gpa, len) : nullptr;
}

void* GuestMemory::uva_to_host(uint64_t uva, uint64_t len) const {
  if (len == 0) return nullptr;
  // Only ring setup translates user addresses: a linear scan is enough.
  for (const auto& r : regions_) {
    if (void* p = within(*r, r->user_addr(), uva, len)) return p;
  }
  return nullptr;
}

bool GuestMemory::gpa_to_iovecs(uint64_t gpa, uint64_t len, IovecList& out) const {
  // A zero-length buffer touches no byte: nothing to translate or check.
  if (len == 0) return true;
  if (overflows(gpa, len)) return false;
  const size_t first = out.size();
  uint64_t cur = gpa;
  uint64_t left = len;
  while (left > 0) {
    const MappedRegion* r = region_of_gpa(cur);
    if (r == nullptr) {
      out.resize(first);
      return false;
    }
    const uint64_t off = cur - r->guest_phys_addr();
    const uint64_t take = std::min(left, r->size() - off);
    out.push_back(iovec{r->host_base() + off, static_cast<size_t>(take)});
    cur += take;
    left -= take;
  }
  return true;
}

std::optional<uint64_t> GuestMemory::host_to_gpa(const void* host) const {
  const auto address = reinterpret_cast<uintptr_t>(host);
  for (const auto& r : regions_) {
    const auto base = reinterpret_cast<uintptr_t>(r->host_base());
    if (address >= base && address - base < r->size())
      return r->guest_phys_addr() + (address - base);
  }
  return std::nullopt;
}

}  // namespace vfsd::virtio
