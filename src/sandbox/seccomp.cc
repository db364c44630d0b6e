#include "sandbox/seccomp.h"

#include <linux/fs.h>
#include <linux/fscrypt.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <ucontext.h>
#include <unistd.h>

#include <seccomp.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <string>

namespace vfsd::sandbox {
namespace {

// Every system call the daemon makes once it serves, with why. glibc and
// libstdc++ make some on our behalf (threads, memory, time, signals).
// Proven by running the end-to-end guest test and the conformance suite under
// --seccomp=kill (the default): a call missing here kills the daemon and
// fails the run.
constexpr const char* kAllowed[] = {
    // vhost-user socket and its messages (fds arrive with recvmsg).
    "accept4",
    "recvmsg",
    "sendmsg",
    "recvfrom",
    "sendto",
    "read",
    "write",
    "readv",
    "writev",
    "close",
    // Waiting: vring workers poll kick and stop eventfds; condition variables.
    "poll",
    "ppoll",
    "eventfd2",
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "gettimeofday",
    "sched_yield",
    // Threads (queue workers, lock waiters; clone and clone3 have rules of
    // their own below) and memory (guest regions, heap).
    "set_robust_list",
    "rseq",
    "exit",
    "exit_group",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "membarrier",
    "sched_getaffinity",
    "getrandom",
    // Identity: per-thread guest credentials and the CAP_FSETID drop.
    "getpid",
    "gettid",
    "geteuid",
    "getegid",
    "getuid",
    "getgid",
    "getgroups",
    "setgroups",
    "setresuid",
    "setresgid",
    "capget",
    "capset",
    // Signals: the lock waiters are woken with tgkill and a no-op handler.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "tgkill",
    "tkill",
    // Looking up and opening inodes (O_PATH fds, reopening via /proc/self/fd,
    // file handles), and their attributes.
    "openat",
    "openat2",
    "open",
    "name_to_handle_at",
    "open_by_handle_at",
    "fstat",
    "newfstatat",
    "statx",
    "fstatfs",
    "statfs",
    "readlinkat",
    "getdents64",
    "lseek",
    "fcntl",
    "dup",
    // Changing the tree (crash-safe creation links and renames).
    "mkdirat",
    "mknodat",
    "symlinkat",
    "linkat",
    "unlinkat",
    "renameat2",
    "renameat",
    // Attributes.
    "fchmod",
    "fchmodat",
    "fchownat",
    "utimensat",
    "umask",
    // File data: reads and writes straight on guest memory, and the rest.
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "syncfs",
    "copy_file_range",
    "flock",
    // Extended attributes; xattrs of special files go through a private
    // working directory (unshare(CLONE_FS) + fchdir) and path-based calls.
    "fgetxattr",
    "fsetxattr",
    "flistxattr",
    "fremovexattr",
    "getxattr",
    "setxattr",
    "listxattr",
    "removexattr",
    "lgetxattr",
    "lsetxattr",
    "llistxattr",
    "lremovexattr",
    "fchdir",
    // Marks that prove handle inodes alive (passthrough/deletion_watch.h);
    // made through the same working directory. Their fd was made before.
    "inotify_add_watch",
    "inotify_rm_watch",
};

#if defined(__SANITIZE_ADDRESS__)
// Test builds with AddressSanitizer (and LeakSanitizer, which at exit stops
// the world with a ptrace'd helper process): what their runtimes call, so that
// the same filter can run the guest tests of that build. Never in a release
// build.
constexpr bool kSanitizerRuntime = true;
constexpr const char* kSanitizerAllowed[] = {
    "pipe2",     "pipe",  "readlink",  "ptrace",         "wait4",
    "waitid",    "prctl", "getppid",   "sched_getparam", "process_vm_readv",
    "kill",      "clone", "getrusage", "setrlimit",      "prlimit64",
    "getrlimit", "dup2",  "dup3",      "sigaltstack",
};
#else
constexpr bool kSanitizerRuntime = false;
constexpr const char* kSanitizerAllowed[] = {"read"};
#endif

// The ioctls FUSE_IOCTL serves (passthrough/ioctl.cc), by command number:
// ioctl(2) itself would otherwise reach any driver behind a host fd.
constexpr unsigned long kAllowedIoctls[] = {
    FS_IOC_GETFLAGS,
    FS_IOC_SETFLAGS,
    FS_IOC32_GETFLAGS,
    FS_IOC32_SETFLAGS,
    FS_IOC_FSGETXATTR,
    FS_IOC_FSSETXATTR,
    FS_IOC_GET_ENCRYPTION_POLICY_EX,
};

uint32_t action_value(SeccompAction action) {
  switch (action) {
    case SeccompAction::kKill:
      return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::kLog:
      return SCMP_ACT_LOG;
    case SeccompAction::kTrap:
      return SCMP_ACT_TRAP;
    case SeccompAction::kNone:
      break;
  }
  return SCMP_ACT_ALLOW;
}

// --seccomp=trap: say which call was refused and let it fail with ENOSYS
// (async-signal-safe: write(2) only).
void on_sigsys(int, siginfo_t* info, void* context) {
  char text[96];
  const int n = std::snprintf(text, sizeof text, "virtiofsd: seccomp refused system call %d\n",
                              info->si_syscall);
  if (n > 0) (void)!::write(STDERR_FILENO, text, static_cast<size_t>(n));
  auto* uc = static_cast<ucontext_t*>(context);
#if defined(__x86_64__)
  uc->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
#elif defined(__aarch64__)
  uc->uc_mcontext.regs[0] = static_cast<unsigned long long>(-ENOSYS);
#else
  (void)uc;
#endif
}

}  // namespace

std::optional<SeccompAction> parse_seccomp_action(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "kill") return SeccompAction::kKill;
  if (lower == "log") return SeccompAction::kLog;
  if (lower == "trap") return SeccompAction::kTrap;
  if (lower == "none") return SeccompAction::kNone;
  return std::nullopt;
}

