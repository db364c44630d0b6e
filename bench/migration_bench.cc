// Migration downtime: how long the source takes to gather and encode its
// state, and the destination to decode and apply it, for a guest that looked
// up N files (and holds 1% of them open). Both run while the guest is
// stopped, so this is the daemon's share of a migration's downtime; in
// find-paths mode also after the preparation that runs beforehand. The
// real fuse::Server and PassthroughFs on a host folder; no virtqueue.
//
//   build/bench/migration_bench [N ...]     (default: 1000 10000 100000)
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "migration/state.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"

namespace {

using vfsd::test::RequestBuilder;
using Clock = std::chrono::steady_clock;

struct Daemon {
  explicit Daemon(const std::string& dir) {
    vfsd::passthrough::PassthroughConfig config;
    config.shared_dir = dir;
    config.inode_file_handles = vfsd::passthrough::InodeFileHandles::kPrefer;
    auto created = vfsd::passthrough::PassthroughFs::create(std::move(config));
    if (!created) std::abort();
    fs = std::move(*created);
    server = std::make_unique<vfsd::fuse::Server>(*fs, vfsd::fuse::ServerOptions{});
  }
  // The reply's payload, or empty on an error.
  std::vector<uint8_t> send(RequestBuilder request) {
    vfsd::test::Bytes in = request.unique(unique += 2).finish();
    std::vector<uint8_t> out(4096);
    vfsd::IovecReader reader({iovec{in.data(), in.size()}});
    vfsd::IovecWriter writer({iovec{out.data(), out.size()}});
    const size_t n = server->handle(reader, writer);
    fuse_out_header head{};
    if (n < sizeof head) return {};
    std::memcpy(&head, out.data(), sizeof head);
    if (head.error != 0) return {};
    return {out.begin() + sizeof head, out.begin() + static_cast<long>(n)};
  }
  uint64_t lookup(uint64_t parent, const std::string& name) {
    auto r = send(std::move(RequestBuilder(FUSE_LOOKUP, parent, 0).add_name(name)));
    if (r.size() < sizeof(fuse_entry_out)) std::abort();
    fuse_entry_out e{};
    std::memcpy(&e, r.data(), sizeof e);
    return e.nodeid;
  }
  std::unique_ptr<vfsd::passthrough::PassthroughFs> fs;
  std::unique_ptr<vfsd::fuse::Server> server;
  uint64_t unique = 0;
};

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void run(size_t files, bool file_handles, bool prepared) {
  char tmpl[] = "/tmp/vfsd-migration-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) std::abort();
  const std::string dir = tmpl;
  constexpr size_t kDirs = 100;
  for (size_t d = 0; d < kDirs; ++d) ::mkdir((dir + "/d" + std::to_string(d)).c_str(), 0755);
  for (size_t i = 0; i < files; ++i) {
    const std::string path = dir + "/d" + std::to_string(i % kDirs) + "/f" + std::to_string(i);
    ::close(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  }
  Daemon source(dir);
  fuse_init_in init{};
  init.major = FUSE_KERNEL_VERSION;
  init.minor = FUSE_KERNEL_MINOR_VERSION;
  source.send(std::move(RequestBuilder(FUSE_INIT, 0, 0).add(init)));
  std::vector<uint64_t> dirs;
  for (size_t d = 0; d < kDirs; ++d) dirs.push_back(source.lookup(1, "d" + std::to_string(d)));
  for (size_t i = 0; i < files; ++i) {
    const uint64_t node = source.lookup(dirs[i % kDirs], "f" + std::to_string(i));
    if (i % 100 == 0) {
      fuse_open_in open{};
      open.flags = O_RDONLY;
      source.send(std::move(RequestBuilder(FUSE_OPEN, node, 0).add(open)));
    }
  }
  vfsd::passthrough::PassthroughFs::MigrationOptions options;
  options.file_handles = file_handles;
  double prepare_ms = 0;
  auto start = Clock::now();
  if (prepared) {
    // What LOG_ALL starts while the guest still runs.
    std::atomic<bool> cancel{false};
    source.fs->prepare_migration(options, cancel);
    prepare_ms = ms_since(start);
  }
  start = Clock::now();
  vfsd::migration::State state;
  state.session = source.server->session_state();
  if (!source.fs->save_migration_state(options, state)) std::abort();
  const std::vector<uint8_t> bytes = vfsd::migration::encode(state);
  const double save_ms = ms_since(start);

  Daemon destination(dir);
  start = Clock::now();
  auto decoded = vfsd::migration::decode(bytes);
  if (!decoded || !destination.server->restore_session(decoded->session) ||
      !destination.fs->load_migration_state(options, *decoded))
    std::abort();
  const double load_ms = ms_since(start);
  std::printf("| %zu | %s%s | %zu | %.1f | %.1f | %.1f | %.1f |\n", files,
              file_handles ? "file-handles" : "find-paths", prepared ? ", prepared" : "",
              bytes.size() / 1024, prepare_ms, save_ms, load_ms, save_ms + load_ms);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
  if (sizes.empty()) sizes = {1000, 10000, 100000};
  std::printf(
      "| inodes looked up | mode | state KiB | preparation ms (guest runs) | save ms | load ms | "
      "downtime ms (save + load) |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (size_t n : sizes) {
    run(n, false, false);
    run(n, false, true);
    run(n, true, false);
  }
}
