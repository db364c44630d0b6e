// IOCTL on the host filesystem of /tmp (ext4 here): each supported command
// is compared with the same ioctl made directly on the host, sizes are
// checked, setting ones run as the guest, and everything else is ENOTTY.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fscrypt.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {
namespace {

using fuse::kRootInode;

constexpr uint32_t kGetFlags32 = _IOR('f', 1, int);
constexpr uint32_t kSetFlags32 = _IOW('f', 2, int);

class IoctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    char tmpl[] = "/tmp/vfsd-ioctl-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    file_ = root_ + "/f";
    UniqueFd fd(::open(file_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::chown(file_.c_str(), 1000, 1000), 0);
    // Only where the host filesystem has the attribute ioctls at all.
    int flags = 0;
    if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) {
      GTEST_SKIP() << "the filesystem of /tmp has no FS_IOC_GETFLAGS: " << errno_name(errno);
    }
    PassthroughConfig config;
    config.shared_dir = root_;
    auto fs = PassthroughFs::create(config);
    ASSERT_TRUE(fs);
    fs_ = std::move(*fs);
    ASSERT_TRUE(fs_->init(fuse::InitRequest{}));
    auto e = fs_->lookup(root_ctx_, kRootInode, *fuse::Name::from("f"));
    ASSERT_TRUE(e);
    ino_ = e->inode;
    auto h = fs_->open(root_ctx_, ino_, O_RDONLY, false);
    ASSERT_TRUE(h);
    fh_ = h->handle;
  }
  void TearDown() override {
    fs_.reset();
    std::filesystem::remove_all(root_);
  }

  int host_flags() {
    UniqueFd fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
    int flags = 0;
    EXPECT_EQ(::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags), 0);
    return flags;
  }
  static std::string int_bytes(int v) { return std::string(reinterpret_cast<char*>(&v), sizeof v); }
  Result<fuse::IoctlReply> call(const fuse::Context& ctx, uint32_t cmd, std::string_view in,
                                uint32_t out_size) {
    return fs_->ioctl(ctx, ino_, fh_, 0, cmd, in, out_size);
  }

  std::string root_, file_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::InodeId ino_ = fuse::InodeId{0};
  fuse::HandleId fh_ = fuse::HandleId{0};
  fuse::Context root_ctx_{};
  fuse::Context owner_{1000, 1000, 1};
  fuse::Context other_{2000, 2000, 1};
};

TEST_F(IoctlTest, GetAndSetFlagsInBothWidths) {
  for (uint32_t get : {kGetFlags32, static_cast<uint32_t>(FS_IOC_GETFLAGS)}) {
    auto r = call(root_ctx_, get, {}, 8);
    ASSERT_TRUE(r) << errno_name(r.error().value);
    ASSERT_EQ(r->out.size(), sizeof(int));  // an int even for the "long" number
    EXPECT_EQ(r->out, int_bytes(host_flags()));
  }
  // The owner sets FS_NODUMP_FL through either number; the host sees it.
  const int base = host_flags();
  ASSERT_TRUE(
      call(owner_, static_cast<uint32_t>(FS_IOC_SETFLAGS), int_bytes(base | FS_NODUMP_FL), 0));
  EXPECT_TRUE(host_flags() & FS_NODUMP_FL);
  ASSERT_TRUE(call(owner_, kSetFlags32, int_bytes(base & ~FS_NODUMP_FL), 0));
  EXPECT_FALSE(host_flags() & FS_NODUMP_FL);
  auto after = call(root_ctx_, kGetFlags32, {}, 4);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->out, int_bytes(host_flags()));
}

TEST_F(IoctlTest, SettingRunsAsTheGuestSoOnlyTheOwnerMay) {
  const int base = host_flags();
  EXPECT_EQ(call(other_, kSetFlags32, int_bytes(base | FS_NODUMP_FL), 0).error(), Errno{EPERM});
  EXPECT_FALSE(host_flags() & FS_NODUMP_FL);
  struct fsxattr attr {};
  attr.fsx_xflags = FS_XFLAG_NODUMP;
  std::string in(reinterpret_cast<char*>(&attr), sizeof(attr));
  EXPECT_EQ(call(other_, FS_IOC_FSSETXATTR, in, 0).error(), Errno{EPERM});
  EXPECT_FALSE(host_flags() & FS_NODUMP_FL);
}

