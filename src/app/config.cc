#include "app/config.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

namespace vfsd::app {

namespace {

using passthrough::CachePolicy;
using passthrough::InodeFileHandles;

const std::map<std::string, CachePolicy> kCachePolicies = {
    {"never", CachePolicy::kNever},
    {"metadata", CachePolicy::kMetadata},
    {"auto", CachePolicy::kAuto},
    {"always", CachePolicy::kAlways},
};

const std::map<std::string, InodeFileHandles> kFileHandleModes = {
    {"never", InodeFileHandles::kNever},
    {"prefer", InodeFileHandles::kPrefer},
    {"fallback", InodeFileHandles::kPrefer},  // deprecated alias, as in the Rust virtiofsd
    {"mandatory", InodeFileHandles::kMandatory},
};

const std::vector<std::string> kLogLevels = {"error", "warn", "info", "debug", "trace", "off"};

// The boolean switches of the command line, by their `-o` names. Each has a
// long option (`--name-with-dashes`); `-o name` sets it, `-o no_name` clears it.
struct Switches {
  bool xattr = false, posix_acl = false, security_label = false, readonly = false;
  bool writeback = false, allow_direct_io = false, allow_mmap = false, preserve_noatime = false;
  bool killpriv_v2 = false, no_killpriv_v2 = false, posix_lock = false, flock = false;
  bool ascii_casefold = false, rewrite_security_xattrs = false;
  bool no_readdirplus = false, announce_submounts = true, no_announce_submounts = false;
};

// The `-o key=value` items that set an option value (the rest set fields of
// Config directly).
struct CompatValues {
  std::string& cache;
  std::string& sandbox;
  std::string& modcaps;
};

// `-o key=value`.
std::string apply_compat_value(const std::string& key, const std::string& value, Config& config,
                               const CompatValues& values) {
  if (key == "source") {
    config.fs.shared_dir = value;
  } else if (key == "cache") {
    // The legacy daemon called "never" "none".
    static const std::map<std::string, std::string> names = {
        {"none", "never"}, {"auto", "auto"}, {"always", "always"}, {"metadata", "metadata"}};
    auto it = names.find(value);
    if (it == names.end()) return "Invalid compat value '" + value + "' for '-o cache'";
    values.cache = it->second;
  } else if (key == "sandbox") {
    // The legacy form knows the two sandboxes only, as in the Rust virtiofsd.
    if (value != "namespace" && value != "chroot") {
      return "Invalid compat value '" + value + "' for '-o sandbox'";
    }
    values.sandbox = value;
  } else if (key == "modcaps") {
    values.modcaps = value;
  } else if (key == "loglevel" || key == "log_level") {
    static const std::map<std::string, std::string> names = {
        {"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"err", "error"}};
    auto it = names.find(value);
    if (it == names.end()) return "Invalid compat value '" + value + "' for '-o " + key + "'";
    config.log_level = it->second;
  } else if (key == "xattrmap") {
    config.fs.xattrmap = value;
  } else {
    return "Invalid compat argument '-o " + key + "=" + value + "'";
  }
  return "";
}

// `-o name` and `-o no_name`: a switch on or off.
std::string apply_compat_switch(const std::string& option, Switches& sw) {
  const std::map<std::string, std::pair<bool*, bool>> singles = {
      {"xattr", {&sw.xattr, true}},
      {"no_xattr", {&sw.xattr, false}},
      {"readdirplus", {&sw.no_readdirplus, false}},
      {"no_readdirplus", {&sw.no_readdirplus, true}},
      {"writeback", {&sw.writeback, true}},
      {"no_writeback", {&sw.writeback, false}},
      {"allow_direct_io", {&sw.allow_direct_io, true}},
      {"no_allow_direct_io", {&sw.allow_direct_io, false}},
      {"announce_submounts", {&sw.announce_submounts, true}},
      {"killpriv_v2", {&sw.killpriv_v2, true}},
      {"no_killpriv_v2", {&sw.killpriv_v2, false}},
      {"posix_acl", {&sw.posix_acl, true}},
      {"no_posix_acl", {&sw.posix_acl, false}},
      {"security_label", {&sw.security_label, true}},
      {"no_security_label", {&sw.security_label, false}},
      // The Rust virtiofsd accepts only the no_ forms (it has no remote
      // locks); we forward locks to the host, so both forms mean something.
      {"posix_lock", {&sw.posix_lock, true}},
      {"no_posix_lock", {&sw.posix_lock, false}},
      {"flock", {&sw.flock, true}},
      {"no_flock", {&sw.flock, false}},
  };
  auto it = singles.find(option);
  if (it == singles.end()) return "Invalid compat argument '-o " + option + "'";
  *it->second.first = it->second.second;
  return "";
}

// One item of the legacy `-o a,b=c` form. Returns an error message or "".
std::string apply_compat_option(const std::string& option, Config& config, Switches& sw,
                                const CompatValues& values) {
  auto eq = option.find('=');
  if (eq == std::string::npos) return apply_compat_switch(option, sw);
  return apply_compat_value(option.substr(0, eq), option.substr(eq + 1), config, values);
}

}  // namespace

std::string capabilities_json() {
  // "separate-options": libvirt then passes --shared-dir etc. instead of -o.
  // "migrate-precopy": the back-end state moves with DEVICE_STATE, our
  // writes are dirty-logged (LOG_ALL).
  return "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"migrate-precopy\",\n    "
         "\"separate-options\"\n  ]\n}\n";
}

std::optional<std::string> log_level_from_rust_log(std::string_view spec) {
  std::optional<std::string> level;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view directive = spec.substr(start, comma - start);
    start = comma + 1;
    // "level" applies to every module; "module=level" to that module: ours
    // is virtiofsd (a bare module name means trace, as env_logger has it).
    std::string_view name = directive;
    std::string value;
    if (auto eq = directive.find('='); eq != std::string_view::npos) {
      if (directive.substr(0, eq) != "virtiofsd") continue;
      name = directive.substr(eq + 1);
    } else if (directive == "virtiofsd") {
      level = "trace";
      continue;
    }
    for (char c : name) value += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (value == "warning") value = "warn";
    if (std::find(kLogLevels.begin(), kLogLevels.end(), value) != kLogLevels.end()) level = value;
  }
  return level;
}

std::optional<sandbox::NamespaceIdMap> parse_namespace_id_map(std::string_view text,
                                                              std::string& message) {
  const std::string incomplete = "The map is empty or incorrect number of values are provided";
  const std::string bad_delimiter =
      "A delimiter has been found that does not match the delimiter the map started with";
  if (text.empty()) {
    message = incomplete;
    return std::nullopt;
  }
  const char delimiter = text.back();
  if (std::isalnum(static_cast<unsigned char>(delimiter)) || text.front() != delimiter ||
      text.size() < 2) {
    message = bad_delimiter;
    return std::nullopt;
  }
  std::string_view inner = text.substr(1, text.size() - 2);
  std::vector<std::string_view> fields;
  for (;;) {
    const size_t next = inner.find(delimiter);
    fields.push_back(inner.substr(0, next));
    if (next == std::string_view::npos) break;
    inner.remove_prefix(next + 1);
  }
  if (fields.size() != 3) {
    message = incomplete;
    return std::nullopt;
  }
  uint32_t values[3] = {};
  for (size_t i = 0; i < 3; ++i) {
    // The same u32 grammar (and error texts) as the --translate-* numbers.
    auto value = passthrough::parse_id(fields[i], message);
    if (!value) return std::nullopt;
    values[i] = *value;
  }
  return sandbox::NamespaceIdMap{values[0], values[1], values[2]};
}

namespace {

// The command line as parsed, before it becomes a Config: the values that
// need a default, a conversion, or a check against other options first.
struct Options {
  Config config;
  Switches sw;
  std::string cache = "auto";
  // 1.13.3's default (it was never before): launchers such as libvirt
  // cannot pass the option, and held O_PATH fds pile up without it.
  std::string file_handles = "prefer";
  std::string deprecated_socket;
  std::vector<std::string> compat_options;
  bool compat_debug = false, compat_foreground = false;
  int fd = -1;
  bool print_capabilities = false;
  bool tag_given = false;
  std::string migration_mode = "find-paths", migration_on_error = "abort";
  bool migration_verify_handles = false, migration_confirm_paths = false;
  std::string sandbox_mode = "namespace", seccomp_action = "kill", modcaps;
  std::optional<uint64_t> rlimit_nofile;
  std::vector<std::string> uid_maps, gid_maps, translate_uids, translate_gids;
};

// An option given once per value (`--uid-map A --uid-map B`), each value a
// word of its own.
CLI::Option* add_repeatable(CLI::App& cli, const std::string& name,
                            std::vector<std::string>& values, const std::string& help) {
  return cli.add_option(name, values, help)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

// What is shared, and how a frontend (or the host kernel) reaches it.
void add_endpoint_options(CLI::App& cli, Options& o) {
  Config& config = o.config;
  cli.add_option("--shared-dir", config.fs.shared_dir, "Shared directory path");
  auto* socket = cli.add_option("--socket-path", config.socket_path,
                                "vhost-user socket path (created, replacing a stale one)");
  auto* old_socket =
      cli.add_option("--socket", o.deprecated_socket, "vhost-user socket path [deprecated]");
  auto* fd_option =
      cli.add_option("--fd", o.fd, "File descriptor of an inherited, listening vhost-user socket")
          ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  auto* mount = cli.add_option("--fuse-mount", config.fuse_mountpoint,
                               "Serve the shared directory as a FUSE mount on the host at this "
                               "mount point instead of to a VM");
  auto* socket_group = cli.add_option("--socket-group", config.socket_group,
                                      "Name of group for the vhost-user socket (its members may "
                                      "connect; the socket is then 0770 instead of 0700)");
  socket_group->excludes(fd_option)->excludes(mount);
  socket->excludes(fd_option)->excludes(old_socket)->excludes(mount);
  fd_option->excludes(old_socket)->excludes(mount);
  old_socket->excludes(mount);
}

// How the shared directory is presented to the guest.
void add_filesystem_options(CLI::App& cli, Options& o) {
  Switches& sw = o.sw;
  cli.add_option("--cache", o.cache,
                 "Cache policy: never, metadata, auto or always (default: auto)")
      ->check(CLI::IsMember({"never", "metadata", "auto", "always"}));
  cli.add_flag("--no-readdirplus", sw.no_readdirplus, "Disable support for READDIRPLUS operations");
  cli.add_flag("--writeback", sw.writeback, "Enable writeback cache");
  cli.add_flag("--allow-direct-io", sw.allow_direct_io,
               "Honor the O_DIRECT flag passed down by guest applications");
  cli.add_flag("--allow-mmap", sw.allow_mmap,
               "With --cache=metadata or never, allow shared files to be mmap'd");
  cli.add_flag("--preserve-noatime", sw.preserve_noatime,
               "Preserve O_NOATIME (else it is cleared from the guest's open flags)");
  cli.add_flag("--readonly", sw.readonly,
               "Prevent the guest from making modifications to the filesystem");
  cli.add_flag("--announce-submounts", sw.announce_submounts,
               "Tell the guest which directories are mount points (the default)");
  cli.add_flag("--no-announce-submounts", sw.no_announce_submounts,
               "Do not tell the guest which directories are mount points");
  cli.add_option("--inode-file-handles", o.file_handles,
                 "When to use file handles to reference inodes instead of O_PATH file "
                 "descriptors: never, prefer (file handles where the filesystem has them and "
                 "they can be opened, else O_PATH fds; 'fallback' is a deprecated alias) or "
                 "mandatory; given as --inode-file-handles=MODE [default: prefer]")
      ->check(CLI::IsMember({"never", "prefer", "fallback", "mandatory"}));
  cli.add_flag("--killpriv-v2", sw.killpriv_v2, "Enable KILLPRIV V2 support");
  cli.add_flag("--no-killpriv-v2", sw.no_killpriv_v2, "Disable KILLPRIV V2 support (the default)");
  cli.add_flag("--xattr", sw.xattr, "Enable support for extended attributes");
  cli.add_flag("--posix-acl", sw.posix_acl, "Enable support for POSIX ACLs (implies --xattr)");
  cli.add_flag("--security-label", sw.security_label,
               "Store the security label a guest sends on file creation (implies --xattr)");
  cli.add_option("--xattrmap", o.config.fs.xattrmap,
                 "Rules translating extended attribute names between host and guest "
                 "(e.g. :map::user.virtiofs.:); implies --xattr");
  cli.add_flag("--posix-lock", sw.posix_lock,
               "Forward POSIX record locks to the host (as OFD locks)");
  cli.add_flag("--flock", sw.flock, "Forward flock() locks to the host (as host flock() locks)");
  cli.add_flag("--ascii-casefold", sw.ascii_casefold,
               "Retry failed lookups case-insensitively over ASCII");
  cli.add_flag("--rewrite-security-xattrs", sw.rewrite_security_xattrs,
               "Store guest security.* xattrs (but security.selinux) as "
               "user.virtiofs.security.*");
}

// How the daemon confines itself, and the ids of its user namespace.
void add_sandbox_options(CLI::App& cli, Options& o) {
  cli.add_option("--sandbox", o.sandbox_mode,
                 "Sandbox mechanism to isolate the daemon process (namespace, chroot, none) "
                 "[default: namespace]");
  cli.add_option("--seccomp", o.seccomp_action,
                 "Action to take when seccomp finds a not allowed syscall (none, kill, log, trap) "
                 "[default: kill]");
  cli.add_option("--modcaps", o.modcaps,
                 "Modify the list of capabilities, e.g., --modcaps=+sys_admin:-chown");
  cli.add_option("--rlimit-nofile", o.rlimit_nofile,
                 "Set maximum number of file descriptors (0 leaves rlimit unchanged) "
                 "[default: min(1000000, '/proc/sys/fs/nr_open')]");
  add_repeatable(cli, "--uid-map", o.uid_maps,
                 "Map a range of UIDs from the host into the namespace, given as "
                 ":namespace_uid:host_uid:count: (done by the user namespace of "
                 "--sandbox=namespace, for an unprivileged daemon, through newuidmap; e.g. "
                 ":0:100000:65536: maps host UIDs 100000-165535 to 0-65535 in there). Repeatable");
  add_repeatable(cli, "--gid-map", o.gid_maps,
                 "Map a range of GIDs from the host into the namespace, given as "
                 ":namespace_gid:host_gid:count: (as --uid-map, through newgidmap). Repeatable");
}

// The ids the daemon itself translates between guest and host.
void add_id_translation_options(CLI::App& cli, Options& o) {
  add_repeatable(cli, "--translate-uid", o.translate_uids,
                 "Describe how to translate UIDs between guest and host, given as "
                 "'<type>:<source base>:<target base>:<count>' (done by virtiofsd itself, "
                 "no user namespace needed). Types: 'guest' (1:1 guest UIDs to host UIDs), "
                 "'host' (1:1 host UIDs to guest UIDs), 'squash-guest' (n:1 guest UIDs to "
                 "one host UID), 'squash-host' (n:1 host UIDs to one guest UID), "
                 "'forbid-guest:<guest base>:<count>' (guest UIDs refused with EPERM), "
                 "'map:<guest base>:<host base>:<count>' (1:1 both ways). Unmapped UIDs "
                 "stay as they are. Repeatable; cannot be used with --posix-acl");
  add_repeatable(cli, "--translate-gid", o.translate_gids,
                 "Same as '--translate-uid', but for GIDs");
}

// Logging, threads, the device tag, the daemon's lifetime.
void add_daemon_options(CLI::App& cli, Options& o) {
  Config& config = o.config;
  cli.add_option("--log-level", config.log_level,
                 "Log level: error, warn, info, debug, trace or off (default: info)")
      ->check(CLI::IsMember(kLogLevels));
  cli.add_option("--tag", config.tag,
                 "The tag that the virtio device advertises (1 to 36 bytes; offers the "
                 "CONFIG protocol feature, which crosvm needs and QEMU 7.1-8.0 cannot take)");
  cli.add_option("--thread-pool-size", config.thread_pool_size,
                 "Maximum thread pool size. A value of \"0\" disables the pool (requests are "
                 "served on their queue's thread) [default: 0]");
  cli.add_option("--poll-max-us", config.poll_max_us,
                 "Beyond the Rust virtiofsd: the longest a request queue polls for the "
                 "guest's next request after it ran dry, before it sleeps; the window adapts "
                 "to the guest (it closes when requests come slower than this). 0 never polls "
                 "[default: 8]")
      ->check(CLI::Range(0u, 1000u));
  cli.add_flag("--syslog", config.syslog, "Log to syslog (LOG_USER) [default: stderr]");
  cli.add_flag("--reconnect", config.reconnect,
               "Beyond the Rust virtiofsd: when the frontend disconnects (or is killed), keep "
               "running and serve the next frontend that connects to the same socket "
               "(--socket-path or --fd) with a fresh FUSE session, as after a new mount; "
               "SIGTERM, SIGINT and SIGHUP then exit 0 [default: exit 0 on disconnect]");
  cli.add_option("--metrics-socket", config.metrics_socket,
                 "Beyond the Rust virtiofsd: UNIX socket (created before the sandbox, "
                 "replacing a stale one) where each connection gets the per-operation request "
                 "counts and latency histograms in the Prometheus text format over HTTP/1.0; "
                 "SIGUSR1 logs a summary of them with or without it");
  cli.add_flag("--print-capabilities", o.print_capabilities,
               "Print vhost-user.json backend program capabilities and exit");
}

void add_migration_options(CLI::App& cli, Options& o) {
  cli.add_option("--migration-mode", o.migration_mode,
                 "How to represent the internal state for migration: find-paths or file-handles "
                 "[default: find-paths]")
      ->check(CLI::IsMember({"find-paths", "file-handles"}));
  cli.add_option("--migration-on-error", o.migration_on_error,
                 "How to respond to errors during migration: abort or guest-error "
                 "[default: abort]")
      ->check(CLI::IsMember({"abort", "guest-error"}));
  cli.add_flag("--migration-verify-handles", o.migration_verify_handles,
               "Only for find-paths migration mode: ensure that the destination opens the very "
               "same inodes as the source");
  cli.add_flag("--migration-confirm-paths", o.migration_confirm_paths,
               "Only for find-paths migration mode: double-check the identity of inodes right "
               "before switching over to the destination");
}

// The legacy daemon's forms, still accepted with a warning.
void add_legacy_options(CLI::App& cli, Options& o) {
  add_repeatable(cli, "-o", o.compat_options,
                 "Options in the legacy format (comma separated) [deprecated]");
  cli.add_flag("-d", o.compat_debug, "Set log level to debug [deprecated]");
  cli.add_flag("-f", o.compat_foreground, "Has no effect [deprecated]");
}

// As clap's require_equals in the Rust virtiofsd: the mode is given with
// '=' only, so `--inode-file-handles prefer` (or the option alone) is an
// error instead of a value taken from the next word.
std::string check_inode_file_handles_spelling(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") break;
    if (std::string_view(argv[i]) == "--inode-file-handles") {
      return "--inode-file-handles: the mode must be given with '=' "
             "(--inode-file-handles=never|prefer|mandatory)";
    }
  }
  return "";
}

// The steps below turn Options into the Config, in this order (the first
// error is the one reported). Each returns "" or a usage error.

// -o, -d, -f, --socket and --inode-file-handles=fallback: applied, each
// with a deprecation warning.
std::string apply_legacy_forms(Options& o) {
  Config& config = o.config;
  for (const auto& line : o.compat_options) {
    size_t start = 0;
    while (start <= line.size()) {
      size_t comma = line.find(',', start);
      if (comma == std::string::npos) comma = line.size();
      std::string error = apply_compat_option(line.substr(start, comma - start), config, o.sw,
                                              CompatValues{o.cache, o.sandbox_mode, o.modcaps});
      if (!error.empty()) return error;
      start = comma + 1;
    }
  }
  if (!o.compat_options.empty()) {
    config.warnings.push_back(
        "Use of deprecated option format '-o': please specify options without it "
        "(e.g. '--cache auto' instead of '-o cache=auto')");
  }
  if (o.compat_debug) {
    config.log_level = "debug";
    config.warnings.push_back("Use of deprecated flag '-d': please use '--log-level debug'");
  }
  if (o.compat_foreground) {
    config.warnings.push_back("Use of deprecated flag '-f': it has no effect");
  }
  if (!o.deprecated_socket.empty()) {
    config.socket_path = o.deprecated_socket;
    config.warnings.push_back("Use of deprecated option '--socket': please use '--socket-path'");
  }
  if (o.file_handles == "fallback") {
    // As 1.13.3, which maps it to prefer.
    config.warnings.push_back(
        "Use of deprecated value 'fallback' for '--inode-file-handles': Please use 'prefer' "
        "instead");
  }
  return "";
}

// RUST_LOG overrides --log-level, as for the Rust virtiofsd (whose
// env_logger reads it): podman and coreos-assembler pass RUST_LOG=ERROR.
std::string apply_rust_log(Options& o) {
  if (const char* rust_log = std::getenv("RUST_LOG"); rust_log != nullptr && *rust_log != 0) {
    if (auto level = log_level_from_rust_log(rust_log)) {
      o.config.log_level = *level;
    } else {
      o.config.warnings.push_back(std::string("RUST_LOG='") + rust_log +
                                  "' names no log level for virtiofsd; using --log-level");
    }
  }
  return "";
}

std::string apply_migration(Options& o) {
  if (o.migration_mode == "file-handles" &&
      (o.migration_verify_handles || o.migration_confirm_paths)) {
    return std::string("Cannot use ") +
           (o.migration_confirm_paths ? "--migration-confirm-paths"
                                      : "--migration-verify-handles") +
           " with --migration-mode=file-handles (because it is unnecessary)";
  }
  o.config.migration.mode = o.migration_mode;
  o.config.migration.on_error = o.migration_on_error;
  o.config.migration.verify_handles = o.migration_verify_handles;
  o.config.migration.confirm_paths = o.migration_confirm_paths;
  return "";
}

std::string check_tag(Options& o) {
  const std::string& tag = o.config.tag;
  if (o.tag_given && (tag.empty() || tag.size() > 36)) {
    return "--tag: the tag must be 1 to 36 bytes long, not " + std::to_string(tag.size());
  }
  return "";
}

std::string apply_sandbox(Options& o) {
  auto mode = sandbox::parse_mode(o.sandbox_mode);
  if (!mode) return "--sandbox: invalid value '" + o.sandbox_mode + "' (namespace, chroot, none)";
  o.config.sandbox = *mode;
  auto action = sandbox::parse_seccomp_action(o.seccomp_action);
  if (!action) {
    return "--seccomp: invalid value '" + o.seccomp_action + "' (none, kill, log, trap)";
  }
  o.config.seccomp = *action;
  o.config.rlimit_nofile = o.rlimit_nofile;
  return "";
}

// --uid-map / --gid-map: the maps of the sandbox's user namespace.
std::string apply_namespace_maps(Options& o) {
  Config& config = o.config;
  for (auto [maps, name, out] : {std::tuple{&o.uid_maps, "--uid-map", &config.uid_map},
                                 std::tuple{&o.gid_maps, "--gid-map", &config.gid_map}}) {
    for (const auto& text : *maps) {
      std::string message;
      auto map = parse_namespace_id_map(text, message);
      if (!map) return fmt::format("{}: invalid value '{}': {}", name, text, message);
      out->push_back(*map);
    }
    if (!out->empty() && config.sandbox != sandbox::Mode::kNamespace) {
      return std::string(name) +
             " needs --sandbox=namespace (the map is that of its "
             "user namespace), not --sandbox=" +
             sandbox::mode_name(config.sandbox);
    }
  }
  return "";
}

// --translate-uid / --translate-gid: the maps the filesystem applies itself.
std::string apply_id_translation(Options& o) {
  for (auto [rules, name, out] :
       {std::tuple{&o.translate_uids, "--translate-uid", &o.config.fs.uid_map},
        std::tuple{&o.translate_gids, "--translate-gid", &o.config.fs.gid_map}}) {
    if (!rules->empty() && o.sw.posix_acl) {
      // As in the Rust virtiofsd: ACL entries name host ids the guest would
      // read and write untranslated.
      return std::string(name) +
             " cannot be used with --posix-acl (translating ids would break POSIX "
             "ACLs)";
    }
    std::vector<passthrough::IdMapRule> parsed;
    for (const auto& text : *rules) {
      std::string message;
      auto rule = passthrough::parse_id_map_rule(text, message);
      if (!rule) return fmt::format("{}: invalid value '{}': {}", name, text, message);
      parsed.push_back(*rule);
    }
    std::string message;
    auto map = passthrough::IdMap::build(parsed, message);
    if (!map) return std::string(name) + ": " + message;
    *out = std::move(*map);
  }
  return "";
}

// A shared directory, and exactly one way to serve it.
std::string check_endpoint(Options& o) {
  Config& config = o.config;
  if (config.fs.shared_dir.empty()) return "missing --shared-dir or -o source";
  if (config.socket_path.empty() && o.fd < 0 && config.fuse_mountpoint.empty()) {
    return "one of --socket-path, --fd or --fuse-mount is required";
  }
  if (config.reconnect && !config.fuse_mountpoint.empty()) {
    return "--reconnect: not with --fuse-mount (there is no frontend to reconnect)";
  }
  if (o.fd >= 0) config.listen_fd = o.fd;
  return "";
}

std::string apply_filesystem_options(Options& o) {
  const Switches& sw = o.sw;
  auto& fs = o.config.fs;
  fs.cache = kCachePolicies.at(o.cache);
  fs.inode_file_handles = kFileHandleModes.at(o.file_handles);
  fs.announce_submounts = sw.announce_submounts && !sw.no_announce_submounts;
  fs.readonly = sw.readonly;
  fs.writeback = sw.writeback;
  fs.allow_direct_io = sw.allow_direct_io;
  fs.allow_mmap = sw.allow_mmap;
  fs.preserve_noatime = sw.preserve_noatime;
  fs.killpriv_v2 = sw.killpriv_v2 && !sw.no_killpriv_v2;
  fs.posix_acl = sw.posix_acl;
  fs.security_label = sw.security_label;
  // As in the Rust virtiofsd, options that only make sense with xattrs turn
  // them on.
  fs.xattr = sw.xattr || sw.posix_acl || sw.security_label || !fs.xattrmap.empty();
  fs.posix_lock = sw.posix_lock;
  fs.flock = sw.flock;
  fs.ascii_casefold = sw.ascii_casefold;
  fs.rewrite_security_xattrs = sw.rewrite_security_xattrs;
  // As in the Rust virtiofsd: with no cache there is nothing for READDIRPLUS
  // to prefill, so it is not negotiated.
  o.config.readdirplus = !sw.no_readdirplus && fs.cache != CachePolicy::kNever;
  // Option values with a grammar of their own (--xattrmap) are checked now,
  // so that a typo is a usage error naming the rule, not a failed start.
  std::string message;
  if (!passthrough::validate_config(fs, message)) return message;
  return "";
}

// --modcaps edits the default set, which depends on --inode-file-handles.
std::string apply_capabilities(Options& o) {
  std::string message;
  auto caps = sandbox::capability_set(
      o.modcaps, o.config.fs.inode_file_handles != InodeFileHandles::kNever, message);
  if (!caps) return message;
  o.config.capabilities = std::move(*caps);
  return "";
}

}  // namespace

ParseOutcome parse_command_line(int argc, const char* const* argv) {
  CLI::App cli{"virtiofsd-cpp: a vhost-user virtio-fs device backend", "virtiofsd"};
  cli.set_version_flag("-V,--version", "virtiofsd-cpp 0.1.0");
  // As clap's args_override_self in the Rust virtiofsd: a repeated option's
  // last value wins (launchers append their users' arguments after their own).
  cli.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // In this order, which is that of --help.
  Options o;
  add_endpoint_options(cli, o);
  add_filesystem_options(cli, o);
  add_sandbox_options(cli, o);
  add_id_translation_options(cli, o);
  add_daemon_options(cli, o);
  add_migration_options(cli, o);
  add_legacy_options(cli, o);

  auto usage_error = [](const std::string& message) {
    return ParseOutcome{std::nullopt, report_usage_error(message)};
  };
  if (std::string error = check_inode_file_handles_spelling(argc, argv); !error.empty()) {
    return usage_error(error);
  }
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print to stdout and exit 0; a usage error is
    // one line on stderr, without CLI11's "Run with --help" hint.
    if (e.get_exit_code() == 0) return {std::nullopt, cli.exit(e)};
    return usage_error(e.what());
  }
  // Before anything else is required: libvirt runs `BINARY
  // --print-capabilities`, wrappers add their own options to it.
  if (o.print_capabilities) {
    std::fputs(capabilities_json().c_str(), stdout);
    std::fflush(stdout);
    return {std::nullopt, 0};
  }
  o.tag_given = cli.count("--tag") > 0;

