// Drives fuse::Server::handle over in-memory request and reply buffers, each
// cut into uneven segments so that every struct and name straddles segment
// boundaries, against a mocked FileSystem.
#include "fuse/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sys/sysmacros.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fuse/abi_ext.h"
#include "server_test_support.h"

namespace vfsd::fuse {
namespace {

using namespace std::chrono_literals;
using ::testing::_;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::InSequence;
using ::testing::Invoke;
using ::testing::NiceMock;
using ::testing::Optional;
using ::testing::Return;

using namespace testsupport;

// ---------------------------------------------------------------------------
// INIT / DESTROY / session state

TEST_F(ServerTest, InitNegotiatesFlagsAndLimits) {
  const uint64_t fs_wants = FUSE_SUBMOUNTS | FUSE_SECURITY_CTX | FUSE_POSIX_LOCKS;
  EXPECT_CALL(fs_,
              init(Field(&InitRequest::kernel_flags,
                         FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_SUBMOUNTS | FUSE_SECURITY_CTX |
                             FUSE_INIT_EXT | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES)))
      .WillOnce(Return(InitReply{fs_wants}));
  // The kernel offers neither PARALLEL_DIROPS, ATOMIC_O_TRUNC, READDIRPLUS_AUTO
  // nor POSIX_LOCKS: none may come back.
  Reply r = send(FUSE_INIT, 0,
                 init_body(7, 36,
                           FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_SUBMOUNTS | FUSE_SECURITY_CTX |
                               FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_init_out));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.hdr().len, kHdr + sizeof(fuse_init_out));
  auto out = r.at<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, abi::kMinorVersion);
  EXPECT_EQ(out.max_readahead, 128u * 1024);
  EXPECT_EQ(out.flags, static_cast<uint32_t>(FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_SUBMOUNTS |
                                             FUSE_INIT_EXT | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES));
  EXPECT_EQ(out.flags2, static_cast<uint32_t>(FUSE_SECURITY_CTX >> 32));
  EXPECT_EQ(out.max_write, 1u << 20);
  EXPECT_EQ(out.max_pages, 256u);
  EXPECT_EQ(out.time_gran, 1u);
  EXPECT_GT(out.max_background, 0u);
  EXPECT_GT(out.congestion_threshold, 0u);
  EXPECT_LE(out.congestion_threshold, out.max_background);
  EXPECT_TRUE(server_.initialized());
}

TEST_F(ServerTest, InitOffersAllOurFlagsWhenKernelOffersEverything) {
  EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{}));
  Reply r = send(FUSE_INIT, 0, init_body());
  auto out = r.at<fuse_init_out>();
  uint64_t flags = out.flags | (uint64_t{out.flags2} << 32);
  EXPECT_EQ(flags, FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_BIG_WRITES | FUSE_ATOMIC_O_TRUNC |
                       FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
                       FUSE_INIT_EXT | FUSE_AUTO_INVAL_DATA | FUSE_ASYNC_DIO | FUSE_HAS_IOCTL_DIR |
                       FUSE_EXPORT_SUPPORT);
}

TEST_F(ServerTest, InitWithoutInitExtIgnoresFlags2) {
  EXPECT_CALL(fs_, init(Field(&InitRequest::kernel_flags, uint64_t{FUSE_ASYNC_READ})))
      .WillOnce(Return(InitReply{FUSE_SECURITY_CTX}));
  fuse_init_in in{};
  in.major = 7;
  in.minor = 38;
  in.flags = FUSE_ASYNC_READ;
  in.flags2 = static_cast<uint32_t>(FUSE_SECURITY_CTX >> 32);
  Reply r = send(FUSE_INIT, 0, Body().obj(in));
  auto out = r.at<fuse_init_out>();
  EXPECT_EQ(out.flags, static_cast<uint32_t>(FUSE_ASYNC_READ));
  EXPECT_EQ(out.flags2, 0u);
}

TEST_F(ServerTest, InitAcceptsPre736ShortBody) {
  // Kernels before 7.36 send only major, minor, max_readahead, flags.
  EXPECT_CALL(fs_, init(Field(&InitRequest::kernel_flags, uint64_t{FUSE_BIG_WRITES})))
      .WillOnce(Return(InitReply{}));
  uint32_t words[4] = {7, 31, 65536, FUSE_BIG_WRITES};
  Reply r = send(FUSE_INIT, 0, Body().obj(words));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.at<fuse_init_out>().flags, static_cast<uint32_t>(FUSE_BIG_WRITES));
  EXPECT_EQ(r.at<fuse_init_out>().max_readahead, 65536u);
}

TEST_F(ServerTest, InitBodyShorterThanFourWordsIsEinval) {
  EXPECT_CALL(fs_, init(_)).Times(0);
  uint32_t words[3] = {7, 38, 0};
  expect_error(send(FUSE_INIT, 0, Body().obj(words)), EINVAL);
  EXPECT_FALSE(server_.initialized());
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  init();
}

TEST_F(ServerTest, InitOldMinorIsEproto) {
  EXPECT_CALL(fs_, init(_)).Times(0);
  expect_error(send(FUSE_INIT, 0, init_body(7, 26)), EPROTO);
  EXPECT_FALSE(server_.initialized());
  expect_error(send(FUSE_GETATTR, 1, Body().obj(fuse_getattr_in{})), EIO);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  init();
  expect_alive();
}

TEST_F(ServerTest, InitMajorTooOldIsEproto) {
  EXPECT_CALL(fs_, init(_)).Times(0);
  expect_error(send(FUSE_INIT, 0, init_body(6, 38)), EPROTO);
}

TEST_F(ServerTest, InitNewerMajorGetsMajorOnlyReply) {
  EXPECT_CALL(fs_, init(_)).Times(0);
  Reply r = send(FUSE_INIT, 0, init_body(8, 0));
  ASSERT_EQ(r.error(), 0);
  auto out = r.at<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.flags, 0u);
  EXPECT_EQ(out.max_write, 0u);
  EXPECT_FALSE(server_.initialized());
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  init();
}

TEST_F(ServerTest, InitFailureFromFilesystemIsReported) {
  EXPECT_CALL(fs_, init(_)).WillOnce(Return(fail(ENOMEM))).WillOnce(Return(InitReply{}));
  expect_error(send(FUSE_INIT, 0, init_body()), ENOMEM);
  EXPECT_FALSE(server_.initialized());
  init();
}

TEST_F(ServerTest, SecondInitDestroysThenInitsAgain) {
  {
    InSequence seq;
    EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{}));
    EXPECT_CALL(fs_, destroy());
    EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{}));
  }
  init();
  init();
}

TEST_F(ServerTest, DestroyEndsSession) {
  init();
  EXPECT_CALL(fs_, destroy()).Times(1);
  Reply r = send(FUSE_DESTROY, 0);
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
  EXPECT_FALSE(server_.initialized());
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a")), EIO);
  // INIT after DESTROY does not destroy a second time.
  init();
}

