#include "vhost_user/message.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>

namespace vfsd::vhost_user {

namespace {

// What a request may carry. Sizes are exact unless min != max; fds likewise.
struct Rule {
  Request request;
  const char* name;
  uint32_t min_size;
  uint32_t max_size;
  uint8_t min_fds;
  uint8_t max_fds;
};

constexpr uint32_t kU64 = sizeof(uint64_t);
constexpr uint32_t kState = sizeof(VringState);

// SET_LOG_FD is named (for logs) but has no rule: QEMU never sends it, and
// we do not need its notification, so it is refused like unknown requests.
constexpr Rule kRules[] = {
    {Request::kGetFeatures, "GET_FEATURES", 0, 0, 0, 0},
    {Request::kSetFeatures, "SET_FEATURES", kU64, kU64, 0, 0},
    {Request::kSetOwner, "SET_OWNER", 0, 0, 0, 0},
    {Request::kResetOwner, "RESET_OWNER", 0, 0, 0, 0},
    {Request::kSetMemTable, "SET_MEM_TABLE", sizeof(MemoryTableHead),
     sizeof(MemoryTableHead) + kMaxMemTableRegions * sizeof(MemoryRegion), 0, kMaxFds},
    {Request::kSetVringNum, "SET_VRING_NUM", kState, kState, 0, 0},
    {Request::kSetVringAddr, "SET_VRING_ADDR", sizeof(VringAddr), sizeof(VringAddr), 0, 0},
    {Request::kSetVringBase, "SET_VRING_BASE", kState, kState, 0, 0},
    {Request::kGetVringBase, "GET_VRING_BASE", kState, kState, 0, 0},
    {Request::kSetVringKick, "SET_VRING_KICK", kU64, kU64, 0, 1},
    {Request::kSetVringCall, "SET_VRING_CALL", kU64, kU64, 0, 1},
    {Request::kSetVringErr, "SET_VRING_ERR", kU64, kU64, 0, 1},
    {Request::kGetProtocolFeatures, "GET_PROTOCOL_FEATURES", 0, 0, 0, 0},
    {Request::kSetProtocolFeatures, "SET_PROTOCOL_FEATURES", kU64, kU64, 0, 0},
    {Request::kGetQueueNum, "GET_QUEUE_NUM", 0, 0, 0, 0},
    {Request::kSetVringEnable, "SET_VRING_ENABLE", kState, kState, 0, 0},
    {Request::kSetBackendReqFd, "SET_BACKEND_REQ_FD", 0, 0, 1, 1},
    {Request::kGetConfig, "GET_CONFIG", sizeof(ConfigHead), sizeof(ConfigHead) + kMaxConfigSize, 0,
     0},
    {Request::kSetConfig, "SET_CONFIG", sizeof(ConfigHead), sizeof(ConfigHead) + kMaxConfigSize, 0,
     0},
    {Request::kResetDevice, "RESET_DEVICE", 0, 0, 0, 0},
    {Request::kGetMaxMemSlots, "GET_MAX_MEM_SLOTS", 0, 0, 0, 0},
    {Request::kAddMemReg, "ADD_MEM_REG", sizeof(SingleMemoryRegion), sizeof(SingleMemoryRegion), 1,
     1},
    // QEMU before 7.1 sent the region's fd with REM_MEM_REG; the spec now
    // says none. Accept both, and ignore the fd.
    {Request::kRemMemReg, "REM_MEM_REG", sizeof(SingleMemoryRegion), sizeof(SingleMemoryRegion), 0,
     1},
    {Request::kSetLogBase, "SET_LOG_BASE", sizeof(LogRegion), sizeof(LogRegion), 1, 1},
    {Request::kSetDeviceStateFd, "SET_DEVICE_STATE_FD", sizeof(DeviceStateTransfer),
     sizeof(DeviceStateTransfer), 1, 1},
    {Request::kCheckDeviceState, "CHECK_DEVICE_STATE", 0, 0, 0, 0},
};

const Rule* find_rule(uint32_t request) {
  for (const Rule& r : kRules) {
    if (static_cast<uint32_t>(r.request) == request) return &r;
  }
  return nullptr;
}

// Takes ownership of every fd in the control messages of `msg`.
void collect_fds(msghdr& msg, std::vector<UniqueFd>& out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      out.emplace_back(fd);
    }
  }
}

}  // namespace

