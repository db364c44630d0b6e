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

#include "integration/frontend.h"
#include "integration/fuse_codec.h"
#include "support/daemon_process.h"
#include "support/host_files.h"
#include "support/virtq_driver.h"

namespace vfsd::app {
namespace {

using itest::Bytes;
using itest::Frontend;
using itest::RequestBuilder;
using test::DaemonProcess;
using test::VirtqDriver;
using vhost_user::Request;
namespace fs = std::filesystem;

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1200000000;
constexpr size_t kMemSize = 8 << 20;
constexpr size_t kHiprioArea = 1 << 20;
constexpr int kTimeoutMs = 30000;
constexpr uint64_t kFeatures = vhost_user::kFeatureVersion1 | vhost_user::kFeatureIndirectDesc |
                               vhost_user::kFeatureEventIdx | vhost_user::kFeatureProtocolFeatures;
constexpr uint64_t kProtocolFeatures = vhost_user::kProtocolMq | vhost_user::kProtocolReplyAck |
                                       vhost_user::kProtocolBackendReq |
                                       vhost_user::kProtocolConfigureMemSlots;

UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
  return fd;
}

// One frontend and its guest: guest RAM, a hiprio and a request queue.
class FakeGuest {
 public:
  explicit FakeGuest(UniqueFd socket) : fe_(std::move(socket)) {
    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    if (!memfd_ || ::ftruncate(memfd_.get(), kMemSize) != 0) return;
    void* map = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (map == MAP_FAILED) return;
    ram_ = static_cast<char*>(map);
    drivers_[0] = std::make_unique<VirtqDriver>(ram_, kGpaBase, kHiprioArea, 64);
    drivers_[1] = std::make_unique<VirtqDriver>(ram_ + kHiprioArea, kGpaBase + kHiprioArea,
                                                kMemSize - kHiprioArea, 256);
  }
  ~FakeGuest() {
    if (ram_ != nullptr) ::munmap(ram_, kMemSize);
  }

  /// QEMU 7.2's set-up sequence; "" or what went wrong.
  std::string handshake() {
    if (ram_ == nullptr) return "no guest RAM";
    auto features = fe_.call(Request::kGetFeatures);
    if (!features || (features->u64() & kFeatures) != kFeatures) return "GET_FEATURES";
    auto protocol = fe_.call(Request::kGetProtocolFeatures);
    if (!protocol || (protocol->u64() & kProtocolFeatures) != kProtocolFeatures) {
      return "GET_PROTOCOL_FEATURES";
    }
    if (!fe_.send(Request::kSetProtocolFeatures, kProtocolFeatures)) return "SET_PROTOCOL_FEATURES";
    if (fe_.acked_raw(Request::kSetOwner, nullptr, 0) != 0) return "SET_OWNER";
    if (fe_.acked(Request::kSetFeatures, kFeatures) != 0) return "SET_FEATURES";
    vhost_user::SingleMemoryRegion reg{};
    reg.region = {kGpaBase, kMemSize, kUvaBase, 0};
    if (fe_.acked(Request::kAddMemReg, reg, {memfd_.get()}) != 0) return "ADD_MEM_REG";
    for (uint32_t q = 0; q < 2; ++q) {
      VirtqDriver& d = *drivers_[q];
      if (fe_.acked(Request::kSetVringNum, vhost_user::VringState{q, d.queue_size()}) != 0 ||
          fe_.acked(Request::kSetVringBase, vhost_user::VringState{q, 0}) != 0) {
        return "SET_VRING_NUM/BASE";
      }
      vhost_user::VringAddr addr{};
      addr.index = q;
      addr.desc_user_addr = uva(d.desc_gpa());
      addr.used_user_addr = uva(d.used_gpa());
      addr.avail_user_addr = uva(d.avail_gpa());
      if (fe_.acked(Request::kSetVringAddr, addr) != 0) return "SET_VRING_ADDR";
      kick_[q] = itest::make_eventfd();
      call_[q] = itest::make_eventfd();
      if (fe_.acked(Request::kSetVringKick, uint64_t{q}, {kick_[q].get()}) != 0 ||
          fe_.acked(Request::kSetVringCall, uint64_t{q}, {call_[q].get()}) != 0 ||
          fe_.acked(Request::kSetVringEnable, vhost_user::VringState{q, 1}) != 0) {
        return "SET_VRING_KICK/CALL/ENABLE";
      }
    }
    return "";
  }

  /// One FUSE request on the request queue; the decoded reply (not ok() if
  /// none came in time).
  itest::Reply fuse(const Bytes& request, uint32_t reply_room) {
    VirtqDriver& d = *drivers_[1];
    const uint16_t head = d.add_chain({std::string(request.begin(), request.end())}, {reply_room});
    const uint16_t before = d.used_idx();
    d.set_used_event(before);
    d.publish(head);
    const uint64_t one = 1;
    if (::write(kick_[1].get(), &one, sizeof one) != 8) return {};
    if (itest::wait_eventfd(call_[1].get(), kTimeoutMs) == 0) return {};
    auto [id, len] = d.used_elem(before);
    if (id != head) return {};
    std::string bytes = d.read(d.desc(d.desc(head).next).addr, len);
    return itest::decode_reply(Bytes(bytes.begin(), bytes.end()), len);
  }

