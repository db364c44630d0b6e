// Target vhost_user: the vhost-user message parser (read_message, validate)
// and the Backend state machine, through Backend::serve on one end of a
// socketpair, the fuzzer playing the front-end on the other. The rings it
// sets up really start: their workers pop chains from the guest memory the
// input provides and serve them with fuse::Server over FakeFs, while the
// front-end keeps sending (memory-table changes, ring stops, resets).
//
// Input: one configuration byte, a frame with the guest memory image, then
// frames of one message each.
//   config  bits 0-1 queues (kQueues); bit 2 the FUSE server is initialized
//           (INIT) before the connection, so chains run deep; bit 3 the
//           back-end has a tag (CONFIG offered, GET_CONFIG served); bit 4
//           the request queues are served by a pool of 2 threads
//           (--thread-pool-size=2)
//   image   written to memfd 0 (64 KiB) at offset 0
//   message byte 0: which pool fds go with it (bit i: pool fd i);
//           byte 1: bit 0 set the header's size to the payload present,
//           bit 1 set the header's version to 1, bit 2 send the header and
//           the payload separately, bit 3 kick (signal) the pool eventfds
//           after it; then the message bytes (header, payload)
// Pool fds, new for every input: 0 a 64 KiB memfd (the image), 1 a 64 KiB
// memfd, 2 a 4 KiB memfd, 3-5 eventfds, 6 /dev/null, 7 an empty memfd.
//
// A reader thread drains the back-end's replies (so it never blocks) and
// checks their framing. After the last message the front-end closes its
// side; serve() must return. Checked afterwards: the process holds exactly
// the fds it held before the input (the back-end closed every fd it got).
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "fake_fs.h"
#include "fuse/server.h"
#include "fuzz_common.h"
#include "guest_init.h"
#include "util/unique_fd.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "virtio/queue.h"

using namespace vfsd;
using namespace vfsd::fuzz;

namespace {

constexpr uint32_t kQueues[4] = {2, 1, 3, 16};
constexpr size_t kPool = 8;
constexpr size_t kMemfdSize = 64 * 1024;

bool g_warm = false;

class ServerHandler final : public virtio::RequestHandler {
 public:
  explicit ServerHandler(fuse::Server& server) : server_(server) {}
  uint32_t handle(uint32_t, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* deferrer) override {
    return static_cast<uint32_t>(server_.handle(request, reply, deferrer));
  }

 private:
  fuse::Server& server_;
};

UniqueFd make_memfd(size_t size, std::span<const uint8_t> image = {}) {
  UniqueFd fd(::memfd_create("vfsd-fuzz-guest", MFD_CLOEXEC));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) die("memfd");
  if (!image.empty()) {
    size_t n = std::min(image.size(), size);
    if (::pwrite(fd.get(), image.data(), n, 0) != static_cast<ssize_t>(n)) die("memfd write");
  }
  return fd;
}

// Reads replies until EOF; each must be a well-formed vhost-user reply.
void drain_replies(int fd) {
  std::vector<uint8_t> stream;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    stream.insert(stream.end(), buf, buf + n);
    while (stream.size() >= sizeof(vhost_user::Header)) {
      vhost_user::Header h;
      std::memcpy(&h, stream.data(), sizeof(h));
      VFSD_FUZZ_CHECK(h.flags == (vhost_user::kVersion | vhost_user::kFlagReply));
      VFSD_FUZZ_CHECK(h.size <= vhost_user::kMaxPayloadSize);
      if (stream.size() < sizeof(h) + h.size) break;
      stream.erase(stream.begin(),
                   stream.begin() + static_cast<std::ptrdiff_t>(sizeof(h) + h.size));
    }
  }
}

// Sends bytes (at least one: a stream socket carries no fds without data)
// with `fds` attached; false once the back-end is gone.
bool send_with_fds(int sock, std::span<const uint8_t> bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kPool)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
    // The fds went with the first bytes.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    iov.iov_base = const_cast<uint8_t*>(bytes.data()) + sent;
    iov.iov_len = bytes.size() - sent;
  }
  return true;
}

