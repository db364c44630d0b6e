// Guest locks forwarded to the host: PassthroughFs's lock operations against
// a temporary directory, with host processes (fork) holding locks on the
// same files. Runs as root.
#include "passthrough/locks.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {
namespace {

using fuse::FileLock;
using fuse::HandleId;
using fuse::InodeId;
using fuse::kRootInode;
using namespace std::chrono_literals;

constexpr uint64_t kEof = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
constexpr uint32_t kPosix = 0;
constexpr uint32_t kFlock = FUSE_LK_FLOCK;

FileLock lk(uint32_t type, uint64_t start = 0, uint64_t end = kEof) {
  return FileLock{start, end, type, 0};
}

// Collects the `done` calls of SETLKW requests. The callbacks share its
// state, so a wait that outlives a failed test cannot call into freed memory.
class Completions {
 public:
  std::function<void(VoidResult)> callback() {
    return [s = state_](VoidResult r) {
      std::lock_guard lock(s->mu);
      s->results.push_back(r ? 0 : r.error().value);
      s->cv.notify_all();
    };
  }
  // Waits until `n` calls arrived (false after the timeout).
  bool wait_for(size_t n, std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock lock(state_->mu);
    return state_->cv.wait_for(lock, timeout, [&] { return state_->results.size() >= n; });
  }
  size_t count() {
    std::lock_guard lock(state_->mu);
    return state_->results.size();
  }
  std::vector<int> results() {
    std::lock_guard lock(state_->mu);
    return state_->results;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> results;  // 0 = success, else the errno
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// A host process that takes a lock on `path` and holds it until told to go.
class HostLocker {
 public:
  enum class Kind { kPosix, kOfd, kFlock };
  HostLocker(const std::string& path, Kind kind) {
    int ready[2], go[2];
    if (pipe(ready) != 0 || pipe(go) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      // Child: async-signal-safe calls only.
      close(ready[0]);
      close(go[1]);
      int fd = open(path.c_str(), O_RDWR);
      int rc = -1;
      if (fd >= 0) {
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (kind == Kind::kPosix) rc = fcntl(fd, F_SETLK, &fl);
        if (kind == Kind::kOfd) rc = fcntl(fd, F_OFD_SETLK, &fl);
        if (kind == Kind::kFlock) rc = flock(fd, LOCK_EX | LOCK_NB);
      }
      char c = rc == 0 ? 'y' : 'n';
      (void)!write(ready[1], &c, 1);
      (void)!read(go[0], &c, 1);
      _exit(0);  // releases the lock
    }
    close(ready[1]);
    close(go[0]);
    go_ = go[1];
    char c = 0;
    locked_ = read(ready[0], &c, 1) == 1 && c == 'y';
    close(ready[0]);
  }
  ~HostLocker() { release(); }
  bool locked() const { return locked_; }
  void release() {
    if (pid_ <= 0) return;
    close(go_);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int go_ = -1;
  bool locked_ = false;
};

class LocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    char tmpl[] = "/tmp/vfsd-locks-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    std::ofstream(root_ + "/f") << "0123456789";
    fs_ = make_fs(true, true);
    ASSERT_NE(fs_, nullptr);
    file_ = lookup("f");
    h1_ = open(O_RDWR);
    h2_ = open(O_RDWR);
  }
  void TearDown() override {
    fs_.reset();
    std::filesystem::remove_all(root_);
  }

  std::unique_ptr<PassthroughFs> make_fs(bool posix_lock, bool flock, uint64_t* wanted = nullptr) {
    PassthroughConfig config;
    config.shared_dir = root_;
    config.posix_lock = posix_lock;
    config.flock = flock;
    auto fs = PassthroughFs::create(config);
    if (!fs) return nullptr;
    auto init = (*fs)->init(fuse::InitRequest{FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS});
    EXPECT_TRUE(init.has_value());
    if (wanted && init) *wanted = init->wanted_flags;
    return std::move(*fs);
  }
  InodeId lookup(const char* n) {
    auto e = fs_->lookup(ctx_, kRootInode, *fuse::Name::from(n));
    EXPECT_TRUE(e.has_value());
    return e ? e->inode : InodeId{0};
  }
  HandleId open(uint32_t flags) {
    auto o = fs_->open(ctx_, file_, flags, false);
    EXPECT_TRUE(o.has_value());
    return o ? o->handle : HandleId{0};
  }
  int setlk(HandleId h, uint64_t owner, const FileLock& l, uint32_t flags = kPosix) {
    auto r = fs_->setlk(ctx_, file_, h, owner, l, flags);
    return r ? 0 : r.error().value;
  }
  void setlkw(HandleId h, uint64_t owner, const FileLock& l, uint64_t unique, Completions& c,
              uint32_t flags = kPosix) {
    fs_->setlkw(ctx_, file_, h, owner, l, flags, unique, c.callback());
  }
  // The conflicting lock a fresh host OFD description sees.
  int host_conflict(uint32_t type = F_WRLCK) {
    int fd = ::open((root_ + "/f").c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = static_cast<short>(type);
    fl.l_whence = SEEK_SET;
    EXPECT_EQ(fcntl(fd, F_OFD_GETLK, &fl), 0);
    ::close(fd);
    return fl.l_type;
  }
  bool host_can_flock() {
    int fd = ::open((root_ + "/f").c_str(), O_RDWR);
    bool ok = flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
    return ok;
  }

  std::string root_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::Context ctx_;
  InodeId file_ = fuse::InodeId{0};
  HandleId h1_ = fuse::HandleId{0}, h2_ = fuse::HandleId{0};
};

TEST_F(LocksTest, WithoutTheOptionsLockOpsAnswerEnosys) {
  uint64_t wanted = 0;
  fs_ = make_fs(false, false, &wanted);
  EXPECT_EQ(wanted & (FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS), 0u);
  file_ = lookup("f");
  h1_ = open(O_RDWR);
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK)), ENOSYS);
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK), kFlock), ENOSYS);
  auto g = fs_->getlk(ctx_, file_, h1_, 1, lk(F_WRLCK), kPosix);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().value, ENOSYS);
  Completions c;
  setlkw(h1_, 1, lk(F_WRLCK), 7, c);
  ASSERT_TRUE(c.wait_for(1));
  EXPECT_EQ(c.results(), std::vector<int>{ENOSYS});
  // Nothing reached the host.
  EXPECT_EQ(host_conflict(), F_UNLCK);

  // Each option asks for its own INIT flag.
  make_fs(true, false, &wanted);
  EXPECT_EQ(wanted & (FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS), uint64_t{FUSE_POSIX_LOCKS});
  make_fs(false, true, &wanted);
  EXPECT_EQ(wanted & (FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS), uint64_t{FUSE_FLOCK_LOCKS});
}

