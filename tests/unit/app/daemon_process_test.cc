// The daemon binary as a launcher starts it: what its process looks like
// from outside (the socket it creates, its credentials), read from the
// file system and /proc while it waits for a frontend.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fuse/filesystem.h"
#include "support/daemon_dir_test.h"
#include "support/daemon_process.h"
#include "support/host_files.h"
#include "support/vhost_user_guest.h"

namespace vfsd::app {
namespace {

using test::DaemonProcess;
using test::only_child_of;
using test::status_line;

namespace fs = std::filesystem;

// Waits (bounded, generously: a loaded machine is slow) for `path` to be a
// socket while the daemon lives.
bool wait_for_socket(DaemonProcess& d, const std::string& path) {
  for (int i = 0; i < 3000; ++i) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    if (!d.alive()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// connect() to `path` from a child running as uid/gid 65534 with `groups`:
// 0 or the errno.
int connect_as_nobody(const std::string& path, const std::vector<gid_t>& groups) {
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      _exit(200);
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    _exit(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

// The numbers after "Groups:" in /proc/PID/status.
std::string status_groups(pid_t pid) {
  std::string status = test::read_host("/proc/" + std::to_string(pid) + "/status");
  auto pos = status.find("Groups:");
  if (pos == std::string::npos) return "?";
  auto end = status.find('\n', pos);
  std::string line = status.substr(pos + 7, end - pos - 7);
  line.erase(0, line.find_first_not_of(" \t"));
  line.erase(line.find_last_not_of(" \t") + 1);
  return line;
}

class DaemonProcessTest : public test::DaemonDirTest {
 protected:
  DaemonProcessTest() : DaemonDirTest("proc") {}
};

TEST_F(DaemonProcessTest, TheSocketIsTheOwnersOnly) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_}, {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  struct stat st {};
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(connect_as_nobody(socket_, {}), EACCES);
}

TEST_F(DaemonProcessTest, SocketGroupMembersCanConnectOthersCannot) {
  const group* g = ::getgrnam("daemon");
  ASSERT_NE(g, nullptr) << "Debian has a 'daemon' group";
  const gid_t gid = g->gr_gid;
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--socket-group=daemon"},
                  {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  struct stat st {};
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0770u);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_EQ(connect_as_nobody(socket_, {}), EACCES);
  EXPECT_EQ(connect_as_nobody(socket_, {gid}), 0);
}

TEST_F(DaemonProcessTest, AnUnknownSocketGroupIsAnErrorBeforeAnythingIsCreated) {
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--socket-group=no-such-group-here"},
      {}, dir_ + "/daemon.log");
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(log().find("--socket-group"), std::string::npos) << log();
  EXPECT_FALSE(fs::exists(socket_));
}

// Every invalid value and conflicting pair: exactly one line of output (on
// stderr, "virtiofsd: ..." naming the option), a non-zero exit status, and
// nothing created: no socket, no pid file, no temporary socket.
TEST_F(DaemonProcessTest, UsageErrorsAreOneLineNameTheOptionAndCreateNothing) {
  const std::string run = dir_ + "/run";
  ASSERT_EQ(::mkdir(run.c_str(), 0755), 0);
  const std::string sock = "--socket-path=" + run + "/vhost.sock";
  const std::string dir = "--shared-dir=" + share_;
  test::write_host(dir_ + "/plain-file", "x");
  struct Case {
    std::vector<std::string> args;
    std::string names;  // what the one line must contain
  };
  const std::vector<Case> cases = {
      {{sock, dir, "--cache=sometimes"}, "--cache"},
      {{sock, dir, "--cache"}, "--cache"},
      {{sock, dir, "--no-such-option"}, "--no-such-option"},
      {{sock, dir, "--inode-file-handles", "prefer"}, "--inode-file-handles"},
      {{sock, dir, "--inode-file-handles"}, "--inode-file-handles"},
      {{sock, dir, "--inode-file-handles=sometimes"}, "--inode-file-handles"},
      {{sock, dir, "--fd=3"}, "--fd"},
      {{sock, dir, "--socket=" + run + "/other.sock"}, "--socket"},
      {{sock, dir, "--fuse-mount=" + run}, "--fuse-mount"},
      {{"--fd=3", dir, "--socket-group=daemon"}, "--socket-group"},
      {{sock, dir, "--sandbox=jail"}, "--sandbox"},
      {{sock, dir, "--seccomp=maybe"}, "--seccomp"},
      {{sock, dir, "--log-level=loud"}, "--log-level"},
      {{sock, dir, "--tag="}, "--tag"},
      {{sock, dir, "--tag=" + std::string(37, 't')}, "--tag"},
      {{sock, dir, "--modcaps=+no_such_cap"}, "--modcaps"},
      {{sock, dir, "--modcaps=-dac_read_search"}, "--modcaps"},
      {{sock, dir, "--xattrmap=:prefix:all:a:b"}, "xattrmap"},
      {{sock, dir, "--migration-mode=teleport"}, "--migration-mode"},
      {{sock, dir, "--migration-on-error=ignore"}, "--migration-on-error"},
      {{sock, dir, "--migration-mode=file-handles", "--migration-verify-handles"},
       "--migration-verify-handles"},
      {{sock, dir, "--rlimit-nofile=lots"}, "--rlimit-nofile"},
      {{sock, dir, "--rlimit-nofile=99999999999"}, "--rlimit-nofile"},
      {{sock, dir, "--reconnect", "--fuse-mount=" + run}, "--fuse-mount"},
      {{sock, "-o", "cache=sometimes"}, "-o cache"},
      {{sock, "-o", "source=" + share_ + ",bogus"}, "-o bogus"},
      {{sock}, "--shared-dir"},
      {{sock, "--shared-dir"}, "--shared-dir"},
      {{sock, "--shared-dir=" + dir_ + "/no-such-dir"}, "--shared-dir"},
      {{sock, "--shared-dir=" + dir_ + "/plain-file"}, "--shared-dir"},
      {{dir}, "--socket-path"},
      {{"--socket-path=" + run + "/" + std::string(120, 's'), dir}, "--socket-path"},
      {{"--fd=57", dir}, "--fd"},
      {{"--fd=-1", dir}, "--fd"},
      {{sock, dir, "--socket-group=no-such-group-here"}, "--socket-group"},
  };
  int n = 0;
  for (const Case& c : cases) {
    std::string cmd;
    for (const auto& a : c.args) cmd += " " + a;
    const std::string out = dir_ + "/usage" + std::to_string(n++) + ".out";
    DaemonProcess d(c.args, {}, out);
    const int status = d.wait_exit();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << cmd << ": status " << status;
    const std::string text = test::read_host(out);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << cmd << ":\n" << text;
    EXPECT_EQ(text.rfind("virtiofsd: ", 0), 0u) << cmd << ": " << text;
    EXPECT_NE(text.find(c.names), std::string::npos) << cmd << ": " << text;
    EXPECT_TRUE(fs::is_empty(run)) << cmd << ": it created " << fs::directory_iterator(run)->path();
    for (const auto& e : fs::directory_iterator(run)) fs::remove(e.path());
  }
}

// CVE-2022-0358: groups the daemon was started with must not count for guest
// operations; the process has none left once it serves.
TEST_F(DaemonProcessTest, StartsWithoutTheSupplementaryGroupsItWasGiven) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_}, {4242, 4243},
                  dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  EXPECT_EQ(status_groups(d.pid()), "");
}

// A "Key:\tvalue" line of /proc/PID/status.
std::string ns_link(pid_t pid, const char* ns) {
  return fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + ns).string();
}

// What docs/security.md promises of the default start-up (--sandbox=namespace,
// --seccomp=kill), read while the daemon waits for its frontend: the pid the
// launcher holds is a parent without capabilities; the serving child is in
// new mount, pid and net namespaces, keeps exactly the Rust virtiofsd's
// capabilities, and runs under a seccomp filter with no_new_privs.
TEST_F(DaemonProcessTest, DefaultSandboxSeccompAndCapabilitiesAsDocumented) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_}, {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  // The socket exists before confinement ends; the log line comes after.
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(log().find("Waiting for vhost-user socket connection..."), std::string::npos) << log();
  const pid_t child = only_child_of(d.pid());
  ASSERT_GT(child, 0) << "no serving child";
  // The parent drops its capabilities after the fork, concurrently with the
  // child's start-up: the child may be waiting before the parent is done.
  for (int i = 0; i < 3000 && status_line(d.pid(), "CapEff") != "0000000000000000"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(status_line(d.pid(), "CapEff"), "0000000000000000");
  EXPECT_EQ(status_line(d.pid(), "CapPrm"), "0000000000000000");
  // CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP, and
  // DAC_READ_SEARCH for the default --inode-file-handles=prefer (1.13.3's).
  EXPECT_EQ(status_line(child, "CapEff"), "00000000880000df");
  EXPECT_EQ(status_line(child, "CapPrm"), "00000000880000df");
  EXPECT_EQ(status_line(child, "CapBnd"), "00000000880000df");
  EXPECT_EQ(status_line(child, "Seccomp"), "2");
  EXPECT_EQ(status_line(child, "NoNewPrivs"), "1");
  const pid_t self = ::getpid();
  for (const char* ns : {"mnt", "net", "pid"}) {
    EXPECT_NE(ns_link(child, ns), ns_link(self, ns)) << ns;
  }
  // Its root is the shared directory.
  struct stat root {
  }, share{};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(child) + "/root/.").c_str(), &root), 0);
  ASSERT_EQ(::stat(share_.c_str(), &share), 0);
  EXPECT_EQ(root.st_ino, share.st_ino);
  EXPECT_EQ(root.st_dev, share.st_dev);
}

