// ReadOnlyFs over a recording fake: for every FileSystem method, whether it
// reached the inner filesystem (and with which arguments) or was refused
// (and with which errno).
#include "passthrough/read_only_fs.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vfsd::passthrough {
namespace {

using fuse::Context;
using fuse::Entry;
using fuse::HandleId;
using fuse::InodeId;
using fuse::Name;

// The kernel's __O_TMPFILE bit (glibc's macro of that name adds O_DIRECTORY).
constexpr uint32_t kTmpfileBit = 020000000;

// Records each call by name with its interesting arguments; answers with
// recognisable values, or with the errno configured per call name.
class RecordingFs final : public fuse::FileSystem {
 public:
  struct Call {
    std::string name;
    InodeId inode = fuse::InodeId{0};
    uint64_t arg = 0;  // flags, count, mask, cmd, ... depending on the call
  };
  std::vector<Call> calls;
  std::optional<int> lookup_error, open_error, opendir_error;
  fuse::InitReply init_reply{};
  static constexpr InodeId kLookedUp{77};

  bool called(const std::string& name) const {
    for (const auto& c : calls)
      if (c.name == name) return true;
    return false;
  }
  const Call* last(const std::string& name) const {
    for (auto it = calls.rbegin(); it != calls.rend(); ++it)
      if (it->name == name) return &*it;
    return nullptr;
  }

