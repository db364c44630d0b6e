// open_beneath(), the one way the passthrough opens a name relative to a
// directory, with openat2 and with the openat fallback: one component only,
// never "..", never a symlink or a magic link followed; and the magic-link
// reopen of the daemon's own fds.
#include "passthrough/safe_open.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <string>

#include "support/host_files.h"

namespace vfsd::passthrough {
namespace {

namespace fs = std::filesystem;

TEST(SingleComponentTest, AcceptsOnlyOneNameInTheDirectory) {
  EXPECT_TRUE(is_single_component("a"));
  EXPECT_TRUE(is_single_component("..."));
  EXPECT_TRUE(is_single_component(".hidden"));
  EXPECT_TRUE(is_single_component(std::string(NAME_MAX, 'x')));
  EXPECT_FALSE(is_single_component(std::string(NAME_MAX + 1, 'x')));
  EXPECT_FALSE(is_single_component(""));
  EXPECT_FALSE(is_single_component(".."));
  EXPECT_FALSE(is_single_component("."));
  EXPECT_TRUE(is_single_component(".", /*allow_dot=*/true));
  EXPECT_FALSE(is_single_component("..", /*allow_dot=*/true));
  EXPECT_FALSE(is_single_component("a/b"));
  EXPECT_FALSE(is_single_component("/"));
  EXPECT_FALSE(is_single_component("a/"));
  EXPECT_FALSE(is_single_component(std::string("a\0b", 3)));
}

class OpenBeneathTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    disable_openat2_for_testing(!GetParam());
    char tmpl[] = "/tmp/vfsd-beneath-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    fs::create_directories(top_ + "/dir/sub");
    test::write_host(top_ + "/outside", "outside");
    test::write_host(top_ + "/dir/file", "inside");
    ASSERT_EQ(::symlink((top_ + "/outside").c_str(), (top_ + "/dir/abs").c_str()), 0);
    ASSERT_EQ(::symlink("../outside", (top_ + "/dir/rel").c_str()), 0);
    ASSERT_EQ(::symlink("/proc/self/fd", (top_ + "/dir/proc").c_str()), 0);
    dir_.reset(::open((top_ + "/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir_);
    if (GetParam()) {
      ASSERT_TRUE(open_beneath(dir_.get(), "file", O_PATH));
      if (!openat2_in_use()) GTEST_SKIP() << "this kernel has no openat2";
    }
  }
  void TearDown() override {
    disable_openat2_for_testing(false);
    std::error_code ec;
    fs::remove_all(top_, ec);
  }
  int error_of(const char* name, int flags) {
    auto r = open_beneath(dir_.get(), name, flags);
    return r ? 0 : r.error().value;
  }

  std::string top_;
  UniqueFd dir_;
};

TEST_P(OpenBeneathTest, OpensOneComponent) {
  EXPECT_EQ(openat2_in_use(), GetParam());
  auto file = open_beneath(dir_.get(), "file", O_RDONLY);
  ASSERT_TRUE(file);
  char buf[16] = {};
  EXPECT_EQ(::read(file->get(), buf, sizeof buf), 6);
  EXPECT_STREQ(buf, "inside");
  EXPECT_TRUE(open_beneath(dir_.get(), "sub", O_PATH | O_DIRECTORY));
  EXPECT_TRUE(open_beneath(dir_.get(), ".", O_RDONLY | O_DIRECTORY));
  // Flags open(2) ignores with O_PATH are dropped, not refused.
  EXPECT_TRUE(open_beneath(dir_.get(), "file", O_PATH | O_RDWR | O_TRUNC | O_NONBLOCK));
  EXPECT_EQ(test::read_host(top_ + "/dir/file"), "inside");
  // The result is close-on-exec.
  auto fd = open_beneath(dir_.get(), "file", O_PATH);
  ASSERT_TRUE(fd);
  EXPECT_EQ(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_P(OpenBeneathTest, RefusesWhatIsNotOneComponent) {
  for (const char* name : {"..", "../outside", "sub/..", "sub/../../outside", "/", "/etc/passwd",
                           "/proc/self/fd/0", "a/", ""}) {
    EXPECT_EQ(error_of(name, O_PATH), EINVAL) << name;
  }
  const std::string long_name(NAME_MAX + 1, 'x');
  EXPECT_EQ(error_of(long_name.c_str(), O_PATH), ENAMETOOLONG);
  EXPECT_EQ(error_of(nullptr, O_PATH), EINVAL);
}

TEST_P(OpenBeneathTest, NeverFollowsASymlink) {
  for (const char* name : {"abs", "rel", "proc"}) {
    // O_PATH: the link itself.
    auto link = open_beneath(dir_.get(), name, O_PATH);
    ASSERT_TRUE(link) << name;
    struct stat st {};
    ASSERT_EQ(::fstat(link->get(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode)) << name;
    // Anything else: refused, not followed.
    EXPECT_EQ(error_of(name, O_RDONLY), ELOOP) << name;
    EXPECT_EQ(error_of(name, O_PATH | O_DIRECTORY), ENOTDIR) << name;
  }
  // Creating through a dangling link makes nothing at its target.
  ASSERT_EQ(::symlink((top_ + "/made").c_str(), (top_ + "/dir/dangling").c_str()), 0);
  EXPECT_EQ(error_of("dangling", O_RDWR | O_CREAT), ELOOP);
  EXPECT_EQ(error_of("dangling", O_RDWR | O_CREAT | O_EXCL), EEXIST);
  EXPECT_FALSE(fs::exists(top_ + "/made"));
}

TEST_P(OpenBeneathTest, CreatesAndMakesUnnamedFiles) {
  auto made = open_beneath(dir_.get(), "new", O_RDWR | O_CREAT | O_EXCL, S_IFREG | 0640);
  ASSERT_TRUE(made);
  EXPECT_EQ(test::host_lstat(top_ + "/dir/new").st_mode & 07777, 0640u);
  EXPECT_EQ(error_of("new", O_RDWR | O_CREAT | O_EXCL), EEXIST);
  auto unnamed = open_beneath(dir_.get(), ".", O_RDWR | O_TMPFILE, 0600);
  ASSERT_TRUE(unnamed) << errno_name(unnamed.error().value);
  struct stat st {};
  ASSERT_EQ(::fstat(unnamed->get(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_nlink, 0u);
}

TEST_P(OpenBeneathTest, ParentAndOwnFdReopen) {
  UniqueFd sub(::open((top_ + "/dir/sub").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto parent = open_parent(sub.get());
  ASSERT_TRUE(parent);
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(parent->get(), &a), 0);
  ASSERT_EQ(::fstat(dir_.get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);

  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto path = open_beneath(dir_.get(), "file", O_PATH);
  ASSERT_TRUE(path);
  EXPECT_EQ(std::string(ProcFdName(*path).c_str()), std::to_string(path->get()));
  // The magic link of our own O_PATH fd opens that very inode for I/O; the
  // O_NOFOLLOW and O_CREAT a caller passes are dropped (the link must be
  // followed, nothing is created).
  auto real = reopen_own_fd(proc.get(), *path, O_RDONLY | O_NOFOLLOW | O_CREAT);
  ASSERT_TRUE(real);
  ASSERT_EQ(::fstat(real->get(), &a), 0);
  ASSERT_EQ(::fstat(path->get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(::fcntl(real->get(), F_GETFL) & O_PATH, 0);
  EXPECT_EQ(reopen_own_fd(proc.get(), UniqueFd(), O_RDONLY).error().value, EBADF);
}

INSTANTIATE_TEST_SUITE_P(Kernel, OpenBeneathTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Openat2" : "Openat"; });

}  // namespace
}  // namespace vfsd::passthrough
