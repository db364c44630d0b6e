// PassthroughFs against a fresh temporary directory. Every operation is
// checked on the host side (stat, file contents, readlink, fd counts), not
// only by its return value. Runs as root.
#include "passthrough/passthrough_fs.h"
#include "support/host_files.h"

#include "fuse/abi_ext.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace vfsd::passthrough {
namespace {

using test::count_open_fds;
using test::host_lstat;
using test::read_host;
using test::write_host;

using fuse::Entry;
using fuse::HandleId;
using fuse::InodeId;
using fuse::kRootInode;

// A reply buffer of `budget` bytes, sized like FUSE dirents (24 bytes of
// header + name, 8-aligned; readdirplus adds 128 bytes of entry).
class TestSink : public fuse::DirSink {
 public:
  TestSink(size_t budget, bool plus) : budget_(budget), plus_(plus) {}
  bool fits(size_t name_len) const override { return cost(name_len) <= budget_; }
  void add(const fuse::DirEntry& d, const Entry* e) override {
    budget_ -= cost(d.name.size());
    names.emplace_back(d.name);
    offsets.push_back(d.next_offset);
    if (e) entries.push_back(*e);
  }
  std::vector<std::string> names;
  std::vector<uint64_t> offsets;
  std::vector<Entry> entries;

 private:
  size_t cost(size_t name_len) const {
    return ((24 + name_len + 7) & ~size_t{7}) + (plus_ ? 128 : 0);
  }
  size_t budget_;
  bool plus_;
};

class PassthroughFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-pt-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fs_ = make_fs(CachePolicy::kAuto, true);
    ASSERT_NE(fs_, nullptr);
  }
  void TearDown() override {
    fs_.reset();
    std::filesystem::remove_all(root_);
    ::umask(old_umask_);
  }

  std::unique_ptr<PassthroughFs> make_fs(CachePolicy cache, bool announce) {
    PassthroughConfig config;
    config.shared_dir = root_;
    config.cache = cache;
    config.announce_submounts = announce;
    auto fs = PassthroughFs::create(config);
    if (!fs) return nullptr;
    EXPECT_TRUE(
        (*fs)->init(fuse::InitRequest{FUSE_SUBMOUNTS | FUSE_CREATE_SUPP_GROUP}).has_value());
    return std::move(*fs);
  }

  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  static fuse::Name name(std::string_view s) { return *fuse::Name::from(s); }

  Result<Entry> lookup(InodeId parent, std::string_view n) {
    return fs_->lookup(ctx_, parent, name(n));
  }
  InodeId must_lookup(InodeId parent, std::string_view n) {
    auto e = lookup(parent, n);
    EXPECT_TRUE(e.has_value()) << n << ": " << (e ? "" : errno_name(e.error().value));
    return e ? e->inode : InodeId{0};
  }
  fuse::HandleId must_open(InodeId inode, uint32_t flags) {
    auto o = fs_->open(ctx_, inode, flags, false);
    EXPECT_TRUE(o.has_value());
    return o ? o->handle : HandleId{0};
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::Context ctx_{};
};

TEST_F(PassthroughFsTest, CreateRefusesMissingOrNonDirectorySharedDir) {
  write_host(path("file"), "x");
  EXPECT_EQ(PassthroughFs::create({path("file")}).error(), Errno{ENOTDIR});
  EXPECT_EQ(PassthroughFs::create({path("missing")}).error(), Errno{ENOENT});
}

TEST_F(PassthroughFsTest, LookupCountsReferencesAndForgetClosesTheFd) {
  write_host(path("a"), "x");
  const int before = count_open_fds();
  InodeId a = must_lookup(kRootInode, "a");
  EXPECT_NE(a, kRootInode);
  EXPECT_EQ(count_open_fds(), before + 1);
  EXPECT_EQ(must_lookup(kRootInode, "a"), a);  // same host inode, same id
  EXPECT_EQ(fs_->lookup_count(a), 2u);
  EXPECT_EQ(count_open_fds(), before + 1);  // the second O_PATH fd was dropped

  fs_->forget(a, 1);
  EXPECT_EQ(fs_->lookup_count(a), 1u);
  EXPECT_EQ(count_open_fds(), before + 1);
  fs_->forget(a, 1);
  EXPECT_EQ(count_open_fds(), before);  // really closed
  EXPECT_EQ(fs_->getattr(ctx_, a, std::nullopt).error(), Errno{EBADF});

  InodeId again = must_lookup(kRootInode, "a");
  EXPECT_NE(again, a);           // ids are never reused
  fs_->forget(kRootInode, 100);  // the root is never freed
  EXPECT_TRUE(fs_->getattr(ctx_, kRootInode, std::nullopt).has_value());
}

TEST_F(PassthroughFsTest, BatchForgetFreesEveryListedInode) {
  write_host(path("a"), "");
  write_host(path("b"), "");
  const int before = count_open_fds();
  InodeId a = must_lookup(kRootInode, "a");
  InodeId b = must_lookup(kRootInode, "b");
  must_lookup(kRootInode, "b");
  std::vector<std::pair<InodeId, uint64_t>> items = {{a, 1}, {b, 2}, {InodeId{999999}, 1}};
  fs_->batch_forget(items);
  EXPECT_EQ(count_open_fds(), before);
  EXPECT_EQ(fs_->inode_count(), 1u);
}

