#include "app/startup.h"

#include <grp.h>
#include <unistd.h>

namespace vfsd::app {

VoidResult drop_supplementary_groups() {
  if (::setgroups(0, nullptr) != 0) {
    // Unprivileged (no CAP_SETGID): the groups are the user's own anyway,
    // and nothing is gained over what that user can already do.
    if (errno == EPERM && ::geteuid() != 0) return ok();
    return fail_errno();
  }
  return ok();
}

}  // namespace vfsd::app
