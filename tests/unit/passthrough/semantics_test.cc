// Issue-3 behaviours of PassthroughFs, each checked on the host: INIT flags,
// open flags (writeback, O_APPEND, O_DIRECT, O_NOATIME, read-only atime),
// killpriv v2, setgid directories, supplementary groups, TMPFILE,
// COPY_FILE_RANGE, FALLOCATE modes, --ascii-casefold and SYNCFS of
// submounts. Runs as root.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fuse/abi_ext.h"
#include "passthrough/casefold.h"
#include "passthrough/credentials.h"
#include "passthrough/passthrough_fs.h"
#include "support/host_files.h"

namespace vfsd::passthrough {
namespace {

using test::read_host;
using test::write_host;

using fuse::InodeId;
using fuse::kRootInode;

struct stat host_stat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

// The open flags of the daemon's I/O fd on `path` (O_PATH fds skipped), read
// from /proc/self/fdinfo: what the host kernel really got.
std::optional<int> io_fd_flags(const std::string& path) {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (ec || target != path) continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    std::string key;
    while (info >> key) {
      if (key != "flags:") continue;
      std::string octal;
      info >> octal;
      int flags = static_cast<int>(std::stol(octal, nullptr, 8));
      if (!(flags & O_PATH)) return flags;
      break;
    }
  }
  return std::nullopt;
}

class SemanticsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-sem-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    config_.shared_dir = root_;
  }
  void TearDown() override {
    fs_.reset();
    std::filesystem::remove_all(root_);
    ::umask(old_umask_);
  }
  fuse::InitReply start(uint64_t offered = 0) {
    auto fs = PassthroughFs::create(config_);
    EXPECT_TRUE(fs);
    fs_ = std::move(*fs);
    auto reply = fs_->init(fuse::InitRequest{offered});
    EXPECT_TRUE(reply);
    return reply ? *reply : fuse::InitReply{};
  }
  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  static fuse::Name name(std::string_view s) { return *fuse::Name::from(s); }
  InodeId must_lookup(InodeId parent, std::string_view n) {
    auto e = fs_->lookup(root_ctx_, parent, name(n));
    EXPECT_TRUE(e) << n << ": " << (e ? "" : errno_name(e.error().value));
    return e ? e->inode : InodeId{0};
  }
  fuse::HandleId must_open(InodeId inode, uint32_t flags, const fuse::Context& ctx = {},
                           bool kill_suidgid = false) {
    auto o = fs_->open(ctx, inode, flags, kill_suidgid);
    EXPECT_TRUE(o) << (o ? "" : errno_name(o.error().value));
    return o ? o->handle : fuse::HandleId{0};
  }
  Result<size_t> write(const fuse::Context& ctx, InodeId ino, fuse::HandleId fh, std::string data,
                       uint64_t offset, uint32_t write_flags = 0,
                       std::optional<uint32_t> file_flags = std::nullopt) {
    IovecReader in(IovecList{{data.data(), data.size()}});
    return fs_->write(ctx, ino, fh, in, static_cast<uint32_t>(data.size()), offset, write_flags,
                      file_flags);
  }
  Result<std::string> read(InodeId ino, fuse::HandleId fh, size_t size, uint64_t offset) {
    std::string buf(size, '\0');
    IovecWriter out(IovecList{{buf.data(), buf.size()}});
    auto n = fs_->read(root_ctx_, ino, fh, out, static_cast<uint32_t>(size), offset);
    if (!n) return tl::unexpected(n.error());
    buf.resize(*n);
    return buf;
  }

  mode_t old_umask_ = 0;
  std::string root_;
  PassthroughConfig config_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::Context root_ctx_{};
};

// --- INIT --------------------------------------------------------------------