void run_input(const uint8_t* data, size_t size) {
  Input input(data, size);
  const uint8_t config = input.u8();
  std::span<const uint8_t> image;
  input.frame(image);

  std::array<UniqueFd, kPool> pool;
  pool[0] = make_memfd(kMemfdSize, image);
  pool[1] = make_memfd(kMemfdSize);
  pool[2] = make_memfd(4096);
  for (size_t i = 3; i < 6; ++i) pool[i] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  pool[6] = UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  pool[7] = make_memfd(0);

  FakeFs fs(FakeFs::Options{});
  {
    fuse::Server server(fs, fuse::ServerOptions{});
    if (config & 4) {
      Bytes init = guest_init(1, GuestKind::kLinux61);
      IovecReader r(IovecList{iovec{init.data(), init.size()}});
      std::vector<uint8_t> out(4096);
      IovecWriter w(IovecList{iovec{out.data(), out.size()}});
      server.handle(r, w);
    }
    ServerHandler handler(server);
    // Bit 3: a tag, so CONFIG is offered and GET_CONFIG served. Bit 4: a
    // thread pool serves the request queues.
    vhost_user::BackendOptions options{kQueues[config & 3]};
    if (config & 8) options.tag = "fuzz-tag";
    if (config & 16) options.thread_pool_size = 2;
    vhost_user::Backend backend(handler, options);

    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) die("socketpair");
    UniqueFd front(pair[0]);
    UniqueFd back(pair[1]);
    std::thread serving(
        [&backend, fd = std::move(back)]() mutable { (void)backend.serve(std::move(fd)); });
    std::thread reading([fd = front.get()] { drain_replies(fd); });

    std::span<const uint8_t> frame;
    bool open = true;
    while (open && input.frame(frame)) {
      if (frame.size() < 2) continue;
      const uint8_t mask = frame[0], flags = frame[1];
      Bytes message(frame.begin() + 2, frame.end());
      if (message.size() >= sizeof(vhost_user::Header)) {
        vhost_user::Header h;
        std::memcpy(&h, message.data(), sizeof(h));
        if (flags & 1) h.size = static_cast<uint32_t>(message.size() - sizeof(h));
        if (flags & 2) h.flags = (h.flags & ~vhost_user::kVersionMask) | vhost_user::kVersion;
        std::memcpy(message.data(), &h, sizeof(h));
      }
      std::vector<int> fds;
      for (size_t i = 0; i < kPool; ++i) {
        if (mask & (1u << i)) fds.push_back(pool[i].get());
      }
      std::span<const uint8_t> all(message);
      if ((flags & 4) && all.size() > sizeof(vhost_user::Header)) {
        open = send_with_fds(front.get(), all.first(sizeof(vhost_user::Header)), fds) &&
               send_with_fds(front.get(), all.subspan(sizeof(vhost_user::Header)), {});
      } else if (!all.empty()) {
        open = send_with_fds(front.get(), all, fds);
      }
      if (flags & 8) {
        const uint64_t one = 1;
        for (size_t i = 3; i < 6; ++i) (void)!::write(pool[i].get(), &one, sizeof(one));
      }
    }
    // The front-end disconnects: serve() must return, every ring stopped.
    ::shutdown(front.get(), SHUT_WR);
    serving.join();
    reading.join();
  }
  // Deferred replies finished after their ring stopped do nothing.
  fs.finish_parked();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first run opens what stays open for the process's life.
  if (!g_warm) {
    static const uint8_t kWarmUp[] = {0};
    run_input(kWarmUp, sizeof(kWarmUp));
    g_warm = true;
  }
  // Counted per input: libFuzzer itself opens fds between inputs (the
  // pipes of llvm-symbolizer when it reports new functions).
  const int fds_before = count_fds();
  run_input(data, size);
  if (count_fds() != fds_before) {
    std::fprintf(stderr, "vhost_user: %d fds open after the input, %d before\n", count_fds(),
                 fds_before);
    print_fds();
    die("fd leak: the back-end did not close every fd it received");
  }
  return 0;
}