TEST_F(IoctlTest, FsxattrRoundTrip) {
  auto got = call(root_ctx_, FS_IOC_FSGETXATTR, {}, sizeof(struct fsxattr));
  ASSERT_TRUE(got) << errno_name(got.error().value);
  ASSERT_EQ(got->out.size(), sizeof(struct fsxattr));
  struct fsxattr attr {};
  std::memcpy(&attr, got->out.data(), sizeof(attr));
  EXPECT_FALSE(attr.fsx_xflags & FS_XFLAG_NODUMP);
  attr.fsx_xflags |= FS_XFLAG_NODUMP;
  std::string in(reinterpret_cast<char*>(&attr), sizeof(attr));
  ASSERT_TRUE(call(owner_, FS_IOC_FSSETXATTR, in, 0));
  EXPECT_TRUE(host_flags() & FS_NODUMP_FL);  // the same bit seen through the other ioctl
  auto again = call(root_ctx_, FS_IOC_FSGETXATTR, {}, sizeof(struct fsxattr));
  ASSERT_TRUE(again);
  std::memcpy(&attr, again->out.data(), sizeof(attr));
  EXPECT_TRUE(attr.fsx_xflags & FS_XFLAG_NODUMP);
}

TEST_F(IoctlTest, EncryptionPolicyAnswersAsTheHost) {
  UniqueFd fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  struct fscrypt_get_policy_ex_arg arg {};
  arg.policy_size = sizeof(arg.policy);
  int host_rc = ::ioctl(fd.get(), FS_IOC_GET_ENCRYPTION_POLICY_EX, &arg);
  int host_errno = errno;
  uint64_t room = sizeof(arg.policy);
  std::string in(reinterpret_cast<char*>(&room), sizeof(room));
  auto r = call(root_ctx_, FS_IOC_GET_ENCRYPTION_POLICY_EX, in, sizeof(arg));
  if (host_rc == 0) {
    ASSERT_TRUE(r);
  } else {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().value, host_errno);  // ENODATA (not encrypted) or EOPNOTSUPP
  }
  // Too short to carry policy_size.
  EXPECT_EQ(call(root_ctx_, FS_IOC_GET_ENCRYPTION_POLICY_EX, "abc", sizeof(arg)).error(),
            Errno{EINVAL});
}

TEST_F(IoctlTest, SizesAreCheckedAndOtherCommandsAreENOTTY) {
  EXPECT_EQ(call(root_ctx_, kGetFlags32, {}, 3).error(), Errno{EINVAL});
  EXPECT_EQ(call(owner_, kSetFlags32, "ab", 0).error(), Errno{EINVAL});
  EXPECT_EQ(call(root_ctx_, FS_IOC_FSGETXATTR, {}, sizeof(struct fsxattr) - 1).error(),
            Errno{EINVAL});
  EXPECT_EQ(call(owner_, FS_IOC_FSSETXATTR, std::string(4, '\0'), 0).error(), Errno{EINVAL});
  EXPECT_EQ(call(root_ctx_, FIONREAD, {}, 4).error(), Errno{ENOTTY});
  EXPECT_EQ(call(root_ctx_, FS_IOC_GETVERSION, {}, 8).error(), Errno{ENOTTY});
  EXPECT_EQ(call(root_ctx_, 0xdeadbeef, {}, 0).error(), Errno{ENOTTY});
  // A handle of another inode is refused before anything runs.
  EXPECT_EQ(fs_->ioctl(root_ctx_, kRootInode, fh_, 0, kGetFlags32, {}, 4).error(), Errno{EBADF});
}

TEST_F(IoctlTest, DirectoryHandlesWorkToo) {
  auto dir = fs_->opendir(root_ctx_, kRootInode, 0);
  ASSERT_TRUE(dir);
  auto r = fs_->ioctl(root_ctx_, kRootInode, dir->handle, FUSE_IOCTL_DIR, kGetFlags32, {}, 4);
  ASSERT_TRUE(r) << errno_name(r.error().value);
  UniqueFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  int flags = 0;
  ASSERT_EQ(::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags), 0);
  EXPECT_EQ(r->out, int_bytes(flags));
}

}  // namespace
}  // namespace vfsd::passthrough
