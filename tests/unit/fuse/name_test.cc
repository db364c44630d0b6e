#include "fuse/name.h"

#include <gtest/gtest.h>

#include <string>

namespace vfsd::fuse {
namespace {

using namespace std::string_literals;

TEST(NameTest, ParseAcceptsNameEndingInItsOnlyNul) {
  auto n = Name::parse("hello\0"s);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->view(), "hello");
  EXPECT_STREQ(n->c_str(), "hello");
}

TEST(NameTest, ParseRejectsMissingNul) {
  EXPECT_FALSE(Name::parse("hello"s));
}

TEST(NameTest, ParseRejectsBytesAfterTheNul) {
  EXPECT_FALSE(Name::parse("a\0b\0"s));
  EXPECT_FALSE(Name::parse("a\0\0"s));
}

TEST(NameTest, ParseRejectsEmptyInputAndEmptyName) {
  EXPECT_FALSE(Name::parse(""s));
  EXPECT_FALSE(Name::parse("\0"s));
}

TEST(NameTest, RejectsSlash) {
  EXPECT_FALSE(Name::parse("a/b\0"s));
  EXPECT_FALSE(Name::parse("/\0"s));
  EXPECT_FALSE(Name::from("a/"));
}

TEST(NameTest, LengthLimitIsNameMax) {
  EXPECT_TRUE(Name::from(std::string(255, 'x')));
  EXPECT_FALSE(Name::from(std::string(256, 'x')));
  EXPECT_TRUE(Name::parse(std::string(255, 'x') + '\0'));
  EXPECT_FALSE(Name::parse(std::string(256, 'x') + '\0'));
}

TEST(NameTest, FromRejectsEmbeddedNulAndEmpty) {
  EXPECT_FALSE(Name::from("a\0b"s));
  EXPECT_FALSE(Name::from("ab\0"s));
  EXPECT_FALSE(Name::from("\0ab"s));
  EXPECT_FALSE(Name::from(""));
}

TEST(NameTest, DotAndDotDotAreNamesButFlagged) {
  auto dot = Name::from(".");
  auto dotdot = Name::from("..");
  auto dots = Name::from("...");
  ASSERT_TRUE(dot && dotdot && dots);
  EXPECT_TRUE(dot->is_dot());
  EXPECT_TRUE(dotdot->is_dotdot());
  EXPECT_TRUE(dot->is_dot_or_dotdot() && dotdot->is_dot_or_dotdot());
  EXPECT_FALSE(dots->is_dot_or_dotdot());
}

}  // namespace
}  // namespace vfsd::fuse
