// The front-end's way in: a UNIX stream socket we listen on (--socket-path)
// or inherit (--fd=N), and the single connection we accept from it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::vhost_user {

/// socket + bind + listen on `path`. A stale socket left at `path` (by a
/// daemon that died) is unlinked first; any other kind of file there is left
/// alone and the bind fails with EADDRINUSE. ENAMETOOLONG if `path` does not
/// fit in sockaddr_un.
///
/// Whoever connects first becomes the frontend and, through it, the guest:
/// the socket is created 0700 (umask 077 around the bind, as the Rust
/// virtiofsd does), or 0770 owned by `group` (--socket-group) so that the
/// members of that group may connect too. Call it before other threads run:
/// the umask is per process.
Result<UniqueFd> listen_unix(const std::string& path, std::optional<gid_t> group = std::nullopt);

/// Waits for and accepts one connection on a listening socket (close-on-exec).
Result<UniqueFd> accept_one(int listen_fd);

}  // namespace vfsd::vhost_user