// --modcaps edits the kept set; file handles add DAC_READ_SEARCH.
TEST_F(DaemonProcessTest, ModcapsAndFileHandlesChangeTheKeptCapabilities) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_,
                   "--modcaps=-mknod:+sys_admin", "--inode-file-handles=prefer"},
                  {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const pid_t child = only_child_of(d.pid());
  ASSERT_GT(child, 0);
  // The default set minus MKNOD (27), plus SYS_ADMIN (21) and DAC_READ_SEARCH (2).
  EXPECT_EQ(status_line(child, "CapEff"), "00000000802000df");
}

// --inode-file-handles=never keeps the set without DAC_READ_SEARCH.
TEST_F(DaemonProcessTest, WithoutFileHandlesDacReadSearchIsDropped) {
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--inode-file-handles=never"}, {},
      dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const pid_t child = only_child_of(d.pid());
  ASSERT_GT(child, 0);
  EXPECT_EQ(status_line(child, "CapEff"), "00000000880000db");
}

TEST_F(DaemonProcessTest, SeccompNoneAndSandboxNoneAreWhatTheySay) {
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=none", "--seccomp=none"},
      {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(only_child_of(d.pid()), 0) << "no sandbox, no child";
  EXPECT_EQ(status_line(d.pid(), "Seccomp"), "0");
  EXPECT_EQ(ns_link(d.pid(), "mnt"), ns_link(::getpid(), "mnt"));
  EXPECT_NE(log().find("--sandbox=none"), std::string::npos) << "the warning is missing";
}

// --sandbox=chroot: no new namespaces and no serving child, but the root is
// the shared directory and the filter and capabilities are as by default.
TEST_F(DaemonProcessTest, ChrootSandboxChangesTheRootOnly) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=chroot"}, {},
                  dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(log().find("Waiting for vhost-user socket connection..."), std::string::npos) << log();
  EXPECT_EQ(only_child_of(d.pid()), 0);
  EXPECT_EQ(ns_link(d.pid(), "mnt"), ns_link(::getpid(), "mnt"));
  EXPECT_EQ(status_line(d.pid(), "CapEff"), "00000000880000df");
  EXPECT_EQ(status_line(d.pid(), "Seccomp"), "2");
  struct stat root {
  }, share{};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(d.pid()) + "/root/.").c_str(), &root), 0);
  ASSERT_EQ(::stat(share_.c_str(), &share), 0);
  EXPECT_EQ(root.st_ino, share.st_ino);
}

