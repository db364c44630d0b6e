// CVE-2020-35517: FIFOs, device nodes and sockets in the share are never
// opened for I/O on the guest's behalf, whoever made them (the host, or the
// guest with MKNOD) and whatever the guest sends: OPEN with every access mode,
// CREATE of an existing name, SETATTR truncation, the xattr calls, SYNCFS,
// READDIRPLUS, and a bind mount of a FIFO reached by SYNCFS of the root.
// Opening a FIFO could block the daemon, opening a device (here a copy of
// /dev/null's numbers) acts on the host.
//
// Evidence on the host side, not the daemon's answers: an inotify watch on
// each node sees IN_OPEN for every real open and none for O_PATH opens; no
// fd of the process (O_PATH ones aside) points at a node after a request; and
// the FIFOs have no writer, so a blocking open of one would hang: a watchdog
// opens the other end of every watched FIFO after 20 s (only a hang lasts
// that long), which lets the request return and fails the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "raw_fuse.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;
using passthrough::InodeFileHandles;

constexpr auto kHangBound = std::chrono::seconds(20);

// The fds of this process open on `path` for I/O (O_PATH ones excluded).
std::vector<std::string> io_fds_on(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec).string() != path || ec) continue;
    std::string info = test::read_host("/proc/self/fdinfo/" + e.path().filename().string());
    auto pos = info.find("flags:");
    if (pos == std::string::npos) continue;
    const unsigned long flags = std::stoul(info.substr(pos + 6), nullptr, 8);
    if (!(flags & O_PATH)) out.push_back(e.path().filename().string());
  }
  return out;
}

