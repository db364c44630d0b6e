// --inode-file-handles and submounts: FileHandle, the inode store's handle
// inodes and mount fds, and PassthroughFs in each mode. Host-side checks
// (fd counts, stat of the host inode, mounts in a private namespace). Runs as
// root (open_by_handle_at needs CAP_DAC_READ_SEARCH).
#include "passthrough/file_handle.h"
#include "support/host_files.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "passthrough/inode_store.h"
#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {
namespace {

using test::count_open_fds;
using test::host_lstat;

using fuse::InodeId;
using fuse::kRootInode;

void touch(const std::string& path, const std::string& data = "") {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

struct stat fd_stat(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), 0);
  return st;
}

InodeKey key_of(int fd) {
  struct statx stx {};
  EXPECT_EQ(
      ::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID, &stx),
      0);
  return InodeKey{makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino, stx.stx_mnt_id};
}

UniqueFd open_path(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  EXPECT_TRUE(fd) << path << ": " << errno_name(errno);
  return fd;
}

// Lowers the soft RLIMIT_NOFILE for one test and puts it back.
class FdLimit {
 public:
  explicit FdLimit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &old_);
    rlimit lowered = old_;
    lowered.rlim_cur = soft;
    ok_ = ::setrlimit(RLIMIT_NOFILE, &lowered) == 0;
  }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &old_); }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

// A private mount namespace, so that test mounts never reach the host. The
// process is single-threaded here, which unshare(CLONE_NEWNS) needs.
bool enter_private_mount_namespace() {
  return ::unshare(CLONE_NEWNS) == 0 &&
         ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
}

class FileHandleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    old_umask_ = ::umask(0);
    // /tmp is ext4 here, which has file handles.
    char tmpl[] = "/tmp/vfsd-fh-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    fs_.reset();
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    std::filesystem::remove_all(root_);
    ::umask(old_umask_);
  }

  std::unique_ptr<PassthroughFs> make_fs(InodeFileHandles mode, std::string dir = "",
                                         uint64_t deletion_marks = 0) {
    PassthroughConfig config;
    config.shared_dir = dir.empty() ? root_ : dir;
    config.inode_file_handles = mode;
    config.deletion_mark_limit = deletion_marks;
    auto fs = PassthroughFs::create(config);
    if (!fs) return nullptr;
    EXPECT_TRUE((*fs)->init(fuse::InitRequest{FUSE_SUBMOUNTS}).has_value());
    return std::move(*fs);
  }

  bool mount_here(const char* type, const std::string& rel) {
    if (::mount(type, path(rel).c_str(), type, 0, nullptr) != 0) return false;
    mounts_.push_back(path(rel));
    return true;
  }

  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  // Makes "f" anew until it has inode number `ino` again: ext4 hands a freed
  // number out again soon; files that got another one are moved aside so
  // that the allocator moves on. False if it never did.
  bool recreate_with_number(ino_t ino) {
    for (int i = 0; i < 2000; ++i) {
      touch(path("f"));
      if (host_lstat(path("f")).st_ino == ino) return true;
      if (::rename(path("f").c_str(), path("aside-" + std::to_string(i)).c_str()) != 0)
        return false;
    }
    return false;
  }
  static fuse::Name name(std::string_view s) { return *fuse::Name::from(s); }
  Result<fuse::Entry> lookup(InodeId parent, std::string_view n) {
    return fs_->lookup(ctx_, parent, name(n));
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::vector<std::string> mounts_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::Context ctx_{};
};

// --- FileHandle ---------------------------------------------------------------

TEST_F(FileHandleTest, HandleOpensTheSameInodeAndTellsObjectsApart) {
  touch(path("a"));
  touch(path("b"));
  ASSERT_EQ(::symlink("/etc/passwd", path("link").c_str()), 0);
  auto a = FileHandle::from_fd(open_path(path("a")).get());
  auto a2 = FileHandle::from_fd(open_path(path("a")).get());
  auto b = FileHandle::from_fd(open_path(path("b")).get());
  auto link = FileHandle::from_fd(open_path(path("link")).get());
  ASSERT_TRUE(a && a2 && b && link) << "ext4 has file handles";
  EXPECT_TRUE(a->same_object(*a2));
  EXPECT_FALSE(a->same_object(*b));
  EXPECT_EQ(a->mount_id(), key_of(open_path(path("a")).get()).mnt_id);

  UniqueFd mount_fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  // The kernel refuses an O_PATH mount fd.
  auto refused = a->open(open_path(root_).get(), O_PATH);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().value, EBADF);
  auto opened = a->open(mount_fd.get(), O_PATH);
  ASSERT_TRUE(opened) << errno_name(opened.error().value);
  EXPECT_EQ(fd_stat(opened->get()).st_ino, host_lstat(path("a")).st_ino);
  // A symlink's handle opens the link itself, not its target.
  auto opened_link = link->open(mount_fd.get(), O_PATH);
  ASSERT_TRUE(opened_link);
  EXPECT_TRUE(S_ISLNK(fd_stat(opened_link->get()).st_mode));
}

