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
#include <vector>

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

// What a map line list becomes in /proc/PID/{uid,gid}_map or on the
// command line of newuidmap/newgidmap.
std::vector<NamespaceIdMap> map_or_default(const std::vector<NamespaceIdMap>& given, uint32_t own) {
  if (!given.empty()) return given;
  return {NamespaceIdMap{0, own, 1}};
}

// Whether an unprivileged process may write `map` itself (one line mapping
// its own id once): anything else needs shadow's setuid helper, as in the
// Rust virtiofsd.
bool writable_without_helper(const std::vector<NamespaceIdMap>& map, uint32_t own) {
  return map.size() == 1 && map[0].outside == own && map[0].count <= 1;
}

// Runs `argv` (searched in PATH) and waits; "" on success, else what it
// said on stderr (or why it could not run).
std::string run_helper(const std::vector<std::string>& argv) {
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return std::string("pipe: ") + errno_name(errno);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(err[0]);
    ::close(err[1]);
    return std::string("fork: ") + errno_name(errno);
  }
  if (pid == 0) {
    ::dup2(err[1], STDERR_FILENO);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    const std::string message = "failed to execute " + argv[0] + ": " + errno_name(errno) + "\n";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, message.data(), message.size());
    ::_exit(127);
  }
  ::close(err[1]);
  std::string output;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(err[0], buf, sizeof buf);
    if (n > 0) {
      output.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(err[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (output.empty()) output = argv[0] + " failed with status " + std::to_string(status);
  return output;
}

// Writes the maps of the user namespace `pid` has just entered, from outside
// it: "" on success, else the reason.
std::string write_maps(pid_t pid, const Options& options, uid_t uid, gid_t gid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  const auto uid_map = map_or_default(options.uid_map, uid);
  if (writable_without_helper(uid_map, uid)) {
    const auto& m = uid_map[0];
    if (!write_file(proc + "/uid_map",
                    std::to_string(m.inside) + " " + std::to_string(m.outside) + " 1")) {
      return std::string("write to uid map failed: ") + errno_name(errno);
    }
  } else {
    std::vector<std::string> argv = {"newuidmap", std::to_string(pid)};
    for (const auto& m : uid_map) {
      for (uint32_t v : {m.inside, m.outside, m.count}) argv.push_back(std::to_string(v));
    }
    if (auto error = run_helper(argv); !error.empty()) {
      return "write to uid map failed: " + error;
    }
  }
  const auto gid_map = map_or_default(options.gid_map, gid);
  if (writable_without_helper(gid_map, gid)) {
    const auto& m = gid_map[0];
    if (!write_file(proc + "/setgroups", "deny") ||
        !write_file(proc + "/gid_map",
                    std::to_string(m.inside) + " " + std::to_string(m.outside) + " 1")) {
      return std::string("write to gid map failed: ") + errno_name(errno);
    }
  } else {
    std::vector<std::string> argv = {"newgidmap", std::to_string(pid)};
    for (const auto& m : gid_map) {
      for (uint32_t v : {m.inside, m.outside, m.count}) argv.push_back(std::to_string(v));
    }
    if (auto error = run_helper(argv); !error.empty()) {
      return "write to gid map failed: " + error;
    }
  }
  return "";
}

// A process forked before unshare(CLONE_NEWUSER), so that it stays in the
// parent user namespace where newuidmap's setuid bit counts: it writes the
// maps of the process that forked it once told to.
class MapWriter {
 public:
  VoidResult start(const Options& options, uid_t uid, gid_t gid, std::string& step) {
    int go[2], done[2];
    if (::pipe2(go, O_CLOEXEC) != 0) return failed(step, "pipe");
    if (::pipe2(done, O_CLOEXEC) != 0) {
      ::close(go[0]);
      ::close(go[1]);
      return failed(step, "pipe");
    }
    const pid_t target = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
      for (int fd : {go[0], go[1], done[0], done[1]}) ::close(fd);
      return failed(step, "fork");
    }
    if (pid_ == 0) {
      ::close(go[1]);
      ::close(done[0]);
      char byte = 0;
      if (::read(go[0], &byte, 1) != 1) ::_exit(1);  // the parent gave up
      const std::string error = write_maps(target, options, uid, gid);
      [[maybe_unused]] ssize_t n = ::write(done[1], error.data(), error.size());
      ::_exit(error.empty() ? 0 : 1);
    }
    ::close(go[0]);
    ::close(done[1]);
    go_.reset(go[1]);
    done_.reset(done[0]);
    return ok();
  }

  // After unshare: lets the writer go and waits for it.
  VoidResult finish(std::string& step) {
    const char byte = 1;
    if (::write(go_.get(), &byte, 1) != 1) return failed(step, "starting the id map writer");
    go_.reset();
    std::string message;
    char buf[512];
    for (;;) {
      const ssize_t n = ::read(done_.get(), buf, sizeof buf);
      if (n > 0) {
        message.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      step = message.empty() ? "the id map writer failed" : message;
      return fail(EPERM);
    }
    return ok();
  }

  ~MapWriter() {
    if (pid_ > 0) {
      go_.reset();  // it exits on EOF
      ::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
  UniqueFd go_, done_;
};

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
  // The stop signals, and SIGUSR1 (the request metrics' summary, which the
  // serving child logs).
  constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
  for (int sig : kForwarded) ::sigaction(sig, &sa, nullptr);
  sigset_t unblock;
  sigemptyset(&unblock);
  for (int sig : kForwarded) sigaddset(&unblock, sig);
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
  const bool given_maps = !options.uid_map.empty() || !options.gid_map.empty();
  MapWriter writer;
  if (uid != 0 && given_maps) {
    if (auto started = writer.start(options, uid, gid, step); !started)
      return tl::unexpected(started.error());
  }
  if (::unshare(flags) != 0) return failed(step, "unshare");
  if (uid != 0 && given_maps) {
    if (auto mapped = writer.finish(step); !mapped) return tl::unexpected(mapped.error());
    // As the Rust virtiofsd: root in there, whatever it maps to (the
    // capabilities of the namespace's creator allow it). Without 0 in the
    // map the ids stay as they are.
    if (::setresgid(0, 0, 0) != 0) log::warn("sandbox: cannot become gid 0 in the namespace");
    if (::setresuid(0, 0, 0) != 0) log::warn("sandbox: cannot become uid 0 in the namespace");
  } else if (uid != 0) {
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