TEST_F(ServerTest, RequestsBeforeInitAreEio) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, getattr(_, _, _)).Times(0);
  EXPECT_CALL(fs_, forget(_, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a")), EIO);
  expect_error(send(FUSE_GETATTR, 1, Body().obj(fuse_getattr_in{})), EIO);
  expect_error(send(FUSE_DESTROY, 0), EIO);
  expect_error(send(12345, 1), EIO);
  EXPECT_EQ(send(FUSE_FORGET, 1, Body().obj(fuse_forget_in{1})).returned, 0u);
}

TEST(ServerOptionsTest, InitHonoursOptions) {
  NiceMock<MockFs> fs;
  ServerOptions options;
  options.max_write = 128 * 1024;
  options.max_pages = 32;
  options.readdirplus = false;
  Server server(fs, options);
  Bytes buf(4096);
  fuse_init_in in{};
  in.major = 7;
  in.minor = 38;
  in.flags = 0xffffffff;
  Bytes req = make_request(FUSE_INIT, 0, Body().obj(in));
  IovecReader reader(cut(req));
  IovecWriter writer(cut(buf));
  ASSERT_EQ(server.handle(reader, writer), kHdr + sizeof(fuse_init_out));
  fuse_init_out out{};
  std::memcpy(&out, buf.data() + kHdr, sizeof(out));
  EXPECT_EQ(out.max_write, 128u * 1024);
  EXPECT_EQ(out.max_pages, 32u);
  EXPECT_EQ(out.flags & (FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO), 0u);
  EXPECT_NE(out.flags & FUSE_PARALLEL_DIROPS, 0u);
}

// ---------------------------------------------------------------------------
// Opcodes, decoded and encoded

TEST_F(OpTest, LookupPassesContextParentAndName) {
  EXPECT_CALL(fs_, lookup(CtxIs(kUid, kGid, kPid), fuse::InodeId{9}, NameIs("hello.txt")))
      .WillOnce(Return(sample_entry(fuse::InodeId{77})));
  Reply r = send(FUSE_LOOKUP, 9, Body().name("hello.txt"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out));
  EXPECT_EQ(r.hdr().len, r.returned);
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.hdr().unique, kUnique);
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{77});
}

TEST_F(OpTest, LookupErrorIsNegatedErrno) {
  EXPECT_CALL(fs_, lookup(_, _, _)).WillOnce(Return(fail(ENOENT)));
  expect_error(send(FUSE_LOOKUP, 1, Body().name("missing")), ENOENT);
}

TEST_F(OpTest, LookupOfDotAndDotDotReachesFilesystem) {
  EXPECT_CALL(fs_, lookup(_, kRootInode, NameIs("..")))
      .WillOnce(Return(sample_entry(fuse::InodeId{1})));
  EXPECT_CALL(fs_, lookup(_, kRootInode, NameIs(".")))
      .WillOnce(Return(sample_entry(fuse::InodeId{1})));
  EXPECT_EQ(send(FUSE_LOOKUP, kRootInode.value(), Body().name("..")).error(), 0);
  EXPECT_EQ(send(FUSE_LOOKUP, kRootInode.value(), Body().name(".")).error(), 0);
}

TEST_F(OpTest, FilesystemErrnoOutOfRangeBecomesEio) {
  EXPECT_CALL(fs_, lookup(_, _, _)).WillOnce(Return(fail(0))).WillOnce(Return(fail(-3)));
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a")), EIO);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a")), EIO);
}

TEST_F(OpTest, Forget) {
  EXPECT_CALL(fs_, forget(fuse::InodeId{33}, 5));
  Reply r = send(FUSE_FORGET, 33, Body().obj(fuse_forget_in{5}));
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);  // nothing written
  expect_alive();
}

TEST_F(OpTest, BatchForget) {
  std::vector<std::pair<InodeId, uint64_t>> got;
  EXPECT_CALL(fs_, batch_forget(_))
      .WillRepeatedly(Invoke([&](std::span<const std::pair<InodeId, uint64_t>> items) {
        got.insert(got.end(), items.begin(), items.end());
      }));
  Body b;
  b.obj(fuse_batch_forget_in{3, 0});
  b.obj(fuse_forget_one{10, 1}).obj(fuse_forget_one{11, 2}).obj(fuse_forget_one{12, 3});
  EXPECT_EQ(send(FUSE_BATCH_FORGET, 0, b).returned, 0u);
  EXPECT_THAT(got,
              ElementsAre(std::pair<InodeId, uint64_t>{10, 1}, std::pair<InodeId, uint64_t>{11, 2},
                          std::pair<InodeId, uint64_t>{12, 3}));
}

TEST_F(OpTest, BatchForgetLargerThanOneChunk) {
  size_t total = 0;
  uint64_t sum = 0;
  EXPECT_CALL(fs_, batch_forget(_))
      .WillRepeatedly(Invoke([&](std::span<const std::pair<InodeId, uint64_t>> items) {
        total += items.size();
        for (auto& [ino, n] : items) sum += ino.value() * n;
      }));
  Body b;
  b.obj(fuse_batch_forget_in{200, 0});
  uint64_t want = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    b.obj(fuse_forget_one{i + 1, 2});
    want += (i + 1) * 2;
  }
  EXPECT_EQ(send(FUSE_BATCH_FORGET, 0, b).returned, 0u);
  EXPECT_EQ(total, 200u);
  EXPECT_EQ(sum, want);
}

TEST_F(OpTest, InterruptReachesFilesystemWithoutReply) {
  EXPECT_CALL(fs_, interrupt(99));
  Reply r = send(FUSE_INTERRUPT, 0, Body().obj(fuse_interrupt_in{99}));
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);
  expect_alive();
}

TEST_F(OpTest, GetattrWithAndWithoutHandle) {
  AttrReply attr;
  attr.attr.st_ino = 5;
  attr.attr.st_size = 99;
  attr.attr.st_rdev = makedev(8, 1);
  attr.attr.st_nlink = 2;
  attr.timeout = 3s + 7ns;
  EXPECT_CALL(fs_, getattr(CtxIs(kUid, kGid, kPid), fuse::InodeId{5}, std::optional<HandleId>(44)))
      .WillOnce(Return(attr));
  fuse_getattr_in in{};
  in.getattr_flags = FUSE_GETATTR_FH;
  in.fh = 44;
  Reply r = send(FUSE_GETATTR, 5, Body().obj(in));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_attr_out));
  auto out = r.at<fuse_attr_out>();
  EXPECT_EQ(out.attr_valid, 3u);
  EXPECT_EQ(out.attr_valid_nsec, 7u);
  EXPECT_EQ(out.attr.ino, 5u);
  EXPECT_EQ(out.attr.size, 99u);
  EXPECT_EQ(out.attr.rdev, 0x801u);
  EXPECT_EQ(out.attr.nlink, 2u);

  // Without FUSE_GETATTR_FH the fh field is junk and must not be passed.
  in.getattr_flags = 0;
  EXPECT_CALL(fs_, getattr(_, fuse::InodeId{5}, std::optional<HandleId>())).WillOnce(Return(attr));
  EXPECT_EQ(send(FUSE_GETATTR, 5, Body().obj(in)).error(), 0);
}

