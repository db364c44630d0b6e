// fuse::Server over a real PassthroughFs on a fresh host directory: requests
// are encoded as bytes the way a guest kernel sends them, the replies are
// decoded, and the effect of each operation is checked on the host with
// plain syscalls (stat, read, readlink, listing).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

constexpr size_t kDefaultReplyRoom = 64 * 1024;

std::string pattern(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    out[i] = static_cast<char>(x >> 16);
  }
  return out;
}

struct stat lstat_host(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

bool exists_host(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

class FusePassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // PassthroughFs applies the guest's umask itself and needs a process
    // umask of 0, as the daemon sets at start-up.
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-integ-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    // Guest users other than root create files here too.
    ASSERT_EQ(::chmod(root_.c_str(), 0777), 0);
    auto created = passthrough::PassthroughFs::create({.shared_dir = root_});
    ASSERT_TRUE(created.has_value()) << errno_name(created.error().value);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    Reply init = send(init_request(next_unique()));
    ASSERT_TRUE(init.ok()) << init.error();
  }

  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  uint64_t next_unique() { return unique_ += 2; }
  std::string host(const std::string& rel) const { return root_ + "/" + rel; }

  /// Feeds one request to the server. The request and the reply buffer are
  /// cut into `req_chunk` / `reply_chunk` byte segments (0: one segment).
  Reply send(const Bytes& request, size_t reply_room = kDefaultReplyRoom, size_t req_chunk = 0,
             size_t reply_chunk = 0) {
    Bytes req = request;
    Bytes out(reply_room, 0xAA);
    IovecReader reader(segments(req.data(), req.size(), req_chunk));
    IovecWriter writer(segments(out.data(), out.size(), reply_chunk));
    size_t n = server_->handle(reader, writer);
    last_reply_buffer_ = out;
    Reply r = decode_reply(out, n);
    if (n >= sizeof(fuse_out_header)) {
      // Every reply answers its own request and announces its real length.
      EXPECT_EQ(r.header.len, n);
      fuse_in_header in{};
      std::memcpy(&in, request.data(), sizeof(in));
      EXPECT_EQ(r.header.unique, in.unique);
    }
    return r;
  }

  RequestBuilder req(uint32_t opcode, uint64_t nodeid) {
    return RequestBuilder(opcode, nodeid, next_unique());
  }

  Reply lookup(uint64_t parent, std::string_view name) {
    return send(req(FUSE_LOOKUP, parent).add_name(name).finish());
  }
  uint64_t lookup_ok(uint64_t parent, std::string_view name) {
    Reply r = lookup(parent, name);
    EXPECT_TRUE(r.ok()) << name << ": " << std::strerror(r.error());
    return r.as<fuse_entry_out>().nodeid;
  }
  Reply getattr(uint64_t node) {
    return send(req(FUSE_GETATTR, node).add(fuse_getattr_in{}).finish());
  }
  uint64_t open_ok(uint64_t node, uint32_t flags, uint32_t opcode = FUSE_OPEN) {
    fuse_open_in in{};
    in.flags = flags;
    Reply r = send(req(opcode, node).add(in).finish());
    EXPECT_TRUE(r.ok()) << std::strerror(r.error());
    return r.as<fuse_open_out>().fh;
  }
  Reply release(uint64_t node, uint64_t fh, uint32_t opcode = FUSE_RELEASE) {
    fuse_release_in in{};
    in.fh = fh;
    return send(req(opcode, node).add(in).finish());
  }
  Reply read(uint64_t node, uint64_t fh, uint64_t offset, uint32_t size, size_t reply_chunk = 0,
             size_t req_chunk = 0) {
    fuse_read_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = size;
    return send(req(FUSE_READ, node).add(in).finish(), sizeof(fuse_out_header) + size, req_chunk,
                reply_chunk);
  }
  Reply write(uint64_t node, uint64_t fh, uint64_t offset, const std::string& data,
              size_t req_chunk = 0, size_t reply_chunk = 0) {
    fuse_write_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = static_cast<uint32_t>(data.size());
    return send(req(FUSE_WRITE, node).add(in).add_bytes(data.data(), data.size()).finish(),
                kDefaultReplyRoom, req_chunk, reply_chunk);
  }
  Reply create(uint64_t parent, std::string_view name, uint32_t mode, uint32_t flags,
               uint32_t umask, uint32_t uid = 0, uint32_t gid = 0) {
    fuse_create_in in{};
    in.flags = flags;
    in.mode = mode;
    in.umask = umask;
    return send(req(FUSE_CREATE, parent).creds(uid, gid).add(in).add_name(name).finish());
  }
  /// Lists a directory completely with READDIR(PLUS) replies of `page` bytes.
  std::vector<DecodedDirent> list(uint64_t node, bool plus, uint32_t page) {
    uint64_t fh = open_ok(node, O_RDONLY | O_DIRECTORY, FUSE_OPENDIR);
    std::vector<DecodedDirent> all;
    uint64_t offset = 0;
    for (int round = 0; round < 10000; ++round) {
      fuse_read_in in{};
      in.fh = fh;
      in.offset = offset;
      in.size = page;
      Reply r = send(req(plus ? FUSE_READDIRPLUS : FUSE_READDIR, node).add(in).finish(),
                     sizeof(fuse_out_header) + page, 0, 29);
      EXPECT_TRUE(r.ok()) << std::strerror(r.error());
      if (!r.ok() || r.payload.empty()) break;
      auto batch = decode_dirents(r.payload, plus);
      EXPECT_FALSE(batch.empty());
      if (batch.empty()) break;
      offset = batch.back().off;
      all.insert(all.end(), batch.begin(), batch.end());
    }
    EXPECT_TRUE(release(node, fh, FUSE_RELEASEDIR).ok());
    return all;
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  Bytes last_reply_buffer_;
  uint64_t unique_ = 0;
};

// --- session ----------------------------------------------------------------

TEST_F(FusePassthroughTest, InitNegotiatesProtocolAndLimits) {
  Reply r = send(init_request(next_unique()));
  ASSERT_TRUE(r.ok());
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.major, uint32_t{FUSE_KERNEL_VERSION});
  EXPECT_GE(out.minor, 27u);
  EXPECT_EQ(out.max_write, 1u << 20);
  EXPECT_GE(out.max_pages, 256u);
  for (uint32_t flag : {FUSE_DO_READDIRPLUS, FUSE_PARALLEL_DIROPS, FUSE_ASYNC_READ, FUSE_BIG_WRITES,
                        FUSE_ATOMIC_O_TRUNC, FUSE_MAX_PAGES}) {
    EXPECT_TRUE(out.flags & flag) << "flag " << flag;
  }
  // Nothing the guest did not offer is agreed.
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = 31;
  in.flags = FUSE_ASYNC_READ;
  Reply narrow = send(req(FUSE_INIT, 0).add(in).finish());
  ASSERT_TRUE(narrow.ok());
  EXPECT_EQ(narrow.as<fuse_init_out>().flags, uint32_t{FUSE_ASYNC_READ});
}