TEST_F(PassthroughFsTest, HardLinkedNamesShareOneId) {
  write_host(path("a"), "x");
  ASSERT_EQ(::link(path("a").c_str(), path("b").c_str()), 0);
  EXPECT_EQ(must_lookup(kRootInode, "a"), must_lookup(kRootInode, "b"));
}

TEST_F(PassthroughFsTest, DotAndDotDotStayInsideTheSharedDir) {
  EXPECT_EQ(must_lookup(kRootInode, ".."), kRootInode);
  EXPECT_EQ(must_lookup(kRootInode, "."), kRootInode);
  auto up = lookup(kRootInode, "..");
  ASSERT_TRUE(up);
  EXPECT_EQ(up->attr.st_ino, host_lstat(root_).st_ino);  // not /tmp's inode
  ASSERT_EQ(::mkdir(path("sub").c_str(), 0755), 0);
  InodeId sub = must_lookup(kRootInode, "sub");
  EXPECT_EQ(must_lookup(sub, "."), sub);
  EXPECT_EQ(must_lookup(sub, ".."), kRootInode);
}

TEST_F(PassthroughFsTest, HostSymlinkPointingOutsideIsNeverFollowed) {
  ASSERT_EQ(::symlink("/", path("escape").c_str()), 0);
  auto e = lookup(kRootInode, "escape");
  ASSERT_TRUE(e);
  EXPECT_TRUE(S_ISLNK(e->attr.st_mode));  // the link itself, not "/"
  EXPECT_EQ(lookup(e->inode, "etc").error(), Errno{ENOTDIR});
  EXPECT_EQ(fs_->open(ctx_, e->inode, O_RDONLY, false).error(), Errno{ELOOP});
  EXPECT_EQ(fs_->opendir(ctx_, e->inode, 0).error(), Errno{ENOTDIR});
  EXPECT_EQ(*fs_->readlink(ctx_, e->inode), "/");

  // Setting times through the link changes the link, not "/".
  struct stat root_before = host_lstat("/");
  fuse::SetattrRequest req;
  req.valid = FATTR_MTIME;
  req.mtime = {1000, 0};
  ASSERT_TRUE(fs_->setattr(ctx_, e->inode, req));
  EXPECT_EQ(host_lstat(path("escape")).st_mtime, 1000);
  EXPECT_EQ(host_lstat("/").st_mtim.tv_sec, root_before.st_mtim.tv_sec);
}

TEST_F(PassthroughFsTest, GetattrMatchesTheHost) {
  write_host(path("f"), "hello");
  InodeId f = must_lookup(kRootInode, "f");
  auto attr = fs_->getattr(ctx_, f, std::nullopt);
  ASSERT_TRUE(attr);
  struct stat st = host_lstat(path("f"));
  EXPECT_EQ(attr->attr.st_ino, st.st_ino);
  EXPECT_EQ(attr->attr.st_size, 5);
  EXPECT_EQ(attr->attr.st_mode, st.st_mode);
  EXPECT_EQ(attr->attr.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
  EXPECT_EQ(attr->timeout, std::chrono::seconds(1));
  EXPECT_EQ(fs_->getattr(ctx_, fuse::InodeId{424242}, std::nullopt).error(), Errno{EBADF});
}

TEST_F(PassthroughFsTest, SetattrChangesEachField) {
  write_host(path("f"), "0123456789");
  ASSERT_EQ(::chmod(path("f").c_str(), 0644), 0);
  InodeId f = must_lookup(kRootInode, "f");

  fuse::SetattrRequest req;
  req.valid = FATTR_MODE;
  req.mode = S_IFREG | 0600;
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  EXPECT_EQ(host_lstat(path("f")).st_mode & 07777, 0600u);

  req = {};
  req.valid = FATTR_UID | FATTR_GID;
  req.uid = 1234;
  req.gid = 5678;
  auto r = fs_->setattr(ctx_, f, req);
  ASSERT_TRUE(r);
  EXPECT_EQ(host_lstat(path("f")).st_uid, 1234u);
  EXPECT_EQ(host_lstat(path("f")).st_gid, 5678u);
  EXPECT_EQ(r->attr.st_uid, 1234u);  // the reply carries the new attributes

  req = {};
  req.valid = FATTR_GID;  // uid untouched
  req.gid = 42;
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  EXPECT_EQ(host_lstat(path("f")).st_uid, 1234u);
  EXPECT_EQ(host_lstat(path("f")).st_gid, 42u);

  req = {};
  req.valid = FATTR_SIZE;  // without a handle
  req.size = 4;
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  EXPECT_EQ(read_host(path("f")), "0123");

  fuse::HandleId h = must_open(f, O_RDWR);
  req = {};
  req.valid = FATTR_SIZE;  // through the handle
  req.size = 2;
  req.handle = h;
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  EXPECT_EQ(read_host(path("f")), "01");
  req.handle = HandleId{h.value() + 1000};  // a handle the guest does not own
  EXPECT_EQ(fs_->setattr(ctx_, f, req).error(), Errno{EBADF});

  req = {};
  req.valid = FATTR_ATIME | FATTR_MTIME;
  req.atime = {111, 5};
  req.mtime = {222, 7};
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  struct stat st = host_lstat(path("f"));
  EXPECT_EQ(st.st_atim.tv_sec, 111);
  EXPECT_EQ(st.st_atim.tv_nsec, 5);
  EXPECT_EQ(st.st_mtim.tv_sec, 222);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);

  req = {};
  req.valid = FATTR_MTIME | FATTR_MTIME_NOW;  // atime untouched
  time_t now = ::time(nullptr);
  ASSERT_TRUE(fs_->setattr(ctx_, f, req));
  st = host_lstat(path("f"));
  EXPECT_GE(st.st_mtim.tv_sec, now - 1);
  EXPECT_EQ(st.st_atim.tv_sec, 111);
}

