// The request metrics through the real stack: raw FUSE requests into a
// fuse::Server over a real PassthroughFs, then the counts, error counts and
// histogram per opcode read back, and the same through the Prometheus text.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"
#include "util/metrics.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

class FuseMetrics : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vfsd-metrics-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    test::write_host(root_ + "/existing", "some bytes");
    auto created = passthrough::PassthroughFs::create({.shared_dir = root_});
    ASSERT_TRUE(created);
    fs_ = std::move(*created);
    fuse::ServerOptions options;
    options.metrics = &metrics_;
    server_ = std::make_unique<fuse::Server>(*fs_, options);
    ASSERT_TRUE(send(init_request(2)).ok());
  }
  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  Reply send(const Bytes& request, size_t reply_room = 8192) {
    Bytes req = request, out(reply_room);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }
  RequestBuilder req(uint32_t opcode, uint64_t node) {
    return std::move(RequestBuilder(opcode, node, unique_ += 2).creds(0, 0));
  }
  Reply lookup(const std::string& name) {
    return send(req(FUSE_LOOKUP, kRootInode.value()).add_name(name).finish());
  }
  Reply getattr(uint64_t node) {
    fuse_getattr_in in{};
    return send(req(FUSE_GETATTR, node).add(in).finish());
  }

  metrics::RequestMetrics metrics_;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 2;
};

TEST_F(FuseMetrics, CountsEveryRequestAndItsErrorsUnderItsOpcode) {
  auto found = lookup("existing");
  ASSERT_TRUE(found.ok());
  const uint64_t node = found.as<fuse_entry_out>().nodeid;
  EXPECT_EQ(lookup("missing").error(), ENOENT);
  EXPECT_EQ(lookup("also-missing").error(), ENOENT);
  EXPECT_TRUE(getattr(node).ok());
  EXPECT_TRUE(getattr(kRootInode.value()).ok());
  EXPECT_FALSE(getattr(0xdead0000).ok()) << "an unknown node id";
  fuse_forget_in forget{};
  forget.nlookup = 1;
  EXPECT_EQ(send(req(FUSE_FORGET, node).add(forget).finish()).bytes, 0u);

  const metrics::Snapshot s = metrics_.snapshot();
  EXPECT_EQ(s[FUSE_INIT].count, 1u);
  EXPECT_EQ(s[FUSE_INIT].errors, 0u);
  EXPECT_EQ(s[FUSE_LOOKUP].count, 3u);
  EXPECT_EQ(s[FUSE_LOOKUP].errors, 2u);
  EXPECT_EQ(s[FUSE_GETATTR].count, 3u);
  EXPECT_EQ(s[FUSE_GETATTR].errors, 1u);
  EXPECT_EQ(s[FUSE_FORGET].count, 1u) << "a request without a reply is counted too";
  EXPECT_EQ(s[FUSE_FORGET].errors, 0u);
  EXPECT_EQ(s[FUSE_OPEN].count, 0u);
  EXPECT_EQ(s[0].count, 0u);
  // Every request fell in one bucket and took some time.
  for (uint32_t op : {FUSE_INIT, FUSE_LOOKUP, FUSE_GETATTR, FUSE_FORGET}) {
    uint64_t in_buckets = 0;
    for (uint64_t n : s[op].buckets) in_buckets += n;
    EXPECT_EQ(in_buckets, s[op].count) << op;
    EXPECT_GT(s[op].total_ns, 0u) << op;
  }
}

TEST_F(FuseMetrics, MalformedAndUnknownRequestsAreCountedAsErrors) {
  // An opcode the server does not know: ENOSYS, in slot 0 ("UNKNOWN").
  EXPECT_EQ(send(req(4000, kRootInode.value()).finish()).error(), ENOSYS);
  EXPECT_EQ(send(req(63, kRootInode.value()).finish()).error(), ENOSYS);
  // A LOOKUP whose header claims more bytes than it has: EINVAL.
  EXPECT_EQ(
      send(req(FUSE_LOOKUP, kRootInode.value()).add_name("x").claimed_len(4096).finish()).error(),
      EINVAL);
  // No room for a reply header: dropped, and a failure.
  EXPECT_EQ(send(req(FUSE_GETATTR, kRootInode.value()).add(fuse_getattr_in{}).finish(), 8).bytes,
            0u);
  const metrics::Snapshot s = metrics_.snapshot();
  EXPECT_EQ(s[0].count, 2u);
  EXPECT_EQ(s[0].errors, 2u);
  EXPECT_EQ(s[FUSE_LOOKUP].count, 1u);
  EXPECT_EQ(s[FUSE_LOOKUP].errors, 1u);
  EXPECT_EQ(s[FUSE_GETATTR].count, 1u);
  EXPECT_EQ(s[FUSE_GETATTR].errors, 1u);
  EXPECT_EQ(fuse::op_names()[0], "UNKNOWN");
  EXPECT_EQ(fuse::op_names()[FUSE_LOOKUP], "LOOKUP");
  EXPECT_EQ(fuse::op_names()[FUSE_COPY_FILE_RANGE], "COPY_FILE_RANGE");
}

TEST_F(FuseMetrics, RequestsFromSeveralThreadsAddUp) {
  constexpr int kThreads = 3, kEach = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      for (int i = 0; i < kEach; ++i) {
        fuse_getattr_in in{};
        Bytes request = RequestBuilder(FUSE_GETATTR, kRootInode.value(), 1000 + i).add(in).finish();
        Bytes out(4096);
        IovecReader reader(segments(request.data(), request.size(), 0));
        IovecWriter writer(segments(out.data(), out.size(), 0));
        server_->handle(reader, writer);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(metrics_.snapshot()[FUSE_GETATTR].count, uint64_t{kThreads * kEach});
  EXPECT_EQ(metrics_.snapshot()[FUSE_GETATTR].errors, 0u);
}

TEST_F(FuseMetrics, PrometheusTextNamesTheOpcodes) {
  ASSERT_TRUE(lookup("existing").ok());
  EXPECT_FALSE(lookup("missing").ok());
  const std::string text = metrics::render_prometheus(metrics_.snapshot(), fuse::op_names(), {});
  EXPECT_NE(text.find("virtiofsd_requests_total{op=\"LOOKUP\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("virtiofsd_request_errors_total{op=\"LOOKUP\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("virtiofsd_request_duration_seconds_count{op=\"INIT\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("virtiofsd_request_duration_seconds_bucket{op=\"LOOKUP\",le=\"+Inf\"} 2\n"),
            std::string::npos)
      << text;
}

TEST(FuseMetricsOff, AServerWithoutMetricsRecordsNothing) {
  // The default ServerOptions measure nothing (tests and fuzzers pay no clock reads).
  EXPECT_EQ(fuse::ServerOptions{}.metrics, nullptr);
}

}  // namespace
}  // namespace vfsd::test
