// CVE-2021-20263: when --xattrmap or --rewrite-security-xattrs store the
// guest's security.capability under another host name, the host kernel no
// longer knows it is a file capability and keeps it across writes,
// truncations and chowns, where Linux drops a real one: a guest user could
// then write their own code into a file that grants capabilities. The daemon
// clears the remapped name as Linux clears security.capability: on WRITE, a
// truncating SETATTR (with and without a handle), OPEN and CREATE with
// O_TRUNC, a chown or chgrp of anything but a directory, FALLOCATE and
// COPY_FILE_RANGE into the file. Operations that change no data and no owner
// keep it. Raw FUSE bytes over a real PassthroughFs; the xattr is read on the
// host.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "raw_fuse.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

// A version-2 vfs_cap_data (magic, permitted CAP_NET_RAW): what setcap
// stores. As a user.* or trusted.* value the host does not interpret it.
const std::string kCapValue(
    "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00",
    20);

struct Remap {
  const char* name;
  std::string xattrmap;
  bool rewrite_security_xattrs;
  const char* host_name;  // where security.capability lands
};

class CapabilityXattrTest : public ::testing::TestWithParam<Remap> {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-cap-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.xattr = true;
    config.xattrmap = GetParam().xattrmap;
    config.rewrite_security_xattrs = GetParam().rewrite_security_xattrs;
    fuse_ = std::make_unique<RawFuse>(config);
    ASSERT_TRUE(fuse_->ready());
    EXPECT_EQ(fuse_->fs().remapped_capability_xattr(), GetParam().host_name);
  }
  void TearDown() override {
    fuse_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  RawFuse& g() { return *fuse_; }
  std::string path(const std::string& rel) const { return root_ + "/" + rel; }

  // A host file (or directory) carrying the remapped capability; its node.
  uint64_t capable(const std::string& name, bool dir = false) {
    if (dir) {
      EXPECT_EQ(::mkdir(path(name).c_str(), 0755), 0);
    } else {
      test::write_host(path(name), "0123456789");
      EXPECT_EQ(::chmod(path(name).c_str(), 0755), 0);
    }
    EXPECT_EQ(
        ::setxattr(path(name).c_str(), GetParam().host_name, kCapValue.data(), kCapValue.size(), 0),
        0);
    const uint64_t node = g().node(kRootInode.value(), name);
    // The guest sees it as its security.capability.
    Reply seen = g().getxattr(node, "security.capability");
    EXPECT_TRUE(seen.ok()) << seen.error();
    EXPECT_EQ(seen.text(), kCapValue);
    return node;
  }
  bool has_capability(const std::string& name) {
    char value[64];
    return ::getxattr(path(name).c_str(), GetParam().host_name, value, sizeof value) >= 0;
  }
  uint64_t open_fh(uint64_t node, uint32_t flags) {
    Reply o = g().open(node, flags);
    EXPECT_TRUE(o.ok()) << o.error();
    return o.as<fuse_open_out>().fh;
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<RawFuse> fuse_;
};

TEST_P(CapabilityXattrTest, AWriteClearsIt) {
  const uint64_t node = capable("f");
  const uint64_t fh = open_fh(node, O_RDWR);
  EXPECT_TRUE(has_capability("f")) << "an open without O_TRUNC changes nothing";
  ASSERT_TRUE(g().write(node, fh, "new code").ok());
  EXPECT_FALSE(has_capability("f"));
  EXPECT_EQ(test::read_host(path("f")), "new code89");
  // The guest sees it gone too.
  EXPECT_EQ(g().getxattr(node, "security.capability").error(), ENODATA);
  // Writing again (nothing left to clear) still works.
  EXPECT_TRUE(g().write(node, fh, "x").ok());
}

TEST_P(CapabilityXattrTest, ATruncatingSetattrClearsIt) {
  const uint64_t with_handle = capable("with_handle");
  const uint64_t fh = open_fh(with_handle, O_RDWR);
  ASSERT_TRUE(g().truncate(with_handle, 3, fh).ok());
  EXPECT_FALSE(has_capability("with_handle"));
  EXPECT_EQ(test::read_host(path("with_handle")), "012");

  const uint64_t by_path = capable("by_path");
  ASSERT_TRUE(g().truncate(by_path, 0).ok());
  EXPECT_FALSE(has_capability("by_path"));
  EXPECT_EQ(test::read_host(path("by_path")), "");
}

TEST_P(CapabilityXattrTest, OpenAndCreateWithOTruncClearIt) {
  const uint64_t opened = capable("opened");
  open_fh(opened, O_WRONLY | O_TRUNC);
  EXPECT_FALSE(has_capability("opened"));
  EXPECT_EQ(test::read_host(path("opened")), "");

  capable("created");
  Reply c = g().create(kRootInode.value(), "created", O_RDWR | O_TRUNC);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_FALSE(has_capability("created"));
  EXPECT_EQ(test::read_host(path("created")), "");
}

TEST_P(CapabilityXattrTest, AChownOrChgrpClearsIt) {
  const uint64_t owner = capable("owner");
  ASSERT_TRUE(g().chown(owner, 1234, 0).ok());
  EXPECT_EQ(test::host_lstat(path("owner")).st_uid, 1234u);
  EXPECT_FALSE(has_capability("owner"));

  const uint64_t group = capable("group");
  fuse_setattr_in in{};
  in.valid = FATTR_GID;
  in.gid = 4321;
  ASSERT_TRUE(g().setattr(group, in).ok());
  EXPECT_FALSE(has_capability("group"));
}

TEST_P(CapabilityXattrTest, FallocateAndCopyFileRangeIntoTheFileClearIt) {
  const uint64_t allocated = capable("allocated");
  const uint64_t fh = open_fh(allocated, O_RDWR);
  fuse_fallocate_in fa{};
  fa.fh = fh;
  fa.length = 8192;
  ASSERT_TRUE(g().send(g().req(FUSE_FALLOCATE, allocated).add(fa).finish()).ok());
  EXPECT_FALSE(has_capability("allocated"));

  test::write_host(path("source"), "copied");
  const uint64_t source = g().node(kRootInode.value(), "source");
  const uint64_t source_fh = open_fh(source, O_RDONLY);
  const uint64_t target = capable("target");
  const uint64_t target_fh = open_fh(target, O_RDWR);
  fuse_copy_file_range_in cr{};
  cr.fh_in = source_fh;
  cr.nodeid_out = target;
  cr.fh_out = target_fh;
  cr.len = 6;
  Reply copied = g().send(g().req(FUSE_COPY_FILE_RANGE, source).add(cr).finish());
  ASSERT_TRUE(copied.ok()) << copied.error();
  EXPECT_FALSE(has_capability("target"));
  EXPECT_EQ(test::read_host(path("target")), "copied6789");
}

// What Linux leaves alone: reads, metadata other than the owner, opens
// without O_TRUNC, other xattrs, and a chown of a directory.
TEST_P(CapabilityXattrTest, NothingElseClearsIt) {
  const uint64_t node = capable("kept");
  const uint64_t fh = open_fh(node, O_RDWR);
  EXPECT_TRUE(g().read(node, fh, 100).ok());
  EXPECT_TRUE(g().getattr(node).ok());
  fuse_setattr_in meta{};
  meta.valid = FATTR_MODE | FATTR_ATIME | FATTR_MTIME;
  meta.mode = 0700;
  meta.atime = 1000;
  meta.mtime = 2000;
  EXPECT_TRUE(g().setattr(node, meta).ok());
  open_fh(node, O_RDONLY);
  open_fh(node, O_WRONLY);
  EXPECT_TRUE(g().setxattr(node, "user.other", "v").ok());
  EXPECT_TRUE(g().removexattr(node, "user.other").ok());
  EXPECT_TRUE(g().listxattr(node).ok());
  EXPECT_TRUE(has_capability("kept"));
  EXPECT_EQ(g().getxattr(node, "security.capability").text(), kCapValue);

  const uint64_t dir = capable("dir", /*dir=*/true);
  ASSERT_TRUE(g().chown(dir, 1234, 4321).ok());
  EXPECT_TRUE(has_capability("dir"));
}

INSTANTIATE_TEST_SUITE_P(Remaps, CapabilityXattrTest,
                         ::testing::Values(Remap{"Xattrmap",
                                                 ":map:security.capability:trusted.virtiofs.:",
                                                 false, "trusted.virtiofs.security.capability"},
                                           Remap{"RewriteSecurityXattrs", "", true,
                                                 "user.virtiofs.security.capability"}),
                         [](const auto& info) { return std::string(info.param.name); });

// Without a remapping the host kernel keeps the semantics itself: nothing is
// remembered, and an xattr that merely has the remapped name is left alone.
TEST(CapabilityXattrUnmappedTest, NothingIsClearedByTheDaemon) {
  char tmpl[] = "/tmp/vfsd-cap-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  passthrough::PassthroughConfig config{.shared_dir = root};
  config.xattr = true;
  {
    RawFuse g(config);
    ASSERT_TRUE(g.ready());
    EXPECT_EQ(g.fs().remapped_capability_xattr(), "");
    test::write_host(root + "/f", "0123");
    ASSERT_EQ(::setxattr((root + "/f").c_str(), "user.virtiofs.security.capability", "v", 1, 0), 0);
    const uint64_t node = g.node(kRootInode.value(), "f");
    Reply o = g.open(node, O_RDWR);
    ASSERT_TRUE(o.ok());
    ASSERT_TRUE(g.write(node, o.as<fuse_open_out>().fh, "x").ok());
    char value[8];
    EXPECT_EQ(
        ::getxattr((root + "/f").c_str(), "user.virtiofs.security.capability", value, sizeof value),
        1);
  }
  std::error_code ec;
  fs::remove_all(root, ec);
}

}  // namespace
}  // namespace vfsd::test