TEST_F(SemanticsTest, InitAsksForWhatTheOptionsEnable) {
  const uint64_t all = FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2 | FUSE_DIRECT_IO_ALLOW_MMAP |
                       FUSE_CREATE_SUPP_GROUP | FUSE_SUBMOUNTS | FUSE_EXPORT_SUPPORT;
  auto plain = start(all);
  EXPECT_EQ(plain.wanted_flags &
                (FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2 | FUSE_DIRECT_IO_ALLOW_MMAP),
            0u);
  EXPECT_TRUE(plain.wanted_flags & FUSE_CREATE_SUPP_GROUP);
  EXPECT_TRUE(plain.wanted_flags & FUSE_EXPORT_SUPPORT);
  EXPECT_TRUE(plain.wanted_flags & FUSE_HAS_IOCTL_DIR);

  config_.writeback = true;
  config_.killpriv_v2 = true;
  config_.allow_mmap = true;
  auto on = start(all);
  EXPECT_TRUE(on.wanted_flags & FUSE_WRITEBACK_CACHE);
  EXPECT_TRUE(on.wanted_flags & FUSE_HANDLE_KILLPRIV_V2);
  EXPECT_TRUE(on.wanted_flags & FUSE_DIRECT_IO_ALLOW_MMAP);
  // A guest that does not offer them gets neither.
  auto old_guest = start(FUSE_SUBMOUNTS);
  EXPECT_FALSE(old_guest.wanted_flags & FUSE_WRITEBACK_CACHE);
  EXPECT_FALSE(old_guest.wanted_flags & FUSE_HANDLE_KILLPRIV_V2);
  // Read-only never caches writes.
  config_.readonly = true;
  auto ro = start(all);
  EXPECT_FALSE(ro.wanted_flags & FUSE_WRITEBACK_CACHE);
}

// --- open flags ----------------------------------------------------------------

TEST_F(SemanticsTest, WritebackOpensWriteOnlyFilesForReading) {
  write_host(path("f"), "data");
  start(0);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId wo = must_open(f, O_WRONLY);
  EXPECT_EQ(read(f, wo, 4, 0).error(), Errno{EBADF});
  EXPECT_EQ(*io_fd_flags(path("f")) & O_ACCMODE, O_WRONLY);
  ASSERT_TRUE(fs_->release(root_ctx_, f, wo, 0));

  config_.writeback = true;
  start(FUSE_WRITEBACK_CACHE);
  f = must_lookup(kRootInode, "f");
  wo = must_open(f, O_WRONLY);
  EXPECT_EQ(*io_fd_flags(path("f")) & O_ACCMODE, O_RDWR);
  EXPECT_EQ(read(f, wo, 4, 0).value_or("<error>"), "data");
}

TEST_F(SemanticsTest, AppendIsHandledPerWriteNotOnTheHostFd) {
  write_host(path("log"), "abc");
  start(0);
  InodeId f = must_lookup(kRootInode, "log");
  fuse::HandleId h = must_open(f, O_WRONLY | O_APPEND);
  EXPECT_FALSE(*io_fd_flags(path("log")) & O_APPEND);
  // Someone else appends on the host; the guest's offset is stale.
  std::ofstream(path("log"), std::ios::app) << "XYZ";
  ASSERT_TRUE(write(root_ctx_, f, h, "123", 3));
  EXPECT_EQ(read_host(path("log")), "abcXYZ123");
  // The guest's current file flags win (fcntl cleared O_APPEND).
  ASSERT_TRUE(write(root_ctx_, f, h, "_", 0, 0, O_WRONLY));
  EXPECT_EQ(read_host(path("log")), "_bcXYZ123");
  const uint32_t appending = O_WRONLY | O_APPEND;
  ASSERT_TRUE(write(root_ctx_, f, h, "!", 0, 0, appending));
  EXPECT_EQ(read_host(path("log")), "_bcXYZ123!");
  // Writes out of the guest's page cache carry their own offsets.
  ASSERT_TRUE(write(root_ctx_, f, h, "#", 1, FUSE_WRITE_CACHE, appending));
  EXPECT_EQ(read_host(path("log")), "_#cXYZ123!");
}

