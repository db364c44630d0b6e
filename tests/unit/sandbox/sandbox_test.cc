// The sandbox modes, each entered by a child process of the test (the
// namespace mode forks again: the child becomes the waiting parent and the
// grandchild serves). What the serving process can see is checked from
// inside it; its exit status reports the first check that failed.
#include "sandbox/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>

#include "support/host_files.h"

namespace vfsd::sandbox {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::set<std::string> entries(const char* dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir);
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.insert(name);
  }
  ::closedir(d);
  return out;
}

std::string ns_of(pid_t pid, const char* ns) {
  return fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + ns).string();
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    char tmpl[] = "/tmp/vfsd-sandbox-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    share_ = top_ + "/share";
    fs::create_directories(share_ + "/sub");
    std::ofstream(share_ + "/inside") << "inside";
    std::ofstream(top_ + "/outside") << "outside";
  }
  void TearDown() override {
    std::error_code ec;
    if (!top_.empty()) fs::remove_all(top_, ec);
  }

  // Enters `mode` in a child and runs `check` where the sandbox put the
  // process; returns the child's wait status.
  int in_sandbox(Mode mode, const std::function<int(Inside&)>& check) {
    pid_t child = ::fork();
    if (child == 0) {
      Options options;
      options.mode = mode;
      options.shared_dir = share_;
      std::string step;
      auto inside = enter(options, step);
      if (!inside) _exit(200);
      _exit(check(*inside));
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return status;
  }

  // Forks a child that enters the namespace sandbox; its serving grandchild
  // exits with `exit_on_term` on SIGTERM (a namespace init ignores signals
  // it has no handler for) and otherwise waits. Returns the child once the
  // grandchild is ready. With `ready_fd`, the caller gets the read end of a
  // pipe whose write end only the grandchild still holds.
  pid_t start_serving(int exit_on_term, int* ready_fd = nullptr) {
    int ready[2];
    if (::pipe(ready) != 0) return -1;
    pid_t child = ::fork();
    if (child == 0) {
      ::close(ready[0]);
      Options options;
      options.shared_dir = share_;
      std::string step;
      auto inside = enter(options, step);
      if (!inside) _exit(200);
      g_exit_on_term = exit_on_term;
      ::signal(SIGTERM, [](int) { ::_exit(g_exit_on_term); });
      (void)!::write(ready[1], "r", 1);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    const bool up = ::read(ready[0], &c, 1) == 1;
    if (ready_fd != nullptr && up) {
      *ready_fd = ready[0];
    } else {
      ::close(ready[0]);
    }
    return up ? child : -1;
  }

  static inline int g_exit_on_term = 0;
  std::string top_, share_;
};

// The root is the share, /proc shows nothing but our fds, the process is
// init of a new pid namespace, and the fd handed out reopens files.
TEST_F(SandboxTest, NamespaceMakesTheShareTheRootAndHidesTheHost) {
  int status = in_sandbox(Mode::kNamespace, [&](Inside& inside) {
    if (inside.shared_dir != "/") return 1;
    if (entries("/") != std::set<std::string>{"inside", "sub"}) return 2;
    if (::access("/outside", F_OK) == 0 || ::access("/../outside", F_OK) == 0) return 3;
    // /proc is /proc/self/fd: only numbers, and no other process.
    for (const auto& name : entries("/proc")) {
      if (name.find_first_not_of("0123456789") != std::string::npos) return 4;
    }
    if (::getpid() != 1) return 5;
    int fd = ::open("/inside", O_PATH | O_CLOEXEC);
    if (fd < 0) return 6;
    char link[16];
    std::snprintf(link, sizeof link, "%d", fd);
    int real = ::openat(inside.proc_self_fd.get(), link, O_RDONLY | O_CLOEXEC);
    if (real < 0) return 7;
    char buf[6];
    if (::read(real, buf, 6) != 6 || std::string(buf, 6) != "inside") return 8;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Seen from the host: the serving grandchild's mount, net and pid
// namespaces are not ours; the waiting parent holds no capability.
TEST_F(SandboxTest, NamespaceChildIsInNewMountNetAndPidNamespaces) {
  const pid_t child = start_serving(0);
  ASSERT_GT(child, 0);
  const pid_t grandchild = test::only_child_of(child);
  ASSERT_GT(grandchild, 0);
  const pid_t self = ::getpid();
  for (const char* ns : {"mnt", "net", "pid"}) {
    EXPECT_NE(ns_of(grandchild, ns), ns_of(self, ns)) << ns;
  }
  // The parent drops them right after it forks the grandchild, which a
  // loaded machine may not have scheduled yet: wait (bounded) for the drop.
  std::string cap_eff = test::status_line(child, "CapEff");
  for (int i = 0; i < 1000 && cap_eff != "0000000000000000"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    cap_eff = test::status_line(child, "CapEff");
  }
  EXPECT_EQ(cap_eff, "0000000000000000") << "the waiting parent keeps capabilities";
  ::kill(child, SIGTERM);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The waiting parent: the grandchild's status is its status, and signals
// sent to it reach the grandchild (which, as init of its pid namespace,
// receives only signals it has a handler for).
TEST_F(SandboxTest, TheParentForwardsSignalsAndReturnsTheChildsStatus) {
  const pid_t child = start_serving(42);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 42);
}

// Killing the parent (SIGKILL, as Kata and lima do) takes the child along.
TEST_F(SandboxTest, TheChildDiesWithItsParent) {
  int ready = -1;
  const pid_t child = start_serving(0, &ready);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  ::waitpid(child, nullptr, 0);
  // Bounded wait for the grandchild to be gone (EOF on the pipe).
  pollfd p{ready, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 30000), 1);
  char c = 0;
  EXPECT_EQ(::read(ready, &c, 1), 0) << "the serving child outlived its parent";
  ::close(ready);
}

TEST_F(SandboxTest, ChrootMakesTheShareTheRoot) {
  int status = in_sandbox(Mode::kChroot, [&](Inside& inside) {
    if (inside.shared_dir != "/") return 1;
    if (entries("/") != std::set<std::string>{"inside", "sub"}) return 2;
    if (::access("/../outside", F_OK) == 0) return 3;
    if (!inside.proc_self_fd) return 4;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(SandboxTest, NoneChangesNothing) {
  int status = in_sandbox(Mode::kNone, [&](Inside& inside) {
    if (inside.shared_dir != share_) return 1;
    if (::access((top_ + "/outside").c_str(), F_OK) != 0) return 2;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SandboxMode, Names) {
  EXPECT_EQ(parse_mode("namespace"), Mode::kNamespace);
  EXPECT_EQ(parse_mode("Chroot"), Mode::kChroot);
  EXPECT_EQ(parse_mode("NONE"), Mode::kNone);
  EXPECT_FALSE(parse_mode("container"));
}

}  // namespace
}  // namespace vfsd::sandbox
