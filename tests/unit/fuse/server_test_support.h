// Shared by the fuse::Server tests: a mocked FileSystem, request bodies,
// uneven segmenting of request and reply buffers, and the test fixture.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "fuse/abi_ext.h"
#include "fuse/server.h"
#include "support/fuse_codec.h"

namespace vfsd::fuse::testsupport {

using namespace std::chrono_literals;
using ::testing::_;
using ::testing::NiceMock;
using ::testing::Return;

using Bytes = std::vector<uint8_t>;

class MockFs : public FileSystem {
 public:
  MOCK_METHOD(Result<InitReply>, init, (const InitRequest&), (override));
  MOCK_METHOD(void, destroy, (), (override));
  MOCK_METHOD(Result<Entry>, lookup, (const Context&, InodeId, const Name&), (override));
  MOCK_METHOD(void, forget, (InodeId, uint64_t), (override));
  MOCK_METHOD(void, batch_forget, ((std::span<const std::pair<InodeId, uint64_t>>)), (override));
  MOCK_METHOD(Result<AttrReply>, getattr, (const Context&, InodeId, std::optional<HandleId>),
              (override));
  MOCK_METHOD(Result<AttrReply>, setattr, (const Context&, InodeId, const SetattrRequest&),
              (override));
  MOCK_METHOD(Result<std::string>, readlink, (const Context&, InodeId), (override));
  MOCK_METHOD(Result<Entry>, symlink,
              (const Context&, InodeId, const Name&, std::string_view, const Extensions&),
              (override));
  MOCK_METHOD(Result<Entry>, mknod,
              (const Context&, InodeId, const Name&, mode_t, dev_t, mode_t, const Extensions&),
              (override));
  MOCK_METHOD(Result<Entry>, mkdir,
              (const Context&, InodeId, const Name&, mode_t, mode_t, const Extensions&),
              (override));
  MOCK_METHOD(VoidResult, unlink, (const Context&, InodeId, const Name&), (override));
  MOCK_METHOD(VoidResult, rmdir, (const Context&, InodeId, const Name&), (override));
  MOCK_METHOD(VoidResult, rename,
              (const Context&, InodeId, const Name&, InodeId, const Name&, uint32_t), (override));
  MOCK_METHOD(Result<Entry>, link, (const Context&, InodeId, InodeId, const Name&), (override));
  MOCK_METHOD(Result<OpenReply>, open, (const Context&, InodeId, uint32_t, bool), (override));
  MOCK_METHOD((Result<std::pair<Entry, OpenReply>>), create,
              (const Context&, InodeId, const Name&, mode_t, uint32_t, mode_t, bool,
               const Extensions&),
              (override));
  MOCK_METHOD(Result<size_t>, read,
              (const Context&, InodeId, HandleId, IovecWriter&, uint32_t, uint64_t), (override));
  MOCK_METHOD(Result<size_t>, write,
              (const Context&, InodeId, HandleId, IovecReader&, uint32_t, uint64_t, uint32_t,
               std::optional<uint32_t>),
              (override));
  MOCK_METHOD(VoidResult, flush, (const Context&, InodeId, HandleId, uint64_t), (override));
  MOCK_METHOD(VoidResult, fsync, (const Context&, InodeId, HandleId, bool), (override));
  MOCK_METHOD(VoidResult, release, (const Context&, InodeId, HandleId, uint32_t), (override));
  MOCK_METHOD(Result<struct statvfs>, statfs, (const Context&, InodeId), (override));
  MOCK_METHOD(VoidResult, access, (const Context&, InodeId, uint32_t), (override));
  MOCK_METHOD(Result<uint64_t>, lseek, (const Context&, InodeId, HandleId, uint64_t, uint32_t),
              (override));
  MOCK_METHOD(VoidResult, fallocate,
              (const Context&, InodeId, HandleId, uint32_t, uint64_t, uint64_t), (override));
  MOCK_METHOD(VoidResult, syncfs, (const Context&, InodeId), (override));
  MOCK_METHOD(Result<OpenReply>, opendir, (const Context&, InodeId, uint32_t), (override));
  MOCK_METHOD(VoidResult, readdir, (const Context&, InodeId, HandleId, uint64_t, bool, DirSink&),
              (override));
  MOCK_METHOD(VoidResult, fsyncdir, (const Context&, InodeId, HandleId, bool), (override));
  MOCK_METHOD(VoidResult, releasedir, (const Context&, InodeId, HandleId), (override));
  MOCK_METHOD(Result<XattrReply>, getxattr, (const Context&, InodeId, std::string_view, uint32_t),
              (override));
  MOCK_METHOD(VoidResult, setxattr,
              (const Context&, InodeId, std::string_view, std::string_view, uint32_t, uint32_t),
              (override));
  MOCK_METHOD(Result<XattrReply>, listxattr, (const Context&, InodeId, uint32_t), (override));
  MOCK_METHOD(VoidResult, removexattr, (const Context&, InodeId, std::string_view), (override));
  MOCK_METHOD(Result<size_t>, copy_file_range,
              (const Context&, InodeId, HandleId, uint64_t, InodeId, HandleId, uint64_t, uint64_t,
               uint64_t),
              (override));
  MOCK_METHOD((Result<std::pair<Entry, OpenReply>>), tmpfile,
              (const Context&, InodeId, mode_t, uint32_t, mode_t, const Extensions&), (override));
  MOCK_METHOD(Result<IoctlReply>, ioctl,
              (const Context&, InodeId, HandleId, uint32_t, uint32_t, std::string_view, uint32_t),
              (override));
  MOCK_METHOD(Result<FileLock>, getlk,
              (const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t), (override));
  MOCK_METHOD(VoidResult, setlk,
              (const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t), (override));
  MOCK_METHOD(void, setlkw,
              (const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t, uint64_t,
               std::function<void(VoidResult)>),
              (override));
  MOCK_METHOD(void, interrupt, (uint64_t), (override));
};

MATCHER_P(NameIs, expected, "") {
  return arg.view() == std::string_view(expected);
}
MATCHER_P3(CtxIs, uid, gid, pid, "") {
  return arg.uid == uid && arg.gid == gid && arg.pid == static_cast<pid_t>(pid);
}

// A request's body, built by the shared request builder; make_request()
// (and the fixture's send) put the header on it.
class Body {
 public:
  template <class T>
  Body& obj(const T& v) {
    b_.add(v);
    return *this;
  }
  // Appends the string's bytes plus a NUL.
  Body& name(std::string_view s) {
    b_.add_name(s);
    return *this;
  }
  Body& raw(std::string_view s) {
    b_.add_bytes(s);
    return *this;
  }
  const Bytes& bytes() const { return b_.body(); }
  size_t size() const { return bytes().size(); }