TEST_F(SemanticsTest, DirectIoAndNoatimeFollowTheOptions) {
  write_host(path("f"), std::string(4096, 'x'));
  start(0);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDONLY | O_DIRECT | O_NOATIME);
  int flags = *io_fd_flags(path("f"));
  EXPECT_FALSE(flags & O_DIRECT);
  EXPECT_FALSE(flags & O_NOATIME);
  ASSERT_TRUE(fs_->release(root_ctx_, f, h, 0));

  config_.allow_direct_io = true;
  config_.preserve_noatime = true;
  start(0);
  f = must_lookup(kRootInode, "f");
  must_open(f, O_RDONLY | O_DIRECT | O_NOATIME);
  flags = *io_fd_flags(path("f"));
  EXPECT_TRUE(flags & O_DIRECT);
  EXPECT_TRUE(flags & O_NOATIME);
}

TEST_F(SemanticsTest, ReadOnlyModeLeavesAccessTimesAlone) {
  write_host(path("f"), "data");
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  // Well in the past, so that relatime would update it on a read.
  const timespec old_times[2] = {{946684800, 0}, {UTIME_OMIT, UTIME_OMIT}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path("f").c_str(), old_times, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, path("d").c_str(), old_times, 0), 0);

  config_.readonly = true;
  start(0);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDONLY);
  EXPECT_TRUE(*io_fd_flags(path("f")) & O_NOATIME);
  EXPECT_EQ(read(f, h, 4, 0).value_or("<error>"), "data");
  EXPECT_EQ(host_stat(path("f")).st_atim.tv_sec, 946684800);
  InodeId d = must_lookup(kRootInode, "d");
  auto dh = fs_->opendir(root_ctx_, d, 0);
  ASSERT_TRUE(dh);
  struct Sink : fuse::DirSink {
    bool fits(size_t) const override { return true; }
    void add(const fuse::DirEntry&, const fuse::Entry*) override {}
  } sink;
  ASSERT_TRUE(fs_->readdir(root_ctx_, d, dh->handle, 0, false, sink));
  EXPECT_EQ(host_stat(path("d")).st_atim.tv_sec, 946684800);

  // The same read without read-only mode does update it (the test can fail).
  config_.readonly = false;
  start(0);
  f = must_lookup(kRootInode, "f");
  h = must_open(f, O_RDONLY);
  EXPECT_EQ(read(f, h, 4, 0).value_or("<error>"), "data");
  EXPECT_NE(host_stat(path("f")).st_atim.tv_sec, 946684800);
}

// --- killpriv v2 ------------------------------------------------------------------

class KillprivTest : public SemanticsTest {
 protected:
  void make(const std::string& rel, mode_t mode) {
    write_host(path(rel), "0123456789");
    ASSERT_EQ(::chown(path(rel).c_str(), 1000, 1000), 0);
    ASSERT_EQ(::chmod(path(rel).c_str(), mode), 0);
  }
  mode_t mode_of(const std::string& rel) { return host_stat(path(rel)).st_mode & 07777; }
  fuse::Context writer_{2000, 2000, 1};
};

TEST_F(KillprivTest, MarkedWritesTruncatesAndOpensClearSetuidSetgid) {
  config_.killpriv_v2 = true;
  start(FUSE_HANDLE_KILLPRIV_V2);
  make("w", 06775);
  make("t", 04755);
  make("o", 02775);
  InodeId w = must_lookup(kRootInode, "w");
  fuse::HandleId wh = must_open(w, O_RDWR);
  // Unmarked: the daemon (root, CAP_FSETID) keeps the bits, as a root
  // writer in the guest would.
  ASSERT_TRUE(write(writer_, w, wh, "a", 0));
  EXPECT_EQ(mode_of("w"), 06775u);
  ASSERT_TRUE(write(writer_, w, wh, "a", 0, FUSE_WRITE_KILL_SUIDGID));
  EXPECT_EQ(mode_of("w"), 0775u);
  EXPECT_EQ(read_host(path("w")), "a123456789");

  InodeId t = must_lookup(kRootInode, "t");
  fuse::SetattrRequest truncate;
  truncate.valid = FATTR_SIZE;
  truncate.size = 4;
  ASSERT_TRUE(fs_->setattr(writer_, t, truncate));
  EXPECT_EQ(mode_of("t"), 04755u);
  truncate.valid |= FATTR_KILL_SUIDGID;
  truncate.size = 2;
  ASSERT_TRUE(fs_->setattr(writer_, t, truncate));
  EXPECT_EQ(mode_of("t"), 0755u);
  EXPECT_EQ(std::filesystem::file_size(path("t")), 2u);

  InodeId o = must_lookup(kRootInode, "o");
  fuse::Context opener = writer_;
  must_open(o, O_RDWR | O_TRUNC, opener);
  EXPECT_EQ(mode_of("o"), 02775u);
  must_open(o, O_RDWR | O_TRUNC, opener, /*kill_suidgid=*/true);
  EXPECT_EQ(mode_of("o"), 0775u);
  // The worker has CAP_FSETID back afterwards.
  EXPECT_TRUE(thread_has_capability(CAP_FSETID));
}

