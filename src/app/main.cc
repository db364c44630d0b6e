// virtiofsd-cpp entry point. Start-up is the Rust virtiofsd's order of
// explicit steps, each of which names itself when it fails:
//   1. the process itself: signals, umask, supplementary groups;
//   2. the listening socket (or the FUSE mount), in the host's namespaces;
//   3. the file limit, then the sandbox (namespaces + pivot_root, or chroot);
//   4. the filesystem, opened from inside the sandbox;
//   5. the capabilities dropped, then seccomp: both before any other thread
//      exists, so that every worker inherits them;
//   6. serve.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>

#include "app/config.h"
#include "app/fuse_mount.h"
#include "app/fuse_request_handler.h"
#include "app/metrics_service.h"
#include "app/migration_handler.h"
#include "app/startup.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/read_only_fs.h"
#include "sandbox/capabilities.h"
#include "sandbox/rlimit.h"
#include "sandbox/sandbox.h"
#include "sandbox/seccomp.h"
#include "util/log.h"
#include "util/metrics.h"
#include "vhost_user/backend.h"
#include "vhost_user/listener.h"

namespace vfsd::app {
namespace {

// Reader threads of the host FUSE mount: enough that a slow request does not
// stall the mount, few enough for a 2-core machine.
constexpr unsigned kFuseMountThreads = 4;

// Whether a syslog daemon listens on /dev/log (a datagram or stream socket
// there that takes a connection).
bool syslog_listening() {
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    UniqueFd probe(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, "/dev/log", sizeof(addr.sun_path) - 1);
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return true;
    }
  }
  return false;
}

// stderr, or with --syslog the LOG_USER facility, as the Rust virtiofsd logs.
// The syslog connection is made now (LOG_NDELAY), before the sandbox hides
// /dev/log; without a syslog daemon the log stays on stderr, with a warning.
void setup_logging(const std::string& level, bool use_syslog) {
  std::shared_ptr<spdlog::logger> logger;
  bool syslog_missing = false;
  if (use_syslog && syslog_listening()) {
    logger = spdlog::syslog_logger_mt("virtiofsd", "virtiofsd", LOG_PID | LOG_NDELAY, LOG_USER);
    logger->set_pattern("%v");
  } else {
    syslog_missing = use_syslog;
    logger = spdlog::stderr_color_mt("virtiofsd");
    logger->set_pattern("[%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ virtiofsd] %v",
                        spdlog::pattern_time_type::utc);
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level == "warn" ? "warning" : level));
  if (syslog_missing) log::warn("--syslog: nothing listens on /dev/log; logging to stderr");
}

int fail_step(const std::string& step, Errno error) {
  log::error("{}: {}", step, errno_name(error.value));
  return 1;
}

// SIGTERM and SIGHUP end the daemon at once with status 1, as the Rust
// virtiofsd's handler does (a frontend disconnect is the clean exit, 0).
// With --reconnect there is no such exit: a stop signal is the normal end,
// status 0. Installed as handlers rather than left at their default: in a
// new pid namespace the daemon is that namespace's init, which ignores every
// signal it has no handler for (the parent forwards them).
volatile sig_atomic_t g_stop_status = 1;
void exit_on_stop_signal(int) {
  ::_exit(g_stop_status);
}

// Step 1.
int set_up_process(const Config& config) {
  // A frontend that vanishes mid-reply must not kill us with SIGPIPE; the
  // write reports EPIPE instead.
  ::signal(SIGPIPE, SIG_IGN);
  // Before any thread or sandbox child exists: all of them inherit it.
  prepare_metrics_signal();
  if (config.fuse_mountpoint.empty()) {
    g_stop_status = config.reconnect ? 0 : 1;
    for (int sig : {SIGTERM, SIGHUP, SIGINT}) ::signal(sig, exit_on_stop_signal);
  }
  // The guest sends its own umask with every creating request and the
  // passthrough applies it; the daemon's own must not mask the result again.
  ::umask(0);
  for (const auto& warning : config.warnings) log::warn("{}", warning);
  if (auto dropped = drop_supplementary_groups(); !dropped) {
    return fail_step("dropping supplementary groups", dropped.error());
  }
  return 0;
}

