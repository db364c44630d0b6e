// The vhost-user wire format (QEMU docs/interop/vhost-user.rst), defined here
// because no system header carries it: the 12-byte header, the payloads we
// use, and the per-request rules on payload size and attached fds. Reading a
// message turns every received fd into a UniqueFd before anything is checked,
// so a refused or truncated message cannot leak one.
// Pinned by: protocol_test.cc(Protocol.*), vhost_user_fuzzer.cc
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::vhost_user {

/// Front-end → back-end request codes (only those we know by name; others
/// are refused as unknown).
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kGetConfig = 24,
  kSetConfig = 25,
  kSetBackendReqFd = 21,  // a.k.a. SET_SLAVE_REQ_FD
  kResetDevice = 34,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetDeviceStateFd = 42,
  kCheckDeviceState = 43,
};

/// Name for logs ("SET_VRING_KICK"), or "UNKNOWN".
const char* request_name(uint32_t request);

// Header flags.
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;

// Virtio / vhost-user feature bits (GET_FEATURES).
/// VHOST_F_LOG_ALL: the front-end migrates and wants our writes logged.
inline constexpr uint64_t kFeatureLogAll = 1ull << 26;
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;

// Protocol feature bits (GET_PROTOCOL_FEATURES). CONFIG (9) is offered only
// with --tag: QEMU 7.1-8.0 crash when a vhost-user-fs back-end offers it,
// while crosvm needs it (it has no tag of its own).
inline constexpr uint64_t kProtocolMq = 1ull << 0;
inline constexpr uint64_t kProtocolLogShmfd = 1ull << 1;
inline constexpr uint64_t kProtocolReplyAck = 1ull << 3;
inline constexpr uint64_t kProtocolBackendReq = 1ull << 5;
inline constexpr uint64_t kProtocolConfig = 1ull << 9;
inline constexpr uint64_t kProtocolConfigureMemSlots = 1ull << 15;
inline constexpr uint64_t kProtocolDeviceState = 1ull << 19;

/// Bits 0-7 of a KICK/CALL/ERR payload are the vring index; bit 8 says that
/// no fd comes with the message.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdMask = 1ull << 8;

/// Most fds one message may carry (SET_MEM_TABLE's 8 regions).
inline constexpr size_t kMaxFds = 8;
/// Regions in one SET_MEM_TABLE.
inline constexpr uint32_t kMaxMemTableRegions = 8;
/// Largest payload read at all; anything bigger closes the connection (it
/// cannot be a message we understand, and buffering it would let the
/// front-end make us allocate at will).
/// Pinned by: protocol_test.cc(Protocol.OversizePayloadClosesTheConnection)
inline constexpr uint32_t kMaxPayloadSize = 4096;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
};
static_assert(sizeof(Header) == 12);

/// SET_VRING_NUM / SET_VRING_BASE / GET_VRING_BASE / SET_VRING_ENABLE.
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};
static_assert(sizeof(VringState) == 8);

/// SET_VRING_ADDR: the front-end's virtual addresses of the three rings.
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};
static_assert(sizeof(VringAddr) == 40);

/// SET_VRING_ADDR flags bit 0 (VHOST_VRING_F_LOG): log used-ring writes at
/// log_guest_addr.
inline constexpr uint32_t kVringFlagLog = 1u << 0;

struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};
static_assert(sizeof(MemoryRegion) == 32);

/// SET_MEM_TABLE: a count, padding, then `nregions` regions (QEMU sends only
/// the used ones, so the payload size varies).
struct MemoryTableHead {
  uint32_t nregions = 0;
  uint32_t padding = 0;
};
static_assert(sizeof(MemoryTableHead) == 8);

/// GET_CONFIG / SET_CONFIG: a window of the device's config space, followed
/// by `size` bytes of it.
struct ConfigHead {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;
};
static_assert(sizeof(ConfigHead) == 12);
/// The largest window (the spec's VHOST_USER_MAX_CONFIG_SIZE).
inline constexpr uint32_t kMaxConfigSize = 256;

/// ADD_MEM_REG / REM_MEM_REG.
struct SingleMemoryRegion {
  uint64_t padding = 0;
  MemoryRegion region;
};
static_assert(sizeof(SingleMemoryRegion) == 40);

/// SET_LOG_BASE (with LOG_SHMFD): the log's size and where it starts in the
/// fd that comes with it.
struct LogRegion {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
};
static_assert(sizeof(LogRegion) == 16);

/// SET_DEVICE_STATE_FD.
struct DeviceStateTransfer {
  uint32_t direction = 0;  // kStateSave or kStateLoad
  uint32_t phase = 0;      // kStatePhaseStopped is the only one defined
};
static_assert(sizeof(DeviceStateTransfer) == 8);
inline constexpr uint32_t kStateSave = 0;
inline constexpr uint32_t kStateLoad = 1;
inline constexpr uint32_t kStatePhaseStopped = 0;
/// SET_DEVICE_STATE_FD's reply: bits 0-7 an error (0: none), bit 8 "no fd
/// comes back" (the front-end's fd is used).
inline constexpr uint64_t kStateReplyNoFd = 1ull << 8;
inline constexpr uint64_t kStateReplyError = 1;

/// One received message: header, payload bytes and the fds that came with it.
struct Message {
  Header header;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
  /// True when more than kMaxFds fds were sent (the kernel dropped the rest).
  bool fds_truncated = false;

  bool need_reply() const { return (header.flags & kFlagNeedReply) != 0; }

  /// Copies the payload's first sizeof(T) bytes out; the caller validated
  /// the size first (validate()).
  template <class T>
  T payload_as(size_t offset = 0) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T out{};
    if (offset <= payload.size() && sizeof(T) <= payload.size() - offset) {
      std::memcpy(&out, payload.data() + offset, sizeof(T));
    }
    return out;
  }
};

/// Checks a message against the rules of its request: known code, payload
/// size, number of fds (including the ones that depend on the payload:
/// SET_MEM_TABLE's region count, the no-fd bit of KICK/CALL/ERR). EINVAL for
/// a bad size or fd count, ENOSYS for an unknown or unsupported request.
/// Pinned by: protocol_test.cc(Protocol.EveryMessageWithAWrongPayloadSizeIsRefusedAndTheNextServed,
/// Protocol.EveryMessageWithAWrongFdCountIsRefusedAndItsFdsClosed)
VoidResult validate(const Message& message);

/// Reads one message from a connected stream socket. nullopt on a clean EOF
/// before a header; an error when the connection cannot continue (EOF or
/// error mid-message, bad version, payload over kMaxPayloadSize). Received
/// fds are close-on-exec.
/// Pinned by: protocol_test.cc(Protocol.EofInsideAMessageIsAnErrorAndCleanEofIsNot,
/// Protocol.GarbageHeaderClosesTheConnectionWithoutLeaks)
Result<std::optional<Message>> read_message(int socket_fd);

/// Sends a reply: header (version 1 | REPLY, same request code) + payload.
VoidResult send_reply(int socket_fd, uint32_t request, const void* payload, uint32_t size);

template <class T>
VoidResult send_reply(int socket_fd, uint32_t request, const T& payload) {
  static_assert(std::is_trivially_copyable_v<T>);
  return send_reply(socket_fd, request, &payload, sizeof(T));
}

}  // namespace vfsd::vhost_user
