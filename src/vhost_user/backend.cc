#include "vhost_user/backend.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include "util/log.h"

namespace vfsd::vhost_user {

namespace {

template <class T>
std::vector<uint8_t> bytes_of(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::vector<uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &value, sizeof(T));
  return out;
}

Result<std::shared_ptr<virtio::MappedRegion>> map_region(const MemoryRegion& r, int fd) {
  if (r.memory_size == 0) return fail(EINVAL);
  return virtio::MappedRegion::map(fd, r.guest_phys_addr, r.memory_size, r.userspace_addr,
                                   r.mmap_offset);
}

constexpr uint32_t kMaxNumQueues = 256;  // the KICK/CALL/ERR index has 8 bits

}  // namespace

Backend::Backend(virtio::RequestHandler& handler, BackendOptions options)
    : handler_(handler), options_(std::move(options)) {
  uint32_t n = std::clamp<uint32_t>(options_.num_queues, 1, kMaxNumQueues);
  if (n != options_.num_queues)
    log::warn("vhost-user: num_queues {} clamped to {}", options_.num_queues, n);
  for (uint32_t i = 0; i < n; ++i) vrings_.push_back(std::make_unique<Vring>());
  if (options_.thread_pool_size > 0)
    pool_ = std::make_unique<ThreadPool>(options_.thread_pool_size);
}

Backend::~Backend() {
  reset_connection();
}

VoidResult Backend::serve(UniqueFd connection) {
  reset_connection();
  conn_ = std::move(connection);
  for (;;) {
    auto msg = read_message(conn_.get());
    if (!msg) {
      log::warn("vhost-user: closing the connection: {}", errno_name(msg.error().value));
      reset_connection();
      return tl::unexpected(msg.error());
    }
    if (!msg->has_value()) {
      log::info("vhost-user: front-end disconnected");
      reset_connection();
      return ok();
    }
    if (auto sent = dispatch(**msg); !sent) {
      log::warn("vhost-user: closing the connection: reply failed: {}",
                errno_name(sent.error().value));
      reset_connection();
      return sent;
    }
  }
}

VoidResult Backend::dispatch(Message& m) {
  const uint32_t code = m.header.request;
  const char* name = request_name(code);
  const size_t nfds = m.fds.size();
  log::debug("vhost-user: {} ({}) size {} fds {} flags {:#x}", name, code, m.header.size, nfds,
             m.header.flags);

  Result<Reply> out = [&]() -> Result<Reply> {
    if (auto v = validate(m); !v) return tl::unexpected(v.error());
    // A message that throws (an allocation that failed) is refused like
    // any other; the connection and the rings go on.
    try {
      return handle(m);
    } catch (const std::exception& e) {
      log::error("vhost-user: {} failed: {}", name, e.what());
      return fail(ENOMEM);
    }
  }();
  // The fds of a message are used (moved out) by its handler or closed here.
  m.fds.clear();

  if (!out) {
    log::warn("vhost-user: refused {} ({}) size {} fds {}: {}", name, code, m.header.size, nfds,
              errno_name(out.error().value));
  } else if (out->has_value()) {
    const std::vector<uint8_t>& payload = **out;
    return send_reply(conn_.get(), code, payload.data(), static_cast<uint32_t>(payload.size()));
  }
  // REPLY_ACK: the front-end waits for a status of a request that has no
  // reply of its own. 0 is success; we send the errno for a failure.
  if (m.need_reply() && (acked_protocol_features_ & kProtocolReplyAck)) {
    uint64_t status = out ? 0 : static_cast<uint64_t>(out.error().value);
    return send_reply(conn_.get(), code, status);
  }
  return ok();
}

