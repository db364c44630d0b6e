#include "virtio/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <vector>

#include "util/unique_fd.h"

namespace vfsd::virtio {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

GuestMemory make(std::vector<std::shared_ptr<MappedRegion>> regions) {
  auto mem = GuestMemory::create(std::move(regions));
  EXPECT_TRUE(mem.has_value());
  return mem ? std::move(*mem) : GuestMemory();
}

TEST(GuestMemory, InRangeTranslatesAndChecksWholeRange) {
  std::vector<char> buf(4096);
  GuestMemory mem = make({MappedRegion::wrap(buf.data(), 0x10000, buf.size(), 0x7000000)});
  EXPECT_EQ(mem.gpa_to_host(0x10000, 4096), buf.data());
  EXPECT_EQ(mem.gpa_to_host(0x10010, 16), buf.data() + 0x10);
  EXPECT_EQ(mem.gpa_to_host(0x10fff, 1), buf.data() + 4095);
  EXPECT_EQ(mem.gpa_to_host(0x10fff, 2), nullptr);  // last byte outside
  EXPECT_EQ(mem.gpa_to_host(0x11000, 1), nullptr);  // just past the end
  EXPECT_EQ(mem.gpa_to_host(0xffff, 1), nullptr);   // just before the start
  EXPECT_EQ(mem.gpa_to_host(0x10000, 0), nullptr);  // documented: no pointer for len 0
  IovecList iov;
  ASSERT_TRUE(mem.gpa_to_iovecs(0x10100, 0x200, iov));
  ASSERT_EQ(iov.size(), 1u);
  EXPECT_EQ(iov[0].iov_base, buf.data() + 0x100);
  EXPECT_EQ(iov[0].iov_len, 0x200u);
}

TEST(GuestMemory, HostToGpaInvertsTheTranslation) {
  std::vector<char> low(4096), high(8192);
  GuestMemory mem = make({MappedRegion::wrap(low.data(), 0x10000, low.size(), 0x7000000),
                          MappedRegion::wrap(high.data(), 0x40000, high.size(), 0x7100000)});
  EXPECT_EQ(mem.host_to_gpa(low.data()), 0x10000u);
  EXPECT_EQ(mem.host_to_gpa(low.data() + 4095), 0x10fffu);
  EXPECT_EQ(mem.host_to_gpa(high.data() + 0x1234), 0x41234u);
  EXPECT_EQ(mem.host_to_gpa(high.data() + 8191), 0x41fffu);
  // One past a region's end belongs to no region.
  EXPECT_EQ(mem.host_to_gpa(high.data() + 8192), std::nullopt);
  char elsewhere = 0;
  EXPECT_EQ(mem.host_to_gpa(&elsewhere), std::nullopt);
}

TEST(GuestMemory, RangeStraddlingAdjacentRegionsSplitsIntoIovecs) {
  std::vector<char> a(4096), b(8192);
  // Listed out of order on purpose: create() sorts.
  GuestMemory mem = make({MappedRegion::wrap(b.data(), 0x21000, b.size(), 0x9000000),
                          MappedRegion::wrap(a.data(), 0x20000, a.size(), 0x8000000)});
  IovecList iov;
  ASSERT_TRUE(mem.gpa_to_iovecs(0x20f00, 0x300, iov));
  ASSERT_EQ(iov.size(), 2u);
  EXPECT_EQ(iov[0].iov_base, a.data() + 0xf00);
  EXPECT_EQ(iov[0].iov_len, 0x100u);
  EXPECT_EQ(iov[1].iov_base, b.data());
  EXPECT_EQ(iov[1].iov_len, 0x200u);
  // A single host pointer cannot cover two regions.
  EXPECT_EQ(mem.gpa_to_host(0x20f00, 0x300), nullptr);
}

TEST(GuestMemory, RangePartlyOutsideIsRefusedAndOutputUntouched) {
  std::vector<char> a(4096), b(4096);
  // A hole between the two regions.
  GuestMemory mem = make({MappedRegion::wrap(a.data(), 0x20000, a.size(), 0x8000000),
                          MappedRegion::wrap(b.data(), 0x22000, b.size(), 0x9000000)});
  IovecList iov{iovec{nullptr, 7}};
  EXPECT_FALSE(mem.gpa_to_iovecs(0x20f00, 0x200, iov));  // runs into the hole
  EXPECT_FALSE(mem.gpa_to_iovecs(0x22f00, 0x101, iov));  // one byte past the end
  EXPECT_FALSE(mem.gpa_to_iovecs(0x1ff00, 0x200, iov));  // starts before
  EXPECT_FALSE(mem.gpa_to_iovecs(0x21000, 1, iov));      // inside the hole
  ASSERT_EQ(iov.size(), 1u);
  EXPECT_EQ(iov[0].iov_len, 7u);
  EXPECT_TRUE(mem.gpa_to_iovecs(0x22f00, 0x100, iov));
  EXPECT_EQ(iov.size(), 2u);
}

TEST(GuestMemory, RangesWrappingAt2Pow64AreRefused) {
  std::vector<char> low(4096), high(4096);
  const uint64_t high_gpa = kMax - 8191;  // region [2^64-8192, 2^64-4096)
  GuestMemory mem = make({MappedRegion::wrap(low.data(), 0, low.size(), 0x8000000),
                          MappedRegion::wrap(high.data(), high_gpa, high.size(), 0x9000000)});
  IovecList iov;
  // gpa + len wraps to a small value that lies inside the low region.
  EXPECT_FALSE(mem.gpa_to_iovecs(high_gpa + 16, kMax - high_gpa - 16 + 1 + 100, iov));
  EXPECT_FALSE(mem.gpa_to_iovecs(kMax, 2, iov));
  EXPECT_FALSE(mem.gpa_to_iovecs(16, kMax, iov));
  EXPECT_TRUE(iov.empty());
  EXPECT_EQ(mem.gpa_to_host(high_gpa + 16, kMax), nullptr);
  EXPECT_EQ(mem.gpa_to_host(16, kMax - 8), nullptr);
  EXPECT_EQ(mem.uva_to_host(0x9000000 + 16, kMax - 0x9000000), nullptr);
  EXPECT_EQ(mem.gpa_to_host(high_gpa + 4095, 1), high.data() + 4095);
}

TEST(GuestMemory, ZeroLengthRangeYieldsNoIovec) {
  std::vector<char> a(4096);
  GuestMemory mem = make({MappedRegion::wrap(a.data(), 0x20000, a.size(), 0x8000000)});
  IovecList iov;
  EXPECT_TRUE(mem.gpa_to_iovecs(0x20000, 0, iov));
  EXPECT_TRUE(mem.gpa_to_iovecs(0xdead0000, 0, iov));  // touches nothing, so no check
  EXPECT_TRUE(iov.empty());
}

TEST(GuestMemory, CreateRejectsOverlapsOverflowAndEmptyRegions) {
  std::vector<char> a(8192), b(8192);
  // Guest-physical overlap by one page.
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 8192, 0x100000),
                                    MappedRegion::wrap(b.data(), 0x11000, 8192, 0x200000)}));
  // User-address overlap, distinct guest-physical ranges.
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 8192, 0x100000),
                                    MappedRegion::wrap(b.data(), 0x40000, 8192, 0x101000)}));
  // Same start.
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 8192, 0x100000),
                                    MappedRegion::wrap(b.data(), 0x10000, 8192, 0x200000)}));
  // A region wrapping past 2^64, in gpa or uva.
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), kMax - 100, 8192, 0x100000)}));
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 8192, kMax - 100)}));
  EXPECT_FALSE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 0, 0x100000)}));
  EXPECT_FALSE(GuestMemory::create({nullptr}));
  // Adjacent (touching) regions are fine.
  EXPECT_TRUE(GuestMemory::create({MappedRegion::wrap(a.data(), 0x10000, 8192, 0x100000),
                                   MappedRegion::wrap(b.data(), 0x12000, 8192, 0x102000)}));
  EXPECT_TRUE(GuestMemory::create({}));
}

