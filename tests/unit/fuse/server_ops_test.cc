// fuse::Server for the operations beyond the backbone: extended attributes,
// COPY_FILE_RANGE, TMPFILE, IOCTL, locks (SETLKW deferred and synchronous),
// INTERRUPT, request extensions (supplementary groups, security context),
// and the INIT flags a filesystem requires.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <linux/limits.h>
#include <sys/xattr.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fuse/abi_ext.h"
#include "fuse/server.h"
#include "server_test_support.h"
#include "util/deferred_reply.h"

namespace vfsd::fuse {
namespace {

using namespace testsupport;
using ::testing::_;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::Invoke;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::Return;

MATCHER_P2(SecctxIs, name, value, "") {
  return arg.security_context && arg.security_context->name == std::string_view(name) &&
         arg.security_context->value == std::string_view(value);
}
MATCHER(NoSecctx, "") {
  return !arg.security_context.has_value();
}
MATCHER_P4(LockIs, start, end, type, pid, "") {
  return arg.start == static_cast<uint64_t>(start) && arg.end == static_cast<uint64_t>(end) &&
         arg.type == static_cast<uint32_t>(type) && arg.pid == static_cast<uint32_t>(pid);
}

// Sets in.total_extlen of a built request whose body ends with `ext_bytes`
// of extensions (in.len already counts them).
Bytes with_ext(Bytes req, size_t ext_bytes) {
  reinterpret_cast<fuse_in_header*>(req.data())->total_extlen =
      static_cast<uint16_t>(ext_bytes / 8);
  return req;
}

template <class T>
void append(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// A security context block exactly as the kernel builds it.
std::string secctx_block(std::string_view name, std::string_view value) {
  fuse_secctx one{};
  one.size = static_cast<uint32_t>(value.size());
  const size_t record = FUSE_REC_ALIGN(sizeof(one) + name.size() + 1 + value.size());
  fuse_secctx_header header{};
  header.size = static_cast<uint32_t>(sizeof(header) + record);
  header.nr_secctx = 1;
  std::string out;
  append(out, header);
  append(out, one);
  out.append(name);
  out.push_back('\0');
  out.append(value);
  out.resize(header.size, '\0');
  return out;
}

std::string empty_secctx_block() {
  std::string out;
  append(out, fuse_secctx_header{sizeof(fuse_secctx_header), 0});
  return out;
}

// A FUSE_EXT_GROUPS extension as the kernel builds it.
std::string groups_ext(const std::vector<uint32_t>& gids) {
  const size_t body = FUSE_REC_ALIGN(sizeof(abi::SuppGroups) + 4 * gids.size());
  fuse_ext_header header{static_cast<uint32_t>(sizeof(fuse_ext_header) + body), abi::kExtGroups};
  std::string out;
  append(out, header);
  append(out, abi::SuppGroups{static_cast<uint32_t>(gids.size())});
  for (uint32_t g : gids) append(out, g);
  out.resize(header.size, '\0');
  return out;
}

// A session with the given filesystem flags and guest protocol minor.
class SessionTest : public ServerTest {
 protected:
  void start(uint64_t wanted, uint32_t minor = 38) {
    EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{wanted, 0}));
    Reply r = send(FUSE_INIT, 0, init_body(7, minor));
    ASSERT_EQ(r.error(), 0);
    ASSERT_EQ(server_.agreed_flags() & wanted, wanted);
  }

  // A MKDIR of "dir" in 1 carrying `ext` as its extension area.
  Bytes mkdir_with_ext(const std::string& ext) {
    Body body;
    body.obj(fuse_mkdir_in{0755, 022}).name("dir").raw(ext);
    return with_ext(make_request(FUSE_MKDIR, 1, body), ext.size());
  }
};

// ---------------------------------------------------------------------------
// Extended attributes

TEST_F(OpTest, GetxattrSizeQuery) {
  EXPECT_CALL(fs_,
              getxattr(CtxIs(kUid, kGid, kPid), fuse::InodeId{5}, std::string_view("user.foo"), 0u))
      .WillOnce(Return(XattrReply{"", 42}));
  Reply r = send(FUSE_GETXATTR, 5, Body().obj(fuse_getxattr_in{0, 0}).name("user.foo"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_getxattr_out));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.at<fuse_getxattr_out>().size, 42u);
}

TEST_F(OpTest, GetxattrValue) {
  EXPECT_CALL(fs_, getxattr(_, fuse::InodeId{5}, std::string_view("user.foo"), 100u))
      .WillOnce(Return(XattrReply{"hello", 5}));
  Reply r = send(FUSE_GETXATTR, 5, Body().obj(fuse_getxattr_in{100, 0}).name("user.foo"));
  ASSERT_EQ(r.returned, kHdr + 5);
  EXPECT_EQ(r.hdr().len, kHdr + 5);
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.buf.data() + kHdr), 5), "hello");
}

TEST_F(OpTest, GetxattrValueLongerThanAskedIsErange) {
  EXPECT_CALL(fs_, getxattr(_, _, _, 4u)).WillOnce(Return(XattrReply{"0123456789", 10}));
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(fuse_getxattr_in{4, 0}).name("user.x")), ERANGE);
}

TEST_F(OpTest, GetxattrSizeIsCappedAtXattrSizeMax) {
  EXPECT_CALL(fs_, getxattr(_, _, _, uint32_t{XATTR_SIZE_MAX}))
      .WillOnce(Return(XattrReply{"v", 1}));
  Reply r = send(FUSE_GETXATTR, 5, Body().obj(fuse_getxattr_in{1u << 30, 0}).name("user.x"));
  EXPECT_EQ(r.returned, kHdr + 1);
}

