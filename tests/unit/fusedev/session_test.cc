// The host FUSE transport: a PassthroughFs of a temp directory mounted
// in-process through /dev/fuse, driven with real syscalls on the mountpoint
// and checked against the backing directory. Needs root and /dev/fuse.
#include "fusedev/session.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "passthrough/read_only_fs.h"
#include "test_support.h"

namespace vfsd::fusedev {
namespace {

using namespace std::chrono_literals;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VFSD_SKIP_WITHOUT_FUSE();
    ASSERT_FALSE(backing.path().empty());
    ASSERT_FALSE(mnt.path().empty());
    // PassthroughFs applies the caller's umask itself (see its header).
    old_umask_ = ::umask(0);
  }
  void TearDown() override {
    {
      std::lock_guard lock(watchdog_mutex_);
      finished_ = true;
    }
    watchdog_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    // Unmount before the temp dirs go, so removal never walks the mount.
    session.reset();
    server.reset();
    if (old_umask_) ::umask(*old_umask_);
  }

  // Mounts `fs` on mnt; skips the test if this host refuses FUSE mounts.
  void mount(fuse::FileSystem& fs, unsigned threads = 2) {
    server = std::make_unique<fuse::Server>(fs, fuse::ServerOptions{});
    SessionOptions options;
    options.mountpoint = mnt.path();
    options.threads = threads;
    auto mounted = Session::mount(options);
    if (!mounted && mounted.error().value == EPERM) VFSD_SKIP_OR_FAIL_IN_CI("mount(fuse): EPERM");
    ASSERT_TRUE(mounted) << errno_name(mounted.error().value);
    session = std::move(*mounted);
    ASSERT_TRUE(session->start(*server));
    watchdog_ = std::thread([this] { watch(); });
  }

  // The filesystems live in the fixture: the kernel still talks to them
  // (FORGETs) while TearDown unmounts.
  passthrough::PassthroughFs* passthrough(bool xattr = false) {
    passthrough::PassthroughConfig config;
    config.shared_dir = backing.path();
    config.xattr = xattr;
    auto fs = passthrough::PassthroughFs::create(config);
    EXPECT_TRUE(fs);
    if (!fs) return nullptr;
    inner_fs = std::move(*fs);
    return inner_fs.get();
  }
  template <class Fs>
  Fs& own(fuse::FileSystem& inner) {
    auto fs = std::make_unique<Fs>(inner);
    Fs& ref = *fs;
    outer_fs = std::move(fs);
    return ref;
  }

  std::string at(const std::string& name) const { return mnt / name; }

  TempDir backing{"backing"};
  TempDir mnt{"mnt"};
  std::unique_ptr<passthrough::PassthroughFs> inner_fs;
  std::unique_ptr<fuse::FileSystem> outer_fs;
  std::unique_ptr<fuse::Server> server;
  std::unique_ptr<Session> session;
  /// Run by the watchdog after it aborted the connection, to release what
  /// the test's filesystem holds (e.g. waiting locks).
  std::function<void()> rescue;

 private:
  // A process that serves its own mount deadlocks if a request is never
  // answered: after 30 s, abort the connection (MNT_FORCE) so that the
  // blocked syscalls fail with ENOTCONN and the test fails instead of hanging.
  void watch() {
    std::unique_lock lock(watchdog_mutex_);
    if (watchdog_cv_.wait_for(lock, 30s, [&] { return finished_; })) return;
    ADD_FAILURE() << "the test hung; aborting the FUSE connection";
    ::umount2(session->mountpoint().c_str(), MNT_FORCE);
    if (rescue) rescue();
  }

  std::optional<mode_t> old_umask_;
  std::thread watchdog_;
  std::mutex watchdog_mutex_;
  std::condition_variable watchdog_cv_;
  bool finished_ = false;
};

