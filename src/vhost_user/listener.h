// The front-end's way in: a UNIX stream socket we listen on (--socket-path)
// or inherit (--fd=N), and the single connection we accept from it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::vhost_user {

/// socket + bind + listen on `path`. The socket appears at `path` only once
/// it listens, with its final mode and group (it is made as `path`.new and
/// renamed), replacing a stale socket left by a daemon that died; any other
/// kind of file at `path` is left alone: EADDRINUSE. ENAMETOOLONG if `path`
/// does not fit in sockaddr_un.
///
/// Whoever connects first becomes the frontend and, through it, the guest:
/// the socket is created 0700 (umask 077 around the bind, as the Rust
/// virtiofsd does), or 0770 owned by `group` (--socket-group) so that the
/// members of that group may connect too. Call it before other threads run:
/// the umask is per process.
/// Pinned by: protocol_test.cc(Listener.*),
/// daemon_process_test.cc(DaemonProcessTest.TheSocketIsTheOwnersOnly)
Result<UniqueFd> listen_unix(const std::string& path, std::optional<gid_t> group = std::nullopt);

/// Waits for and accepts one connection on a listening socket (close-on-exec).
Result<UniqueFd> accept_one(int listen_fd);

}  // namespace vfsd::vhost_user