TEST(GuestMemory, UserAndGuestPhysicalLookupsAreDistinct) {
  std::vector<char> a(4096);
  GuestMemory mem = make({MappedRegion::wrap(a.data(), 0x10000, a.size(), 0x7f0000000000)});
  EXPECT_EQ(mem.gpa_to_host(0x10010, 8), a.data() + 0x10);
  EXPECT_EQ(mem.uva_to_host(0x7f0000000010, 8), a.data() + 0x10);
  EXPECT_EQ(mem.gpa_to_host(0x7f0000000010, 8), nullptr);
  EXPECT_EQ(mem.uva_to_host(0x10010, 8), nullptr);
  EXPECT_EQ(mem.uva_to_host(0x7f0000000ff8, 9), nullptr);
}

TEST(GuestMemory, MapsMemfdSharedAtAlignedAndUnalignedOffsets) {
  const long page = sysconf(_SC_PAGESIZE);
  UniqueFd fd(memfd_create("vfsd-guest-mem-test", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 4 * page), 0);
  const char msg[] = "written through the fd";
  ASSERT_EQ(pwrite(fd.get(), msg, sizeof msg, page + 100), static_cast<ssize_t>(sizeof msg));

  // Offset one page: the data at file offset page+100 is at gpa +100.
  auto r1 = MappedRegion::map(fd.get(), 0x100000, 2 * page, 0x5000000, page);
  ASSERT_TRUE(r1.has_value());
  // Unaligned offset page+100: the same data starts exactly at the region.
  auto r2 = MappedRegion::map(fd.get(), 0x200000, page, 0x6000000, page + 100);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ((*r2)->mmap_offset(), static_cast<uint64_t>(page + 100));
  fd.reset();  // the mappings outlive the fd

  auto mem = GuestMemory::create({*r1, *r2});
  ASSERT_TRUE(mem.has_value());
  auto* p1 = static_cast<char*>(mem->gpa_to_host(0x100000 + 100, sizeof msg));
  auto* p2 = static_cast<char*>(mem->gpa_to_host(0x200000, sizeof msg));
  ASSERT_NE(p1, nullptr);
  ASSERT_NE(p2, nullptr);
  EXPECT_STREQ(p1, msg);
  EXPECT_STREQ(p2, msg);
  // MAP_SHARED: a store through one mapping is seen through the other.
  p1[0] = 'W';
  EXPECT_EQ(p2[0], 'W');
  // The unaligned region ends where the file page ends: page bytes from +100.
  EXPECT_NE(mem->gpa_to_host(0x200000 + page - 1, 1), nullptr);
  EXPECT_EQ(mem->gpa_to_host(0x200000 + page, 1), nullptr);
}

