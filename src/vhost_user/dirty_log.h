// Dirty-page logging for live migration (vhost-user "Migration"): while the
// front-end copies guest RAM to the destination, every page we write into
// (reply bytes in a chain's device-writable buffers, the used ring) must be
// marked in a bitmap the front-end shares with SET_LOG_BASE, one bit per
// 4 KiB guest-physical page, so that it copies the page again.
//
// Logging is on while VHOST_F_LOG_ALL is acknowledged and a log is set. The
// serve thread changes either at any time (QEMU does so with the rings
// running); workers read the current log once per batch through
// DirtyLogSnapshot, which costs one relaxed load while logging is off.
// Pinned by: dirty_log_test.cc(DirtyLog.*), migration_protocol_test.cc(MigrationProtocol.*)
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "util/iovec_io.h"
#include "util/result.h"
#include "virtio/guest_memory.h"

namespace vfsd::vhost_user {

/// One page per bit (the protocol's VHOST_LOG_PAGE).
inline constexpr uint64_t kLogPageSize = 0x1000;

/// The front-end's log bitmap, mapped.
class DirtyLog {
 public:
  /// Maps `size` bytes of `fd` from `offset` (MAP_SHARED). EINVAL for a zero
  /// size or a range the fd does not hold.
  static Result<std::shared_ptr<DirtyLog>> map(int fd, uint64_t size, uint64_t offset);
  /// Over caller-owned memory (tests); never unmapped.
  static std::shared_ptr<DirtyLog> wrap(uint8_t* bitmap, uint64_t size);
  ~DirtyLog();
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  /// Marks every page that [gpa, gpa + len) touches. Pages past the end of
  /// the bitmap are not marked (the front-end sizes the log to cover all of
  /// guest memory; a larger address cannot be a page it copies). Atomic
  /// per byte: workers mark concurrently.
  void mark(uint64_t gpa, uint64_t len) const;
  /// Marks the pages behind the first `len` bytes of `writable` (host
  /// pointers into `memory`): what a reply of `len` bytes wrote.
  void mark_written(const virtio::GuestMemory& memory, const IovecList& writable, size_t len) const;

  /// Pages the bitmap covers.
  uint64_t pages() const { return size_ * 8; }

 private:
  DirtyLog(uint8_t* bitmap, uint64_t size, void* mapping, size_t mapping_len);
  uint8_t* bitmap_;
  uint64_t size_;
  void* mapping_;  // null for wrap()
  size_t mapping_len_;
};

/// The log workers should mark now: null while logging is off.
class DirtyLogSnapshot {
 public:
  std::shared_ptr<const DirtyLog> get() const {
    if (!enabled_.load(std::memory_order_acquire)) return nullptr;
    std::lock_guard lock(mu_);
    return log_;
  }
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  /// VHOST_F_LOG_ALL acknowledged or dropped.
  void set_enabled(bool on) { enabled_.store(on, std::memory_order_release); }
  /// SET_LOG_BASE; null drops the log (connection reset).
  void set_log(std::shared_ptr<const DirtyLog> log) {
    std::lock_guard lock(mu_);
    log_ = std::move(log);
  }
  bool has_log() const {
    std::lock_guard lock(mu_);
    return log_ != nullptr;
  }

 private:
  std::atomic<bool> enabled_{false};
  mutable std::mutex mu_;
  std::shared_ptr<const DirtyLog> log_;
};

/// One ring's used-ring logging: SET_VRING_ADDR's log address, which the
/// front-end turns on (VHOST_VRING_F_LOG) while the ring runs.
struct UsedRingLog {
  std::atomic<bool> enabled{false};
  std::atomic<uint64_t> guest_addr{0};  // guest-physical address of the used ring
};

/// What a worker needs to log its writes; both null: never logs.
struct RingLogging {
  const DirtyLogSnapshot* log = nullptr;
  const UsedRingLog* used = nullptr;
};

}  // namespace vfsd::vhost_user
