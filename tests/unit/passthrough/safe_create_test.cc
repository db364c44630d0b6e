// Crash-safe creation, checked from the host: a new file or directory shows
// up under its name only complete (owner, mode, label), a fault between the
// steps leaves nothing visible, and the hidden temporary names never reach
// the guest. Runs as root.
#include "passthrough/safe_create.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fuse/abi_ext.h"
#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {
namespace {

using fuse::kRootInode;

constexpr const char* kLabelXattr = "trusted.virtiofs.security.selinux";
constexpr const char* kLabel = "system_u:object_r:guest_t:s0";

std::set<std::string> host_names(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

std::optional<std::string> host_xattr(const std::string& path, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof(buf));
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

// What a watcher saw of a name the moment inotify reported it.
struct Seen {
  uint32_t mask = 0;
  bool stat_ok = false;
  struct stat st {};
  std::optional<std::string> label;
  int label_errno = 0;
};

// Watches a directory from another thread and, for each name that appears
// (IN_CREATE / IN_MOVED_TO), stats it and reads its label at once.
class Watcher {
 public:
  explicit Watcher(std::string dir) : dir_(std::move(dir)) {
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    EXPECT_GE(::inotify_add_watch(fd_, dir_.c_str(), IN_CREATE | IN_MOVED_TO), 0);
    // A private directory on the same inotify instance marks the end of the
    // queue: one instance's events are read in the order they happened.
    char tmpl[] = "/tmp/vfsd-watch-end-XXXXXX";
    if (::mkdtemp(tmpl)) end_dir_ = tmpl;
    end_wd_ = ::inotify_add_watch(fd_, end_dir_.c_str(), IN_CREATE);
    EXPECT_GE(end_wd_, 0);
    thread_ = std::thread([this] { run(); });
  }
  ~Watcher() {
    stop();
    ::close(fd_);
  }
  // Returns once the watcher has handled every event of what the test did
  // before: those were queued before the end marker's, which it waits for.
  void stop() {
    if (!thread_.joinable()) return;
    std::string marker = end_dir_ + "/end";
    int fd = ::open(marker.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    if (fd >= 0) ::close(fd);
    {
      std::unique_lock lock(mutex_);
      // The bound only turns a lost event into a failure instead of a hang.
      EXPECT_TRUE(end_cv_.wait_for(lock, std::chrono::seconds(30), [&] { return end_seen_; }))
          << "the watcher never saw its end marker";
    }
    stop_ = true;
    thread_.join();
    ::unlink(marker.c_str());
    ::rmdir(end_dir_.c_str());
  }
  std::multimap<std::string, Seen> seen;

 private:
  void run() {
    alignas(inotify_event) char buf[16 * 1024];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      for (ssize_t pos = 0; pos < n;) {
        auto* ev = reinterpret_cast<inotify_event*>(buf + pos);
        pos += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        if (ev->wd == end_wd_) {
          std::lock_guard lock(mutex_);
          end_seen_ = true;
          end_cv_.notify_all();
          continue;
        }
        if (ev->len == 0) continue;
        std::string name(ev->name);
        Seen s;
        s.mask = ev->mask;
        std::string full = dir_ + "/" + name;
        s.stat_ok = ::lstat(full.c_str(), &s.st) == 0;
        s.label = host_xattr(full, kLabelXattr);
        if (!s.label) s.label_errno = errno;
        seen.emplace(name, s);
      }
    }
  }
  std::string dir_;
  std::string end_dir_;
  int fd_ = -1;
  int end_wd_ = -1;
  std::mutex mutex_;
  std::condition_variable end_cv_;
  bool end_seen_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class SafeCreateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-safe-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_EQ(::mkdir(path("d").c_str(), 0777), 0);
    config_.shared_dir = root_;
    config_.security_label = true;
    config_.xattrmap = ":map:security.selinux:trusted.virtiofs.:";
    start();
    guest_.uid = 1000;
    guest_.gid = 1000;
    ext_.security_context = fuse::SecurityContext{"security.selinux", kLabel};
  }
  void TearDown() override {
    safe_create_test_hook() = nullptr;
    fs_.reset();
    std::filesystem::remove_all(root_);
    ::umask(old_umask_);
  }
  void start() {
    auto fs = PassthroughFs::create(config_);
    ASSERT_TRUE(fs);
    fs_ = std::move(*fs);
    ASSERT_TRUE(fs_->init(fuse::InitRequest{FUSE_SECURITY_CTX | FUSE_CREATE_SUPP_GROUP}));
    auto d = fs_->lookup(fuse::Context{}, kRootInode, name("d"));
    ASSERT_TRUE(d);
    dir_ = d->inode;
  }
  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  static fuse::Name name(std::string_view s) { return *fuse::Name::from(s); }

  mode_t old_umask_ = 0;
  std::string root_;
  PassthroughConfig config_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::InodeId dir_ = fuse::InodeId{0};
  fuse::Context guest_;
  fuse::Extensions ext_;  // the creating requests' security context
};

TEST_F(SafeCreateTest, FileAppearsOnlyWithItsFinalOwnerModeAndLabel) {
  // At the step before linking, the file must be complete and still nameless.
  int hook_calls = 0;
  safe_create_test_hook() = [&](std::string_view step) -> VoidResult {
    ++hook_calls;
    EXPECT_EQ(step, "link");
    EXPECT_FALSE(std::filesystem::exists(path("d/f"))) << "visible before it is complete";
    return ok();
  };
  Watcher watcher(path("d"));
  auto created = fs_->create(guest_, dir_, name("f"), 0640, O_RDWR, 022, false, ext_);
  ASSERT_TRUE(created) << errno_name(created.error().value);
  watcher.stop();
  EXPECT_EQ(hook_calls, 1);

  auto it = watcher.seen.find("f");
  ASSERT_NE(it, watcher.seen.end()) << "no inotify event for the new name";
  EXPECT_EQ(watcher.seen.count("f"), 1u);
  const Seen& at_creation = it->second;
  EXPECT_TRUE(at_creation.mask & IN_CREATE);
  ASSERT_TRUE(at_creation.stat_ok);
  EXPECT_EQ(at_creation.st.st_uid, 1000u);
  EXPECT_EQ(at_creation.st.st_gid, 1000u);
  EXPECT_EQ(at_creation.st.st_mode, S_IFREG | 0640);
  EXPECT_EQ(at_creation.label.value_or("<none>"), kLabel)
      << errno_name(at_creation.label_errno) << "; label now: "
      << host_xattr(path(at_creation.st.st_mode & S_IFDIR ? "d/sub" : "d/f"), kLabelXattr)
             .value_or("<none>");
  EXPECT_EQ(host_names(path("d")), std::set<std::string>{"f"});
  // The handle is usable and the entry is the file that was linked.
  struct stat st {};
  ASSERT_EQ(::lstat(path("d/f").c_str(), &st), 0);
  EXPECT_EQ(created->first.attr.st_ino, st.st_ino);
}

TEST_F(SafeCreateTest, DirectoryAppearsOnlyByRenameWithItsFinalOwnerModeAndLabel) {
  std::string hidden_at_hook;
  safe_create_test_hook() = [&](std::string_view step) -> VoidResult {
    EXPECT_EQ(step, "rename");
    EXPECT_FALSE(std::filesystem::exists(path("d/sub")));
    for (const auto& n : host_names(path("d"))) hidden_at_hook = n;
    return ok();
  };
  Watcher watcher(path("d"));
  auto made = fs_->mkdir(guest_, dir_, name("sub"), 0750, 0, ext_);
  ASSERT_TRUE(made) << errno_name(made.error().value);
  watcher.stop();

  EXPECT_TRUE(is_hidden_temp_name(hidden_at_hook)) << hidden_at_hook;
  auto it = watcher.seen.find("sub");
  ASSERT_NE(it, watcher.seen.end());
  EXPECT_EQ(watcher.seen.count("sub"), 1u);
  const Seen& at_creation = it->second;
  EXPECT_TRUE(at_creation.mask & IN_MOVED_TO) << "the final name must come from the rename";
  ASSERT_TRUE(at_creation.stat_ok);
  EXPECT_EQ(at_creation.st.st_uid, 1000u);
  EXPECT_EQ(at_creation.st.st_gid, 1000u);
  EXPECT_EQ(at_creation.st.st_mode, S_IFDIR | 0750);
  EXPECT_EQ(at_creation.label.value_or("<none>"), kLabel)
      << errno_name(at_creation.label_errno) << "; label now: "
      << host_xattr(path(at_creation.st.st_mode & S_IFDIR ? "d/sub" : "d/f"), kLabelXattr)
             .value_or("<none>");
  EXPECT_EQ(host_names(path("d")), std::set<std::string>{"sub"});  // no temporary left
}

TEST_F(SafeCreateTest, AFaultBetweenTheStepsLeavesNoVisibleEntry) {
  safe_create_test_hook() = [](std::string_view) -> VoidResult { return fail(EIO); };
  EXPECT_EQ(fs_->create(guest_, dir_, name("f"), 0644, O_RDWR, 0, false, ext_).error(), Errno{EIO});
  EXPECT_EQ(fs_->mknod(guest_, dir_, name("n"), S_IFREG | 0644, 0, 0, ext_).error(), Errno{EIO});
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("sub"), 0755, 0, ext_).error(), Errno{EIO});
  EXPECT_TRUE(host_names(path("d")).empty());
  // Nothing registered for the guest either.
  EXPECT_EQ(fs_->inode_count(), 2u);  // root and d
}