TEST(GuestMemory, MapRejectsBadArguments) {
  EXPECT_FALSE(MappedRegion::map(-1, 0, 4096, 0, 0));
  UniqueFd fd(memfd_create("vfsd-guest-mem-test", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_FALSE(MappedRegion::map(fd.get(), 0, 0, 0, 0));
  EXPECT_FALSE(MappedRegion::map(fd.get(), kMax - 10, 4096, 0, 0));
  EXPECT_FALSE(MappedRegion::map(fd.get(), 0, 4096, 0, kMax - 10));
}

// A region that runs past the end of its file would map, then SIGBUS on the
// first access to the missing part: refused up front.
TEST(GuestMemory, RegionsMustLieWithinTheirFile) {
  const long page = sysconf(_SC_PAGESIZE);
  UniqueFd fd(memfd_create("vfsd-guest-mem-test", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 4 * page), 0);
  EXPECT_TRUE(MappedRegion::map(fd.get(), 0, 4 * page, 0, 0));
  EXPECT_TRUE(MappedRegion::map(fd.get(), 0, 2 * page, 0, 2 * page));
  EXPECT_TRUE(MappedRegion::map(fd.get(), 0, page - 1, 0, 3 * page + 1));
  auto past = MappedRegion::map(fd.get(), 0, 4 * page + 1, 0, 0);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().value, EINVAL);
  EXPECT_FALSE(MappedRegion::map(fd.get(), 0, 2 * page, 0, 3 * page));
  EXPECT_FALSE(MappedRegion::map(fd.get(), 0, page, 0, 4 * page));
  EXPECT_FALSE(MappedRegion::map(fd.get(), 0, page, 0, 5 * page));
  // Not a file at all.
  UniqueFd pipe_ends[2];
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pipe_ends[0].reset(p[0]);
  pipe_ends[1].reset(p[1]);
  EXPECT_FALSE(MappedRegion::map(p[0], 0, page, 0, 0));
}

}  // namespace
}  // namespace vfsd::virtio
