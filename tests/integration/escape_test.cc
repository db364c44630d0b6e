// A hostile guest cannot leave the shared directory through the protocol,
// with no sandbox at all (these tests run the daemon's code in a plain
// process): names that are not one path component, symlinks inside the share
// pointing outside (absolute, relative, dangling, magic links of a procfs
// mounted in the share), symlinks the guest makes with absolute targets, and
// digits that look like /proc/self/fd entries. Each case runs over the real
// stack (raw FUSE bytes, fuse::Server, PassthroughFs) with openat2 and with
// the openat fallback, with O_PATH inodes and with file handles, and each
// asserts on the host that nothing in a sentinel directory next to the share
// was read (access times), written, created, removed, chmod'ed or chown'ed.
//
// One thing is reachable by design: a hard link the host made inside the
// share to a file outside it is that file (same inode), as for any process
// the host lets see the link. The test says so and checks that nothing else
// is.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "passthrough/safe_open.h"
#include "raw_fuse.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;
using passthrough::InodeFileHandles;

struct Mode {
  bool openat2;
  InodeFileHandles handles;
};

bool host_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

mode_t type_of(const Reply& entry) {
  return entry.as<fuse_entry_out>().attr.mode & S_IFMT;
}

class EscapeTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-escape-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    share_ = top_ + "/share";
    outside_ = top_ + "/outside";
    fs::create_directories(share_);
    fs::create_directories(outside_ + "/sub");
    test::write_host(outside_ + "/secret", "host secret");
    test::write_host(outside_ + "/sub/inner", "inner secret");
    ASSERT_EQ(::setxattr((outside_ + "/secret").c_str(), "user.tag", "keep", 4, 0), 0);
    test::write_host(share_ + "/file", "a file of the share");

    passthrough::disable_openat2_for_testing(!GetParam().openat2);
    if (GetParam().openat2) {
      // A host property: whether this kernel has openat2 at all.
      UniqueFd top(::open(top_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      ASSERT_TRUE(passthrough::open_beneath(top.get(), "share", O_PATH));
      if (!passthrough::openat2_in_use()) GTEST_SKIP() << "this kernel has no openat2";
    }
    reads_visible_ = atime_detects_reads(top_);
  }

  // Call after the host has made what the test needs in the share.
  void start() {
    age_access_times(outside_);
    before_ = host_snapshot(outside_);
    passthrough::PassthroughConfig config{.shared_dir = share_};
    config.xattr = true;
    config.inode_file_handles = GetParam().handles;
    fuse_ = std::make_unique<RawFuse>(config);
    ASSERT_TRUE(fuse_->ready());
  }

  void TearDown() override {
    fuse_.reset();
    if (!mounted_.empty()) ::umount2(mounted_.c_str(), MNT_DETACH);
    if (!before_.empty()) {
      // Every test: nothing outside the share changed, nothing appeared.
      expect_same_host(before_, host_snapshot(outside_), "the sentinel outside the share");
    }
    passthrough::disable_openat2_for_testing(false);
    std::error_code ec;
    fs::remove_all(top_, ec);
    ::umask(old_umask_);
  }

  RawFuse& g() { return *fuse_; }

  // Everything a guest can do to, through and below a node that must not lead
  // out of the share (a symlink, in these tests). `name` is its name in the
  // root.
  void assert_dead_end(uint64_t link, const std::string& name) {
    SCOPED_TRACE(name);
    for (uint32_t flags : {O_RDONLY, O_WRONLY, O_RDWR, O_RDWR | O_TRUNC, O_WRONLY | O_APPEND,
                           O_RDONLY | O_DIRECTORY, O_RDONLY | O_NONBLOCK}) {
      Reply r = g().open(link, flags);
      EXPECT_EQ(r.error(), ELOOP) << "OPEN " << std::oct << flags;
    }
    EXPECT_FALSE(g().opendir(link).ok());
    EXPECT_FALSE(g().create(kRootInode.value(), name, O_RDWR).ok()) << "CREATE over it";
    EXPECT_FALSE(g().create(kRootInode.value(), name, O_WRONLY | O_TRUNC).ok()) << "CREATE O_TRUNC";
    EXPECT_EQ(g().create(kRootInode.value(), name, O_RDWR | O_EXCL).error(), EEXIST);
    EXPECT_EQ(g().mkdir(kRootInode.value(), name).error(), EEXIST);
    EXPECT_EQ(g().mknod(kRootInode.value(), name, S_IFIFO | 0644).error(), EEXIST);
    EXPECT_EQ(g().truncate(link, 0).error(), EINVAL) << "SETATTR size on a symlink";

    // Below it: it is not a directory, whatever it points to.
    const uint64_t file = g().node(kRootInode.value(), "file");
    for (const char* child : {"secret", "sub", "etc", "passwd", ".", ".."}) {
      Reply r = g().lookup(link, child);
      EXPECT_FALSE(r.ok()) << "LOOKUP " << child << " below it";
    }
    EXPECT_FALSE(g().create(link, "planted", O_RDWR).ok());
    EXPECT_FALSE(g().mkdir(link, "planted_dir").ok());
    EXPECT_FALSE(g().mknod(link, "planted_fifo", S_IFIFO | 0644).ok());
    EXPECT_FALSE(g().symlink(link, "planted_link", "x").ok());
    EXPECT_FALSE(g().unlink(link, "secret").ok());
    EXPECT_FALSE(g().rmdir(link, "sub").ok());
    EXPECT_FALSE(g().rename(link, "secret", kRootInode.value(), "stolen").ok());
    EXPECT_FALSE(g().rename(kRootInode.value(), "file", link, "planted2").ok());
    EXPECT_FALSE(g().link(file, link, "planted3").ok());
    EXPECT_FALSE(host_exists(share_ + "/stolen"));

    // Its attributes and xattrs are its own, never its target's.
    EXPECT_TRUE(g().chown(link, 1234, 4321).ok());
    EXPECT_EQ(test::host_lstat(share_ + "/" + name).st_uid, 1234u);
    fuse_setattr_in times{};
    times.valid = FATTR_ATIME | FATTR_MTIME;
    times.atime = 1000;
    times.mtime = 2000;
    EXPECT_TRUE(g().setattr(link, times).ok());
    EXPECT_EQ(test::host_lstat(share_ + "/" + name).st_mtim.tv_sec, 2000);
    fuse_setattr_in mode{};
    mode.valid = FATTR_MODE;
    mode.mode = 07777;
    (void)g().setattr(link, mode);  // Linux refuses a symlink's chmod; the target is untouched
    EXPECT_FALSE(g().setxattr(link, "user.planted", "x").ok());
    Reply tag = g().getxattr(link, "user.tag");
    EXPECT_FALSE(tag.ok() && tag.text() == "keep") << "the target's xattr was read";
    Reply list = g().listxattr(link);
    EXPECT_EQ(list.text().find("user.tag"), std::string::npos) << "the target's xattrs listed";
    Reply text = g().readlink(link);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(text.text(), fs::read_symlink(share_ + "/" + name).string());
  }

  mode_t old_umask_ = 0;
  std::string top_, share_, outside_;
  bool reads_visible_ = false;
  std::string mounted_;  // unmounted before the folder goes
  HostSnapshot before_;
  std::unique_ptr<RawFuse> fuse_;
};