TEST_F(SafeCreateTest, ALabelThatCannotBeStoredLeavesNoEntry) {
  // The map refuses this name: the label fails after the node exists.
  config_.xattrmap = ":map:security.:user.guest.:";
  start();
  ext_.security_context = fuse::SecurityContext{"user.guest.x", "l"};
  EXPECT_EQ(fs_->create(guest_, dir_, name("f"), 0644, O_RDWR, 0, false, ext_).error(),
            Errno{EPERM});
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("sub"), 0755, 0, ext_).error(), Errno{EPERM});
  EXPECT_EQ(fs_->mknod(guest_, dir_, name("p"), S_IFIFO | 0644, 0, 0, ext_).error(), Errno{EPERM});
  EXPECT_EQ(fs_->symlink(guest_, dir_, name("l"), "t", ext_).error(), Errno{EPERM});
  EXPECT_TRUE(host_names(path("d")).empty());
}

TEST_F(SafeCreateTest, WithoutALabelAFileOrDirectoryIsMadeInOneExclusiveStep) {
  // Nothing follows the creation, so no unnamed or hidden step is needed:
  // the entry appears by its creation, already with its owner and mode.
  ext_.security_context.reset();
  int hook_calls = 0;
  safe_create_test_hook() = [&](std::string_view) -> VoidResult {
    ++hook_calls;
    return ok();
  };
  Watcher watcher(path("d"));
  auto created = fs_->create(guest_, dir_, name("f"), 0640, O_RDWR, 022, false, ext_);
  ASSERT_TRUE(created) << errno_name(created.error().value);
  auto made = fs_->mkdir(guest_, dir_, name("sub"), 0750, 0, ext_);
  ASSERT_TRUE(made) << errno_name(made.error().value);
  watcher.stop();
  EXPECT_EQ(hook_calls, 0);
  for (const char* n : {"f", "sub"}) {
    auto it = watcher.seen.find(n);
    ASSERT_NE(it, watcher.seen.end()) << n;
    EXPECT_TRUE(it->second.mask & IN_CREATE) << n << ": made under its own name";
    ASSERT_TRUE(it->second.stat_ok) << n;
    EXPECT_EQ(it->second.st.st_uid, 1000u) << n;
    EXPECT_EQ(it->second.st.st_gid, 1000u) << n;
  }
  EXPECT_EQ(watcher.seen.find("f")->second.st.st_mode, S_IFREG | 0640);
  EXPECT_EQ(watcher.seen.find("sub")->second.st.st_mode, S_IFDIR | 0750);
  EXPECT_EQ(host_names(path("d")), (std::set<std::string>{"f", "sub"}));
  struct stat st {};
  ASSERT_EQ(::lstat(path("d/sub").c_str(), &st), 0);
  EXPECT_EQ(made->attr.st_ino, st.st_ino);
  ASSERT_EQ(::lstat(path("d/f").c_str(), &st), 0);
  EXPECT_EQ(created->first.attr.st_ino, st.st_ino);
}

