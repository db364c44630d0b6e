// --fuse-mount=MOUNTPOINT: serves the filesystem through the host's own FUSE
// driver (/dev/fuse) instead of a vhost-user socket, so the same server and
// passthrough can be mounted and tested on the host without a VM.
#pragma once

#include <functional>
#include <string>

#include "fuse/filesystem.h"
#include "fuse/server.h"

namespace vfsd::app {

struct FuseMountOptions {
  std::string mountpoint;
  unsigned threads = 1;  // reader threads
  fuse::ServerOptions server;
  /// The mount is made in this process, in the host's mount namespace, and
  /// served by a forked child that enters the sandbox (in `prepare`); this
  /// process waits for it, forwarding SIGTERM/SIGINT/SIGHUP, and unmounts
  /// when it ends. Without it, this process mounts, serves and unmounts.
  bool supervise = false;
};

/// Builds, in the process that will serve and once the mount exists, the
/// filesystem to serve (entering the sandbox, applying seccomp and dropping
/// capabilities on the way). nullptr: give up with `exit_code`.
using PrepareServing = std::function<fuse::FileSystem*(int& exit_code)>;

/// Mounts and serves until SIGTERM or SIGINT (then unmounts, lazily if the
/// mount is busy) or until the mount goes away from outside (umount).
/// Returns the process exit code: 0 after a clean stop, 1 if the mount
/// could not be set up (or what `prepare` said). Blocks SIGTERM and SIGINT
/// in the calling thread while it runs; call it before starting other
/// threads that should not see those signals.
/// Pinned by: run_fuse_mount_test.cc(RunFuseMountTest.*)
int run_fuse_mount(const FuseMountOptions& options, const PrepareServing& prepare);

}  // namespace vfsd::app
