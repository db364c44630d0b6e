// The test as a vhost-user front-end (what QEMU does): sends messages with
// their fds over the UNIX socket and reads the replies, each with a time
// limit so that a back-end that does not answer fails the test instead of
// hanging it.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "util/unique_fd.h"
#include "vhost_user/message.h"

namespace vfsd::itest {

/// Open fds of this process, not counting the one used to list them.
inline int count_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;
}

inline UniqueFd make_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

/// Waits up to `timeout_ms` for the eventfd to be signalled, then drains it;
/// returns the counter (0: not signalled in time).
inline uint64_t wait_eventfd(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return 0;
  uint64_t v = 0;
  if (::read(fd, &v, sizeof v) != sizeof v) return 0;
  return v;
}

class Frontend {
 public:
  explicit Frontend(UniqueFd socket) : sock_(std::move(socket)) {}

  int fd() const { return sock_.get(); }
  void close() { sock_.reset(); }

  /// Sends one message (version 1, NEED_REPLY if asked) with `fds` attached.
  bool send(vhost_user::Request request, const void* payload, uint32_t size,
            const std::vector<int>& fds = {}, bool need_reply = false) {
    vhost_user::Header h;
    h.request = static_cast<uint32_t>(request);
    h.flags = vhost_user::kVersion | (need_reply ? vhost_user::kFlagNeedReply : 0);
    h.size = size;
    std::vector<uint8_t> buf(sizeof(h) + size);
    std::memcpy(buf.data(), &h, sizeof(h));
    if (size > 0) std::memcpy(buf.data() + sizeof(h), payload, size);
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * vhost_user::kMaxFds)] = {};
    if (!fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    return ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(buf.size());
  }
  template <class T>
  bool send(vhost_user::Request request, const T& payload, const std::vector<int>& fds = {},
            bool need_reply = false) {
    return send(request, &payload, sizeof(T), fds, need_reply);
  }

  struct Reply {
    vhost_user::Header header;
    std::vector<uint8_t> payload;
    uint64_t u64() const {
      uint64_t v = ~0ull;
      if (payload.size() == 8) std::memcpy(&v, payload.data(), 8);
      return v;
    }
  };

  /// Reads one reply; nullopt if none arrives within `timeout_ms` (a bound
  /// against a hang, far above what a slow ASan build on a loaded machine needs).
  std::optional<Reply> receive(int timeout_ms = 30000) {
    Reply r;
    if (!read_full(&r.header, sizeof(r.header), timeout_ms)) return std::nullopt;
    r.payload.resize(r.header.size);
    if (r.header.size > 0 && !read_full(r.payload.data(), r.header.size, timeout_ms)) {
      return std::nullopt;
    }
    return r;
  }

  /// A request answered by a payload (GET_*): returns the reply.
  template <class T>
  std::optional<Reply> call(vhost_user::Request request, const T& payload) {
    if (!send(request, payload)) return std::nullopt;
    return receive();
  }
  std::optional<Reply> call(vhost_user::Request request) {
    if (!send(request, nullptr, 0)) return std::nullopt;
    return receive();
  }

  /// A request sent with NEED_REPLY (REPLY_ACK negotiated): returns the
  /// status the back-end acknowledged (0 = success), or -1 when no ack came.
  template <class T>
  int64_t acked(vhost_user::Request request, const T& payload, const std::vector<int>& fds = {}) {
    return acked_raw(request, &payload, sizeof(T), fds);
  }
  int64_t acked_raw(vhost_user::Request request, const void* payload, uint32_t size,
                    const std::vector<int>& fds = {}) {
    if (!send(request, payload, size, fds, /*need_reply=*/true)) return -1;
    auto r = receive();
    if (!r || r->header.request != static_cast<uint32_t>(request) || r->payload.size() != 8) {
      return -1;
    }
    return static_cast<int64_t>(r->u64());
  }

 private:
  bool read_full(void* dst, size_t n, int timeout_ms) {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
      pollfd pfd{sock_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1) return false;
      ssize_t got = ::recv(sock_.get(), p, n, 0);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }

  UniqueFd sock_;
};

}  // namespace vfsd::itest