TEST_F(OpTest, GetxattrErrorPassesThrough) {
  EXPECT_CALL(fs_, getxattr(_, _, _, _)).WillOnce(Return(fail(ENODATA)));
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(fuse_getxattr_in{}).name("user.x")), ENODATA);
}

TEST_F(OpTest, GetxattrMalformed) {
  EXPECT_CALL(fs_, getxattr(_, _, _, _)).Times(0);
  const fuse_getxattr_in in{16, 0};
  expect_error(send(FUSE_GETXATTR, 5, Body().raw("1234567")), EINVAL);         // short struct
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(in).raw("user.x")), EINVAL);  // no NUL
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(in).name("")), EINVAL);       // empty
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(in).name(std::string(256, 'a'))), EINVAL);
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(in).name("user.x").raw("z")), EINVAL);
  expect_error(send(FUSE_GETXATTR, 5, Body().obj(in).raw(std::string("us\0er\0", 6))), EINVAL);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  // The longest valid name still works.
  EXPECT_CALL(fs_, getxattr(_, fuse::InodeId{5}, std::string_view(std::string(255, 'a')), 16u))
      .WillOnce(Return(XattrReply{"", 0}));
  EXPECT_EQ(send(FUSE_GETXATTR, 5, Body().obj(in).name(std::string(255, 'a'))).error(), 0);
  expect_alive();
}

TEST_F(OpTest, ListxattrSizeQueryAndNames) {
  EXPECT_CALL(fs_, listxattr(CtxIs(kUid, kGid, kPid), fuse::InodeId{6}, 0u))
      .WillOnce(Return(XattrReply{"", 17}));
  Reply q = send(FUSE_LISTXATTR, 6, Body().obj(fuse_getxattr_in{0, 0}));
  ASSERT_EQ(q.returned, kHdr + sizeof(fuse_getxattr_out));
  EXPECT_EQ(q.at<fuse_getxattr_out>().size, 17u);

  const std::string names("user.a\0user.bc\0", 15);
  EXPECT_CALL(fs_, listxattr(_, fuse::InodeId{6}, 64u))
      .WillOnce(Return(XattrReply{names, names.size()}));
  Reply r = send(FUSE_LISTXATTR, 6, Body().obj(fuse_getxattr_in{64, 0}));
  ASSERT_EQ(r.returned, kHdr + names.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.buf.data() + kHdr), names.size()), names);

  EXPECT_CALL(fs_, listxattr(_, fuse::InodeId{6}, 4u))
      .WillOnce(Return(XattrReply{names, names.size()}));
  expect_error(send(FUSE_LISTXATTR, 6, Body().obj(fuse_getxattr_in{4, 0})), ERANGE);
  EXPECT_CALL(fs_, listxattr(_, _, _)).Times(0);
  expect_error(send(FUSE_LISTXATTR, 6, Body().raw("123")), EINVAL);
  expect_alive();
}

// The 8-byte fuse_setxattr_in of guests without FUSE_SETXATTR_EXT.
struct CompatSetxattrIn {
  uint32_t size;
  uint32_t flags;
};
static_assert(sizeof(CompatSetxattrIn) == FUSE_COMPAT_SETXATTR_IN_SIZE);

TEST_F(OpTest, SetxattrCompatLayout) {
  // OpTest's filesystem wants nothing: SETXATTR_EXT is not agreed.
  ASSERT_EQ(server_.agreed_flags() & FUSE_SETXATTR_EXT, 0u);
  EXPECT_CALL(fs_, setxattr(CtxIs(kUid, kGid, kPid), fuse::InodeId{5}, std::string_view("user.a"),
                            std::string_view("v\0l", 3), uint32_t{XATTR_CREATE}, 0u))
      .WillOnce(Return(ok()));
  Reply r = send(FUSE_SETXATTR, 5,
                 Body().obj(CompatSetxattrIn{3, XATTR_CREATE}).name("user.a").raw({"v\0l", 3}));
  EXPECT_EQ(r.returned, kHdr);
  EXPECT_EQ(r.error(), 0);
}

TEST_F(SessionTest, SetxattrExtLayout) {
  start(FUSE_SETXATTR_EXT);
  EXPECT_CALL(fs_, setxattr(_, fuse::InodeId{5}, std::string_view("system.posix_acl_access"),
                            std::string_view("acl!"), uint32_t{XATTR_REPLACE},
                            uint32_t{FUSE_SETXATTR_ACL_KILL_SGID}))
      .WillOnce(Return(ok()));
  fuse_setxattr_in in{};
  in.size = 4;
  in.flags = XATTR_REPLACE;
  in.setxattr_flags = FUSE_SETXATTR_ACL_KILL_SGID;
  Reply r = send(FUSE_SETXATTR, 5, Body().obj(in).name("system.posix_acl_access").raw("acl!"));
  EXPECT_EQ(r.error(), 0);
  // The 8-byte layout is now too short to hold the struct and its name.
  EXPECT_CALL(fs_, setxattr(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{0, 0}).raw("ab")), EINVAL);
  expect_alive();
}

