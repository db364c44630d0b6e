// The capabilities the daemon keeps once it serves (libcap-ng), as the Rust
// virtiofsd: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD and
// SETFCAP, plus DAC_READ_SEARCH when inodes are kept as file handles
// (open_by_handle_at needs it). --modcaps=+x:-y edits that set.
// Pinned by: capabilities_test.cc(Modcaps.*, DropCapabilities.*),
// daemon_process_test.cc(DaemonProcessTest.ModcapsAndFileHandlesChangeTheKeptCapabilities)
#pragma once

#include <set>
#include <string>
#include <string_view>

#include "util/result.h"

namespace vfsd::sandbox {

struct CapabilitySet {
  std::set<std::string> keep;     // upper case, without CAP_ ("CHOWN")
  std::set<std::string> removed;  // named with '-' in --modcaps
};

/// The default set with --modcaps applied. On a bad --modcaps (empty item,
/// a sign other than + or -, an unknown name) `message` says which and the
/// result is EINVAL.
Result<CapabilitySet> capability_set(std::string_view modcaps, bool file_handles,
                                     std::string& message);

/// Keeps exactly `set.keep` (permitted and effective, and the bounding set)
/// for this thread and every thread it starts later; the rest is gone for
/// good. Call before other threads exist.
VoidResult drop_capabilities(const CapabilitySet& set);

}  // namespace vfsd::sandbox
