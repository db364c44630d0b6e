// The front-end's way in: a UNIX stream socket we listen on (--socket-path)
// or inherit (--fd=N), and the single connection we accept from it.
#pragma once

#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::vhost_user {

/// socket + bind + listen on `path`. A stale socket left at `path` (by a
/// daemon that died) is unlinked first; any other kind of file there is left
/// alone and the bind fails with EADDRINUSE. ENAMETOOLONG if `path` does not
/// fit in sockaddr_un.
Result<UniqueFd> listen_unix(const std::string& path);

/// Waits for and accepts one connection on a listening socket (close-on-exec).
Result<UniqueFd> accept_one(int listen_fd);

}  // namespace vfsd::vhost_user