// Step 2 (vhost-user): the listening socket.
Result<UniqueFd> open_listener(const Config& config) {
  if (config.listen_fd) return UniqueFd(*config.listen_fd);
  // check_before_start resolved --socket-group.
  const std::optional<gid_t> group = config.socket_gid;
  // The pid file first: a second daemon on the same socket stops here,
  // before it replaces the first one's socket. Its lock lasts as long as the
  // process (and its sandboxed child, which inherits the fd).
  static UniqueFd pid_file;
  const std::string pid_path = config.socket_path + ".pid";
  auto locked = write_pid_file(pid_path);
  if (!locked) {
    if (locked.error().value == EWOULDBLOCK) {
      log::error("{} is locked: another daemon serves {}", pid_path, config.socket_path);
    } else {
      log::error("Error creating pid file '{}': {}", pid_path, errno_name(locked.error().value));
    }
    return tl::unexpected(locked.error());
  }
  pid_file = std::move(*locked);
  auto listening = vhost_user::listen_unix(config.socket_path, group);
  if (!listening) fail_step("listening on " + config.socket_path, listening.error());
  return listening;
}

// Step 2 (both transports): --metrics-socket, bound while the host's file
// system is still in reach; an empty fd without the option.
Result<UniqueFd> open_metrics_listener(const Config& config) {
  if (config.metrics_socket.empty()) return UniqueFd();
  auto listening = vhost_user::listen_unix(config.metrics_socket);
  if (!listening)
    fail_step("--metrics-socket: listening on " + config.metrics_socket, listening.error());
  return listening;
}

// What the metrics show besides the requests: cheap reads of what the
// passthrough and the server already count. `server` may be null (the
// /dev/fuse transport keeps its server to itself).
MetricsService::GaugeSource gauges_of(const passthrough::PassthroughFs& fs,
                                      const fuse::Server* server,
                                      const metrics::QueueCounters* queues = nullptr) {
  return [&fs, server, queues] {
    std::vector<metrics::Gauge> gauges{
        {"inodes", "Inodes the guest knows (looked up and not forgotten), the root included.",
         fs.inode_count()},
        {"open_handles", "Files and directories the guest holds open.", fs.handle_count()},
        {"guest_fds", "Host file descriptors held for the guest.", fs.fd_budget_used()},
        {"guest_fds_limit", "The most host file descriptors the guest may hold (0: no limit).",
         fs.fd_budget_limit()},
        {"file_handle_inodes", "Inodes kept as file handles instead of O_PATH fds.",
         fs.handle_inodes_used()},
        {"inode_marks",
         "File-handle inodes with an inotify mark, which proves them alive to a lookup "
         "without a second path walk.",
         fs.inode_marks()},
        {"lock_waiters", "SETLKW requests waiting for a host lock (replies deferred).",
         fs.lock_waiter_count()},
    };
    if (server != nullptr) {
      gauges.push_back(
          {"requests_in_flight", "FUSE requests being served now.", server->requests_in_flight()});
    }
    // Only the queues the guest used: a 6.12 guest with one vCPU uses one of
    // the sixteen offered.
    for (size_t q = 0; queues != nullptr && q < queues->size(); ++q) {
      if (const uint64_t n = queues->get(q); n > 0) {
        gauges.push_back({"queue_requests_total",
                          "Requests popped from each virtqueue (0: high priority, 1 and up: the "
                          "request queues), since the daemon started.",
                          n, "queue=\"" + std::to_string(q) + "\"", true});
      }
    }
    return gauges;
  };
}