TEST_F(OpTest, SetxattrMalformed) {
  EXPECT_CALL(fs_, setxattr(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_SETXATTR, 5, Body().raw("1234567")), EINVAL);  // short struct
  // Value shorter and longer than its announced size.
  expect_error(send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{4, 0}).name("user.a").raw("v")),
               EINVAL);
  expect_error(
      send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{1, 0}).name("user.a").raw("vvvv")),
      EINVAL);
  // No NUL after the name, empty name, name of 256 bytes.
  expect_error(send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{0, 0}).raw("user.a")), EINVAL);
  expect_error(send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{1, 0}).name("").raw("v")),
               EINVAL);
  expect_error(
      send(FUSE_SETXATTR, 5, Body().obj(CompatSetxattrIn{0, 0}).name(std::string(256, 'n'))),
      EINVAL);
  // A value larger than any xattr may be: E2BIG, as setxattr(2) says.
  const std::string big(XATTR_SIZE_MAX + 1, 'x');
  expect_error(send(FUSE_SETXATTR, 5,
                    Body().obj(CompatSetxattrIn{XATTR_SIZE_MAX + 1, 0}).name("user.a").raw(big)),
               E2BIG);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  // The largest value is fine.
  const std::string max(XATTR_SIZE_MAX, 'x');
  EXPECT_CALL(
      fs_, setxattr(_, fuse::InodeId{5}, std::string_view("user.a"), std::string_view(max), 0u, 0u))
      .WillOnce(Return(ok()));
  EXPECT_EQ(send(FUSE_SETXATTR, 5,
                 Body().obj(CompatSetxattrIn{XATTR_SIZE_MAX, 0}).name("user.a").raw(max))
                .error(),
            0);
  expect_alive();
}

TEST_F(OpTest, Removexattr) {
  EXPECT_CALL(fs_,
              removexattr(CtxIs(kUid, kGid, kPid), fuse::InodeId{8}, std::string_view("user.gone")))
      .WillOnce(Return(ok()))
      .WillOnce(Return(fail(ENODATA)));
  EXPECT_EQ(send(FUSE_REMOVEXATTR, 8, Body().name("user.gone")).error(), 0);
  expect_error(send(FUSE_REMOVEXATTR, 8, Body().name("user.gone")), ENODATA);
  EXPECT_CALL(fs_, removexattr(_, _, _)).Times(0);
  expect_error(send(FUSE_REMOVEXATTR, 8, Body().raw("user.gone")), EINVAL);
  expect_error(send(FUSE_REMOVEXATTR, 8, Body().name(std::string(256, 'r'))), EINVAL);
  expect_error(send(FUSE_REMOVEXATTR, 8), EINVAL);
  expect_alive();
}

// ---------------------------------------------------------------------------
// COPY_FILE_RANGE, TMPFILE

TEST_F(OpTest, CopyFileRange) {
  fuse_copy_file_range_in in{};
  in.fh_in = 11;
  in.off_in = 4096;
  in.nodeid_out = 12;
  in.fh_out = 13;
  in.off_out = 8192;
  in.len = 65536;
  in.flags = 0;
  EXPECT_CALL(fs_, copy_file_range(CtxIs(kUid, kGid, kPid), fuse::InodeId{10}, fuse::HandleId{11},
                                   4096u, fuse::InodeId{12}, fuse::HandleId{13}, 8192u, 65536u, 0u))
      .WillOnce(Return(size_t{30000}));
  Reply r = send(FUSE_COPY_FILE_RANGE, 10, Body().obj(in));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_write_out));
  EXPECT_EQ(r.at<fuse_write_out>().size, 30000u);
}

TEST_F(OpTest, CopyFileRangeLengthFitsTheReply) {
  fuse_copy_file_range_in in{};
  in.len = uint64_t{1} << 40;
  EXPECT_CALL(fs_, copy_file_range(_, _, _, _, _, _, _, uint64_t{0xfffff000}, _))
      .WillOnce(Return(size_t{0xfffff000}));
  Reply r = send(FUSE_COPY_FILE_RANGE, 10, Body().obj(in));
  EXPECT_EQ(r.at<fuse_write_out>().size, 0xfffff000u);
  EXPECT_CALL(fs_, copy_file_range(_, _, _, _, _, _, _, _, _)).WillOnce(Return(fail(EXDEV)));
  expect_error(send(FUSE_COPY_FILE_RANGE, 10, Body().obj(in)), EXDEV);
}