TEST_F(OpTest, SetattrDecodesEveryField) {
  SetattrRequest got;
  EXPECT_CALL(fs_, setattr(_, fuse::InodeId{8}, _))
      .WillOnce(Invoke([&](const Context&, InodeId, const SetattrRequest& s) {
        got = s;
        AttrReply a;
        a.attr.st_mode = S_IFREG | 0600;
        return Result<AttrReply>(a);
      }));
  fuse_setattr_in in{};
  in.valid = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME |
             FATTR_FH | FATTR_MTIME_NOW;
  in.mode = 0600;
  in.uid = 5;
  in.gid = 6;
  in.size = 1 << 30;
  in.atime = 1234;
  in.atimensec = 567;
  in.mtime = 999;  // ignored: MTIME_NOW
  in.fh = 31;
  Reply r = send(FUSE_SETATTR, 8, Body().obj(in));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_attr_out));
  EXPECT_EQ(r.at<fuse_attr_out>().attr.mode, static_cast<uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(got.valid, in.valid);
  EXPECT_EQ(got.mode, 0600u);
  EXPECT_EQ(got.uid, 5u);
  EXPECT_EQ(got.gid, 6u);
  EXPECT_EQ(got.size, 1u << 30);
  EXPECT_EQ(got.atime.tv_sec, 1234);
  EXPECT_EQ(got.atime.tv_nsec, 567);
  EXPECT_EQ(got.mtime.tv_nsec, UTIME_NOW);
  ASSERT_TRUE(got.handle.has_value());
  EXPECT_EQ(*got.handle, HandleId{31});
}

TEST_F(OpTest, SetattrWithoutFhHasNoHandle) {
  SetattrRequest got;
  got.handle = HandleId{1};
  EXPECT_CALL(fs_, setattr(_, fuse::InodeId{8}, _))
      .WillOnce(Invoke([&](const Context&, InodeId, const SetattrRequest& s) {
        got = s;
        return Result<AttrReply>(AttrReply{});
      }));
  fuse_setattr_in in{};
  in.valid = FATTR_ATIME_NOW | FATTR_ATIME;
  in.fh = 77;
  EXPECT_EQ(send(FUSE_SETATTR, 8, Body().obj(in)).error(), 0);
  EXPECT_FALSE(got.handle.has_value());
  EXPECT_EQ(got.atime.tv_nsec, UTIME_NOW);
}

TEST_F(OpTest, SetattrRejectsBadNanoseconds) {
  EXPECT_CALL(fs_, setattr(_, _, _)).Times(0);
  fuse_setattr_in in{};
  in.valid = FATTR_MTIME;
  in.mtimensec = 1'000'000'000;
  expect_error(send(FUSE_SETATTR, 8, Body().obj(in)), EINVAL);
  expect_alive();
}

TEST_F(OpTest, Readlink) {
  EXPECT_CALL(fs_, readlink(_, fuse::InodeId{12})).WillOnce(Return(std::string("../target/file")));
  Reply r = send(FUSE_READLINK, 12);
  ASSERT_EQ(r.returned, kHdr + 14);
  EXPECT_EQ(r.hdr().len, kHdr + 14);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(r.buf.data() + kHdr), 14), "../target/file");
}

TEST_F(OpTest, ReadlinkLongerThanReplyRoomIsEio) {
  EXPECT_CALL(fs_, readlink(_, fuse::InodeId{12})).WillOnce(Return(std::string(100, 'x')));
  expect_error(send(FUSE_READLINK, 12, {}, kHdr + 50), EIO);
  expect_alive();
}

TEST_F(OpTest, Symlink) {
  EXPECT_CALL(fs_, symlink(CtxIs(kUid, kGid, kPid), fuse::InodeId{3}, NameIs("link"),
                           std::string_view("/some/where"), _))
      .WillOnce(Return(sample_entry(fuse::InodeId{50})));
  Reply r = send(FUSE_SYMLINK, 3, Body().name("link").name("/some/where"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out));
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{50});
}

TEST_F(OpTest, SymlinkMalformed) {
  EXPECT_CALL(fs_, symlink(_, _, _, _, _)).Times(0);
  expect_error(send(FUSE_SYMLINK, 3, Body().name("link").name("")), EINVAL);  // empty target
  expect_error(send(FUSE_SYMLINK, 3, Body().name("link").raw("t")), EINVAL);  // no NUL
  expect_error(send(FUSE_SYMLINK, 3, Body().name("link")), EINVAL);           // no target
  expect_error(send(FUSE_SYMLINK, 3, Body().name("a/b").name("t")), EINVAL);
  expect_error(send(FUSE_SYMLINK, 3, Body().name("..").name("t")), EINVAL);
  expect_error(send(FUSE_SYMLINK, 3, Body().name("l").name(std::string(PATH_MAX, 'x'))), EINVAL);
  expect_alive();
  // The longest legal target: PATH_MAX - 1 bytes.
  EXPECT_CALL(fs_, symlink(_, fuse::InodeId{3}, NameIs("l"), _, _))
      .WillOnce(Return(sample_entry(fuse::InodeId{2})));
  EXPECT_EQ(send(FUSE_SYMLINK, 3, Body().name("l").name(std::string(PATH_MAX - 1, 'x'))).error(),
            0);
}

TEST_F(OpTest, Mknod) {
  EXPECT_CALL(fs_, mknod(CtxIs(kUid, kGid, kPid), fuse::InodeId{4}, NameIs("dev"), S_IFCHR | 0600,
                         makedev(136, 0x1234), 022, _))
      .WillOnce(Return(sample_entry(fuse::InodeId{60})));
  fuse_mknod_in in{};
  in.mode = S_IFCHR | 0600;
  in.rdev = 0x34u | (136u << 8) | (0x12u << 20);
  in.umask = 022;
  Reply r = send(FUSE_MKNOD, 4, Body().obj(in).name("dev"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out));
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{60});
}

TEST_F(OpTest, Mkdir) {
  EXPECT_CALL(fs_, mkdir(_, fuse::InodeId{4}, NameIs("sub"), 0755, 027, _))
      .WillOnce(Return(sample_entry(fuse::InodeId{61})));
  Reply r = send(FUSE_MKDIR, 4, Body().obj(fuse_mkdir_in{0755, 027}).name("sub"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out));
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{61});
}