VoidResult enable_seccomp(const SeccompOptions& options) {
  // Also what lets an unprivileged process load a filter; and no exec could
  // gain privileges later anyway.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail_errno();
  if (options.action == SeccompAction::kNone) return ok();
  if (options.action == SeccompAction::kTrap) {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGSYS, &sa, nullptr) != 0) return fail_errno();
  }
  scmp_filter_ctx ctx = seccomp_init(action_value(options.action));
  if (ctx == nullptr) return fail(ENOMEM);
  auto allow = [&](const char* name) -> int {
    const int nr = seccomp_syscall_resolve_name(name);
    // A name this architecture does not have (open, renameat on some).
    if (nr == __NR_SCMP_ERROR) return 0;
    return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
  };
  int rc = 0;
  for (const char* name : kAllowed) {
    if ((rc = allow(name)) != 0) break;
  }
  // How many bytes of events the deletion watch's inotify fd has queued.
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, FIONREAD));
  }
  for (unsigned long cmd : kAllowedIoctls) {
    if (rc != 0) break;
    // The command is an unsigned int in the kernel: compare the low 32 bits.
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, cmd & 0xffffffffu));
  }
  // Threads only: clone must carry CLONE_THREAD (no fork, no new
  // namespaces), and clone3, whose flags sit in memory a filter cannot read,
  // answers ENOSYS, which makes glibc fall back to clone.
  if (rc == 0 && !kSanitizerRuntime) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  }
  if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // unshare(CLONE_FS) only: a private working directory for the xattrs of
  // special files; no namespace can be made.
  if (rc == 0) {
    rc =
        seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(unshare), 1, SCMP_A0(SCMP_CMP_EQ, CLONE_FS));
  }
  for (const char* name : kSanitizerAllowed) {
    if (rc != 0 || !kSanitizerRuntime) break;
    rc = allow(name);
  }
  if (rc == 0 && options.allow_umount) rc = allow("umount2");
  if (rc == 0 && options.allow_syslog) {
    for (const char* name : {"socket", "connect", "sendto"}) {
      if ((rc = allow(name)) != 0) break;
    }
  }
  if (rc == 0) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return rc == 0 ? ok() : VoidResult(fail(-rc));
}

}  // namespace vfsd::sandbox
