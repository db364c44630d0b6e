// Issue 10 with the daemon binary as a launcher starts it: --metrics-socket
// answers with the Prometheus text while a frontend (the test, playing QEMU
// and the guest driver) sends requests, a stuck client does not hold the
// socket, SIGUSR1 logs a summary (through the namespace sandbox's waiting
// parent), and a path that is not a socket is refused.
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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

test::Reply lookup(VhostUserGuest& g, const std::string& name) {
  return g.fuse(g.request(FUSE_LOOKUP, FUSE_ROOT_ID, 0, 0).add_name(name).finish());
}

// Everything the server at `path` sends after `request` (empty: send
// nothing, only shut the sending side as `socat - ... </dev/null` does),
// until it closes; bounded far above need.
std::string talk_to(const std::string& path, const std::string& request) {
  UniqueFd fd = test::connect_unix(path);
  if (!fd) return "connect failed: " + std::string(std::strerror(errno));
  if (!request.empty() &&
      ::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    return "write failed";
  }
  if (request.empty()) ::shutdown(fd.get(), SHUT_WR);
  std::string answer;
  char buf[4096];
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 30000) != 1) return answer + "\n(timed out)";
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) return answer;
    answer.append(buf, static_cast<size_t>(n));
  }
}

std::string scrape(const std::string& path) {
  return talk_to(path, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

class DaemonMetrics : public test::DaemonDirTest {
 protected:
  DaemonMetrics() : DaemonDirTest("dmetrics") {}
  void SetUp() override {
    test::DaemonDirTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    test::write_host(share_ + "/hello", "from the host");
    metrics_ = dir_ + "/metrics.sock";
  }
  // Waits (bounded far above need) until the log holds `text`, while the
  // daemon lives.
  bool wait_for_log(DaemonProcess& d, const std::string& text) {
    for (int i = 0; i < 3000; ++i) {
      if (log().find(text) != std::string::npos) return true;
      if (!d.alive()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string metrics_;
};

// The default namespace sandbox: the socket is bound before the sandbox and
// served from inside it, under the seccomp filter (--seccomp=kill would end
// the daemon on a call it refuses).
TEST_F(DaemonMetrics, SocketServesPrometheusTextAndSigusr1LogsASummary) {
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--metrics-socket=" + metrics_}, {},
      dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  ASSERT_TRUE(fs::is_socket(metrics_)) << log();
  struct stat st {};
  ASSERT_EQ(::lstat(metrics_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "only the daemon's user may read the metrics";

  const std::string before = scrape(metrics_);
  EXPECT_EQ(before.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << before;
  EXPECT_NE(before.find("# TYPE virtiofsd_requests_total counter\n"), std::string::npos) << before;
  EXPECT_EQ(before.find("op=\"LOOKUP\""), std::string::npos) << "no request yet: " << before;

  VhostUserGuest g;
  ASSERT_EQ(g.attach(test::connect_unix(socket_)), "") << log();
  ASSERT_TRUE(g.init().ok()) << log();
  EXPECT_TRUE(lookup(g, "hello").ok());
  EXPECT_EQ(lookup(g, "missing").error(), ENOENT);
  EXPECT_EQ(lookup(g, "missing-too").error(), ENOENT);

  // A client that connects and neither sends nor reads holds the thread at
  // most its timeout; the next one is still answered.
  UniqueFd stuck = test::connect_unix(metrics_);
  ASSERT_TRUE(stuck);
  const std::string after = scrape(metrics_);
  const size_t body = after.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos) << after;
  const std::string header = after.substr(0, body);
  EXPECT_NE(header.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << header;
  EXPECT_NE(header.find("Content-Length: " + std::to_string(after.size() - body - 4)),
            std::string::npos)
      << header;
  EXPECT_NE(after.find("\nvirtiofsd_requests_total{op=\"LOOKUP\"} 3\n"), std::string::npos)
      << after;
  EXPECT_NE(after.find("\nvirtiofsd_request_errors_total{op=\"LOOKUP\"} 2\n"), std::string::npos)
      << after;
  EXPECT_NE(after.find("\nvirtiofsd_requests_total{op=\"INIT\"} 1\n"), std::string::npos) << after;
  EXPECT_NE(after.find("\nvirtiofsd_request_duration_seconds_count{op=\"LOOKUP\"} 3\n"),
            std::string::npos)
      << after;
  EXPECT_NE(after.find("\nvirtiofsd_inodes "), std::string::npos) << after;
  EXPECT_NE(after.find("\nvirtiofsd_requests_in_flight 0\n"), std::string::npos) << after;

  // socat's way: nothing sent, the sending side shut.
  const std::string quiet = talk_to(metrics_, "");
  EXPECT_NE(quiet.find("virtiofsd_requests_total{op=\"LOOKUP\"} 3"), std::string::npos) << quiet;

  // curl, where the host has it.
  if (::access("/usr/bin/curl", X_OK) == 0) {
    const std::string out = dir_ + "/curl.out";
    const std::string cmd = "/usr/bin/curl -sS --max-time 20 --unix-socket " + metrics_ +
                            " http://localhost/metrics -o " + out;
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    EXPECT_NE(test::read_host(out).find("virtiofsd_requests_total{op=\"LOOKUP\"} 3"),
              std::string::npos);
  }

  ASSERT_EQ(::kill(d.pid(), SIGUSR1), 0);
  ASSERT_TRUE(wait_for_log(d, "metrics: LOOKUP count=3 errors=2 mean=")) << log();
  EXPECT_NE(log().find("metrics: INIT count=1 errors=0 "), std::string::npos) << log();
  EXPECT_TRUE(d.alive()) << "SIGUSR1 must not end the daemon";
  EXPECT_TRUE(lookup(g, "hello").ok()) << "the daemon still serves after SIGUSR1";
}

// The deletion watch in the real daemon, under the default sandbox and
// seccomp filter: an inode looked up again gets an inotify mark (made through
// the thread's working directory in /proc/self/fd, checked with FIONREAD),
// and the host deleting and recreating the file is seen at once.
TEST_F(DaemonMetrics, AnInodeLookedUpAgainGetsAMarkThatAHostDeleteEnds) {
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--metrics-socket=" + metrics_}, {},
      dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  VhostUserGuest g;
  ASSERT_EQ(g.attach(test::connect_unix(socket_)), "") << log();
  ASSERT_TRUE(g.init().ok()) << log();
  auto first = lookup(g, "hello");
  ASSERT_TRUE(first.ok());
  const uint64_t node = first.as<fuse_entry_out>().nodeid;
  EXPECT_NE(scrape(metrics_).find("\nvirtiofsd_inode_marks 0\n"), std::string::npos);
  for (int i = 0; i < 3; ++i) {
    auto again = lookup(g, "hello");
    ASSERT_TRUE(again.ok()) << log();
    EXPECT_EQ(again.as<fuse_entry_out>().nodeid, node);
  }
  const std::string marked = scrape(metrics_);
  EXPECT_NE(marked.find("\nvirtiofsd_inode_marks 1\n"), std::string::npos) << marked;

  ASSERT_EQ(::unlink((share_ + "/hello").c_str()), 0);
  EXPECT_EQ(lookup(g, "hello").error(), ENOENT);
  test::write_host(share_ + "/hello", "again");
  auto recreated = lookup(g, "hello");
  ASSERT_TRUE(recreated.ok()) << log();
  EXPECT_NE(recreated.as<fuse_entry_out>().nodeid, node);
  EXPECT_EQ(recreated.as<fuse_entry_out>().attr.size, 5u);
  const std::string after = scrape(metrics_);
  EXPECT_NE(after.find("\nvirtiofsd_inode_marks 0\n"), std::string::npos) << after;
  EXPECT_TRUE(d.alive()) << log();
}

// SIGUSR1 without --metrics-socket and without a sandbox process between
// the signal and the server.
TEST_F(DaemonMetrics, Sigusr1AloneLogsTheSummary) {
  DaemonProcess d({"--socket-path=" + socket_, "--shared-dir=" + share_, "--sandbox=none"}, {},
                  dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  VhostUserGuest g;
  ASSERT_EQ(g.attach(test::connect_unix(socket_)), "") << log();
  ASSERT_TRUE(g.init().ok()) << log();
  EXPECT_TRUE(lookup(g, "hello").ok());
  ASSERT_EQ(::kill(d.pid(), SIGUSR1), 0);
  ASSERT_TRUE(wait_for_log(d, "metrics: LOOKUP count=1 errors=0 ")) << log();
  EXPECT_TRUE(d.alive());
}

TEST_F(DaemonMetrics, APathThatIsNotASocketIsRefusedBeforeAnythingIsCreated) {
  test::write_host(metrics_, "not a socket");
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--metrics-socket=" + metrics_}, {},
      dir_ + "/daemon.log");
  const int status = d.wait_exit();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(log().find("--metrics-socket"), std::string::npos) << log();
  EXPECT_EQ(test::read_host(metrics_), "not a socket") << "the file must be left alone";
  EXPECT_FALSE(fs::exists(socket_)) << "refused before the vhost-user socket was made";
}

TEST_F(DaemonMetrics, AStaleSocketIsReplaced) {
  {
    // A socket file nobody listens on, as a killed daemon leaves it.
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, metrics_.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  DaemonProcess d(
      {"--socket-path=" + socket_, "--shared-dir=" + share_, "--metrics-socket=" + metrics_}, {},
      dir_ + "/daemon.log");
  ASSERT_TRUE(wait_for_log(d, "Waiting for vhost-user socket connection...")) << log();
  EXPECT_EQ(scrape(metrics_).rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << log();
}

}  // namespace
}  // namespace vfsd::app