Result<Backend::Reply> Backend::handle(Message& m) {
  switch (static_cast<Request>(m.header.request)) {
    case Request::kGetFeatures:
      return bytes_of(offered_features());
    case Request::kSetFeatures:
      return set_features(m);
    case Request::kGetProtocolFeatures:
      return bytes_of(offered_protocol_features());
    case Request::kGetConfig:
      return get_config(m);
    case Request::kSetConfig:
      // The config space of virtio-fs is read-only for the driver.
      return fail(EPERM);
    case Request::kSetProtocolFeatures:
      return set_protocol_features(m);
    case Request::kGetQueueNum:
      return bytes_of(static_cast<uint64_t>(vrings_.size()));
    case Request::kGetMaxMemSlots:
      return bytes_of(kMaxMemSlots);
    case Request::kSetOwner:
      return Reply();
    case Request::kResetOwner:
      // Deprecated; handled as a device reset that also gives up ownership.
      // Protocol features stay: the front-end does not negotiate them again
      // and still expects its REPLY_ACKs.
      reset_rings();
      backend_req_fd_.reset();
      return Reply();
    case Request::kResetDevice:
      reset_rings();
      return Reply();
    case Request::kSetBackendReqFd:
      backend_req_fd_ = std::move(m.fds[0]);
      return Reply();
    case Request::kSetMemTable:
      return set_mem_table(m);
    case Request::kAddMemReg:
      return add_mem_reg(m);
    case Request::kRemMemReg:
      return rem_mem_reg(m);
    case Request::kSetVringNum:
      return set_vring_num(m);
    case Request::kSetVringAddr:
      return set_vring_addr(m);
    case Request::kSetVringBase:
      return set_vring_base(m);
    case Request::kGetVringBase:
      return get_vring_base(m);
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr:
      return set_vring_fd(m);
    case Request::kSetVringEnable:
      return set_vring_enable(m);
    case Request::kSetLogBase:
      return set_log_base(m);
    case Request::kSetDeviceStateFd:
      return set_device_state_fd(m);
    case Request::kCheckDeviceState:
      return check_device_state();
    case Request::kSetLogFd:
      break;  // validate() refused it already
  }
  return fail(ENOSYS);
}

uint64_t Backend::offered_features() const {
  return kOfferedFeatures | (options_.device_state ? kMigrationFeatures : 0);
}

Result<Backend::Reply> Backend::set_features(const Message& m) {
  const uint64_t features = m.payload_as<uint64_t>();
  if (features & ~offered_features()) return fail(EINVAL);
  const bool was_logging = (acked_features_ & kFeatureLogAll) != 0;
  const bool logging = (features & kFeatureLogAll) != 0;
  acked_features_ = features;
  // Applies to running rings at once: QEMU turns logging on while the guest runs.
  dirty_log_.set_enabled(logging);
  if (logging != was_logging && options_.device_state != nullptr) {
    log::info("vhost-user: dirty logging {}", logging ? "on: migration begins" : "off");
    if (logging) {
      options_.device_state->migration_started();
    } else {
      options_.device_state->migration_ended();
    }
  }
  if (!protocol_features_acked()) {
    // Without VHOST_USER_F_PROTOCOL_FEATURES there is no SET_VRING_ENABLE:
    // rings are enabled from the start.
    for (uint32_t i = 0; i < vrings_.size(); ++i) {
      vrings_[i]->enabled = true;
      (void)maybe_start(i);
    }
  }
  return Reply();
}

Result<Backend::Reply> Backend::set_protocol_features(const Message& m) {
  const uint64_t features = m.payload_as<uint64_t>();
  if (features & ~offered_protocol_features()) return fail(EINVAL);
  acked_protocol_features_ = features;
  return Reply();
}

uint64_t Backend::offered_protocol_features() const {
  return kOfferedProtocolFeatures | (options_.tag.empty() ? 0 : kProtocolConfig) |
         (options_.device_state ? kMigrationProtocolFeatures : 0);
}

Result<Backend::Reply> Backend::get_config(const Message& m) {
  if (!(acked_protocol_features_ & kProtocolConfig)) return fail(EINVAL);
  // struct virtio_fs_config: the tag, NUL-padded, then the number of request
  // queues (little-endian, as everything on x86 and arm64 hosts).
  uint8_t space[kMaxTagLength + sizeof(uint32_t)] = {};
  std::memcpy(space, options_.tag.data(), std::min(options_.tag.size(), kMaxTagLength));
  const uint32_t request_queues = static_cast<uint32_t>(vrings_.size() - 1);
  std::memcpy(space + kMaxTagLength, &request_queues, sizeof request_queues);
  const auto head = m.payload_as<ConfigHead>();
  if (head.offset > sizeof space || head.size > sizeof space - head.offset) return fail(EINVAL);
  std::vector<uint8_t> reply(sizeof(ConfigHead) + head.size);
  std::memcpy(reply.data(), &head, sizeof head);
  std::memcpy(reply.data() + sizeof head, space + head.offset, head.size);
  return reply;
}