TEST_F(LocksTest, ConflictingPosixLocksBetweenOwners) {
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK, 0, 99)), 0);
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK, 50, 60)), EAGAIN);
  EXPECT_EQ(setlk(h2_, 2, lk(F_RDLCK, 99, 99)), EAGAIN);
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK, 100, 200)), 0);
  // An owner never conflicts with itself, through any of its handles.
  EXPECT_EQ(setlk(h2_, 1, lk(F_WRLCK, 50, 60)), 0);
  // Read locks share.
  EXPECT_EQ(setlk(h1_, 3, lk(F_RDLCK, 300, 400)), 0);
  EXPECT_EQ(setlk(h2_, 4, lk(F_RDLCK, 350, 450)), 0);
  EXPECT_EQ(setlk(h2_, 4, lk(F_WRLCK, 350, 450)), EAGAIN);
  // The host sees the guest's locks.
  EXPECT_EQ(host_conflict(), F_WRLCK);
  // Unlocking frees the range for the other owner.
  EXPECT_EQ(setlk(h1_, 1, lk(F_UNLCK, 0, 99)), 0);
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK, 0, 40)), 0);
  // Unlocking what an unknown owner never held is fine.
  EXPECT_EQ(setlk(h1_, 99, lk(F_UNLCK)), 0);
}