// Names a guest kernel never sends, or sends only for a path it walked
// itself: every operation that takes a name refuses them, and the share is
// unchanged too.
TEST_P(EscapeTest, NamesThatAreNotOneComponentAreRefusedEverywhere) {
  start();
  const std::vector<std::string> names = {
      "../outside/secret",
      "../outside",
      "a/b",
      "/",
      "/etc/passwd",
      "/proc/self/fd/3",
      "sub/../../outside",
      std::string("secret\0/../x", 12),  // an embedded NUL
      std::string("file\0", 5),
      "",
      std::string(NAME_MAX + 1, 'a'),
      "..",
      ".",
  };
  const HostSnapshot share_before = host_snapshot(share_);
  const uint64_t file = g().node(kRootInode.value(), "file");
  for (const auto& name : names) {
    SCOPED_TRACE("name '" + name + "' (" + std::to_string(name.size()) + " bytes)");
    if (name != "." && name != "..") {
      Reply r = g().lookup(kRootInode.value(), name);
      EXPECT_FALSE(r.ok());
      EXPECT_TRUE(r.error() == EINVAL || r.error() == ENAMETOOLONG) << r.error();
    }
    EXPECT_FALSE(g().create(kRootInode.value(), name, O_RDWR).ok()) << "CREATE";
    EXPECT_FALSE(g().mkdir(kRootInode.value(), name).ok()) << "MKDIR";
    EXPECT_FALSE(g().mknod(kRootInode.value(), name, S_IFIFO | 0644).ok()) << "MKNOD";
    EXPECT_FALSE(g().symlink(kRootInode.value(), name, "target").ok()) << "SYMLINK";
    EXPECT_FALSE(g().link(file, kRootInode.value(), name).ok()) << "LINK";
    EXPECT_FALSE(g().rename(kRootInode.value(), "file", kRootInode.value(), name).ok())
        << "RENAME to";
    EXPECT_FALSE(g().rename(kRootInode.value(), name, kRootInode.value(), "renamed").ok())
        << "RENAME from";
    EXPECT_FALSE(g().unlink(kRootInode.value(), name).ok()) << "UNLINK";
    EXPECT_FALSE(g().rmdir(kRootInode.value(), name).ok()) << "RMDIR";
  }
  // ".." at the root is the root, however often.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(g().node(kRootInode.value(), ".."), kRootInode.value());
  EXPECT_EQ(g().lookup(g().node(kRootInode.value(), ".."), "outside").error(), ENOENT);
  // Nothing appeared in the share either (only what LOOKUP looked at).
  const HostSnapshot share_after = host_snapshot(share_);
  EXPECT_EQ(share_after.size(), share_before.size());
  for (const auto& [rel, e] : share_before) {
    EXPECT_TRUE(share_after.count(rel)) << rel << " is gone";
  }
}

