// run_fuse_mount as the daemon runs it: in a child process, stopped with
// SIGTERM (or by an external umount), it unmounts and exits 0.
#include "app/fuse_mount.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "passthrough/passthrough_fs.h"
#include "test_support.h"

namespace vfsd::app {
namespace {

using namespace std::chrono_literals;
using fusedev::testing::is_mounted;
using fusedev::testing::read_file;
using fusedev::testing::TempDir;
using fusedev::testing::write_file;

class RunFuseMountTest : public ::testing::Test {
 protected:
  void SetUp() override { VFSD_SKIP_WITHOUT_FUSE(); }

  FuseMountOptions options() const {
    FuseMountOptions o;
    o.mountpoint = mnt.path();
    o.threads = 2;
    return o;
  }

  // Forks a child that serves `backing` on `mnt` until stopped; waits for
  // the mount to appear.
  void start() {
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      ::umask(0);
      passthrough::PassthroughConfig config;
      config.shared_dir = backing.path();
      auto fs = passthrough::PassthroughFs::create(config);
      if (!fs) ::_exit(2);
      ::_exit(run_fuse_mount(options(), [&](int&) -> fuse::FileSystem* { return fs->get(); }));
    }
    // Bounds against a hang, not a speed requirement: 30 s (ASan, a loaded machine).
    for (int i = 0; i < 3000 && !is_mounted(mnt.path()); ++i) {
      int status = 0;
      if (::waitpid(child_, &status, WNOHANG) == child_) {
        child_ = -1;
        FAIL() << "the daemon exited before mounting (status " << status << ")";
      }
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(is_mounted(mnt.path()));
  }

  // The child's exit status, or -1 if it did not exit within 30 s.
  int wait_exit() {
    for (int i = 0; i < 3000; ++i) {
      int status = 0;
      if (::waitpid(child_, &status, WNOHANG) == child_) {
        child_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
    if (is_mounted(mnt.path())) ::umount2(mnt.path().c_str(), MNT_DETACH);
  }

  TempDir backing{"rfm-backing"};
  TempDir mnt{"rfm-mnt"};
  pid_t child_ = -1;
};

TEST_F(RunFuseMountTest, SigtermUnmountsAndExitsZero) {
  write_file(backing / "f", "served");
  start();
  if (HasFatalFailure()) return;
  EXPECT_EQ(read_file(mnt / "f"), "served");
  ASSERT_EQ(::kill(child_, SIGTERM), 0);
  EXPECT_EQ(wait_exit(), 0);
  EXPECT_FALSE(is_mounted(mnt.path()));
}

TEST_F(RunFuseMountTest, SigintUnmountsEvenWhenBusy) {
  write_file(backing / "f", "served");
  start();
  if (HasFatalFailure()) return;
  UniqueFd fd(::open((mnt / "f").c_str(), O_RDONLY));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::kill(child_, SIGINT), 0);
  EXPECT_EQ(wait_exit(), 0);
  EXPECT_FALSE(is_mounted(mnt.path()));
  char c;
  EXPECT_EQ(::read(fd.get(), &c, 1), -1);
  EXPECT_EQ(errno, ENOTCONN);
}

TEST_F(RunFuseMountTest, ExternalUmountEndsTheDaemon) {
  start();
  if (HasFatalFailure()) return;
  ASSERT_EQ(::umount2(mnt.path().c_str(), 0), 0) << errno_name(errno);
  EXPECT_EQ(wait_exit(), 0);
}

TEST_F(RunFuseMountTest, MissingMountpointFails) {
  passthrough::PassthroughConfig config;
  config.shared_dir = backing.path();
  auto fs = passthrough::PassthroughFs::create(config);
  ASSERT_TRUE(fs);
  FuseMountOptions o = options();
  o.mountpoint = mnt / "does-not-exist";
  bool prepared = false;
  EXPECT_EQ(run_fuse_mount(o,
                           [&](int&) -> fuse::FileSystem* {
                             prepared = true;
                             return fs->get();
                           }),
            1);
  EXPECT_FALSE(prepared) << "nothing is prepared for a mount that failed";
}

}  // namespace
}  // namespace vfsd::app