TEST_F(LocksTest, GetlkReportsTheHolder) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK, 10, 19)), 0);
  auto g = fs_->getlk(ctx_, file_, h2_, 2, lk(F_RDLCK), kPosix);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->type, uint32_t{F_WRLCK});
  EXPECT_EQ(g->start, 10u);
  EXPECT_EQ(g->end, 19u);
  // The holder itself sees no conflict, through either handle.
  g = fs_->getlk(ctx_, file_, h2_, 1, lk(F_WRLCK), kPosix);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->type, uint32_t{F_UNLCK});
  // A lock to end of file is reported as such.
  ASSERT_EQ(setlk(h1_, 1, lk(F_RDLCK, 100, kEof)), 0);
  g = fs_->getlk(ctx_, file_, h2_, 2, lk(F_WRLCK, 50, kEof), kPosix);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->type, uint32_t{F_RDLCK});
  EXPECT_EQ(g->start, 100u);
  EXPECT_EQ(g->end, kEof);
  // Read against read: no conflict.
  g = fs_->getlk(ctx_, file_, h2_, 2, lk(F_RDLCK, 200, 300), kPosix);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->type, uint32_t{F_UNLCK});
}

TEST_F(LocksTest, GetlkSeesAHostHolder) {
  HostLocker host(root_ + "/f", HostLocker::Kind::kPosix);
  ASSERT_TRUE(host.locked());
  auto g = fs_->getlk(ctx_, file_, h1_, 1, lk(F_RDLCK), kPosix);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->type, uint32_t{F_WRLCK});
  EXPECT_EQ(g->start, 0u);
  EXPECT_EQ(g->end, kEof);
  EXPECT_EQ(g->pid, 0u) << "a host pid means nothing to the guest";
}

TEST_F(LocksTest, BadRequestsAreRefused) {
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK, 10, 5)), EINVAL);
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK, 0, kEof + 1)), EINVAL);
  EXPECT_EQ(setlk(h1_, 1, lk(77)), EINVAL);
  EXPECT_EQ(setlk(h1_, 1, lk(77), kFlock), EINVAL);
  EXPECT_EQ(setlk(HandleId{h1_.value() + 100}, 1, lk(F_WRLCK)), EBADF);
  // A write lock needs a handle open for writing, a read lock one for reading.
  HandleId ro = open(O_RDONLY);
  HandleId wo = open(O_WRONLY);
  EXPECT_EQ(setlk(ro, 1, lk(F_WRLCK)), EBADF);
  EXPECT_EQ(setlk(wo, 2, lk(F_RDLCK)), EBADF);
  EXPECT_EQ(setlk(ro, 3, lk(F_RDLCK, 0, 9)), 0);
  EXPECT_EQ(setlk(wo, 4, lk(F_WRLCK, 100, 200)), 0);
  Completions c;
  setlkw(ro, 1, lk(F_WRLCK), 1, c);
  ASSERT_TRUE(c.wait_for(1));
  EXPECT_EQ(c.results(), std::vector<int>{EBADF});
}

TEST_F(LocksTest, FlushAndReleaseDropTheOwnersLocks) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  // FLUSH by another owner leaves the lock.
  ASSERT_TRUE(fs_->flush(ctx_, file_, h1_, 2));
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK)), EAGAIN);
  // FLUSH by the owner, through any handle, releases it (close() semantics).
  ASSERT_TRUE(fs_->flush(ctx_, file_, h2_, 1));
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK)), 0);
  ASSERT_EQ(setlk(h2_, 2, lk(F_UNLCK)), 0);

  // RELEASE of the only handle an owner locked through.
  HandleId h3 = open(O_RDWR);
  ASSERT_EQ(setlk(h3, 5, lk(F_WRLCK)), 0);
  EXPECT_EQ(setlk(h1_, 6, lk(F_WRLCK)), EAGAIN);
  ASSERT_TRUE(fs_->release(ctx_, file_, h3, 0));
  EXPECT_EQ(setlk(h1_, 6, lk(F_WRLCK)), 0);
}

TEST_F(LocksTest, HostLockBlocksSetlkAndSetlkwCompletesWhenReleased) {
  for (auto kind : {HostLocker::Kind::kPosix, HostLocker::Kind::kOfd}) {
    HostLocker host(root_ + "/f", kind);
    ASSERT_TRUE(host.locked());
    EXPECT_EQ(setlk(h1_, 1, lk(F_RDLCK, 5, 5)), EAGAIN);
    Completions c;
    setlkw(h1_, 1, lk(F_WRLCK), 42, c);
    EXPECT_FALSE(c.wait_for(1, 100ms)) << "SETLKW answered while the host holds the lock";
    EXPECT_EQ(fs_->lock_waiter_count(), 1u);
    host.release();
    ASSERT_TRUE(c.wait_for(1));
    EXPECT_EQ(c.results(), std::vector<int>{0});
    EXPECT_EQ(fs_->lock_waiter_count(), 0u);
    // The guest holds it now, as the host sees.
    EXPECT_EQ(host_conflict(F_RDLCK), F_WRLCK);
    ASSERT_EQ(setlk(h1_, 1, lk(F_UNLCK)), 0);
    EXPECT_EQ(host_conflict(F_RDLCK), F_UNLCK);
  }
}