TEST_F(PassthroughFsTest, SymlinkCreatesTheHostLinkAndReadlinkReadsIt) {
  auto e = fs_->symlink(ctx_, kRootInode, name("l"), "some/target", {});
  ASSERT_TRUE(e);
  char buf[64] = {};
  ASSERT_EQ(::readlink(path("l").c_str(), buf, sizeof(buf)), 11);
  EXPECT_STREQ(buf, "some/target");
  EXPECT_TRUE(S_ISLNK(e->attr.st_mode));
  EXPECT_EQ(*fs_->readlink(ctx_, e->inode), "some/target");
  EXPECT_EQ(fs_->lookup_count(e->inode), 1u);
  EXPECT_EQ(fs_->readlink(ctx_, kRootInode).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->symlink(ctx_, kRootInode, name("m"), std::string_view("a\0b", 3), {}).error(),
            Errno{EINVAL});
}

TEST_F(PassthroughFsTest, MknodMakesAFifoThatOpenRefuses) {
  auto e = fs_->mknod(ctx_, kRootInode, name("fifo"), S_IFIFO | 0666, 0, 022, {});
  ASSERT_TRUE(e);
  struct stat st = host_lstat(path("fifo"));
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0644u);  // the guest's umask applied
  // Opening a FIFO would block the worker until a writer shows up.
  EXPECT_EQ(fs_->open(ctx_, e->inode, O_RDONLY, false).error(), Errno{EBADF});
}

TEST_F(PassthroughFsTest, MkdirRmdirUnlinkAndDotNames) {
  auto d = fs_->mkdir(ctx_, kRootInode, name("d"), 0777, 027, {});
  ASSERT_TRUE(d);
  struct stat st = host_lstat(path("d"));
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(d->attr.st_ino, st.st_ino);

  write_host(path("d/f"), "x");
  EXPECT_EQ(fs_->rmdir(ctx_, kRootInode, name("d")).error(), Errno{ENOTEMPTY});
  ASSERT_TRUE(fs_->unlink(ctx_, d->inode, name("f")));
  EXPECT_FALSE(std::filesystem::exists(path("d/f")));
  ASSERT_TRUE(fs_->rmdir(ctx_, kRootInode, name("d")));
  EXPECT_FALSE(std::filesystem::exists(path("d")));

  EXPECT_EQ(fs_->mkdir(ctx_, kRootInode, name("."), 0755, 0, {}).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->rmdir(ctx_, kRootInode, name("..")).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->unlink(ctx_, kRootInode, name(".")).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->symlink(ctx_, kRootInode, name(".."), "x", {}).error(), Errno{EINVAL});
  EXPECT_EQ(fs_->create(ctx_, kRootInode, name("."), 0644, O_RDWR, 0, false, {}).error(),
            Errno{EINVAL});
  EXPECT_EQ(fs_->rename(ctx_, kRootInode, name(".."), kRootInode, name("x"), 0).error(),
            Errno{EINVAL});
}

TEST_F(PassthroughFsTest, RenameAndRename2Flags) {
  write_host(path("a"), "AAA");
  write_host(path("b"), "BBB");
  EXPECT_EQ(
      fs_->rename(ctx_, kRootInode, name("a"), kRootInode, name("b"), RENAME_NOREPLACE).error(),
      Errno{EEXIST});
  EXPECT_EQ(read_host(path("a")), "AAA");
  EXPECT_EQ(read_host(path("b")), "BBB");

  ASSERT_TRUE(fs_->rename(ctx_, kRootInode, name("a"), kRootInode, name("b"), RENAME_EXCHANGE));
  EXPECT_EQ(read_host(path("a")), "BBB");
  EXPECT_EQ(read_host(path("b")), "AAA");

  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  InodeId d = must_lookup(kRootInode, "d");
  ASSERT_TRUE(fs_->rename(ctx_, kRootInode, name("a"), d, name("moved"), 0));
  EXPECT_FALSE(std::filesystem::exists(path("a")));
  EXPECT_EQ(read_host(path("d/moved")), "BBB");

  ASSERT_TRUE(fs_->rename(ctx_, d, name("moved"), kRootInode, name("c"), RENAME_WHITEOUT));
  EXPECT_TRUE(S_ISCHR(host_lstat(path("d/moved")).st_mode));  // the whiteout
  EXPECT_EQ(read_host(path("c")), "BBB");

  EXPECT_EQ(fs_->rename(ctx_, kRootInode, name("b"), kRootInode, name("c"), 1u << 10).error(),
            Errno{EINVAL});
}