class SafeCreateExistingTest : public SafeCreateTest, public ::testing::WithParamInterface<bool> {};

// With a label (the unnamed and hidden steps) and without (one exclusive
// create): the same answers.
INSTANTIATE_TEST_SUITE_P(LabelledOrNot, SafeCreateExistingTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Labelled" : "Unlabelled"; });

TEST_P(SafeCreateExistingTest, ExistingNamesAnswerAsAPlainCreateWould) {
  if (!GetParam()) ext_.security_context.reset();
  ASSERT_EQ(::mkdir(path("d/x").c_str(), 0755), 0);
  int fd = ::open(path("d/f").c_str(), O_CREAT | O_WRONLY, 0666);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "keep", 4), 4);
  ::close(fd);
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("x"), 0755, 0, ext_).error(), Errno{EEXIST});
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("f"), 0755, 0, ext_).error(), Errno{EEXIST});
  EXPECT_EQ(fs_->create(guest_, dir_, name("f"), 0644, O_RDWR | O_EXCL, 0, false, ext_).error(),
            Errno{EEXIST});
  EXPECT_EQ(fs_->mknod(guest_, dir_, name("f"), S_IFREG | 0644, 0, 0, ext_).error(), Errno{EEXIST});
  // Without O_EXCL CREATE opens the existing file, content intact.
  auto opened = fs_->create(fuse::Context{}, dir_, name("f"), 0644, O_RDWR, 0, false, {});
  ASSERT_TRUE(opened);
  EXPECT_EQ(std::filesystem::file_size(path("d/f")), 4u);
  // Existence is answered before the permission to create: a guest user
  // without write access to the directory still gets EEXIST (and EACCES
  // only for a new name).
  ASSERT_EQ(::chmod(path("d").c_str(), 0555), 0);
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("x"), 0755, 0, ext_).error(), Errno{EEXIST});
  EXPECT_EQ(fs_->mkdir(guest_, dir_, name("new"), 0755, 0, ext_).error(), Errno{EACCES});
  EXPECT_EQ(fs_->create(guest_, dir_, name("new"), 0644, O_RDWR, 0, false, ext_).error(),
            Errno{EACCES});
  EXPECT_EQ(host_names(path("d")), (std::set<std::string>{"f", "x"}));
}