// --rlimit-nofile sets the guest's fd budget: the limit minus the daemon's
// reserve. Through the host FUSE mount (sandboxed and filtered as by default),
// files held open past the budget answer ENFILE; the daemon keeps serving,
// and closing them gives the budget back.
TEST_F(DaemonProcessTest, RlimitNofileBoundsWhatTheGuestCanHoldAndTheDaemonServesOn) {
  constexpr int kFiles = 400;
  for (int i = 0; i < kFiles; ++i) {
    test::write_host(share_ + "/f" + std::to_string(i), "x");
  }
  const std::string mnt = dir_ + "/mnt";
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  struct stat before {};
  ASSERT_EQ(::stat(mnt.c_str(), &before), 0);
  // 1000 - the reserve (609 + 64) = 327 fds: about 163 files (an inode and a
  // handle each; =never: with file handles, the default, inodes hold none).
  DaemonProcess d({"--shared-dir=" + share_, "--fuse-mount=" + mnt, "--rlimit-nofile=1000",
                   "--cache=never", "--inode-file-handles=never"},
                  {}, dir_ + "/daemon.log");
  bool mounted = false;
  for (int i = 0; i < 3000 && !mounted && d.alive(); ++i) {
    struct stat now {};
    mounted = ::stat((mnt + "/f0").c_str(), &now) == 0 && now.st_dev != before.st_dev;
    if (!mounted) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(mounted) << log();
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};

  std::vector<int> held;
  int refused = 0;
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open((mnt + "/f" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      held.push_back(fd);
      continue;
    }
    refused = errno;
    break;
  }
  EXPECT_EQ(refused, ENFILE) << "opened " << held.size() << " of " << kFiles;
  EXPECT_GE(held.size(), 100u);
  EXPECT_LE(held.size(), 330u);
  // Serving goes on: what needs no new fd works, and reads on held files too.
  struct stat st {};
  EXPECT_EQ(::stat(mnt.c_str(), &st), 0);
  char byte = 0;
  ASSERT_FALSE(held.empty());
  EXPECT_EQ(::pread(held.front(), &byte, 1, 0), 1);
  EXPECT_EQ(byte, 'x');
  for (int fd : held) ::close(fd);
  // Released handles are back in the budget.
  int again = -1;
  for (int i = 0; i < 300 && again < 0; ++i) {
    again = ::open((mnt + "/f0").c_str(), O_RDONLY | O_CLOEXEC);
    if (again < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(again, 0) << std::strerror(errno);
  if (again >= 0) ::close(again);
  EXPECT_TRUE(d.alive()) << log();
  ::kill(d.pid(), SIGTERM);
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status)) << status;
}

