// CVE-2022-0358 through the real stack: a directory whose group only the
// daemon process belongs to. A guest user who is not a member (and sends no
// supplementary groups, as a guest that negotiated FUSE_CREATE_SUPP_GROUP
// does when the parent's group is not among the caller's) must not create
// in it once the start-up step has dropped the daemon's groups; without the
// step the daemon's own membership would let the request through.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "app/startup.h"
#include "fuse/abi_ext.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"

namespace vfsd::test {
namespace {

constexpr gid_t kDaemonOnlyGroup = 4242;

// In a child process with the supplementary group kDaemonOnlyGroup (as if
// the daemon had been started so), optionally runs the start-up step, then
// has guest uid 1000 / gid 1000 CREATE a file in `dir` (root:4242, 0770) and
// exits with the errno the guest got (0: created).
int create_as_non_member(const std::string& root, bool drop_groups) {
  pid_t child = ::fork();
  if (child == 0) {
    ::umask(0);
    const gid_t groups[] = {kDaemonOnlyGroup};
    if (::setgroups(1, groups) != 0) _exit(200);
    if (drop_groups && !app::drop_supplementary_groups()) _exit(201);
    auto fs = passthrough::PassthroughFs::create({.shared_dir = root});
    if (!fs) _exit(202);
    fuse::Server server(**fs, fuse::ServerOptions{});
    auto send = [&](const Bytes& request) {
      Bytes req = request, out(4096);
      IovecReader reader(segments(req.data(), req.size(), 0));
      IovecWriter writer(segments(out.data(), out.size(), 0));
      return decode_reply(out, server.handle(reader, writer));
    };
    // A 6.12-style guest: it negotiates supplementary groups.
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = 39;
    const uint64_t flags = FUSE_INIT_EXT | FUSE_CREATE_SUPP_GROUP | FUSE_MAX_PAGES;
    init.flags = static_cast<uint32_t>(flags);
    init.flags2 = static_cast<uint32_t>(flags >> 32);
    if (!send(RequestBuilder(FUSE_INIT, 0, 2).add(init).finish()).ok()) _exit(203);
    Reply dir = send(
        RequestBuilder(FUSE_LOOKUP, fuse::kRootInode.value(), 4).add_name("groupdir").finish());
    if (!dir.ok()) _exit(204);
    fuse_create_in create{};
    create.flags = O_WRONLY;
    create.mode = S_IFREG | 0644;
    Reply made = send(RequestBuilder(FUSE_CREATE, dir.as<fuse_entry_out>().nodeid, 6)
                          .creds(1000, 1000)
                          .add(create)
                          .add_name("file")
                          .finish());
    _exit(made.ok() ? 0 : made.error());
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

TEST(SupplementaryGroups, TheDaemonsOwnGroupsDoNotCountForTheGuest) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as guest users";
  char tmpl[] = "/tmp/vfsd-groups-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
  const std::string dir = root + "/groupdir";
  ASSERT_EQ(::mkdir(dir.c_str(), 0770), 0);
  ASSERT_EQ(::chown(dir.c_str(), 0, kDaemonOnlyGroup), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0770), 0);

  EXPECT_EQ(create_as_non_member(root, /*drop_groups=*/true), EACCES);
  EXPECT_FALSE(std::filesystem::exists(dir + "/file"));
  // The control: with the daemon's group still in place the same request
  // gets through, so the check above is the step's doing.
  EXPECT_EQ(create_as_non_member(root, /*drop_groups=*/false), 0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/file"));
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

}  // namespace
}  // namespace vfsd::test
