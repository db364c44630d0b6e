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
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    Options options;
    options.shared_dir = share_;
    std::string step;
    auto inside = enter(options, step);
    if (!inside) _exit(200);
    ::signal(SIGTERM, [](int) { ::_exit(0); });
    (void)!::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  std::ifstream children("/proc/" + std::to_string(child) + "/task/" + std::to_string(child) +
                         "/children");
  pid_t grandchild = 0;
  children >> grandchild;
  ASSERT_GT(grandchild, 0);
  const pid_t self = ::getpid();
  for (const char* ns : {"mnt", "net", "pid"}) {
    EXPECT_NE(ns_of(grandchild, ns), ns_of(self, ns)) << ns;
  }
  std::ifstream status_file("/proc/" + std::to_string(child) + "/status");
  std::string line, cap_eff;
  while (std::getline(status_file, line)) {
    if (line.rfind("CapEff:", 0) == 0) cap_eff = line.substr(7);
  }
  cap_eff.erase(0, cap_eff.find_first_not_of(" \t"));
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
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    Options options;
    options.shared_dir = share_;
    std::string step;
    auto inside = enter(options, step);
    if (!inside) _exit(200);
    ::signal(SIGTERM, [](int) { ::_exit(42); });
    (void)!::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(::kill(child, SIGTERM), 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 42);
}

// Killing the parent (SIGKILL, as Kata and lima do) takes the child along.
TEST_F(SandboxTest, TheChildDiesWithItsParent) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    Options options;
    options.shared_dir = share_;
    std::string step;
    auto inside = enter(options, step);
    if (!inside) _exit(200);
    // SIGTERM's default would be ignored by a namespace init: handle it.
    ::signal(SIGTERM, [](int) { ::_exit(0); });
    std::ofstream("/alive") << "1";
    (void)!::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  // The write end is also held by the grandchild: its death closes it.
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  ::waitpid(child, nullptr, 0);
  // Bounded wait for the grandchild to be gone (EOF on the pipe).
  pollfd p{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 30000), 1);
  EXPECT_EQ(::read(ready[0], &c, 1), 0) << "the serving child outlived its parent";
  ::close(ready[0]);
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