TEST_F(FileHandleTest, HandleOfADeletedInodeAnswersEstale) {
  touch(path("gone"));
  auto handle = FileHandle::from_fd(open_path(path("gone")).get());
  ASSERT_TRUE(handle);
  ASSERT_EQ(::unlink(path("gone").c_str()), 0);
  UniqueFd mount_fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto opened = handle->open(mount_fd.get(), O_PATH);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().value, ESTALE);
}

TEST_F(FileHandleTest, ProcHasNoHandles) {
  UniqueFd proc(::open("/proc/self/status", O_PATH | O_CLOEXEC));
  ASSERT_TRUE(proc);
  auto handle = FileHandle::from_fd(proc.get());
  ASSERT_FALSE(handle);
  EXPECT_TRUE(handles_unsupported(handle.error())) << errno_name(handle.error().value);
}

// --- InodeStore ---------------------------------------------------------------

TEST_F(FileHandleTest, StoreKeepsNoFdForAHandleInodeAndEachGetOpensAPrivateOne) {
  touch(path("f"));
  InodeStore store;
  store.set_root(open_path(root_), key_of(open_path(root_).get()));
  UniqueFd fd = open_path(path("f"));
  InodeKey key = key_of(fd.get());
  auto handle = FileHandle::from_fd(fd.get());
  ASSERT_TRUE(handle);
  const int fds_before = count_open_fds();
  auto inserted = store.insert_or_ref(std::move(fd), key, S_IFREG, *handle);
  ASSERT_TRUE(inserted);
  EXPECT_FALSE((*inserted)->fd.valid());
  EXPECT_EQ(count_open_fds(), fds_before - 1) << "the lookup fd is closed, nothing held";
  const InodeId id = (*inserted)->id;

  auto opened = store.open(id);
  ASSERT_TRUE(opened);
  std::shared_ptr<const InodeData> used = std::move(*opened);
  ASSERT_TRUE(used->fd.valid());
  EXPECT_EQ(fd_stat(used->fd.get()).st_ino, host_lstat(path("f")).st_ino);
  // A concurrent FORGET removes the inode, but the running request's fd
  // stays open until it lets go.
  store.forget(id, 1);
  EXPECT_EQ(store.open(id).error(), Errno{EBADF});
  EXPECT_EQ(::fcntl(used->fd.get(), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(fd_stat(used->fd.get()).st_ino, host_lstat(path("f")).st_ino);
  used.reset();
  EXPECT_EQ(count_open_fds(), fds_before - 1);
}

TEST_F(FileHandleTest, StoreTakesAHandleWithoutAnFdOnlyOnAMountItKnows) {
  touch(path("f"));
  ASSERT_EQ(::mkdir(path("m").c_str(), 0755), 0);
  ASSERT_TRUE(enter_private_mount_namespace());
  ASSERT_TRUE(mount_here("tmpfs", "m"));
  touch(path("m/g"));
  InodeStore store;
  store.set_root(open_path(root_), key_of(open_path(root_).get()));
  UniqueFd fd = open_path(path("f"));
  const InodeKey key = key_of(fd.get());
  auto handle = FileHandle::from_fd(fd.get());
  ASSERT_TRUE(handle);
  // Neither an fd nor a handle: nothing could reach the inode.
  EXPECT_EQ(store.insert_or_ref(UniqueFd(), key, S_IFREG, std::nullopt).error(), Errno{EBADF});
  // The root's mount is known: the handle alone makes the inode.
  auto inserted = store.insert_or_ref(UniqueFd(), key, S_IFREG, *handle);
  ASSERT_TRUE(inserted) << errno_name(inserted.error().value);
  auto opened = store.open((*inserted)->id);
  ASSERT_TRUE(opened);
  EXPECT_EQ(fd_stat((*opened)->fd.get()).st_ino, host_lstat(path("f")).st_ino);
  // A mount never met has no fd to open handles with, and none can be made
  // from nothing.
  UniqueFd other = open_path(path("m/g"));
  auto other_handle = FileHandle::from_fd(other.get());
  ASSERT_TRUE(other_handle);
  EXPECT_FALSE(store.insert_or_ref(UniqueFd(), key_of(other.get()), S_IFREG, *other_handle));
}

TEST_F(FileHandleTest, StoreGivesAReusedInodeNumberANewNodeId) {
  touch(path("old"));
  touch(path("new"));
  InodeStore store;
  store.set_root(open_path(root_), key_of(open_path(root_).get()));
  // Two different objects presented under one key: what the host shows when
  // it deleted an inode and reused its number.
  InodeKey key = key_of(open_path(path("old")).get());
  auto old_handle = FileHandle::from_fd(open_path(path("old")).get());
  auto new_handle = FileHandle::from_fd(open_path(path("new")).get());
  ASSERT_TRUE(old_handle && new_handle);
  auto first = store.insert_or_ref(open_path(path("old")), key, S_IFREG, *old_handle);
  auto again = store.insert_or_ref(open_path(path("old")), key, S_IFREG, *old_handle);
  auto reused = store.insert_or_ref(open_path(path("new")), key, S_IFREG, *new_handle);
  ASSERT_TRUE(first && again && reused);
  EXPECT_EQ((*first)->id, (*again)->id);
  EXPECT_NE((*reused)->id, (*first)->id);
  EXPECT_EQ(store.refcount((*first)->id), 2u);
  // Forgetting the old node id leaves the key with the new inode.
  store.forget((*first)->id, 2);
  auto third = store.insert_or_ref(open_path(path("new")), key, S_IFREG, *new_handle);
  ASSERT_TRUE(third);
  EXPECT_EQ((*third)->id, (*reused)->id);
  EXPECT_EQ(store.refcount((*reused)->id), 2u);
}

// --- PassthroughFs with handles -------------------------------------------------

class ManyFilesTest : public FileHandleTest {
 protected:
  static constexpr int kFiles = 100000;
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/vfsd-many-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    shared_ = tmpl;
    ASSERT_EQ(::mkdir((shared_ + "/d").c_str(), 0755), 0);
    for (int i = 0; i < kFiles; ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "%s/d/f%d", shared_.c_str(), i);
      int fd = ::open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0) << name;
      ::close(fd);
    }
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(shared_); }

  // Looks up every file under d/ with at most 256 fds; returns how many
  // lookups succeeded and the first error.
  std::pair<int, int> lookup_all(InodeFileHandles mode, int* fds_added) {
    fs_ = make_fs(mode, shared_);
    EXPECT_NE(fs_, nullptr);
    if (!fs_) return {0, 0};
    auto dir = fs_->lookup(ctx_, kRootInode, name("d"));
    EXPECT_TRUE(dir);
    if (!dir) return {0, 0};
    const int before = count_open_fds();
    int done = 0;
    int error = 0;
    {
      FdLimit limit(256);
      EXPECT_TRUE(limit.ok());
      for (int i = 0; i < kFiles; ++i) {
        auto e = fs_->lookup(ctx_, dir->inode, name("f" + std::to_string(i)));
        if (!e) {
          error = e.error().value;
          break;
        }
        ++done;
      }
    }
    *fds_added = count_open_fds() - before;
    return {done, error};
  }

  static std::string shared_;
};
std::string ManyFilesTest::shared_;

