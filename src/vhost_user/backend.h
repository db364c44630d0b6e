// The vhost-user back-end state machine: feature negotiation, the memory
// table, vring setup, and one VringWorker per started ring. serve() runs on
// the caller's thread and handles one front-end connection message by
// message; the workers run beside it.
//
// Ring life cycle. A ring runs when it has a size (SET_VRING_NUM), ring
// addresses (SET_VRING_ADDR), a kick fd, guest memory, and is enabled. With
// VHOST_USER_F_PROTOCOL_FEATURES negotiated rings start disabled until
// SET_VRING_ENABLE 1; without it a ring is enabled when its kick fd arrives.
// GET_VRING_BASE stops it (after the chain in hand completes) and closes its
// kick and call fds; it runs again once a new kick fd arrives.
//
// No-fd kick (bit 8 of SET_VRING_KICK, "the front-end polls"): we do not
// poll. The ring's previous kick fd is dropped and the ring stays stopped
// until a SET_VRING_KICK with an fd arrives. A no-fd call means "no
// notifications"; a no-fd err drops the err fd.
//
// Settings read at ring start: negotiated EVENT_IDX / INDIRECT_DESC; a
// SET_FEATURES while a ring runs applies from its next start. SET_VRING_NUM,
// SET_VRING_ADDR and SET_VRING_BASE are refused (EBUSY) while the ring runs.
// Pinned by: datapath_test.cc(DataPath.*), protocol_test.cc(Protocol.*), vhost_user_fuzzer.cc
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/metrics.h"
#include "util/result.h"
#include "util/thread_pool.h"
#include "util/unique_fd.h"
#include "vhost_user/dirty_log.h"
#include "vhost_user/listener.h"
#include "vhost_user/message.h"
#include "vhost_user/state_transfer.h"
#include "vhost_user/vring_worker.h"
#include "virtio/guest_memory.h"
#include "virtio/queue.h"

namespace vfsd::vhost_user {

/// What GET_FEATURES offers.
inline constexpr uint64_t kOfferedFeatures =
    kFeatureVersion1 | kFeatureIndirectDesc | kFeatureEventIdx | kFeatureProtocolFeatures;
/// What GET_PROTOCOL_FEATURES offers; CONFIG is added only with a tag (see
/// message.h).
inline constexpr uint64_t kOfferedProtocolFeatures =
    kProtocolMq | kProtocolReplyAck | kProtocolBackendReq | kProtocolConfigureMemSlots;
/// Offered in addition when migration is (BackendOptions::device_state).
inline constexpr uint64_t kMigrationFeatures = kFeatureLogAll;
inline constexpr uint64_t kMigrationProtocolFeatures = kProtocolLogShmfd | kProtocolDeviceState;
/// GET_MAX_MEM_SLOTS; also bounds the regions we map.
inline constexpr uint64_t kMaxMemSlots = 509;

/// The device's internal state, for migration; served by the layer above.
/// Called on the serve thread only.
class DeviceStateHandler {
 public:
  virtual ~DeviceStateHandler() = default;
  /// VHOST_F_LOG_ALL was acknowledged: a migration has begun (this daemon
  /// is its source). Preparation may start.
  virtual void migration_started() {}
  /// VHOST_F_LOG_ALL was dropped: the migration ended (completed or
  /// cancelled); what preparation gathered can go.
  virtual void migration_ended() {}
  /// The state to send; the rings are stopped. An error refuses the
  /// migration (the handler logs why).
  virtual Result<std::vector<uint8_t>> save_state() = 0;
  /// Applies the state a source sent. An error fails the migration (the
  /// handler logs why).
  virtual VoidResult load_state(std::span<const uint8_t> state) = 0;
};

struct BackendOptions {
  /// 1 hiprio + request queues; what GET_QUEUE_NUM reports. Indexes at or
  /// above it are refused. At most 256 (the vring index field is 8 bits).
  uint32_t num_queues = 2;
  /// --tag: the mount tag served in the virtio-fs config space (struct
  /// virtio_fs_config: tag[36], num_request_queues), with the CONFIG
  /// protocol feature. Empty: no config space, CONFIG not offered.
  std::string tag;
  /// --thread-pool-size: the request queues' chains are served by a pool of
  /// at most this many threads, shared by all queues; 0 serves each chain on
  /// its queue's thread. The hiprio queue (FORGET, INTERRUPT: short, and
  /// kept in order) is always served on its own thread.
  uint32_t thread_pool_size = 0;
  /// The longest a request queue's worker polls its ring after it ran dry
  /// (adaptive_poll.h); zero: it always sleeps on the kick.
  std::chrono::nanoseconds max_poll{0};
  /// The hiprio queue (FORGETs) asks for a kick only every this many chains,
  /// at most a quarter of its ring, and serves a batch that does not fill
  /// up after `hiprio_linger` (vring_worker.h, "Kick batching"). 1: a kick
  /// per chain. Needs EVENT_IDX; without it every chain kicks.
  uint32_t hiprio_kick_batch = 32;
  std::chrono::nanoseconds hiprio_linger = std::chrono::microseconds(1000);
  /// Chains popped per queue (index = vring index), if given; it must
  /// outlive the Backend. Queues past its size are not counted.
  metrics::QueueCounters* queue_counters = nullptr;
  /// Migration: with a handler (which must outlive the Backend), dirty
  /// logging and the device-state transfer are offered; without one, neither.
  DeviceStateHandler* device_state = nullptr;
};

/// The longest tag virtio_fs_config holds.
inline constexpr size_t kMaxTagLength = 36;

class Backend {
 public:
  /// `handler` serves the chains of every queue, from one thread per queue
  /// (so concurrently); it must outlive the Backend.
  Backend(virtio::RequestHandler& handler, BackendOptions options);
  ~Backend();  // stops and joins all workers
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  /// Serves one frontend connection until it disconnects. Returns ok() on a clean EOF
  /// (the daemon then exits 0), an error when the connection had to be dropped.
  /// Either way every ring is stopped and all connection state dropped on return.
  VoidResult serve(UniqueFd connection);

