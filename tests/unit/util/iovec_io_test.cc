#include "util/iovec_io.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace vfsd {
namespace {

TEST(IovecReader, ReadsAcrossSegmentsAndRefusesOverrun) {
  char a[] = "abc", b[] = "defgh";
  IovecReader r({{a, 3}, {b, 5}});
  EXPECT_EQ(r.remaining(), 8u);
  char out[6] = {};
  ASSERT_TRUE(r.read(out, 5));
  EXPECT_EQ(std::string(out, 5), "abcde");
  EXPECT_FALSE(r.read(out, 4));  // only 3 left: nothing consumed
  EXPECT_EQ(r.remaining(), 3u);
  ASSERT_TRUE(r.read(out, 3));
  EXPECT_EQ(std::string(out, 3), "fgh");
  EXPECT_EQ(r.consumed(), 8u);
}

TEST(IovecReader, IovecsAndAdvanceSkipEmptySegments) {
  char a[4] = {}, b[4] = {};
  IovecReader r({{a, 4}, {nullptr, 0}, {b, 4}});
  ASSERT_TRUE(r.skip(3));
  auto v = r.iovecs(3);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].iov_base, a + 3);
  EXPECT_EQ(v[0].iov_len, 1u);
  EXPECT_EQ(v[1].iov_base, b);
  EXPECT_EQ(v[1].iov_len, 2u);
  r.advance(100);  // clamped
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_FALSE(r.skip(1));
}

TEST(IovecWriter, SplitKeepsHeaderAndReturnsRest) {
  char a[4] = {}, b[8] = {};
  IovecWriter w({{a, 4}, {b, 8}});
  IovecWriter rest = w.split_at(6);
  EXPECT_EQ(w.remaining(), 6u);
  EXPECT_EQ(rest.remaining(), 6u);
  ASSERT_TRUE(rest.write("XYZ", 3));
  ASSERT_TRUE(w.write("012345", 6));
  EXPECT_FALSE(w.write("!", 1));
  EXPECT_EQ(std::string(a, 4), "0123");
  EXPECT_EQ(std::string(b, 5), "45XYZ");
}

TEST(IovecReader, CopiesAcrossEmptyAndManySegments) {
  // More segments than the list keeps inline, empty ones among them (at the
  // start, in the middle, at the end): every byte lands in order.
  char data[24];
  for (int i = 0; i < 24; ++i) data[i] = static_cast<char>('a' + i);
  IovecList list{{nullptr, 0}};
  for (int i = 0; i < 24; i += 2) {
    list.push_back({data + i, 2});
    if (i == 10) list.push_back({nullptr, 0});
  }
  list.push_back({nullptr, 0});
  IovecReader r(list);
  char out[24] = {};
  ASSERT_TRUE(r.read(out, 5));
  ASSERT_TRUE(r.read(out + 5, 19));
  EXPECT_EQ(std::string(out, 24), std::string(data, 24));
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_EQ(r.consumed(), 24u);

  char back[24] = {};
  IovecList dst;
  for (int i = 0; i < 24; i += 3) {
    dst.push_back({back + i, 3});
    dst.push_back({nullptr, 0});
  }
  IovecWriter w(dst);
  ASSERT_TRUE(w.write(data, 7));
  ASSERT_TRUE(w.write(data + 7, 17));
  EXPECT_FALSE(w.write(data, 1));
  EXPECT_EQ(std::string(back, 24), std::string(data, 24));
}

}  // namespace
}  // namespace vfsd