// Step 3. Returns the guest's fd budget: the open file limit minus what
// the daemon keeps for itself (sandbox::guest_fd_budget), or nothing when
// the limit cannot be set as asked.
std::optional<uint64_t> set_up_fd_limit(const Config& config) {
  std::string message;
  auto limit = sandbox::set_up_rlimit_nofile(config.rlimit_nofile, message);
  if (!limit) {
    log::error("{}", message);
    return std::nullopt;
  }
  const uint64_t budget = sandbox::guest_fd_budget(*limit);
  log::debug("open file limit: {}; the guest may hold {} of them", *limit, budget);
  return budget;
}

// How many inotify marks the deletion watch may hold
// (PassthroughConfig::deletion_mark_limit): an eighth of the host's
// max_user_watches, which every program of the same user shares, and at
// most 16384. Read before the sandbox hides /proc/sys.
uint64_t deletion_mark_limit() {
  constexpr uint64_t kKernelMinimum = 8192;  // max_user_watches is never below it
  constexpr uint64_t kCeiling = 16384;
  uint64_t watches = kKernelMinimum;
  if (FILE* file = std::fopen("/proc/sys/fs/inotify/max_user_watches", "re")) {
    unsigned long long value = 0;
    if (std::fscanf(file, "%llu", &value) == 1) watches = value;
    std::fclose(file);
  }
  return std::min(watches / 8, kCeiling);
}

// What the host grants the filesystem, read before the sandbox.
struct HostLimits {
  uint64_t guest_fds = 0;
  uint64_t deletion_marks = 0;
};

std::optional<HostLimits> read_host_limits(const Config& config) {
  auto fds = set_up_fd_limit(config);
  if (!fds) return std::nullopt;
  return HostLimits{.guest_fds = *fds, .deletion_marks = deletion_mark_limit()};
}

Result<sandbox::Inside> enter_sandbox(const Config& config, int listen_fd, bool in_forked_child) {
  if (config.sandbox == sandbox::Mode::kNone) {
    log::warn(
        "--sandbox=none: the daemon is not isolated from the host; only its own checks "
        "keep the guest inside the shared directory");
  }
  sandbox::Options options;
  options.mode = config.sandbox;
  options.shared_dir = config.fs.shared_dir;
  options.close_in_parent = listen_fd;
  options.in_forked_child = in_forked_child;
  options.uid_map = config.uid_map;
  options.gid_map = config.gid_map;
  std::string step;
  auto inside = sandbox::enter(options, step);
  if (!inside) fail_step("sandbox: " + step, inside.error());
  return inside;
}

// The filesystem the server dispatches to: the passthrough, behind the
// read-only decorator with --readonly.
struct Filesystem {
  std::unique_ptr<passthrough::PassthroughFs> passthrough;
  std::optional<passthrough::ReadOnlyFs> read_only;
  fuse::FileSystem* top() {
    return read_only ? static_cast<fuse::FileSystem*>(&*read_only) : passthrough.get();
  }
};

// Step 4.
Result<Filesystem> open_filesystem(const Config& config, sandbox::Inside inside,
                                   const HostLimits& limits) {
  passthrough::PassthroughConfig fs_config = config.fs;
  fs_config.shared_dir = inside.shared_dir;
  fs_config.guest_fd_limit = limits.guest_fds;
  fs_config.deletion_mark_limit = limits.deletion_marks;
  auto passthrough =
      passthrough::PassthroughFs::create(std::move(fs_config), std::move(inside.proc_self_fd));
  if (!passthrough) {
    fail_step("opening shared directory " + config.fs.shared_dir, passthrough.error());
    return tl::unexpected(passthrough.error());
  }
  Filesystem fs;
  fs.passthrough = std::move(*passthrough);
  if (config.fs.readonly) fs.read_only.emplace(*fs.passthrough);
  return fs;
}

