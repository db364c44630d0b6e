#include "app/startup.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/stat.h>
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

Result<UniqueFd> write_pid_file(const std::string& path) {
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return fail_errno();
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return fail_errno();
    // The file locked must still be the one at `path`: a daemon that was
    // exiting may have removed it between our open and our lock.
    struct stat locked {
    }, current{};
    if (::fstat(fd.get(), &locked) != 0) return fail_errno();
    if (::stat(path.c_str(), &current) != 0 || current.st_ino != locked.st_ino ||
        current.st_dev != locked.st_dev) {
      continue;
    }
    const std::string text = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0) return fail_errno();
    if (::pwrite(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
      return fail_errno();
    }
    return fd;
  }
}

}  // namespace vfsd::app