TEST_F(OpTest, UnlinkAndRmdir) {
  EXPECT_CALL(fs_, unlink(_, fuse::InodeId{4}, NameIs("f"))).WillOnce(Return(ok()));
  EXPECT_CALL(fs_, rmdir(_, fuse::InodeId{4}, NameIs("d"))).WillOnce(Return(fail(ENOTEMPTY)));
  Reply r = send(FUSE_UNLINK, 4, Body().name("f"));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
  expect_error(send(FUSE_RMDIR, 4, Body().name("d")), ENOTEMPTY);
}

TEST_F(OpTest, RenameAndRename2) {
  EXPECT_CALL(fs_, rename(_, fuse::InodeId{4}, NameIs("old"), fuse::InodeId{6}, NameIs("new"), 0u))
      .WillOnce(Return(ok()));
  EXPECT_CALL(
      fs_, rename(_, fuse::InodeId{4}, NameIs("a"), fuse::InodeId{7}, NameIs("b"), RENAME_EXCHANGE))
      .WillOnce(Return(ok()));
  Reply r = send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("old").name("new"));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
  fuse_rename2_in in{};
  in.newdir = 7;
  in.flags = RENAME_EXCHANGE;
  r = send(FUSE_RENAME2, 4, Body().obj(in).name("a").name("b"));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, RenameMalformed) {
  EXPECT_CALL(fs_, rename(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("old")), EINVAL);
  expect_error(send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("old").raw("new")), EINVAL);
  expect_error(send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("old").name("..")), EINVAL);
  expect_error(send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name(".").name("x")), EINVAL);
  expect_error(send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("o").name("a/b")), EINVAL);
  expect_error(
      send(FUSE_RENAME, 4, Body().obj(fuse_rename_in{6}).name("o").name("n").name("extra")),
      EINVAL);
  expect_alive();
}

TEST_F(OpTest, Link) {
  EXPECT_CALL(fs_, link(_, fuse::InodeId{90}, fuse::InodeId{4}, NameIs("hard")))
      .WillOnce(Return(sample_entry(fuse::InodeId{90})));
  Reply r = send(FUSE_LINK, 4, Body().obj(fuse_link_in{90}).name("hard"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out));
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{90});
}

TEST_F(OpTest, OpenAndOpendir) {
  EXPECT_CALL(fs_, open(CtxIs(kUid, kGid, kPid), fuse::InodeId{20}, O_RDWR | O_APPEND,
                        /*kill_suidgid=*/true))
      .WillOnce(Return(OpenReply{fuse::HandleId{555}, FOPEN_KEEP_CACHE}));
  EXPECT_CALL(fs_, opendir(_, fuse::InodeId{21}, O_RDONLY | O_DIRECTORY))
      .WillOnce(Return(OpenReply{fuse::HandleId{556}, FOPEN_CACHE_DIR}));
  Reply r =
      send(FUSE_OPEN, 20, Body().obj(fuse_open_in{O_RDWR | O_APPEND, FUSE_OPEN_KILL_SUIDGID}));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_open_out));
  EXPECT_EQ(r.at<fuse_open_out>().fh, 555u);
  EXPECT_EQ(r.at<fuse_open_out>().open_flags, static_cast<uint32_t>(FOPEN_KEEP_CACHE));
  r = send(FUSE_OPENDIR, 21, Body().obj(fuse_open_in{O_RDONLY | O_DIRECTORY, 0}));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_open_out));
  EXPECT_EQ(r.at<fuse_open_out>().fh, 556u);
  EXPECT_EQ(r.at<fuse_open_out>().open_flags, static_cast<uint32_t>(FOPEN_CACHE_DIR));
}

TEST_F(OpTest, Create) {
  EXPECT_CALL(fs_, create(CtxIs(kUid, kGid, kPid), fuse::InodeId{4}, NameIs("new.txt"),
                          S_IFREG | 0644, O_CREAT | O_EXCL | O_WRONLY, 022,
                          /*kill_suidgid=*/true, _))
      .WillOnce(Return(std::make_pair(sample_entry(fuse::InodeId{70}),
                                      OpenReply{fuse::HandleId{71}, FOPEN_DIRECT_IO})));
  fuse_create_in in{};
  in.flags = O_CREAT | O_EXCL | O_WRONLY;
  in.mode = S_IFREG | 0644;
  in.umask = 022;
  in.open_flags = FUSE_OPEN_KILL_SUIDGID;
  Reply r = send(FUSE_CREATE, 4, Body().obj(in).name("new.txt"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.hdr().len, r.returned);
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{70});
  auto open = r.at<fuse_open_out>(sizeof(fuse_entry_out));
  EXPECT_EQ(open.fh, 71u);
  EXPECT_EQ(open.open_flags, static_cast<uint32_t>(FOPEN_DIRECT_IO));
}

TEST_F(OpTest, ReadFillsDataBehindHeader) {
  EXPECT_CALL(fs_, read(_, fuse::InodeId{20}, fuse::HandleId{555}, _, 100, 4096))
      .WillOnce(
          Invoke([](const Context&, InodeId, HandleId, IovecWriter& out, uint32_t size, uint64_t) {
            std::string data(60, 'r');
            EXPECT_GE(out.remaining(), size);
            EXPECT_TRUE(out.write(data.data(), data.size()));
            return Result<size_t>(data.size());
          }));
  fuse_read_in in{};
  in.fh = 555;
  in.offset = 4096;
  in.size = 100;
  Reply r = send(FUSE_READ, 20, Body().obj(in));
  ASSERT_EQ(r.returned, kHdr + 60);
  EXPECT_EQ(r.hdr().len, kHdr + 60);
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(r.buf.data() + kHdr), 60), std::string(60, 'r'));
}

TEST_F(OpTest, ReadSizeIsClampedToReplyRoom) {
  EXPECT_CALL(fs_, read(_, fuse::InodeId{20}, fuse::HandleId{555}, _, 30, 0))
      .WillOnce(
          Invoke([](const Context&, InodeId, HandleId, IovecWriter& out, uint32_t size, uint64_t) {
            EXPECT_EQ(out.remaining(), 30u);
            std::string data(size, 'z');
            out.write(data.data(), data.size());
            return Result<size_t>(size);
          }));
  fuse_read_in in{};
  in.fh = 555;
  in.size = 1 << 20;
  Reply r = send(FUSE_READ, 20, Body().obj(in), kHdr + 30);
  EXPECT_EQ(r.returned, kHdr + 30);
  EXPECT_EQ(r.hdr().len, kHdr + 30);
}

TEST_F(OpTest, ReadError) {
  EXPECT_CALL(fs_, read(_, _, _, _, _, _)).WillOnce(Return(fail(EBADF)));
  fuse_read_in in{};
  in.size = 10;
  expect_error(send(FUSE_READ, 20, Body().obj(in)), EBADF);
}

