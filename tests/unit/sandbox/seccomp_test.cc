// The filter in a child process: what it lets through and what it stops.
#include "sandbox/seccomp.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <thread>

#include "util/asymmetric_fence.h"

namespace vfsd::sandbox {
namespace {

// Runs `body` in a child under the filter; its wait status.
int under_filter(SeccompAction action, const std::function<int()>& body) {
  pid_t child = ::fork();
  if (child == 0) {
    if (!enable_seccomp(SeccompOptions{.action = action})) _exit(100);
    _exit(body());
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return status;
}

bool killed_by_sigsys(int status) {
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS;
}

TEST(Seccomp, WhatTheDaemonDoesRuns) {
  int status = under_filter(SeccompAction::kKill, [] {
    // Files, threads, eventfd-style waiting, credentials.
    int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    char buf[64];
    if (::read(fd, buf, sizeof buf) <= 0) return 2;
    int flags = 0;
    // An allowed ioctl (the file may not support it: any answer but death).
    (void)::ioctl(fd, FS_IOC_GETFLAGS, &flags);
    ::close(fd);
    bool ran = false;
    std::thread([&] { ran = true; }).join();
    if (!ran) return 3;
    if (::unshare(CLONE_FS) != 0) return 4;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Seccomp, TheSessionResetBarrierRuns) {
  // A session reset in the confined child fences with membarrier(2); the
  // gate chose its cheap request path on the promise that this works.
  int status = under_filter(SeccompAction::kKill, [] {
    const AsymmetricFence fence;
    if (fence.mode() != AsymmetricFence::Mode::kAsymmetric) return 1;
    return fence.heavy() ? 0 : 2;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Seccomp, EverythingElseKills) {
  // A new process, a network socket, a namespace, a terminal ioctl, mount.
  const std::function<int()> forbidden[] = {
      [] { return static_cast<int>(::syscall(SYS_fork)); },
      [] { return ::socket(AF_INET, SOCK_STREAM, 0); },
      [] { return ::unshare(CLONE_NEWNS); },
      [] {
        termios t{};
        return ::ioctl(STDERR_FILENO, TCGETS, &t);
      },
      [] { return static_cast<int>(::syscall(SYS_mount, "none", "/mnt", "tmpfs", 0, nullptr)); },
      [] { return static_cast<int>(::syscall(SYS_ptrace, 0, 0, 0, 0)); },
  };
  // A sanitizer build lets its runtime fork (LeakSanitizer's tracer) and
  // ptrace: there only the others are checked.
#if defined(__SANITIZE_ADDRESS__)
  const std::set<size_t> runtime_needs = {0, 5};
#else
  const std::set<size_t> runtime_needs;
#endif
  for (size_t i = 0; i < std::size(forbidden); ++i) {
    if (runtime_needs.count(i) != 0) continue;
    EXPECT_TRUE(killed_by_sigsys(under_filter(SeccompAction::kKill, forbidden[i]))) << i;
  }
}

TEST(Seccomp, Clone3AnswersEnosysSoThatGlibcUsesClone) {
  int status = under_filter(SeccompAction::kKill, [] {
    long rc = ::syscall(SYS_clone3, nullptr, 0);
    return rc == -1 && errno == ENOSYS ? 0 : 1;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Seccomp, TrapSaysWhichCallAndItFailsWithEnosys) {
  int status = under_filter(SeccompAction::kTrap, [] {
    int rc = ::socket(AF_INET, SOCK_STREAM, 0);
    return rc == -1 && errno == ENOSYS ? 0 : 1;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Seccomp, NoneLoadsNothingButSetsNoNewPrivs) {
  int status = under_filter(SeccompAction::kNone, [] {
    int rc = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rc < 0) return 1;
    ::close(rc);
    return ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 ? 0 : 2;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Seccomp, ActionNames) {
  EXPECT_EQ(parse_seccomp_action("kill"), SeccompAction::kKill);
  EXPECT_EQ(parse_seccomp_action("LOG"), SeccompAction::kLog);
  EXPECT_EQ(parse_seccomp_action("trap"), SeccompAction::kTrap);
  EXPECT_EQ(parse_seccomp_action("none"), SeccompAction::kNone);
  EXPECT_FALSE(parse_seccomp_action("allow"));
}

}  // namespace
}  // namespace vfsd::sandbox