 private:
  ::vfsd::test::RequestBuilder b_{0, 0, 0};
};

inline constexpr uint64_t kUnique = 0x1122334455667788;
inline constexpr uint32_t kUid = 1000, kGid = 1001, kPid = 4242;
inline constexpr size_t kHdr = sizeof(fuse_out_header);

inline Bytes make_request(uint32_t opcode, uint64_t nodeid, const Body& body = {},
                          uint64_t unique = kUnique) {
  return ::vfsd::test::RequestBuilder(opcode, nodeid, unique)
      .creds(kUid, kGid, kPid)
      .add_bytes(body.bytes().data(), body.size())
      .finish();
}

// Cuts `buf` into uneven segments (3, 13, 1, 24, 7, 50 bytes, repeating).
inline IovecList cut(Bytes& buf) {
  static constexpr size_t kSizes[] = {3, 13, 1, 24, 7, 50};
  IovecList out;
  size_t off = 0;
  for (size_t i = 0; off < buf.size(); ++i) {
    size_t n = std::min(kSizes[i % std::size(kSizes)], buf.size() - off);
    out.push_back({buf.data() + off, n});
    off += n;
  }
  return out;
}

struct Reply {
  size_t returned = 0;
  Bytes buf;
  fuse_out_header hdr() const {
    fuse_out_header h{};
    std::memcpy(&h, buf.data(), sizeof(h));
    return h;
  }
  int32_t error() const { return hdr().error; }
  template <class T>
  T at(size_t payload_offset = 0) const {
    T v{};
    std::memcpy(&v, buf.data() + kHdr + payload_offset, sizeof(T));
    return v;
  }
};

class ServerTest : public ::testing::Test {
 protected:
  explicit ServerTest(ServerOptions options = {}) : server_(fs_, options) {
    // A SETLKW the test did not expect must fail, not leave the synchronous
    // fallback waiting forever.
    ON_CALL(fs_, setlkw(_, _, _, _, _, _, _, _))
        .WillByDefault([](const Context&, InodeId, HandleId, uint64_t, const FileLock&, uint32_t,
                          uint64_t, std::function<void(VoidResult)> done) { done(fail(ENOSYS)); });
  }

