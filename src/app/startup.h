// Start-up steps that change the process itself, each a named function so
// that main() reads as the ordered list of them and a test can run one alone.
#pragma once

#include "util/result.h"

namespace vfsd::app {

/// Drops every supplementary group of the process (setgroups(0, NULL)).
/// Guest operations run under the guest's uid and gid on the worker threads;
/// groups the daemon was started with would otherwise count for them too
/// whenever the guest sends none (CVE-2022-0358). Must run before threads
/// are started (glibc's setgroups applies to every thread, but a thread
/// started later inherits whatever is set then).
VoidResult drop_supplementary_groups();

}  // namespace vfsd::app