// Started by a user without privileges, --sandbox=namespace adds a user
// namespace (mapping that user to root in there) and serves as before: the
// share is the root, the filter is on.
TEST_F(DaemonProcessTest, AnUnprivilegedUserGetsAUserNamespace) {
  constexpr uid_t kNobody = 65534;
  ASSERT_EQ(::chown(dir_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chown(share_.c_str(), kNobody, kNobody), 0);
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_}, {}, dir_ + "/daemon.log",
                  kNobody);
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(log().find("Waiting for vhost-user socket connection..."), std::string::npos) << log();
  const pid_t child = only_child_of(d.pid());
  ASSERT_GT(child, 0) << log();
  for (const char* ns : {"user", "mnt", "net", "pid"}) {
    EXPECT_NE(ns_link(child, ns), ns_link(::getpid(), ns)) << ns;
  }
  EXPECT_EQ(status_line(child, "Seccomp"), "2");
  EXPECT_EQ(status_line(child, "NoNewPrivs"), "1");
  // Its one mapping: root in there is the user outside.
  std::istringstream map(test::read_host("/proc/" + std::to_string(child) + "/uid_map"));
  uint64_t inside = 1, outside = 0, count = 0;
  map >> inside >> outside >> count;
  EXPECT_EQ(inside, 0u);
  EXPECT_EQ(outside, kNobody);
  EXPECT_EQ(count, 1u);
  struct stat root {
  }, share{};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(child) + "/root/.").c_str(), &root), 0);
  ASSERT_EQ(::stat(share_.c_str(), &share), 0);
  EXPECT_EQ(root.st_ino, share.st_ino);
}

// The share as the test's guest sees it after a translating daemon served
// MKDIR "made" as guest 1234:2345 (busybox's e2euser in the e2e guest).
struct MadeDir {
  int error = -1;
  uint32_t guest_uid = 0, guest_gid = 0;
};
MadeDir mkdir_as(test::VhostUserGuest& guest, const std::string& name, uint32_t uid, uint32_t gid) {
  fuse_mkdir_in in{};
  in.mode = 0755;
  test::Reply r = guest.fuse(guest.request(FUSE_MKDIR, fuse::kRootInode.value(), uid, gid)
                                 .add(in)
                                 .add_name(name)
                                 .finish());
  if (r.bytes == 0) return {};
  return {r.error(), r.as<fuse_entry_out>().attr.uid, r.as<fuse_entry_out>().attr.gid};
}
std::pair<uint32_t, uint32_t> guest_owner(test::VhostUserGuest& guest, const std::string& name) {
  test::Reply r = guest.fuse(
      guest.request(FUSE_LOOKUP, fuse::kRootInode.value(), 0, 0).add_name(name).finish());
  if (!r.ok()) return {~0u, ~0u};
  return {r.as<fuse_entry_out>().attr.uid, r.as<fuse_entry_out>().attr.gid};
}