TEST_F(PassthroughFsTest, LinkAddsAHostNameForTheSameInode) {
  write_host(path("a"), "x");
  InodeId a = must_lookup(kRootInode, "a");
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  InodeId d = must_lookup(kRootInode, "d");
  auto e = fs_->link(ctx_, a, d, name("b"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->inode, a);
  EXPECT_EQ(e->attr.st_nlink, 2u);
  EXPECT_EQ(host_lstat(path("d/b")).st_ino, host_lstat(path("a")).st_ino);
  EXPECT_EQ(fs_->lookup_count(a), 2u);

  // A symlink is linked as itself.
  ASSERT_EQ(::symlink("/", path("s").c_str()), 0);
  InodeId s = must_lookup(kRootInode, "s");
  ASSERT_TRUE(fs_->link(ctx_, s, d, name("s2")));
  EXPECT_TRUE(S_ISLNK(host_lstat(path("d/s2")).st_mode));
}

TEST_F(PassthroughFsTest, ReadAndWriteGoStraightThroughSegments) {
  write_host(path("f"), "");
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDWR);

  char s1[] = "Hello", s2[] = ", ", s3[] = "world!";
  IovecReader in({{s1, 5}, {s2, 2}, {s3, 6}});
  auto written = fs_->write(ctx_, f, h, in, 13, 3, 0, std::nullopt);
  ASSERT_TRUE(written);
  EXPECT_EQ(*written, 13u);
  EXPECT_EQ(in.remaining(), 0u);
  EXPECT_EQ(read_host(path("f")), std::string(3, '\0') + "Hello, world!");

  char d1[4] = {}, d2[3] = {}, d3[20] = {};
  IovecWriter out({{d1, 4}, {d2, 3}, {d3, 20}});
  auto got = fs_->read(ctx_, f, h, out, 100, 3);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 13u);  // stops at end of file
  EXPECT_EQ(out.consumed(), 13u);
  EXPECT_EQ(std::string(d1, 4) + std::string(d2, 3) + std::string(d3, 6), "Hello, world!");

  IovecReader too_short({{s1, 5}});
  EXPECT_EQ(fs_->write(ctx_, f, h, too_short, 6, 0, 0, std::nullopt).error(), Errno{EINVAL});
  IovecWriter any({{d1, 4}});
  EXPECT_EQ(fs_->read(ctx_, f, HandleId{h.value() + 77}, any, 4, 0).error(), Errno{EBADF});
}

// The offset reaches the kernel whole: past 4 GiB (a sparse file), where a
// 32-bit slip would land the bytes at the wrong place.
TEST_F(PassthroughFsTest, ReadAndWritePastFourGiBLandAtTheirOffset) {
  write_host(path("sparse"), "");
  InodeId f = must_lookup(kRootInode, "sparse");
  fuse::HandleId h = must_open(f, O_RDWR);
  constexpr uint64_t kAt = (uint64_t{5} << 32) + 12345;

  char msg[] = "far out";
  IovecReader in({{msg, 7}});
  ASSERT_EQ(fs_->write(ctx_, f, h, in, 7, kAt, 0, std::nullopt).value(), 7u);
  struct stat st {};
  ASSERT_EQ(::stat(path("sparse").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kAt + 7);
  const int host = ::open(path("sparse").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(host, 0);
  char back[8] = {};
  EXPECT_EQ(::pread(host, back, 7, static_cast<off_t>(kAt)), 7);
  ::close(host);
  EXPECT_STREQ(back, "far out");

  char got[16] = {};
  IovecWriter out({{got, sizeof got}});
  ASSERT_EQ(fs_->read(ctx_, f, h, out, sizeof got, kAt - 2).value(), 9u);
  EXPECT_EQ(std::string(got, 9), std::string(2, '\0') + "far out");
}

TEST_F(PassthroughFsTest, ReadSpanningMoreSegmentsThanIovMax) {
  std::string data(3000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
  write_host(path("f"), data);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDONLY);
  std::vector<char> buf(3000);
  IovecList segs;
  for (size_t i = 0; i < buf.size(); ++i) segs.push_back({&buf[i], 1});  // 3000 > IOV_MAX
  IovecWriter out(segs);
  auto got = fs_->read(ctx_, f, h, out, 3000, 0);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 3000u);
  EXPECT_EQ(std::string(buf.begin(), buf.end()), data);
}

TEST_F(PassthroughFsTest, OpenFlushFsyncRelease) {
  write_host(path("f"), "abc");
  InodeId f = must_lookup(kRootInode, "f");
  const int before = count_open_fds();
  // O_CREAT/O_EXCL are stripped; O_TRUNC is honoured.
  fuse::HandleId h = must_open(f, O_WRONLY | O_TRUNC | O_CREAT | O_EXCL);
  EXPECT_EQ(read_host(path("f")), "");
  EXPECT_EQ(count_open_fds(), before + 1);
  EXPECT_EQ(fs_->handle_count(), 1u);
  char c[] = "z";
  IovecReader in({{c, 1}});
  ASSERT_TRUE(fs_->write(ctx_, f, h, in, 1, 0, 0, std::nullopt));
  ASSERT_TRUE(fs_->flush(ctx_, f, h, 0));
  ASSERT_TRUE(fs_->fsync(ctx_, f, h, false));
  ASSERT_TRUE(fs_->fsync(ctx_, f, h, true));
  EXPECT_EQ(read_host(path("f")), "z");
  EXPECT_EQ(count_open_fds(), before + 1);  // flush closed only its duplicate
  EXPECT_EQ(fs_->release(ctx_, kRootInode, h, 0).error(), Errno{EBADF});  // wrong inode
  ASSERT_TRUE(fs_->release(ctx_, f, h, 0));
  EXPECT_EQ(count_open_fds(), before);
  EXPECT_EQ(fs_->flush(ctx_, f, h, 0).error(), Errno{EBADF});
}

TEST_F(PassthroughFsTest, CreateOpensANewFileAndRefusesExistingSpecialFiles) {
  auto c = fs_->create(ctx_, kRootInode, name("new"), S_IFREG | 0666, O_RDWR, 077, false, {});
  ASSERT_TRUE(c);
  struct stat st = host_lstat(path("new"));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(c->first.attr.st_ino, st.st_ino);
  EXPECT_EQ(fs_->lookup_count(c->first.inode), 1u);
  char data[] = "abc";
  IovecReader in({{data, 3}});
  ASSERT_TRUE(fs_->write(ctx_, c->first.inode, c->second.handle, in, 3, 0, 0, std::nullopt));
  EXPECT_EQ(read_host(path("new")), "abc");

  EXPECT_EQ(fs_->create(ctx_, kRootInode, name("new"), 0644, O_RDWR | O_EXCL, 0, false, {}).error(),
            Errno{EEXIST});
  auto again = fs_->create(ctx_, kRootInode, name("new"), 0644, O_RDWR | O_TRUNC, 0, false, {});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->first.inode, c->first.inode);
  EXPECT_EQ(read_host(path("new")), "");

  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0666), 0);
  EXPECT_EQ(fs_->create(ctx_, kRootInode, name("fifo"), 0644, O_RDONLY, 0, false, {}).error(),
            Errno{EBADF});  // returns instead of blocking on the FIFO
  ASSERT_EQ(::symlink("new", path("link").c_str()), 0);
  EXPECT_EQ(fs_->create(ctx_, kRootInode, name("link"), 0644, O_RDONLY, 0, false, {}).error(),
            Errno{ELOOP});
}

