// Protocol-level benchmark: FUSE requests as a guest kernel puts them on the
// wire, handed to the real fuse::Server over the real PassthroughFs on a
// host folder, the reply written into a local buffer. No virtqueue, no guest:
// what it times is the daemon's own request path (decode, dispatch, the
// syscalls, encode). Compare builds of this tree with each other; the guest
// benchmark (bench/guest_copy.sh) compares us with the peer daemons.
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

namespace {

using vfsd::IovecReader;
using vfsd::IovecWriter;

constexpr uint64_t kRoot = 1;

// One request's bytes: header, fixed body, then optional trailing bytes.
class WireRequest {
 public:
  WireRequest(uint32_t opcode, uint64_t nodeid) {
    header_.opcode = opcode;
    header_.nodeid = nodeid;
  }
  template <class T>
  WireRequest& add(const T& body) {
    const auto* p = reinterpret_cast<const char*>(&body);
    body_.insert(body_.end(), p, p + sizeof(T));
    return *this;
  }
  WireRequest& add_name(const std::string& name) {
    body_.insert(body_.end(), name.begin(), name.end());
    body_.push_back('\0');
    return *this;
  }
  WireRequest& add_bytes(size_t n, char fill) {
    body_.insert(body_.end(), n, fill);
    return *this;
  }
  /// `claimed_len` overrides the header's length (0: the true length).
  std::vector<char> bytes(uint64_t unique, uint32_t claimed_len = 0) const {
    fuse_in_header h = header_;
    h.unique = unique;
    h.len = claimed_len != 0 ? claimed_len : static_cast<uint32_t>(sizeof(h) + body_.size());
    std::vector<char> out(reinterpret_cast<const char*>(&h),
                          reinterpret_cast<const char*>(&h) + sizeof(h));
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  fuse_in_header header_{};
  std::vector<char> body_;
};

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
    expect_ok(send(WireRequest(FUSE_INIT, 0).add(init)), "INIT");
  }
  ~Daemon() {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// Sends a request; returns the reply's error field (0 = success).
  int32_t send(const WireRequest& request, size_t reply_room = 4096, uint32_t claimed_len = 0) {
    std::vector<char> in = request.bytes(unique_ += 2, claimed_len);
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
    expect_ok(send(WireRequest(FUSE_LOOKUP, kRoot).add_name(name)), "LOOKUP");
    return reply_body<fuse_entry_out>().nodeid;
  }
  uint64_t open(uint64_t node, uint32_t flags) {
    fuse_open_in in{};
    in.flags = flags;
    expect_ok(send(WireRequest(FUSE_OPEN, node).add(in)), "OPEN");
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
  const WireRequest req = WireRequest(FUSE_GETATTR, kRoot).add(fuse_getattr_in{});
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
}
BENCHMARK(BM_Getattr);

// A LOOKUP and the FORGET that returns its reference: the guest's dentry churn.
void BM_LookupForget(benchmark::State& state) {
  Daemon& d = daemon();
  const WireRequest lookup = WireRequest(FUSE_LOOKUP, kRoot).add_name("small");
  const uint64_t node = d.lookup("small");
  fuse_forget_in forget{};
  forget.nlookup = 1;
  const WireRequest drop = WireRequest(FUSE_FORGET, node).add(forget);
  for (auto _ : state) {
    benchmark::DoNotOptimize(d.send(lookup));
    benchmark::DoNotOptimize(d.send(drop));
  }
}
BENCHMARK(BM_LookupForget);

void BM_LookupMissing(benchmark::State& state) {
  Daemon& d = daemon();
  const WireRequest req = WireRequest(FUSE_LOOKUP, kRoot).add_name("no-such-file");
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
}
BENCHMARK(BM_LookupMissing);

void BM_OpenRelease(benchmark::State& state) {
  Daemon& d = daemon();
  const uint64_t node = d.lookup("small");
  fuse_open_in open{};
  open.flags = O_RDONLY;
  const WireRequest open_req = WireRequest(FUSE_OPEN, node).add(open);
  for (auto _ : state) {
    d.expect_ok(d.send(open_req), "OPEN");
    fuse_release_in release{};
    release.fh = d.reply_body<fuse_open_out>().fh;
    benchmark::DoNotOptimize(d.send(WireRequest(FUSE_RELEASE, node).add(release)));
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
  const WireRequest req = WireRequest(FUSE_READ, node).add(in);
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
  const WireRequest req = WireRequest(FUSE_WRITE, node).add(in).add_bytes(size, 'w');
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * size);
}
BENCHMARK(BM_Write)->Arg(4096)->Arg(128 * 1024);

// A request whose length runs past the bytes present: the cost of refusing.
void BM_Malformed(benchmark::State& state) {
  Daemon& d = daemon();
  const WireRequest req = WireRequest(FUSE_GETATTR, kRoot).add(fuse_getattr_in{});
  for (auto _ : state) benchmark::DoNotOptimize(d.send(req, 4096, /*claimed_len=*/1u << 30));
}
BENCHMARK(BM_Malformed);

}  // namespace

BENCHMARK_MAIN();