TEST_F(ManyFilesTest, HandlesKeepHostFdsBoundedOver100000Lookups) {
  int fds_added = 0;
  auto [done, error] = lookup_all(InodeFileHandles::kPrefer, &fds_added);
  EXPECT_EQ(done, kFiles) << "failed with " << errno_name(error);
  EXPECT_LE(fds_added, 2);
  EXPECT_EQ(fs_->inode_count(), size_t{kFiles} + 2);  // root, d, the files
}

TEST_F(ManyFilesTest, WithoutHandlesTheSameLookupsRunOutOfFds) {
  int fds_added = 0;
  auto [done, error] = lookup_all(InodeFileHandles::kNever, &fds_added);
  EXPECT_LT(done, 256);
  EXPECT_EQ(error, EMFILE);
}

TEST_F(FileHandleTest, OperationsWorkOnHandleInodes) {
  touch(path("f"), "hello");
  ASSERT_EQ(::symlink("target", path("l").c_str()), 0);
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  touch(path("d/inner"), "x");
  fs_ = make_fs(InodeFileHandles::kMandatory);
  ASSERT_NE(fs_, nullptr);
  auto f = lookup(kRootInode, "f");
  auto l = lookup(kRootInode, "l");
  auto d = lookup(kRootInode, "d");
  ASSERT_TRUE(f && l && d);
  auto inner = lookup(d->inode, "inner");  // parent opened from its handle
  ASSERT_TRUE(inner);
  EXPECT_EQ(inner->attr.st_ino, host_lstat(path("d/inner")).st_ino);
  auto attr = fs_->getattr(ctx_, f->inode, std::nullopt);
  ASSERT_TRUE(attr);
  EXPECT_EQ(attr->attr.st_size, 5);
  auto target = fs_->readlink(ctx_, l->inode);
  ASSERT_TRUE(target);
  EXPECT_EQ(*target, "target");
  auto opened = fs_->open(ctx_, f->inode, O_RDWR, false);
  ASSERT_TRUE(opened);
  EXPECT_TRUE(fs_->release(ctx_, f->inode, opened->handle, 0));
  fuse::SetattrRequest truncate{};
  truncate.valid = FATTR_SIZE;
  truncate.size = 2;
  ASSERT_TRUE(fs_->setattr(ctx_, f->inode, truncate));
  EXPECT_EQ(host_lstat(path("f")).st_size, 2);
  // Same inode, same node id, with handles too.
  auto again = lookup(kRootInode, "f");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->inode, f->inode);
}