// Without killpriv v2 the guest still marks direct-I/O writes by callers
// without CAP_FSETID (--cache=never), and a truncating OPEN carries no
// mark at all: both clear the bits as on Linux, for anyone but root.
TEST_F(KillprivTest, WithoutTheOptionMarkedWritesAndUserTruncationsStillClear) {
  start(FUSE_HANDLE_KILLPRIV_V2);  // offered by the guest but not enabled
  make("w", 04755);
  InodeId w = must_lookup(kRootInode, "w");
  fuse::HandleId wh = must_open(w, O_RDWR);
  ASSERT_TRUE(write(writer_, w, wh, "a", 0));
  EXPECT_EQ(mode_of("w"), 04755u);
  ASSERT_TRUE(write(writer_, w, wh, "a", 0, FUSE_WRITE_KILL_SUIDGID));
  EXPECT_EQ(mode_of("w"), 0755u);
  make("o", 02775);
  InodeId o = must_lookup(kRootInode, "o");
  must_open(o, O_RDWR | O_TRUNC, root_ctx_);
  EXPECT_EQ(mode_of("o"), 02775u);
  must_open(o, O_RDWR | O_TRUNC, writer_);
  EXPECT_EQ(mode_of("o"), 0775u);
}

TEST(CapabilityDropTest, DropsOnlyThisThreadsCapabilityAndRestoresIt) {
  ASSERT_TRUE(thread_has_capability(CAP_FSETID));
  // The other thread exists before the drop (a new thread would inherit the
  // creating thread's credentials).
  std::atomic<int> phase = 0;
  std::atomic<bool> other_had = false;
  std::thread other([&] {
    while (phase.load() != 1) std::this_thread::yield();
    other_had = thread_has_capability(CAP_FSETID);
    phase = 2;
  });
  {
    auto dropped = ScopedCapabilityDrop::drop(CAP_FSETID);
    ASSERT_TRUE(dropped);
    EXPECT_FALSE(thread_has_capability(CAP_FSETID));
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
  }
  other.join();
  EXPECT_TRUE(other_had);
  EXPECT_TRUE(thread_has_capability(CAP_FSETID));
}

// --- credentials ---------------------------------------------------------------------

TEST_F(SemanticsTest, SupplementaryGroupsOpenGroupDirectoriesForThisRequestOnly) {
  ASSERT_EQ(::mkdir(path("team").c_str(), 0770), 0);
  ASSERT_EQ(::chown(path("team").c_str(), 0, 3000), 0);
  start(FUSE_CREATE_SUPP_GROUP);
  InodeId team = must_lookup(kRootInode, "team");
  std::vector<gid_t> before(64);
  before.resize(static_cast<size_t>(::syscall(SYS_getgroups, before.size(), before.data())));

  fuse::Context member{1000, 1000, 1};
  EXPECT_EQ(fs_->mkdir(member, team, name("a"), 0755, 0, {}).error(), Errno{EACCES});
  fuse::Extensions in_team;
  in_team.supplementary_groups = {3000};
  std::atomic<bool> stop = false, changed = false;
  std::thread watcher([&] {
    while (!stop) {
      if (::syscall(SYS_getgroups, 0, nullptr) != static_cast<long>(before.size())) changed = true;
    }
  });
  auto dir = fs_->mkdir(member, team, name("a"), 0755, 0, in_team);
  auto file = fs_->create(member, team, name("f"), 0644, O_RDWR, 0, false, in_team);
  stop = true;
  watcher.join();
  ASSERT_TRUE(dir) << errno_name(dir.error().value);
  ASSERT_TRUE(file) << errno_name(file.error().value);
  EXPECT_FALSE(changed) << "another thread's groups changed";
  EXPECT_EQ(host_stat(path("team/a")).st_uid, 1000u);
  EXPECT_EQ(host_stat(path("team/f")).st_gid, 1000u);
  std::vector<gid_t> after(64);
  after.resize(static_cast<size_t>(::syscall(SYS_getgroups, after.size(), after.data())));
  EXPECT_EQ(after, before);
}