TEST_F(OpTest, WriteGetsExactlyTheData) {
  std::string got;
  EXPECT_CALL(fs_, write(CtxIs(kUid, kGid, kPid), fuse::InodeId{20}, fuse::HandleId{555}, _, 11,
                         8192, FUSE_WRITE_CACHE, Optional(uint32_t{O_WRONLY | O_APPEND})))
      .WillOnce(Invoke([&](const Context&, InodeId, HandleId, IovecReader& in, uint32_t size,
                           uint64_t, uint32_t, std::optional<uint32_t>) {
        EXPECT_EQ(in.remaining(), size);
        got.resize(size);
        EXPECT_TRUE(in.read(got.data(), size));
        return Result<size_t>(size);
      }));
  fuse_write_in in{};
  in.fh = 555;
  in.offset = 8192;
  in.size = 11;
  in.write_flags = FUSE_WRITE_CACHE;
  in.flags = O_WRONLY | O_APPEND;
  Reply r = send(FUSE_WRITE, 20, Body().obj(in).raw("hello world"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_write_out));
  EXPECT_EQ(r.at<fuse_write_out>().size, 11u);
  EXPECT_EQ(got, "hello world");
}

TEST_F(OpTest, Statfs) {
  struct statvfs st {};
  st.f_blocks = 1000;
  st.f_bavail = 10;
  st.f_bsize = 4096;
  st.f_namemax = 255;
  EXPECT_CALL(fs_, statfs(_, fuse::InodeId{1})).WillOnce(Return(st));
  Reply r = send(FUSE_STATFS, 1);
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_statfs_out));
  auto out = r.at<fuse_statfs_out>();
  EXPECT_EQ(out.st.blocks, 1000u);
  EXPECT_EQ(out.st.bavail, 10u);
  EXPECT_EQ(out.st.bsize, 4096u);
  EXPECT_EQ(out.st.namelen, 255u);
}

TEST_F(OpTest, ReleaseAndReleasedir) {
  EXPECT_CALL(fs_, release(_, fuse::InodeId{20}, fuse::HandleId{555}, O_RDWR))
      .WillOnce(Return(ok()));
  EXPECT_CALL(fs_, releasedir(_, fuse::InodeId{21}, fuse::HandleId{556})).WillOnce(Return(ok()));
  fuse_release_in in{};
  in.fh = 555;
  in.flags = O_RDWR;
  Reply r = send(FUSE_RELEASE, 20, Body().obj(in));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
  in.fh = 556;
  r = send(FUSE_RELEASEDIR, 21, Body().obj(in));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, FsyncAndFsyncdir) {
  EXPECT_CALL(fs_, fsync(_, fuse::InodeId{20}, fuse::HandleId{555}, true)).WillOnce(Return(ok()));
  EXPECT_CALL(fs_, fsync(_, fuse::InodeId{20}, fuse::HandleId{555}, false))
      .WillOnce(Return(fail(EIO)));
  EXPECT_CALL(fs_, fsyncdir(_, fuse::InodeId{21}, fuse::HandleId{556}, true))
      .WillOnce(Return(ok()));
  EXPECT_EQ(send(FUSE_FSYNC, 20, Body().obj(fuse_fsync_in{555, FUSE_FSYNC_FDATASYNC, 0})).error(),
            0);
  expect_error(send(FUSE_FSYNC, 20, Body().obj(fuse_fsync_in{555, 0, 0})), EIO);
  Reply r = send(FUSE_FSYNCDIR, 21, Body().obj(fuse_fsync_in{556, FUSE_FSYNC_FDATASYNC, 0}));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, Flush) {
  EXPECT_CALL(fs_, flush(_, fuse::InodeId{20}, fuse::HandleId{555}, 0xabcdef))
      .WillOnce(Return(ok()));
  fuse_flush_in in{};
  in.fh = 555;
  in.lock_owner = 0xabcdef;
  Reply r = send(FUSE_FLUSH, 20, Body().obj(in));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, Access) {
  EXPECT_CALL(fs_, access(CtxIs(kUid, kGid, kPid), fuse::InodeId{20}, R_OK | X_OK))
      .WillOnce(Return(fail(EACCES)));
  expect_error(send(FUSE_ACCESS, 20, Body().obj(fuse_access_in{R_OK | X_OK, 0})), EACCES);
}

TEST_F(OpTest, Lseek) {
  EXPECT_CALL(fs_, lseek(_, fuse::InodeId{20}, fuse::HandleId{555}, 100, SEEK_DATA))
      .WillOnce(Return(uint64_t{4096}));
  fuse_lseek_in in{};
  in.fh = 555;
  in.offset = 100;
  in.whence = SEEK_DATA;
  Reply r = send(FUSE_LSEEK, 20, Body().obj(in));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_lseek_out));
  EXPECT_EQ(r.at<fuse_lseek_out>().offset, 4096u);
}

TEST_F(OpTest, Fallocate) {
  EXPECT_CALL(
      fs_, fallocate(_, fuse::InodeId{20}, fuse::HandleId{555}, FALLOC_FL_KEEP_SIZE, 10, 1 << 20))
      .WillOnce(Return(ok()));
  fuse_fallocate_in in{};
  in.fh = 555;
  in.offset = 10;
  in.length = 1 << 20;
  in.mode = FALLOC_FL_KEEP_SIZE;
  Reply r = send(FUSE_FALLOCATE, 20, Body().obj(in));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, Syncfs) {
  EXPECT_CALL(fs_, syncfs(_, fuse::InodeId{1})).WillOnce(Return(ok()));
  Reply r = send(FUSE_SYNCFS, 1, Body().obj(fuse_syncfs_in{}));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(OpTest, UnknownOpcodeIsEnosys) {
  expect_error(send(999999, 1), ENOSYS);
  expect_error(send(0, 1), ENOSYS);
  expect_alive();
}

// ---------------------------------------------------------------------------
// READDIR / READDIRPLUS

struct Dirent {
  uint64_t ino, off;
  uint32_t type;
  std::string name;
  fuse_entry_out entry{};
};

// Parses a READDIR(PLUS) reply payload, checking alignment and zero padding.
std::vector<Dirent> parse_dirents(const Reply& r, bool plus) {
  std::vector<Dirent> out;
  size_t end = r.hdr().len;
  size_t pos = kHdr;
  while (pos < end) {
    Dirent d;
    if (plus) {
      std::memcpy(&d.entry, r.buf.data() + pos, sizeof(fuse_entry_out));
      pos += sizeof(fuse_entry_out);
    }
    fuse_dirent de{};
    std::memcpy(&de, r.buf.data() + pos, FUSE_NAME_OFFSET);
    d.ino = de.ino;
    d.off = de.off;
    d.type = de.type;
    d.name.assign(reinterpret_cast<const char*>(r.buf.data() + pos + FUSE_NAME_OFFSET), de.namelen);
    size_t rec = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + de.namelen);
    for (size_t i = FUSE_NAME_OFFSET + de.namelen; i < rec; ++i) {
      EXPECT_EQ(r.buf[pos + i], 0) << "padding of " << d.name;
    }
    pos += rec;
    out.push_back(d);
  }
  EXPECT_EQ(pos, end);
  return out;
}