TEST_F(SafeCreateTest, CreateKeepsTheGuestsAccessModeOnTheHandle) {
  ext_.security_context.reset();
  // Mode 0 and O_RDONLY: creation grants the open even though nobody could
  // open the file afterwards.
  auto created = fs_->create(guest_, dir_, name("r"), 0, O_RDONLY, 0, false, ext_);
  ASSERT_TRUE(created) << errno_name(created.error().value);
  char byte = 'x';
  IovecReader one(IovecList{{&byte, 1}});
  auto w =
      fs_->write(guest_, created->first.inode, created->second.handle, one, 1, 0, 0, std::nullopt);
  EXPECT_EQ(w.error(), Errno{EBADF}) << "a read-only handle must not write";
  struct stat st {};
  ASSERT_EQ(::lstat(path("d/r").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0u);
  EXPECT_EQ(st.st_uid, 1000u);
}

TEST_F(SafeCreateTest, HiddenTemporaryNamesNeverReachTheGuest) {
  // A leftover of a crash during mkdir.
  ASSERT_EQ(::mkdir(path("d/.vfsd-tmp-0123456789abcdef").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(path("d/visible").c_str(), 0755), 0);
  fuse::Context root{};
  EXPECT_EQ(fs_->lookup(root, dir_, name(".vfsd-tmp-0123456789abcdef")).error(), Errno{ENOENT});
  EXPECT_EQ(fs_->rmdir(root, dir_, name(".vfsd-tmp-0123456789abcdef")).error(), Errno{ENOENT});
  EXPECT_EQ(fs_->mkdir(root, dir_, name(".vfsd-tmp-x"), 0755, 0, {}).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->create(root, dir_, name(".vfsd-tmp-x"), 0644, O_RDWR, 0, false, {}).error(),
            Errno{EINVAL});
  EXPECT_EQ(fs_->rename(root, dir_, name("visible"), dir_, name(".vfsd-tmp-y"), 0).error(),
            Errno{EINVAL});

  auto h = fs_->opendir(root, dir_, 0);
  ASSERT_TRUE(h);
  struct Sink : fuse::DirSink {
    bool fits(size_t) const override { return true; }
    void add(const fuse::DirEntry& d, const fuse::Entry*) override { names.emplace(d.name); }
    std::set<std::string> names;
  } sink;
  ASSERT_TRUE(fs_->readdir(root, dir_, h->handle, 0, false, sink));
  EXPECT_EQ(sink.names, (std::set<std::string>{".", "..", "visible"}));
  EXPECT_TRUE(std::filesystem::exists(path("d/.vfsd-tmp-0123456789abcdef")));
}

TEST_F(SafeCreateTest, UnnamedFileHelpers) {
  UniqueFd dir(::open(path("d").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto fd = open_unnamed_file(dir.get(), O_RDWR, 0600);
  ASSERT_TRUE(fd);
  EXPECT_TRUE(host_names(path("d")).empty());
  ASSERT_TRUE(link_unnamed_file(proc.get(), *fd, dir.get(), "a"));
  EXPECT_EQ(host_names(path("d")), std::set<std::string>{"a"});
  auto again = open_unnamed_file(dir.get(), O_RDWR, 0600);
  ASSERT_TRUE(again);
  EXPECT_EQ(link_unnamed_file(proc.get(), *again, dir.get(), "a").error(), Errno{EEXIST});
  auto temp = make_hidden_temp_dir(dir.get(), 0700);
  ASSERT_TRUE(temp);
  EXPECT_TRUE(is_hidden_temp_name(*temp));
  EXPECT_EQ(temp->size(), kHiddenTempPrefix.size() + 16);
  EXPECT_FALSE(is_hidden_temp_name("vfsd-tmp-"));
}

}  // namespace
}  // namespace vfsd::passthrough
