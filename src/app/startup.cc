#include "app/startup.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>

namespace vfsd::app {

namespace {

std::string read_small_file(const char* path) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[512];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// "inside outside count" with a count of 1, and nothing else.
bool is_single_id_map(const std::string& map) {
  std::istringstream in(map);
  std::string inside, outside, count, more;
  return static_cast<bool>(in >> inside >> outside >> count) && count == "1" && !(in >> more);
}

}  // namespace

bool can_keep_supplementary_groups(const std::string& setgroups, const std::string& uid_map,
                                   const std::string& gid_map) {
  const bool denied = setgroups.rfind("deny", 0) == 0;
  return denied && is_single_id_map(uid_map) && is_single_id_map(gid_map);
}

VoidResult drop_supplementary_groups() {
  if (::getgroups(0, nullptr) == 0) return ok();
  // Root in a user namespace that maps one uid and one gid and denies
  // setgroups (`unshare --map-root-user`, mkosi --become-root): the kernel
  // refuses the call, and the groups are the launching user's own. As the
  // Rust virtiofsd, serve with them.
  if (::geteuid() == 0 && can_keep_supplementary_groups(read_small_file("/proc/self/setgroups"),
                                                        read_small_file("/proc/self/uid_map"),
                                                        read_small_file("/proc/self/gid_map"))) {
    return ok();
  }
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