TEST_F(FusePassthroughTest, DestroyDropsInodesAndHandlesAndEndsTheSession) {
  write_host(host("f"), "data");
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  open_ok(node, O_RDONLY);
  EXPECT_EQ(fs_->inode_count(), 2u);
  EXPECT_EQ(fs_->handle_count(), 1u);

  Reply r = send(req(FUSE_DESTROY, 0).finish());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.payload.empty());
  EXPECT_EQ(fs_->inode_count(), 1u);  // the root only
  EXPECT_EQ(fs_->handle_count(), 0u);
  // No session: requests fail until the next INIT.
  EXPECT_EQ(getattr(kRootInode.value()).error(), EIO);
  ASSERT_TRUE(send(init_request(next_unique())).ok());
  EXPECT_TRUE(getattr(kRootInode.value()).ok());
  EXPECT_EQ(getattr(node).error(), EBADF);
}

TEST_F(FusePassthroughTest, SecondInitWithoutDestroyDropsTheOldInodeTable) {
  write_host(host("f"), "before reset");
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  uint64_t fh = open_ok(node, O_RDONLY);
  ASSERT_TRUE(getattr(node).ok());

  ASSERT_TRUE(send(init_request(next_unique())).ok());  // guest reset
  EXPECT_EQ(fs_->inode_count(), 1u);
  EXPECT_EQ(fs_->handle_count(), 0u);
  EXPECT_EQ(getattr(node).error(), EBADF);
  EXPECT_EQ(read(node, fh, 0, 100).error(), EBADF);
  // The file itself is untouched and can be looked up again, under a new id.
  uint64_t again = lookup_ok(kRootInode.value(), "f");
  EXPECT_NE(again, node);
  EXPECT_EQ(read_host(host("f")), "before reset");
}

TEST_F(FusePassthroughTest, UnknownOpcodeAnswersEnosysAndTheNextRequestIsServed) {
  Reply r = send(req(4242, kRootInode.value()).add(uint64_t{0}).finish());
  EXPECT_EQ(r.error(), ENOSYS);
  EXPECT_EQ(r.bytes, sizeof(fuse_out_header));
  EXPECT_TRUE(getattr(kRootInode.value()).ok());
}

TEST_F(FusePassthroughTest, InterruptGetsNoReply) {
  fuse_interrupt_in in{};
  in.unique = 12345;
  Reply r = send(req(FUSE_INTERRUPT, 0).add(in).finish());
  EXPECT_EQ(r.bytes, 0u);
  // Nothing was written into the reply buffer.
  for (uint8_t b : last_reply_buffer_) ASSERT_EQ(b, 0xAA);
  EXPECT_TRUE(getattr(kRootInode.value()).ok());
}

// --- lookup, forget, getattr ----------------------------------------------------

