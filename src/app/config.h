// The command line, parsed into a Config. The option names and meanings are
// those of the Rust virtiofsd 1.13 (and its legacy `-o` form), so that a
// libvirt or Kata configuration that starts it can start us instead.
// Pinned by: config_test.cc(CommandLine.*), run_launcher_test.sh
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "passthrough/passthrough_fs.h"
#include "sandbox/capabilities.h"
#include "sandbox/sandbox.h"
#include "sandbox/seccomp.h"
#include "util/result.h"

namespace vfsd::app {

struct Config {
  std::string socket_path;            // --socket-path (or the deprecated --socket)
  std::optional<int> listen_fd;       // --fd: an inherited listening socket
  std::string socket_group;           // --socket-group: a group that may connect too
  std::optional<gid_t> socket_gid;    // its gid (check_before_start resolves it)
  bool reconnect = false;             // --reconnect: serve the next frontend after a disconnect
  std::string fuse_mountpoint;        // --fuse-mount: serve over /dev/fuse on the host instead
  std::string tag;                    // --tag: served in the config space (empty: none)
  std::string metrics_socket;         // --metrics-socket: Prometheus text here (empty: none)
  passthrough::PassthroughConfig fs;  // the filesystem options
  bool readdirplus = true;            // --no-readdirplus turns it off (so does --cache=never)
  std::string log_level = "info";     // --log-level (or -d, -o loglevel=)
  uint32_t thread_pool_size = 0;      // --thread-pool-size: 0 serves on the queue threads
  uint32_t poll_max_us = 8;           // --poll-max-us: 0 never polls a ring
  bool syslog = false;                // --syslog: log to LOG_USER instead of stderr
  sandbox::Mode sandbox = sandbox::Mode::kNamespace;               // --sandbox
  sandbox::SeccompAction seccomp = sandbox::SeccompAction::kKill;  // --seccomp
  sandbox::CapabilitySet capabilities;    // the defaults edited by --modcaps
  std::optional<uint64_t> rlimit_nofile;  // --rlimit-nofile (unset: the Rust default)
  /// --uid-map / --gid-map: the user namespace's maps (--sandbox=namespace,
  /// not root); empty: the daemon's own ids mapped to root in there.
  std::vector<sandbox::NamespaceIdMap> uid_map;
  std::vector<sandbox::NamespaceIdMap> gid_map;
  /// --migration-*: how the state moves (app/migration_handler.h).
  struct Migration {
    std::string mode = "find-paths";  // find-paths | file-handles
    std::string on_error = "abort";   // abort | guest-error
    bool verify_handles = false;
    bool confirm_paths = false;
  } migration;
  /// Deprecation warnings to log once logging is set up.
  std::vector<std::string> warnings;
};

/// Request queues offered (GET_QUEUE_NUM less the hiprio queue). QEMU's
/// vhost-user-fs-pci sets up as many as its num-request-queues asks for, up
/// to this, and serves the guest its own config space. With --tag the config
/// space is ours and announces every offered queue, which a front-end with a
/// fixed queue count (crosvm, vhost-user-device) would not set up: then one.
inline constexpr uint32_t kMaxRequestQueues = 16;
inline uint32_t offered_request_queues(const Config& config) {
  return config.tag.empty() ? kMaxRequestQueues : 1;
}

/// What parsing decided: run with a config, or exit now with a code (after
/// --help / --version, or a usage error that was already printed).
struct ParseOutcome {
  std::optional<Config> config;
  int exit_code = 0;
};

ParseOutcome parse_command_line(int argc, const char* const* argv);

/// The checks of a parsed command line against the host that can fail
/// before anything is created (the shared directory is a directory, the
/// socket path fits a sockaddr_un, --fd is a listening socket, the
/// --socket-group exists; resolves socket_gid). Returns "" or the one-line
/// usage error naming the option and the reason.
/// Pinned by: daemon_process_test.cc(
///   DaemonProcessTest.UsageErrorsAreOneLineNameTheOptionAndCreateNothing)
std::string check_before_start(Config& config);

/// Prints a usage error as the single line "virtiofsd: MESSAGE" on stderr
/// (newlines inside MESSAGE become "; "); returns the exit status, 1.
int report_usage_error(std::string_view message);

/// What --print-capabilities prints: the vhost-user.json "type" and
/// "features" of this backend.
std::string capabilities_json();

/// The log level an env_logger RUST_LOG spec sets for virtiofsd ("error",
/// "ERROR", "info,virtiofsd=debug", ...), or nothing if it sets none.
std::optional<std::string> log_level_from_rust_log(std::string_view spec);

/// One --uid-map / --gid-map value as 1.13.3 parses it: `:inside:outside:count:`
/// (any non-alphanumeric delimiter, the same at both ends and between).
/// nullopt with `message` (1.13.3's wording) when it is not one.
std::optional<sandbox::NamespaceIdMap> parse_namespace_id_map(std::string_view text,
                                                              std::string& message);

}  // namespace vfsd::app
