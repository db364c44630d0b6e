// RLIMIT_NOFILE (--rlimit-nofile), as the Rust virtiofsd sets it: by default
// raised to min(1 000 000, /proc/sys/fs/nr_open) unless already higher; N
// sets N; 0 leaves it. Every inode and handle the guest holds can cost an fd.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "util/result.h"

namespace vfsd::sandbox {

/// The fds the daemon keeps for itself out of the limit: one per memory
/// slot (kMaxMemSlots, 509), and room for what it opens besides (the Rust
/// virtiofsd's INTERNAL_FD_RESERVE). Its threads' fds are kThreadFdReserve.
inline constexpr uint64_t kInternalFdReserve = 509 + 100;

/// The daemon's own threads, each of which may hold an fd it opened for a
/// request (not charged to the guest) at any moment: the vring workers, the
/// vhost-user thread, lock waiters' parents. A generous bound.
inline constexpr uint64_t kThreadFdReserve = 64;

/// How many host fds the guest may make the daemon hold under an open file
/// limit of `limit`: the limit minus both reserves, at least 1 so that a tiny
/// limit still lets the guest look something up (and the daemon's own opens
/// then fail with EMFILE, answered as an errno).
/// Pinned by: capabilities_test.cc(RlimitNofile.TheGuestBudgetIsTheLimitLessTheReserve)
uint64_t guest_fd_budget(uint64_t limit);

/// Sets the limit; returns the soft limit in force afterwards. On failure
/// `message` says why.
Result<uint64_t> set_up_rlimit_nofile(std::optional<uint64_t> requested, std::string& message);

}  // namespace vfsd::sandbox