TEST_F(FileHandleTest, AFileDeletedOnTheHostAnswersEstaleWithHandles) {
  touch(path("f"));
  touch(path("g"));
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto f = lookup(kRootInode, "f");
  ASSERT_TRUE(f);
  ASSERT_EQ(::unlink(path("f").c_str()), 0);
  auto attr = fs_->getattr(ctx_, f->inode, std::nullopt);
  ASSERT_FALSE(attr);
  EXPECT_EQ(attr.error().value, ESTALE);

  // Without handles the held fd keeps the inode alive.
  fs_ = make_fs(InodeFileHandles::kNever);
  auto g = lookup(kRootInode, "g");
  ASSERT_TRUE(g);
  ASSERT_EQ(::unlink(path("g").c_str()), 0);
  auto kept = fs_->getattr(ctx_, g->inode, std::nullopt);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->attr.st_nlink, 0u);
}

// A LOOKUP of an inode the guest already holds is answered from the store,
// recognised by a stat of the name: the same node id, one more reference.
TEST_F(FileHandleTest, KnownInodeIsRecognisedByItsNameInEveryMode) {
  touch(path("f"), "abc");
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  for (auto mode : {InodeFileHandles::kNever, InodeFileHandles::kPrefer}) {
    SCOPED_TRACE(mode == InodeFileHandles::kNever ? "never" : "prefer");
    fs_ = make_fs(mode);
    ASSERT_NE(fs_, nullptr);
    auto first = lookup(kRootInode, "f");
    ASSERT_TRUE(first);
    EXPECT_EQ(fs_->lookups_recognised(), 0u) << "a new inode takes the full way";
    auto again = lookup(kRootInode, "f");
    auto dir = lookup(kRootInode, "d");
    auto dir_again = lookup(kRootInode, "d");
    ASSERT_TRUE(again && dir && dir_again);
    EXPECT_EQ(fs_->lookups_recognised(), 2u);
    EXPECT_EQ(again->inode, first->inode);
    EXPECT_EQ(dir_again->inode, dir->inode);
    EXPECT_EQ(again->attr.st_ino, host_lstat(path("f")).st_ino);
    EXPECT_EQ(again->attr.st_size, 3);
    // Both answers took a reference: two FORGETs of one drop the inode.
    fs_->forget(first->inode, 1);
    EXPECT_TRUE(fs_->getattr(ctx_, first->inode, std::nullopt));
    fs_->forget(first->inode, 1);
    EXPECT_FALSE(fs_->getattr(ctx_, first->inode, std::nullopt));
    // A miss is ENOENT, and a known name replaced on the host by another
    // file is that other file.
    EXPECT_EQ(lookup(kRootInode, "missing").error().value, ENOENT);
    auto d2 = lookup(kRootInode, "d");
    ASSERT_TRUE(d2);
    ASSERT_EQ(::rename(path("f").c_str(), path("f.old").c_str()), 0);
    touch(path("f"), "other");
    auto replaced = lookup(kRootInode, "f");
    ASSERT_TRUE(replaced);
    EXPECT_EQ(replaced->attr.st_ino, host_lstat(path("f")).st_ino);
    EXPECT_EQ(replaced->attr.st_size, 5);
    ASSERT_EQ(::rename(path("f.old").c_str(), path("f").c_str()), 0);
  }
}

