// The back-end state of a migration, moving through the fd SET_DEVICE_STATE_FD
// brings (vhost-user "Migrating back-end state"): the sending side writes
// everything and closes its end; the reading side reads to EOF. The front-end
// moves the bytes only after our reply, so the transfer runs on a thread of
// its own; CHECK_DEVICE_STATE waits for it and reports how it ended.
//
// A transfer can always be cancelled (connection reset, daemon exit): the
// thread waits on the fd and on a cancel eventfd together, so a front-end
// that stops reading or writing cannot hang the daemon.
// Pinned by: state_transfer_test.cc(StateTransfer.*),
//   migration_protocol_test.cc(MigrationProtocol.*)
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::vhost_user {

/// The largest state we read (a guest with millions of inodes stays far
/// below): a front-end cannot make us buffer without bound.
inline constexpr size_t kMaxDeviceStateBytes = size_t{1} << 30;

class StateTransfer {
 public:
  /// Writes `state` into `fd`, then closes it.
  static Result<std::unique_ptr<StateTransfer>> save(UniqueFd fd, std::vector<uint8_t> state);
  /// Reads `fd` to EOF (at most `limit` bytes; more is an error: EFBIG).
  static Result<std::unique_ptr<StateTransfer>> load(UniqueFd fd,
                                                     size_t limit = kMaxDeviceStateBytes);
  ~StateTransfer();  // cancels and joins
  StateTransfer(const StateTransfer&) = delete;
  StateTransfer& operator=(const StateTransfer&) = delete;

  /// Waits for the transfer to end. A save yields nothing; a load the bytes
  /// read. The error of a failed transfer (EPIPE: the front-end closed its
  /// end early; ECANCELED after cancel()). Call once.
  Result<std::vector<uint8_t>> finish();
  /// Ends the transfer early; finish() then fails with ECANCELED.
  void cancel();

 private:
  StateTransfer();
  void run_save(UniqueFd fd);
  void run_load(UniqueFd fd, size_t limit);
  // Waits until `fd` is ready for `events` or cancel(); false when cancelled.
  bool wait_for(int fd, short events) const;

  UniqueFd cancel_fd_;  // eventfd
  std::vector<uint8_t> bytes_;
  int error_ = 0;  // written by the thread, read after the join
  std::thread thread_;
};

}  // namespace vfsd::vhost_user