// A name of digits is looked up in the guest's directory, never in
// /proc/self/fd, whatever fds the daemon holds.
TEST_P(EscapeTest, DigitNamesAreNotTheDaemonsFds) {
  UniqueFd held(::open((outside_ + "/secret").c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC));
  ASSERT_TRUE(held);
  start();
  for (int fd = 0; fd <= held.get() + 16; ++fd) {
    EXPECT_EQ(g().lookup(kRootInode.value(), std::to_string(fd)).error(), ENOENT) << fd;
  }
  for (const char* name : {"self", "fd", "proc", "thread-self"}) {
    EXPECT_EQ(g().lookup(kRootInode.value(), name).error(), ENOENT) << name;
  }
}

TEST_P(EscapeTest, HostSymlinksPointingOutsideAreDeadEnds) {
  struct Link {
    const char* name;
    std::string target;
  };
  const std::vector<Link> links = {
      {"abs_file", outside_ + "/secret"},
      {"rel_file", "../outside/secret"},
      {"abs_dir", outside_},
      {"rel_dir", "../outside"},
      {"rel_dir_deep", "../share/../outside/sub"},
      {"abs_dangling", outside_ + "/created_abs"},
      {"rel_dangling", "../outside/created_rel"},
      {"root", "/"},
      {"proc_fd", "/proc/self/fd"},
      {"proc_root", "/proc/self/root"},
      {"proc_cwd", "/proc/self/cwd"},
  };
  for (const auto& l : links) {
    ASSERT_EQ(::symlink(l.target.c_str(), (share_ + "/" + l.name).c_str()), 0) << l.name;
  }
  start();
  for (const auto& l : links) {
    Reply e = g().lookup(kRootInode.value(), l.name);
    ASSERT_TRUE(e.ok()) << l.name;
    EXPECT_EQ(type_of(e), static_cast<mode_t>(S_IFLNK)) << l.name << " was followed";
    assert_dead_end(e.as<fuse_entry_out>().nodeid, l.name);
  }
  // READDIRPLUS hands out the links as links too.
  Reply dir = g().opendir(kRootInode.value());
  ASSERT_TRUE(dir.ok());
  Reply listing = g().readdirplus(kRootInode.value(), dir.as<fuse_open_out>().fh);
  ASSERT_TRUE(listing.ok());
  size_t seen = 0;
  for (const auto& d : decode_dirents(listing.payload, true)) {
    if (d.name == "." || d.name == ".." || d.name == "file") continue;
    ++seen;
    EXPECT_EQ(d.entry.attr.mode & S_IFMT, static_cast<uint32_t>(S_IFLNK)) << d.name;
  }
  EXPECT_EQ(seen, links.size());
}

// FUSE_SYMLINK stores the target as text; opening the link afterwards, or
// creating through it, never follows it.
TEST_P(EscapeTest, GuestSymlinksWithTargetsOutsideAreStoredNotFollowed) {
  start();
  struct Link {
    const char* name;
    std::string target;
  };
  const std::vector<Link> links = {
      {"evil_abs", outside_ + "/secret"},
      {"evil_rel", "../outside/secret"},
      {"evil_dir", outside_},
      {"evil_dangling", outside_ + "/created_by_guest"},
      {"evil_proc", "/proc/self/fd/" + std::to_string(3)},
  };
  for (const auto& l : links) {
    Reply made = g().symlink(kRootInode.value(), l.name, l.target);
    ASSERT_TRUE(made.ok()) << l.name << ": " << made.error();
    EXPECT_EQ(type_of(made), static_cast<mode_t>(S_IFLNK));
    EXPECT_EQ(fs::read_symlink(share_ + "/" + l.name).string(), l.target);
    Reply e = g().lookup(kRootInode.value(), l.name);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e.as<fuse_entry_out>().nodeid, made.as<fuse_entry_out>().nodeid);
    assert_dead_end(e.as<fuse_entry_out>().nodeid, l.name);
  }
  EXPECT_FALSE(host_exists(outside_ + "/created_by_guest"));
}