// Run by a user without privileges and without a sandbox (podman's and
// virtme-ng's way), the daemon can only store its own ids: a translation
// squashes every guest id onto them, and shows them to the guest as
// e2euser's. Through the vhost-user socket of the real process, checked
// with stat on the host and in the replies.
// --log-level=trace logs each request (op name, unique, node) and its reply;
// a level above it logs none.
TEST_F(DaemonProcessTest, TraceLevelLogsEveryRequestAndItsReply) {
  test::write_host(share_ + "/hello", "x");
  for (const char* level : {"trace", "debug"}) {
    SCOPED_TRACE(level);
    std::error_code ec;
    std::filesystem::remove(socket_, ec);
    DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=none",
                     std::string("--log-level=") + level},
                    {}, dir_ + "/daemon.log");
    ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
    {
      test::VhostUserGuest guest;
      ASSERT_EQ(guest.start(socket_), "") << log();
      ASSERT_TRUE(guest
                      .fuse(guest.request(FUSE_LOOKUP, fuse::kRootInode.value(), 0, 0)
                                .add_name("hello")
                                .finish())
                      .ok());
      // A failed request's reply is traced with its errno.
      ASSERT_EQ(guest
                    .fuse(guest.request(FUSE_LOOKUP, fuse::kRootInode.value(), 0, 0)
                              .add_name("no-such-name")
                              .finish())
                    .error(),
                ENOENT);
    }
    d.wait_exit();
    const std::string text = log();
    const bool traced = std::string(level) == "trace";
    EXPECT_EQ(text.find("16 bytes, error -2") != std::string::npos, traced) << text;
    // INIT and LOOKUP of node 1, each with its reply.
    EXPECT_EQ(text.find("fuse: request INIT unique ") != std::string::npos, traced) << text;
    EXPECT_EQ(text.find("fuse: request LOOKUP unique ") != std::string::npos, traced) << text;
    EXPECT_EQ(text.find(" nodeid 1 uid 0 gid 0") != std::string::npos, traced) << text;
    EXPECT_EQ(text.find("fuse: reply unique ") != std::string::npos, traced) << text;
  }
}

TEST_F(DaemonProcessTest, UnprivilegedWithoutSandboxTranslatesIdsBothWays) {
  constexpr uid_t kNobody = 65534;
  ASSERT_EQ(::chown(dir_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chown(share_.c_str(), kNobody, kNobody), 0);
  test::write_host(share_ + "/hostfile", "x");
  ASSERT_EQ(::chown((share_ + "/hostfile").c_str(), kNobody, kNobody), 0);
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=none",
       "--translate-uid=squash-guest:0:65534:65536", "--translate-uid=host:65534:1234:1",
       "--translate-gid=squash-guest:0:65534:65536", "--translate-gid=host:65534:2345:1"},
      {}, dir_ + "/daemon.log", kNobody);
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  EXPECT_EQ(status_line(d.pid(), "Uid"), "65534\t65534\t65534\t65534");
  test::VhostUserGuest guest;
  ASSERT_EQ(guest.start(socket_), "") << log();

  // Without the translation the daemon could not become 1234 (or root).
  for (auto [name, uid, gid] :
       {std::tuple{"by-user", 1234u, 2345u}, std::tuple{"by-root", 0u, 0u}}) {
    MadeDir made = mkdir_as(guest, name, uid, gid);
    ASSERT_EQ(made.error, 0) << name << "\n" << log();
    struct stat st = test::host_lstat(share_ + "/" + name);
    EXPECT_EQ(st.st_uid, kNobody) << name;
    EXPECT_EQ(st.st_gid, kNobody) << name;
    EXPECT_EQ(made.guest_uid, 1234u) << name;
    EXPECT_EQ(made.guest_gid, 2345u) << name;
  }
  EXPECT_EQ(guest_owner(guest, "hostfile"), (std::pair<uint32_t, uint32_t>{1234, 2345}));
  // A guest id outside the squashed range stays itself, which this user
  // cannot become: EPERM, as from the Rust virtiofsd.
  EXPECT_EQ(mkdir_as(guest, "outside", 70000, 2345).error, EPERM) << log();
  EXPECT_FALSE(fs::exists(share_ + "/outside"));
  EXPECT_TRUE(d.alive()) << log();
}

