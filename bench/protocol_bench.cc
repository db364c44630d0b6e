// Protocol-level benchmark: FUSE requests as a guest kernel puts them on the
// wire, handed to the real fuse::Server over the real PassthroughFs on a
// host folder, the reply written into a local buffer. No virtqueue, no guest:
// what it times is the daemon's own request path (decode, dispatch, the
// syscalls, encode). Compare builds of this tree with each other; the guest
// benchmark (bench/run_guest.sh) compares us with the peer daemons.
//
//   build/bench/protocol_bench [--benchmark_filter=...]
#include <fcntl.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"

namespace {

using vfsd::IovecReader;
using vfsd::IovecWriter;
// The tests' request builder: the unique is set at each send.
using vfsd::test::RequestBuilder;

constexpr uint64_t kRoot = 1;

// A host folder with a few files, served by one PassthroughFs + Server.
class Daemon {
 public:
  Daemon() {
    char tmpl[] = "/tmp/vfsd-protocol-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    dir_ = tmpl;
    write_file("small", std::string(4096, 's'));
    write_file("big", std::string(1 << 20, 'b'));
    vfsd::passthrough::PassthroughConfig config;
    config.shared_dir = dir_;
    config.inode_file_handles = vfsd::passthrough::InodeFileHandles::kPrefer;  // the default
    auto created = vfsd::passthrough::PassthroughFs::create(std::move(config));
    if (!created) {
      std::fprintf(stderr, "PassthroughFs::create failed: %s\n",
                   vfsd::errno_name(created.error().value).c_str());
      std::abort();
    }
    fs_ = std::move(*created);
    server_ = std::make_unique<vfsd::fuse::Server>(*fs_, vfsd::fuse::ServerOptions{});
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    init.max_readahead = 1 << 20;
    init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS;
    RequestBuilder request(FUSE_INIT, 0, 0);
    expect_ok(send(request.add(init)), "INIT");
  }
  ~Daemon() {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// Sends a request under a fresh unique, its header claiming `claimed_len`
  /// bytes (0: the true length); returns the reply's error field (0 = success).
  int32_t send(RequestBuilder& request, size_t reply_room = 4096, uint32_t claimed_len = 0) {
    vfsd::test::Bytes in = request.unique(unique_ += 2).claimed_len(claimed_len).finish();
    if (reply_.size() < reply_room) reply_.resize(reply_room);
    IovecReader reader({iovec{in.data(), in.size()}});
    IovecWriter writer({iovec{reply_.data(), reply_room}});
    const size_t written = server_->handle(reader, writer);
    if (written < sizeof(fuse_out_header)) return 0;  // no reply (FORGET)
    fuse_out_header out{};
    std::memcpy(&out, reply_.data(), sizeof(out));
    return out.error;
  }
  template <class T>
  T reply_body() const {
    T body{};
    std::memcpy(&body, reply_.data() + sizeof(fuse_out_header), sizeof(T));
    return body;
  }
  static void expect_ok(int32_t error, const char* what) {
    if (error != 0) {
      std::fprintf(stderr, "%s failed: %d\n", what, error);
      std::abort();
    }
  }

  uint64_t lookup(const std::string& name) {
    RequestBuilder request(FUSE_LOOKUP, kRoot, 0);
    expect_ok(send(request.add_name(name)), "LOOKUP");
    return reply_body<fuse_entry_out>().nodeid;
  }
  uint64_t open(uint64_t node, uint32_t flags) {
    fuse_open_in in{};
    in.flags = flags;
    RequestBuilder request(FUSE_OPEN, node, 0);
    expect_ok(send(request.add(in)), "OPEN");
    return reply_body<fuse_open_out>().fh;
  }

 private:
  void write_file(const std::string& name, const std::string& data) {
    const std::string path = dir_ + "/" + name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()))
      std::abort();
    ::close(fd);
  }

  std::string dir_;
  std::unique_ptr<vfsd::passthrough::PassthroughFs> fs_;
  std::unique_ptr<vfsd::fuse::Server> server_;
  std::vector<char> reply_;
  uint64_t unique_ = 0;
};

Daemon& daemon() {
  static Daemon d;
  return d;
}

void BM_Getattr(benchmark::State& state) {
  Daemon& d = daemon();
  RequestBuilder req = RequestBuilder(FUSE_GETATTR, kRoot, 0).add(fuse_getattr_in{});
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
}
BENCHMARK(BM_Getattr);

// A LOOKUP and the FORGET that returns its reference: the guest's dentry churn.
void BM_LookupForget(benchmark::State& state) {
  Daemon& d = daemon();
  RequestBuilder lookup = RequestBuilder(FUSE_LOOKUP, kRoot, 0).add_name("small");
  const uint64_t node = d.lookup("small");
  fuse_forget_in forget{};
  forget.nlookup = 1;
  RequestBuilder drop = RequestBuilder(FUSE_FORGET, node, 0).add(forget);
  for (auto _ : state) {
    benchmark::DoNotOptimize(d.send(lookup));
    benchmark::DoNotOptimize(d.send(drop));
  }
}
BENCHMARK(BM_LookupForget);

void BM_LookupMissing(benchmark::State& state) {
  Daemon& d = daemon();
  RequestBuilder req = RequestBuilder(FUSE_LOOKUP, kRoot, 0).add_name("no-such-file");
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
}
BENCHMARK(BM_LookupMissing);

void BM_OpenRelease(benchmark::State& state) {
  Daemon& d = daemon();
  const uint64_t node = d.lookup("small");
  fuse_open_in open{};
  open.flags = O_RDONLY;
  RequestBuilder open_req = RequestBuilder(FUSE_OPEN, node, 0).add(open);
  for (auto _ : state) {
    d.expect_ok(d.send(open_req), "OPEN");
    fuse_release_in release{};
    release.fh = d.reply_body<fuse_open_out>().fh;
    RequestBuilder release_req(FUSE_RELEASE, node, 0);
    benchmark::DoNotOptimize(d.send(release_req.add(release)));
  }
}
BENCHMARK(BM_OpenRelease);

// READ of `size` bytes at offset 0 of the 1 MiB file, into the reply buffer.
void BM_Read(benchmark::State& state) {
  Daemon& d = daemon();
  const auto size = static_cast<uint32_t>(state.range(0));
  const uint64_t node = d.lookup("big");
  fuse_read_in in{};
  in.fh = d.open(node, O_RDONLY);
  in.size = size;
  RequestBuilder req = RequestBuilder(FUSE_READ, node, 0).add(in);
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req, sizeof(fuse_out_header) + size));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * size);
}
BENCHMARK(BM_Read)->Arg(4096)->Arg(128 * 1024)->Arg(1 << 20);

void BM_Write(benchmark::State& state) {
  Daemon& d = daemon();
  const auto size = static_cast<uint32_t>(state.range(0));
  const uint64_t node = d.lookup("small");
  fuse_write_in in{};
  in.fh = d.open(node, O_WRONLY);
  in.size = size;
  RequestBuilder req =
      RequestBuilder(FUSE_WRITE, node, 0).add(in).add_bytes(std::string(size, 'w'));
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * size);
}
BENCHMARK(BM_Write)->Arg(4096)->Arg(128 * 1024);

// A request whose length runs past the bytes present: the cost of refusing.
void BM_Malformed(benchmark::State& state) {
  Daemon& d = daemon();
  RequestBuilder req = RequestBuilder(FUSE_GETATTR, kRoot, 0).add(fuse_getattr_in{});
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req, 4096, /*claimed_len=*/1u << 30));
}
BENCHMARK(BM_Malformed);

}  // namespace

BENCHMARK_MAIN();
