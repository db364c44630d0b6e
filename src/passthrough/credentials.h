// Per-thread credential switching for the operations that create inodes, so
// that the host kernel assigns the new inode the guest caller's uid/gid and
// checks the caller's permissions on the parent directory; and a per-thread
// capability drop for the writes that must clear setuid/setgid bits.
#pragma once

#include <sys/types.h>

#include <span>
#include <vector>

#include "util/result.h"

namespace vfsd::passthrough {

/// Switches the calling thread's effective uid/gid (and, when given, its
/// supplementary groups) to a guest caller's for its lifetime, and back to
/// root when destroyed.
///
/// glibc's setresuid()/setresgid()/setgroups() wrappers broadcast the change
/// to every thread of the process (POSIX semantics), which would hand another
/// worker's request the wrong credentials; this guard uses the raw syscalls,
/// which change only the calling thread. Only the effective ids change: the
/// real and saved ids stay 0, which is what allows switching back.
/// Pinned by: stack_test.cc(StackTest.CreateRunsUnderTheGuestCredentialsOnTheWorkerThread),
/// passthrough_fs_test.cc(PassthroughFsTest.CreatingOperationsRunUnderTheGuestsIdsOnThisThreadOnly)
class ScopedCredentials {
 public:
  /// Switches to (uid, gid, groups): groups and gid first, because after the
  /// uid change the thread no longer has CAP_SETGID. Ids equal to 0 or to
  /// the thread's current ones are left as they are (as the Rust virtiofsd);
  /// an empty `groups` leaves the thread's groups unchanged, and so does a
  /// thread that is not root (an unprivileged daemon cannot set groups).
  /// EOVERFLOW for an id of -1 (which the syscalls take as "unchanged").
  /// Pinned by: guest_ids_test.cc(GuestIdsTest.CreatingRequestsWithAnIdOfMinusOneAreRefused),
  /// semantics_test.cc(SemanticsTest.SupplementaryGroupsOpenGroupDirectoriesForThisRequestOnly)
  static Result<ScopedCredentials> enter(uid_t uid, gid_t gid, std::span<const gid_t> groups = {});

  /// Like enter(), then, if the uid changed, raises CAP_DAC_OVERRIDE in the
  /// thread's effective set.
  /// For a guest that cannot send its supplementary groups (no
  /// FUSE_CREATE_SUPP_GROUP, e.g. Linux 6.1): its kernel already checked the
  /// caller's permission on the parent with the full group list, which the
  /// host cannot repeat. The capability goes away with the uid change back.
  /// Pinned by: semantics_test.cc(
  ///   SemanticsTest.GuestWithoutSupplementaryGroupsIsTrustedForGroupPermission)
  static Result<ScopedCredentials> enter_trusting_guest_permission_check(uid_t uid, gid_t gid);

  ScopedCredentials(ScopedCredentials&& other) noexcept;
  ScopedCredentials& operator=(ScopedCredentials&&) = delete;
  ScopedCredentials(const ScopedCredentials&) = delete;
  ScopedCredentials& operator=(const ScopedCredentials&) = delete;
  /// Restores the ids from before (root for a root daemon): uid first (which
  /// gives back CAP_SETGID), then gid, then the groups the thread had before.
  ~ScopedCredentials();

 private:
  ScopedCredentials() = default;
  bool uid_changed_ = false;
  bool gid_changed_ = false;
  bool groups_changed_ = false;
  uid_t restore_uid_ = 0;
  gid_t restore_gid_ = 0;
  std::vector<gid_t> saved_groups_;
};

/// Removes one capability (e.g. CAP_FSETID) from the calling thread's
/// effective set for its lifetime. The permitted set is untouched, so it can
/// be raised again on destruction. Without CAP_FSETID the host kernel clears
/// setuid/setgid on a write or truncate exactly as for an unprivileged writer,
/// which is what killpriv v2 asks of us.
/// Pinned by: semantics_test.cc(CapabilityDropTest.DropsOnlyThisThreadsCapabilityAndRestoresIt),
/// kill_priv_test.cc(KillPrivTest.*)
class ScopedCapabilityDrop {
 public:
  /// Drops `capability` (a CAP_* number); a no-op guard if the thread does
  /// not have it in its effective set.
  static Result<ScopedCapabilityDrop> drop(int capability);

  ScopedCapabilityDrop(ScopedCapabilityDrop&& other) noexcept;
  ScopedCapabilityDrop& operator=(ScopedCapabilityDrop&&) = delete;
  ScopedCapabilityDrop(const ScopedCapabilityDrop&) = delete;
  ScopedCapabilityDrop& operator=(const ScopedCapabilityDrop&) = delete;
  ~ScopedCapabilityDrop();

 private:
  explicit ScopedCapabilityDrop(int capability) : capability_(capability) {}
  int capability_ = -1;  // -1: nothing to restore
};

/// Whether `capability` is in the calling thread's effective set.
bool thread_has_capability(int capability);

}  // namespace vfsd::passthrough