TEST_F(PassthroughFsTest, LseekFindsDataAndHolesInASparseFile) {
  const off_t kMiB = 1 << 20;
  {
    int fd = ::open(path("sparse").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 4 * kMiB), 0);
    ASSERT_EQ(::pwrite(fd, "data", 4, 2 * kMiB), 4);
    ::close(fd);
  }
  InodeId f = must_lookup(kRootInode, "sparse");
  fuse::HandleId h = must_open(f, O_RDONLY);
  auto data = fs_->lseek(ctx_, f, h, 0, SEEK_DATA);
  ASSERT_TRUE(data);
  EXPECT_EQ(*data, uint64_t(2 * kMiB));
  auto hole = fs_->lseek(ctx_, f, h, 2 * kMiB, SEEK_HOLE);
  ASSERT_TRUE(hole);
  EXPECT_GT(*hole, uint64_t(2 * kMiB));
  EXPECT_LT(*hole, uint64_t(4 * kMiB));
  EXPECT_EQ(*fs_->lseek(ctx_, f, h, 0, SEEK_END), uint64_t(4 * kMiB));
  EXPECT_EQ(*fs_->lseek(ctx_, f, h, 7, SEEK_SET), 7u);
  EXPECT_EQ(*fs_->lseek(ctx_, f, h, 3, SEEK_CUR), 10u);
  EXPECT_EQ(fs_->lseek(ctx_, f, h, 3 * kMiB, SEEK_DATA).error(), Errno{ENXIO});
  EXPECT_EQ(fs_->lseek(ctx_, f, h, 0, 99).error(), Errno{EINVAL});
}

TEST_F(PassthroughFsTest, FallocateGrowsAndPunchesHoles) {
  write_host(path("f"), "");
  InodeId f = must_lookup(kRootInode, "f");
  fuse::HandleId h = must_open(f, O_RDWR);
  ASSERT_TRUE(fs_->fallocate(ctx_, f, h, 0, 0, 1 << 20));
  struct stat st = host_lstat(path("f"));
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(st.st_blocks * 512, 1 << 20);

  ASSERT_TRUE(fs_->fallocate(ctx_, f, h, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 19));
  struct stat punched = host_lstat(path("f"));
  EXPECT_EQ(punched.st_size, 1 << 20);  // KEEP_SIZE passed through
  EXPECT_LT(punched.st_blocks, st.st_blocks);
  EXPECT_EQ(fs_->fallocate(ctx_, f, h, 0, ~0ull, 1).error(), Errno{EFBIG});
}

TEST_F(PassthroughFsTest, StatfsMatchesTheHost) {
  auto s = fs_->statfs(ctx_, kRootInode);
  ASSERT_TRUE(s);
  struct statvfs host {};
  ASSERT_EQ(::statvfs(root_.c_str(), &host), 0);
  EXPECT_EQ(s->f_bsize, host.f_bsize);
  EXPECT_EQ(s->f_blocks, host.f_blocks);
  EXPECT_EQ(s->f_fsid, host.f_fsid);
}