TEST_F(LocksTest, FlockExcludesBetweenHandlesAndWithTheHost) {
  EXPECT_EQ(setlk(h1_, 11, lk(F_WRLCK), kFlock), 0);
  EXPECT_EQ(setlk(h2_, 12, lk(F_RDLCK), kFlock), EAGAIN);
  EXPECT_FALSE(host_can_flock());
  // flock and POSIX locks are independent, as on a local filesystem.
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK)), 0);
  ASSERT_EQ(setlk(h2_, 2, lk(F_UNLCK)), 0);
  EXPECT_EQ(setlk(h1_, 11, lk(F_UNLCK), kFlock), 0);
  EXPECT_EQ(setlk(h2_, 12, lk(F_RDLCK), kFlock), 0);
  EXPECT_EQ(setlk(h1_, 11, lk(F_RDLCK), kFlock), 0) << "shared locks share";
  // RELEASE of the handle drops its flock lock.
  ASSERT_TRUE(fs_->release(ctx_, file_, h1_, 0));
  ASSERT_TRUE(fs_->release(ctx_, file_, h2_, 0));
  EXPECT_TRUE(host_can_flock());
}

TEST_F(LocksTest, HostFlockBlocksGuestFlockUntilReleased) {
  HostLocker host(root_ + "/f", HostLocker::Kind::kFlock);
  ASSERT_TRUE(host.locked());
  EXPECT_EQ(setlk(h1_, 11, lk(F_RDLCK), kFlock), EAGAIN);
  Completions c;
  setlkw(h1_, 11, lk(F_WRLCK), 5, c, kFlock);
  EXPECT_FALSE(c.wait_for(1, 100ms));
  host.release();
  ASSERT_TRUE(c.wait_for(1));
  EXPECT_EQ(c.results(), std::vector<int>{0});
  EXPECT_FALSE(host_can_flock());
}

TEST_F(LocksTest, MoreWaitersThanWorkersWhileOtherCallsAreAnswered) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  // Two "queue workers" send 20 SETLKW requests between them; none may hold
  // its worker.
  constexpr int kWaiters = 20;
  Completions c;
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < kWaiters / 2; ++i) {
        uint64_t owner = 100 + static_cast<uint64_t>(w * kWaiters + i);
        setlkw(h2_, owner, lk(F_RDLCK), owner, c);
      }
    });
  }
  for (auto& t : workers) t.join();  // returned at once: nothing blocked them
  EXPECT_EQ(c.count(), 0u);
  EXPECT_TRUE(c.wait_for(kWaiters, 0ms) == false);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (fs_->lock_waiter_count() < kWaiters && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(fs_->lock_waiter_count(), size_t{kWaiters});
  // Other requests are still answered.
  EXPECT_TRUE(fs_->getattr(ctx_, file_, std::nullopt));
  EXPECT_TRUE(fs_->lookup(ctx_, kRootInode, *fuse::Name::from("f")));
  EXPECT_EQ(setlk(h2_, 2, lk(F_WRLCK, 0, 0)), EAGAIN);
  // The holder lets go: every reader gets its lock.
  ASSERT_EQ(setlk(h1_, 1, lk(F_UNLCK)), 0);
  ASSERT_TRUE(c.wait_for(kWaiters));
  EXPECT_EQ(c.results(), std::vector<int>(kWaiters, 0));
  EXPECT_EQ(fs_->lock_waiter_count(), 0u);
  EXPECT_EQ(host_conflict(F_WRLCK), F_RDLCK);
}

