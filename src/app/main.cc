// virtiofsd-cpp entry point. Start-up is a list of explicit steps, each of
// which names itself when it fails; the sandbox, seccomp and capability steps
// of later work slot in between them.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "app/config.h"
#include "app/fuse_mount.h"
#include "app/fuse_request_handler.h"
#include "app/startup.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/read_only_fs.h"
#include "util/log.h"
#include "vhost_user/backend.h"

namespace vfsd::app {
namespace {

// Reader threads of the host FUSE mount: enough that a slow request does not
// stall the mount, few enough for a 2-core machine.
constexpr unsigned kFuseMountThreads = 4;

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("virtiofsd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ virtiofsd] %v",
                      spdlog::pattern_time_type::utc);
  spdlog::set_level(spdlog::level::from_str(level == "warn" ? "warning" : level));
}

// A group name, or failing that a numeric gid.
std::optional<gid_t> resolve_group(const std::string& name) {
  if (const group* g = ::getgrnam(name.c_str())) return g->gr_gid;
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos &&
      name.size() < 10) {
    return static_cast<gid_t>(std::stoul(name));
  }
  return std::nullopt;
}

int fail_step(const char* step, Errno error) {
  log::error("{}: {}", step, errno_name(error.value));
  return 1;
}

int run(const Config& config) {
  // A frontend that vanishes mid-reply must not kill us with SIGPIPE; the
  // write reports EPIPE instead.
  signal(SIGPIPE, SIG_IGN);
  // The guest sends its own umask with every creating request and the
  // passthrough applies it; the daemon's own must not mask the result again.
  umask(0);

  for (const auto& warning : config.warnings) log::warn("{}", warning);
  if (auto dropped = drop_supplementary_groups(); !dropped) {
    return fail_step("dropping supplementary groups", dropped.error());
  }

  auto passthrough = passthrough::PassthroughFs::create(config.fs);
  if (!passthrough) {
    return fail_step(("opening shared directory " + config.fs.shared_dir).c_str(),
                     passthrough.error());
  }
  // --readonly puts a decorator in front that refuses every modification.
  std::optional<passthrough::ReadOnlyFs> read_only;
  fuse::FileSystem* fs = passthrough->get();
  if (config.fs.readonly) fs = &read_only.emplace(*fs);

  fuse::ServerOptions server_options;
  server_options.readdirplus = config.readdirplus;
  if (!config.fuse_mountpoint.empty()) {
    return run_fuse_mount(*fs, server_options, config.fuse_mountpoint, kFuseMountThreads);
  }
  fuse::Server server(*fs, server_options);
  FuseRequestHandler handler(server);

  UniqueFd listener;
  if (config.listen_fd) {
    listener.reset(*config.listen_fd);
  } else {
    std::optional<gid_t> group;
    if (!config.socket_group.empty()) {
      group = resolve_group(config.socket_group);
      if (!group) {
        log::error("--socket-group: no group named '{}'", config.socket_group);
        return 1;
      }
    }
    auto listening = vhost_user::listen_unix(config.socket_path, group);
    if (!listening)
      return fail_step(("listening on " + config.socket_path).c_str(), listening.error());
    listener = std::move(*listening);
  }
  log::info("waiting for vhost-user socket connection...");
  auto connection = vhost_user::accept_one(listener.get());
  if (!connection) return fail_step("accepting the vhost-user connection", connection.error());
  // One frontend per daemon, as in the Rust virtiofsd: stop listening and
  // remove the socket so that a second frontend cannot queue up behind it.
  listener.reset();
  if (!config.listen_fd) ::unlink(config.socket_path.c_str());
  log::info("client connected, servicing requests");

  vhost_user::Backend backend(handler, vhost_user::BackendOptions{});
  auto served = backend.serve(std::move(*connection));
  if (!served) return fail_step("serving the vhost-user connection", served.error());
  log::info("client disconnected, exiting");
  return 0;
}

}  // namespace
}  // namespace vfsd::app

int main(int argc, char** argv) {
  auto parsed = vfsd::app::parse_command_line(argc, argv);
  if (!parsed.config) return parsed.exit_code;
  vfsd::app::setup_logging(parsed.config->log_level);
  try {
    return vfsd::app::run(*parsed.config);
  } catch (const std::exception& e) {
    // Start-up and the vhost-user thread report errors as values; this is
    // the last line, so that even then the exit is an error message.
    vfsd::log::error("fatal: {}", e.what());
    return 1;
  }
}
