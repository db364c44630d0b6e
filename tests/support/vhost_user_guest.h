// The test as QEMU and the guest driver at once, against a daemon process's
// vhost-user socket: the QEMU 7.2 set-up sequence (one memfd region, the
// hiprio and one request queue), then FUSE requests on the request queue,
// each answered or reported as a failure within a bound. For tests that
// look at what a real daemon process does with a guest's requests
// (tests/unit/app/daemon_process_test.cc).
#pragma once

#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>

#include "support/fuse_codec.h"
#include "support/vhost_user_frontend.h"
#include "support/virtq_driver.h"
#include "vhost_user/message.h"

namespace vfsd::test {

/// A connected stream socket to the unix socket at `path`; invalid on failure.
inline UniqueFd connect_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
  return fd;
}

class VhostUserGuest {
 public:
  ~VhostUserGuest() {
    frontend_.reset();
    if (ram_ != nullptr) ::munmap(ram_, kMemSize);
  }

  /// Connects to `socket_path`, sets the device up and sends INIT (a Linux
  /// 6.1 guest's flags). "" on success, else what went wrong.
  std::string start(const std::string& socket_path) {
    UniqueFd fd = connect_unix(socket_path);
    if (!fd) return "connect: " + std::string(std::strerror(errno));
    if (std::string error = attach(std::move(fd)); !error.empty()) return error;
    Reply reply = init();
    if (!reply.ok()) return "INIT failed: " + std::to_string(reply.error());
    return "";
  }

  /// Sets the device up over an already connected `socket`, without INIT.
  std::string attach(UniqueFd socket) {
    frontend_ = std::make_unique<Frontend>(std::move(socket));
    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    if (!memfd_ || ::ftruncate(memfd_.get(), kMemSize) != 0) return "memfd";
    void* map = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (map == MAP_FAILED) return "mmap";
    ram_ = static_cast<char*>(map);
    drivers_[0] = std::make_unique<VirtqDriver>(ram_, kGpaBase, kHiprioArea, 64);
    drivers_[1] = std::make_unique<VirtqDriver>(ram_ + kHiprioArea, kGpaBase + kHiprioArea,
                                                kMemSize - kHiprioArea, 128);
    try {
      return handshake();
    } catch (const std::exception& e) {  // no reply, or the socket failed
      return std::string("set-up: ") + e.what();
    }
  }

  /// FUSE_INIT with a Linux 6.1 guest's flags.
  Reply init() { return fuse(init_request(next_unique()), sizeof(fuse_out_header) + 256); }

  /// One FUSE request on the request queue; an empty Reply when no answer
  /// came within the bound.
  Reply fuse(const Bytes& request, uint32_t reply_room = 8192) {
    VirtqDriver& d = *drivers_[1];
    d.reset_alloc();
    const uint16_t head = d.add_chain({std::string(request.begin(), request.end())}, {reply_room});
    const uint16_t before = d.used_idx();
    d.set_used_event(before);
    d.publish(head);
    const uint64_t one = 1;
    if (::write(kick_[1].get(), &one, sizeof one) != 8) return {};
    if (wait_eventfd(call_[1].get(), kTimeoutMs) == 0) return {};
    auto [id, len] = d.used_elem(before);
    if (id != head) return {};
    const VirtqDesc first = d.desc(head);
    const VirtqDesc reply = d.desc(first.next);
    const std::string bytes = d.read(reply.addr, std::min<uint32_t>(len, reply.len));
    return decode_reply(Bytes(bytes.begin(), bytes.end()), len);
  }

  RequestBuilder request(uint32_t opcode, uint64_t node, uint32_t uid, uint32_t gid) {
    return RequestBuilder(opcode, node, next_unique()).creds(uid, gid);
  }

 private:
  static constexpr uint64_t kGpaBase = 0x100000;
  static constexpr uint64_t kUvaBase = 0x7f1200000000;
  static constexpr size_t kMemSize = 8 << 20;
  static constexpr size_t kHiprioArea = 1 << 20;
  static constexpr int kTimeoutMs = 30000;

  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }
  uint64_t next_unique() { return unique_ += 2; }

  std::string handshake() {
    using vhost_user::Request;
    Frontend& fe = *frontend_;
    using vhost_user::VringState;
    constexpr uint64_t features = vhost_user::kFeatureVersion1 | vhost_user::kFeatureEventIdx |
                                  vhost_user::kFeatureProtocolFeatures;
    constexpr uint64_t protocol =
        vhost_user::kProtocolReplyAck | vhost_user::kProtocolConfigureMemSlots;
    if ((fe.call(Request::kGetFeatures).u64() & features) != features) return "GET_FEATURES";
    if ((fe.call(Request::kGetProtocolFeatures).u64() & protocol) != protocol) {
      return "GET_PROTOCOL_FEATURES";
    }
    fe.send(Request::kSetProtocolFeatures, bytes(protocol));
    if (fe.acked(Request::kSetOwner) != 0) return "SET_OWNER";
    if (fe.acked(Request::kSetFeatures, bytes(features)) != 0) return "SET_FEATURES";
    vhost_user::SingleMemoryRegion reg{};
    reg.region = {kGpaBase, kMemSize, kUvaBase, 0};
    if (fe.acked(Request::kAddMemReg, bytes(reg), {memfd_.get()}) != 0) return "ADD_MEM_REG";
    for (uint32_t q = 0; q < 2; ++q) {
      VirtqDriver& d = *drivers_[q];
      if (fe.acked(Request::kSetVringNum, bytes(VringState{q, d.queue_size()})) != 0 ||
          fe.acked(Request::kSetVringBase, bytes(VringState{q, 0})) != 0) {
        return "SET_VRING_NUM/BASE";
      }
      vhost_user::VringAddr addr{};
      addr.index = q;
      addr.desc_user_addr = uva(d.desc_gpa());
      addr.used_user_addr = uva(d.used_gpa());
      addr.avail_user_addr = uva(d.avail_gpa());
      if (fe.acked(Request::kSetVringAddr, bytes(addr)) != 0) return "SET_VRING_ADDR";
      kick_[q] = make_eventfd();
      call_[q] = make_eventfd();
      if (fe.acked(Request::kSetVringKick, bytes(uint64_t{q}), {kick_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringCall, bytes(uint64_t{q}), {call_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringEnable, bytes(VringState{q, 1})) != 0) {
        return "SET_VRING_KICK/CALL/ENABLE";
      }
    }
    return "";
  }

  std::unique_ptr<Frontend> frontend_;
  UniqueFd memfd_;
  char* ram_ = nullptr;
  std::unique_ptr<VirtqDriver> drivers_[2];
  UniqueFd kick_[2], call_[2];
  uint64_t unique_ = 0;
};

}  // namespace vfsd::test