// By design: a hard link is the inode itself. The host made one in the share
// to a file outside it, so the guest reaches that one file (as any process
// shown the link would), and nothing else next to it.
TEST_P(EscapeTest, AHostHardLinkReachesItsInodeAndNothingElse) {
  const std::string linked = top_ + "/linked";
  fs::create_directories(linked);
  test::write_host(linked + "/target", "linked contents");
  test::write_host(linked + "/neighbour", "not linked");
  ASSERT_EQ(::link((linked + "/target").c_str(), (share_ + "/hard").c_str()), 0);
  age_access_times(linked);
  const HostSnapshot linked_before = host_snapshot(linked);
  start();
  Reply e = g().lookup(kRootInode.value(), "hard");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e.as<fuse_entry_out>().attr.ino, test::host_lstat(linked + "/target").st_ino);
  const uint64_t hard = e.as<fuse_entry_out>().nodeid;
  EXPECT_EQ(g().lookup(hard, "..").error(), ENOTDIR);
  Reply o = g().open(hard, O_RDWR);
  ASSERT_TRUE(o.ok());
  const uint64_t fh = o.as<fuse_open_out>().fh;
  Reply r = g().read(hard, fh, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.text(), "linked contents");
  ASSERT_TRUE(g().write(hard, fh, "guest wrote").ok());
  EXPECT_EQ(test::read_host(linked + "/target"), "guest wroteents");
  // Only the linked inode changed in its directory (and the directory, as
  // the guest neither listed nor touched it, not at all).
  const HostSnapshot linked_after = host_snapshot(linked);
  ASSERT_EQ(linked_after.size(), linked_before.size());
  for (const auto& [rel, entry] : linked_before) {
    if (rel == "/target") continue;
    EXPECT_TRUE(linked_after.at(rel) == entry)
        << rel << ": " << entry << " -> " << linked_after.at(rel);
  }
}

// A procfs mounted inside the share (sharing "/" does that): its magic links
// (/proc/PID/fd/N, /proc/PID/root, /proc/PID/cwd, /proc/self) are looked up
// as links and never followed, so the daemon's own fds, its root and its
// working directory stay out of reach.
TEST_P(EscapeTest, MagicLinksOfAProcfsInTheShareAreNeverFollowed) {
  ASSERT_EQ(::mkdir((share_ + "/proc").c_str(), 0555), 0);
  // A private mount namespace keeps the mount away from the host (the
  // process is single-threaded here, which unshare(CLONE_NEWNS) needs).
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) ||
      ::mount("proc", (share_ + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0) {
    GTEST_SKIP() << "cannot mount proc here: " << errno_name(errno);
  }
  mounted_ = share_ + "/proc";
  UniqueFd held(::open((outside_ + "/secret").c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC));
  ASSERT_TRUE(held);
  start();
  const uint64_t proc = g().node(kRootInode.value(), "proc");
  Reply self = g().lookup(proc, "self");
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(type_of(self), static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(g().lookup(self.as<fuse_entry_out>().nodeid, "fd").error(), ENOTDIR);
  const uint64_t pid = g().node(proc, std::to_string(::getpid()));
  const uint64_t fd_dir = g().node(pid, "fd");
  for (const std::string& magic : {std::to_string(held.get())}) {
    Reply e = g().lookup(fd_dir, magic);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(type_of(e), static_cast<mode_t>(S_IFLNK)) << "fd " << magic << " was followed";
    const uint64_t node = e.as<fuse_entry_out>().nodeid;
    for (uint32_t flags : {O_RDONLY, O_RDWR, O_WRONLY | O_TRUNC}) {
      EXPECT_EQ(g().open(node, flags).error(), ELOOP);
    }
    EXPECT_FALSE(g().truncate(node, 0).ok());
  }
  for (const char* name : {"root", "cwd"}) {
    Reply e = g().lookup(pid, name);
    ASSERT_TRUE(e.ok()) << name;
    EXPECT_EQ(type_of(e), static_cast<mode_t>(S_IFLNK)) << name << " was followed";
    const uint64_t node = e.as<fuse_entry_out>().nodeid;
    EXPECT_EQ(g().lookup(node, "etc").error(), ENOTDIR);
    EXPECT_EQ(g().lookup(node, "tmp").error(), ENOTDIR);
    EXPECT_FALSE(g().opendir(node).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, EscapeTest,
                         ::testing::Values(Mode{true, InodeFileHandles::kNever},
                                           Mode{false, InodeFileHandles::kNever},
                                           Mode{true, InodeFileHandles::kPrefer},
                                           Mode{false, InodeFileHandles::kPrefer}),
                         [](const auto& info) {
                           return std::string(info.param.openat2 ? "Openat2" : "Openat") +
                                  (info.param.handles == InodeFileHandles::kNever ? "Fds"
                                                                                  : "Handles");
                         });

}  // namespace
}  // namespace vfsd::test