// In this child's own mount namespace, /etc is a copy (symlinks to the real
// entries) with /etc/subuid and /etc/subgid giving `user` 65536 subordinate
// ids from `base`: what newuidmap/newgidmap read, without touching the
// host's files.
bool give_subordinate_ids(const std::string& work, const std::string& user, uint32_t base) {
  if (::unshare(CLONE_NEWNS) != 0) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  const std::string orig = work + "/orig-etc", etc = work + "/etc";
  if (::mkdir(orig.c_str(), 0755) != 0 || ::mkdir(etc.c_str(), 0755) != 0) return false;
  if (::mount("/etc", orig.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) return false;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/etc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "subuid" || name == "subgid") continue;
    if (::symlink((orig + "/" + name).c_str(), (etc + "/" + name).c_str()) != 0) return false;
  }
  const std::string line = user + ":" + std::to_string(base) + ":65536\n";
  test::write_host(etc + "/subuid", line);
  test::write_host(etc + "/subgid", line);
  ::chmod((etc + "/subuid").c_str(), 0644);
  ::chmod((etc + "/subgid").c_str(), 0644);
  return ::mount(etc.c_str(), "/etc", nullptr, MS_BIND, nullptr) == 0;
}

// The namespace sandbox of an unprivileged daemon with --uid-map/--gid-map
// beyond its own id (libvirt's session mode: 0 is the user, 1.. its
// subordinate ids), set up through newuidmap/newgidmap, plus a translation
// by the daemon inside: guest 1234:2345 is namespace 2000:3000, which the
// kernel stores as subordinate ids; the guest sees its own ids back, and
// host ids through both maps.
TEST_F(DaemonProcessTest, UnprivilegedNamespaceWithUidMapGidMapAndTranslation) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0 || ::access("/usr/bin/newgidmap", X_OK) != 0) {
    if (std::getenv("CI") != nullptr) FAIL() << "CI is set: newuidmap/newgidmap (uidmap) missing";
    GTEST_SKIP() << "needs newuidmap/newgidmap (package uidmap, scripts/install-deps.sh)";
  }
  constexpr uid_t kNobody = 65534;
  constexpr uint32_t kBase = 200000;
  ASSERT_EQ(::chown(dir_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chown(share_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chmod(share_.c_str(), 0777), 0);
  test::write_host(share_ + "/sub", "x");
  ASSERT_EQ(::chown((share_ + "/sub").c_str(), kBase + 99, kBase + 98), 0);
  test::write_host(share_ + "/own", "x");
  ASSERT_EQ(::chown((share_ + "/own").c_str(), kNobody, kNobody), 0);
  const std::string work = dir_ + "/ids";
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=namespace",
                   "--uid-map=:0:65534:1:", "--uid-map=:1:200000:65536:", "--gid-map=:0:65534:1:",
                   "--gid-map=:1:200000:65536:", "--translate-uid=map:1234:2000:1",
                   "--translate-gid=map:2345:3000:1"},
                  {}, dir_ + "/daemon.log", kNobody,
                  [&] { return give_subordinate_ids(work, "nobody", kBase); });
  ASSERT_TRUE(wait_for_socket(d, socket_)) << log();
  // The socket comes before the sandbox: wait until the serving child is
  // in its namespace (the id map writer is a child for a moment too).
  for (int i = 0; i < 3000 && log().find("Waiting for vhost-user") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(log().find("Waiting for vhost-user socket connection..."), std::string::npos) << log();
  const pid_t child = only_child_of(d.pid());
  ASSERT_GT(child, 0) << log();
  std::istringstream uid_map(test::read_host("/proc/" + std::to_string(child) + "/uid_map"));
  std::vector<uint64_t> numbers;
  for (uint64_t n = 0; uid_map >> n;) numbers.push_back(n);
  EXPECT_EQ(numbers, (std::vector<uint64_t>{0, 65534, 1, 1, 200000, 65536}));
  std::istringstream gid_map(test::read_host("/proc/" + std::to_string(child) + "/gid_map"));
  numbers.clear();
  for (uint64_t n = 0; gid_map >> n;) numbers.push_back(n);
  EXPECT_EQ(numbers, (std::vector<uint64_t>{0, 65534, 1, 1, 200000, 65536}));

  test::VhostUserGuest guest;
  ASSERT_EQ(guest.start(socket_), "") << log();
  MadeDir made = mkdir_as(guest, "made", 1234, 2345);
  ASSERT_EQ(made.error, 0) << log();
  struct stat st = test::host_lstat(share_ + "/made");
  EXPECT_EQ(st.st_uid, kBase + 1999);  // namespace 2000
  EXPECT_EQ(st.st_gid, kBase + 2999);  // namespace 3000
  EXPECT_EQ(made.guest_uid, 1234u);
  EXPECT_EQ(made.guest_gid, 2345u);
  // Not translated: namespace 1235, a subordinate id on the host.
  made = mkdir_as(guest, "other", 1235, 2346);
  ASSERT_EQ(made.error, 0) << log();
  st = test::host_lstat(share_ + "/other");
  EXPECT_EQ(st.st_uid, kBase + 1234);
  EXPECT_EQ(st.st_gid, kBase + 2345);
  EXPECT_EQ(made.guest_uid, 1235u);
  // Host ids through the namespace's map (and no translation rule).
  EXPECT_EQ(guest_owner(guest, "sub"), (std::pair<uint32_t, uint32_t>{100, 99}));
  EXPECT_EQ(guest_owner(guest, "own"), (std::pair<uint32_t, uint32_t>{0, 0}));
  EXPECT_TRUE(d.alive()) << log();
}

