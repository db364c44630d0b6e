// Start-up steps that change the process itself, each a named function so
// that main() reads as the ordered list of them and a test can run one alone.
#pragma once

#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::app {

/// Drops every supplementary group of the process (setgroups(0, NULL)).
/// Guest operations run under the guest's uid and gid on the worker threads;
/// groups the daemon was started with would otherwise count for them too
/// whenever the guest sends none (CVE-2022-0358). Must run before threads
/// are started (glibc's setgroups applies to every thread, but a thread
/// started later inherits whatever is set then).
/// Root in a user namespace with one uid and one gid mapped and setgroups
/// denied keeps its groups (it cannot drop them), as the Rust virtiofsd does.
/// Pinned by: supplementary_groups_test.cc(SupplementaryGroups.*),
/// config_test.cc(SupplementaryGroups.*), daemon_process_test.cc(
///   DaemonProcessTest.StartsWithoutTheSupplementaryGroupsItWasGiven)
VoidResult drop_supplementary_groups();
/// Whether that exception applies, from /proc/self/{setgroups,uid_map,gid_map}.
bool can_keep_supplementary_groups(const std::string& setgroups, const std::string& uid_map,
                                   const std::string& gid_map);

/// The pid file of a daemon started with --socket-path=P: P.pid, as the Rust
/// virtiofsd writes it (virtme-ng waits for it and signals that pid).
/// Created 0600 if missing, locked with flock(LOCK_EX | LOCK_NB) for as long
/// as the returned fd stays open (the whole run: a second daemon on the same
/// socket fails here, before it touches the socket), then truncated and
/// filled with "<pid>\n". EWOULDBLOCK: another process holds the lock.
/// Pinned by: daemon_process_test.cc(DaemonProcessTest.PidFileNamesTheDaemonAndLocksOutASecondOne)
Result<UniqueFd> write_pid_file(const std::string& path);

}  // namespace vfsd::app