TEST_F(OpTest, Tmpfile) {
  fuse_create_in in{};
  in.flags = O_RDWR | O_TMPFILE;
  in.mode = S_IFREG | 0600;
  in.umask = 022;
  EXPECT_CALL(fs_, tmpfile(CtxIs(kUid, kGid, kPid), fuse::InodeId{3}, mode_t{S_IFREG | 0600},
                           uint32_t{O_RDWR | O_TMPFILE}, mode_t{022}, _))
      .WillOnce(Return(std::make_pair(sample_entry(fuse::InodeId{40}),
                                      OpenReply{fuse::HandleId{77}, FOPEN_KEEP_CACHE})));
  // The kernel sends the name of vfs_tmpfile()'s dentry, "/".
  Reply r = send(FUSE_TMPFILE, 3, Body().obj(in).name("/"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.error(), 0);
  expect_entry_out(r.at<fuse_entry_out>(), fuse::InodeId{40});
  auto open = r.at<fuse_open_out>(sizeof(fuse_entry_out));
  EXPECT_EQ(open.fh, 77u);
  EXPECT_EQ(open.open_flags, uint32_t{FOPEN_KEEP_CACHE});
}

TEST_F(OpTest, TmpfileMalformed) {
  EXPECT_CALL(fs_, tmpfile(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_TMPFILE, 3, Body().raw(std::string(sizeof(fuse_create_in) - 1, 'c'))),
               EINVAL);
  expect_error(send(FUSE_TMPFILE, 3, Body().obj(fuse_create_in{}).raw("/")), EINVAL);  // no NUL
  expect_error(send(FUSE_TMPFILE, 3, Body().obj(fuse_create_in{}).name("/").raw("x")), EINVAL);
  // No room for entry + open: nothing is created.
  expect_error(send(FUSE_TMPFILE, 3, Body().obj(fuse_create_in{}).name("/"), kHdr + 100), EIO);
  expect_alive();
}

// ---------------------------------------------------------------------------
// IOCTL

fuse_ioctl_in ioctl_in(uint32_t flags, uint32_t cmd, uint32_t in_size, uint32_t out_size) {
  fuse_ioctl_in in{};
  in.fh = 21;
  in.flags = flags;
  in.cmd = cmd;
  in.arg = 0xdeadbeef;
  in.in_size = in_size;
  in.out_size = out_size;
  return in;
}

TEST_F(OpTest, IoctlPassesInputAndReturnsOutput) {
  constexpr uint32_t kCmd = 0x40086602;  // FS_IOC_SETFLAGS
  constexpr uint32_t kFlags = FUSE_IOCTL_32BIT | FUSE_IOCTL_DIR;
  EXPECT_CALL(fs_, ioctl(CtxIs(kUid, kGid, kPid), fuse::InodeId{9}, fuse::HandleId{21}, kFlags,
                         kCmd, std::string_view("abcd"), 8u))
      .WillOnce(Return(IoctlReply{7, "xyz"}));
  Reply r = send(FUSE_IOCTL, 9, Body().obj(ioctl_in(kFlags, kCmd, 4, 8)).raw("abcd"));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_ioctl_out) + 3);
  EXPECT_EQ(r.error(), 0);
  auto out = r.at<fuse_ioctl_out>();
  EXPECT_EQ(out.result, 7);
  EXPECT_EQ(out.flags, 0u);
  EXPECT_EQ(out.in_iovs, 0u);
  EXPECT_EQ(out.out_iovs, 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.buf.data() + kHdr + sizeof(out)), 3),
            "xyz");
}

TEST_F(OpTest, IoctlErrorAndNegativeResult) {
  EXPECT_CALL(fs_, ioctl(_, _, _, _, _, _, _))
      .WillOnce(Return(fail(ENOTTY)))
      .WillOnce(Return(IoctlReply{-EPERM, ""}));
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 0, 0))), ENOTTY);
  Reply r = send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 0, 0)));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_ioctl_out));
  EXPECT_EQ(r.at<fuse_ioctl_out>().result, -EPERM);
}

TEST_F(OpTest, IoctlOutSizeIsBoundedByReplyRoom) {
  EXPECT_CALL(fs_, ioctl(_, _, _, _, _, _, 10u)).WillOnce(Return(IoctlReply{0, "0123456789"}));
  Reply r =
      send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 0, 4096)), kHdr + sizeof(fuse_ioctl_out) + 10);
  EXPECT_EQ(r.returned, kHdr + sizeof(fuse_ioctl_out) + 10);
}

TEST_F(OpTest, IoctlMalformed) {
  EXPECT_CALL(fs_, ioctl(_, _, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_IOCTL, 9, Body().raw(std::string(sizeof(fuse_ioctl_in) - 1, 'i'))),
               EINVAL);
  // in_size larger, then smaller, than the bytes that follow.
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 5, 0)).raw("abcd")), EINVAL);
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 3, 0)).raw("abcd")), EINVAL);
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 0xffffffff, 0))), EINVAL);
  // Unrestricted ioctls are refused (the guest's caller sees ENOTTY).
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(FUSE_IOCTL_UNRESTRICTED, 1, 0, 0))), ENOSYS);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  // A filesystem that returns more than out_size cannot overflow the guest.
  EXPECT_CALL(fs_, ioctl(_, _, _, _, _, _, 2u)).WillOnce(Return(IoctlReply{0, "toolong"}));
  expect_error(send(FUSE_IOCTL, 9, Body().obj(ioctl_in(0, 1, 0, 2))), EIO);
  expect_alive();
}

// ---------------------------------------------------------------------------
// Locks

fuse_lk_in lk_in(uint32_t type, uint64_t start, uint64_t end, uint32_t lk_flags = 0) {
  fuse_lk_in in{};
  in.fh = 33;
  in.owner = 0xabcdef;
  in.lk.start = start;
  in.lk.end = end;
  in.lk.type = type;
  in.lk.pid = 77;
  in.lk_flags = lk_flags;
  return in;
}

constexpr uint64_t kOffsetMax = std::numeric_limits<int64_t>::max();

TEST_F(OpTest, Getlk) {
  EXPECT_CALL(fs_, getlk(CtxIs(kUid, kGid, kPid), fuse::InodeId{5}, fuse::HandleId{33}, 0xabcdefu,
                         LockIs(10, 20, F_WRLCK, 77), 0u))
      .WillOnce(Return(FileLock{0, kOffsetMax, F_RDLCK, 4321}));
  Reply r = send(FUSE_GETLK, 5, Body().obj(lk_in(F_WRLCK, 10, 20)));
  ASSERT_EQ(r.returned, kHdr + sizeof(fuse_lk_out));
  auto out = r.at<fuse_lk_out>();
  EXPECT_EQ(out.lk.start, 0u);
  EXPECT_EQ(out.lk.end, kOffsetMax);
  EXPECT_EQ(out.lk.type, uint32_t{F_RDLCK});
  EXPECT_EQ(out.lk.pid, 4321u);
}