const char* request_name(uint32_t request) {
  if (const Rule* r = find_rule(request)) return r->name;
  if (request == static_cast<uint32_t>(Request::kSetLogFd)) return "SET_LOG_FD";
  return "UNKNOWN";
}

VoidResult validate(const Message& m) {
  const Rule* rule = find_rule(m.header.request);
  if (rule == nullptr) return fail(ENOSYS);
  if (m.fds_truncated) return fail(EINVAL);
  if (m.header.size < rule->min_size || m.header.size > rule->max_size) return fail(EINVAL);
  if (m.payload.size() != m.header.size) return fail(EINVAL);
  if (m.fds.size() < rule->min_fds || m.fds.size() > rule->max_fds) return fail(EINVAL);

  switch (rule->request) {
    case Request::kSetMemTable: {
      auto head = m.payload_as<MemoryTableHead>();
      if (head.nregions > kMaxMemTableRegions) return fail(EINVAL);
      // Each region brings its fd; the payload must hold at least the
      // regions it counts.
      if (m.fds.size() != head.nregions) return fail(EINVAL);
      if (m.header.size < sizeof(MemoryTableHead) + head.nregions * sizeof(MemoryRegion)) {
        return fail(EINVAL);
      }
      break;
    }
    case Request::kGetConfig:
    case Request::kSetConfig: {
      // The window's bytes follow its head, exactly.
      auto head = m.payload_as<ConfigHead>();
      if (head.size > kMaxConfigSize || m.header.size != sizeof(ConfigHead) + head.size) {
        return fail(EINVAL);
      }
      break;
    }
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr: {
      auto v = m.payload_as<uint64_t>();
      if ((v & ~(kVringIndexMask | kVringNoFdMask)) != 0) return fail(EINVAL);
      size_t want = (v & kVringNoFdMask) ? 0 : 1;
      if (m.fds.size() != want) return fail(EINVAL);
      break;
    }
    default:
      break;
  }
  return ok();
}

Result<std::optional<Message>> read_message(int socket_fd) {
  Message m;
  // Header first, with the fds attached to it (the front-end sends them
  // with the message's first byte).
  size_t got = 0;
  while (got < sizeof(Header)) {
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
    iovec iov{reinterpret_cast<char*>(&m.header) + got, sizeof(Header) - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(socket_fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno();
    }
    // Own the fds before anything else can return.
    collect_fds(msg, m.fds);
    if (msg.msg_flags & MSG_CTRUNC) m.fds_truncated = true;
    if (n == 0) {
      if (got == 0 && m.fds.empty()) return std::optional<Message>();
      return fail(ECONNRESET);  // EOF inside a header
    }
    got += static_cast<size_t>(n);
  }
  if ((m.header.flags & kVersionMask) != kVersion) return fail(EPROTO);
  if (m.header.size > kMaxPayloadSize) return fail(EMSGSIZE);

  m.payload.resize(m.header.size);
  got = 0;
  while (got < m.payload.size()) {
    ssize_t n = ::recv(socket_fd, m.payload.data() + got, m.payload.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno();
    }
    if (n == 0) return fail(ECONNRESET);  // EOF inside a payload
    got += static_cast<size_t>(n);
  }
  return std::optional<Message>(std::move(m));
}

VoidResult send_reply(int socket_fd, uint32_t request, const void* payload, uint32_t size) {
  Header h{request, kVersion | kFlagReply, size};
  iovec iov[2] = {{&h, sizeof(h)}, {const_cast<void*>(payload), size}};
  size_t total = sizeof(h) + size;
  size_t sent = 0;
  while (sent < total) {
    // Skip what was already sent (a short send is rare on a socketpair or
    // UNIX socket, but possible).
    iovec rest[2];
    int cnt = 0;
    size_t skip = sent;
    for (const iovec& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      rest[cnt++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = rest;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    ssize_t n = ::sendmsg(socket_fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno();
    }
    sent += static_cast<size_t>(n);
  }
  return ok();
}

}  // namespace vfsd::vhost_user
