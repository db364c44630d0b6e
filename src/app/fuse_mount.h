// --fuse-mount=MOUNTPOINT: serves the filesystem through the host's own FUSE
// driver (/dev/fuse) instead of a vhost-user socket, so the same server and
// passthrough can be mounted and tested on the host without a VM.
#pragma once

#include <string>

#include "fuse/filesystem.h"
#include "fuse/server.h"

namespace vfsd::app {

/// Mounts `fs` on `mountpoint` and serves it with `threads` reader threads
/// until SIGTERM or SIGINT (then unmounts, lazily if the mount is busy) or
/// until the mount goes away from outside (umount). Returns the process exit
/// code: 0 after a clean stop, 1 if the mount could not be set up.
/// Blocks SIGTERM and SIGINT in the calling thread while it runs; call it
/// before starting other threads that should not see those signals.
int run_fuse_mount(fuse::FileSystem& fs, const fuse::ServerOptions& options,
                   const std::string& mountpoint, unsigned threads);

}  // namespace vfsd::app
