#include "fuse/wire.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

namespace vfsd::fuse::wire {
namespace {

using namespace std::chrono_literals;

TEST(WireTest, SplitTimeout) {
  uint64_t sec = 9;
  uint32_t nsec = 9;
  split_timeout(1500ms, sec, nsec);
  EXPECT_EQ(sec, 1u);
  EXPECT_EQ(nsec, 500'000'000u);
  split_timeout(-5s, sec, nsec);
  EXPECT_EQ(sec, 0u);
  EXPECT_EQ(nsec, 0u);
  split_timeout(std::chrono::nanoseconds(86400'000'000'007), sec, nsec);
  EXPECT_EQ(sec, 86400u);
  EXPECT_EQ(nsec, 7u);
}

TEST(WireTest, DevEncodingMatchesKernelNewEncodeDev) {
  EXPECT_EQ(encode_dev(makedev(8, 1)), 0x801u);
  // Minor above 255: its high bits move to bits 20..31.
  EXPECT_EQ(encode_dev(makedev(136, 0x1234)), 0x34u | (136u << 8) | (0x12u << 20));
  for (dev_t d : {makedev(0, 0), makedev(1, 3), makedev(4095, 0xfffff), makedev(259, 70000)}) {
    EXPECT_EQ(decode_dev(encode_dev(d)), d);
  }
}

TEST(WireTest, AttrCarriesEveryField) {
  struct stat st {};
  st.st_ino = 42;
  st.st_size = 1 << 20;
  st.st_blocks = 2048;
  st.st_atim = {100, 1};
  st.st_mtim = {200, 2};
  st.st_ctim = {-300, 3};
  st.st_mode = S_IFCHR | 0640;
  st.st_nlink = 3;
  st.st_uid = 1000;
  st.st_gid = 1001;
  st.st_rdev = makedev(5, 1);
  st.st_blksize = 4096;
  fuse_attr a = to_attr(st, FUSE_ATTR_SUBMOUNT);
  EXPECT_EQ(a.ino, 42u);
  EXPECT_EQ(a.size, 1u << 20);
  EXPECT_EQ(a.blocks, 2048u);
  EXPECT_EQ(a.atime, 100u);
  EXPECT_EQ(a.mtime, 200u);
  EXPECT_EQ(static_cast<int64_t>(a.ctime), -300);
  EXPECT_EQ(a.atimensec, 1u);
  EXPECT_EQ(a.mtimensec, 2u);
  EXPECT_EQ(a.ctimensec, 3u);
  EXPECT_EQ(a.mode, static_cast<uint32_t>(S_IFCHR | 0640));
  EXPECT_EQ(a.nlink, 3u);
  EXPECT_EQ(a.uid, 1000u);
  EXPECT_EQ(a.gid, 1001u);
  EXPECT_EQ(a.rdev, 0x501u);
  EXPECT_EQ(a.blksize, 4096u);
  EXPECT_EQ(a.flags, static_cast<uint32_t>(FUSE_ATTR_SUBMOUNT));
}

TEST(WireTest, StatfsConversion) {
  struct statvfs st {};
  st.f_blocks = 1000;
  st.f_bfree = 500;
  st.f_bavail = 400;
  st.f_files = 100;
  st.f_ffree = 50;
  st.f_bsize = 4096;
  st.f_frsize = 512;
  st.f_namemax = 255;
  fuse_kstatfs k = to_kstatfs(st);
  EXPECT_EQ(k.blocks, 1000u);
  EXPECT_EQ(k.bfree, 500u);
  EXPECT_EQ(k.bavail, 400u);
  EXPECT_EQ(k.files, 100u);
  EXPECT_EQ(k.ffree, 50u);
  EXPECT_EQ(k.bsize, 4096u);
  EXPECT_EQ(k.frsize, 512u);
  EXPECT_EQ(k.namelen, 255u);
}

}  // namespace
}  // namespace vfsd::fuse::wire
