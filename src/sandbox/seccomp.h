// The system-call filter (--seccomp), with libseccomp. The allow-list is the
// one table in seccomp.cc; anything else gets the chosen action. Loaded on
// the main thread before any other thread exists, so every thread inherits
// it.
// Pinned by: seccomp_test.cc(Seccomp.*),
// daemon_process_test.cc(DaemonProcessTest.DefaultSandboxSeccompAndCapabilitiesAsDocumented)
#pragma once

#include <optional>
#include <string_view>

#include "util/result.h"

namespace vfsd::sandbox {

/// kill (the default): the process dies on a syscall not in the table;
/// log: the kernel logs it and it runs; trap: SIGSYS, which we log before the
/// call fails with ENOSYS; none: no filter.
enum class SeccompAction { kKill, kLog, kTrap, kNone };

std::optional<SeccompAction> parse_seccomp_action(std::string_view text);

struct SeccompOptions {
  SeccompAction action = SeccompAction::kKill;
  /// umount2: the --fuse-mount server without a sandbox unmounts itself.
  bool allow_umount = false;
  /// socket/connect/sendto: --syslog writes to /dev/log.
  bool allow_syslog = false;
};

/// Sets PR_SET_NO_NEW_PRIVS and loads the filter (nothing for kNone). Drop
/// the capabilities first: libcap-ng needs prctl, which the filter refuses.
VoidResult enable_seccomp(const SeccompOptions& options);

}  // namespace vfsd::sandbox