  Reply send(Bytes request, size_t reply_room = 8192) {
    Reply r;
    r.buf.assign(reply_room, 0xee);
    IovecReader reader(cut(request));
    IovecWriter writer(cut(r.buf));
    r.returned = server_.handle(reader, writer);
    return r;
  }
  Reply send(uint32_t opcode, uint64_t nodeid, const Body& body = {}, size_t reply_room = 8192) {
    return send(make_request(opcode, nodeid, body), reply_room);
  }

  static Body init_body(uint32_t major = 7, uint32_t minor = 38, uint64_t flags = ~0ull) {
    fuse_init_in in{};
    in.major = major;
    in.minor = minor;
    in.max_readahead = 128 * 1024;
    in.flags = static_cast<uint32_t>(flags) | FUSE_INIT_EXT;
    in.flags2 = static_cast<uint32_t>(flags >> 32);
    return Body().obj(in);
  }

  void init() {
    Reply r = send(FUSE_INIT, 0, init_body());
    ASSERT_EQ(r.error(), 0);
    ASSERT_TRUE(server_.initialized());
  }

  // Asserts that a well-formed request is still served normally.
  void expect_alive() {
    EXPECT_CALL(fs_, getattr(_, InodeId{5}, std::optional<HandleId>()))
        .WillOnce(Return(AttrReply{}))
        .RetiresOnSaturation();
    fuse_getattr_in in{};
    Reply r = send(FUSE_GETATTR, 5, Body().obj(in));
    EXPECT_EQ(r.returned, kHdr + sizeof(fuse_attr_out));
    EXPECT_EQ(r.error(), 0);
    EXPECT_EQ(r.hdr().unique, kUnique);
  }

  void expect_error(const Reply& r, int error) {
    EXPECT_EQ(r.returned, kHdr);
    EXPECT_EQ(r.hdr().len, kHdr);
    EXPECT_EQ(r.error(), -error);
    EXPECT_EQ(r.hdr().unique, kUnique);
  }

  NiceMock<MockFs> fs_;
  Server server_;
};

inline Entry sample_entry(InodeId ino) {
  Entry e;
  e.inode = ino;
  e.generation = 7;
  e.attr.st_ino = 1000 + ino.value();
  e.attr.st_mode = S_IFREG | 0644;
  e.attr.st_size = 12345;
  e.attr.st_mtim = {1700000000, 999};
  e.attr.st_blksize = 4096;
  e.entry_timeout = 1500ms;
  e.attr_timeout = 2s;
  return e;
}

inline void expect_entry_out(const fuse_entry_out& out, InodeId ino) {
  EXPECT_EQ(out.nodeid, ino.value());
  EXPECT_EQ(out.generation, 7u);
  EXPECT_EQ(out.entry_valid, 1u);
  EXPECT_EQ(out.entry_valid_nsec, 500'000'000u);
  EXPECT_EQ(out.attr_valid, 2u);
  EXPECT_EQ(out.attr_valid_nsec, 0u);
  EXPECT_EQ(out.attr.ino, 1000 + ino.value());
  EXPECT_EQ(out.attr.mode, static_cast<uint32_t>(S_IFREG | 0644));
  EXPECT_EQ(out.attr.size, 12345u);
  EXPECT_EQ(out.attr.mtime, 1700000000u);
  EXPECT_EQ(out.attr.mtimensec, 999u);
  EXPECT_EQ(out.attr.blksize, 4096u);
}

class OpTest : public ServerTest {
 protected:
  void SetUp() override { init(); }
};

}  // namespace vfsd::fuse::testsupport