  Result<fuse::InitReply> init(const fuse::InitRequest& r) override {
    calls.push_back({"init", {}, r.kernel_flags});
    return init_reply;
  }
  void destroy() override { calls.push_back({"destroy"}); }
  Result<Entry> lookup(const Context&, InodeId parent, const Name&) override {
    calls.push_back({"lookup", parent});
    if (lookup_error) return fail(*lookup_error);
    Entry e;
    e.inode = kLookedUp;
    return e;
  }
  void forget(InodeId inode, uint64_t count) override { calls.push_back({"forget", inode, count}); }
  void batch_forget(std::span<const std::pair<InodeId, uint64_t>> items) override {
    calls.push_back({"batch_forget", {}, items.size()});
  }
  Result<fuse::AttrReply> getattr(const Context&, InodeId inode,
                                  std::optional<HandleId> h) override {
    calls.push_back({"getattr", inode, h ? h->value() : 0});
    fuse::AttrReply r;
    r.attr.st_size = 1234;
    return r;
  }
  Result<fuse::AttrReply> setattr(const Context&, InodeId inode,
                                  const fuse::SetattrRequest&) override {
    calls.push_back({"setattr", inode});
    return fuse::AttrReply{};
  }
  Result<std::string> readlink(const Context&, InodeId inode) override {
    calls.push_back({"readlink", inode});
    return std::string("target");
  }
  Result<Entry> symlink(const Context&, InodeId p, const Name&, std::string_view,
                        const fuse::Extensions&) override {
    calls.push_back({"symlink", p});
    return Entry{};
  }
  Result<Entry> mknod(const Context&, InodeId p, const Name&, mode_t, dev_t, mode_t,
                      const fuse::Extensions&) override {
    calls.push_back({"mknod", p});
    return Entry{};
  }
  Result<Entry> mkdir(const Context&, InodeId p, const Name&, mode_t, mode_t,
                      const fuse::Extensions&) override {
    calls.push_back({"mkdir", p});
    return Entry{};
  }
  VoidResult unlink(const Context&, InodeId p, const Name&) override {
    calls.push_back({"unlink", p});
    return ok();
  }
  VoidResult rmdir(const Context&, InodeId p, const Name&) override {
    calls.push_back({"rmdir", p});
    return ok();
  }
  VoidResult rename(const Context&, InodeId p, const Name&, InodeId, const Name&,
                    uint32_t) override {
    calls.push_back({"rename", p});
    return ok();
  }
  Result<Entry> link(const Context&, InodeId inode, InodeId, const Name&) override {
    calls.push_back({"link", inode});
    return Entry{};
  }
  Result<fuse::OpenReply> open(const Context&, InodeId inode, uint32_t flags, bool) override {
    calls.push_back({"open", inode, flags});
    if (open_error) return fail(*open_error);
    return fuse::OpenReply{fuse::HandleId{55}, FOPEN_KEEP_CACHE};
  }
  Result<std::pair<Entry, fuse::OpenReply>> create(const Context&, InodeId p, const Name&, mode_t,
                                                   uint32_t flags, mode_t, bool,
                                                   const fuse::Extensions&) override {
    calls.push_back({"create", p, flags});
    return std::pair{Entry{}, fuse::OpenReply{}};
  }
  Result<size_t> read(const Context&, InodeId inode, HandleId, IovecWriter&, uint32_t size,
                      uint64_t) override {
    calls.push_back({"read", inode, size});
    return size_t{size / 2};
  }
  Result<size_t> write(const Context&, InodeId inode, HandleId, IovecReader&, uint32_t size,
                       uint64_t, uint32_t, std::optional<uint32_t>) override {
    calls.push_back({"write", inode, size});
    return size_t{size};
  }
  VoidResult flush(const Context&, InodeId inode, HandleId, uint64_t owner) override {
    calls.push_back({"flush", inode, owner});
    return ok();
  }
  VoidResult fsync(const Context&, InodeId inode, HandleId, bool datasync) override {
    calls.push_back({"fsync", inode, datasync});
    return ok();
  }
  VoidResult release(const Context&, InodeId inode, HandleId h, uint32_t) override {
    calls.push_back({"release", inode, h.value()});
    return ok();
  }
  Result<struct statvfs> statfs(const Context&, InodeId inode) override {
    calls.push_back({"statfs", inode});
    struct statvfs s {};
    s.f_bsize = 4096;
    return s;
  }
  VoidResult access(const Context&, InodeId inode, uint32_t mask) override {
    calls.push_back({"access", inode, mask});
    return ok();
  }
  Result<uint64_t> lseek(const Context&, InodeId inode, HandleId, uint64_t offset,
                         uint32_t) override {
    calls.push_back({"lseek", inode, offset});
    return offset + 1;
  }
  VoidResult fallocate(const Context&, InodeId inode, HandleId, uint32_t, uint64_t,
                       uint64_t) override {
    calls.push_back({"fallocate", inode});
    return ok();
  }
  VoidResult syncfs(const Context&, InodeId inode) override {
    calls.push_back({"syncfs", inode});
    return ok();
  }
  Result<fuse::OpenReply> opendir(const Context&, InodeId inode, uint32_t flags) override {
    calls.push_back({"opendir", inode, flags});
    if (opendir_error) return fail(*opendir_error);
    return fuse::OpenReply{fuse::HandleId{66}, 0};
  }
  VoidResult readdir(const Context&, InodeId inode, HandleId, uint64_t, bool plus,
                     fuse::DirSink&) override {
    calls.push_back({plus ? "readdirplus" : "readdir", inode});
    return ok();
  }
  VoidResult fsyncdir(const Context&, InodeId inode, HandleId, bool) override {
    calls.push_back({"fsyncdir", inode});
    return ok();
  }
  VoidResult releasedir(const Context&, InodeId inode, HandleId) override {
    calls.push_back({"releasedir", inode});
    return ok();
  }
  Result<fuse::XattrReply> getxattr(const Context&, InodeId inode, std::string_view,
                                    uint32_t size) override {
    calls.push_back({"getxattr", inode, size});
    return fuse::XattrReply{"value", 5};
  }
  VoidResult setxattr(const Context&, InodeId inode, std::string_view, std::string_view, uint32_t,
                      uint32_t) override {
    calls.push_back({"setxattr", inode});
    return ok();
  }
  Result<fuse::XattrReply> listxattr(const Context&, InodeId inode, uint32_t size) override {
    calls.push_back({"listxattr", inode, size});
    return fuse::XattrReply{std::string("user.a\0", 7), 7};
  }
  VoidResult removexattr(const Context&, InodeId inode, std::string_view) override {
    calls.push_back({"removexattr", inode});
    return ok();
  }
  Result<size_t> copy_file_range(const Context&, InodeId in, HandleId, uint64_t, InodeId, HandleId,
                                 uint64_t, uint64_t length, uint64_t) override {
    calls.push_back({"copy_file_range", in, length});
    return size_t{length};
  }
  Result<std::pair<Entry, fuse::OpenReply>> tmpfile(const Context&, InodeId p, mode_t, uint32_t,
                                                    mode_t, const fuse::Extensions&) override {
    calls.push_back({"tmpfile", p});
    return std::pair{Entry{}, fuse::OpenReply{}};
  }
  Result<fuse::IoctlReply> ioctl(const Context&, InodeId inode, HandleId, uint32_t, uint32_t cmd,
                                 std::string_view, uint32_t) override {
    calls.push_back({"ioctl", inode, cmd});
    return fuse::IoctlReply{0, "flags"};
  }
  Result<fuse::FileLock> getlk(const Context&, InodeId inode, HandleId, uint64_t owner,
                               const fuse::FileLock& lock, uint32_t) override {
    calls.push_back({"getlk", inode, owner});
    return lock;
  }
  VoidResult setlk(const Context&, InodeId inode, HandleId, uint64_t owner, const fuse::FileLock&,
                   uint32_t) override {
    calls.push_back({"setlk", inode, owner});
    return ok();
  }
  void setlkw(const Context&, InodeId inode, HandleId, uint64_t, const fuse::FileLock&, uint32_t,
              uint64_t unique, std::function<void(VoidResult)> done) override {
    calls.push_back({"setlkw", inode, unique});
    done(fail(EINTR));
  }
  void interrupt(uint64_t unique) override { calls.push_back({"interrupt", {}, unique}); }
};

class ReadOnlyFsTest : public ::testing::Test {
 protected:
  RecordingFs inner;
  ReadOnlyFs ro{inner};
  Context ctx{1000, 1000, 42};
  Name name = *Name::from("file");
  Name other = *Name::from("other");
};

// Every modifying operation answers EROFS without reaching the inner fs.
TEST_F(ReadOnlyFsTest, ModifyingOperationsAreErofsAndNeverForwarded) {
  char byte = 'x';
  IovecReader in(IovecList{iovec{&byte, 1}});
  const std::vector<std::pair<std::string, int>> results = {
      {"setattr", ro.setattr(ctx, fuse::InodeId{5}, fuse::SetattrRequest{}).error().value},
      {"symlink", ro.symlink(ctx, fuse::InodeId{1}, name, "target", {}).error().value},
      {"mknod", ro.mknod(ctx, fuse::InodeId{1}, name, S_IFIFO | 0644, 0, 022, {}).error().value},
      {"mkdir", ro.mkdir(ctx, fuse::InodeId{1}, name, 0755, 022, {}).error().value},
      {"unlink", ro.unlink(ctx, fuse::InodeId{1}, name).error().value},
      {"rmdir", ro.rmdir(ctx, fuse::InodeId{1}, name).error().value},
      {"rename", ro.rename(ctx, fuse::InodeId{1}, name, fuse::InodeId{1}, other, 0).error().value},
      {"link", ro.link(ctx, fuse::InodeId{5}, fuse::InodeId{1}, other).error().value},
      {"write",
       ro.write(ctx, fuse::InodeId{5}, fuse::HandleId{9}, in, 1, 0, 0, std::nullopt).error().value},
      {"fallocate",
       ro.fallocate(ctx, fuse::InodeId{5}, fuse::HandleId{9}, 0, 0, 4096).error().value},
      {"setxattr", ro.setxattr(ctx, fuse::InodeId{5}, "user.a", "v", 0, 0).error().value},
      {"removexattr", ro.removexattr(ctx, fuse::InodeId{5}, "user.a").error().value},
      {"copy_file_range", ro.copy_file_range(ctx, fuse::InodeId{5}, fuse::HandleId{9}, 0,
                                             fuse::InodeId{6}, fuse::HandleId{10}, 0, 100, 0)
                              .error()
                              .value},
      {"tmpfile", ro.tmpfile(ctx, fuse::InodeId{1}, S_IFREG | 0600, O_RDWR, 022, {}).error().value},
  };
  for (const auto& [op, error] : results) EXPECT_EQ(error, EROFS) << op;
  EXPECT_TRUE(inner.calls.empty()) << inner.calls.front().name << " was forwarded";
  EXPECT_EQ(in.remaining(), 1u);  // write consumed nothing
}

TEST_F(ReadOnlyFsTest, InitForwardsButNeverNegotiatesWritebackCache) {
  inner.init_reply.wanted_flags = FUSE_WRITEBACK_CACHE | FUSE_EXPORT_SUPPORT | FUSE_POSIX_ACL;
  inner.init_reply.required_flags = FUSE_WRITEBACK_CACHE | FUSE_POSIX_ACL;
  auto reply = ro.init(fuse::InitRequest{FUSE_WRITEBACK_CACHE | FUSE_POSIX_ACL});
  ASSERT_TRUE(reply);
  ASSERT_NE(inner.last("init"), nullptr);
  EXPECT_EQ(inner.last("init")->arg, uint64_t{FUSE_WRITEBACK_CACHE | FUSE_POSIX_ACL});
  EXPECT_EQ(reply->wanted_flags, uint64_t{FUSE_EXPORT_SUPPORT | FUSE_POSIX_ACL});
  EXPECT_EQ(reply->required_flags, uint64_t{FUSE_POSIX_ACL});
}

TEST_F(ReadOnlyFsTest, InitErrorIsPassedOn) {
  class FailingInit final : public fuse::FileSystem {
    Result<fuse::InitReply> init(const fuse::InitRequest&) override { return fail(EPROTO); }
  } failing;
  ReadOnlyFs wrapped(failing);
  auto reply = wrapped.init(fuse::InitRequest{});
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().value, EPROTO);
}

