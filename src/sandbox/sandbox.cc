#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cap-ng.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <string>

#include "util/log.h"

namespace vfsd::sandbox {
namespace {

// The step that failed, for the caller's message.
tl::unexpected<Errno> failed(std::string& step, const char* what) {
  const int error = errno;
  step = what;
  return fail(error);
}

bool write_file(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return false;
  return ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

// An unprivileged process in a new user namespace maps its own uid and gid
// to root in there, which gives it the capabilities the mount steps need
// (over this namespace only). Writing its own single mapping needs no
// privilege outside; setgroups must be denied first for the gid map.
VoidResult map_self_as_root(uid_t uid, gid_t gid, std::string& step) {
  if (!write_file("/proc/self/setgroups", "deny"))
    return failed(step, "writing /proc/self/setgroups");
  if (!write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1")) {
    return failed(step, "writing /proc/self/uid_map");
  }
  if (!write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
    return failed(step, "writing /proc/self/gid_map");
  }
  return ok();
}

// The mount steps of the namespace sandbox, in the new mount namespace.
Result<Inside> set_up_mounts(const std::string& shared_dir, std::string& step) {
  // Our mounts must not propagate back to the host's namespace.
  if (::mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return failed(step, "making / a recursive slave");
  }
  // A /proc of our own pid namespace, then only its self/fd left visible:
  // mounting /proc/self/fd over /proc hides every other process and file.
  if (::mount("proc", "/proc", "proc", MS_NODEV | MS_NOEXEC | MS_NOSUID | MS_RELATIME, nullptr) !=
      0) {
    return failed(step, "mounting /proc");
  }
  if (::mount("/proc/self/fd", "/proc", nullptr, MS_BIND, nullptr) != 0) {
    return failed(step, "bind-mounting /proc/self/fd over /proc");
  }
  Inside inside;
  inside.proc_self_fd.reset(::open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!inside.proc_self_fd) return failed(step, "opening /proc/self/fd");

  // pivot_root wants the new root to be a mount point.
  if (::mount(shared_dir.c_str(), shared_dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return failed(step, "bind-mounting the shared directory");
  }
  UniqueFd old_root(::open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  if (!old_root) return failed(step, "opening the old root");
  UniqueFd new_root(::open(shared_dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  if (!new_root) return failed(step, "opening the new root");
  if (::fchdir(new_root.get()) != 0) return failed(step, "entering the new root");
  // pivot_root(".", ".") stacks the old root on top of the new one; it is
  // then detached from there.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return failed(step, "pivot_root");
  if (::fchdir(old_root.get()) != 0) return failed(step, "entering the old root");
  if (::mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return failed(step, "making the old root a slave");
  }
  if (::umount2(".", MNT_DETACH) != 0) return failed(step, "detaching the old root");
  if (::fchdir(new_root.get()) != 0) return failed(step, "entering the new root");
  if (::chdir("/") != 0) return failed(step, "chdir /");
  inside.shared_dir = "/";
  return inside;
}

Result<Inside> enter_chroot(const std::string& shared_dir, std::string& step) {
  if (::geteuid() != 0) {
    step = "sandbox mode 'chroot' can only be used by root (use '--sandbox namespace' instead)";
    return fail(EPERM);
  }
  Inside inside;
  // Opened before: the chroot has no /proc.
  inside.proc_self_fd.reset(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!inside.proc_self_fd) return failed(step, "opening /proc/self/fd");
  if (::chroot(shared_dir.c_str()) != 0) return failed(step, "chroot");
  if (::chdir("/") != 0) return failed(step, "chdir / after chroot");
  inside.shared_dir = "/";
  return inside;
}

// The serving child must not outlive a parent that was killed (the launcher
// holds the parent's pid): it gets SIGTERM when the parent dies. The parent
// may have died before the request was made; `parent_pidfd` (opened before
// the fork; getppid() is 0 in a new pid namespace) tells.
void die_with_parent(int parent_pidfd) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (parent_pidfd >= 0) {
    pollfd p{parent_pidfd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) ::_exit(1);
    ::close(parent_pidfd);
  }
}

pid_t g_child = 0;

void forward_signal(int sig) {
  if (g_child > 0) ::kill(g_child, sig);
}

}  // namespace

std::optional<Mode> parse_mode(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "namespace") return Mode::kNamespace;
  if (lower == "chroot") return Mode::kChroot;
  if (lower == "none") return Mode::kNone;
  return std::nullopt;
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kNamespace:
      return "namespace";
    case Mode::kChroot:
      return "chroot";
    case Mode::kNone:
      return "none";
  }
  return "?";
}

int wait_for_child(pid_t child, bool keep_unmount) {
  g_child = child;
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  sigset_t unblock;
  sigemptyset(&unblock);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&unblock, sig);
  ::sigprocmask(SIG_UNBLOCK, &unblock, nullptr);

  // Waiting needs no privilege.
  capng_clear(CAPNG_SELECT_BOTH);
  if (keep_unmount) {
    capng_update(CAPNG_ADD,
                 static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET),
                 CAP_SYS_ADMIN);
  }
  if (capng_apply(CAPNG_SELECT_BOTH) != 0) {
    log::warn("sandbox: the waiting parent could not drop its capabilities");
  }
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(child, &status, 0);
    if (r == child) break;
    if (r < 0 && errno != EINTR) {
      log::error("sandbox: waitpid: {}", errno_name(errno));
      return 1;
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    log::error("sandbox: the child process was terminated by signal {}", WTERMSIG(status));
    // As the Rust virtiofsd (process::exit(-signal)).
    return (256 - WTERMSIG(status)) & 0xff;
  }
  return 1;
}

Result<Inside> enter(const Options& options, std::string& step) {
  char resolved[PATH_MAX];
  if (::realpath(options.shared_dir.c_str(), resolved) == nullptr) {
    return failed(step, "resolving the shared directory");
  }
  const std::string shared_dir = resolved;
  switch (options.mode) {
    case Mode::kNone: {
      Inside inside;
      inside.shared_dir = options.shared_dir;
      return inside;
    }
    case Mode::kChroot:
      return enter_chroot(shared_dir, step);
    case Mode::kNamespace:
      break;
  }

  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  int flags = CLONE_NEWNS | CLONE_NEWNET;
  // Without a fork to follow, a new pid namespace would hold nobody.
  if (!options.in_forked_child) flags |= CLONE_NEWPID;
  // Not root: a user namespace gives the mount steps their privilege there.
  if (uid != 0) flags |= CLONE_NEWUSER;
  if (::unshare(flags) != 0) return failed(step, "unshare");
  if (uid != 0) {
    if (auto mapped = map_self_as_root(uid, gid, step); !mapped) {
      return tl::unexpected(mapped.error());
    }
  }
  if (!options.in_forked_child) {
    // -1 (ENOSYS before Linux 5.3): the check after the fork is skipped.
    const int parent_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
    // A stop signal that reaches the parent before it forwards them (in
    // wait_for_child) stays pending instead of ending the parent alone.
    sigset_t stop_signals, previous_mask;
    sigemptyset(&stop_signals);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, sig);
    ::sigprocmask(SIG_BLOCK, &stop_signals, &previous_mask);
    const pid_t child = ::fork();
    // The parent unblocks them once its forwarders are in place.
    if (child <= 0) ::sigprocmask(SIG_SETMASK, &previous_mask, nullptr);
    if (child < 0) return failed(step, "fork");
    if (child > 0) {
      // Only the child serves: nothing may connect to a socket left
      // listening in the parent (the file stays: the child serves on it).
      if (options.close_in_parent >= 0) ::close(options.close_in_parent);
      if (parent_pidfd >= 0) ::close(parent_pidfd);
      ::_exit(wait_for_child(child));
    }
    die_with_parent(parent_pidfd);
  }
  return set_up_mounts(shared_dir, step);
}

}  // namespace vfsd::sandbox