TEST_F(FusePassthroughTest, LookupAnswersTheHostInode) {
  write_host(host("file"), std::string(123, 'x'));
  Reply r = lookup(kRootInode.value(), "file");
  ASSERT_TRUE(r.ok());
  auto e = r.as<fuse_entry_out>();
  struct stat st = lstat_host(host("file"));
  EXPECT_GT(e.nodeid, kRootInode.value());
  EXPECT_EQ(e.attr.ino, st.st_ino);
  EXPECT_EQ(e.attr.size, 123u);
  EXPECT_TRUE(S_ISREG(e.attr.mode));
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{e.nodeid}), 1u);
  // A second lookup of the same host inode gives the same node id, one more ref.
  EXPECT_EQ(lookup_ok(kRootInode.value(), "file"), e.nodeid);
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{e.nodeid}), 2u);
  EXPECT_EQ(lookup(kRootInode.value(), "missing").error(), ENOENT);
}

TEST_F(FusePassthroughTest, LookupDotDotAtTheRootAnswersTheRoot) {
  Reply r = lookup(kRootInode.value(), "..");
  ASSERT_TRUE(r.ok());
  auto e = r.as<fuse_entry_out>();
  EXPECT_EQ(e.nodeid, kRootInode.value());
  EXPECT_EQ(e.attr.ino, lstat_host(root_).st_ino);
  // And ".." below the root is the real parent, still inside.
  ASSERT_EQ(::mkdir(host("sub").c_str(), 0755), 0);
  uint64_t sub = lookup_ok(kRootInode.value(), "sub");
  EXPECT_EQ(lookup_ok(sub, ".."), kRootInode.value());
}

TEST_F(FusePassthroughTest, LookupOfANameWithSlashIsRefused) {
  ASSERT_EQ(::mkdir(host("a").c_str(), 0755), 0);
  write_host(host("a/b"), "nested");
  EXPECT_EQ(lookup(kRootInode.value(), "a/b").error(), EINVAL);
  EXPECT_EQ(lookup(kRootInode.value(), "").error(), EINVAL);
  // A name without its NUL.
  EXPECT_EQ(send(req(FUSE_LOOKUP, kRootInode.value()).add_bytes("a", 1).finish()).error(), EINVAL);
  EXPECT_EQ(fs_->inode_count(), 1u);  // nothing was looked up
  EXPECT_TRUE(lookup(kRootInode.value(), "a").ok());
}

TEST_F(FusePassthroughTest, ForgetFreesTheInode) {
  write_host(host("f"), "x");
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  lookup_ok(kRootInode.value(), "f");
  ASSERT_EQ(fs_->lookup_count(fuse::InodeId{node}), 2u);
  fuse_forget_in in{};
  in.nlookup = 1;
  EXPECT_EQ(send(req(FUSE_FORGET, node).add(in).finish()).bytes, 0u);
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{node}), 1u);
  EXPECT_TRUE(getattr(node).ok());
  EXPECT_EQ(send(req(FUSE_FORGET, node).add(in).finish()).bytes, 0u);
  EXPECT_EQ(fs_->inode_count(), 1u);
  EXPECT_EQ(getattr(node).error(), EBADF);
}

TEST_F(FusePassthroughTest, BatchForgetFreesEveryListedInode) {
  std::vector<uint64_t> nodes;
  for (const char* name : {"a", "b", "c"}) {
    write_host(host(name), name);
    nodes.push_back(lookup_ok(kRootInode.value(), name));
  }
  lookup_ok(kRootInode.value(), "a");  // a holds two references
  ASSERT_EQ(fs_->inode_count(), 4u);
  fuse_batch_forget_in in{};
  in.count = 3;
  auto r = req(FUSE_BATCH_FORGET, 0).add(in);
  r.add(fuse_forget_one{nodes[0], 1})
      .add(fuse_forget_one{nodes[1], 1})
      .add(fuse_forget_one{nodes[2], 1});
  EXPECT_EQ(send(r.finish()).bytes, 0u);
  EXPECT_EQ(fs_->inode_count(), 2u);  // root and a (one reference left)
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{nodes[0]}), 1u);
  EXPECT_EQ(getattr(nodes[1]).error(), EBADF);
  EXPECT_EQ(getattr(nodes[2]).error(), EBADF);
}

TEST_F(FusePassthroughTest, GetattrMatchesTheHost) {
  write_host(host("f"), std::string(5000, 'y'));
  ASSERT_EQ(::chmod(host("f").c_str(), 0640), 0);
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  Reply r = getattr(node);
  ASSERT_TRUE(r.ok());
  auto a = r.as<fuse_attr_out>().attr;
  struct stat st = lstat_host(host("f"));
  EXPECT_EQ(a.ino, st.st_ino);
  EXPECT_EQ(a.size, 5000u);
  EXPECT_EQ(a.mode, st.st_mode);
  EXPECT_EQ(a.nlink, st.st_nlink);
  EXPECT_EQ(a.mtime, static_cast<uint64_t>(st.st_mtim.tv_sec));
  EXPECT_EQ(a.mtimensec, static_cast<uint32_t>(st.st_mtim.tv_nsec));
  // The host changes are seen on the next GETATTR.
  ASSERT_EQ(::truncate(host("f").c_str(), 10), 0);
  EXPECT_EQ(getattr(node).as<fuse_attr_out>().attr.size, 10u);
}

