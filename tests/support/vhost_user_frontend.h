// The test as a vhost-user front-end (what QEMU does): sends messages with
// their fds over the UNIX socket and reads the replies, each with a time
// limit so that a back-end that does not answer fails the test instead of
// hanging it. Frontend talks over a socket the test connected (to a daemon
// process, tests/support/vhost_user_guest.h); FakeFrontend also serves a
// vhost_user::Backend of this process on a thread, over a socketpair (the
// vhost_user unit tests, the stack test).
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "util/unique_fd.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "virtio/queue.h"

namespace vfsd::test {

inline UniqueFd make_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

/// Reads an eventfd's counter (0 if it was not signalled).
inline uint64_t drain_eventfd(int fd) {
  uint64_t v = 0;
  if (::read(fd, &v, sizeof v) != sizeof v) return 0;
  return v;
}

/// Waits up to `timeout_ms` for the eventfd to be signalled, then drains it;
/// returns the counter (0: not signalled in time).
inline uint64_t wait_eventfd(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return 0;
  return drain_eventfd(fd);
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

/// A message payload: the bytes of `v`.
template <class T>
std::vector<uint8_t> bytes(const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::vector<uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

class Frontend {
 public:
  struct Reply {
    vhost_user::Header header;
    std::vector<uint8_t> payload;
    /// The payload as a u64 (0 unless it is 8 bytes).
    uint64_t u64() const {
      uint64_t v = 0;
      if (payload.size() == 8) std::memcpy(&v, payload.data(), 8);
      return v;
    }
    vhost_user::VringState state() const {
      vhost_user::VringState s{};
      if (payload.size() == 8) std::memcpy(&s, payload.data(), 8);
      return s;
    }
  };

  Frontend() = default;
  explicit Frontend(UniqueFd socket) : sock_(std::move(socket)) {}

  int fd() const { return sock_.get(); }
  /// Closes our end: the back-end sees the front-end disconnect.
  void close() { sock_.reset(); }

  /// Sends one message (throws when it cannot); fds are duplicated into the
  /// message (ours stay open). `size` overrides the header's payload size.
  void send(uint32_t request, const std::vector<uint8_t>& payload, const std::vector<int>& fds = {},
            uint32_t flags = vhost_user::kVersion, std::optional<uint32_t> size = std::nullopt) {
    vhost_user::Header h{request, flags, size ? *size : static_cast<uint32_t>(payload.size())};
    send_raw(&h, sizeof h, payload, fds);
  }
  void send(vhost_user::Request r, const std::vector<uint8_t>& payload = {},
            const std::vector<int>& fds = {}, uint32_t flags = vhost_user::kVersion) {
    send(static_cast<uint32_t>(r), payload, fds, flags);
  }
  /// `head_len` bytes of `head` (a header, whole or not), then `payload`.
  void send_raw(const void* head, size_t head_len, const std::vector<uint8_t>& payload,
                const std::vector<int>& fds) {
    std::vector<uint8_t> buf(head_len + payload.size());
    if (head_len > 0) std::memcpy(buf.data(), head, head_len);
    if (!payload.empty()) std::memcpy(buf.data() + head_len, payload.data(), payload.size());
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
    if (::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(buf.size())) {
      throw std::runtime_error("sendmsg: " + std::string(std::strerror(errno)));
    }
  }

  /// The next reply, or nullopt after `timeout_ms` without one (or on EOF):
  /// a bound against a hang, far above what a slow ASan build on a loaded
  /// machine needs.
  std::optional<Reply> recv(int timeout_ms = 30000) {
    Reply r;
    if (!read_exact(&r.header, sizeof r.header, timeout_ms)) return std::nullopt;
    r.payload.resize(r.header.size);
    if (!read_exact(r.payload.data(), r.payload.size(), timeout_ms)) return std::nullopt;
    return r;
  }

  /// Sends a request and returns its reply (throws when none came).
  Reply call(vhost_user::Request r, const std::vector<uint8_t>& payload = {},
             const std::vector<int>& fds = {}, uint32_t flags = vhost_user::kVersion) {
    send(r, payload, fds, flags);
    auto reply = recv();
    if (!reply) throw std::runtime_error("no reply to request " + std::to_string(code(r)));
    return *reply;
  }

  /// With REPLY_ACK negotiated: sends with NEED_REPLY and returns the status
  /// the back-end acknowledged (0 = success); throws when no ack came.
  uint64_t acked(vhost_user::Request r, const std::vector<uint8_t>& payload = {},
                 const std::vector<int>& fds = {}) {
    Reply rep = call(r, payload, fds, vhost_user::kVersion | vhost_user::kFlagNeedReply);
    if (rep.header.request != code(r)) {
      throw std::runtime_error("reply to " + std::to_string(rep.header.request) + " for request " +
                               std::to_string(code(r)));
    }
    return rep.u64();
  }

  /// GET_QUEUE_NUM round trip: proves the back-end still serves, and that no
  /// stray reply was queued before it.
  bool alive() {
    send(vhost_user::Request::kGetQueueNum);
    auto r = recv();
    return r && r->header.request == code(vhost_user::Request::kGetQueueNum) &&
           r->header.flags == (vhost_user::kVersion | vhost_user::kFlagReply) &&
           r->payload.size() == 8;
  }

 protected:
  void attach(UniqueFd socket) { sock_ = std::move(socket); }

 private:
  static uint32_t code(vhost_user::Request r) { return static_cast<uint32_t>(r); }

  bool read_exact(void* buf, size_t len, int timeout_ms) {
    size_t got = 0;
    while (got < len) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      ssize_t n = ::recv(sock_.get(), static_cast<char*>(buf) + got, len - got, 0);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }

  UniqueFd sock_;
};

/// The front-end's end of a socketpair, with Backend::serve on a thread.
class FakeFrontend : public Frontend {
 public:
  explicit FakeFrontend(virtio::RequestHandler& handler, vhost_user::BackendOptions options = {})
      : backend_(handler, options) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      throw std::runtime_error("socketpair");
    }
    attach(UniqueFd(sv[0]));
    thread_ = std::thread([this, fd = sv[1]] {
      result_ = backend_.serve(UniqueFd(fd));
      done_.store(true);
    });
  }
  ~FakeFrontend() {
    close();
    if (thread_.joinable()) thread_.join();
  }
  FakeFrontend(const FakeFrontend&) = delete;
  FakeFrontend& operator=(const FakeFrontend&) = delete;

  /// Closes our end and waits for serve() to return.
  VoidResult hang_up() {
    close();
    return wait_served();
  }
  /// Waits for serve() to return on its own (connection-fatal input); may
  /// be called again, with the same result.
  VoidResult wait_served() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  bool served() const { return done_.load(); }

 private:
  vhost_user::Backend backend_;
  std::thread thread_;
  VoidResult result_;
  std::atomic<bool> done_{false};
};

}  // namespace vfsd::test