// With handles nothing pins a looked-up inode: the host may delete it and
// give its number to a new file. That file must not be taken for the old
// inode (whose handle answers ESTALE); it gets a node id of its own.
TEST_F(FileHandleTest, KnownInodeNumberReusedByTheHostIsANewInode) {
  touch(path("f"));
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto old_entry = lookup(kRootInode, "f");
  ASSERT_TRUE(old_entry);
  const ino_t old_ino = host_lstat(path("f")).st_ino;
  ASSERT_EQ(::unlink(path("f").c_str()), 0);
  const bool reused = recreate_with_number(old_ino);
  if (!reused) GTEST_SKIP() << "the host filesystem did not reuse the inode number";
  const uint64_t recognised = fs_->lookups_recognised();
  auto new_entry = lookup(kRootInode, "f");
  ASSERT_TRUE(new_entry) << errno_name(new_entry.error().value);
  EXPECT_NE(new_entry->inode, old_entry->inode);
  EXPECT_EQ(fs_->lookups_recognised(), recognised);
  // The reference the recognition attempt took on the old inode went back.
  EXPECT_EQ(fs_->lookup_count(old_entry->inode), 1u);
  EXPECT_TRUE(fs_->getattr(ctx_, new_entry->inode, std::nullopt));
  EXPECT_EQ(fs_->getattr(ctx_, old_entry->inode, std::nullopt).error().value, ESTALE);
  // And from now on the new inode is the one recognised under the name.
  auto again = lookup(kRootInode, "f");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->inode, new_entry->inode);
  EXPECT_EQ(fs_->lookups_recognised(), recognised + 1);
}

// The same with the deletion watch: the inode the guest looked up again has an
// inotify mark that proves it alive, so no handle is compared; the host's
// delete must end that proof before the number's new file is looked up.
TEST_F(FileHandleTest, MarkedInodeNumberReusedByTheHostIsANewInode) {
  touch(path("f"));
  fs_ = make_fs(InodeFileHandles::kPrefer, "", /*deletion_marks=*/16);
  ASSERT_NE(fs_, nullptr);
  auto old_entry = lookup(kRootInode, "f");
  ASSERT_TRUE(old_entry);
  EXPECT_EQ(fs_->inode_marks(), 0u);  // a first lookup gives no mark
  ASSERT_TRUE(lookup(kRootInode, "f"));
  EXPECT_EQ(fs_->inode_marks(), 1u);
  // Recognised through the mark from now on.
  const uint64_t before = fs_->lookups_recognised();
  auto marked = lookup(kRootInode, "f");
  ASSERT_TRUE(marked);
  EXPECT_EQ(marked->inode, old_entry->inode);
  EXPECT_EQ(fs_->lookups_recognised(), before + 1);
  EXPECT_EQ(fs_->lookup_count(old_entry->inode), 3u);

  const ino_t old_ino = host_lstat(path("f")).st_ino;
  ASSERT_EQ(::unlink(path("f").c_str()), 0);
  const bool reused = recreate_with_number(old_ino);
  if (!reused) GTEST_SKIP() << "the host filesystem did not reuse the inode number";
  const uint64_t recognised = fs_->lookups_recognised();
  auto new_entry = lookup(kRootInode, "f");
  ASSERT_TRUE(new_entry) << errno_name(new_entry.error().value);
  EXPECT_NE(new_entry->inode, old_entry->inode);
  EXPECT_EQ(fs_->lookups_recognised(), recognised);
  EXPECT_EQ(fs_->lookup_count(old_entry->inode), 3u);
  EXPECT_EQ(fs_->getattr(ctx_, old_entry->inode, std::nullopt).error().value, ESTALE);
  // The kernel took the old inode's mark away with the inode.
  EXPECT_EQ(fs_->inode_marks(), 0u);
  // Forgetting the marked inode takes nothing more (its mark is gone).
  fs_->forget(old_entry->inode, 3);
  EXPECT_EQ(fs_->inode_marks(), 0u);
}