TEST_F(SessionTest, MountsWithOurTypeAndSource) {
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  auto entry = find_mount(session->mountpoint());
  ASSERT_TRUE(entry.has_value());
  EXPECT_TRUE(entry->fstype == "fuse.virtiofsd-cpp" || entry->fstype == "fuse") << entry->fstype;
  EXPECT_EQ(entry->source, "virtiofsd-cpp");
  struct stat st {};
  ASSERT_EQ(::stat(mnt.path().c_str(), &st), 0) << errno_name(errno);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(SessionTest, FileOperationsReachTheBackingDirectory) {
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;

  // create + write
  {
    UniqueFd fd(::open(at("a.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640));
    ASSERT_TRUE(fd) << errno_name(errno);
    ASSERT_EQ(::write(fd.get(), "hello fuse", 10), 10);
  }
  EXPECT_EQ(read_file(backing / "a.txt"), "hello fuse");
  struct stat st {};
  ASSERT_EQ(::stat((backing / "a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  // read, through the mount, what the host wrote
  write_file(backing / "host.txt", std::string(300000, 'h'));
  EXPECT_EQ(read_file(at("host.txt")), std::string(300000, 'h'));
  {
    UniqueFd fd(::open(at("a.txt").c_str(), O_RDONLY));
    ASSERT_TRUE(fd) << errno_name(errno);
    char buf[4];
    ASSERT_EQ(::pread(fd.get(), buf, 4, 6), 4);
    EXPECT_EQ(std::string(buf, 4), "fuse");
  }

  // rename
  ASSERT_EQ(::rename(at("a.txt").c_str(), at("b.txt").c_str()), 0) << errno_name(errno);
  EXPECT_FALSE(std::filesystem::exists(backing / "a.txt"));
  EXPECT_EQ(read_file(backing / "b.txt"), "hello fuse");

  // mkdir, symlink
  ASSERT_EQ(::mkdir(at("dir").c_str(), 0750), 0) << errno_name(errno);
  ASSERT_EQ(::stat((backing / "dir").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::symlink("b.txt", at("link").c_str()), 0) << errno_name(errno);
  char target[64] = {};
  ASSERT_EQ(::readlink((backing / "link").c_str(), target, sizeof(target) - 1), 5);
  EXPECT_STREQ(target, "b.txt");
  std::fill(std::begin(target), std::end(target), 0);
  ASSERT_EQ(::readlink(at("link").c_str(), target, sizeof(target) - 1), 5);
  EXPECT_STREQ(target, "b.txt");

  // readdir
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(mnt.path()))
    names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"b.txt", "dir", "host.txt", "link"}));

  // unlink, rmdir
  ASSERT_EQ(::unlink(at("b.txt").c_str()), 0) << errno_name(errno);
  EXPECT_FALSE(std::filesystem::exists(backing / "b.txt"));
  ASSERT_EQ(::rmdir(at("dir").c_str()), 0) << errno_name(errno);
  EXPECT_FALSE(std::filesystem::exists(backing / "dir"));
  EXPECT_EQ(::unlink(at("missing").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(SessionTest, StatfsDescribesTheBackingFilesystem) {
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  struct statvfs through {
  }, host{};
  ASSERT_EQ(::statvfs(mnt.path().c_str(), &through), 0) << errno_name(errno);
  ASSERT_EQ(::statvfs(backing.path().c_str(), &host), 0);
  EXPECT_EQ(through.f_blocks, host.f_blocks);
  EXPECT_EQ(through.f_files, host.f_files);
  EXPECT_EQ(through.f_namemax, host.f_namemax);
}

TEST_F(SessionTest, ExtendedAttributes) {
  auto fs = passthrough(/*xattr=*/true);
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  // Whether the host directory takes user xattrs decides a skip, never the
  // daemon's own answer: on such a host, ENOTSUP through the mount fails.
  write_file(backing / "probe", "");
  if (::setxattr((backing / "probe").c_str(), "user.vfsd.probe", "p", 1, 0) != 0) {
    VFSD_SKIP_OR_FAIL_IN_CI("the host directory has no user xattrs: " + errno_name(errno));
  }
  ASSERT_EQ(::unlink((backing / "probe").c_str()), 0);
  write_file(backing / "x", "");
  ASSERT_EQ(::setxattr(at("x").c_str(), "user.vfsd", "v1", 2, 0), 0)
      << "setxattr through the mount: " << errno_name(errno);
  char value[16] = {};
  EXPECT_EQ(::getxattr((backing / "x").c_str(), "user.vfsd", value, sizeof(value)), 2);
  EXPECT_STREQ(value, "v1");
  std::fill(std::begin(value), std::end(value), 0);
  EXPECT_EQ(::getxattr(at("x").c_str(), "user.vfsd", value, sizeof(value)), 2);
  EXPECT_STREQ(value, "v1");
  char list[256] = {};
  ssize_t len = ::listxattr(at("x").c_str(), list, sizeof(list));
  ASSERT_GT(len, 0);
  EXPECT_NE(std::string(list, len).find("user.vfsd"), std::string::npos);
  EXPECT_EQ(::removexattr(at("x").c_str(), "user.vfsd"), 0) << errno_name(errno);
  EXPECT_EQ(::getxattr((backing / "x").c_str(), "user.vfsd", value, sizeof(value)), -1);
  EXPECT_EQ(errno, ENODATA);
}

TEST_F(SessionTest, ReadOnlyFsRefusesModificationsThroughTheMount) {
  write_file(backing / "r.txt", "read me");
  ASSERT_EQ(::mkdir((backing / "sub").c_str(), 0755), 0);
  auto inner = passthrough();
  ASSERT_TRUE(inner);
  auto& fs = own<passthrough::ReadOnlyFs>(*inner);
  mount(fs);
  if (IsSkipped() || HasFatalFailure()) return;

  EXPECT_EQ(read_file(at("r.txt")), "read me");
  auto expect_erofs = [](int rc, const char* what) {
    EXPECT_EQ(rc, -1) << what;
    EXPECT_EQ(errno, EROFS) << what << ": " << errno_name(errno);
  };
  expect_erofs(::open(at("r.txt").c_str(), O_WRONLY), "open O_WRONLY");
  expect_erofs(::open(at("new").c_str(), O_CREAT | O_RDONLY, 0644), "create");
  expect_erofs(::mkdir(at("d").c_str(), 0755), "mkdir");
  expect_erofs(::unlink(at("r.txt").c_str()), "unlink");
  expect_erofs(::rmdir(at("sub").c_str()), "rmdir");
  expect_erofs(::rename(at("r.txt").c_str(), at("s.txt").c_str()), "rename");
  expect_erofs(::symlink("r.txt", at("l").c_str()), "symlink");
  expect_erofs(::chmod(at("r.txt").c_str(), 0600), "chmod");
  expect_erofs(::truncate(at("r.txt").c_str(), 0), "truncate");
  EXPECT_EQ(read_file(backing / "r.txt"), "read me");
  EXPECT_FALSE(std::filesystem::exists(backing / "new"));
  EXPECT_FALSE(std::filesystem::exists(backing / "d"));
}

TEST_F(SessionTest, StopUnmounts) {
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_TRUE(testing::is_mounted(mnt.path()));
  ASSERT_TRUE(session->unmount());
  session->stop();
  EXPECT_FALSE(testing::is_mounted(mnt.path()));
  // Idempotent.
  EXPECT_TRUE(session->unmount());
  session->stop();
}

TEST_F(SessionTest, ExternalUmountEndsTheSession) {
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_EQ(::umount2(mnt.path().c_str(), 0), 0) << errno_name(errno);
  pollfd pfd{session->ended_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10000), 1) << "readers did not notice the umount";
  EXPECT_TRUE(session->ended());
  session->stop();
  EXPECT_FALSE(testing::is_mounted(mnt.path()));
}

// A busy mount is detached at once; what is open on it keeps being served
// until stop(), after which it answers ENOTCONN instead of hanging.
TEST_F(SessionTest, BusyMountIsDetachedLazily) {
  write_file(backing / "busy", "still here");
  write_file(backing / "later", "");
  auto fs = passthrough();
  ASSERT_TRUE(fs);
  mount(*fs);
  if (IsSkipped() || HasFatalFailure()) return;
  UniqueFd dir(::open(mnt.path().c_str(), O_RDONLY | O_DIRECTORY));
  ASSERT_TRUE(dir) << errno_name(errno);
  ASSERT_TRUE(session->unmount());
  EXPECT_FALSE(testing::is_mounted(mnt.path()));
  UniqueFd busy(::openat(dir.get(), "busy", O_RDONLY));
  ASSERT_TRUE(busy) << "the detached mount stopped serving: " << errno_name(errno);
  char buf[16] = {};
  EXPECT_EQ(::pread(busy.get(), buf, sizeof(buf), 0), 10) << errno_name(errno);
  session->stop();
  // A name never looked up needs a LOOKUP, which the closed connection refuses.
  EXPECT_EQ(::openat(dir.get(), "later", O_RDONLY), -1);
  EXPECT_EQ(errno, ENOTCONN);
}

// A PassthroughFs with POSIX locks negotiated, whose SETLKW waits until the
// test releases it (or an INTERRUPT arrives): what a deferred reply needs
// without depending on the real lock implementation.
class HeldLockFs final : public fuse::FileSystem {
 public:
  explicit HeldLockFs(fuse::FileSystem& inner) : inner_(inner) {}

  Result<fuse::InitReply> init(const fuse::InitRequest& r) override {
    auto reply = inner_.init(r);
    if (reply) reply->wanted_flags |= FUSE_POSIX_LOCKS;
    return reply;
  }
  void destroy() override { inner_.destroy(); }
  Result<fuse::Entry> lookup(const fuse::Context& c, fuse::InodeId p,
                             const fuse::Name& n) override {
    return inner_.lookup(c, p, n);
  }
  void forget(fuse::InodeId i, uint64_t n) override { inner_.forget(i, n); }
  void batch_forget(std::span<const std::pair<fuse::InodeId, uint64_t>> items) override {
    inner_.batch_forget(items);
  }
  Result<fuse::AttrReply> getattr(const fuse::Context& c, fuse::InodeId i,
                                  std::optional<fuse::HandleId> h) override {
    return inner_.getattr(c, i, h);
  }
  Result<fuse::OpenReply> open(const fuse::Context& c, fuse::InodeId i, uint32_t f,
                               bool kill_suidgid) override {
    return inner_.open(c, i, f, kill_suidgid);
  }
  Result<size_t> read(const fuse::Context& c, fuse::InodeId i, fuse::HandleId h, IovecWriter& out,
                      uint32_t size, uint64_t offset) override {
    return inner_.read(c, i, h, out, size, offset);
  }
  VoidResult flush(const fuse::Context& c, fuse::InodeId i, fuse::HandleId h, uint64_t o) override {
    return inner_.flush(c, i, h, o);
  }
  VoidResult release(const fuse::Context& c, fuse::InodeId i, fuse::HandleId h,
                     uint32_t f) override {
    return inner_.release(c, i, h, f);
  }
  Result<fuse::FileLock> getlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t,
                               const fuse::FileLock& lock, uint32_t) override {
    fuse::FileLock none = lock;
    none.type = F_UNLCK;
    return none;
  }
  VoidResult setlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t,
                   const fuse::FileLock&, uint32_t) override {
    return ok();
  }
  void setlkw(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t, const fuse::FileLock&,
              uint32_t, uint64_t unique, std::function<void(VoidResult)> done) override {
    std::lock_guard lock(mutex_);
    waiting_[unique] = std::move(done);
    changed_.notify_all();
  }
  void interrupt(uint64_t unique) override { finish(unique, fail(EINTR)); }
  void finish_all() {
    for (uint64_t id : wait_for_waiters(0)) finish(id, fail(EINTR));
  }

  /// Waits until `n` SETLKW are held; returns their ids.
  std::vector<uint64_t> wait_for_waiters(size_t n) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] { return waiting_.size() >= n; });
    std::vector<uint64_t> ids;
    for (const auto& [id, done] : waiting_) ids.push_back(id);
    return ids;
  }
  void finish(uint64_t unique, VoidResult result) {
    std::function<void(VoidResult)> done;
    {
      std::lock_guard lock(mutex_);
      auto it = waiting_.find(unique);
      if (it == waiting_.end()) return;
      done = std::move(it->second);
      waiting_.erase(it);
    }
    done(result);  // outside the lock: it writes the reply
  }

 private:
  fuse::FileSystem& inner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<uint64_t, std::function<void(VoidResult)>> waiting_;
};

void ignore_signal(int) {}

// Closes the connection before a test's waiting thread is joined, so that a
// failed expectation ends the wait (ENOTCONN) instead of hanging the test.
struct StopOnExit {
  Session& session;
  ~StopOnExit() { session.stop(); }
};

// With one reader thread, a waiting SETLKW must not hold it: other requests
// are still answered, and the lock's reply comes from the thread that ends
// the wait.
TEST_F(SessionTest, DeferredSetlkwDoesNotHoldTheReader) {
  write_file(backing / "lock", "data");
  auto inner = passthrough();
  ASSERT_TRUE(inner);
  auto& fs = own<HeldLockFs>(*inner);
  rescue = [&fs] { fs.finish_all(); };
  mount(fs, /*threads=*/1);
  if (IsSkipped() || HasFatalFailure()) return;

  UniqueFd fd(::open(at("lock").c_str(), O_RDWR));
  ASSERT_TRUE(fd) << errno_name(errno);
  auto locker = std::async(std::launch::async, [&] {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return ::fcntl(fd.get(), F_SETLKW, &fl) == 0 ? 0 : errno;
  });
  StopOnExit stop_on_exit{*session};
  auto ids = fs.wait_for_waiters(1);
  ASSERT_EQ(ids.size(), 1u) << "SETLKW never reached the filesystem";
  // The only reader is free: a lookup and a read go through meanwhile.
  write_file(backing / "other", "answered");
  EXPECT_EQ(read_file(at("other")), "answered");
  EXPECT_EQ(locker.wait_for(100ms), std::future_status::timeout);

  fs.finish(ids[0], ok());
  ASSERT_EQ(locker.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(locker.get(), 0);
}

// FUSE_INTERRUPT (sent by the host kernel when the waiter gets a signal)
// ends the wait with EINTR.
TEST_F(SessionTest, InterruptEndsAWaitingSetlkw) {
  write_file(backing / "lock", "data");
  auto inner = passthrough();
  ASSERT_TRUE(inner);
  auto& fs = own<HeldLockFs>(*inner);
  rescue = [&fs] { fs.finish_all(); };
  mount(fs, /*threads=*/1);
  if (IsSkipped() || HasFatalFailure()) return;

  struct sigaction action {
  }, old{};
  action.sa_handler = ignore_signal;  // no SA_RESTART: the wait returns EINTR
  ASSERT_EQ(::sigaction(SIGUSR1, &action, &old), 0);
  UniqueFd fd(::open(at("lock").c_str(), O_RDWR));
  ASSERT_TRUE(fd) << errno_name(errno);
  std::promise<pthread_t> thread_id;
  auto locker = std::async(std::launch::async, [&] {
    thread_id.set_value(pthread_self());
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    return ::fcntl(fd.get(), F_SETLKW, &fl) == 0 ? 0 : errno;
  });
  StopOnExit stop_on_exit{*session};
  pthread_t tid = thread_id.get_future().get();
  ASSERT_EQ(fs.wait_for_waiters(1).size(), 1u);
  ASSERT_EQ(::pthread_kill(tid, SIGUSR1), 0);
  ASSERT_EQ(locker.wait_for(10s), std::future_status::ready) << "INTERRUPT did not end the wait";
  EXPECT_EQ(locker.get(), EINTR);
  EXPECT_TRUE(fs.wait_for_waiters(0).empty());
  ::sigaction(SIGUSR1, &old, nullptr);
}

}  // namespace
}  // namespace vfsd::fusedev