// Every reading operation reaches the inner fs with its arguments, and its
// answer comes back unchanged.
TEST_F(ReadOnlyFsTest, ReadingOperationsAreForwarded) {
  ro.destroy();
  EXPECT_TRUE(inner.called("destroy"));

  auto entry = ro.lookup(ctx, fuse::InodeId{3}, name);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->inode, RecordingFs::kLookedUp);
  EXPECT_EQ(inner.last("lookup")->inode, InodeId{3});

  ro.forget(fuse::InodeId{8}, 3);
  EXPECT_EQ(inner.last("forget")->inode, InodeId{8});
  EXPECT_EQ(inner.last("forget")->arg, 3u);
  const std::pair<InodeId, uint64_t> items[] = {{InodeId{8}, 1}, {InodeId{9}, 2}};
  ro.batch_forget(items);
  EXPECT_EQ(inner.last("batch_forget")->arg, 2u);

  auto attr = ro.getattr(ctx, fuse::InodeId{8}, HandleId{12});
  ASSERT_TRUE(attr);
  EXPECT_EQ(attr->attr.st_size, 1234);
  EXPECT_EQ(inner.last("getattr")->arg, 12u);

  EXPECT_EQ(ro.readlink(ctx, fuse::InodeId{8}).value(), "target");

  char buf[64];
  IovecWriter out(IovecList{iovec{buf, sizeof(buf)}});
  EXPECT_EQ(ro.read(ctx, fuse::InodeId{8}, fuse::HandleId{12}, out, 64, 0).value(), 32u);
  EXPECT_EQ(inner.last("read")->arg, 64u);

  EXPECT_TRUE(ro.flush(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0xabc));
  EXPECT_EQ(inner.last("flush")->arg, 0xabcu);
  EXPECT_TRUE(ro.fsync(ctx, fuse::InodeId{8}, fuse::HandleId{12}, true));
  EXPECT_EQ(inner.last("fsync")->arg, 1u);
  EXPECT_TRUE(ro.release(ctx, fuse::InodeId{8}, fuse::HandleId{12}, O_RDONLY));
  EXPECT_EQ(inner.last("release")->arg, 12u);
  EXPECT_EQ(ro.statfs(ctx, fuse::InodeId{1}).value().f_bsize, 4096u);
  EXPECT_EQ(ro.lseek(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 99, SEEK_DATA).value(), 100u);
  EXPECT_TRUE(ro.syncfs(ctx, fuse::InodeId{1}));
  EXPECT_TRUE(inner.called("syncfs"));

  struct NullSink : fuse::DirSink {
    bool fits(size_t) const override { return true; }
    void add(const fuse::DirEntry&, const Entry*) override {}
  } sink;
  EXPECT_TRUE(ro.readdir(ctx, fuse::InodeId{1}, fuse::HandleId{13}, 0, false, sink));
  EXPECT_TRUE(ro.readdir(ctx, fuse::InodeId{1}, fuse::HandleId{13}, 0, true, sink));
  EXPECT_TRUE(inner.called("readdir"));
  EXPECT_TRUE(inner.called("readdirplus"));
  EXPECT_TRUE(ro.fsyncdir(ctx, fuse::InodeId{1}, fuse::HandleId{13}, false));
  EXPECT_TRUE(inner.called("fsyncdir"));
  EXPECT_TRUE(ro.releasedir(ctx, fuse::InodeId{1}, fuse::HandleId{13}));
  EXPECT_TRUE(inner.called("releasedir"));

  auto value = ro.getxattr(ctx, fuse::InodeId{8}, "user.a", 100);
  ASSERT_TRUE(value);
  EXPECT_EQ(value->data, "value");
  EXPECT_EQ(inner.last("getxattr")->arg, 100u);
  auto names = ro.listxattr(ctx, fuse::InodeId{8}, 0);
  ASSERT_TRUE(names);
  EXPECT_EQ(names->size, 7u);
}

