// ".." never leaves the shared directory, in any mode and without a
// sandbox: a directory the guest holds that the host moves out of the share
// keeps its children, but its ".." (and the ".." of anything below it) is
// refused, so repeated ".." lookups cannot walk the host's tree. Raw FUSE
// bytes into fuse::Server over a real PassthroughFs; the host side renames.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

class DotDotTest : public ::testing::TestWithParam<passthrough::InodeFileHandles> {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-dotdot-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    share_ = top_ + "/share";
    outside_ = top_ + "/outside";
    fs::create_directories(share_ + "/held/sub/deeper");
    fs::create_directories(share_ + "/a/b");
    fs::create_directories(outside_);
    test::write_host(outside_ + "/secret", "host secret");
    test::write_host(share_ + "/held/child", "moves with its directory");
    passthrough::PassthroughConfig config{.shared_dir = share_};
    config.inode_file_handles = GetParam();
    auto created = passthrough::PassthroughFs::create(config);
    ASSERT_TRUE(created) << errno_name(created.error().value);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    ASSERT_TRUE(send(init_request(2)).ok());
  }
  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(top_, ec);
    ::umask(old_umask_);
  }

  Reply send(const Bytes& request) {
    Bytes req = request, out(8192);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }
  Reply lookup(uint64_t parent, const std::string& name) {
    return send(RequestBuilder(FUSE_LOOKUP, parent, unique_ += 2).add_name(name).finish());
  }
  uint64_t lookup_ok(uint64_t parent, const std::string& name) {
    Reply r = lookup(parent, name);
    EXPECT_TRUE(r.ok()) << name << ": " << r.error();
    return r.as<fuse_entry_out>().nodeid;
  }

  mode_t old_umask_ = 0;
  std::string top_, share_, outside_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 10;
};

TEST_P(DotDotTest, DotDotInsideTheShareIsTheParent) {
  const uint64_t a = lookup_ok(kRootInode.value(), "a");
  const uint64_t b = lookup_ok(a, "b");
  EXPECT_EQ(lookup_ok(b, ".."), a);
  EXPECT_EQ(lookup_ok(a, ".."), kRootInode.value());
  EXPECT_EQ(lookup_ok(kRootInode.value(), ".."), kRootInode.value());
}

TEST_P(DotDotTest, AHeldDirectoryMovedOutOfTheShareHasNoParent) {
  const uint64_t held = lookup_ok(kRootInode.value(), "held");
  const uint64_t sub = lookup_ok(held, "sub");
  const uint64_t deeper = lookup_ok(sub, "deeper");
  const size_t inodes_before = fs_->inode_count();
  // The host moves the held directory next to the secret, outside the share.
  ASSERT_EQ(std::rename((share_ + "/held").c_str(), (outside_ + "/held").c_str()), 0);

  // Its ".." is the directory holding the secret: refused. So is the ".."
  // of everything below it, however deep, and no lookup registered
  // anything outside.
  for (uint64_t node : {held, sub, deeper}) {
    Reply up = lookup(node, "..");
    EXPECT_FALSE(up.ok()) << "node " << node << " reached its parent outside the share";
    EXPECT_EQ(up.error(), ENOENT);
  }
  // Repeated walks from the deepest node get no further.
  uint64_t node = deeper;
  for (int i = 0; i < 10; ++i) {
    Reply up = lookup(node, "..");
    if (!up.ok()) break;
    node = up.as<fuse_entry_out>().nodeid;
    // Inside the moved tree is fine (sub, then held); above it is not.
    Reply secret = lookup(node, "secret");
    EXPECT_FALSE(secret.ok()) << "the host file outside the share was reached";
  }
  EXPECT_EQ(fs_->inode_count(), inodes_before) << "something outside the share was registered";
  // What moved with the directory is still the guest's (the same inodes).
  EXPECT_TRUE(lookup(held, "child").ok());
  // Moved back, its parent is the root again.
  ASSERT_EQ(std::rename((outside_ + "/held").c_str(), (share_ + "/held").c_str()), 0);
  EXPECT_EQ(lookup_ok(held, ".."), kRootInode.value());
  EXPECT_EQ(lookup_ok(deeper, ".."), sub);
}

INSTANTIATE_TEST_SUITE_P(Modes, DotDotTest,
                         ::testing::Values(passthrough::InodeFileHandles::kNever,
                                           passthrough::InodeFileHandles::kPrefer),
                         [](const auto& info) {
                           return info.param == passthrough::InodeFileHandles::kNever ? "Fds"
                                                                                      : "Handles";
                         });

}  // namespace
}  // namespace vfsd::test
