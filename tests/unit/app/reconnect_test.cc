// --reconnect, with the daemon binary as a launcher starts it and the test
// as its frontends: a fake QEMU (the vhost-user messages QEMU 7.2 sends) and
// guest driver (rings and buffers in a memfd handed over with ADD_MEM_REG)
// that connects, INITs and works, then vanishes without DESTROY, as a VMM
// killed with SIGKILL does; a second one then connects to the same socket.
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon_dir_test.h"
#include "support/daemon_process.h"
#include "support/host_files.h"
#include "support/vhost_user_guest.h"

namespace vfsd::app {
namespace {

using test::DaemonProcess;
using test::VhostUserGuest;
namespace fs = std::filesystem;

// The requests each guest makes, as root.
test::Reply lookup(VhostUserGuest& g, const std::string& name) {
  return g.fuse(g.request(FUSE_LOOKUP, FUSE_ROOT_ID, 0, 0).add_name(name).finish());
}
test::Reply mkdir(VhostUserGuest& g, const std::string& name) {
  fuse_mkdir_in in{};
  in.mode = 0755;
  return g.fuse(g.request(FUSE_MKDIR, FUSE_ROOT_ID, 0, 0).add(in).add_name(name).finish());
}
test::Reply getattr(VhostUserGuest& g, uint64_t nodeid) {
  fuse_getattr_in in{};
  return g.fuse(g.request(FUSE_GETATTR, nodeid, 0, 0).add(in).finish());
}

class ReconnectTest : public test::DaemonDirTest {
 protected:
  ReconnectTest() : DaemonDirTest("reconnect") {}
  void SetUp() override {
    test::DaemonDirTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    test::write_host(share_ + "/hello", "from the host");
  }
  size_t count_in_log(const std::string& text) const {
    const std::string l = log();
    size_t n = 0;
    for (size_t pos = l.find(text); pos != std::string::npos; pos = l.find(text, pos + 1)) ++n;
    return n;
  }
  // Waits (bounded far above need) until the log says `text` `times` times,
  // while the daemon lives.
  bool wait_for_log(DaemonProcess& d, const std::string& text, size_t times = 1) {
    for (int i = 0; i < 3000; ++i) {
      if (count_in_log(text) >= times) return true;
      if (!d.alive()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Guest 1: INIT, a lookup and a mkdir, then gone without DESTROY (the
  // frontend's socket closes as when its process is killed). Returns the
  // node id the lookup gave (0 on failure, with the failure recorded).
  uint64_t first_guest(UniqueFd socket) {
    VhostUserGuest g1;
    const std::string shook = g1.attach(std::move(socket));
    EXPECT_EQ(shook, "") << log();
    if (!shook.empty()) return 0;
    auto init = g1.init();
    EXPECT_TRUE(init.ok()) << init.error() << log();
    auto hello = lookup(g1, "hello");
    EXPECT_TRUE(hello.ok()) << hello.error();
    auto made = mkdir(g1, "from-guest-1");
    EXPECT_TRUE(made.ok()) << made.error();
    EXPECT_TRUE(fs::is_directory(share_ + "/from-guest-1"));
    return hello.ok() ? hello.as<fuse_entry_out>().nodeid : 0;
  }

  // Guest 2, on a fresh session: its INIT is not one "on an open session",
  // node ids of guest 1 mean nothing, and it sees what guest 1 made.
  void second_guest(UniqueFd socket, uint64_t old_nodeid) {
    VhostUserGuest g2;
    ASSERT_EQ(g2.attach(std::move(socket)), "") << log();
    auto init = g2.init();
    ASSERT_TRUE(init.ok()) << init.error() << log();
    EXPECT_EQ(init.as<fuse_init_out>().max_write, 1u << 20);
    EXPECT_EQ(log().find("INIT on an open session"), std::string::npos)
        << "the second guest's INIT found the first one's session open";
    ASSERT_NE(old_nodeid, 0u);
    auto stale = getattr(g2, old_nodeid);
    EXPECT_FALSE(stale.ok()) << "node id " << old_nodeid << " of guest 1 is still known";
    EXPECT_TRUE(lookup(g2, "from-guest-1").ok());
    auto hello = lookup(g2, "hello");
    EXPECT_TRUE(hello.ok()) << hello.error();
  }
};

// --socket-path with the default namespace sandbox: the launcher's pid (the
// waiting parent) stays, the same socket takes a second frontend, the pid
// file still names that pid, and SIGTERM while waiting for a third frontend
// ends it with status 0.
TEST_F(ReconnectTest, SocketPathServesASecondFrontendWithAFreshSession) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--reconnect"}, {},
                  dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  const uint64_t nodeid = first_guest(test::connect_unix(socket_));
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 2)) << log();
  EXPECT_NE(log().find("--reconnect: serving the next frontend"), std::string::npos) << log();
  EXPECT_TRUE(d.alive());
  ASSERT_TRUE(fs::is_socket(socket_)) << "the socket must stay for the next frontend";
  EXPECT_EQ(test::read_host(socket_ + ".pid"), std::to_string(d.pid()) + "\n");

  second_guest(test::connect_unix(socket_), nodeid);
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 3)) << log();
  EXPECT_EQ(test::read_host(socket_ + ".pid"), std::to_string(d.pid()) + "\n");

  ASSERT_EQ(::kill(d.pid(), SIGTERM), 0);
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log();
}

// --fd=N (an inherited listening socket, as libvirt passes it) and no
// sandbox: the same, on the inherited socket.
TEST_F(ReconnectTest, InheritedFdServesASecondFrontend) {
  // Not close-on-exec: the daemon inherits it across the exec.
  UniqueFd listening(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listening.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listening.get(), 1), 0);
  DaemonProcess d({"--fd=" + std::to_string(listening.get()), "--shared-dir=" + share_,
                   "--reconnect", "--sandbox=none"},
                  {}, dir_ + "/daemon.log");
  listening.reset();
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  const uint64_t nodeid = first_guest(test::connect_unix(socket_));
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 2)) << log();
  second_guest(test::connect_unix(socket_), nodeid);
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 3)) << log();
  ASSERT_EQ(::kill(d.pid(), SIGTERM), 0);
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log();
}

// Without --reconnect, as the Rust virtiofsd: the first frontend's
// disconnect ends the daemon with status 0, and nobody can connect after.
TEST_F(ReconnectTest, WithoutReconnectADisconnectExitsZero) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_}, {}, dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  first_guest(test::connect_unix(socket_));
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log();
  EXPECT_NE(log().find("Client disconnected, shutting down"), std::string::npos) << log();
  EXPECT_FALSE(test::connect_unix(socket_)) << "a second frontend could connect";
}

}  // namespace
}  // namespace vfsd::app