TEST_F(PassthroughFsTest, SyncfsAndFsyncdir) {
  write_host(path("f"), "dirty");
  ASSERT_TRUE(fs_->syncfs(ctx_, kRootInode));
  auto d = fs_->opendir(ctx_, kRootInode, 0);
  ASSERT_TRUE(d);
  ASSERT_TRUE(fs_->fsyncdir(ctx_, kRootInode, d->handle, false));
  ASSERT_TRUE(fs_->fsyncdir(ctx_, kRootInode, d->handle, true));
  InodeId f = must_lookup(kRootInode, "f");
  EXPECT_EQ(fs_->fsyncdir(ctx_, f, d->handle, false).error(), Errno{EBADF});
  ASSERT_TRUE(fs_->releasedir(ctx_, kRootInode, d->handle));
  EXPECT_EQ(fs_->fsyncdir(ctx_, kRootInode, d->handle, false).error(), Errno{EBADF});
  EXPECT_EQ(fs_->syncfs(ctx_, fuse::InodeId{777777}).error(), Errno{EBADF});
}

TEST_F(PassthroughFsTest, AccessFollowsTheInodeMode) {
  write_host(path("f"), "");
  ASSERT_EQ(::chown(path("f").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod(path("f").c_str(), 0640), 0);
  InodeId f = must_lookup(kRootInode, "f");
  fuse::Context owner{1000, 1000, 1}, group{2000, 1000, 1}, other{2000, 2000, 1}, root{};
  EXPECT_TRUE(fs_->access(owner, f, R_OK | W_OK));
  EXPECT_EQ(fs_->access(owner, f, X_OK).error(), Errno{EACCES});
  EXPECT_TRUE(fs_->access(group, f, R_OK));
  EXPECT_EQ(fs_->access(group, f, W_OK).error(), Errno{EACCES});
  EXPECT_EQ(fs_->access(other, f, R_OK).error(), Errno{EACCES});
  EXPECT_TRUE(fs_->access(other, f, F_OK));
  EXPECT_TRUE(fs_->access(root, f, R_OK | W_OK));
  EXPECT_EQ(fs_->access(root, f, X_OK).error(), Errno{EACCES});  // nobody may execute
  EXPECT_TRUE(fs_->access(root, kRootInode, X_OK));
  ASSERT_EQ(::chmod(path("f").c_str(), 0641), 0);
  EXPECT_TRUE(fs_->access(root, f, X_OK));
  EXPECT_TRUE(fs_->access(other, f, X_OK));
}

// Reads a whole directory through sinks of `budget` bytes, resuming at the
// last cookie each time.
std::vector<std::string> list_all(PassthroughFs& fs, InodeId dir, fuse::HandleId h, size_t budget,
                                  bool plus, std::vector<Entry>* entries, int* calls) {
  std::vector<std::string> names;
  uint64_t cookie = 0;
  for (;;) {
    TestSink sink(budget, plus);
    EXPECT_TRUE(fs.readdir({}, dir, h, cookie, plus, sink));
    ++*calls;
    if (sink.names.empty()) break;
    names.insert(names.end(), sink.names.begin(), sink.names.end());
    if (entries) entries->insert(entries->end(), sink.entries.begin(), sink.entries.end());
    cookie = sink.offsets.back();
  }
  return names;
}

TEST_F(PassthroughFsTest, ReaddirOver2000EntriesResumesAcrossSmallSinks) {
  ASSERT_EQ(::mkdir(path("big").c_str(), 0755), 0);
  std::set<std::string> expected = {".", ".."};
  for (int i = 0; i < 2000; ++i) {
    std::string n = "file-with-a-longish-name-" + std::to_string(i);
    write_host(path("big/" + n), "");
    expected.insert(n);
  }
  InodeId big = must_lookup(kRootInode, "big");
  auto d = fs_->opendir(ctx_, big, 0);
  ASSERT_TRUE(d);
  int calls = 0;
  auto names = list_all(*fs_, big, d->handle, 1024, false, nullptr, &calls);
  std::map<std::string, int> seen;
  for (const auto& n : names) ++seen[n];
  EXPECT_EQ(names.size(), expected.size());
  for (const auto& n : expected) EXPECT_EQ(seen[n], 1) << n;
  EXPECT_GT(calls, 50);  // really resumed many times
}

// READDIR keeps what the host returned beyond the reply for the next call
// from the same cookie; any other cookie (back, again, or a rewind) must
// still give what the host has there.
TEST_F(PassthroughFsTest, ReaddirFromAnyCookieGivesTheHostsEntriesThere) {
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  for (int i = 0; i < 300; ++i) write_host(path("d/entry-" + std::to_string(i)), "");
  InodeId d = must_lookup(kRootInode, "d");
  auto h = fs_->opendir(ctx_, d, 0);
  ASSERT_TRUE(h);
  auto page = [&](uint64_t cookie) {
    TestSink sink(10 * 64, false);
    EXPECT_TRUE(fs_->readdir(ctx_, d, h->handle, cookie, false, sink));
    return sink;
  };
  TestSink first = page(0);
  TestSink second = page(first.offsets.back());
  TestSink third = page(second.offsets.back());
  ASSERT_FALSE(third.names.empty());
  // Back to an earlier cookie, then the same one twice: the same entries.
  EXPECT_EQ(page(first.offsets.back()).names, second.names);
  EXPECT_EQ(page(first.offsets.back()).names, second.names);
  EXPECT_EQ(page(second.offsets.back()).names, third.names);
  // A rewind sees what the host has now, not what was read before.
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(::unlink(path("d/entry-" + std::to_string(i)).c_str()), 0);
  }
  write_host(path("d/new"), "");
  int calls = 0;
  std::vector<std::string> now = list_all(*fs_, d, h->handle, 10 * 64, false, nullptr, &calls);
  std::sort(now.begin(), now.end());
  EXPECT_EQ(now, (std::vector<std::string>{".", "..", "new"}));
}