// Subordinate ids the user was not given: newuidmap refuses, and the daemon
// exits 1 with what it said instead of serving with a map it did not ask for.
TEST_F(DaemonProcessTest, AMapTheUserMayNotHaveFailsTheStartWithTheHelpersReason) {
  constexpr uid_t kNobody = 65534;
  ASSERT_EQ(::chown(dir_.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chown(share_.c_str(), kNobody, kNobody), 0);
  const std::string work = dir_ + "/ids";
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  // Subordinate ids for someone else only.
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_,
                   "--uid-map=:0:65534:1:", "--uid-map=:1:300000:10:"},
                  {}, dir_ + "/daemon.log", kNobody,
                  [&] { return give_subordinate_ids(work, "root", 300000); });
  const int status = d.wait_exit();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1) << log();
  EXPECT_NE(log().find("write to uid map failed: "), std::string::npos) << log();
}

// --uid-map is for the user namespace of an unprivileged daemon: root is
// refused before anything is created, as by the Rust virtiofsd.
TEST_F(DaemonProcessTest, UidMapAsRootIsRefusedBeforeAnythingIsCreated) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--uid-map=:0:1000:1:"},
                  {}, dir_ + "/daemon.log");
  const int status = d.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(log().find("--uid-map can only be used by an unprivileged user"), std::string::npos)
      << log();
  EXPECT_FALSE(fs::exists(socket_));
  EXPECT_FALSE(fs::exists(socket_ + ".pid"));
}

// --socket-path=P writes P.pid with the pid the launcher holds (virtme-ng
// waits for it and signals that pid) and keeps it locked: a second daemon on
// the same socket fails with a clear error and leaves the first one's socket
// alone.
TEST_F(DaemonProcessTest, PidFileNamesTheDaemonAndLocksOutASecondOne) {
  DaemonProcess first({"--socket-path=" + socket_, "--shared-dir=" + share_}, {},
                      dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_socket(first, socket_)) << log();
  const std::string pid_path = socket_ + ".pid";
  EXPECT_EQ(test::read_host(pid_path), std::to_string(first.pid()) + "\n");
  struct stat pid_st {
  }, sock_before{}, sock_after{};
  ASSERT_EQ(::stat(pid_path.c_str(), &pid_st), 0);
  EXPECT_EQ(pid_st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(socket_.c_str(), &sock_before), 0);

  DaemonProcess second({"--socket-path=" + socket_, "--shared-dir=" + share_}, {},
                       dir_ + "/second.log");
  const int status = second.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  const std::string second_log = test::read_host(dir_ + "/second.log");
  EXPECT_NE(second_log.find(pid_path + " is locked"), std::string::npos) << second_log;
  ASSERT_EQ(::stat(socket_.c_str(), &sock_after), 0);
  EXPECT_EQ(sock_after.st_ino, sock_before.st_ino) << "the first daemon's socket was replaced";
  EXPECT_EQ(test::read_host(pid_path), std::to_string(first.pid()) + "\n");
  EXPECT_TRUE(first.alive());
}