// Step 5. The capabilities go first: dropping them takes prctl calls
// (libcap-ng's bounding-set and ambient steps) that the filter then refuses.
int confine(const Config& config, bool may_unmount) {
  // Unprivileged (--sandbox=none as a user): there is nothing to drop.
  if (::geteuid() == 0) {
    if (auto dropped = sandbox::drop_capabilities(config.capabilities); !dropped) {
      return fail_step("dropping capabilities", dropped.error());
    }
  }
  sandbox::SeccompOptions seccomp;
  seccomp.action = config.seccomp;
  seccomp.allow_umount = may_unmount;
  // glibc's syslog() reconnects (socket, connect) when the daemon restarts.
  seccomp.allow_syslog = config.syslog;
  if (auto loaded = sandbox::enable_seccomp(seccomp); !loaded) {
    return fail_step("loading the seccomp filter", loaded.error());
  }
  return 0;
}

fuse::ServerOptions server_options(const Config& config) {
  fuse::ServerOptions options;
  options.readdirplus = config.readdirplus;
  return options;
}

int run_vhost_user(const Config& config) {
  auto listener = open_listener(config);
  if (!listener) return 1;
  auto metrics_listener = open_metrics_listener(config);
  if (!metrics_listener) return 1;
  auto host_limits = read_host_limits(config);
  if (!host_limits) return 1;
  auto inside = enter_sandbox(config, listener->get(), /*in_forked_child=*/false);
  if (!inside) return 1;
  auto fs = open_filesystem(config, std::move(*inside), *host_limits);
  if (!fs) return 1;
  if (int rc = confine(config, /*may_unmount=*/false); rc != 0) return rc;

  metrics::RequestMetrics request_metrics;
  fuse::ServerOptions options = server_options(config);
  options.metrics = &request_metrics;
  fuse::Server server(*fs->top(), options);
  metrics::QueueCounters queue_counters(1 + offered_request_queues(config));
  // After confine(): its thread inherits the filter.
  MetricsService metrics_service(request_metrics, fuse::op_names(), std::move(*metrics_listener),
                                 gauges_of(*fs->passthrough, &server, &queue_counters));
  if (auto started = metrics_service.start(); !started) {
    return fail_step("starting the metrics thread", started.error());
  }
  FuseRequestHandler handler(server);
  MigrationHandler migration(server, *fs->passthrough, config.migration);
  for (unsigned frontends = 0;; ++frontends) {
    log::info("Waiting for vhost-user socket connection...");
    auto connection = vhost_user::accept_one(listener->get());
    if (!connection) {
      // A launcher may shut the listening socket down once its VMM is
      // connected (Proxmox): after a first frontend that ends --reconnect.
      if (frontends > 0 && connection.error().value == EINVAL) {
        log::info("--reconnect: the listening socket was shut down, exiting");
        return 0;
      }
      return fail_step("accepting the vhost-user connection", connection.error());
    }
    if (!config.reconnect) {
      // One frontend per daemon, as in the Rust virtiofsd: stop listening so
      // that a second frontend cannot queue up behind it, and remove the
      // socket file where it is still in reach (not from inside a sandbox).
      listener->reset();
      if (!config.listen_fd && config.sandbox == sandbox::Mode::kNone) {
        // unlinkat, not unlink: the filter allows the one syscall the
        // passthrough uses.
        ::unlinkat(AT_FDCWD, config.socket_path.c_str(), 0);
      }
    }
    log::info("Client connected, servicing requests");

    VoidResult served = ok();
    {
      // A Backend per connection: nothing of the last frontend's memory
      // table, rings or features survives into the next.
      vhost_user::Backend backend(handler,
                                  vhost_user::BackendOptions{
                                      .num_queues = 1 + offered_request_queues(config),
                                      .tag = config.tag,
                                      .thread_pool_size = config.thread_pool_size,
                                      .max_poll = std::chrono::microseconds{config.poll_max_us},
                                      .queue_counters = &queue_counters,
                                      .device_state = &migration,
                                  });
      served = backend.serve(std::move(*connection));
    }
    if (!config.reconnect) {
      if (!served) return fail_step("serving the vhost-user connection", served.error());
      log::info("Client disconnected, shutting down");
      return 0;
    }
    if (!served) {
      log::warn("serving the vhost-user connection: {}; --reconnect: dropping it",
                errno_name(served.error().value));
    }
    // The next frontend brings a new guest: start it from a fresh FUSE
    // session, as after a new mount (every inode and handle the last guest
    // held is dropped; its INIT finds no session open).
    server.end_session();
    log::info("Client disconnected; --reconnect: serving the next frontend on the same socket");
  }
}

