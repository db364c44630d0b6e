// Setuid and setgid bits go where Linux sends them: a write, truncation or
// fallocate by a caller without CAP_FSETID clears them. The daemon has
// CAP_FSETID, so unless it drops it for such a request the host keeps the
// bits; with --cache=never (the guest's direct-I/O path) nothing else clears
// them, and a world-writable setuid file stays setuid after a stranger wrote
// it. Raw FUSE bytes over a real PassthroughFs, with and without killpriv v2;
// the mode is read on the host.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "fuse/abi_ext.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

constexpr mode_t kPrivMode = 06777;  // setuid, setgid with group exec, world-writable
constexpr mode_t kPlainMode = 00777;

class KillPrivTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-killpriv-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.killpriv_v2 = GetParam();
    auto created = passthrough::PassthroughFs::create(config);
    ASSERT_TRUE(created);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    ASSERT_TRUE(send(init_request(2)).ok());
    ASSERT_EQ((server_->agreed_flags() & FUSE_HANDLE_KILLPRIV_V2) != 0, GetParam());
  }
  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  Reply send(const Bytes& request) {
    Bytes req = request, out(8192);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }
  RequestBuilder as(uint32_t uid, uint32_t opcode, uint64_t node) {
    return RequestBuilder(opcode, node, unique_ += 2).creds(uid, uid);
  }

  // A setuid/setgid file owned by root, looked up and opened read-write
  // (by root: the guest kernel checked the caller's permission).
  struct Open {
    std::string path;
    uint64_t node = 0, fh = 0;
  };
  Open make_priv_file(const std::string& name, uint32_t open_flags = O_RDWR, uint32_t uid = 0) {
    Open f;
    f.path = root_ + "/" + name;
    test::write_host(f.path, "0123456789");
    EXPECT_EQ(::chmod(f.path.c_str(), kPrivMode), 0);
    Reply e = send(as(0, FUSE_LOOKUP, kRootInode.value()).add_name(name).finish());
    EXPECT_TRUE(e.ok());
    f.node = e.as<fuse_entry_out>().nodeid;
    fuse_open_in open{};
    open.flags = open_flags;
    // With killpriv v2 a guest marks the truncating open of a caller
    // without CAP_FSETID; without it, it marks nothing.
    if (GetParam() && uid != 0 && (open_flags & O_TRUNC)) open.open_flags = FUSE_OPEN_KILL_SUIDGID;
    Reply o = send(as(uid, FUSE_OPEN, f.node).add(open).finish());
    EXPECT_TRUE(o.ok()) << o.error();
    f.fh = o.as<fuse_open_out>().fh;
    return f;
  }
  mode_t host_mode(const std::string& path) { return test::host_lstat(path).st_mode & 07777; }

  Reply write(const Open& f, uint32_t uid, uint32_t write_flags) {
    fuse_write_in w{};
    w.fh = f.fh;
    w.size = 3;
    w.write_flags = write_flags;
    return send(as(uid, FUSE_WRITE, f.node).add(w).add_bytes("abc", 3).finish());
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 10;
};

// What a Linux guest sends for a write(2) through a direct-I/O file by a
// user without CAP_FSETID: the kill flag, with killpriv v2 or without.
TEST_P(KillPrivTest, AMarkedWriteClearsSetuidAndSetgid) {
  Open f = make_priv_file("marked");
  ASSERT_TRUE(write(f, 1000, FUSE_WRITE_KILL_SUIDGID).ok());
  EXPECT_EQ(host_mode(f.path), kPlainMode);
  EXPECT_EQ(test::read_host(f.path), "abc3456789");
}

// A guest root (CAP_FSETID) writes without the flag: the bits stay.
TEST_P(KillPrivTest, AnUnmarkedWriteKeepsThem) {
  Open f = make_priv_file("unmarked");
  ASSERT_TRUE(write(f, 0, 0).ok());
  EXPECT_EQ(host_mode(f.path), kPrivMode);
}

TEST_P(KillPrivTest, AMarkedTruncationClearsThem) {
  Open f = make_priv_file("truncated");
  fuse_setattr_in sa{};
  sa.valid = FATTR_SIZE | FATTR_FH | FATTR_KILL_SUIDGID;
  sa.fh = f.fh;
  sa.size = 2;
  ASSERT_TRUE(send(as(1000, FUSE_SETATTR, f.node).add(sa).finish()).ok());
  EXPECT_EQ(host_mode(f.path), kPlainMode);
  EXPECT_EQ(test::read_host(f.path), "01");
}

TEST_P(KillPrivTest, FallocateByAGuestUserClearsThemByRootKeepsThem) {
  Open f = make_priv_file("allocated");
  fuse_fallocate_in fa{};
  fa.fh = f.fh;
  fa.length = 8192;
  ASSERT_TRUE(send(as(0, FUSE_FALLOCATE, f.node).add(fa).finish()).ok());
  EXPECT_EQ(host_mode(f.path), kPrivMode);
  ASSERT_TRUE(send(as(1000, FUSE_FALLOCATE, f.node).add(fa).finish()).ok());
  EXPECT_EQ(host_mode(f.path), kPlainMode);
}

TEST_P(KillPrivTest, ATruncatingOpenByAGuestUserClearsThemByRootKeepsThem) {
  Open by_root = make_priv_file("root-trunc", O_RDWR | O_TRUNC, 0);
  EXPECT_EQ(host_mode(by_root.path), kPrivMode);
  EXPECT_EQ(test::read_host(by_root.path), "");
  Open by_user = make_priv_file("user-trunc", O_RDWR | O_TRUNC, 1000);
  EXPECT_EQ(host_mode(by_user.path), kPlainMode);
  EXPECT_EQ(test::read_host(by_user.path), "");
}

INSTANTIATE_TEST_SUITE_P(KillprivV2, KillPrivTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "On" : "Off"; });

}  // namespace
}  // namespace vfsd::test
