#include "vhost_user/dirty_log.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

#include "util/unique_fd.h"

namespace vfsd::vhost_user {
namespace {

std::vector<uint64_t> marked(const std::vector<uint8_t>& bitmap) {
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < bitmap.size() * 8; ++p)
    if ((bitmap[p / 8] >> (p % 8)) & 1) pages.push_back(p);
  return pages;
}

TEST(DirtyLog, MarksEveryPageARangeTouches) {
  std::vector<uint8_t> bitmap(4);  // 32 pages
  auto log = DirtyLog::wrap(bitmap.data(), bitmap.size());
  log->mark(0x1fff, 2);  // the last byte of page 1 and the first of page 2
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{1, 2}));
  log->mark(0x5000, 0x1000);  // exactly page 5
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{1, 2, 5}));
  log->mark(0x9000, 0);  // nothing written, nothing marked
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{1, 2, 5}));
}

TEST(DirtyLog, PagesPastTheBitmapAndWrappingRangesAreIgnoredSafely) {
  std::vector<uint8_t> bitmap(2, 0);  // 16 pages
  auto log = DirtyLog::wrap(bitmap.data(), bitmap.size());
  log->mark(15 * 0x1000, 0x3000);  // page 15, then past the end
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{15}));
  log->mark(UINT64_MAX - 10, 100);  // wraps 2^64: far past the end
  log->mark(1ull << 40, 0x1000);
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{15}));
}

TEST(DirtyLog, MarkWrittenNamesTheGuestPagesOfTheBytesWritten) {
  std::vector<char> low(0x2000), high(0x3000);
  auto memory = virtio::GuestMemory::create(
      {virtio::MappedRegion::wrap(low.data(), 0x10000, low.size(), 0x7000000),
       virtio::MappedRegion::wrap(high.data(), 0x40000, high.size(), 0x7100000)});
  ASSERT_TRUE(memory.has_value());
  std::vector<uint8_t> bitmap(16, 0);  // 128 pages: up to 0x80000
  auto log = DirtyLog::wrap(bitmap.data(), bitmap.size());
  // A reply of 0x1100 bytes into two segments: 0x100 at the end of low's
  // first page, then the rest at the start of high.
  IovecList writable{{low.data() + 0xf00, 0x100}, {high.data(), 0x2000}};
  log->mark_written(*memory, writable, 0x1100);
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{0x10, 0x40})) << "only what was written";
  std::fill(bitmap.begin(), bitmap.end(), 0);
  log->mark_written(*memory, writable, 0x2100);
  EXPECT_EQ(marked(bitmap), (std::vector<uint64_t>{0x10, 0x40, 0x41}));
}

TEST(DirtyLog, MapRefusesARangeTheFdDoesNotHold) {
  UniqueFd fd(::memfd_create("log", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), 8192), 0);
  EXPECT_FALSE(DirtyLog::map(fd.get(), 0, 0).has_value());
  EXPECT_FALSE(DirtyLog::map(fd.get(), 8192, 1).has_value()) << "past the end would SIGBUS";
  EXPECT_FALSE(DirtyLog::map(fd.get(), 16, UINT64_MAX - 8).has_value());
  // An unaligned offset inside the file works: marks land at that offset.
  auto log = DirtyLog::map(fd.get(), 100, 4097);
  ASSERT_TRUE(log.has_value());
  (*log)->mark(0x3000, 1);  // page 3: bit 3 of the log's first byte
  uint8_t byte = 0;
  ASSERT_EQ(::pread(fd.get(), &byte, 1, 4097), 1);
  EXPECT_EQ(byte, 1u << 3);
}

TEST(DirtyLog, SnapshotGivesTheLogOnlyWhileLoggingIsOn) {
  std::vector<uint8_t> bitmap(1);
  DirtyLogSnapshot snapshot;
  snapshot.set_log(DirtyLog::wrap(bitmap.data(), bitmap.size()));
  EXPECT_EQ(snapshot.get(), nullptr) << "LOG_ALL not acknowledged";
  snapshot.set_enabled(true);
  EXPECT_NE(snapshot.get(), nullptr);
  snapshot.set_log(nullptr);
  EXPECT_EQ(snapshot.get(), nullptr);
}

}  // namespace
}  // namespace vfsd::vhost_user