Result<Backend::Reply> Backend::set_mem_table(const Message& m) {
  const auto head = m.payload_as<MemoryTableHead>();
  std::vector<std::shared_ptr<virtio::MappedRegion>> regions;
  for (uint32_t i = 0; i < head.nregions; ++i) {
    const auto r = m.payload_as<MemoryRegion>(sizeof(MemoryTableHead) + i * sizeof(MemoryRegion));
    auto mapped = map_region(r, m.fds[i].get());
    if (!mapped) return tl::unexpected(mapped.error());
    regions.push_back(std::move(*mapped));
  }
  VFSD_TRY(apply_regions(std::move(regions)));
  return Reply();
}

Result<Backend::Reply> Backend::add_mem_reg(const Message& m) {
  if (regions_.size() >= kMaxMemSlots) return fail(ENOSPC);
  const auto r = m.payload_as<SingleMemoryRegion>().region;
  auto mapped = map_region(r, m.fds[0].get());
  if (!mapped) return tl::unexpected(mapped.error());
  auto regions = regions_;
  regions.push_back(std::move(*mapped));
  VFSD_TRY(apply_regions(std::move(regions)));
  return Reply();
}

Result<Backend::Reply> Backend::rem_mem_reg(const Message& m) {
  // Any fd that came along (older QEMU) was only closed by dispatch().
  const auto r = m.payload_as<SingleMemoryRegion>().region;
  auto regions = regions_;
  auto it = std::find_if(regions.begin(), regions.end(), [&r](const auto& x) {
    return x->guest_phys_addr() == r.guest_phys_addr && x->size() == r.memory_size &&
           x->user_addr() == r.userspace_addr;
  });
  if (it == regions.end()) return fail(ENOENT);
  // A running worker keeps the mapping alive through its snapshot until its
  // current batch ends; the ring memory itself is held by its queue.
  regions.erase(it);
  VFSD_TRY(apply_regions(std::move(regions)));
  return Reply();
}

VoidResult Backend::apply_regions(std::vector<std::shared_ptr<virtio::MappedRegion>> regions) {
  if (regions.size() > kMaxMemSlots) return fail(ENOSPC);
  auto memory = virtio::GuestMemory::create(regions);
  if (!memory) return tl::unexpected(memory.error());
  regions_ = std::move(regions);
  memory_.set(std::make_shared<const virtio::GuestMemory>(std::move(*memory)));
  // A ring that waited only for memory can start now.
  for (uint32_t i = 0; i < vrings_.size(); ++i) (void)maybe_start(i);
  return ok();
}

Result<Backend::Vring*> Backend::vring(uint32_t index) {
  if (index >= vrings_.size()) return fail(EINVAL);
  return vrings_[index].get();
}

Result<Backend::Reply> Backend::set_vring_num(const Message& m) {
  const auto s = m.payload_as<VringState>();
  auto v = vring(s.index);
  if (!v) return tl::unexpected(v.error());
  if (s.num == 0 || s.num > virtio::kMaxQueueSize || (s.num & (s.num - 1)) != 0) {
    return fail(EINVAL);
  }
  if ((*v)->worker) return fail(EBUSY);
  (*v)->size = s.num;
  VFSD_TRY(maybe_start(s.index));
  return Reply();
}

Result<Backend::Reply> Backend::set_vring_addr(const Message& m) {
  const auto a = m.payload_as<VringAddr>();
  auto v = vring(a.index);
  if (!v) return tl::unexpected(v.error());
  Vring& ring = **v;
  if (a.flags & ~kVringFlagLog) return fail(EINVAL);
  if (ring.worker) {
    // A running ring may only have its logging changed.
    const VringAddr& now = ring.addr;
    if (a.desc_user_addr != now.desc_user_addr || a.avail_user_addr != now.avail_user_addr ||
        a.used_user_addr != now.used_user_addr)
      return fail(EBUSY);
  }
  // The ring addresses are checked when the ring starts, against the
  // memory table of that moment; the log address is the front-end's to
  // choose (only the bitmap's size bounds what we mark).
  ring.addr = a;
  ring.addr_set = true;
  ring.used_log.guest_addr.store(a.log_guest_addr, std::memory_order_release);
  ring.used_log.enabled.store((a.flags & kVringFlagLog) != 0, std::memory_order_release);
  if (ring.worker) return Reply();
  VFSD_TRY(maybe_start(a.index));
  return Reply();
}

Result<Backend::Reply> Backend::set_vring_base(const Message& m) {
  const auto s = m.payload_as<VringState>();
  auto v = vring(s.index);
  if (!v) return tl::unexpected(v.error());
  if (s.num > 0xffff) return fail(EINVAL);  // split rings: a 16-bit index
  if ((*v)->worker) return fail(EBUSY);
  (*v)->base = static_cast<uint16_t>(s.num);
  VFSD_TRY(maybe_start(s.index));
  return Reply();
}

