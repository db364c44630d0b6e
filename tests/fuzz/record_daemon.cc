// vfsd_record: a test-only stand-in for build/virtiofsd that records what a
// real front-end and guest send, for the fuzz seed corpus (docs/security.md,
// "Fuzzing"). It takes the daemon's command line and serves like it (same
// layers: vhost_user::Backend, fuse::Server, PassthroughFs, ReadOnlyFs), but
// without sandbox, seccomp or capability changes, and it writes into the
// folder $VFSD_RECORD_DIR (required):
//
//   vhost-PID.rec  every vhost-user message from the front-end, as received
//   fuse-PID.rec   every FUSE request the guest put on a queue
//
// Record formats (little-endian u32 fields):
//   vhost: "VFVU", nfds, then one kind byte per fd (0 regular file/memfd,
//          1 eventfd, 2 other), then len and the message bytes (header and
//          payload)
//   fuse:  "VFRQ", queue index, request length, reply room (bytes
//          writable), stored length, then the stored bytes: the whole
//          request, except that a WRITE keeps at most 512 data bytes and
//          any request at most 128 KiB
//
// It sits between the front-end and the back-end: the front-end's messages
// are read (read_message), logged and passed on with their fds over a
// socketpair to Backend::serve; replies are copied back byte for byte.
//
// Use: VFSD_RECORD_DIR=/tmp/rec tests/e2e/run_guest_test.sh --daemon=ours \
//        --binary build-fuzz/tests/fuzz/vfsd_record
// then build-fuzz/tests/fuzz/vfsd_make_seeds --recordings /tmp/rec OUT.
#include <linux/fuse.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "app/config.h"
#include "app/startup.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/read_only_fs.h"
#include "util/log.h"
#include "vhost_user/backend.h"
#include "vhost_user/listener.h"
#include "vhost_user/message.h"

using namespace vfsd;

namespace {

constexpr size_t kMaxStored = 128 * 1024;
constexpr size_t kMaxWriteData = 512;

class Recorder {
 public:
  explicit Recorder(const std::string& path) : file_(std::fopen(path.c_str(), "ab")) {
    if (file_ == nullptr) {
      std::fprintf(stderr, "vfsd_record: cannot open %s: %s\n", path.c_str(), std::strerror(errno));
      std::exit(1);
    }
  }
  ~Recorder() { std::fclose(file_); }
  void u32(uint32_t v) { std::fwrite(&v, sizeof(v), 1, file_); }
  void bytes(const void* p, size_t n) { std::fwrite(p, 1, n, file_); }
  void flush() { std::fflush(file_); }
  std::mutex mu;

 private:
  std::FILE* file_;
};

uint32_t magic(const char (&m)[5]) {
  uint32_t v;
  std::memcpy(&v, m, 4);
  return v;
}

// Records each request, then serves it as the daemon's FuseRequestHandler does.
class RecordingHandler final : public virtio::RequestHandler {
 public:
  RecordingHandler(fuse::Server& server, Recorder& out) : server_(server), out_(out) {}
  uint32_t handle(uint32_t queue, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* deferrer) override {
    const size_t len = request.remaining();
    std::vector<uint8_t> head(std::min(len, kMaxStored));
    IovecReader copy(request.iovecs(head.size()));
    copy.read(head.data(), head.size());
    size_t stored = head.size();
    fuse_in_header in{};
    if (stored >= sizeof(in)) std::memcpy(&in, head.data(), sizeof(in));
    if (in.opcode == FUSE_WRITE) {
      stored = std::min(stored, sizeof(in) + sizeof(fuse_write_in) + kMaxWriteData);
    }
    {
      std::lock_guard lock(out_.mu);
      out_.u32(magic("VFRQ"));
      out_.u32(queue);
      out_.u32(static_cast<uint32_t>(len));
      out_.u32(static_cast<uint32_t>(reply.remaining()));
      out_.u32(static_cast<uint32_t>(stored));
      out_.bytes(head.data(), stored);
      out_.flush();
    }
    return static_cast<uint32_t>(server_.handle(request, reply, deferrer));
  }

 private:
  fuse::Server& server_;
  Recorder& out_;
};

uint8_t fd_kind(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) return 0;
  char link[256] = {};
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (::readlink(proc.c_str(), link, sizeof(link) - 1) > 0 &&
      std::strstr(link, "eventfd") != nullptr) {
    return 1;
  }
  return 2;
}

