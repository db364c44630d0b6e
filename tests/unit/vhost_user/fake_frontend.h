// Test helpers: a fake vhost-user front-end over a socketpair talking to a
// Backend served on a thread, guest RAM in a memfd, and a RequestHandler
// that upper-cases each request into its reply.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "util/unique_fd.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "virtio/queue.h"

namespace vfsd::vhost_user::test {

/// Open fds of this process (entries of /proc/self/fd, minus the dir's own).
inline int count_open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;
}

inline UniqueFd make_eventfd() {
  return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

/// Reads an eventfd's counter (0 if it was not signalled).
inline uint64_t drain_eventfd(int fd) {
  uint64_t v = 0;
  if (read(fd, &v, sizeof v) != sizeof v) return 0;
  return v;
}

/// Polls `pred` until true or at least 30 s passed: a bound against a hang,
/// far above what a slow (ASan, loaded) machine needs, never a speed test.
template <class Pred>
bool wait_until(Pred pred, int timeout_ms = 30000) {
  for (int waited = 0; waited < timeout_ms; waited += 2) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  std::vector<uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

struct Reply {
  Header header;
  std::vector<uint8_t> payload;
  uint64_t u64() const {
    uint64_t v = 0;
    if (payload.size() == 8) std::memcpy(&v, payload.data(), 8);
    return v;
  }
  VringState state() const {
    VringState s{};
    if (payload.size() == 8) std::memcpy(&s, payload.data(), 8);
    return s;
  }
};

/// Upper-cases the request into the reply; can be made to block inside
/// handle() to keep a request "in flight".
class UpperHandler : public virtio::RequestHandler {
 public:
  uint32_t handle(uint32_t queue_index, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* /*deferrer*/) override {
    {
      std::unique_lock lock(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !blocked_; });
    }
    std::string in(request.remaining(), '\0');
    request.read(in.data(), in.size());
    // A handler that fails by throwing (the worker must survive it).
    if (in == "throw") throw std::runtime_error("test handler throws");
    for (char& c : in) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    size_t n = std::min(in.size(), reply.remaining());
    reply.write(in.data(), n);
    last_queue_ = queue_index;
    calls_.fetch_add(1);
    return static_cast<uint32_t>(n);
  }
  void block() {
    std::lock_guard lock(mu_);
    blocked_ = true;
  }
  void release() {
    std::lock_guard lock(mu_);
    blocked_ = false;
    cv_.notify_all();
  }
  int entered() {
    std::lock_guard lock(mu_);
    return entered_;
  }
  int calls() const { return calls_.load(); }
  uint32_t last_queue() const { return last_queue_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  int entered_ = 0;
  std::atomic<int> calls_{0};
  std::atomic<uint32_t> last_queue_{~0u};
};

/// The front-end's end of the socketpair, with Backend::serve on a thread.
class FakeFrontend {
 public:
  explicit FakeFrontend(virtio::RequestHandler& handler, BackendOptions options = {})
      : backend_(handler, options) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      throw std::runtime_error("socketpair");
    }
    sock_.reset(sv[0]);
    thread_ = std::thread([this, fd = sv[1]] {
      result_ = backend_.serve(UniqueFd(fd));
      done_.store(true);
    });
  }
  ~FakeFrontend() {
    sock_.reset();
    if (thread_.joinable()) thread_.join();
  }

  /// Sends one message; fds are duplicated into the message (ours stay open).
  void send(uint32_t request, const std::vector<uint8_t>& payload, std::vector<int> fds = {},
            uint32_t flags = kVersion, std::optional<uint32_t> size = std::nullopt) {
    Header h{request, flags, size ? *size : static_cast<uint32_t>(payload.size())};
    send_raw(&h, sizeof h, payload, fds);
  }
  void send(Request r, const std::vector<uint8_t>& payload = {}, std::vector<int> fds = {},
            uint32_t flags = kVersion) {
    send(static_cast<uint32_t>(r), payload, std::move(fds), flags);
  }
  void send_raw(const void* head, size_t head_len, const std::vector<uint8_t>& payload,
                const std::vector<int>& fds) {
    std::vector<uint8_t> buf(static_cast<const uint8_t*>(head),
                             static_cast<const uint8_t*>(head) + head_len);
    buf.insert(buf.end(), payload.begin(), payload.end());
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())));
    if (!fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    if (sendmsg(sock_.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(buf.size())) {
      throw std::runtime_error("sendmsg");
    }
  }

  /// The next reply, or nullopt after `timeout_ms` without one (or on EOF).
  std::optional<Reply> recv(int timeout_ms = 30000) {
    Reply r;
    if (!read_exact(&r.header, sizeof r.header, timeout_ms)) return std::nullopt;
    r.payload.resize(r.header.size);
    if (!read_exact(r.payload.data(), r.payload.size(), timeout_ms)) return std::nullopt;
    return r;
  }

  /// Sends a request and returns its reply (asserting one came).
  Reply call(Request r, const std::vector<uint8_t>& payload = {}, std::vector<int> fds = {},
             uint32_t flags = kVersion) {
    send(r, payload, std::move(fds), flags);
    auto reply = recv();
    if (!reply) throw std::runtime_error("no reply");
    return *reply;
  }

  /// With REPLY_ACK negotiated: sends with NEED_REPLY and returns the status.
  uint64_t acked(Request r, const std::vector<uint8_t>& payload = {}, std::vector<int> fds = {}) {
    Reply rep = call(r, payload, std::move(fds), kVersion | kFlagNeedReply);
    if (rep.header.request != static_cast<uint32_t>(r)) throw std::runtime_error("wrong reply");
    return rep.u64();
  }

  /// GET_QUEUE_NUM round trip: proves the back-end still serves, and that no
  /// stray reply was queued before it.
  bool alive() {
    send(Request::kGetQueueNum);
    auto r = recv();
    return r && r->header.request == static_cast<uint32_t>(Request::kGetQueueNum) &&
           r->header.flags == (kVersion | kFlagReply) && r->payload.size() == 8;
  }

  /// Closes our end and waits for serve() to return.
  VoidResult hang_up() {
    sock_.reset();
    thread_.join();
    return result_;
  }
  /// Waits for serve() to return on its own (connection-fatal input).
  VoidResult wait_served() {
    thread_.join();
    return result_;
  }
  bool served() const { return done_.load(); }
  int fd() const { return sock_.get(); }

 private:
  bool read_exact(void* buf, size_t len, int timeout_ms) {
    size_t got = 0;
    while (got < len) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return false;
      ssize_t n = ::recv(sock_.get(), static_cast<char*>(buf) + got, len - got, 0);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }

  Backend backend_;
  UniqueFd sock_;
  std::thread thread_;
  VoidResult result_;
  std::atomic<bool> done_{false};
};

/// Guest RAM: a memfd mapped here too, seen by the back-end at `gpa` and by
/// the "front-end" at user address `uva`.
struct GuestRam {
  static constexpr uint64_t kGpa = 0x100000;
  static constexpr uint64_t kUva = 0x7f1234500000;
  explicit GuestRam(size_t size = 1 << 20) : size(size) {
    fd.reset(memfd_create("guest-ram", MFD_CLOEXEC));
    if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      throw std::runtime_error("memfd");
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    host = static_cast<char*>(p);
  }
  ~GuestRam() { munmap(host, size); }
  uint64_t uva_of(uint64_t gpa) const { return kUva + (gpa - kGpa); }
  MemoryRegion region() const { return MemoryRegion{kGpa, size, kUva, 0}; }

  size_t size;
  UniqueFd fd;
  char* host = nullptr;
};

}  // namespace vfsd::vhost_user::test