Result<Backend::Reply> Backend::get_vring_base(const Message& m) {
  const auto s = m.payload_as<VringState>();
  auto v = vring(s.index);
  if (!v) return tl::unexpected(v.error());
  Vring& ring = **v;
  // Waits for the chain in flight to be completed and put on the used ring.
  stop_ring(ring);
  // Stopped until a new kick fd arrives; no more notifications either.
  ring.kick.reset();
  ring.call.replace(UniqueFd());
  return bytes_of(VringState{s.index, ring.base});
}

Result<Backend::Reply> Backend::set_vring_fd(Message& m) {
  const uint64_t payload = m.payload_as<uint64_t>();
  const uint32_t index = static_cast<uint32_t>(payload & kVringIndexMask);
  auto v = vring(index);
  if (!v) return tl::unexpected(v.error());
  Vring& ring = **v;
  // validate() matched the fd count with the no-fd bit.
  UniqueFd fd = (payload & kVringNoFdMask) ? UniqueFd() : std::move(m.fds[0]);
  switch (static_cast<Request>(m.header.request)) {
    case Request::kSetVringKick:
      // The worker polls the old kick fd: stop it before the fd goes.
      stop_ring(ring);
      ring.kick = std::move(fd);
      if (!ring.kick) {
        log::info("vring {}: no-fd kick (polling) is not supported; ring stays stopped", index);
        return Reply();
      }
      if (!protocol_features_acked()) ring.enabled = true;
      VFSD_TRY(maybe_start(index));
      return Reply();
    case Request::kSetVringCall:
      // Safe while the worker runs: CallFd serialises with signal().
      ring.call.replace(std::move(fd));
      return Reply();
    default:
      ring.err = std::move(fd);  // kept, never written (we report no errors there)
      return Reply();
  }
}

Result<Backend::Reply> Backend::set_vring_enable(const Message& m) {
  const auto s = m.payload_as<VringState>();
  auto v = vring(s.index);
  if (!v) return tl::unexpected(v.error());
  if (s.num > 1) return fail(EINVAL);
  Vring& ring = **v;
  ring.enabled = s.num == 1;
  if (!ring.enabled) {
    stop_ring(ring);
    return Reply();
  }
  VFSD_TRY(maybe_start(s.index));
  return Reply();
}

Result<Backend::Reply> Backend::set_log_base(Message& m) {
  if (!(acked_protocol_features_ & kProtocolLogShmfd)) return fail(EINVAL);
  const auto region = m.payload_as<LogRegion>();
  auto log = DirtyLog::map(m.fds[0].get(), region.mmap_size, region.mmap_offset);
  if (!log) {
    log::warn("vhost-user: cannot map the dirty log ({} bytes at {}): {}", region.mmap_size,
              region.mmap_offset, errno_name(log.error().value));
    return tl::unexpected(log.error());
  }
  dirty_log_.set_log(std::move(*log));
  log::debug("vhost-user: dirty log of {} bytes set", region.mmap_size);
  // With LOG_SHMFD the front-end waits for a reply: the region, echoed.
  return bytes_of(region);
}

Result<Backend::Reply> Backend::set_device_state_fd(Message& m) {
  const auto transfer = m.payload_as<DeviceStateTransfer>();
  auto refuse = [&](const char* why) -> Result<Reply> {
    log::warn("vhost-user: migration state transfer refused: {}", why);
    return bytes_of(kStateReplyError | kStateReplyNoFd);
  };
  if (options_.device_state == nullptr || !(acked_protocol_features_ & kProtocolDeviceState))
    return fail(EINVAL);
  if (transfer.direction != kStateSave && transfer.direction != kStateLoad)
    return refuse("unknown direction");
  if (transfer.phase != kStatePhaseStopped) return refuse("unknown phase");
  for (const auto& ring : vrings_) {
    if (ring->worker) return refuse("a ring still runs (the phase is 'stopped')");
  }
  // A new transfer replaces one nobody checked.
  transfer_.reset();
  UniqueFd fd = std::move(m.fds[0]);
  Result<std::unique_ptr<StateTransfer>> started = fail(EINVAL);
  if (transfer.direction == kStateSave) {
    auto state = options_.device_state->save_state();
    if (!state) return refuse("the device state cannot be saved (see above)");
    log::info("vhost-user: sending {} bytes of device state", state->size());
    started = StateTransfer::save(std::move(fd), std::move(*state));
  } else {
    started = StateTransfer::load(std::move(fd));
  }
  if (!started) return refuse("cannot start the transfer thread");
  transfer_ = std::move(*started);
  transfer_direction_ = transfer.direction;
  return bytes_of(kStateReplyNoFd);  // we use the front-end's fd
}