TEST_F(ReadOnlyFsTest, LocksAndInterruptAreForwarded) {
  fuse::FileLock lock{0, 10, F_RDLCK, 7};
  auto held = ro.getlk(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0x11, lock, 0);
  ASSERT_TRUE(held);
  EXPECT_EQ(held->end, 10u);
  EXPECT_EQ(inner.last("getlk")->arg, 0x11u);
  EXPECT_TRUE(ro.setlk(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0x22, lock, FUSE_LK_FLOCK));
  EXPECT_EQ(inner.last("setlk")->arg, 0x22u);

  std::optional<VoidResult> finished;
  ro.setlkw(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0x33, lock, 0, 4242,
            [&](VoidResult r) { finished = r; });
  EXPECT_EQ(inner.last("setlkw")->arg, 4242u);
  ASSERT_TRUE(finished.has_value());  // the inner fs's callback reached ours
  EXPECT_EQ(finished->error().value, EINTR);

  ro.interrupt(4242);
  EXPECT_EQ(inner.last("interrupt")->arg, 4242u);
}

TEST_F(ReadOnlyFsTest, AccessWithWriteIsErofsOtherMasksPass) {
  EXPECT_EQ(ro.access(ctx, fuse::InodeId{8}, W_OK).error().value, EROFS);
  EXPECT_EQ(ro.access(ctx, fuse::InodeId{8}, R_OK | W_OK | X_OK).error().value, EROFS);
  EXPECT_FALSE(inner.called("access"));
  EXPECT_TRUE(ro.access(ctx, fuse::InodeId{8}, R_OK | X_OK));
  EXPECT_EQ(inner.last("access")->arg, uint64_t{R_OK | X_OK});
  EXPECT_TRUE(ro.access(ctx, fuse::InodeId{8}, F_OK));
  EXPECT_EQ(inner.last("access")->arg, uint64_t{F_OK});
}

