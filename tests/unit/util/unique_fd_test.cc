#include "util/unique_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>

namespace vfsd {
namespace {

bool is_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

TEST(UniqueFd, ClosesOnDestructionAndMoveTransfersOwnership) {
  int raw = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(UniqueFd, ReleaseDoesNotClose) {
  int raw = open("/dev/null", O_RDONLY | O_CLOEXEC);
  UniqueFd a(raw);
  EXPECT_EQ(a.release(), raw);
  EXPECT_TRUE(is_open(raw));
  close(raw);
}

}  // namespace
}  // namespace vfsd