TEST_F(OpTest, SetlkPosixAndFlock) {
  EXPECT_CALL(fs_, setlk(_, fuse::InodeId{5}, fuse::HandleId{33}, 0xabcdefu,
                         LockIs(0, kOffsetMax, F_UNLCK, 77), 0u))
      .WillOnce(Return(ok()));
  EXPECT_CALL(fs_, setlk(_, fuse::InodeId{5}, fuse::HandleId{33}, 0xabcdefu,
                         LockIs(0, kOffsetMax, F_WRLCK, 77), uint32_t{FUSE_LK_FLOCK}))
      .WillOnce(Return(fail(EAGAIN)));
  EXPECT_EQ(send(FUSE_SETLK, 5, Body().obj(lk_in(F_UNLCK, 0, kOffsetMax))).error(), 0);
  expect_error(send(FUSE_SETLK, 5, Body().obj(lk_in(F_WRLCK, 0, kOffsetMax, FUSE_LK_FLOCK))),
               EAGAIN);
}

TEST_F(OpTest, LocksMalformed) {
  EXPECT_CALL(fs_, getlk(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, setlk(_, _, _, _, _, _)).Times(0);
  EXPECT_CALL(fs_, setlkw(_, _, _, _, _, _, _, _)).Times(0);
  for (uint32_t op : {FUSE_GETLK, FUSE_SETLK, FUSE_SETLKW}) {
    SCOPED_TRACE("opcode " + std::to_string(op));
    expect_error(send(op, 5, Body().raw(std::string(sizeof(fuse_lk_in) - 1, 'l'))), EINVAL);
    expect_error(send(op, 5, Body().obj(lk_in(7, 0, 10))), EINVAL);         // unknown type
    expect_error(send(op, 5, Body().obj(lk_in(F_RDLCK, 11, 10))), EINVAL);  // start > end
    expect_error(send(op, 5, Body().obj(lk_in(F_RDLCK, 0, kOffsetMax + 1))), EINVAL);
  }
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

// A transport's deferred reply over a buffer the test keeps.
struct DeferredState {
  Bytes buf = Bytes(256, 0xee);
  std::atomic<int> defers{0};
  std::atomic<int> finishes{0};
  std::atomic<size_t> bytes{0};
};

class FakeDeferred final : public DeferredReply {
 public:
  explicit FakeDeferred(DeferredState& state) : state_(state), writer_(cut(state.buf)) {}
  IovecWriter& writer() override { return writer_; }
  void finish(size_t bytes) override {
    state_.bytes = bytes;
    ++state_.finishes;
  }

 private:
  DeferredState& state_;
  IovecWriter writer_;
};

class FakeDeferrer final : public ReplyDeferrer {
 public:
  explicit FakeDeferrer(DeferredState& state, bool accept = true)
      : state_(state), accept_(accept) {}
  std::unique_ptr<DeferredReply> defer() override {
    ++state_.defers;
    if (!accept_) return nullptr;
    return std::make_unique<FakeDeferred>(state_);
  }

 private:
  DeferredState& state_;
  bool accept_;
};

class SetlkwTest : public OpTest {
 protected:
  // Sends a SETLKW through `deferrer` (the transport's buffers are the
  // deferred state's, as a real transport hands out the request's own).
  size_t send_setlkw(ReplyDeferrer* deferrer, Bytes& reply_buf) {
    Bytes req = make_request(FUSE_SETLKW, 5, Body().obj(lk_in(F_WRLCK, 0, 99)));
    IovecReader reader(cut(req));
    IovecWriter writer(cut(reply_buf));
    return server_.handle(reader, writer, deferrer);
  }
  static fuse_out_header header_of(const Bytes& buf) {
    fuse_out_header h{};
    std::memcpy(&h, buf.data(), sizeof(h));
    return h;
  }
};

TEST_F(SetlkwTest, DeferredReplyAppearsWhenTheFilesystemIsDone) {
  DeferredState state;
  FakeDeferrer deferrer(state);
  std::function<void(VoidResult)> done;
  EXPECT_CALL(fs_, setlkw(CtxIs(kUid, kGid, kPid), fuse::InodeId{5}, fuse::HandleId{33}, 0xabcdefu,
                          LockIs(0, 99, F_WRLCK, 77), 0u, kUnique, _))
      .WillOnce(Invoke([&](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                           uint64_t, std::function<void(VoidResult)> d) { done = d; }));
  // handle() must return without the wait having ended; if it blocks, end
  // the wait so that the failure is reported rather than hanging.
  auto handled = std::async(std::launch::async, [&] { return send_setlkw(&deferrer, state.buf); });
  if (handled.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    ADD_FAILURE() << "SETLKW blocked the calling worker";
    done(fail(EIO));
  }
  EXPECT_EQ(handled.get(), 0u);
  EXPECT_EQ(state.defers, 1);
  EXPECT_EQ(state.finishes, 0);
  EXPECT_EQ(state.buf[0], 0xee);  // nothing written yet
  ASSERT_TRUE(done);

  // The worker is free: other requests are served meanwhile.
  expect_alive();

  std::thread waker([&] { done(ok()); });
  waker.join();
  EXPECT_EQ(state.finishes, 1);
  EXPECT_EQ(state.bytes, kHdr);
  auto h = header_of(state.buf);
  EXPECT_EQ(h.len, kHdr);
  EXPECT_EQ(h.error, 0);
  EXPECT_EQ(h.unique, kUnique);

  // A second call (a filesystem bug) does not finish the request twice.
  done(fail(EINTR));
  EXPECT_EQ(state.finishes, 1);
  EXPECT_EQ(header_of(state.buf).error, 0);
}

TEST_F(SetlkwTest, DeferredErrorReply) {
  DeferredState state;
  FakeDeferrer deferrer(state);
  std::function<void(VoidResult)> done;
  EXPECT_CALL(fs_, setlkw(_, _, _, _, _, _, _, _))
      .WillOnce(Invoke([&](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                           uint64_t, std::function<void(VoidResult)> d) {
        done = d;
        // A server that did not defer would wait on this thread forever.
        if (state.defers == 0) d(fail(EIO));
      }));
  EXPECT_EQ(send_setlkw(&deferrer, state.buf), 0u);
  std::thread([&] { done(fail(EINTR)); }).join();
  EXPECT_EQ(state.finishes, 1);
  auto h = header_of(state.buf);
  EXPECT_EQ(h.error, -EINTR);
  EXPECT_EQ(h.unique, kUnique);
}

TEST_F(SetlkwTest, DoneCalledBeforeSetlkwReturns) {
  // A lock that is free at once: done runs inside setlkw, on the worker.
  DeferredState state;
  FakeDeferrer deferrer(state);
  EXPECT_CALL(fs_, setlkw(_, _, _, _, _, _, _, _))
      .WillOnce(Invoke([](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                          uint64_t, std::function<void(VoidResult)> done) { done(ok()); }));
  EXPECT_EQ(send_setlkw(&deferrer, state.buf), 0u);
  EXPECT_EQ(state.finishes, 1);
  EXPECT_EQ(header_of(state.buf).error, 0);
}

TEST_F(SetlkwTest, SynchronousFallbackWaitsForDone) {
  std::thread waker;
  std::atomic<bool> released{false};
  EXPECT_CALL(fs_, setlkw(_, fuse::InodeId{5}, fuse::HandleId{33}, _, _, _, kUnique, _))
      .WillOnce(Invoke([&](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                           uint64_t, std::function<void(VoidResult)> done) {
        waker = std::thread([&released, done] {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          released = true;
          done(fail(EDEADLK));
        });
      }));
  Bytes buf(256, 0xee);
  size_t n = send_setlkw(nullptr, buf);
  // handle() returned only after the other thread ended the wait.
  EXPECT_TRUE(released);
  waker.join();
  EXPECT_EQ(n, kHdr);
  EXPECT_EQ(header_of(buf).error, -EDEADLK);
  EXPECT_EQ(header_of(buf).unique, kUnique);
}

TEST_F(SetlkwTest, DeferrerThatDeclinesFallsBackToWaiting) {
  DeferredState state;
  FakeDeferrer deferrer(state, /*accept=*/false);
  EXPECT_CALL(fs_, setlkw(_, _, _, _, _, _, _, _))
      .WillOnce(Invoke([](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                          uint64_t, std::function<void(VoidResult)> done) { done(ok()); }));
  Bytes buf(256, 0xee);
  EXPECT_EQ(send_setlkw(&deferrer, buf), kHdr);
  EXPECT_EQ(state.defers, 1);
  EXPECT_EQ(header_of(buf).error, 0);
}

// ---------------------------------------------------------------------------
// Opcodes answered ENOSYS, INTERRUPT

TEST_F(OpTest, MappingPollAndBmapAreEnosys) {
  for (uint32_t op : {FUSE_BMAP, FUSE_POLL, FUSE_SETUPMAPPING, FUSE_REMOVEMAPPING}) {
    SCOPED_TRACE("opcode " + std::to_string(op));
    expect_error(send(op, 1, Body().raw(std::string(64, '\0'))), ENOSYS);
  }
  expect_alive();
}

TEST_F(OpTest, InterruptNamesTheInterruptedRequest) {
  EXPECT_CALL(fs_, interrupt(kUnique + 5));
  fuse_interrupt_in in{};
  in.unique = kUnique + 5;
  EXPECT_EQ(send(FUSE_INTERRUPT, 0, Body().obj(in)).returned, 0u);
  // A short INTERRUPT is dropped, still without a reply.
  EXPECT_CALL(fs_, interrupt(_)).Times(0);
  Reply r = send(FUSE_INTERRUPT, 0, Body().raw("1234567"));
  EXPECT_EQ(r.returned, 0u);
  EXPECT_EQ(r.buf[0], 0xee);
  expect_alive();
}

// ---------------------------------------------------------------------------
// Request extensions

TEST_F(SessionTest, SupplementaryGroupsExtension) {
  start(FUSE_CREATE_SUPP_GROUP);
  EXPECT_CALL(fs_,
              mkdir(CtxIs(kUid, kGid, kPid), fuse::InodeId{1}, NameIs("dir"), 0755, 022,
                    AllOf(Field(&Extensions::supplementary_groups, ElementsAre(100u)), NoSecctx())))
      .WillOnce(Return(sample_entry(fuse::InodeId{3})));
  EXPECT_EQ(send(mkdir_with_ext(groups_ext({100}))).error(), 0);
  // Three groups (16 bytes of body, no padding), on CREATE.
  EXPECT_CALL(fs_, create(_, fuse::InodeId{1}, NameIs("f"), _, _, _, _,
                          Field(&Extensions::supplementary_groups, ElementsAre(1u, 2u, 3u))))
      .WillOnce(Return(std::make_pair(sample_entry(fuse::InodeId{4}), OpenReply{})));
  std::string ext = groups_ext({1, 2, 3});
  EXPECT_EQ(ext.size(), 24u);
  Bytes req = with_ext(
      make_request(FUSE_CREATE, 1, Body().obj(fuse_create_in{}).name("f").raw(ext)), ext.size());
  EXPECT_EQ(send(req).error(), 0);
  // Without the extension the context has no groups.
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, Field(&Extensions::supplementary_groups, IsEmpty())))
      .WillOnce(Return(sample_entry(fuse::InodeId{5})));
  EXPECT_EQ(send(mkdir_with_ext("")).error(), 0);
}