// The probes launchers make: libvirt's --print-capabilities (also with a
// wrapper's options), lima's and virtme-ng's --version, virtme-ng's --help
// (which must mention --readonly); each exits 0 without a shared dir.
TEST_F(DaemonProcessTest, ProbesExitZeroAndSayWhatLaunchersLookFor) {
  auto run = [&](const std::vector<std::string>& args, const std::string& out) {
    DaemonProcess p(args, {}, out);
    return p.wait_exit();
  };
  const std::string caps = dir_ + "/caps.out";
  int status = run({"--modcaps=-mknod", "--print-capabilities"}, caps);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string json = test::read_host(caps);
  EXPECT_NE(json.find("\"type\": \"fs\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"separate-options\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"migrate-precopy\""), std::string::npos) << json;
  status = run({"--version"}, dir_ + "/version.out");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  status = run({"--help"}, dir_ + "/help.out");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(test::read_host(dir_ + "/help.out").find("--readonly"), std::string::npos);
}

// --syslog: the log goes to the LOG_USER facility through /dev/log, not to
// stderr. Run in a private mount namespace with a /dev of its own, where the
// test listens as the syslog daemon and writes what arrives to a file.
TEST_F(DaemonProcessTest, SyslogSendsTheLogToLogUserNotStderr) {
  const std::string received = dir_ + "/syslog.txt", daemon_log = dir_ + "/daemon.log";
  pid_t harness = ::fork();
  if (harness == 0) {
    if (::unshare(CLONE_NEWNS) != 0) _exit(10);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(11);
    if (::mount("tmpfs", "/dev", "tmpfs", 0, "mode=0755") != 0) _exit(12);
    ::mknod("/dev/null", S_IFCHR | 0666, makedev(1, 3));
    int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, "/dev/log", sizeof(addr.sun_path) - 1);
    if (::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) _exit(13);
    ::chmod("/dev/log", 0666);
    const bool seen = [&] {
      // Killed when this scope ends (_exit runs no destructors).
      DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--syslog"}, {},
                      daemon_log);
      int out = ::open(received.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      for (int i = 0; i < 300; ++i) {
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, 100) != 1) continue;
        char buf[2048];
        ssize_t n = ::recv(sock, buf, sizeof buf, 0);
        if (n <= 0) continue;
        std::string line(buf, static_cast<size_t>(n));
        line += '\n';
        (void)!::write(out, line.data(), line.size());
        if (line.find("Waiting for vhost-user socket connection...") != std::string::npos) {
          return true;
        }
      }
      return false;
    }();
    _exit(seen ? 0 : 1);
  }
  int status = 0;
  ::waitpid(harness, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  const std::string got = test::read_host(received);
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "syslog received: " << got << "\ndaemon stderr: " << test::read_host(daemon_log);
  // LOG_USER | LOG_INFO = <14>, the ident with the pid.
  EXPECT_NE(got.find("<14>"), std::string::npos) << got;
  EXPECT_NE(got.find("virtiofsd["), std::string::npos) << got;
  EXPECT_EQ(test::read_host(daemon_log).find("Waiting for vhost-user"), std::string::npos)
      << "the log went to stderr too";
}

// Without a syslog daemon, --syslog logs to stderr and says so.
TEST_F(DaemonProcessTest, SyslogWithoutASyslogDaemonFallsBackToStderr) {
  const std::string daemon_log = dir_ + "/daemon.log";
  pid_t harness = ::fork();
  if (harness == 0) {
    if (::unshare(CLONE_NEWNS) != 0) _exit(10);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(11);
    if (::mount("tmpfs", "/dev", "tmpfs", 0, "mode=0755") != 0) _exit(12);
    const bool seen = [&] {
      DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--syslog"}, {},
                      daemon_log);
      for (int i = 0; i < 300; ++i) {
        if (test::read_host(daemon_log).find("Waiting for vhost-user") != std::string::npos) {
          return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return false;
    }();
    _exit(seen ? 0 : 1);
  }
  int status = 0;
  ::waitpid(harness, &status, 0);
  const std::string log_text = test::read_host(daemon_log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log_text;
  EXPECT_NE(log_text.find("--syslog: nothing listens on /dev/log"), std::string::npos) << log_text;
}

}  // namespace
}  // namespace vfsd::app