Result<Backend::Reply> Backend::check_device_state() {
  auto answer = [](bool success) { return bytes_of(uint64_t{success ? 0u : 1u}); };
  if (!transfer_) {
    log::warn("vhost-user: CHECK_DEVICE_STATE without a state transfer");
    return answer(false);
  }
  auto transfer = std::move(transfer_);
  auto bytes = transfer->finish();
  if (!bytes) {
    log::error("vhost-user: the device state transfer failed: {}", errno_name(bytes.error().value));
    return answer(false);
  }
  if (transfer_direction_ == kStateSave) return answer(true);
  log::info("vhost-user: received {} bytes of device state", bytes->size());
  return answer(options_.device_state->load_state(*bytes).has_value());
}

VoidResult Backend::maybe_start(uint32_t index) {
  Vring& ring = *vrings_[index];
  if (ring.worker || !ring.kick || !ring.enabled || ring.size == 0 || !ring.addr_set) return ok();
  auto memory = memory_.get();
  if (!memory) return ok();
  virtio::QueueConfig config;
  config.size = ring.size;
  config.desc_user_addr = ring.addr.desc_user_addr;
  config.avail_user_addr = ring.addr.avail_user_addr;
  config.used_user_addr = ring.addr.used_user_addr;
  config.next_avail = ring.base;
  config.event_idx = (acked_features_ & kFeatureEventIdx) != 0;
  config.indirect = (acked_features_ & kFeatureIndirectDesc) != 0;
  auto queue = virtio::SplitQueue::create(std::move(memory), config);
  if (!queue) {
    log::warn("vring {}: cannot start: ring addresses {:#x}/{:#x}/{:#x} size {}: {}", index,
              config.desc_user_addr, config.avail_user_addr, config.used_user_addr, config.size,
              errno_name(queue.error().value));
    return tl::unexpected(queue.error());
  }
  // Queue 0 is virtio-fs's hiprio queue: served inline (no pool, see
  // BackendOptions::thread_pool_size), never polled, its kicks batched (its
  // FORGETs need no reply, see KickBatching). Request queues do neither.
  const bool hiprio = index == 0;
  ThreadPool* pool = hiprio ? nullptr : pool_.get();
  const auto max_poll = hiprio ? std::chrono::nanoseconds{0} : options_.max_poll;
  const KickBatching batching =
      hiprio
          ? KickBatching{std::max<uint32_t>(1, std::min(options_.hiprio_kick_batch, ring.size / 4)),
                         options_.hiprio_linger}
          : KickBatching{};
  auto worker = VringWorker::start(
      index, std::move(*queue), ring.kick.get(), memory_, ring.call, handler_, pool, max_poll,
      options_.queue_counters ? options_.queue_counters->of(index) : nullptr,
      RingLogging{&dirty_log_, &ring.used_log}, batching);
  if (!worker) {
    log::error("vring {}: cannot start its worker: {}", index, errno_name(worker.error().value));
    return tl::unexpected(worker.error());
  }
  ring.worker = std::move(*worker);
  log::debug("vring {}: started (size {}, base {})", index, ring.size, ring.base);
  return ok();
}

void Backend::stop_ring(Vring& ring) {
  if (!ring.worker) return;
  ring.base = ring.worker->stop();
  ring.worker.reset();
}

void Backend::reset_rings() {
  for (auto& v : vrings_) {
    stop_ring(*v);
    v->size = 0;
    v->addr_set = false;
    v->addr = VringAddr{};
    v->base = 0;
    v->enabled = false;
    v->kick.reset();
    v->err.reset();
    v->call.replace(UniqueFd());
    v->used_log.enabled.store(false, std::memory_order_release);
  }
  if ((acked_features_ & kFeatureLogAll) && options_.device_state != nullptr)
    options_.device_state->migration_ended();
  acked_features_ = 0;
  dirty_log_.set_enabled(false);
}

void Backend::reset_connection() {
  reset_rings();
  acked_protocol_features_ = 0;
  backend_req_fd_.reset();
  transfer_.reset();  // cancels a transfer in progress
  dirty_log_.set_log(nullptr);
  memory_.set(nullptr);
  regions_.clear();
  conn_.reset();
}

}  // namespace vfsd::vhost_user