  using Step = std::string (*)(Options&);
  for (Step step : {apply_legacy_forms, apply_rust_log, apply_migration, check_tag, apply_sandbox,
                    apply_namespace_maps, apply_id_translation, check_endpoint,
                    apply_filesystem_options, apply_capabilities}) {
    if (std::string error = step(o); !error.empty()) return usage_error(error);
  }
  return {std::move(o.config), 0};
}

int report_usage_error(std::string_view message) {
  std::string line(message);
  // CLI11 ends some messages with a newline; inner ones become "; ".
  line.erase(line.find_last_not_of(" \t\r\n") + 1);
  for (size_t pos; (pos = line.find('\n')) != std::string::npos;) line.replace(pos, 1, "; ");
  std::fprintf(stderr, "virtiofsd: %s\n", line.c_str());
  std::fflush(stderr);
  return 1;
}

namespace {

bool has_effective_capability(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

}  // namespace

std::string check_before_start(Config& config) {
  auto why = [](int error) { return std::string(std::strerror(error)); };
  if (!config.fs.shared_dir.empty()) {
    struct stat st {};
    if (::stat(config.fs.shared_dir.c_str(), &st) != 0) {
      return "--shared-dir: " + config.fs.shared_dir + ": " + why(errno);
    }
    if (!S_ISDIR(st.st_mode)) return "--shared-dir: " + config.fs.shared_dir + ": not a directory";
  }
  if (!config.socket_path.empty() && config.socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
    return "--socket-path: " + config.socket_path + " is " +
           std::to_string(config.socket_path.size()) +
           " bytes long; a UNIX socket path has at "
           "most " +
           std::to_string(sizeof(sockaddr_un::sun_path) - 1);
  }
  if (!config.metrics_socket.empty()) {
    const std::string& path = config.metrics_socket;
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return "--metrics-socket: " + path + " is " + std::to_string(path.size()) +
             " bytes long; a UNIX socket path has at most " +
             std::to_string(sizeof(sockaddr_un::sun_path) - 1);
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return "--metrics-socket: " + path + " exists and is not a socket";
    }
    if (path == config.socket_path) return "--metrics-socket: the same path as --socket-path";
  }
  if (config.listen_fd) {
    const int fd = *config.listen_fd;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return "--fd: " + std::to_string(fd) + ": " + why(errno);
    int listening = 0, type = 0;
    socklen_t len = sizeof listening, type_len = sizeof type;
    if (!S_ISSOCK(st.st_mode) ||
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
        ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM ||
        listening == 0) {
      return "--fd: " + std::to_string(fd) + " is not a listening stream socket";
    }
  }
  if (config.rlimit_nofile && *config.rlimit_nofile > 0) {
    uint64_t nr_open = 0;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
      if (std::fscanf(f, "%lu", &nr_open) != 1) nr_open = 0;
      std::fclose(f);
    }
    if (nr_open > 0 && *config.rlimit_nofile > nr_open) {
      return "--rlimit-nofile: " + std::to_string(*config.rlimit_nofile) +
             " is above /proc/sys/fs/nr_open (" + std::to_string(nr_open) + ")";
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (in the initial user
    // namespace: the sandbox cannot add it later).
    rlimit current{};
    if (::getrlimit(RLIMIT_NOFILE, &current) == 0 && *config.rlimit_nofile > current.rlim_max &&
        !has_effective_capability(CAP_SYS_RESOURCE)) {
      return "--rlimit-nofile: " + std::to_string(*config.rlimit_nofile) +
             " is above the hard limit (" + std::to_string(current.rlim_max) +
             ") and raising it needs CAP_SYS_RESOURCE";
    }
  }
  if (!config.socket_group.empty()) {
    const std::string& name = config.socket_group;
    if (const group* g = ::getgrnam(name.c_str())) {
      config.socket_gid = g->gr_gid;
    } else if (name.find_first_not_of("0123456789") == std::string::npos && name.size() < 10) {
      config.socket_gid = static_cast<gid_t>(std::stoul(name));
    } else {
      return "--socket-group: no group named '" + name + "'";
    }
  }
  return "";
}

}  // namespace vfsd::app
