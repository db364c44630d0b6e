// A guest uid or gid of 0xffffffff: setresuid(-1, ...) leaves the id as it
// is, so an operation under such "credentials" would run as root. Every
// creating request with either id set so is refused and creates nothing;
// a SETATTR to owner -1 changes nothing. Raw FUSE bytes over a real
// PassthroughFs, checked on the host.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

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

constexpr uint32_t kNoId = 0xffffffffu;

class GuestIdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-ids-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    // Only root could create in here: a request that ran as root would.
    ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
    test::write_host(root_ + "/existing", "x");
    auto created = passthrough::PassthroughFs::create({.shared_dir = root_});
    ASSERT_TRUE(created);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    ASSERT_TRUE(send(init_request(2)).ok());
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
  RequestBuilder as(uint32_t opcode, uint64_t node, uint32_t uid, uint32_t gid) {
    return RequestBuilder(opcode, node, unique_ += 2).creds(uid, gid);
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 10;
};

TEST_F(GuestIdsTest, CreatingRequestsWithAnIdOfMinusOneAreRefused) {
  const std::pair<uint32_t, uint32_t> ids[] = {{kNoId, 1000}, {1000, kNoId}, {kNoId, kNoId}};
  int n = 0;
  for (const auto& [uid, gid] : ids) {
    const std::string tag = std::to_string(n++);
    fuse_create_in create{};
    create.flags = O_RDWR;
    create.mode = S_IFREG | 0644;
    EXPECT_EQ(
        send(as(FUSE_CREATE, kRootInode.value(), uid, gid).add(create).add_name("c" + tag).finish())
            .error(),
        EOVERFLOW);
    fuse_mkdir_in mkdir{};
    mkdir.mode = 0755;
    EXPECT_EQ(
        send(as(FUSE_MKDIR, kRootInode.value(), uid, gid).add(mkdir).add_name("d" + tag).finish())
            .error(),
        EOVERFLOW);
    fuse_mknod_in mknod{};
    mknod.mode = S_IFIFO | 0644;
    EXPECT_EQ(
        send(as(FUSE_MKNOD, kRootInode.value(), uid, gid).add(mknod).add_name("p" + tag).finish())
            .error(),
        EOVERFLOW);
    mknod.mode = S_IFREG | 0644;
    EXPECT_EQ(
        send(as(FUSE_MKNOD, kRootInode.value(), uid, gid).add(mknod).add_name("f" + tag).finish())
            .error(),
        EOVERFLOW);
    EXPECT_EQ(send(as(FUSE_SYMLINK, kRootInode.value(), uid, gid)
                       .add_name("s" + tag)
                       .add_name("target")
                       .finish())
                  .error(),
              EOVERFLOW);
    fuse_create_in tmp{};
    tmp.flags = O_RDWR;
    tmp.mode = S_IFREG | 0644;
    EXPECT_EQ(send(as(FUSE_TMPFILE, kRootInode.value(), uid, gid).add(tmp).add_name("/").finish())
                  .error(),
              EOVERFLOW);
  }
  // Nothing but the file that was there.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root_)) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST_F(GuestIdsTest, SetattrToOwnerMinusOneChangesNothing) {
  Reply e = send(as(FUSE_LOOKUP, kRootInode.value(), 0, 0).add_name("existing").finish());
  ASSERT_TRUE(e.ok());
  const uint64_t node = e.as<fuse_entry_out>().nodeid;
  ASSERT_EQ(::chown((root_ + "/existing").c_str(), 1234, 2345), 0);
  ASSERT_EQ(::chmod((root_ + "/existing").c_str(), 0644), 0);
  for (uint32_t valid :
       {uint32_t{FATTR_UID}, uint32_t{FATTR_GID}, uint32_t{FATTR_UID | FATTR_GID | FATTR_MODE}}) {
    fuse_setattr_in sa{};
    sa.valid = valid;
    sa.uid = (valid & FATTR_UID) ? kNoId : 0;
    sa.gid = kNoId;
    sa.mode = 0777;
    EXPECT_EQ(send(as(FUSE_SETATTR, node, 0, 0).add(sa).finish()).error(), EINVAL) << valid;
  }
  struct stat st = test::host_lstat(root_ + "/existing");
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 2345u);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
}

}  // namespace
}  // namespace vfsd::test