TEST_F(PassthroughFsTest, ReaddirplusTakesOneReferencePerReturnedEntry) {
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  for (int i = 0; i < 30; ++i) write_host(path("d/f" + std::to_string(i)), std::to_string(i));
  InodeId d = must_lookup(kRootInode, "d");
  auto h = fs_->opendir(ctx_, d, 0);
  ASSERT_TRUE(h);
  const size_t inodes_before = fs_->inode_count();

  // One sink with room for 3 entries: exactly the entries returned are looked up.
  TestSink first(3 * (32 + 128), true);
  ASSERT_TRUE(fs_->readdir(ctx_, d, h->handle, 0, true, first));
  ASSERT_EQ(first.names.size(), 3u);
  size_t real = 0;
  for (size_t i = 0; i < first.names.size(); ++i) {
    if (first.names[i] == "." || first.names[i] == "..") {
      EXPECT_EQ(first.entries[i].inode, InodeId{0});
    } else {
      ++real;
    }
  }
  EXPECT_EQ(fs_->inode_count(), inodes_before + real);

  std::vector<Entry> entries;
  int calls = 0;
  auto names = list_all(*fs_, d, h->handle, 3 * (32 + 128), true, &entries, &calls);
  ASSERT_EQ(names.size(), 32u);
  EXPECT_EQ(fs_->inode_count(), inodes_before + 30);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "." || names[i] == "..") continue;
    EXPECT_EQ(entries[i].attr.st_ino, host_lstat(path("d/" + names[i])).st_ino);
    // 1 from this listing, plus 1 if the first partial listing returned it.
    bool in_first =
        std::find(first.names.begin(), first.names.end(), names[i]) != first.names.end();
    EXPECT_EQ(fs_->lookup_count(entries[i].inode), in_first ? 2u : 1u) << names[i];
  }
  EXPECT_EQ(fs_->readdir(ctx_, d, fuse::HandleId{999}, 0, true, first).error(), Errno{EBADF});
}

TEST_F(PassthroughFsTest, CreatingOperationsRunUnderTheGuestsIdsOnThisThreadOnly) {
  ASSERT_EQ(::mkdir(path("open").c_str(), 0777), 0);
  ASSERT_EQ(::mkdir(path("closed").c_str(), 0755), 0);
  InodeId open_dir = must_lookup(kRootInode, "open");
  InodeId closed_dir = must_lookup(kRootInode, "closed");
  fuse::Context user{1000, 1000, 1};

  // Another thread watches its own credentials the whole time.
  std::atomic<bool> stop{false}, changed{false};
  std::thread watcher([&] {
    while (!stop) {
      uid_t r, e, s;
      gid_t gr, ge, gs;
      ::syscall(SYS_getresuid, &r, &e, &s);
      ::syscall(SYS_getresgid, &gr, &ge, &gs);
      if (r || e || s || gr || ge || gs) changed = true;
    }
  });
  for (int i = 0; i < 100; ++i) {
    auto c = fs_->create(user, open_dir, name("f" + std::to_string(i)), 0644, O_RDWR, 0, false, {});
    ASSERT_TRUE(c);
  }
  auto dir = fs_->mkdir(user, open_dir, name("d"), 0755, 0, {});
  auto node = fs_->mknod(user, open_dir, name("p"), S_IFIFO | 0600, 0, 0, {});
  auto link = fs_->symlink(user, open_dir, name("l"), "target", {});
  auto denied = fs_->create(user, closed_dir, name("f"), 0644, O_RDWR, 0, false, {});
  auto denied_dir = fs_->mkdir(user, closed_dir, name("d"), 0755, 0, {});
  stop = true;
  watcher.join();
  EXPECT_FALSE(changed) << "another thread's credentials changed";

  for (const char* n : {"f0", "f99", "d", "p", "l"}) {
    struct stat st = host_lstat(path(std::string("open/") + n));
    EXPECT_EQ(st.st_uid, 1000u) << n;
    EXPECT_EQ(st.st_gid, 1000u) << n;
  }
  EXPECT_TRUE(dir && node && link);
  // Permission checks were made as uid 1000, not root.
  EXPECT_EQ(denied.error(), Errno{EACCES});
  EXPECT_EQ(denied_dir.error(), Errno{EACCES});
  EXPECT_FALSE(std::filesystem::exists(path("closed/f")));

  uid_t r, e, s;
  gid_t gr, ge, gs;
  ::syscall(SYS_getresuid, &r, &e, &s);
  ::syscall(SYS_getresgid, &gr, &ge, &gs);
  EXPECT_EQ(r | e | s, 0u);  // this thread is root again
  EXPECT_EQ(gr | ge | gs, 0u);

  // Opening an existing file through CREATE checks the caller's permissions.
  ASSERT_EQ(::chmod(path("open/f0").c_str(), 0600), 0);
  ASSERT_EQ(::chown(path("open/f0").c_str(), 0, 0), 0);
  EXPECT_EQ(fs_->create(user, open_dir, name("f0"), 0644, O_RDWR, 0, false, {}).error(),
            Errno{EACCES});
  ASSERT_EQ(::chown(path("open/f0").c_str(), 1000, 1000), 0);
  EXPECT_TRUE(fs_->create(user, open_dir, name("f0"), 0644, O_RDWR, 0, false, {}));
}