TEST_F(SessionTest, ExtensionsRejectedUnlessNegotiated) {
  start(0);
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  expect_error(send(mkdir_with_ext(groups_ext({100}))), EINVAL);
  expect_error(send(mkdir_with_ext(empty_secctx_block())), EINVAL);
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

TEST_F(SessionTest, MalformedExtensionsAreEinval) {
  start(FUSE_CREATE_SUPP_GROUP | FUSE_SECURITY_CTX);
  auto ext_of = [](uint32_t size, uint32_t type, std::string body) {
    std::string out;
    append(out, fuse_ext_header{size, type});
    return out + body;
  };
  std::string two_groups_claimed_one = groups_ext({1, 2});
  reinterpret_cast<abi::SuppGroups*>(two_groups_claimed_one.data() + 8)->nr_groups = 1;
  std::string huge_count = groups_ext({1});
  reinterpret_cast<abi::SuppGroups*>(huge_count.data() + 8)->nr_groups = 0x40000000;
  const std::string cases[] = {
      ext_of(0, abi::kExtGroups, std::string(8, '\0')),   // size 0
      ext_of(4, abi::kExtGroups, std::string(4, '\0')),   // size below the header
      ext_of(12, abi::kExtGroups, std::string(8, '\0')),  // size not a multiple of 8
      ext_of(24, abi::kExtGroups, std::string(8, '\0')),  // size beyond the area
      ext_of(16, 33, std::string(8, '\0')),               // unknown type
      ext_of(8, abi::kExtGroups, ""),                     // no nr_groups
      two_groups_claimed_one,
      huge_count,
      groups_ext({1}) + groups_ext({2}),            // twice
      empty_secctx_block() + empty_secctx_block(),  // twice
  };
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  for (size_t i = 0; i < std::size(cases); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    expect_error(send(mkdir_with_ext(cases[i])), EINVAL);
  }
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  // Both extensions together, well formed.
  EXPECT_CALL(fs_, mkdir(_, fuse::InodeId{1}, NameIs("dir"), _, _,
                         AllOf(SecctxIs("security.selinux", "ctx"),
                               Field(&Extensions::supplementary_groups, ElementsAre(7u)))))
      .WillOnce(Return(sample_entry(fuse::InodeId{3})));
  EXPECT_EQ(send(mkdir_with_ext(secctx_block("security.selinux", "ctx") + groups_ext({7}))).error(),
            0);
  expect_alive();
}

TEST_F(SessionTest, SecurityContextExtension) {
  start(FUSE_SECURITY_CTX);
  const std::string label("system_u:object_r:tmp_t:s0\0", 27);
  EXPECT_CALL(fs_, mkdir(_, fuse::InodeId{1}, NameIs("dir"), 0755, 022,
                         SecctxIs("security.selinux", label)))
      .WillOnce(Return(sample_entry(fuse::InodeId{3})));
  EXPECT_EQ(send(mkdir_with_ext(secctx_block("security.selinux", label))).error(), 0);

  // Every creating operation carries it: SYMLINK, MKNOD, CREATE, TMPFILE.
  const std::string ext = secctx_block("security.x", "v");
  EXPECT_CALL(fs_, symlink(_, fuse::InodeId{1}, NameIs("l"), std::string_view("t"),
                           SecctxIs("security.x", "v")))
      .WillOnce(Return(sample_entry(fuse::InodeId{4})));
  EXPECT_EQ(
      send(with_ext(make_request(FUSE_SYMLINK, 1, Body().name("l").name("t").raw(ext)), ext.size()))
          .error(),
      0);
  EXPECT_CALL(fs_, mknod(_, fuse::InodeId{1}, NameIs("n"), _, _, _, SecctxIs("security.x", "v")))
      .WillOnce(Return(sample_entry(fuse::InodeId{5})));
  EXPECT_EQ(
      send(with_ext(make_request(FUSE_MKNOD, 1, Body().obj(fuse_mknod_in{}).name("n").raw(ext)),
                    ext.size()))
          .error(),
      0);
  EXPECT_CALL(fs_, tmpfile(_, fuse::InodeId{1}, _, _, _, SecctxIs("security.x", "v")))
      .WillOnce(Return(std::make_pair(sample_entry(fuse::InodeId{6}), OpenReply{})));
  EXPECT_EQ(
      send(with_ext(make_request(FUSE_TMPFILE, 1, Body().obj(fuse_create_in{}).name("/").raw(ext)),
                    ext.size()))
          .error(),
      0);

  // A header with no context (no LSM in the guest): no label.
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, NoSecctx()))
      .WillOnce(Return(sample_entry(fuse::InodeId{7})));
  EXPECT_EQ(send(mkdir_with_ext(empty_secctx_block())).error(), 0);
}

