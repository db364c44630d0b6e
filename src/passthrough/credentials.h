// Per-thread credential switching for the operations that create inodes, so
// that the host kernel assigns the new inode the guest caller's uid/gid and
// checks the caller's permissions on the parent directory.
#pragma once

#include <sys/types.h>

#include "util/result.h"

namespace vfsd::passthrough {

/// Switches the calling thread's effective uid/gid to a guest caller's for
/// its lifetime, and back to root when destroyed.
///
/// glibc's setresuid()/setresgid() wrappers broadcast the change to every
/// thread of the process (POSIX semantics), which would hand another worker's
/// request the wrong credentials; this guard uses the raw syscalls, which
/// change only the calling thread. Only the effective ids change: the real and
/// saved ids stay 0, which is what allows switching back.
class ScopedCredentials {
 public:
  /// Switches to (uid, gid): gid first, because after the uid change the
  /// thread no longer has CAP_SETGID. Ids equal to 0 are left as they are.
  static Result<ScopedCredentials> enter(uid_t uid, gid_t gid);

  ScopedCredentials(ScopedCredentials&& other) noexcept;
  ScopedCredentials& operator=(ScopedCredentials&&) = delete;
  ScopedCredentials(const ScopedCredentials&) = delete;
  ScopedCredentials& operator=(const ScopedCredentials&) = delete;
  /// Restores root: uid first (which gives back CAP_SETGID), then gid.
  ~ScopedCredentials();

 private:
  ScopedCredentials(bool uid_changed, bool gid_changed)
      : uid_changed_(uid_changed), gid_changed_(gid_changed) {}
  bool uid_changed_ = false;
  bool gid_changed_ = false;
};

}  // namespace vfsd::passthrough