TEST_F(FusePassthroughTest, SetattrChangesModeSizeOwnerAndTimesOnTheHost) {
  write_host(host("f"), std::string(100, 'z'));
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  fuse_setattr_in in{};
  in.valid = FATTR_MODE | FATTR_SIZE | FATTR_UID | FATTR_GID | FATTR_MTIME | FATTR_ATIME;
  in.mode = S_IFREG | 0604;
  in.size = 7;
  in.uid = 4321;
  in.gid = 8765;
  in.mtime = 1000000000;
  in.mtimensec = 500;
  in.atime = 900000000;
  Reply r = send(req(FUSE_SETATTR, node).add(in).finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  struct stat st = lstat_host(host("f"));
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  EXPECT_EQ(st.st_size, 7);
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 8765u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 500);
  EXPECT_EQ(st.st_atim.tv_sec, 900000000);
  // The reply carries the new attributes.
  auto a = r.as<fuse_attr_out>().attr;
  EXPECT_EQ(a.size, 7u);
  EXPECT_EQ(a.uid, 4321u);
  EXPECT_EQ(a.mode & 07777, 0604u);

  // Truncation through an open handle (FATTR_FH).
  uint64_t fh = open_ok(node, O_RDWR);
  fuse_setattr_in by_fh{};
  by_fh.valid = FATTR_SIZE | FATTR_FH;
  by_fh.fh = fh;
  by_fh.size = 3;
  ASSERT_TRUE(send(req(FUSE_SETATTR, node).add(by_fh).finish()).ok());
  EXPECT_EQ(lstat_host(host("f")).st_size, 3);
}

// --- names ------------------------------------------------------------------------

