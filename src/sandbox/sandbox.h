// Isolation of the daemon from the host (--sandbox), as the Rust virtiofsd
// does it:
//  - namespace (the default): new mount, pid and net namespaces (and a user
//    namespace when not root); the shared directory bind-mounted and made
//    the root with pivot_root, the old root detached; a fresh /proc whose
//    self/fd is bind-mounted over /proc, so that the fd the passthrough
//    reopens through is the only part of /proc left. The process that
//    called enter() stays outside as a parent that forwards signals to the
//    serving child and exits with its status.
//  - chroot: chroot(2) into the shared directory, for containers that cannot
//    create namespaces (root only).
//  - none: nothing; the passthrough's own checks are the only confinement.
// Pinned by: sandbox_test.cc(SandboxTest.*), run_escape_test.sh, daemon_process_test.cc(
//   DaemonProcessTest.AnUnprivilegedUserGetsAUserNamespace)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::sandbox {

enum class Mode { kNamespace, kChroot, kNone };

/// "namespace", "chroot", "none" (any case, as the Rust virtiofsd).
std::optional<Mode> parse_mode(std::string_view text);
const char* mode_name(Mode mode);

/// What the filesystem needs from inside the sandbox.
struct Inside {
  /// The shared directory as this process sees it now ("/" when it is the
  /// root, else the path given).
  std::string shared_dir;
  /// /proc/self/fd of the serving process, usable for reopening.
  UniqueFd proc_self_fd;
};

/// One line of a user namespace's uid_map or gid_map (--uid-map, --gid-map).
struct NamespaceIdMap {
  uint32_t inside = 0;
  uint32_t outside = 0;
  uint32_t count = 0;
  friend bool operator==(const NamespaceIdMap&, const NamespaceIdMap&) = default;
};

struct Options {
  Mode mode = Mode::kNamespace;
  std::string shared_dir;
  /// Closed in the parent once the child is running (the listening socket:
  /// only the child accepts on it).
  int close_in_parent = -1;
  /// Namespace mode without a pid namespace and with the caller as the
  /// serving process: the parent of the split stays in the host's mount
  /// namespace, which a --fuse-mount supervisor needs to unmount.
  bool in_forked_child = false;
  /// Namespace mode, not root: the new user namespace's maps. Empty: the
  /// daemon's own uid (gid) as root in there, written directly. Anything but
  /// one line mapping the daemon's own id once is written by newuidmap /
  /// newgidmap (shadow's setuid helpers, which check /etc/subuid and
  /// /etc/subgid), run from a helper process left outside the namespace, as
  /// the Rust virtiofsd does.
  /// Pinned by: daemon_process_test.cc(DaemonProcessTest.AnUnprivilegedUserGetsAUserNamespace,
  ///   DaemonProcessTest.UnprivilegedNamespaceWithUidMapGidMapAndTranslation)
  std::vector<NamespaceIdMap> uid_map;
  std::vector<NamespaceIdMap> gid_map;
};

/// Enters the sandbox. In namespace mode the calling process forks: the
/// parent never returns (it waits for the child, forwarding SIGTERM, SIGINT
/// and SIGHUP, and exits with the child's status) unless
/// `options.in_forked_child` says the caller already is the child. A
/// failure names its step in `step`.
/// Pinned by: sandbox_test.cc(SandboxTest.TheParentForwardsSignalsAndReturnsTheChildsStatus)
Result<Inside> enter(const Options& options, std::string& step);

/// Forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 to `child` and waits for it; returns
/// the exit code to leave with (the child's, or as the Rust virtiofsd for a
/// child killed by a signal). Drops every capability first (a parent that
/// only waits needs none) but CAP_SYS_ADMIN with `keep_unmount` (a FUSE
/// mount's supervisor unmounts afterwards).
/// Pinned by: sandbox_test.cc(SandboxTest.TheParentForwardsSignalsAndReturnsTheChildsStatus),
/// daemon_process_test.cc(DaemonProcessTest.DefaultSandboxSeccompAndCapabilitiesAsDocumented),
/// daemon_metrics_test.cc(DaemonMetrics.SocketServesPrometheusTextAndSigusr1LogsASummary)
int wait_for_child(pid_t child, bool keep_unmount = false);

}  // namespace vfsd::sandbox