class SpecialFilesTest : public ::testing::TestWithParam<InodeFileHandles> {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-special-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0666), 0);
    ASSERT_EQ(::mknod(path("null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    make_socket(path("sock"));
    test::write_host(path("file"), "a regular file");
    inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    ASSERT_TRUE(inotify_);
  }
  void TearDown() override {
    fuse_.reset();
    if (!mounted_.empty()) ::umount2(mounted_.c_str(), MNT_DETACH);
    ::unlink((root_ + ".fifo").c_str());
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  void start() {
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.xattr = true;
    // Guest user.* names live under trusted.*, which special files can
    // carry: the xattr calls then really reach the nodes.
    config.xattrmap = ":map:user.:trusted.virtiofs.:";
    config.inode_file_handles = GetParam();
    fuse_ = std::make_unique<RawFuse>(config);
    ASSERT_TRUE(fuse_->ready());
  }

  static void make_socket(const std::string& where) {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(s);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(where.size(), sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, where.c_str(), where.size());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }

  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  RawFuse& g() { return *fuse_; }

  void watch(const std::string& name) {
    int wd = ::inotify_add_watch(inotify_.get(), path(name).c_str(), IN_OPEN);
    ASSERT_GE(wd, 0) << name;
    watched_[wd] = name;
  }

  // Runs one request; a request that has not returned after kHangBound is
  // blocked in an open of a FIFO: the watchdog opens the other end of every
  // watched FIFO (both ends, non-blocking) so that it returns, and the test
  // fails.
  Reply guarded(const std::string& what, const std::function<Reply()>& request) {
    // After one hang the verdict is in: the rest would only take 20 s each.
    if (hung_) return Reply{};
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false, rescued = false;
    std::thread watchdog([&] {
      std::unique_lock lock(mu);
      if (cv.wait_for(lock, kHangBound, [&] { return finished; })) return;
      rescued = true;
      for (const auto& [wd, name] : watched_) {
        struct stat st {};
        if (::lstat(path(name).c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) continue;
        UniqueFd reader(::open(path(name).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
        UniqueFd writer(::open(path(name).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
      }
    });
    Reply reply = request();
    {
      std::lock_guard lock(mu);
      finished = true;
    }
    cv.notify_all();
    watchdog.join();
    EXPECT_FALSE(rescued) << what << ": the request hung in an open of the FIFO";
    hung_ = hung_ || rescued;
    check_not_opened(what);
    return reply;
  }

  // No node was opened for real since the last check, and none is open now.
  void check_not_opened(const std::string& what) {
    alignas(inotify_event) char buf[4096];
    for (;;) {
      ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t pos = 0; pos < n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + pos);
        if (ev->mask & IN_OPEN) {
          ADD_FAILURE() << what << ": " << watched_[ev->wd] << " was opened";
        }
        pos += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
    }
    for (const auto& [wd, name] : watched_) {
      auto fds = io_fds_on(path(name));
      EXPECT_TRUE(fds.empty()) << what << ": fd " << (fds.empty() ? "" : fds[0]) << " is open on "
                               << name;
    }
  }

  // Everything the guest may send for the special node `name`.
  void hammer(const std::string& name) {
    SCOPED_TRACE(name);
    Reply e = guarded("LOOKUP", [&] { return g().lookup(kRootInode.value(), name); });
    ASSERT_TRUE(e.ok()) << e.error();
    const uint64_t node = e.as<fuse_entry_out>().nodeid;
    const mode_t type = e.as<fuse_entry_out>().attr.mode & S_IFMT;
    EXPECT_TRUE(S_ISFIFO(type) || S_ISCHR(type) || S_ISSOCK(type)) << std::oct << type;
    for (uint32_t flags : {O_RDONLY, O_WRONLY, O_RDWR, O_RDONLY | O_NONBLOCK, O_WRONLY | O_NONBLOCK,
                           O_RDWR | O_TRUNC, O_WRONLY | O_APPEND, O_RDONLY | O_DIRECTORY}) {
      Reply r = guarded("OPEN " + std::to_string(flags), [&] { return g().open(node, flags); });
      EXPECT_FALSE(r.ok()) << "OPEN flags " << std::oct << flags;
      EXPECT_FALSE(guarded("OPEN as a user", [&] { return g().open(node, flags, 1000); }).ok());
    }
    EXPECT_FALSE(guarded("OPENDIR", [&] { return g().opendir(node); }).ok());
    for (uint32_t flags : {O_RDONLY, O_WRONLY, O_RDWR, O_RDWR | O_TRUNC, O_WRONLY | O_NONBLOCK}) {
      Reply r = guarded("CREATE", [&] { return g().create(kRootInode.value(), name, flags); });
      EXPECT_FALSE(r.ok()) << "CREATE on the existing node, flags " << std::oct << flags;
    }
    EXPECT_EQ(guarded("SETATTR size", [&] { return g().truncate(node, 0); }).error(), EINVAL);
    EXPECT_EQ(guarded("SETATTR size fh", [&] { return g().truncate(node, 0, 12345); }).error(),
              EBADF);
    // Attribute changes are made on the node itself, without opening it.
    EXPECT_TRUE(guarded("SETATTR owner", [&] { return g().chown(node, 1234, 4321); }).ok());
    EXPECT_EQ(test::host_lstat(path(name)).st_uid, 1234u);
    fuse_setattr_in change{};
    change.valid = FATTR_MODE | FATTR_ATIME | FATTR_MTIME;
    change.mode = 0640;
    change.atime = 1000;
    change.mtime = 2000;
    EXPECT_TRUE(guarded("SETATTR mode+times", [&] { return g().setattr(node, change); }).ok());
    EXPECT_EQ(test::host_lstat(path(name)).st_mode & 07777, 0640u);
    EXPECT_TRUE(guarded("SETXATTR", [&] { return g().setxattr(node, "user.tag", "v"); }).ok());
    char value[8] = {};
    EXPECT_EQ(::lgetxattr(path(name).c_str(), "trusted.virtiofs.user.tag", value, sizeof value), 1);
    Reply got = guarded("GETXATTR", [&] { return g().getxattr(node, "user.tag"); });
    EXPECT_TRUE(got.ok());
    EXPECT_EQ(got.text(), "v");
    EXPECT_NE(guarded("LISTXATTR", [&] { return g().listxattr(node); }).text().find("user.tag"),
              std::string::npos);
    EXPECT_TRUE(guarded("REMOVEXATTR", [&] { return g().removexattr(node, "user.tag"); }).ok());
    EXPECT_FALSE(guarded("SYNCFS", [&] { return g().syncfs(node); }).ok());
    EXPECT_TRUE(guarded("STATFS", [&] { return g().statfs(node); }).ok());
    EXPECT_TRUE(guarded("GETATTR", [&] { return g().getattr(node); }).ok());
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::string mounted_;
  UniqueFd inotify_;
  std::map<int, std::string> watched_;
  bool hung_ = false;
  std::unique_ptr<RawFuse> fuse_;
};

TEST_P(SpecialFilesTest, NodesMadeByTheHostAreNeverOpened) {
  start();
  for (const char* name : {"fifo", "null", "sock"}) watch(name);
  for (const char* name : {"fifo", "null", "sock"}) hammer(name);
}

TEST_P(SpecialFilesTest, NodesMadeByTheGuestAreNeverOpened) {
  start();
  struct Made {
    const char* name;
    mode_t mode;
    dev_t rdev;
  };
  for (const Made& m :
       {Made{"gfifo", S_IFIFO | 0666, 0}, Made{"gnull", S_IFCHR | 0666, makedev(1, 3)},
        Made{"gsock", S_IFSOCK | 0666, 0}}) {
    Reply made =
        guarded("MKNOD", [&] { return g().mknod(kRootInode.value(), m.name, m.mode, m.rdev); });
    ASSERT_TRUE(made.ok()) << m.name << ": " << made.error();
    struct stat st = test::host_lstat(path(m.name));
    EXPECT_EQ(st.st_mode & S_IFMT, m.mode & S_IFMT) << m.name;
    EXPECT_EQ(st.st_rdev, m.rdev) << m.name;
    watch(m.name);
  }
  // The guest's FIFO has no writer either: a blocking open would hang too.
  for (const char* name : {"gfifo", "gnull", "gsock"}) hammer(name);
}

TEST_P(SpecialFilesTest, ReaddirplusRegistersThemWithoutOpening) {
  start();
  for (const char* name : {"fifo", "null", "sock"}) watch(name);
  Reply dir = guarded("OPENDIR", [&] { return g().opendir(kRootInode.value()); });
  ASSERT_TRUE(dir.ok());
  Reply listing = guarded("READDIRPLUS", [&] {
    return g().readdirplus(kRootInode.value(), dir.as<fuse_open_out>().fh);
  });
  ASSERT_TRUE(listing.ok());
  size_t special = 0;
  for (const auto& d : decode_dirents(listing.payload, true)) {
    const mode_t type = d.entry.attr.mode & S_IFMT;
    if (S_ISFIFO(type) || S_ISCHR(type) || S_ISSOCK(type)) {
      ++special;
      EXPECT_NE(d.entry.nodeid, 0u) << d.name;
    }
  }
  EXPECT_EQ(special, 3u);
  // And SYNCFS of the root, which reaches every mount the guest has seen.
  EXPECT_TRUE(guarded("SYNCFS root", [&] { return g().syncfs(kRootInode.value()); }).ok());
}

// A FIFO bind-mounted over a name in the share is a mount of its own: the
// mount fd the daemon keeps for it stays O_PATH, and SYNCFS of the root,
// which syncs every mount the guest reached, does not open it.
TEST_P(SpecialFilesTest, ABindMountedFifoIsNotOpenedBySyncfs) {
  test::write_host(path("over"), "");
  ASSERT_EQ(::mkfifo((root_ + ".fifo").c_str(), 0666), 0);
  const std::string host_fifo = root_ + ".fifo";
  // A private mount namespace (single-threaded here, as unshare needs).
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) ||
      ::mount(host_fifo.c_str(), path("over").c_str(), nullptr, MS_BIND, nullptr) != 0) {
    GTEST_SKIP() << "cannot bind-mount here: " << errno_name(errno);
  }
  mounted_ = path("over");
  start();
  watch("over");
  Reply e = guarded("LOOKUP", [&] { return g().lookup(kRootInode.value(), "over"); });
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(S_ISFIFO(e.as<fuse_entry_out>().attr.mode));
  EXPECT_TRUE(guarded("SYNCFS root", [&] { return g().syncfs(kRootInode.value()); }).ok());
  EXPECT_FALSE(guarded("SYNCFS", [&] { return g().syncfs(e.as<fuse_entry_out>().nodeid); }).ok());
  EXPECT_FALSE(
      guarded("OPEN", [&] { return g().open(e.as<fuse_entry_out>().nodeid, O_RDONLY); }).ok());
}

INSTANTIATE_TEST_SUITE_P(Inodes, SpecialFilesTest,
                         ::testing::Values(InodeFileHandles::kNever, InodeFileHandles::kPrefer),
                         [](const auto& info) {
                           return info.param == InodeFileHandles::kNever ? "Fds" : "Handles";
                         });

}  // namespace
}  // namespace vfsd::test