TEST_F(SessionTest, MalformedSecurityContextIsEinval) {
  start(FUSE_SECURITY_CTX);
  std::string two = secctx_block("security.a", "v");
  reinterpret_cast<fuse_secctx_header*>(two.data())->nr_secctx = 2;
  std::string zero_value = secctx_block("security.a", "");
  std::string overrun = secctx_block("security.a", "vvv");
  reinterpret_cast<fuse_secctx*>(overrun.data() + 8)->size = 100;
  std::string no_nul = secctx_block("security.a", "v");
  std::fill(no_nul.begin() + 16, no_nul.end(), 'x');
  std::string extra = secctx_block("security.a", "v");  // a whole spare record
  extra.append(8, '\0');
  reinterpret_cast<fuse_secctx_header*>(extra.data())->size += 8;
  std::string header_size_lies = secctx_block("security.a", "v");
  std::string empty_with_body = empty_secctx_block() + std::string(8, '\0');
  reinterpret_cast<fuse_secctx_header*>(empty_with_body.data())->size = 16;
  std::string long_name = secctx_block(std::string(256, 'n'), "v");
  const std::string cases[] = {two, zero_value, overrun, no_nul, extra, empty_with_body, long_name};
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  for (size_t i = 0; i < std::size(cases); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    expect_error(send(mkdir_with_ext(cases[i])), EINVAL);
  }
  ::testing::Mock::VerifyAndClearExpectations(&fs_);
  expect_alive();
}