 private:
  // Per-vring state, touched only by the serve thread except `call`
  // (shared with the worker, which signals it).
  struct Vring {
    uint32_t size = 0;
    bool addr_set = false;
    VringAddr addr;
    uint16_t base = 0;  // next_avail to start from
    bool enabled = false;
    UniqueFd kick;
    UniqueFd err;
    CallFd call;
    UsedRingLog used_log;                 // read by the worker
    std::unique_ptr<VringWorker> worker;  // set while the ring runs
  };

  // A handler's success: nothing to send but an ack, or a reply payload.
  using Reply = std::optional<std::vector<uint8_t>>;

  VoidResult dispatch(Message& m);
  Result<Reply> handle(Message& m);

  Result<Reply> set_features(const Message& m);
  Result<Reply> set_protocol_features(const Message& m);
  uint64_t offered_protocol_features() const;
  Result<Reply> get_config(const Message& m);
  Result<Reply> set_mem_table(const Message& m);
  Result<Reply> add_mem_reg(const Message& m);
  Result<Reply> rem_mem_reg(const Message& m);
  Result<Reply> set_vring_num(const Message& m);
  Result<Reply> set_vring_addr(const Message& m);
  Result<Reply> set_vring_base(const Message& m);
  Result<Reply> get_vring_base(const Message& m);
  Result<Reply> set_vring_fd(Message& m);  // KICK / CALL / ERR
  Result<Reply> set_vring_enable(const Message& m);
  Result<Reply> set_log_base(Message& m);
  Result<Reply> set_device_state_fd(Message& m);
  Result<Reply> check_device_state();
  uint64_t offered_features() const;

  Result<Vring*> vring(uint32_t index);
  // Installs a new region list as the memory snapshot (validated first).
  VoidResult apply_regions(std::vector<std::shared_ptr<virtio::MappedRegion>> regions);
  // Starts ring `index` if everything it needs is there and it is stopped.
  VoidResult maybe_start(uint32_t index);
  // Stops a running ring, keeping its position for the next start.
  void stop_ring(Vring& v);
  // Stops every ring and forgets their setup (RESET_OWNER / RESET_DEVICE).
  void reset_rings();
  // Drops everything tied to the connection.
  void reset_connection();

  bool protocol_features_acked() const { return (acked_features_ & kFeatureProtocolFeatures) != 0; }

  virtio::RequestHandler& handler_;
  const BackendOptions options_;
  std::unique_ptr<ThreadPool> pool_;  // with thread_pool_size > 0; outlives the workers
  UniqueFd conn_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_features_ = 0;
  UniqueFd backend_req_fd_;  // SET_BACKEND_REQ_FD's channel: held (not leaked), never written
  std::vector<std::shared_ptr<virtio::MappedRegion>> regions_;
  MemorySnapshot memory_;
  std::vector<std::unique_ptr<Vring>> vrings_;
  DirtyLogSnapshot dirty_log_;  // read by the workers
  // The SET_DEVICE_STATE_FD transfer CHECK_DEVICE_STATE waits for.
  std::unique_ptr<StateTransfer> transfer_;
  uint32_t transfer_direction_ = kStateSave;
};

}  // namespace vfsd::vhost_user