TEST_F(LocksTest, InterruptEndsTheWaitWithEintrOnce) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  Completions c;
  setlkw(h2_, 2, lk(F_WRLCK), 1001, c);
  setlkw(h2_, 3, lk(F_WRLCK), 1002, c);
  EXPECT_FALSE(c.wait_for(1, 50ms));
  fs_->interrupt(1001);
  ASSERT_TRUE(c.wait_for(1));
  EXPECT_EQ(c.results(), std::vector<int>{EINTR});
  // The other wait goes on; the interrupted one took nothing.
  EXPECT_FALSE(c.wait_for(2, 50ms));
  EXPECT_EQ(fs_->lock_waiter_count(), 1u);
  ASSERT_EQ(setlk(h1_, 1, lk(F_UNLCK)), 0);
  ASSERT_TRUE(c.wait_for(2));
  EXPECT_EQ(c.results(), (std::vector<int>{EINTR, 0}));
  ASSERT_EQ(setlk(h2_, 3, lk(F_UNLCK)), 0);
  EXPECT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0) << "the interrupted owner holds no lock";
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(c.count(), 2u) << "done called more than once";
  // Interrupting something that is not waiting changes nothing.
  fs_->interrupt(1002);
  fs_->interrupt(123456);
}

TEST_F(LocksTest, InterruptThatArrivesBeforeItsSetlkwStillEndsIt) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  fs_->interrupt(77);
  Completions c;
  setlkw(h2_, 2, lk(F_WRLCK), 77, c);
  ASSERT_TRUE(c.wait_for(1));
  EXPECT_EQ(c.results(), std::vector<int>{EINTR});
}

TEST_F(LocksTest, DestroyEndsEveryWaitWithEintrOnce) {
  HostLocker host(root_ + "/f", HostLocker::Kind::kFlock);
  ASSERT_TRUE(host.locked());
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  Completions c;
  for (uint64_t i = 0; i < 5; ++i) setlkw(h2_, 10 + i, lk(F_RDLCK), 500 + i, c);
  setlkw(h2_, 20, lk(F_WRLCK), 600, c, kFlock);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (fs_->lock_waiter_count() < 6 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(fs_->lock_waiter_count(), 6u);
  fs_->destroy();
  // Every `done` has returned when destroy() does.
  EXPECT_EQ(c.results(), std::vector<int>(6, EINTR));
  EXPECT_EQ(fs_->lock_waiter_count(), 0u);
  // The session's locks are gone from the host.
  EXPECT_EQ(host_conflict(), F_UNLCK);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(c.count(), 6u);
}

TEST_F(LocksTest, DestroyingTheFilesystemEndsWaits) {
  ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
  Completions c;
  setlkw(h2_, 2, lk(F_WRLCK), 9, c);
  fs_.reset();
  EXPECT_EQ(c.results(), std::vector<int>{EINTR});
}

// The fds this process has open, by number.
std::vector<int> open_fds() {
  std::vector<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    fds.push_back(std::stoi(entry.path().filename().string()));
  }
  std::sort(fds.begin(), fds.end());
  return fds;
}

// Fuzzing finding (tests/fuzz/regressions/fuse_passthrough/
// lock-waiter-fd-outlives-filesystem): waits still pending when the
// filesystem goes used to release their handle and lock-owner fds a moment
// after the destructor returned, from the detached waiter thread. Every fd of
// the filesystem is closed when the destructor returns, every time.
TEST_F(LocksTest, NoFdOfAWaiterOutlivesTheFilesystem) {
  fs_.reset();
  const std::vector<int> baseline = open_fds();
  for (int round = 0; round < 200; ++round) {
    fs_ = make_fs(true, true);
    ASSERT_NE(fs_, nullptr);
    file_ = lookup("f");
    h1_ = open(O_RDWR);
    h2_ = open(O_RDWR);
    ASSERT_EQ(setlk(h1_, 1, lk(F_WRLCK)), 0);
    Completions c;
    setlkw(h2_, 2, lk(F_WRLCK), 10, c);
    setlkw(h2_, 3, lk(F_RDLCK), 11, c);
    fs_.reset();
    ASSERT_EQ(open_fds(), baseline) << "round " << round;
    ASSERT_EQ(c.results(), (std::vector<int>{EINTR, EINTR}));
  }
}