TEST_F(PassthroughFsTest, DestroyClosesEveryInodeAndHandleButTheRoot) {
  const int before = count_open_fds();
  for (int i = 0; i < 20; ++i) {
    write_host(path("f" + std::to_string(i)), "x");
    InodeId f = must_lookup(kRootInode, "f" + std::to_string(i));
    must_open(f, O_RDONLY);
  }
  ASSERT_TRUE(fs_->opendir(ctx_, kRootInode, 0));
  EXPECT_EQ(count_open_fds(), before + 41);
  fs_->destroy();
  EXPECT_EQ(count_open_fds(), before);
  EXPECT_EQ(fs_->inode_count(), 1u);
  EXPECT_EQ(fs_->handle_count(), 0u);
  // The next session starts from the root.
  EXPECT_NE(must_lookup(kRootInode, "f0"), InodeId{0});
}

TEST_F(PassthroughFsTest, CachePolicyGivesTimeoutsAndOpenFlags) {
  write_host(path("f"), "");
  struct Case {
    CachePolicy policy;
    std::chrono::seconds timeout;
    uint32_t file_flags, dir_flags;
  } cases[] = {
      {CachePolicy::kNever, std::chrono::seconds(0), FOPEN_DIRECT_IO, 0},
      {CachePolicy::kMetadata, std::chrono::seconds(86400), FOPEN_DIRECT_IO,
       FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE},
      {CachePolicy::kAuto, std::chrono::seconds(1), 0, 0},
      {CachePolicy::kAlways, std::chrono::seconds(86400), FOPEN_KEEP_CACHE,
       FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE},
  };
  for (const auto& c : cases) {
    auto fs = make_fs(c.policy, true);
    ASSERT_NE(fs, nullptr);
    auto e = fs->lookup(ctx_, kRootInode, name("f"));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->entry_timeout, c.timeout);
    EXPECT_EQ(e->attr_timeout, c.timeout);
    EXPECT_EQ(fs->open(ctx_, e->inode, O_RDONLY, false)->open_flags, c.file_flags);
    EXPECT_EQ(fs->opendir(ctx_, kRootInode, 0)->open_flags, c.dir_flags);
    auto created = fs->create(ctx_, kRootInode, name("g"), 0644, O_RDWR, 0, false, {});
    ASSERT_TRUE(created);
    EXPECT_EQ(created->second.open_flags, c.file_flags);
    ::unlink(path("g").c_str());
  }
}

TEST_F(PassthroughFsTest, SubmountRootsAreFlaggedWhenAnnounced) {
  ASSERT_EQ(::mkdir(path("mnt").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(path("plain").c_str(), 0755), 0);
  // A private mount namespace keeps the test's mount away from the host (the
  // process is single-threaded here, which unshare(CLONE_NEWNS) needs).
  if (::unshare(CLONE_NEWNS) != 0 ||
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("tmpfs", path("mnt").c_str(), "tmpfs", 0, nullptr) != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here: " << errno_name(errno);
  }
  // The fs opens its root after the mount: a root fd from before unshare()
  // would still see the old namespace, without the tmpfs.
  fs_ = make_fs(CachePolicy::kAuto, true);
  ASSERT_NE(fs_, nullptr);
  auto sub = lookup(kRootInode, "mnt");
  auto plain = lookup(kRootInode, "plain");
  ASSERT_TRUE(sub && plain);
  EXPECT_EQ(sub->attr_flags & FUSE_ATTR_SUBMOUNT, FUSE_ATTR_SUBMOUNT);
  EXPECT_EQ(plain->attr_flags & FUSE_ATTR_SUBMOUNT, 0u);
  EXPECT_TRUE(fs_->syncfs(ctx_, sub->inode));  // a submount's own filesystem

  auto quiet = make_fs(CachePolicy::kAuto, false);
  auto not_announced = quiet->lookup(ctx_, kRootInode, name("mnt"));
  ASSERT_TRUE(not_announced);
  EXPECT_EQ(not_announced->attr_flags & FUSE_ATTR_SUBMOUNT, 0u);
  quiet.reset();
  fs_->destroy();
  EXPECT_EQ(::umount(path("mnt").c_str()), 0);
}

}  // namespace
}  // namespace vfsd::passthrough