// Forgetting a marked inode removes its mark, so that the kernel lets the
// inode go; marks are not fds.
TEST_F(FileHandleTest, ForgettingAMarkedInodeRemovesItsMark) {
  touch(path("f"));
  fs_ = make_fs(InodeFileHandles::kPrefer, "", /*deletion_marks=*/16);
  ASSERT_NE(fs_, nullptr);
  const uint64_t fds_before = fs_->fd_budget_used();
  auto first = lookup(kRootInode, "f");
  ASSERT_TRUE(first);
  ASSERT_TRUE(lookup(kRootInode, "f"));
  EXPECT_EQ(fs_->inode_marks(), 1u);
  EXPECT_EQ(fs_->fd_budget_used(), fds_before);  // a mark holds no fd
  fs_->forget(first->inode, 2);
  EXPECT_EQ(fs_->inode_count(), 1u);
  EXPECT_EQ(fs_->inode_marks(), 0u);
}

// A submount root recognised again keeps its flag.
TEST_F(FileHandleTest, KnownInodeThatIsASubmountRootKeepsItsFlag) {
  ASSERT_EQ(::mkdir(path("tmp").c_str(), 0755), 0);
  if (!enter_private_mount_namespace() || !mount_here("tmpfs", "tmp")) {
    GTEST_SKIP() << "cannot mount here: " << errno_name(errno);
  }
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto first = lookup(kRootInode, "tmp");
  auto again = lookup(kRootInode, "tmp");
  ASSERT_TRUE(first && again);
  EXPECT_EQ(fs_->lookups_recognised(), 1u);
  EXPECT_EQ(again->inode, first->inode);
  EXPECT_TRUE(first->attr_flags & FUSE_ATTR_SUBMOUNT);
  EXPECT_TRUE(again->attr_flags & FUSE_ATTR_SUBMOUNT);
}

// The guest's own unlink or rename over a file it still holds: with
// writeback caching it later sends SETATTR (the times) for that inode. A
// handle no longer opens it, so the inode keeps an fd from that moment.
TEST_F(FileHandleTest, WhatTheGuestUnlinksOrRenamesOverStaysReachable) {
  touch(path("f"));
  touch(path("g"));
  touch(path("h"));
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto f = lookup(kRootInode, "f");
  auto h = lookup(kRootInode, "h");
  ASSERT_TRUE(f && h);
  ASSERT_TRUE(fs_->unlink(ctx_, kRootInode, name("f")));
  ASSERT_TRUE(fs_->rename(ctx_, kRootInode, name("g"), kRootInode, name("h"), 0));
  for (InodeId gone : {f->inode, h->inode}) {
    fuse::SetattrRequest times{};
    times.valid = FATTR_MTIME | FATTR_ATIME;
    auto set = fs_->setattr(ctx_, gone, times);
    ASSERT_TRUE(set) << errno_name(set.error().value);
    EXPECT_EQ(set->attr.st_nlink, 0u);
  }
}

// An O_TMPFILE has no name, so no handle reopens it: its inode holds an fd.
TEST_F(FileHandleTest, ATmpfileIsReachableWithHandles) {
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto t = fs_->tmpfile(ctx_, kRootInode, 0600, O_RDWR, 0, {});
  ASSERT_TRUE(t) << errno_name(t.error().value);
  fuse::SetattrRequest times{};
  times.valid = FATTR_MTIME;
  auto set = fs_->setattr(ctx_, t->first.inode, times);
  ASSERT_TRUE(set) << errno_name(set.error().value);
  EXPECT_EQ(set->attr.st_nlink, 0u);
}