int run_host_mount(const Config& config) {
  auto metrics_listener = open_metrics_listener(config);
  if (!metrics_listener) return 1;
  auto host_limits = read_host_limits(config);
  if (!host_limits) return 1;
  metrics::RequestMetrics request_metrics;
  FuseMountOptions options;
  options.mountpoint = config.fuse_mountpoint;
  options.threads = kFuseMountThreads;
  options.server = server_options(config);
  options.server.metrics = &request_metrics;
  // The mount stays with a supervisor in the host's mount namespace, which
  // keeps only CAP_SYS_ADMIN to unmount it; the confined child serves. Also
  // with --sandbox=none: the child drops CAP_SYS_ADMIN like every other
  // daemon, so it could not unmount by itself.
  options.supervise = true;
  std::optional<Filesystem> fs;
  // Declared after `fs`: its thread stops before the filesystem goes.
  std::optional<MetricsService> metrics_service;
  return run_fuse_mount(options, [&](int& exit_code) -> fuse::FileSystem* {
    exit_code = 1;
    auto inside = enter_sandbox(config, -1, /*in_forked_child=*/true);
    if (!inside) return nullptr;
    auto opened = open_filesystem(config, std::move(*inside), *host_limits);
    if (!opened) return nullptr;
    fs.emplace(std::move(*opened));
    if (confine(config, /*may_unmount=*/!options.supervise) != 0) return nullptr;
    metrics_service.emplace(request_metrics, fuse::op_names(), std::move(*metrics_listener),
                            gauges_of(*fs->passthrough, nullptr));
    if (auto started = metrics_service->start(); !started) {
      fail_step("starting the metrics thread", started.error());
      return nullptr;
    }
    return fs->top();
  });
}

int run(const Config& config) {
  // Before anything is created. As the Rust virtiofsd: root needs no user
  // namespace, so it has no map to give one (the --sandbox part of the
  // rule is checked with the other options).
  if ((!config.uid_map.empty() || !config.gid_map.empty()) && ::geteuid() == 0) {
    log::error(
        "{} can only be used by an unprivileged user with --sandbox=namespace (root runs "
        "without a user namespace)",
        config.uid_map.empty() ? "--gid-map" : "--uid-map");
    return 1;
  }
  if (int rc = set_up_process(config); rc != 0) return rc;
  return config.fuse_mountpoint.empty() ? run_vhost_user(config) : run_host_mount(config);
}

}  // namespace
}  // namespace vfsd::app

int main(int argc, char** argv) {
  auto parsed = vfsd::app::parse_command_line(argc, argv);
  if (!parsed.config) return parsed.exit_code;
  // Usage errors that depend on the host, still before anything is created.
  if (auto error = vfsd::app::check_before_start(*parsed.config); !error.empty()) {
    return vfsd::app::report_usage_error(error);
  }
  vfsd::app::setup_logging(parsed.config->log_level, parsed.config->syslog);
  try {
    return vfsd::app::run(*parsed.config);
  } catch (const std::exception& e) {
    // Start-up and the vhost-user thread report errors as values; this is
    // the last line, so that even then the exit is an error message.
    vfsd::log::error("fatal: {}", e.what());
    return 1;
  }
}