// Offers entries "entry-0", "entry-1", ... until the sink is full.
auto fill_dir(int max_entries, int* added) {
  return [=](const Context&, InodeId, HandleId, uint64_t offset, bool plus, DirSink& sink) {
    for (int i = static_cast<int>(offset); i < max_entries; ++i) {
      std::string name = "entry-" + std::to_string(i);
      if (!sink.fits(name.size())) break;
      Entry e = sample_entry(InodeId{100 + static_cast<uint64_t>(i)});
      sink.add(
          DirEntry{static_cast<uint64_t>(1000 + i), static_cast<uint64_t>(i + 1), DT_REG, name},
          plus ? &e : nullptr);
      ++*added;
    }
    return ok();
  };
}

TEST_F(OpTest, ReaddirEncodesDirents) {
  int added = 0;
  EXPECT_CALL(fs_,
              readdir(CtxIs(kUid, kGid, kPid), fuse::InodeId{21}, fuse::HandleId{556}, 0, false, _))
      .WillOnce(Invoke(fill_dir(3, &added)));
  fuse_read_in in{};
  in.fh = 556;
  in.size = 4096;
  Reply r = send(FUSE_READDIR, 21, Body().obj(in));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.returned, r.hdr().len);
  auto d = parse_dirents(r, false);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].name, "entry-0");
  EXPECT_EQ(d[0].ino, 1000u);
  EXPECT_EQ(d[0].off, 1u);
  EXPECT_EQ(d[0].type, static_cast<uint32_t>(DT_REG));
  EXPECT_EQ(d[2].name, "entry-2");
  EXPECT_EQ(d[2].off, 3u);
  EXPECT_EQ(r.returned, kHdr + 3 * FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + 7));
}

TEST_F(OpTest, ReaddirStopsAtRequestedSize) {
  int added = 0;
  EXPECT_CALL(fs_, readdir(_, fuse::InodeId{21}, fuse::HandleId{556}, 5, false, _))
      .WillOnce(Invoke(fill_dir(1000, &added)));
  fuse_read_in in{};
  in.fh = 556;
  in.offset = 5;
  in.size = 100;  // 32 bytes per record: 3 fit
  Reply r = send(FUSE_READDIR, 21, Body().obj(in));
  auto d = parse_dirents(r, false);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(added, 3);
  EXPECT_EQ(d[0].name, "entry-5");
  EXPECT_LE(r.returned, kHdr + 100);
}

TEST_F(OpTest, ReaddirStopsAtReplyRoom) {
  int added = 0;
  EXPECT_CALL(fs_, readdir(_, _, _, _, _, _)).WillOnce(Invoke(fill_dir(1000, &added)));
  fuse_read_in in{};
  in.size = 1 << 20;
  Reply r = send(FUSE_READDIR, 21, Body().obj(in), kHdr + 70);
  EXPECT_EQ(parse_dirents(r, false).size(), 2u);
  EXPECT_LE(r.returned, kHdr + 70);
}

TEST_F(OpTest, ReaddirSinkDropsEntriesThatDoNotFit) {
  // A filesystem that ignores fits() must not overflow the reply.
  EXPECT_CALL(fs_, readdir(_, _, _, _, _, _))
      .WillOnce(Invoke([](const Context&, InodeId, HandleId, uint64_t, bool, DirSink& sink) {
        for (int i = 0; i < 10; ++i) sink.add(DirEntry{1, 1, DT_REG, "abcdefgh"}, nullptr);
        return ok();
      }));
  fuse_read_in in{};
  in.size = 64;
  Reply r = send(FUSE_READDIR, 21, Body().obj(in));
  EXPECT_EQ(parse_dirents(r, false).size(), 2u);
  EXPECT_EQ(r.buf[kHdr + 64], 0xee);
}

TEST_F(OpTest, ReaddirErrorWithoutEntriesIsReported) {
  EXPECT_CALL(fs_, readdir(_, _, _, _, _, _)).WillOnce(Return(fail(EBADF)));
  fuse_read_in in{};
  in.size = 4096;
  expect_error(send(FUSE_READDIR, 21, Body().obj(in)), EBADF);
}

TEST_F(OpTest, ReaddirErrorAfterEntriesKeepsEntries) {
  EXPECT_CALL(fs_, readdir(_, _, _, _, _, _))
      .WillOnce(Invoke([](const Context&, InodeId, HandleId, uint64_t, bool, DirSink& sink) {
        sink.add(DirEntry{9, 1, DT_DIR, "x"}, nullptr);
        return VoidResult(fail(EIO));
      }));
  fuse_read_in in{};
  in.size = 4096;
  Reply r = send(FUSE_READDIR, 21, Body().obj(in));
  EXPECT_EQ(r.error(), 0);
  ASSERT_EQ(parse_dirents(r, false).size(), 1u);
}

TEST_F(OpTest, ReaddirplusEncodesEntries) {
  int added = 0;
  EXPECT_CALL(fs_, readdir(_, fuse::InodeId{21}, fuse::HandleId{556}, 0, true, _))
      .WillOnce(Invoke(fill_dir(2, &added)));
  fuse_read_in in{};
  in.fh = 556;
  in.size = 4096;
  Reply r = send(FUSE_READDIRPLUS, 21, Body().obj(in));
  EXPECT_EQ(r.error(), 0);
  auto d = parse_dirents(r, true);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].name, "entry-1");
  EXPECT_EQ(d[1].ino, 1001u);
  expect_entry_out(d[0].entry, fuse::InodeId{100});
  expect_entry_out(d[1].entry, fuse::InodeId{101});
  EXPECT_EQ(r.returned, kHdr + 2 * FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + 7));
}

TEST_F(OpTest, ReaddirplusFitsAccountsForEntrySize) {
  int added = 0;
  EXPECT_CALL(fs_, readdir(_, _, _, _, true, _)).WillOnce(Invoke(fill_dir(100, &added)));
  fuse_read_in in{};
  in.size = 2 * 160 - 1;  // a plus record with a 7-byte name takes 160 bytes
  Reply r = send(FUSE_READDIRPLUS, 21, Body().obj(in));
  EXPECT_EQ(added, 1);
  EXPECT_EQ(parse_dirents(r, true).size(), 1u);
}

// ---------------------------------------------------------------------------
// Malformed requests: each is answered (or dropped) alone, the next is served.

class MalformedTest : public OpTest {};

