#include "app/config.h"

#include <CLI/CLI.hpp>
#include <map>

namespace vfsd::app {

namespace {

const std::map<std::string, passthrough::CachePolicy> kCachePolicies = {
    {"never", passthrough::CachePolicy::kNever},
    {"metadata", passthrough::CachePolicy::kMetadata},
    {"auto", passthrough::CachePolicy::kAuto},
    {"always", passthrough::CachePolicy::kAlways},
};

const std::vector<std::string> kLogLevels = {"error", "warn", "info", "debug", "trace", "off"};

}  // namespace

ParseOutcome parse_command_line(int argc, const char* const* argv) {
  CLI::App cli{"virtiofsd-cpp: a vhost-user virtio-fs device backend", "virtiofsd"};
  cli.set_version_flag("-V,--version", "virtiofsd-cpp 0.1.0");

  Config config;
  std::string cache = "auto";
  bool no_readdirplus = false;
  bool no_announce_submounts = false;
  int fd = -1;

  cli.add_option("--shared-dir", config.fs.shared_dir, "Shared directory path")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* socket = cli.add_option("--socket-path", config.socket_path,
                                "vhost-user socket path (created, replacing a stale one)");
  auto* fd_option =
      cli.add_option("--fd", fd, "File descriptor of an inherited, listening vhost-user socket")
          ->check(CLI::NonNegativeNumber);
  socket->excludes(fd_option);
  cli.add_option("--cache", cache,
                 "Cache policy: never, metadata, auto or always (default: auto)")
      ->check(CLI::IsMember({"never", "metadata", "auto", "always"}));
  cli.add_flag("--no-readdirplus", no_readdirplus, "Disable support for READDIRPLUS operations");
  bool announce_submounts = true;  // the default; the flag exists for compatibility
  cli.add_flag("--announce-submounts", announce_submounts,
               "Tell the guest which directories are mount points (the default)");
  cli.add_flag("--no-announce-submounts", no_announce_submounts,
               "Do not tell the guest which directories are mount points");
  cli.add_option("--log-level", config.log_level,
                 "Log level: error, warn, info, debug, trace or off (default: info)")
      ->check(CLI::IsMember(kLogLevels));

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return {std::nullopt, cli.exit(e)};
  }
  if (config.socket_path.empty() && fd < 0) {
    std::fprintf(stderr, "virtiofsd: one of --socket-path or --fd is required\n");
    return {std::nullopt, 1};
  }
  if (fd >= 0) config.listen_fd = fd;
  config.fs.cache = kCachePolicies.at(cache);
  config.fs.announce_submounts = !no_announce_submounts;
  // As in the Rust virtiofsd: with no cache there is nothing for READDIRPLUS
  // to prefill, so it is not negotiated.
  config.readdirplus = !no_readdirplus && config.fs.cache != passthrough::CachePolicy::kNever;
  return {std::move(config), 0};
}

}  // namespace vfsd::app