TEST_F(SemanticsTest, SetgidDirectoriesPassTheirGroupDown) {
  ASSERT_EQ(::mkdir(path("sg").c_str(), 0777), 0);
  ASSERT_EQ(::chown(path("sg").c_str(), 0, 3000), 0);
  ASSERT_EQ(::chmod(path("sg").c_str(), 02777), 0);
  start(0);
  InodeId sg = must_lookup(kRootInode, "sg");
  fuse::Context user{1000, 1000, 1};
  ASSERT_TRUE(fs_->create(user, sg, name("f"), 0644, O_RDWR, 0, false, {}));
  ASSERT_TRUE(fs_->mknod(user, sg, name("n"), S_IFREG | 0644, 0, 0, {}));
  ASSERT_TRUE(fs_->mknod(user, sg, name("p"), S_IFIFO | 0644, 0, 0, {}));
  ASSERT_TRUE(fs_->mkdir(user, sg, name("d"), 0755, 0, {}));
  for (const char* n : {"f", "n", "p", "d"}) {
    struct stat st = host_stat(path(std::string("sg/") + n));
    EXPECT_EQ(st.st_uid, 1000u) << n;
    EXPECT_EQ(st.st_gid, 3000u) << n;
  }
  EXPECT_TRUE(host_stat(path("sg/d")).st_mode & S_ISGID);
  // Nested: the new subdirectory passes the group on in turn.
  InodeId d = must_lookup(sg, "d");
  ASSERT_TRUE(fs_->mkdir(user, d, name("deeper"), 0755, 0, {}));
  EXPECT_EQ(host_stat(path("sg/d/deeper")).st_gid, 3000u);
  EXPECT_TRUE(host_stat(path("sg/d/deeper")).st_mode & S_ISGID);
}

// --- TMPFILE, COPY_FILE_RANGE, FALLOCATE --------------------------------------------

TEST_F(SemanticsTest, TmpfileIsAnUnnamedRegisteredOpenFile) {
  ASSERT_EQ(::mkdir(path("d").c_str(), 0777), 0);
  // A guest that sends its groups: the host checks permissions itself.
  start(FUSE_CREATE_SUPP_GROUP);
  InodeId d = must_lookup(kRootInode, "d");
  fuse::Context user{1000, 1000, 1};
  auto t = fs_->tmpfile(user, d, 0600, O_RDWR, 0, {});
  ASSERT_TRUE(t) << errno_name(t.error().value);
  EXPECT_TRUE(std::filesystem::is_empty(path("d")));
  EXPECT_EQ(t->first.attr.st_uid, 1000u);
  EXPECT_EQ(t->first.attr.st_mode, S_IFREG | 0600);
  EXPECT_EQ(fs_->lookup_count(t->first.inode), 1u);
  ASSERT_TRUE(write(user, t->first.inode, t->second.handle, "hidden", 0));
  EXPECT_EQ(read(t->first.inode, t->second.handle, 6, 0).value_or("<error>"), "hidden");
  // Linking it gives it a name with that content (the guest's linkat).
  ASSERT_TRUE(fs_->link(root_ctx_, t->first.inode, d, name("now")));
  EXPECT_EQ(read_host(path("d/now")), "hidden");
  EXPECT_EQ(fs_->tmpfile(user, d, 0600, O_RDONLY, 0, {}).error(), Errno{EINVAL});
  ASSERT_EQ(::chmod(path("d").c_str(), 0755), 0);
  EXPECT_EQ(fs_->tmpfile(user, d, 0600, O_RDWR, 0, {}).error(), Errno{EACCES});
}