TEST_F(MalformedTest, RequestShorterThanHeaderIsDropped) {
  Bytes req = make_request(FUSE_GETATTR, 1);
  req.resize(sizeof(fuse_in_header) - 1);
  Reply r = send(req);
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);
  expect_alive();
}

TEST_F(MalformedTest, LenSmallerThanHeader) {
  Bytes req = make_request(FUSE_GETATTR, 1, Body().obj(fuse_getattr_in{}));
  reinterpret_cast<fuse_in_header*>(req.data())->len = sizeof(fuse_in_header) - 1;
  EXPECT_CALL(fs_, getattr(_, _, _)).Times(0);
  expect_error(send(req), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, LenLargerThanBuffer) {
  Bytes req = make_request(FUSE_LOOKUP, 1, Body().name("abc"));
  reinterpret_cast<fuse_in_header*>(req.data())->len += 1;
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  expect_error(send(req), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, LenLimitsTheBody) {
  // Bytes beyond in.len are not part of the request: a name whose NUL lies
  // past len is a name without NUL.
  Bytes req = make_request(FUSE_LOOKUP, 1, Body().name("abc"));
  reinterpret_cast<fuse_in_header*>(req.data())->len -= 1;
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  expect_error(send(req), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, ExtensionLongerThanBody) {
  Bytes req = make_request(FUSE_LOOKUP, 1, Body().name("abc"));
  reinterpret_cast<fuse_in_header*>(req.data())->total_extlen = 1;
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  expect_error(send(req), EINVAL);
  expect_alive();
}

struct ShortBodyCase {
  uint32_t opcode;
  size_t min_body;
};

TEST_F(MalformedTest, BodyTooShortForEachStruct) {
  const ShortBodyCase cases[] = {
      {FUSE_GETATTR, sizeof(fuse_getattr_in)},
      {FUSE_SETATTR, sizeof(fuse_setattr_in)},
      {FUSE_MKNOD, sizeof(fuse_mknod_in)},
      {FUSE_MKDIR, sizeof(fuse_mkdir_in)},
      {FUSE_RENAME, sizeof(fuse_rename_in)},
      {FUSE_RENAME2, sizeof(fuse_rename2_in)},
      {FUSE_LINK, sizeof(fuse_link_in)},
      {FUSE_OPEN, sizeof(fuse_open_in)},
      {FUSE_OPENDIR, sizeof(fuse_open_in)},
      {FUSE_CREATE, sizeof(fuse_create_in)},
      {FUSE_READ, sizeof(fuse_read_in)},
      {FUSE_WRITE, sizeof(fuse_write_in)},
      {FUSE_RELEASE, sizeof(fuse_release_in)},
      {FUSE_RELEASEDIR, sizeof(fuse_release_in)},
      {FUSE_FSYNC, sizeof(fuse_fsync_in)},
      {FUSE_FSYNCDIR, sizeof(fuse_fsync_in)},
      {FUSE_FLUSH, sizeof(fuse_flush_in)},
      {FUSE_ACCESS, sizeof(fuse_access_in)},
      {FUSE_LSEEK, sizeof(fuse_lseek_in)},
      {FUSE_FALLOCATE, sizeof(fuse_fallocate_in)},
      {FUSE_SYNCFS, sizeof(fuse_syncfs_in)},
      {FUSE_READDIR, sizeof(fuse_read_in)},
      {FUSE_READDIRPLUS, sizeof(fuse_read_in)},
      {FUSE_LOOKUP, 1},
      {FUSE_UNLINK, 1},
      {FUSE_RMDIR, 1},
      {FUSE_SYMLINK, 1},
  };
  // Any filesystem call would be a bug: the struct was not all there.
  EXPECT_CALL(fs_, getattr(_, _, _)).Times(0);
  EXPECT_CALL(fs_, setattr(_, _, _)).Times(0);
  EXPECT_CALL(fs_, mknod(_, _, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, rename(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, link(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, open(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, opendir(_, _, _)).Times(0);
  EXPECT_CALL(fs_, create(_, _, _, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, read(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, write(_, _, _, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, release(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, releasedir(_, _, _)).Times(0);
  EXPECT_CALL(fs_, fsync(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, fsyncdir(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, flush(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, access(_, _, _)).Times(0);
  EXPECT_CALL(fs_, lseek(_, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, fallocate(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, syncfs(_, _)).Times(0);
  EXPECT_CALL(fs_, readdir(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, unlink(_, _, _)).Times(0);
  EXPECT_CALL(fs_, rmdir(_, _, _)).Times(0);
  EXPECT_CALL(fs_, symlink(_, _, _, _, _)).Times(0);
  for (const auto& c : cases) {
    SCOPED_TRACE("opcode " + std::to_string(c.opcode));
    // The body is the struct minus its last byte (for name ops: nothing).
    Body b;
    b.raw(std::string(c.min_body - 1, '\x01'));
    expect_error(send(c.opcode, 4, b), EINVAL);
  }
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

TEST_F(MalformedTest, ForgetWithShortBodyIsDropped) {
  EXPECT_CALL(fs_, forget(_, _)).Times(0);
  EXPECT_EQ(send(FUSE_FORGET, 3, Body().raw("1234567")).returned, 0u);
  expect_alive();
}

TEST_F(MalformedTest, NameWithoutNul) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().raw("abc")), EINVAL);
  expect_error(send(FUSE_MKDIR, 1, Body().obj(fuse_mkdir_in{0755, 0}).raw("abc")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, NameWithSlash) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, unlink(_, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("../etc/passwd")), EINVAL);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("/")), EINVAL);
  expect_error(send(FUSE_UNLINK, 1, Body().name("a/b")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, EmptyName) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, create(_, _, _, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("")), EINVAL);
  expect_error(send(FUSE_CREATE, 1, Body().obj(fuse_create_in{}).name("")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, NameLongerThanNameMax) {
  // A well-formed name the host cannot hold: the host's own answer,
  // ENAMETOOLONG, as the Rust virtiofsd gives (its openat fails so).
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, rename(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name(std::string(256, 'n'))), ENAMETOOLONG);
  expect_error(send(FUSE_MKDIR, 1, Body().obj(fuse_mkdir_in{0755, 0}).name(std::string(1024, 'n'))),
               ENAMETOOLONG);
  expect_error(
      send(FUSE_RENAME, 1, Body().obj(fuse_rename_in{1}).name("old").name(std::string(300, 'n'))),
      ENAMETOOLONG);
  // Beyond what any guest kernel sends (FUSE_NAME_MAX), or not a single
  // name: malformed.
  expect_error(send(FUSE_LOOKUP, 1, Body().name(std::string(100000, 'n'))), EINVAL);
  expect_error(send(FUSE_LOOKUP, 1, Body().name(std::string(300, 'n') + "/x")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, BytesAfterNameNul) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a").raw("junk")), EINVAL);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a").name("b")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, DotAndDotDotRejectedExceptForLookup) {
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, mknod(_, _, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, unlink(_, _, _)).Times(0);
  EXPECT_CALL(fs_, rmdir(_, _, _)).Times(0);
  EXPECT_CALL(fs_, link(_, _, _, _)).Times(0);
  EXPECT_CALL(fs_, create(_, _, _, _, _, _, _, _)).Times(0);
  for (std::string_view dot : {".", ".."}) {
    SCOPED_TRACE(std::string(dot));
    expect_error(send(FUSE_MKDIR, 1, Body().obj(fuse_mkdir_in{0755, 0}).name(dot)), EINVAL);
    expect_error(send(FUSE_MKNOD, 1, Body().obj(fuse_mknod_in{S_IFIFO | 0644}).name(dot)), EINVAL);
    expect_error(send(FUSE_UNLINK, 1, Body().name(dot)), EINVAL);
    expect_error(send(FUSE_RMDIR, 1, Body().name(dot)), EINVAL);
    expect_error(send(FUSE_LINK, 1, Body().obj(fuse_link_in{5}).name(dot)), EINVAL);
    expect_error(send(FUSE_CREATE, 1, Body().obj(fuse_create_in{}).name(dot)), EINVAL);
  }
  expect_alive();
  EXPECT_CALL(fs_, lookup(_, kRootInode, NameIs("..")))
      .WillOnce(Return(sample_entry(fuse::InodeId{1})));
  EXPECT_EQ(send(FUSE_LOOKUP, kRootInode.value(), Body().name("..")).error(), 0);
}

TEST_F(MalformedTest, BatchForgetCountLargerThanBody) {
  EXPECT_CALL(fs_, batch_forget(_)).Times(0);
  EXPECT_CALL(fs_, forget(_, _)).Times(0);
  Body b;
  b.obj(fuse_batch_forget_in{3, 0}).obj(fuse_forget_one{10, 1}).obj(fuse_forget_one{11, 1});
  EXPECT_EQ(send(FUSE_BATCH_FORGET, 0, b).returned, 0u);
  Body huge;
  huge.obj(fuse_batch_forget_in{0xffffffff, 0}).obj(fuse_forget_one{10, 1});
  EXPECT_EQ(send(FUSE_BATCH_FORGET, 0, huge).returned, 0u);
  EXPECT_EQ(send(FUSE_BATCH_FORGET, 0, Body().raw("abc")).returned, 0u);
  expect_alive();
}

TEST_F(MalformedTest, WriteSizeLargerThanData) {
  EXPECT_CALL(fs_, write(_, _, _, _, _, _, _, _)).Times(0);
  fuse_write_in in{};
  in.size = 12;
  expect_error(send(FUSE_WRITE, 20, Body().obj(in).raw("hello world")), EINVAL);
  in.size = 0xffffffff;
  expect_error(send(FUSE_WRITE, 20, Body().obj(in).raw("hello world")), EINVAL);
  // Fewer bytes announced than present is just as malformed.
  in.size = 5;
  expect_error(send(FUSE_WRITE, 20, Body().obj(in).raw("hello world")), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, WriteLargerThanMaxWrite) {
  EXPECT_CALL(fs_, write(_, _, _, _, _, _, _, _)).Times(0);
  fuse_write_in in{};
  in.size = (1u << 20) + 1;
  expect_error(send(FUSE_WRITE, 20, Body().obj(in).raw(std::string(in.size, 'w')), 8192), EINVAL);
  expect_alive();
}

TEST_F(MalformedTest, ReplyTooSmallForPayloadIsEioWithoutSideEffect) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, create(_, _, _, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, getattr(_, _, _)).Times(0);
  expect_error(send(FUSE_LOOKUP, 1, Body().name("a"), kHdr + sizeof(fuse_entry_out) - 1), EIO);
  expect_error(
      send(FUSE_CREATE, 1, Body().obj(fuse_create_in{}).name("a"), kHdr + sizeof(fuse_entry_out)),
      EIO);
  expect_error(send(FUSE_GETATTR, 1, Body().obj(fuse_getattr_in{}), kHdr), EIO);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

TEST_F(MalformedTest, ReplyTooSmallForHeaderGivesNoReply) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, unlink(_, _, _)).Times(0);
  Reply r = send(FUSE_LOOKUP, 1, Body().name("a"), kHdr - 1);
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);
  EXPECT_EQ(send(FUSE_UNLINK, 1, Body().name("a"), 0).returned, 0u);
  // Malformed too: still no reply.
  EXPECT_EQ(send(FUSE_LOOKUP, 1, Body().raw("a"), 4).returned, 0u);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

// A request both malformed and unanswerable. Without room for a reply
// header it is dropped before its length is looked at; with room for the
// header, a bad length is EINVAL (framing is checked first), but a body the
// opcode cannot parse is EIO when the opcode's fixed reply does not fit (the
// room is checked before the body is read).
TEST_F(MalformedTest, MalformedAndUnanswerable) {
  EXPECT_CALL(fs_, lookup(_, _, _)).Times(0);
  EXPECT_CALL(fs_, getattr(_, _, _)).Times(0);
  Bytes req = make_request(FUSE_LOOKUP, 1, Body().name("abc"));
  reinterpret_cast<fuse_in_header*>(req.data())->len += 1;
  Reply r = send(req, kHdr - 1);
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);
  expect_error(send(req, kHdr), EINVAL);
  expect_error(send(FUSE_GETATTR, 1, Body().raw("x"), kHdr), EIO);
  expect_error(send(FUSE_GETATTR, 1, Body().raw("x")), EINVAL);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

TEST_F(MalformedTest, ForgetNeedsNoReplyRoom) {
  EXPECT_CALL(fs_, forget(fuse::InodeId{7}, 1));
  EXPECT_EQ(send(FUSE_FORGET, 7, Body().obj(fuse_forget_in{1}), 0).returned, 0u);
}

// ---------------------------------------------------------------------------

TEST_F(OpTest, ConcurrentRequests) {
  EXPECT_CALL(fs_, getattr(_, _, _))
      .WillRepeatedly(
          Invoke([](const Context&, InodeId ino, std::optional<HandleId>) -> Result<AttrReply> {
            AttrReply a;
            a.attr.st_ino = ino.value();
            return a;
          }));
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        uint64_t ino = t * 1000 + i;
        Bytes req = make_request(FUSE_GETATTR, ino, Body().obj(fuse_getattr_in{}), ino);
        Bytes buf(256);
        IovecReader reader(cut(req));
        IovecWriter writer(cut(buf));
        size_t n = server_.handle(reader, writer);
        fuse_out_header h{};
        fuse_attr_out a{};
        std::memcpy(&h, buf.data(), sizeof(h));
        std::memcpy(&a, buf.data() + kHdr, sizeof(a));
        if (n != kHdr + sizeof(a) || h.unique != ino || a.attr.ino != ino) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace vfsd::fuse