bool forward(int sock, const vhost_user::Message& m) {
  std::vector<uint8_t> buf(sizeof(m.header) + m.payload.size());
  std::memcpy(buf.data(), &m.header, sizeof(m.header));
  if (!m.payload.empty())
    std::memcpy(buf.data() + sizeof(m.header), m.payload.data(), m.payload.size());
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * vhost_user::kMaxFds)] = {};
  if (!m.fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * m.fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * m.fds.size());
    for (size_t i = 0; i < m.fds.size(); ++i) {
      int fd = m.fds[i].get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
    }
  }
  size_t sent = 0;
  while (sent < buf.size()) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    iov.iov_base = buf.data() + sent;
    iov.iov_len = buf.size() - sent;
  }
  return true;
}

// Copies the back-end's replies to the front-end until either side closes.
void copy_replies(int from, int to) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(from, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    ssize_t off = 0;
    while (off < n) {
      ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;
      off += w;
    }
  }
}

int run(const app::Config& config, const std::string& dir) {
  signal(SIGPIPE, SIG_IGN);
  umask(0);
  if (!config.fuse_mountpoint.empty()) {
    log::error("vfsd_record: --fuse-mount is not recorded; serve a VM");
    return 1;
  }
  if (auto dropped = app::drop_supplementary_groups(); !dropped) return 1;
  auto passthrough = passthrough::PassthroughFs::create(config.fs);
  if (!passthrough) {
    log::error("opening shared directory {}: {}", config.fs.shared_dir,
               errno_name(passthrough.error().value));
    return 1;
  }
  std::optional<passthrough::ReadOnlyFs> read_only;
  fuse::FileSystem* fs = passthrough->get();
  if (config.fs.readonly) fs = &read_only.emplace(*fs);
  fuse::ServerOptions server_options;
  server_options.readdirplus = config.readdirplus;
  fuse::Server server(*fs, server_options);

  const std::string pid = std::to_string(::getpid());
  Recorder fuse_out(dir + "/fuse-" + pid + ".rec");
  Recorder vhost_out(dir + "/vhost-" + pid + ".rec");
  RecordingHandler handler(server, fuse_out);

  UniqueFd listener;
  if (config.listen_fd) {
    listener.reset(*config.listen_fd);
  } else {
    auto listening = vhost_user::listen_unix(config.socket_path);
    if (!listening) return 1;
    listener = std::move(*listening);
  }
  auto connection = vhost_user::accept_one(listener.get());
  if (!connection) return 1;
  listener.reset();
  if (!config.listen_fd) ::unlink(config.socket_path.c_str());
  UniqueFd frontend = std::move(*connection);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return 1;
  UniqueFd inner(pair[0]);
  vhost_user::Backend backend(handler, vhost_user::BackendOptions{});
  VoidResult served = ok();
  std::thread serving([&backend, &served, fd = UniqueFd(pair[1])]() mutable {
    served = backend.serve(std::move(fd));
  });
  std::thread replies(copy_replies, inner.get(), frontend.get());

  for (;;) {
    auto msg = vhost_user::read_message(frontend.get());
    if (!msg || !msg->has_value()) break;
    const vhost_user::Message& m = **msg;
    {
      std::lock_guard lock(vhost_out.mu);
      vhost_out.u32(magic("VFVU"));
      vhost_out.u32(static_cast<uint32_t>(m.fds.size()));
      for (const auto& fd : m.fds) {
        uint8_t kind = fd_kind(fd.get());
        vhost_out.bytes(&kind, 1);
      }
      vhost_out.u32(static_cast<uint32_t>(sizeof(m.header) + m.payload.size()));
      vhost_out.bytes(&m.header, sizeof(m.header));
      vhost_out.bytes(m.payload.data(), m.payload.size());
      vhost_out.flush();
    }
    if (!forward(inner.get(), m)) break;
  }
  ::shutdown(inner.get(), SHUT_WR);
  serving.join();
  replies.join();
  return served ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const char* dir = std::getenv("VFSD_RECORD_DIR");
  if (dir == nullptr || *dir == '\0') {
    std::fprintf(stderr, "vfsd_record: set VFSD_RECORD_DIR to the folder for the recordings\n");
    return 2;
  }
  auto parsed = app::parse_command_line(argc, argv);
  if (!parsed.config) return parsed.exit_code;
  auto logger = spdlog::stderr_color_mt("vfsd_record");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(
      parsed.config->log_level == "warn" ? "warning" : parsed.config->log_level));
  log::info("vfsd_record: recording into {}", dir);
  return run(*parsed.config, dir);
}