TEST_F(SemanticsTest, GuestWithoutSupplementaryGroupsIsTrustedForGroupPermission) {
  // A Linux 6.1 guest cannot send the caller's supplementary groups. Its
  // kernel allowed a member of the directory's group to create there; the
  // host must not refuse what it cannot re-check (the Rust virtiofsd raises
  // CAP_DAC_OVERRIDE the same way).
  ASSERT_EQ(::mkdir(path("g").c_str(), 0770), 0);
  ASSERT_EQ(::chown(path("g").c_str(), 0, 2000), 0);
  start(0);
  InodeId g = must_lookup(kRootInode, "g");
  fuse::Context member{1000, 1000, 1};
  auto made = fs_->mkdir(member, g, name("sub"), 0755, 0, {});
  ASSERT_TRUE(made) << errno_name(made.error().value);
  struct stat st {};
  ASSERT_EQ(::stat(path("g/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u) << "still created as the guest's uid";
  EXPECT_EQ(::geteuid(), 0u);

  // Once the guest sends groups, the host's own check applies again.
  fs_->destroy();
  start(FUSE_CREATE_SUPP_GROUP);
  g = must_lookup(kRootInode, "g");
  EXPECT_EQ(fs_->mkdir(member, g, name("other"), 0755, 0, {}).error(), Errno{EACCES});
}

TEST_F(SemanticsTest, CopyFileRangeCopiesUnderTheGuestsCredentials) {
  write_host(path("src"), "0123456789");
  write_host(path("dst"), "abcdefghij");
  ASSERT_EQ(::chown(path("dst").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod(path("dst").c_str(), 04755), 0);
  start(0);
  InodeId src = must_lookup(kRootInode, "src");
  InodeId dst = must_lookup(kRootInode, "dst");
  fuse::HandleId sh = must_open(src, O_RDONLY);
  fuse::HandleId dh = must_open(dst, O_RDWR);
  auto n = fs_->copy_file_range(root_ctx_, src, sh, 2, dst, dh, 4, 3, 0);
  ASSERT_TRUE(n) << errno_name(n.error().value);
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(read_host(path("dst")), "abcd234hij");
  EXPECT_EQ(host_stat(path("dst")).st_mode & 07777, 04755u);  // root keeps setuid
  // As the owner (no CAP_FSETID), the copy clears it as a write would.
  fuse::Context owner{1000, 1000, 1};
  ASSERT_TRUE(fs_->copy_file_range(owner, src, sh, 0, dst, dh, 0, 1, 0));
  EXPECT_EQ(read_host(path("dst")), "0bcd234hij");
  EXPECT_EQ(host_stat(path("dst")).st_mode & 07777, 0755u);
  EXPECT_EQ(fs_->copy_file_range(root_ctx_, src, sh, 0, dst, dh, 0, 1, 1).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->copy_file_range(root_ctx_, src, dh, 0, dst, dh, 0, 1, 0).error(), Errno{EBADF});
}

TEST_F(SemanticsTest, FallocateModesReachTheHost) {
  constexpr size_t kBlock = 4096;
  std::string data;
  for (int i = 0; i < 4; ++i) data += std::string(kBlock, static_cast<char>('a' + i));
  write_host(path("f"), data);
  start(0);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDWR);
  auto size = [&] { return std::filesystem::file_size(path("f")); };
  auto blocks = [&] { return host_stat(path("f")).st_blocks; };

  // KEEP_SIZE: space past the end without a new size.
  auto before = blocks();
  ASSERT_TRUE(fs_->fallocate(root_ctx_, f, h, FALLOC_FL_KEEP_SIZE, 4 * kBlock, 4 * kBlock));
  EXPECT_EQ(size(), 4 * kBlock);
  EXPECT_GT(blocks(), before);
  // Plain: grows the file.
  ASSERT_TRUE(fs_->fallocate(root_ctx_, f, h, 0, 0, 5 * kBlock));
  EXPECT_EQ(size(), 5 * kBlock);
  ASSERT_EQ(::truncate(path("f").c_str(), 4 * kBlock), 0);
  // PUNCH_HOLE: block 1 reads as zeros and holds no space.
  before = blocks();
  ASSERT_TRUE(
      fs_->fallocate(root_ctx_, f, h, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kBlock, kBlock));
  EXPECT_LT(blocks(), before);
  std::string now = read_host(path("f"));
  EXPECT_EQ(now.substr(kBlock, kBlock), std::string(kBlock, '\0'));
  EXPECT_EQ(now.substr(2 * kBlock, 1), "c");
  // ZERO_RANGE: block 2 becomes zeros.
  ASSERT_TRUE(fs_->fallocate(root_ctx_, f, h, FALLOC_FL_ZERO_RANGE, 2 * kBlock, kBlock));
  EXPECT_EQ(read_host(path("f")).substr(2 * kBlock, kBlock), std::string(kBlock, '\0'));
  // COLLAPSE_RANGE and INSERT_RANGE: skipped only if the host filesystem
  // itself has them not (a probe there); then the daemon must do them.
  if (!test::host_fallocate_supported(root_, FALLOC_FL_COLLAPSE_RANGE) ||
      !test::host_fallocate_supported(root_, FALLOC_FL_INSERT_RANGE)) {
    GTEST_SKIP() << "the host filesystem of " << root_ << " has no COLLAPSE/INSERT_RANGE";
  }
  // COLLAPSE_RANGE: block 0 goes, the rest moves down.
  auto collapsed = fs_->fallocate(root_ctx_, f, h, FALLOC_FL_COLLAPSE_RANGE, 0, kBlock);
  ASSERT_TRUE(collapsed) << errno_name(collapsed.error().value);
  // INSERT_RANGE: a hole is pushed in at the start.
  auto inserted = fs_->fallocate(root_ctx_, f, h, FALLOC_FL_INSERT_RANGE, 0, kBlock);
  ASSERT_TRUE(inserted) << errno_name(inserted.error().value);
  now = read_host(path("f"));
  EXPECT_EQ(now.size(), 4 * kBlock);
  EXPECT_EQ(now.substr(0, kBlock), std::string(kBlock, '\0'));
  EXPECT_EQ(now.substr(3 * kBlock, 1), "d");
  // The host's own refusals come back as they are.
  EXPECT_EQ(fs_->fallocate(root_ctx_, f, h, FALLOC_FL_COLLAPSE_RANGE, 1, 7).error(), Errno{EINVAL});
}

// --- --ascii-casefold ---------------------------------------------------------------

TEST(CasefoldTest, AsciiOnlyComparison) {
  EXPECT_TRUE(ascii_equal_ignoring_case("ReadMe.TXT", "readme.txt"));
  EXPECT_FALSE(ascii_equal_ignoring_case("readme.txt", "readme.txt~"));
  EXPECT_FALSE(ascii_equal_ignoring_case("\xc3\x89t\xc3\xa9", "\xc3\xa9t\xc3\xa9"));  // É / é
  EXPECT_TRUE(ascii_equal_ignoring_case("[@]", "[@]"));
  EXPECT_FALSE(ascii_equal_ignoring_case("@", "`"));  // neighbours of A-Z / a-z
}

TEST_F(SemanticsTest, CasefoldLookupFindsTheHostNameIgnoringAsciiCase) {
  write_host(path("ReadMe.TXT"), "x");
  write_host(path("\xc3\x89t\xc3\xa9"), "y");
  ASSERT_EQ(::mkdir(path(".vfsd-tmp-ABC").c_str(), 0755), 0);
  start(0);
  EXPECT_EQ(fs_->lookup(root_ctx_, kRootInode, name("readme.txt")).error(), Errno{ENOENT});

  config_.ascii_casefold = true;
  start(0);
  InodeId exact = must_lookup(kRootInode, "ReadMe.TXT");
  auto folded = fs_->lookup(root_ctx_, kRootInode, name("README.txt"));
  ASSERT_TRUE(folded);
  EXPECT_EQ(folded->inode, exact);
  EXPECT_EQ(fs_->lookup_count(exact), 2u);
  EXPECT_EQ(fs_->lookup(root_ctx_, kRootInode, name("\xc3\xa9t\xc3\xa9")).error(), Errno{ENOENT});
  EXPECT_EQ(fs_->lookup(root_ctx_, kRootInode, name(".vfsd-tmp-abc")).error(), Errno{ENOENT});
  EXPECT_EQ(fs_->lookup(root_ctx_, kRootInode, name("nothing")).error(), Errno{ENOENT});
}

TEST_F(SemanticsTest, CasefoldScanIsBounded) {
  for (int i = 0; i < 50; ++i) write_host(path("f" + std::to_string(i)), "");
  write_host(path("ZZZ"), "");
  UniqueFd dir(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  EXPECT_EQ(find_ascii_casefold_match(dir.get(), "zzz").value_or("<none>"), "ZZZ");
  // 53 entries with "." and "..": a bound of 10 stops before most of them.
  int found = 0;
  for (int i = 0; i < 50; ++i) {
    if (find_ascii_casefold_match(dir.get(), "F" + std::to_string(i), nullptr, 10)) ++found;
  }
  EXPECT_LE(found, 10);
  EXPECT_GT(found, 0);
}

// --- SYNCFS ----------------------------------------------------------------------------

// Counts the write I/Os of a block device (field 5 of /sys/block/X/stat).
uint64_t device_writes(const std::string& dev) {
  std::ifstream in("/sys/block/" + dev + "/stat");
  uint64_t v[5] = {};
  for (auto& x : v) in >> x;
  return v[4];
}

TEST_F(SemanticsTest, SyncfsOfTheRootReachesSubmountsTheGuestDoesNotSee) {
  ASSERT_EQ(::mkdir(path("mnt").c_str(), 0755), 0);
  const std::string image = root_ + ".img";
  std::string loop;
  {
    std::string cmd = "truncate -s 16M " + image + " && mkfs.ext4 -q -F " + image +
                      " >/dev/null 2>&1 && losetup -f --show " + image;
    FILE* p = ::popen(cmd.c_str(), "r");
    char buf[64] = {};
    if (p && std::fgets(buf, sizeof(buf), p)) loop = buf;
    if (p) ::pclose(p);
  }
  while (!loop.empty() && loop.back() == '\n') loop.pop_back();
  if (loop.empty() || ::unshare(CLONE_NEWNS) != 0 ||
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount(loop.c_str(), path("mnt").c_str(), "ext4", 0, nullptr) != 0) {
    if (!loop.empty() && std::system(("losetup -d " + loop).c_str()) != 0) ADD_FAILURE();
    std::filesystem::remove(image);
    GTEST_SKIP() << "cannot loop-mount an ext4 image here";
  }
  const std::string dev = loop.substr(loop.rfind('/') + 1);
  start(0);  // submounts not announced: the guest sees one filesystem
  InodeId mnt = must_lookup(kRootInode, "mnt");
  ASSERT_NE(mnt, InodeId{0});
  write_host(path("mnt/dirty"), std::string(64 * 1024, 'd'));
  const uint64_t before = device_writes(dev);
  ASSERT_TRUE(fs_->syncfs(root_ctx_, kRootInode));
  EXPECT_GT(device_writes(dev), before) << "the submount's dirty data was not written";
  fs_.reset();
  EXPECT_EQ(::umount(path("mnt").c_str()), 0);
  EXPECT_EQ(std::system(("losetup -d " + loop).c_str()), 0);
  std::filesystem::remove(image);
}

}  // namespace
}  // namespace vfsd::passthrough