  uint64_t next_unique() { return unique_ += 2; }
  RequestBuilder req(uint32_t opcode, uint64_t nodeid) {
    return RequestBuilder(opcode, nodeid, next_unique());
  }
  itest::Reply init() {
    return fuse(itest::init_request(next_unique()), sizeof(fuse_out_header) + 256);
  }
  itest::Reply lookup(const std::string& name) {
    return fuse(req(FUSE_LOOKUP, FUSE_ROOT_ID).add_name(name).finish(),
                sizeof(fuse_out_header) + sizeof(fuse_entry_out));
  }
  itest::Reply mkdir(const std::string& name) {
    fuse_mkdir_in in{};
    in.mode = 0755;
    return fuse(req(FUSE_MKDIR, FUSE_ROOT_ID).add(in).add_name(name).finish(),
                sizeof(fuse_out_header) + sizeof(fuse_entry_out));
  }
  itest::Reply getattr(uint64_t nodeid) {
    fuse_getattr_in in{};
    return fuse(req(FUSE_GETATTR, nodeid).add(in).finish(),
                sizeof(fuse_out_header) + sizeof(fuse_attr_out));
  }

 private:
  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }

  Frontend fe_;
  UniqueFd memfd_;
  char* ram_ = nullptr;
  std::unique_ptr<VirtqDriver> drivers_[2];
  UniqueFd kick_[2], call_[2];
  uint64_t unique_ = 0;
};

class ReconnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the daemon's normal user)";
    char tmpl[] = "/tmp/vfsd-reconnect-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    share_ = dir_ + "/share";
    ASSERT_EQ(::mkdir(share_.c_str(), 0755), 0);
    test::write_host(share_ + "/hello", "from the host");
    socket_ = dir_ + "/vhost.sock";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string log() const { return test::read_host(dir_ + "/daemon.log"); }
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
    FakeGuest g1(std::move(socket));
    const std::string shook = g1.handshake();
    EXPECT_EQ(shook, "") << log();
    if (!shook.empty()) return 0;
    auto init = g1.init();
    EXPECT_TRUE(init.ok()) << init.error() << log();
    auto hello = g1.lookup("hello");
    EXPECT_TRUE(hello.ok()) << hello.error();
    auto made = g1.mkdir("from-guest-1");
    EXPECT_TRUE(made.ok()) << made.error();
    EXPECT_TRUE(fs::is_directory(share_ + "/from-guest-1"));
    return hello.ok() ? hello.as<fuse_entry_out>().nodeid : 0;
  }

  // Guest 2, on a fresh session: its INIT is not one "on an open session",
  // node ids of guest 1 mean nothing, and it sees what guest 1 made.
  void second_guest(UniqueFd socket, uint64_t old_nodeid) {
    FakeGuest g2(std::move(socket));
    ASSERT_EQ(g2.handshake(), "") << log();
    auto init = g2.init();
    ASSERT_TRUE(init.ok()) << init.error() << log();
    EXPECT_EQ(init.as<fuse_init_out>().max_write, 1u << 20);
    EXPECT_EQ(log().find("INIT on an open session"), std::string::npos)
        << "the second guest's INIT found the first one's session open";
    ASSERT_NE(old_nodeid, 0u);
    auto stale = g2.getattr(old_nodeid);
    EXPECT_FALSE(stale.ok()) << "node id " << old_nodeid << " of guest 1 is still known";
    EXPECT_TRUE(g2.lookup("from-guest-1").ok());
    auto hello = g2.lookup("hello");
    EXPECT_TRUE(hello.ok()) << hello.error();
  }

  std::string dir_, share_, socket_;
};

// --socket-path with the default namespace sandbox: the launcher's pid (the
// waiting parent) stays, the same socket takes a second frontend, the pid
// file still names that pid, and SIGTERM while waiting for a third frontend
// ends it with status 0.
TEST_F(ReconnectTest, SocketPathServesASecondFrontendWithAFreshSession) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--reconnect"}, {},
                  dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  const uint64_t nodeid = first_guest(connect_to(socket_));
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 2)) << log();
  EXPECT_NE(log().find("--reconnect: serving the next frontend"), std::string::npos) << log();
  EXPECT_TRUE(d.alive());
  ASSERT_TRUE(fs::is_socket(socket_)) << "the socket must stay for the next frontend";
  EXPECT_EQ(test::read_host(socket_ + ".pid"), std::to_string(d.pid()) + "\n");

  second_guest(connect_to(socket_), nodeid);
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
  const uint64_t nodeid = first_guest(connect_to(socket_));
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...", 2)) << log();
  second_guest(connect_to(socket_), nodeid);
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
  first_guest(connect_to(socket_));
  const int status = d.wait_exit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log();
  EXPECT_NE(log().find("Client disconnected, shutting down"), std::string::npos) << log();
  EXPECT_FALSE(connect_to(socket_)) << "a second frontend could connect";
}

}  // namespace
}  // namespace vfsd::app