TEST_F(ReadOnlyFsTest, ModifyingIoctlsAreErofsReadingOnesPass) {
  for (uint32_t cmd :
       {static_cast<uint32_t>(FS_IOC_SETFLAGS), static_cast<uint32_t>(FS_IOC32_SETFLAGS),
        static_cast<uint32_t>(FS_IOC_FSSETXATTR)}) {
    EXPECT_EQ(
        ro.ioctl(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0, cmd, "\0\0\0\0", 0).error().value,
        EROFS)
        << cmd;
  }
  EXPECT_FALSE(inner.called("ioctl"));
  for (uint32_t cmd :
       {static_cast<uint32_t>(FS_IOC_GETFLAGS), static_cast<uint32_t>(FS_IOC32_GETFLAGS),
        static_cast<uint32_t>(FS_IOC_FSGETXATTR)}) {
    auto reply = ro.ioctl(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0, cmd, "", 4);
    ASSERT_TRUE(reply) << cmd;
    EXPECT_EQ(reply->out, "flags");
    EXPECT_EQ(inner.last("ioctl")->arg, cmd);
  }
}

// An allow-list: an ioctl not known to only read never reaches the
// filesystem, whatever its number (a setter renumbered, or one added later).
TEST_F(ReadOnlyFsTest, IoctlsNotKnownToReadAreNotForwarded) {
  for (uint32_t cmd : {0u, 0xffffffffu, static_cast<uint32_t>(_IOW('f', 99, int)),
                       static_cast<uint32_t>(_IOW('X', 1, struct fsxattr))}) {
    auto reply = ro.ioctl(ctx, fuse::InodeId{8}, fuse::HandleId{12}, 0, cmd, "\0\0\0\0", 4);
    ASSERT_FALSE(reply) << cmd;
    EXPECT_EQ(reply.error().value, ENOTTY) << cmd;
  }
  EXPECT_FALSE(inner.called("ioctl"));
}