TEST_F(FusePassthroughTest, SymlinkAndReadlink) {
  Reply r = send(req(FUSE_SYMLINK, kRootInode.value())
                     .add_name("link")
                     .add_name("../outside/target")
                     .finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  auto e = r.as<fuse_entry_out>();
  EXPECT_TRUE(S_ISLNK(e.attr.mode));
  char buf[PATH_MAX] = {};
  ssize_t n = ::readlink(host("link").c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "../outside/target");

  Reply target = send(req(FUSE_READLINK, e.nodeid).finish());
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(target.text(), "../outside/target");
  // READLINK of a regular file is refused.
  write_host(host("plain"), "");
  EXPECT_EQ(send(req(FUSE_READLINK, lookup_ok(kRootInode.value(), "plain")).finish()).error(),
            EINVAL);
}

TEST_F(FusePassthroughTest, MknodCreatesAFifoWithTheGuestUmaskAndOwner) {
  fuse_mknod_in in{};
  in.mode = S_IFIFO | 0666;
  in.umask = 022;
  Reply r =
      send(req(FUSE_MKNOD, kRootInode.value()).creds(1500, 1600).add(in).add_name("fifo").finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  struct stat st = lstat_host(host("fifo"));
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(st.st_uid, 1500u);
  EXPECT_EQ(st.st_gid, 1600u);
  EXPECT_EQ(r.as<fuse_entry_out>().attr.ino, st.st_ino);
  EXPECT_EQ(send(req(FUSE_MKNOD, kRootInode.value()).add(in).add_name("fifo").finish()).error(),
            EEXIST);
}

TEST_F(FusePassthroughTest, MkdirAndRmdir) {
  fuse_mkdir_in in{};
  in.mode = 0777;
  in.umask = 027;
  Reply r = send(req(FUSE_MKDIR, kRootInode.value()).add(in).add_name("dir").finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  struct stat st = lstat_host(host("dir"));
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  uint64_t dir = r.as<fuse_entry_out>().nodeid;
  // A child made inside the new directory by node id.
  ASSERT_TRUE(send(req(FUSE_MKDIR, dir).add(in).add_name("child").finish()).ok());
  EXPECT_TRUE(S_ISDIR(lstat_host(host("dir/child")).st_mode));

  EXPECT_EQ(send(req(FUSE_RMDIR, kRootInode.value()).add_name("dir").finish()).error(), ENOTEMPTY);
  EXPECT_TRUE(send(req(FUSE_RMDIR, dir).add_name("child").finish()).ok());
  EXPECT_TRUE(send(req(FUSE_RMDIR, kRootInode.value()).add_name("dir").finish()).ok());
  EXPECT_FALSE(exists_host(host("dir")));
  // "." and ".." never name an entry to create or remove.
  EXPECT_EQ(send(req(FUSE_RMDIR, kRootInode.value()).add_name("..").finish()).error(), EINVAL);
  EXPECT_EQ(send(req(FUSE_MKDIR, kRootInode.value()).add(in).add_name(".").finish()).error(),
            EINVAL);
}

TEST_F(FusePassthroughTest, UnlinkRemovesTheHostFile) {
  write_host(host("f"), "x");
  ASSERT_EQ(::mkdir(host("d").c_str(), 0755), 0);
  EXPECT_TRUE(send(req(FUSE_UNLINK, kRootInode.value()).add_name("f").finish()).ok());
  EXPECT_FALSE(exists_host(host("f")));
  EXPECT_EQ(send(req(FUSE_UNLINK, kRootInode.value()).add_name("f").finish()).error(), ENOENT);
  EXPECT_EQ(send(req(FUSE_UNLINK, kRootInode.value()).add_name("d").finish()).error(), EISDIR);
  EXPECT_TRUE(exists_host(host("d")));
}

TEST_F(FusePassthroughTest, RenameMovesAcrossDirectoriesAndReplaces) {
  write_host(host("a"), "content a");
  write_host(host("b"), "content b");
  ASSERT_EQ(::mkdir(host("d").c_str(), 0755), 0);
  uint64_t dir = lookup_ok(kRootInode.value(), "d");
  fuse_rename_in in{};
  in.newdir = dir;
  ASSERT_TRUE(
      send(req(FUSE_RENAME, kRootInode.value()).add(in).add_name("a").add_name("moved").finish())
          .ok());
  EXPECT_FALSE(exists_host(host("a")));
  EXPECT_EQ(read_host(host("d/moved")), "content a");
  // Plain RENAME replaces an existing target.
  in.newdir = kRootInode.value();
  ASSERT_TRUE(send(req(FUSE_RENAME, dir).add(in).add_name("moved").add_name("b").finish()).ok());
  EXPECT_EQ(read_host(host("b")), "content a");
  EXPECT_FALSE(exists_host(host("d/moved")));
}

TEST_F(FusePassthroughTest, Rename2NoreplaceRefusesAnExistingTarget) {
  write_host(host("a"), "A");
  write_host(host("b"), "B");
  fuse_rename2_in in{};
  in.newdir = kRootInode.value();
  in.flags = RENAME_NOREPLACE;
  Reply r =
      send(req(FUSE_RENAME2, kRootInode.value()).add(in).add_name("a").add_name("b").finish());
  EXPECT_EQ(r.error(), EEXIST);
  EXPECT_EQ(read_host(host("a")), "A");
  EXPECT_EQ(read_host(host("b")), "B");
  ASSERT_TRUE(
      send(req(FUSE_RENAME2, kRootInode.value()).add(in).add_name("a").add_name("c").finish())
          .ok());
  EXPECT_FALSE(exists_host(host("a")));
  EXPECT_EQ(read_host(host("c")), "A");
}

TEST_F(FusePassthroughTest, Rename2ExchangeSwapsTwoEntries) {
  write_host(host("x"), "X");
  ASSERT_EQ(::mkdir(host("y").c_str(), 0755), 0);
  fuse_rename2_in in{};
  in.newdir = kRootInode.value();
  in.flags = RENAME_EXCHANGE;
  ASSERT_TRUE(
      send(req(FUSE_RENAME2, kRootInode.value()).add(in).add_name("x").add_name("y").finish())
          .ok());
  EXPECT_TRUE(S_ISDIR(lstat_host(host("x")).st_mode));
  EXPECT_EQ(read_host(host("y")), "X");
  in.flags = 0x80000000u;  // unknown flag
  EXPECT_EQ(send(req(FUSE_RENAME2, kRootInode.value()).add(in).add_name("x").add_name("y").finish())
                .error(),
            EINVAL);
}

TEST_F(FusePassthroughTest, LinkAddsAHardLinkToTheSameInode) {
  write_host(host("orig"), "shared");
  uint64_t node = lookup_ok(kRootInode.value(), "orig");
  ASSERT_EQ(::mkdir(host("d").c_str(), 0755), 0);
  uint64_t dir = lookup_ok(kRootInode.value(), "d");
  fuse_link_in in{};
  in.oldnodeid = node;
  Reply r = send(req(FUSE_LINK, dir).add(in).add_name("alias").finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  auto e = r.as<fuse_entry_out>();
  EXPECT_EQ(e.nodeid, node);  // one host inode, one node id
  EXPECT_EQ(e.attr.nlink, 2u);
  struct stat a = lstat_host(host("orig"));
  struct stat b = lstat_host(host("d/alias"));
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
}

// --- file data ----------------------------------------------------------------------

TEST_F(FusePassthroughTest, OpenWithTruncEmptiesTheFileAndReleaseDropsTheHandle) {
  write_host(host("f"), "old content");
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  uint64_t fh = open_ok(node, O_WRONLY | O_TRUNC);
  EXPECT_EQ(lstat_host(host("f")).st_size, 0);
  EXPECT_EQ(fs_->handle_count(), 1u);
  EXPECT_TRUE(release(node, fh).ok());
  EXPECT_EQ(fs_->handle_count(), 0u);
  EXPECT_EQ(write(node, fh, 0, "late").error(), EBADF);
  EXPECT_EQ(release(node, fh).error(), EBADF);
}

TEST_F(FusePassthroughTest, WriteAndReadSplitOverManySegments) {
  Reply c = create(kRootInode.value(), "data", 0644, O_RDWR, 022);
  ASSERT_TRUE(c.ok()) << std::strerror(c.error());
  uint64_t node = c.as<fuse_entry_out>().nodeid;
  uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;

  // 1 MiB (max_write) in segments of 4099 bytes, then 100 KiB at an offset in
  // 7-byte segments: more segments than IOV_MAX, headers split mid-struct.
  const std::string big = pattern(1 << 20, 1);
  Reply w1 = write(node, fh, 0, big, 4099, 5);
  ASSERT_TRUE(w1.ok()) << std::strerror(w1.error());
  EXPECT_EQ(w1.as<fuse_write_out>().size, big.size());
  const std::string small = pattern(100 * 1024, 2);
  Reply w2 = write(node, fh, 300000, small, 7, 3);
  ASSERT_TRUE(w2.ok()) << std::strerror(w2.error());
  EXPECT_EQ(w2.as<fuse_write_out>().size, small.size());

  std::string expected = big;
  expected.replace(300000, small.size(), small);
  ASSERT_EQ(read_host(host("data")), expected);

  // READ back into reply buffers of 1000-byte and 3-byte segments.
  Reply r1 = read(node, fh, 0, 1 << 20, 1000, 11);
  ASSERT_TRUE(r1.ok()) << std::strerror(r1.error());
  EXPECT_TRUE(r1.text() == expected) << "1 MiB read differs";
  Reply r2 = read(node, fh, 299990, 5000, 3);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2.text(), expected.substr(299990, 5000));
  // A read across the end of file is short.
  Reply r3 = read(node, fh, expected.size() - 10, 4096, 17);
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3.text(), expected.substr(expected.size() - 10));
  EXPECT_EQ(r3.header.len, sizeof(fuse_out_header) + 10);
  // A WRITE larger than max_write is refused and writes nothing.
  Reply too_big = write(node, fh, 0, std::string((1 << 20) + 1, 'q'));
  EXPECT_EQ(too_big.error(), EINVAL);
  EXPECT_EQ(read_host(host("data")), expected);
}

TEST_F(FusePassthroughTest, CreateUsesTheGuestUidGidAndUmask) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create files for another uid";
  Reply r = create(kRootInode.value(), "owned", 0666, O_WRONLY, 027, 1234, 5678);
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  struct stat st = lstat_host(host("owned"));
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  auto e = r.as<fuse_entry_out>();
  EXPECT_EQ(e.attr.uid, 1234u);
  EXPECT_EQ(e.attr.ino, st.st_ino);
  EXPECT_EQ(fs_->handle_count(), 1u);
  // The handle CREATE returned writes into the new file.
  uint64_t fh = r.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
  ASSERT_TRUE(write(e.nodeid, fh, 0, "hello").ok());
  EXPECT_EQ(read_host(host("owned")), "hello");
  // The daemon's own credentials are back: the next file belongs to root.
  ASSERT_TRUE(create(kRootInode.value(), "root-owned", 0644, O_WRONLY, 0).ok());
  EXPECT_EQ(lstat_host(host("root-owned")).st_uid, 0u);
  // O_EXCL on an existing name fails.
  EXPECT_EQ(create(kRootInode.value(), "owned", 0644, O_WRONLY | O_EXCL, 0).error(), EEXIST);
}

TEST_F(FusePassthroughTest, FlushFsyncAndFsyncdirAnswerForLiveHandlesOnly) {
  Reply c = create(kRootInode.value(), "f", 0644, O_RDWR, 0);
  ASSERT_TRUE(c.ok());
  uint64_t node = c.as<fuse_entry_out>().nodeid;
  uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
  ASSERT_TRUE(write(node, fh, 0, "synced").ok());

  fuse_flush_in flush{};
  flush.fh = fh;
  EXPECT_TRUE(send(req(FUSE_FLUSH, node).add(flush).finish()).ok());
  // FLUSH (a guest close() of one descriptor) leaves the handle usable.
  EXPECT_EQ(read(node, fh, 0, 6).text(), "synced");
  fuse_fsync_in fsync{};
  fsync.fh = fh;
  EXPECT_TRUE(send(req(FUSE_FSYNC, node).add(fsync).finish()).ok());
  fsync.fsync_flags = FUSE_FSYNC_FDATASYNC;
  EXPECT_TRUE(send(req(FUSE_FSYNC, node).add(fsync).finish()).ok());
  EXPECT_EQ(read_host(host("f")), "synced");

  uint64_t dh = open_ok(kRootInode.value(), O_RDONLY | O_DIRECTORY, FUSE_OPENDIR);
  fuse_fsync_in dsync{};
  dsync.fh = dh;
  EXPECT_TRUE(send(req(FUSE_FSYNCDIR, kRootInode.value()).add(dsync).finish()).ok());
  EXPECT_TRUE(release(kRootInode.value(), dh, FUSE_RELEASEDIR).ok());

  // After release, every handle operation fails on the dead handle.
  ASSERT_TRUE(release(node, fh).ok());
  EXPECT_EQ(send(req(FUSE_FLUSH, node).add(flush).finish()).error(), EBADF);
  EXPECT_EQ(send(req(FUSE_FSYNC, node).add(fsync).finish()).error(), EBADF);
  EXPECT_EQ(send(req(FUSE_FSYNCDIR, kRootInode.value()).add(dsync).finish()).error(), EBADF);
}

TEST_F(FusePassthroughTest, StatfsDescribesTheHostFilesystem) {
  Reply r = send(req(FUSE_STATFS, kRootInode.value()).finish());
  ASSERT_TRUE(r.ok());
  auto st = r.as<fuse_statfs_out>().st;
  struct statvfs host_st {};
  ASSERT_EQ(::statvfs(root_.c_str(), &host_st), 0);
  EXPECT_EQ(st.blocks, host_st.f_blocks);
  EXPECT_EQ(st.bsize, host_st.f_bsize);
  EXPECT_EQ(st.frsize, host_st.f_frsize);
  EXPECT_EQ(st.files, host_st.f_files);
  EXPECT_EQ(st.namelen, host_st.f_namemax);
}

TEST_F(FusePassthroughTest, AccessFollowsTheHostMode) {
  write_host(host("f"), "secret");
  ASSERT_EQ(::chmod(host("f").c_str(), 0640), 0);
  ASSERT_EQ(::chown(host("f").c_str(), 0, 0), 0);
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  auto access = [&](uint32_t uid, uint32_t gid, uint32_t mask) {
    fuse_access_in in{};
    in.mask = mask;
    return send(req(FUSE_ACCESS, node).creds(uid, gid).add(in).finish()).error();
  };
  EXPECT_EQ(access(1000, 1000, R_OK), EACCES);  // other: no bits
  EXPECT_EQ(access(1000, 0, R_OK), 0);          // group: read
  EXPECT_EQ(access(1000, 0, W_OK), EACCES);
  EXPECT_EQ(access(0, 0, R_OK | W_OK), 0);
  EXPECT_EQ(access(0, 0, X_OK), EACCES);  // root needs one x bit for a file
  ASSERT_EQ(::chmod(host("f").c_str(), 0644), 0);
  EXPECT_EQ(access(1000, 1000, R_OK), 0);
}

TEST_F(FusePassthroughTest, LseekFindsDataAndHoles) {
  // A sparse file: data at [0, 4 KiB) and [1 MiB, 1 MiB + 4 KiB).
  {
    int fd = ::open(host("sparse").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    std::string block(4096, 'd');
    ASSERT_EQ(::pwrite(fd, block.data(), block.size(), 0), 4096);
    ASSERT_EQ(::pwrite(fd, block.data(), block.size(), 1 << 20), 4096);
    ::close(fd);
  }
  // What the host filesystem answers is the reference.
  int hfd = ::open(host("sparse").c_str(), O_RDONLY);
  ASSERT_GE(hfd, 0);
  off_t hole0 = ::lseek(hfd, 0, SEEK_HOLE);
  off_t data8k = ::lseek(hfd, 8192, SEEK_DATA);
  ::close(hfd);
  ASSERT_GE(hole0, 0);
  ASSERT_GE(data8k, 0);

  uint64_t node = lookup_ok(kRootInode.value(), "sparse");
  uint64_t fh = open_ok(node, O_RDONLY);
  auto lseek = [&](uint64_t offset, uint32_t whence) {
    fuse_lseek_in in{};
    in.fh = fh;
    in.offset = offset;
    in.whence = whence;
    return send(req(FUSE_LSEEK, node).add(in).finish());
  };
  Reply h = lseek(0, SEEK_HOLE);
  ASSERT_TRUE(h.ok()) << std::strerror(h.error());
  EXPECT_EQ(h.as<fuse_lseek_out>().offset, static_cast<uint64_t>(hole0));
  Reply d = lseek(8192, SEEK_DATA);
  ASSERT_TRUE(d.ok()) << std::strerror(d.error());
  EXPECT_EQ(d.as<fuse_lseek_out>().offset, static_cast<uint64_t>(data8k));
  if (hole0 == 4096) {
    EXPECT_EQ(data8k, 1 << 20);  // a filesystem with holes
  }
  EXPECT_EQ(lseek((1 << 20) + 8192, SEEK_DATA).error(), ENXIO);
  EXPECT_EQ(lseek(0, 77).error(), EINVAL);
}

TEST_F(FusePassthroughTest, FallocateAllocatesAndPunchesHoles) {
  Reply c = create(kRootInode.value(), "f", 0644, O_RDWR, 0);
  ASSERT_TRUE(c.ok());
  uint64_t node = c.as<fuse_entry_out>().nodeid;
  uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
  fuse_fallocate_in in{};
  in.fh = fh;
  in.length = 1 << 20;
  Reply r = send(req(FUSE_FALLOCATE, node).add(in).finish());
  ASSERT_TRUE(r.ok()) << std::strerror(r.error());
  struct stat st = lstat_host(host("f"));
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(st.st_blocks * 512, 1 << 20);

  // Skipped only if the host filesystem itself cannot punch holes (a probe
  // there); then the daemon must.
  in.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (!test::host_fallocate_supported(root_, static_cast<int>(in.mode))) {
    GTEST_SKIP() << "the host filesystem cannot punch holes";
  }
  in.length = 512 * 1024;
  Reply punch = send(req(FUSE_FALLOCATE, node).add(in).finish());
  ASSERT_TRUE(punch.ok()) << std::strerror(punch.error());
  struct stat after = lstat_host(host("f"));
  EXPECT_EQ(after.st_size, 1 << 20);
  EXPECT_LT(after.st_blocks, st.st_blocks);
}

TEST_F(FusePassthroughTest, SyncfsAnswersForKnownInodesOnly) {
  fuse_syncfs_in in{};
  EXPECT_TRUE(send(req(FUSE_SYNCFS, kRootInode.value()).add(in).finish()).ok());
  EXPECT_EQ(send(req(FUSE_SYNCFS, 999999).add(in).finish()).error(), EBADF);
  // A body too short for its struct is refused before the filesystem runs.
  EXPECT_EQ(send(req(FUSE_SYNCFS, kRootInode.value()).add(uint32_t{0}).finish()).error(), EINVAL);
}

// --- directories ----------------------------------------------------------------------

TEST_F(FusePassthroughTest, ReaddirListsEveryHostEntryAcrossPages) {
  std::set<std::string> expected = {".", ".."};
  for (int i = 0; i < 300; ++i) {
    std::string name = "entry-with-a-longish-name-" + std::to_string(i);
    write_host(host(name), "");
    expected.insert(name);
  }
  ASSERT_EQ(::mkdir(host("subdir").c_str(), 0755), 0);
  expected.insert("subdir");
  size_t handles_before = fs_->handle_count();

  auto entries = list(kRootInode.value(), /*plus=*/false, 1024);
  std::set<std::string> names;
  for (const auto& e : entries) {
    EXPECT_TRUE(names.insert(e.name).second) << "listed twice: " << e.name;
    if (e.name == "subdir") {
      EXPECT_EQ(e.type, uint32_t{DT_DIR});
      EXPECT_EQ(e.ino, lstat_host(host("subdir")).st_ino);
    }
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(fs_->handle_count(), handles_before);  // RELEASEDIR dropped it
  EXPECT_EQ(fs_->inode_count(), 1u);               // READDIR takes no references
}

TEST_F(FusePassthroughTest, ReaddirplusLooksUpEachEntry) {
  write_host(host("a"), "aaaa");
  ASSERT_EQ(::mkdir(host("d").c_str(), 0755), 0);
  auto entries = list(kRootInode.value(), /*plus=*/true, 4096);
  std::set<std::string> names;
  for (const auto& e : entries) {
    names.insert(e.name);
    if (e.name == "." || e.name == "..") {
      EXPECT_EQ(e.entry.nodeid, 0u) << "no reference on " << e.name;
      continue;
    }
    EXPECT_NE(e.entry.nodeid, 0u);
    EXPECT_EQ(e.entry.attr.ino, lstat_host(host(e.name)).st_ino);
    EXPECT_EQ(fs_->lookup_count(fuse::InodeId{e.entry.nodeid}), 1u);
    if (e.name == "a") {
      EXPECT_EQ(e.entry.attr.size, 4u);
    }
    if (e.name == "d") {
      EXPECT_TRUE(S_ISDIR(e.entry.attr.mode));
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{".", "..", "a", "d"}));
  EXPECT_EQ(fs_->inode_count(), 3u);
}

TEST_F(FusePassthroughTest, OpendirOfAFileIsRefused) {
  write_host(host("f"), "");
  uint64_t node = lookup_ok(kRootInode.value(), "f");
  fuse_open_in in{};
  in.flags = O_RDONLY | O_DIRECTORY;
  EXPECT_EQ(send(req(FUSE_OPENDIR, node).add(in).finish()).error(), ENOTDIR);
  EXPECT_EQ(fs_->handle_count(), 0u);
}

}  // namespace
}  // namespace vfsd::test
