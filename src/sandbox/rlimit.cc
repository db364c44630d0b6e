#include "sandbox/rlimit.h"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>

#include "util/log.h"

namespace vfsd::sandbox {

Result<uint64_t> set_up_rlimit_nofile(std::optional<uint64_t> requested, std::string& message) {
  constexpr uint64_t kDefault = 1'000'000;
  uint64_t nr_open = 0;
  {
    std::ifstream in("/proc/sys/fs/nr_open");
    if (!(in >> nr_open)) {
      message = "--rlimit-nofile: cannot read /proc/sys/fs/nr_open";
      return fail(EIO);
    }
  }
  struct rlimit current {};
  if (::getrlimit(RLIMIT_NOFILE, &current) != 0) {
    message = "--rlimit-nofile: getrlimit: " + errno_name(errno);
    return fail_errno();
  }
  uint64_t target = 0;
  if (requested) {
    if (*requested == 0) return static_cast<uint64_t>(current.rlim_cur);
    target = *requested;
  } else {
    if (current.rlim_cur >= kDefault) return static_cast<uint64_t>(current.rlim_cur);
    target = std::min(kDefault, nr_open);
  }
  if (target > nr_open) {
    message = "--rlimit-nofile: " + std::to_string(target) + " is above /proc/sys/fs/nr_open (" +
              std::to_string(nr_open) + ")";
    return fail(EINVAL);
  }
  struct rlimit wanted {
    target, target
  };
  if (::setrlimit(RLIMIT_NOFILE, &wanted) == 0) return target;
  const int error = errno;
  if (requested) {
    message = "--rlimit-nofile: setrlimit(" + std::to_string(target) + "): " + errno_name(error);
    return fail(error);
  }
  // Not allowed to raise the hard limit (not root): the hard limit it is.
  log::warn("cannot raise the open file limit to {}; using the hard limit {}", target,
            current.rlim_max);
  struct rlimit hard {
    current.rlim_max, current.rlim_max
  };
  if (::setrlimit(RLIMIT_NOFILE, &hard) != 0) {
    message =
        "--rlimit-nofile: cannot raise the soft limit to the hard limit: " + errno_name(errno);
    return fail_errno();
  }
  return static_cast<uint64_t>(current.rlim_max);
}

uint64_t guest_fd_budget(uint64_t limit) {
  const uint64_t reserve = kInternalFdReserve + kThreadFdReserve;
  return limit > reserve + 1 ? limit - reserve : 1;
}

}  // namespace vfsd::sandbox