// A new file's handle and stat come from the creation's own fd: no O_PATH
// reopen through /proc/self/fd (a path walk and a close per creation). With
// an empty directory standing in for /proc/self/fd, every such reopen fails,
// so the creations below only work without one.
TEST_F(FileHandleTest, CreationsWithHandlesNeedNoReopenThroughProc) {
  char tmpl[] = "/tmp/vfsd-noproc-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string no_proc = tmpl;
  auto fs_with_empty_proc = [&](InodeFileHandles mode) -> std::unique_ptr<PassthroughFs> {
    PassthroughConfig config;
    config.shared_dir = root_;
    config.inode_file_handles = mode;
    auto fs = PassthroughFs::create(config, open_path(no_proc));
    if (!fs) return nullptr;
    EXPECT_TRUE((*fs)->init(fuse::InitRequest{}).has_value());
    return std::move(*fs);
  };
  // Without handles the new inode keeps an O_PATH fd, which only the reopen
  // makes: the stand-in does block it.
  fs_ = fs_with_empty_proc(InodeFileHandles::kNever);
  ASSERT_NE(fs_, nullptr);
  auto refused = fs_->create(ctx_, kRootInode, name("n"), 0644, O_RDWR, 0, false, {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), Errno{ENOENT});

  fs_ = fs_with_empty_proc(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto made = fs_->create(ctx_, kRootInode, name("c"), 0644, O_RDWR | O_EXCL, 0, false, {});
  ASSERT_TRUE(made) << errno_name(made.error().value);
  EXPECT_EQ(made->first.attr.st_ino, host_lstat(path("c")).st_ino);
  auto node = fs_->mknod(ctx_, kRootInode, name("m"), S_IFREG | 0600, 0, 0, {});
  ASSERT_TRUE(node) << errno_name(node.error().value);
  EXPECT_EQ(node->attr.st_ino, host_lstat(path("m")).st_ino);
  auto unnamed = fs_->tmpfile(ctx_, kRootInode, 0600, O_RDWR, 0, {});
  ASSERT_TRUE(unnamed) << errno_name(unnamed.error().value);
  // Handle inodes, usable as any: a getattr opens them from their handles.
  for (InodeId id : {made->first.inode, node->inode, unnamed->first.inode}) {
    auto attr = fs_->getattr(ctx_, id, std::nullopt);
    ASSERT_TRUE(attr) << errno_name(attr.error().value);
  }
  EXPECT_EQ(fs_->getattr(ctx_, made->first.inode, std::nullopt)->attr.st_ino,
            host_lstat(path("c")).st_ino);
  // Known by their handles: a lookup of the name gives the same node id.
  auto again = lookup(kRootInode, "c");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->inode, made->first.inode);
  fs_.reset();
  std::filesystem::remove_all(no_proc);
}

TEST_F(FileHandleTest, MandatoryRefusesASharedDirWithoutHandlesAndPreferFallsBack) {
  // procfs has no file handles.
  auto refused = PassthroughFs::create(
      PassthroughConfig{.shared_dir = "/proc", .inode_file_handles = InodeFileHandles::kMandatory});
  ASSERT_FALSE(refused);
  EXPECT_TRUE(handles_unsupported(refused.error()));

  fs_ = make_fs(InodeFileHandles::kPrefer, "/proc");
  ASSERT_NE(fs_, nullptr);
  const int before = count_open_fds();
  auto sys = lookup(kRootInode, "sys");
  ASSERT_TRUE(sys) << "prefer falls back to an O_PATH fd";
  EXPECT_EQ(count_open_fds(), before + 1) << "the inode's own fd (its mount is the root's)";
  auto kernel = lookup(sys->inode, "kernel");
  EXPECT_TRUE(kernel);
}

// Without CAP_DAC_READ_SEARCH (an unprivileged daemon, or one in a user
// namespace) open_by_handle_at answers EPERM: prefer turns handles off at
// start-up, as the Rust virtiofsd's does, and serves with O_PATH fds;
// mandatory refuses to start. Run in a child that drops the capability.
TEST_F(FileHandleTest, PreferWithoutDacReadSearchServesWithFdsAndMandatoryRefuses) {
  touch(path("f"), "abc");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) _exit(10);
    data[0].effective &= ~(1u << CAP_DAC_READ_SEARCH);
    data[0].permitted &= ~(1u << CAP_DAC_READ_SEARCH);
    if (::syscall(SYS_capset, &header, data) != 0) _exit(11);
    auto refused = PassthroughFs::create(
        PassthroughConfig{.shared_dir = root_, .inode_file_handles = InodeFileHandles::kMandatory});
    if (refused || refused.error().value != EPERM) _exit(12);
    auto fs = make_fs(InodeFileHandles::kPrefer);
    if (!fs) _exit(13);
    fs_ = std::move(fs);
    const int before = count_open_fds();
    auto f = lookup(kRootInode, "f");
    if (!f) _exit(14);
    // An O_PATH fd per inode: with handles the lookup would hold none.
    if (count_open_fds() != before + 1) _exit(15);
    if (f->attr.st_ino != host_lstat(path("f")).st_ino) _exit(16);
    fs_.reset();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10-11: capget/capset; 12: mandatory did not refuse with "
                                       "EPERM; 13: prefer did not start; 14: lookup; 15: the "
                                       "inode holds no fd (handles still on?); 16: wrong inode";
}