// The open rules, for open() and opendir() alike.
class ReadOnlyOpenTest : public ReadOnlyFsTest, public ::testing::WithParamInterface<bool> {
 protected:
  bool dir() const { return GetParam(); }
  Result<fuse::OpenReply> do_open(uint32_t flags) {
    return dir() ? ro.opendir(ctx, fuse::InodeId{8}, flags)
                 : ro.open(ctx, fuse::InodeId{8}, flags, false);
  }
  const char* op() const { return dir() ? "opendir" : "open"; }
  void fail_inner_with(int error) { (dir() ? inner.opendir_error : inner.open_error) = error; }
  // The flags the inner fs saw, or nullopt if it was not called.
  std::optional<uint32_t> forwarded() const {
    auto* call = inner.last(op());
    if (!call) return std::nullopt;
    return static_cast<uint32_t>(call->arg);
  }
};

TEST_P(ReadOnlyOpenTest, ReadOnlyOpensPassUnchanged) {
  for (uint32_t flags : {uint32_t{O_RDONLY}, uint32_t{O_RDONLY | O_LARGEFILE | O_NOFOLLOW},
                         uint32_t{O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK},
                         uint32_t{O_RDONLY | O_APPEND | O_DIRECT | O_NOATIME}}) {
    inner.calls.clear();
    ASSERT_TRUE(do_open(flags)) << std::oct << flags;
    EXPECT_EQ(forwarded(), flags);
  }
}

// O_PATH exempts nothing: a write access mode or O_TRUNC beside it is
// refused as without it (the real filesystem then refuses O_PATH itself; the
// integration test readonly_hostile_test pins that over PassthroughFs).
TEST_P(ReadOnlyOpenTest, OPathExemptsNothing) {
  const std::vector<std::pair<uint32_t, int>> cases = {
      {O_PATH | O_WRONLY, EROFS},
      {O_PATH | O_RDWR | O_TRUNC, EROFS},
      {O_PATH | O_WRONLY | O_TRUNC | O_CREAT, EROFS},
      {O_PATH | O_RDONLY | O_TRUNC, EINVAL},
      {O_PATH | O_RDONLY | O_EXCL, EROFS},
  };
  for (const auto& [flags, error] : cases) {
    auto r = do_open(flags);
    ASSERT_FALSE(r) << std::oct << flags;
    EXPECT_EQ(r.error().value, error) << std::oct << flags;
  }
  EXPECT_FALSE(forwarded().has_value());
}

TEST_P(ReadOnlyOpenTest, RefusedFlags) {
  const std::vector<std::pair<uint32_t, int>> cases = {
      {O_WRONLY, EROFS},
      {O_RDWR, EROFS},
      {O_RDWR | O_CREAT, EROFS},
      {O_WRONLY | O_TRUNC, EROFS},
      {O_RDONLY | O_EXCL, EROFS},
      {O_RDONLY | O_CREAT | O_EXCL, EROFS},
      {O_RDONLY | kTmpfileBit, EINVAL},
      {O_RDONLY | O_TMPFILE, EINVAL},
      {O_RDWR | O_TMPFILE, EROFS},
      {O_RDONLY | O_TRUNC, EINVAL},
      {O_RDONLY | O_TRUNC | O_CREAT, EINVAL},
  };
  for (const auto& [flags, error] : cases) {
    auto r = do_open(flags);
    ASSERT_FALSE(r) << std::oct << flags;
    EXPECT_EQ(r.error().value, error) << std::oct << flags;
  }
  EXPECT_FALSE(forwarded().has_value());
}