// Before 7.38 (Linux 6.1) the block follows the name inside the body.
TEST_F(SessionTest, LegacyInlineSecurityContext) {
  start(FUSE_SECURITY_CTX, /*minor=*/37);
  const std::string block = secctx_block("security.selinux", "lbl");
  EXPECT_CALL(fs_, mkdir(_, fuse::InodeId{1}, NameIs("dir"), 0755, 022,
                         SecctxIs("security.selinux", "lbl")))
      .WillOnce(Return(sample_entry(fuse::InodeId{3})));
  EXPECT_EQ(
      send(FUSE_MKDIR, 1, Body().obj(fuse_mkdir_in{0755, 022}).name("dir").raw(block)).error(), 0);
  EXPECT_CALL(fs_, symlink(_, fuse::InodeId{1}, NameIs("l"), std::string_view("target"),
                           SecctxIs("security.selinux", "lbl")))
      .WillOnce(Return(sample_entry(fuse::InodeId{4})));
  EXPECT_EQ(send(FUSE_SYMLINK, 1, Body().name("l").name("target").raw(block)).error(), 0);
  EXPECT_CALL(fs_, create(_, fuse::InodeId{1}, NameIs("f"), _, _, _, _, NoSecctx()))
      .WillOnce(Return(std::make_pair(sample_entry(fuse::InodeId{5}), OpenReply{})));
  EXPECT_EQ(send(FUSE_CREATE, 1, Body().obj(fuse_create_in{}).name("f").raw(empty_secctx_block()))
                .error(),
            0);
  // Garbage after the name is still garbage.
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_MKDIR, 1, Body().obj(fuse_mkdir_in{}).name("dir").raw("12345678")),
               EINVAL);
  // Not on operations that create nothing.
  EXPECT_CALL(fs_, unlink(_, _, _)).Times(0);
  expect_error(send(FUSE_UNLINK, 1, Body().name("dir").raw(block)), EINVAL);
  expect_alive();
}

TEST_F(SessionTest, InlineSecurityContextOnlyBefore738) {
  start(FUSE_SECURITY_CTX, /*minor=*/38);
  EXPECT_CALL(fs_, mkdir(_, _, _, _, _, _)).Times(0);
  expect_error(send(FUSE_MKDIR, 1,
                    Body().obj(fuse_mkdir_in{}).name("dir").raw(secctx_block("security.a", "v"))),
               EINVAL);
  expect_alive();
}

// ---------------------------------------------------------------------------
// INIT: flags the filesystem requires

TEST_F(ServerTest, RequiredFlagsMissingIsEproto) {
  const uint64_t acl = FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT;
  {
    ::testing::InSequence seq;
    EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{0, acl}));
    // The filesystem's half-started session is ended again.
    EXPECT_CALL(fs_, destroy());
    EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{0, acl}));
  }
  expect_error(send(FUSE_INIT, 0, init_body(7, 38, FUSE_POSIX_ACL | FUSE_DONT_MASK)), EPROTO);
  EXPECT_FALSE(server_.initialized());
  expect_error(send(FUSE_GETATTR, 1, Body().obj(fuse_getattr_in{})), EIO);

  // A guest that offers them gets them, though the filesystem did not list
  // them as wanted.
  Reply r = send(FUSE_INIT, 0, init_body(7, 38, acl | FUSE_ASYNC_READ));
  ASSERT_EQ(r.error(), 0);
  EXPECT_TRUE(server_.initialized());
  auto out = r.at<fuse_init_out>();
  const uint64_t agreed = out.flags | (uint64_t{out.flags2} << 32);
  EXPECT_EQ(agreed & acl, acl);
  EXPECT_EQ(server_.agreed_flags(), agreed);
}

TEST_F(ServerTest, OptionDependentFlagsComeOnlyFromTheFilesystem) {
  const uint64_t option_flags = FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV_V2 | FUSE_POSIX_ACL |
                                FUSE_DONT_MASK | FUSE_SETXATTR_EXT | FUSE_SECURITY_CTX |
                                FUSE_SUBMOUNTS | FUSE_CREATE_SUPP_GROUP |
                                FUSE_DIRECT_IO_ALLOW_MMAP | FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS;
  EXPECT_CALL(fs_, init(_)).WillOnce(Return(InitReply{})).WillOnce(Return(InitReply{option_flags}));
  Reply r = send(FUSE_INIT, 0, init_body());
  EXPECT_EQ(server_.agreed_flags() & option_flags, 0u);
  EXPECT_NE(server_.agreed_flags() & FUSE_EXPORT_SUPPORT, 0u);
  r = send(FUSE_INIT, 0, init_body());
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(server_.agreed_flags() & option_flags, option_flags);
}

}  // namespace
}  // namespace vfsd::fuse