// --- Submounts ------------------------------------------------------------------

TEST_F(FileHandleTest, SubmountsGetTheirFlagTheirDeviceAndTheirOwnFallback) {
  ASSERT_EQ(::mkdir(path("tmp").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(path("proc").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(path("plain").c_str(), 0755), 0);
  if (!enter_private_mount_namespace() || !mount_here("tmpfs", "tmp") ||
      !mount_here("proc", "proc")) {
    GTEST_SKIP() << "cannot mount here: " << errno_name(errno);
  }
  touch(path("tmp/inner"), "abc");
  // The fs opens its root after the mounts, inside the new namespace.
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto tmp = lookup(kRootInode, "tmp");
  auto plain = lookup(kRootInode, "plain");
  ASSERT_TRUE(tmp && plain);
  EXPECT_EQ(tmp->attr_flags & FUSE_ATTR_SUBMOUNT, FUSE_ATTR_SUBMOUNT);
  EXPECT_EQ(plain->attr_flags & FUSE_ATTR_SUBMOUNT, 0u);
  // The device we answer is the submount's own, distinct from the share's.
  EXPECT_EQ(tmp->attr.st_dev, host_lstat(path("tmp")).st_dev);
  EXPECT_NE(tmp->attr.st_dev, host_lstat(root_).st_dev);
  EXPECT_EQ(plain->attr.st_dev, host_lstat(root_).st_dev);

  // tmpfs has handles: lookups under it go through its own mount fd.
  auto inner = lookup(tmp->inode, "inner");
  ASSERT_TRUE(inner);
  EXPECT_EQ(inner->attr.st_ino, host_lstat(path("tmp/inner")).st_ino);
  EXPECT_EQ(inner->attr.st_dev, host_lstat(path("tmp/inner")).st_dev);
  // procfs has none: prefer falls back for that filesystem only.
  auto proc = lookup(kRootInode, "proc");
  ASSERT_TRUE(proc);
  EXPECT_EQ(proc->attr_flags & FUSE_ATTR_SUBMOUNT, FUSE_ATTR_SUBMOUNT);
  EXPECT_TRUE(lookup(proc->inode, "self"));

  // Mandatory refuses the procfs submount, serves the rest.
  fs_ = make_fs(InodeFileHandles::kMandatory);
  ASSERT_NE(fs_, nullptr);
  auto refused = lookup(kRootInode, "proc");
  ASSERT_FALSE(refused);
  EXPECT_TRUE(handles_unsupported(refused.error()));
  auto tmp_again = lookup(kRootInode, "tmp");
  ASSERT_TRUE(tmp_again);
  EXPECT_TRUE(lookup(tmp_again->inode, "inner"));

  // Once the guest forgot every inode on a submount, we hold nothing on it:
  // the host can unmount it.
  fs_->destroy();
  EXPECT_EQ(::umount(path("tmp").c_str()), 0) << errno_name(errno);
  mounts_.erase(mounts_.begin());
}

// SYNCFS of the root, when the guest sees one filesystem (no submounts
// announced), reopens the root of each mount it reached: with handles, the
// tmpfs's root is such an inode, and a bind-mounted file is not opened.
TEST_F(FileHandleTest, SyncfsOfTheRootReachesTheMountsTheGuestReached) {
  ASSERT_EQ(::mkdir(path("tmp").c_str(), 0755), 0);
  touch(path("file"));
  touch(path("bound"));
  if (!enter_private_mount_namespace() || !mount_here("tmpfs", "tmp") ||
      ::mount(path("file").c_str(), path("bound").c_str(), nullptr, MS_BIND, nullptr) != 0) {
    GTEST_SKIP() << "cannot mount here: " << errno_name(errno);
  }
  mounts_.push_back(path("bound"));
  fs_ = make_fs(InodeFileHandles::kPrefer);
  ASSERT_NE(fs_, nullptr);
  auto tmp = lookup(kRootInode, "tmp");
  auto bound = lookup(kRootInode, "bound");
  ASSERT_TRUE(tmp && bound);
  auto synced = fs_->syncfs(ctx_, kRootInode);
  EXPECT_TRUE(synced) << errno_name(synced.error().value);
  EXPECT_TRUE(fs_->syncfs(ctx_, tmp->inode));  // the tmpfs's own, through its handle inode
  EXPECT_TRUE(fs_->syncfs(ctx_, bound->inode));
}

}  // namespace
}  // namespace vfsd::passthrough