TEST_P(ReadOnlyOpenTest, OCreatIsDroppedAndAMissingFileIsErofs) {
  ASSERT_TRUE(do_open(O_RDONLY | O_CREAT | O_NOFOLLOW));
  EXPECT_EQ(forwarded(), uint32_t{O_RDONLY | O_NOFOLLOW});

  fail_inner_with(ENOENT);
  EXPECT_EQ(do_open(O_RDONLY | O_CREAT).error().value, EROFS);
  // Without O_CREAT a missing file stays ENOENT, and other errors pass.
  EXPECT_EQ(do_open(O_RDONLY).error().value, ENOENT);
  fail_inner_with(EACCES);
  EXPECT_EQ(do_open(O_RDONLY | O_CREAT).error().value, EACCES);
}

INSTANTIATE_TEST_SUITE_P(OpenAndOpendir, ReadOnlyOpenTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "opendir" : "open"; });

TEST_F(ReadOnlyFsTest, CreateOpensAnExistingFileWithoutCreating) {
  auto created =
      ro.create(ctx, fuse::InodeId{3}, name, S_IFREG | 0644, O_RDONLY | O_CREAT, 022, false, {});
  ASSERT_TRUE(created);
  EXPECT_EQ(created->first.inode, RecordingFs::kLookedUp);
  EXPECT_EQ(created->second.handle, HandleId{55});
  EXPECT_EQ(created->second.open_flags, uint32_t{FOPEN_KEEP_CACHE});
  EXPECT_FALSE(inner.called("create"));
  EXPECT_EQ(inner.last("lookup")->inode, InodeId{3});
  EXPECT_EQ(inner.last("open")->inode, RecordingFs::kLookedUp);
  EXPECT_EQ(inner.last("open")->arg, uint32_t{O_RDONLY});
  EXPECT_FALSE(inner.called("forget"));  // the guest now holds that reference
}

TEST_F(ReadOnlyFsTest, CreateOfAMissingNameIsErofs) {
  inner.lookup_error = ENOENT;
  EXPECT_EQ(
      ro.create(ctx, fuse::InodeId{3}, name, 0644, O_RDONLY | O_CREAT, 0, false, {}).error().value,
      EROFS);
  inner.lookup_error = EACCES;
  EXPECT_EQ(
      ro.create(ctx, fuse::InodeId{3}, name, 0644, O_RDONLY | O_CREAT, 0, false, {}).error().value,
      EACCES);
  EXPECT_FALSE(inner.called("open"));
  EXPECT_FALSE(inner.called("create"));
  EXPECT_FALSE(inner.called("forget"));
}

// The Rust virtiofsd keeps the lookup reference when the open after it fails;
// the guest never learns of the inode, so it would never be forgotten.
TEST_F(ReadOnlyFsTest, CreateWhoseOpenFailsGivesTheLookupReferenceBack) {
  auto refused = ro.create(ctx, fuse::InodeId{3}, name, 0644, O_RDWR | O_CREAT, 0, false, {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().value, EROFS);
  ASSERT_NE(inner.last("forget"), nullptr);
  EXPECT_EQ(inner.last("forget")->inode, RecordingFs::kLookedUp);
  EXPECT_EQ(inner.last("forget")->arg, 1u);

  inner.calls.clear();
  inner.open_error = EACCES;
  auto denied = ro.create(ctx, fuse::InodeId{3}, name, 0644, O_RDONLY | O_CREAT, 0, false, {});
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().value, EACCES);
  ASSERT_NE(inner.last("forget"), nullptr);
  EXPECT_EQ(inner.last("forget")->inode, RecordingFs::kLookedUp);
  EXPECT_EQ(inner.last("forget")->arg, 1u);
}

}  // namespace
}  // namespace vfsd::passthrough