// The cap on waiters and lock descriptions, on a LockManager directly.
TEST(LockManagerLimits, WaitersAndOwnerDescriptionsAreBounded) {
  char tmpl[] = "/tmp/vfsd-locks-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string file = std::string(tmpl) + "/f";
  std::ofstream(file) << "x";
  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto handle = std::make_shared<HandleData>();
  handle->inode = InodeId{2};
  handle->fd.reset(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(handle->fd);
  {
    LockManager locks(proc.get(), LockLimits{2, 4});
    ASSERT_TRUE(
        locks.setlk(fuse::InodeId{2}, fuse::HandleId{1}, handle, 1, lk(F_WRLCK, 0, 0), false));
    Completions c;
    for (uint64_t i = 0; i < 3; ++i) {
      locks.setlkw(fuse::InodeId{2}, fuse::HandleId{1}, handle, 10 + i, lk(F_WRLCK, 0, 0), false, i,
                   c.callback());
    }
    ASSERT_TRUE(c.wait_for(1));
    EXPECT_EQ(c.results(), std::vector<int>{ENOLCK});
    EXPECT_EQ(locks.waiter_count(), 2u);
    EXPECT_EQ(locks.owner_fd_count(), 4u);
    auto r = locks.setlk(fuse::InodeId{2}, fuse::HandleId{1}, handle, 99, lk(F_RDLCK, 5, 5), false);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().value, ENOLCK);
    locks.reset();
    EXPECT_EQ(c.results(), (std::vector<int>{ENOLCK, EINTR, EINTR}));
    EXPECT_EQ(locks.owner_fd_count(), 0u);
  }
  std::filesystem::remove_all(tmpl);
}

// A SETLKW that registers while reset() is ending the session's waits (a
// request on another queue, racing with DESTROY on hiprio) must end too, and
// reset() must return: it used to wait forever for a waiter its snapshot had
// missed, holding the worker that carried DESTROY. Made deterministic by
// registering the second wait from inside the first one's `done`, which runs
// while reset() waits for the waiters to finish.
TEST(LockManagerReset, AWaitRegisteringDuringAResetEndsAndResetReturns) {
  char tmpl[] = "/tmp/vfsd-locks-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string file = std::string(tmpl) + "/f";
  std::ofstream(file) << "x";
  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto handle = std::make_shared<HandleData>();
  handle->inode = InodeId{2};
  handle->fd.reset(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(handle->fd);
  auto locks = std::make_shared<LockManager>(proc.get());
  ASSERT_TRUE(
      locks->setlk(fuse::InodeId{2}, fuse::HandleId{1}, handle, /*owner=*/1, lk(F_WRLCK), false));
  Completions c;
  auto second = c.callback();
  locks->setlkw(fuse::InodeId{2}, fuse::HandleId{1}, handle, /*owner=*/2, lk(F_WRLCK), false,
                /*unique=*/10, [locks, handle, second, first = c.callback()](VoidResult r) {
                  first(r);
                  locks->setlkw(fuse::InodeId{2}, fuse::HandleId{1}, handle, /*owner=*/3,
                                lk(F_WRLCK), false, /*unique=*/12, second);
                });
  ASSERT_EQ(locks->waiter_count(), 1u);
  std::promise<void> reset_done;
  std::thread resetter([&] {
    locks->reset();
    reset_done.set_value();
  });
  if (reset_done.get_future().wait_for(20s) != std::future_status::ready) {
    ADD_FAILURE() << "reset() did not return; waiters: " << locks->waiter_count();
    std::_Exit(1);  // the thread cannot be joined: do not hang the suite
  }
  resetter.join();
  ASSERT_TRUE(c.wait_for(2));
  EXPECT_EQ(c.results(), (std::vector<int>{EINTR, EINTR}));
  EXPECT_EQ(locks->waiter_count(), 0u);
  // The next session waits normally again (the reset dropped owner 1's
  // lock with the rest: take it again).
  ASSERT_TRUE(
      locks->setlk(fuse::InodeId{2}, fuse::HandleId{1}, handle, /*owner=*/1, lk(F_WRLCK), false));
  Completions after;
  locks->setlkw(fuse::InodeId{2}, fuse::HandleId{1}, handle, /*owner=*/4, lk(F_WRLCK), false,
                /*unique=*/14, after.callback());
  EXPECT_EQ(locks->waiter_count(), 1u);
  locks->interrupt(14);
  ASSERT_TRUE(after.wait_for(1));
  EXPECT_EQ(after.results(), std::vector<int>{EINTR});
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace vfsd::passthrough
