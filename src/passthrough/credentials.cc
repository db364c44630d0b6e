#include "passthrough/credentials.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "util/log.h"

namespace vfsd::passthrough {
namespace {

// -1 leaves the real and saved ids untouched: only the effective (and with it
// the filesystem) id moves.
long set_effective_uid(uid_t uid) {
  return ::syscall(SYS_setresuid, -1, uid, -1);
}
long set_effective_gid(gid_t gid) {
  return ::syscall(SYS_setresgid, -1, gid, -1);
}

}  // namespace

Result<ScopedCredentials> ScopedCredentials::enter(uid_t uid, gid_t gid) {
  bool gid_changed = false;
  if (gid != 0) {
    if (set_effective_gid(gid) != 0) return fail_errno();
    gid_changed = true;
  }
  if (uid != 0) {
    if (set_effective_uid(uid) != 0) {
      int error = errno;
      if (gid_changed && set_effective_gid(0) != 0) {
        // A worker stuck with a guest gid would serve later requests wrongly.
        log::error("cannot restore gid 0 after a failed uid switch: {}", errno_name(errno));
        std::abort();
      }
      return fail(error);
    }
  }
  return ScopedCredentials(uid != 0, gid_changed);
}

ScopedCredentials::ScopedCredentials(ScopedCredentials&& other) noexcept
    : uid_changed_(std::exchange(other.uid_changed_, false)),
      gid_changed_(std::exchange(other.gid_changed_, false)) {}

ScopedCredentials::~ScopedCredentials() {
  // A thread that cannot become root again would run the next request with a
  // guest's identity; stopping is the only safe answer.
  if (uid_changed_ && set_effective_uid(0) != 0) {
    log::error("cannot restore uid 0: {}", errno_name(errno));
    std::abort();
  }
  if (gid_changed_ && set_effective_gid(0) != 0) {
    log::error("cannot restore gid 0: {}", errno_name(errno));
    std::abort();
  }
}

}  // namespace vfsd::passthrough
