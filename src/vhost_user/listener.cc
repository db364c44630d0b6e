#include "vhost_user/listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vfsd::vhost_user {

namespace {

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Need room for the terminating NUL; an empty path would mean the
  // abstract namespace, which the command line does not ask for.
  if (path.empty() || path.find('\0') != std::string::npos) return fail(EINVAL);
  if (path.size() >= sizeof(addr.sun_path)) return fail(ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

Result<UniqueFd> listen_unix(const std::string& path, std::optional<gid_t> group) {
  auto final_addr = unix_address(path);
  if (!final_addr) return tl::unexpected(final_addr.error());
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) return fail(EADDRINUSE);

  // The socket is made under a temporary name next to `path`, given its
  // group and made listening, and only then renamed into place: a launcher
  // that waits for the path to appear (podman, lima, cloud-hypervisor's
  // tests) can connect at once, and nobody ever sees it with the wrong
  // group. A path too long for the temporary name is bound directly.
  std::string temp = path + ".new";
  auto addr = unix_address(temp);
  if (!addr) {
    temp.clear();
    addr = final_addr;
  }
  const std::string& bound_path = temp.empty() ? path : temp;

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno();
  if (::lstat(bound_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    // Nobody can be serving it once we are asked to: a leftover.
    if (::unlink(bound_path.c_str()) < 0) return fail_errno();
  }
  // The mode comes from the umask at bind time; there is no way to set it
  // on the socket before its inode exists.
  const mode_t old_umask = ::umask(group ? 007 : 077);
  const int bound = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound < 0) return fail(bind_errno);
  auto undo = [&](int error) {
    ::unlink(bound_path.c_str());
    return fail(error);
  };
  if (group && ::chown(bound_path.c_str(), static_cast<uid_t>(-1), *group) < 0) return undo(errno);
  // One front-end at a time; a backlog of 1 is enough.
  if (::listen(fd.get(), 1) < 0) return undo(errno);
  // rename() replaces a stale socket at `path` in one step.
  if (!temp.empty() && ::rename(temp.c_str(), path.c_str()) < 0) return undo(errno);
  return fd;
}

Result<UniqueFd> accept_one(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return fail_errno();
  }
}

}  // namespace vfsd::vhost_user
