// vfsd_make_seeds: writes the raw seed inputs of every fuzz target, in the
// targets' input formats, before minimization (docs/security.md,
// "Fuzzing"):
//
//   vfsd_make_seeds OUT [--recordings DIR]
//
// writes OUT/<target>/<name>. Two sources:
//  - built here: request sequences as a Linux guest encodes them
//    (tests/support/fuse_codec.h), each exercising one area against the
//    scratch share of the fuse_passthrough target (whose entries are named
//    below) or FakeFs; rings laid out by tests/support/virtq_driver.h;
//    a QEMU-like vhost-user session; --xattrmap rules and command lines of
//    the test suites;
//  - --recordings: what tests/fuzz/vfsd_record recorded from a real front-end
//    (QEMU) and guest (Linux): FUSE requests in windows of consecutive
//    requests (each after the guest's own INIT), the same requests as
//    virtqueue chains, and the vhost-user sessions with their memory
//    regions and rings moved into the target's small memfd.
// tests/fuzz/make_corpus.sh runs this and minimizes the result into
// tests/fuzz/corpus/ with libFuzzer's -merge=1.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fuse/abi_ext.h"
#include "fuzz_common.h"
#include "guest_init.h"
#include "support/fuse_codec.h"
#include "support/virtq_driver.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"

using namespace vfsd;
using namespace vfsd::fuzz;
using test::RequestBuilder;

namespace {

std::string g_out;
size_t g_written = 0;

void write_seed(const std::string& target, const std::string& name, const Bytes& bytes) {
  std::string dir = g_out + "/" + target;
  ::mkdir(g_out.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  std::ofstream f(dir + "/" + name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ++g_written;
}

// --- FUSE request sequences ---------------------------------------------------

// Room indexes of fuse_driver.h's kRooms.
constexpr uint8_t kRoom4K = 12;  // 4096 + 16
constexpr uint8_t kRoom1M = 15;  // 1 MiB + 16
constexpr uint8_t kFixLen = 0x80;

struct Req {
  Bytes bytes;
  uint8_t room = kRoom4K;
  uint8_t seg = kFixLen;
};

uint8_t room_for(size_t writable) {
  static constexpr size_t kRooms[16] = {
      0,   8,   16,   24,   40,        64,         96,          144,
      160, 272, 1024, 4096, 4096 + 16, 65536 + 16, 131072 + 16, (1u << 20) + 16};
  for (uint8_t i = 0; i < 16; ++i) {
    if (kRooms[i] >= writable) return i;
  }
  return 15;
}

// Sets fuse_in_header.total_extlen (the extension area is already at the
// end of the request).
void set_extlen(Bytes& b, size_t ext_bytes) {
  uint16_t units = static_cast<uint16_t>(ext_bytes / 8);
  std::memcpy(b.data() + offsetof(fuse_in_header, total_extlen), &units, sizeof(units));
}

Bytes pad8(Bytes b) {
  while (b.size() % 8 != 0) b.push_back(0);
  return b;
}

// A security context extension: one context `name` = `value`.
Bytes secctx_block(const std::string& name, const std::string& value) {
  Bytes body;
  fuse_secctx ctx{};
  ctx.size = static_cast<uint32_t>(value.size());
  body.resize(sizeof(ctx));
  std::memcpy(body.data(), &ctx, sizeof(ctx));
  body.insert(body.end(), name.begin(), name.end());
  body.push_back(0);
  body.insert(body.end(), value.begin(), value.end());
  fuse_secctx_header header{};
  header.nr_secctx = 1;
  Bytes block(sizeof(header));
  block.insert(block.end(), body.begin(), body.end());
  block = pad8(std::move(block));
  header.size = static_cast<uint32_t>(block.size());
  std::memcpy(block.data(), &header, sizeof(header));
  return block;
}

// A supplementary groups extension.
Bytes groups_block(const std::vector<uint32_t>& gids) {
  Bytes block(sizeof(fuse_ext_header) + sizeof(uint32_t));
  uint32_t n = static_cast<uint32_t>(gids.size());
  std::memcpy(block.data() + sizeof(fuse_ext_header), &n, sizeof(n));
  for (uint32_t g : gids) {
    const auto* p = reinterpret_cast<const uint8_t*>(&g);
    block.insert(block.end(), p, p + 4);
  }
  block = pad8(std::move(block));
  fuse_ext_header h{};
  h.size = static_cast<uint32_t>(block.size());
  h.type = fuse::abi::kExtGroups;
  std::memcpy(block.data(), &h, sizeof(h));
  return block;
}

class Seq {
 public:
  RequestBuilder op(uint32_t opcode, uint64_t node) {
    return RequestBuilder(opcode, node, unique_++).creds(uid_, gid_, pid_);
  }
  Seq& as(uint32_t uid, uint32_t gid, uint32_t pid = 100) {
    uid_ = uid;
    gid_ = gid;
    pid_ = pid;
    return *this;
  }
  Seq& add(const RequestBuilder& b, uint8_t room = kRoom4K) { return raw(b.finish(), room); }
  Seq& raw(Bytes bytes, uint8_t room = kRoom4K, uint8_t seg = kFixLen) {
    reqs_.push_back(Req{std::move(bytes), room, seg});
    return *this;
  }
  uint64_t next_unique() const { return unique_; }

  // Helpers for the common requests.
  Seq& init(GuestKind kind = GuestKind::kLinux61) { return raw(guest_init(unique_++, kind)); }
  Seq& lookup(uint64_t parent, const std::string& name) {
    return add(op(FUSE_LOOKUP, parent).add_name(name));
  }
  Seq& forget(uint64_t node, uint64_t n) {
    fuse_forget_in in{};
    in.nlookup = n;
    return add(op(FUSE_FORGET, node).add(in));
  }
  Seq& getattr(uint64_t node, std::optional<uint64_t> fh = {}) {
    fuse_getattr_in in{};
    if (fh) {
      in.getattr_flags = FUSE_GETATTR_FH;
      in.fh = *fh;
    }
    return add(op(FUSE_GETATTR, node).add(in));
  }
  Seq& setattr(uint64_t node, const fuse_setattr_in& in) {
    return add(op(FUSE_SETATTR, node).add(in));
  }
  Seq& open(uint64_t node, uint32_t flags, bool dir = false) {
    fuse_open_in in{};
    in.flags = flags;
    return add(op(dir ? FUSE_OPENDIR : FUSE_OPEN, node).add(in));
  }
  Seq& release(uint64_t node, uint64_t fh, bool dir = false) {
    fuse_release_in in{};
    in.fh = fh;
    return add(op(dir ? FUSE_RELEASEDIR : FUSE_RELEASE, node).add(in));
  }
  Seq& read(uint64_t node, uint64_t fh, uint64_t off, uint32_t size, uint32_t opcode = FUSE_READ) {
    fuse_read_in in{};
    in.fh = fh;
    in.offset = off;
    in.size = size;
    return add(op(opcode, node).add(in), size > 4096 ? kRoom1M : kRoom4K);
  }
  Seq& write(uint64_t node, uint64_t fh, uint64_t off, const std::string& data,
             uint32_t flags = 0) {
    fuse_write_in in{};
    in.fh = fh;
    in.offset = off;
    in.size = static_cast<uint32_t>(data.size());
    in.flags = flags;
    return add(op(FUSE_WRITE, node).add(in).add_bytes(data.data(), data.size()));
  }
  Seq& create(uint64_t parent, const std::string& name, uint32_t mode, uint32_t flags,
              uint32_t umask = 022) {
    fuse_create_in in{};
    in.flags = flags;
    in.mode = mode;
    in.umask = umask;
    return add(op(FUSE_CREATE, parent).add(in).add_name(name));
  }
  Seq& mkdir(uint64_t parent, const std::string& name, uint32_t mode, uint32_t umask = 022) {
    fuse_mkdir_in in{};
    in.mode = mode;
    in.umask = umask;
    return add(op(FUSE_MKDIR, parent).add(in).add_name(name));
  }
  Seq& mknod(uint64_t parent, const std::string& name, uint32_t mode, uint32_t rdev = 0) {
    fuse_mknod_in in{};
    in.mode = mode;
    in.rdev = rdev;
    in.umask = 022;
    return add(op(FUSE_MKNOD, parent).add(in).add_name(name));
  }
  Seq& symlink(uint64_t parent, const std::string& name, const std::string& target) {
    return add(op(FUSE_SYMLINK, parent).add_name(name).add_name(target));
  }
  Seq& link(uint64_t node, uint64_t new_parent, const std::string& name) {
    fuse_link_in in{};
    in.oldnodeid = node;
    return add(op(FUSE_LINK, new_parent).add(in).add_name(name));
  }
  Seq& unlink(uint64_t parent, const std::string& name, bool dir = false) {
    return add(op(dir ? FUSE_RMDIR : FUSE_UNLINK, parent).add_name(name));
  }
  Seq& rename(uint64_t parent, const std::string& from, uint64_t new_parent, const std::string& to,
              std::optional<uint32_t> flags = {}) {
    if (flags) {
      fuse_rename2_in in{};
      in.newdir = new_parent;
      in.flags = *flags;
      return add(op(FUSE_RENAME2, parent).add(in).add_name(from).add_name(to));
    }
    fuse_rename_in in{};
    in.newdir = new_parent;
    return add(op(FUSE_RENAME, parent).add(in).add_name(from).add_name(to));
  }
  Seq& readlink(uint64_t node) { return add(op(FUSE_READLINK, node)); }
  Seq& simple(uint32_t opcode, uint64_t node) { return add(op(opcode, node)); }
  Seq& flush(uint64_t node, uint64_t fh, uint64_t owner) {
    fuse_flush_in in{};
    in.fh = fh;
    in.lock_owner = owner;
    return add(op(FUSE_FLUSH, node).add(in));
  }
  Seq& fsync(uint64_t node, uint64_t fh, bool dir = false, uint32_t flags = 0) {
    fuse_fsync_in in{};
    in.fh = fh;
    in.fsync_flags = flags;
    return add(op(dir ? FUSE_FSYNCDIR : FUSE_FSYNC, node).add(in));
  }
  Seq& access(uint64_t node, uint32_t mask) {
    fuse_access_in in{};
    in.mask = mask;
    return add(op(FUSE_ACCESS, node).add(in));
  }
  Seq& getxattr(uint64_t node, const std::string& name, uint32_t size) {
    fuse_getxattr_in in{};
    in.size = size;
    return add(op(FUSE_GETXATTR, node).add(in).add_name(name));
  }
  Seq& listxattr(uint64_t node, uint32_t size) {
    fuse_getxattr_in in{};
    in.size = size;
    return add(op(FUSE_LISTXATTR, node).add(in));
  }
  Seq& setxattr(uint64_t node, const std::string& name, const std::string& value,
                uint32_t flags = 0, bool ext = true) {
    fuse_setxattr_in in{};
    in.size = static_cast<uint32_t>(value.size());
    in.flags = flags;
    auto b = op(FUSE_SETXATTR, node);
    if (ext) {
      b.add(in);
    } else {
      b.add_bytes(&in, FUSE_COMPAT_SETXATTR_IN_SIZE);
    }
    b.add_name(name).add_bytes(value.data(), value.size());
    return add(b);
  }
  Seq& removexattr(uint64_t node, const std::string& name) {
    return add(op(FUSE_REMOVEXATTR, node).add_name(name));
  }
  Seq& lock(uint32_t opcode, uint64_t node, uint64_t fh, uint64_t owner, uint32_t type,
            uint64_t start, uint64_t end, bool flock = false) {
    fuse_lk_in in{};
    in.fh = fh;
    in.owner = owner;
    in.lk.start = start;
    in.lk.end = end;
    in.lk.type = type;
    in.lk.pid = pid_;
    in.lk_flags = flock ? FUSE_LK_FLOCK : 0;
    return add(op(opcode, node).add(in));
  }
  Seq& interrupt(uint64_t unique) {
    fuse_interrupt_in in{};
    in.unique = unique;
    return add(op(FUSE_INTERRUPT, 0).add(in));
  }
  Seq& lseek(uint64_t node, uint64_t fh, uint64_t off, uint32_t whence) {
    fuse_lseek_in in{};
    in.fh = fh;
    in.offset = off;
    in.whence = whence;
    return add(op(FUSE_LSEEK, node).add(in));
  }
  Seq& fallocate(uint64_t node, uint64_t fh, uint32_t mode, uint64_t off, uint64_t len) {
    fuse_fallocate_in in{};
    in.fh = fh;
    in.mode = mode;
    in.offset = off;
    in.length = len;
    return add(op(FUSE_FALLOCATE, node).add(in));
  }
  Seq& copy_file_range(uint64_t in_node, uint64_t in_fh, uint64_t out_node, uint64_t out_fh,
                       uint64_t len) {
    fuse_copy_file_range_in in{};
    in.fh_in = in_fh;
    in.nodeid_out = out_node;
    in.fh_out = out_fh;
    in.len = len;
    return add(op(FUSE_COPY_FILE_RANGE, in_node).add(in));
  }
  Seq& syncfs(uint64_t node) {
    fuse_syncfs_in in{};
    return add(op(FUSE_SYNCFS, node).add(in));
  }
  Seq& ioctl(uint64_t node, uint64_t fh, uint32_t cmd, const std::string& in_bytes,
             uint32_t out_size) {
    fuse_ioctl_in in{};
    in.fh = fh;
    in.cmd = cmd;
    in.in_size = static_cast<uint32_t>(in_bytes.size());
    in.out_size = out_size;
    return add(op(FUSE_IOCTL, node).add(in).add_bytes(in_bytes.data(), in_bytes.size()));
  }
  Seq& tmpfile(uint64_t parent, uint32_t mode, uint32_t flags) {
    fuse_create_in in{};
    in.mode = mode;
    in.flags = flags;
    return add(op(FUSE_TMPFILE, parent).add(in).add_name("/"));
  }
  Seq& batch_forget(const std::vector<std::pair<uint64_t, uint64_t>>& items) {
    fuse_batch_forget_in in{};
    in.count = static_cast<uint32_t>(items.size());
    auto b = op(FUSE_BATCH_FORGET, 0).add(in);
    for (auto [node, n] : items) {
      fuse_forget_one one{};
      one.nodeid = node;
      one.nlookup = n;
      b.add(one);
    }
    return add(b);
  }
  // A creating request with request extensions after its body.
  Seq& with_extensions(RequestBuilder b, const Bytes& ext) {
    b.add_bytes(ext.data(), ext.size());
    Bytes bytes = b.finish();
    set_extlen(bytes, ext.size());
    return raw(std::move(bytes));
  }

  const std::vector<Req>& requests() const { return reqs_; }

 private:
  uint64_t unique_ = 2;
  uint32_t uid_ = 0, gid_ = 0, pid_ = 100;
  std::vector<Req> reqs_;
};

uint32_t opcode_of(const Bytes& b) {
  fuse_in_header h{};
  if (b.size() >= sizeof(h)) std::memcpy(&h, b.data(), sizeof(h));
  return h.opcode;
}

// With the harness's INIT (config bit 0) the sequence's own first INIT is left out.
Bytes fuse_input(const std::vector<uint8_t>& config, const std::vector<Req>& reqs) {
  InputWriter w;
  for (uint8_t c : config) w.u8(c);
  bool skip_init = !config.empty() && (config[0] & 1) != 0;
  for (const Req& r : reqs) {
    if (skip_init && opcode_of(r.bytes) == FUSE_INIT) {
      skip_init = false;
      continue;
    }
    skip_init = false;
    const uint8_t prefix[2] = {r.room, r.seg};
    w.frame(prefix, r.bytes);
  }
  return w.bytes();
}

// The fuse_passthrough share (fuse_passthrough_fuzzer.cc): file (4096
// bytes, xattrs user.fuzz, trusted.fuzz), empty (uid 1000), Mixed, suid
// (06755), dir/{inner,sub/}, pub/ (01777), sgid/ (02775), link -> file, abs ->
// /etc/passwd, up -> ../outside/canary, fifo, hard (= file). Inode ids are
// given in lookup order from 2; handles from 1.
std::map<std::string, Seq> fuse_scenarios() {
  std::map<std::string, Seq> out;
  {
    Seq s;
    s.init()
        .lookup(1, "file")
        .getattr(2)
        .open(2, O_RDONLY)
        .read(2, 1, 0, 4096)
        .read(2, 1, 4000, 65536);
    s.lseek(2, 1, 0, 3 /* SEEK_DATA */).lseek(2, 1, 0, 4 /* SEEK_HOLE */).flush(2, 1, 7);
    s.release(2, 1).forget(2, 1).simple(FUSE_STATFS, 1).access(1, 7).getattr(1);
    out["read"] = s;
  }
  {
    Seq s;
    s.init().create(1, "new", 0100644, O_RDWR | O_CREAT | O_EXCL).write(2, 1, 0, "hello world");
    s.write(2, 1, 1 << 20, std::string(600, 'w')).fsync(2, 1).fsync(2, 1, false, 1);
    fuse_setattr_in sa{};
    sa.valid = FATTR_SIZE | FATTR_FH;
    sa.fh = 1;
    sa.size = 3;
    s.setattr(2, sa);
    sa = {};
    sa.valid = FATTR_MODE;
    sa.mode = 0104755;
    s.setattr(2, sa);
    sa = {};
    sa.valid = FATTR_UID | FATTR_GID;
    sa.uid = 1234;
    sa.gid = 2345;
    s.setattr(2, sa);
    sa = {};
    sa.valid = FATTR_ATIME | FATTR_MTIME;
    sa.atime = 1000;
    sa.mtime = 2000;
    sa.mtimensec = 5;
    s.setattr(2, sa);
    sa = {};
    sa.valid = FATTR_ATIME_NOW | FATTR_MTIME_NOW | FATTR_ATIME | FATTR_MTIME;
    s.setattr(2, sa).getattr(2, 1).fallocate(2, 1, 0, 0, 8192).fallocate(2, 1, 3, 0, 4096);
    s.copy_file_range(2, 1, 2, 1, 4096).release(2, 1).unlink(1, "new").forget(2, 1);
    out["write"] = s;
  }
  {
    Seq s;
    s.init().open(1, O_RDONLY | O_DIRECTORY, true).read(1, 1, 0, 4096, FUSE_READDIR);
    s.read(1, 1, 3, 4096, FUSE_READDIR).fsync(1, 1, true).release(1, 1, true);
    s.mkdir(1, "d2", 040755).lookup(1, "dir").mkdir(3, "deeper", 040700).unlink(3, "deeper", true);
    s.unlink(1, "d2", true).unlink(1, "dir", true);
    s.rename(1, "file", 1, "renamed").rename(1, "renamed", 1, "empty", RENAME_EXCHANGE);
    s.rename(1, "empty", 1, "Mixed", RENAME_NOREPLACE).lookup(1, "renamed").link(4, 1, "link2");
    s.symlink(1, "sl", "target/elsewhere").lookup(1, "sl").readlink(5);
    s.mknod(1, "fifo2", 010644).mknod(1, "sock", 0140644).mknod(1, "chr", 020644, 0x103);
    s.unlink(1, "sl").unlink(1, "fifo2").batch_forget({{2, 1}, {3, 1}, {4, 2}, {5, 1}});
    out["dirs"] = s;
  }
  {
    Seq s;
    s.init().open(1, O_RDONLY | O_DIRECTORY, true).read(1, 1, 0, 65536, FUSE_READDIRPLUS);
    s.read(1, 1, 5, 4096, FUSE_READDIRPLUS).release(1, 1, true).lookup(1, "dir").lookup(1, "dir");
    out["readdirplus"] = s;
  }
  {
    Seq s;
    s.init().lookup(1, "file").listxattr(2, 0).listxattr(2, 4096).getxattr(2, "user.fuzz", 0);
    s.getxattr(2, "user.fuzz", 64).getxattr(2, "trusted.fuzz", 1).setxattr(2, "user.new", "value");
    s.setxattr(2, "user.new", "v2", 2 /* XATTR_REPLACE */).setxattr(2, "trusted.t", "x", 0, false);
    s.setxattr(2, "security.capability",
               std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8) + std::string(12, '\0'));
    s.getxattr(2, "security.capability", 64).removexattr(2, "user.new").removexattr(2, "user.none");
    std::string acl(
        "\x02\x00\x00\x00\x01\x00\x06\x00\xff\xff\xff\xff\x04\x00\x04\x00\xff\xff\xff\xff"
        "\x20\x00\x04\x00\xff\xff\xff\xff",
        28);
    s.setxattr(2, "system.posix_acl_access", acl).getxattr(2, "system.posix_acl_access", 128);
    s.lookup(1, "dir")
        .setxattr(3, "system.posix_acl_default", acl)
        .create(3, "acl_child", 0100666, O_RDWR);
    out["xattr"] = s;
  }
  {
    Seq s;
    s.init().lookup(1, "file").open(2, O_RDWR).open(2, O_RDWR);
    s.lock(FUSE_SETLK, 2, 1, 0xa, F_WRLCK, 0, 100).lock(FUSE_GETLK, 2, 2, 0xb, F_RDLCK, 50, 60);
    const uint64_t waiting = s.next_unique();
    s.lock(FUSE_SETLKW, 2, 2, 0xb, F_WRLCK, 0, 10).interrupt(waiting);
    s.lock(FUSE_SETLKW, 2, 2, 0xc, F_RDLCK, 0, INT64_MAX);
    s.lock(FUSE_SETLK, 2, 1, 0xa, F_UNLCK, 0, 100);
    s.lock(FUSE_SETLK, 2, 1, 0xa, F_WRLCK, 0, 0, true)
        .lock(FUSE_SETLKW, 2, 2, 0xb, F_WRLCK, 0, 0, true);
    s.flush(2, 1, 0xa).release(2, 1).flush(2, 2, 0xb).release(2, 2);
    out["locks"] = s;
  }
  {
    Seq s;
    s.init().lookup(1, "file").simple(FUSE_DESTROY, 0).lookup(1, "file").init().lookup(1, "dir");
    s.forget(3, 1).init(GuestKind::kLinux612).lookup(1, "file").forget(2, 1 << 20);
    s.batch_forget({{2, 1}, {99, 1}, {1, 1}}).simple(FUSE_DESTROY, 0).simple(FUSE_DESTROY, 0);
    out["session"] = s;
  }
  {
    Seq s;
    s.init().lookup(1, "..").lookup(1, ".").lookup(1, "abs").open(2, O_RDONLY).readlink(2);
    s.lookup(1, "up").readlink(3).lookup(1, "fifo").open(4, O_RDONLY).open(4, O_WRONLY);
    s.lookup(1, "dir").lookup(5, "..").lookup(5, "sub").lookup(6, "..").lookup(6, "../..");
    s.symlink(1, "evil", "/etc/shadow").lookup(1, "evil").open(7, O_RDONLY);
    s.link(4, 5, "fifolink").lookup(1, "link").open(8, O_RDONLY | O_NOFOLLOW);
    out["escape"] = s;
  }
  {
    Seq s;
    s.init().lookup(1, "file").open(2, O_RDWR);
    int flags = 0;
    s.ioctl(2, 1, FS_IOC_GETFLAGS, "", 8);
    flags = FS_NODUMP_FL;
    s.ioctl(2, 1, FS_IOC_SETFLAGS, std::string(reinterpret_cast<char*>(&flags), 4), 0);
    s.ioctl(2, 1, FS_IOC_FSGETXATTR, "", 28).ioctl(2, 1, 0x5401 /* TCGETS */, "", 0);
    s.tmpfile(1, 0100600, O_RDWR).write(3, 2, 0, "tmp").syncfs(1).release(3, 2).release(2, 1);
    out["ioctl_tmpfile"] = s;
  }
  {
    // A 6.12 guest: supplementary groups and security contexts as request
    // extensions.
    Seq s;
    s.init(GuestKind::kLinux612).lookup(1, "pub").as(1234, 2345);
    fuse_mkdir_in mk{};
    mk.mode = 040775;
    mk.umask = 022;
    s.with_extensions(s.op(FUSE_MKDIR, 2).add(mk).add_name("withgroups"),
                      groups_block({100, 2345, 7}));
    fuse_create_in cr{};
    cr.mode = 0100640;
    cr.flags = O_RDWR | O_CREAT;
    Bytes both = secctx_block("security.selinux", "system_u:object_r:tmp_t:s0");
    Bytes groups = groups_block({100});
    both.insert(both.end(), groups.begin(), groups.end());
    s.with_extensions(s.op(FUSE_CREATE, 2).add(cr).add_name("labelled"), both);
    s.with_extensions(s.op(FUSE_SYMLINK, 2).add_name("sl").add_name("t"),
                      secctx_block("security.selinux", "x"));
    fuse_mknod_in mn{};
    mn.mode = 010600;
    s.with_extensions(s.op(FUSE_MKNOD, 2).add(mn).add_name("p"), groups_block({}));
    s.as(0, 0)
        .lookup(1, "sgid")
        .as(1234, 100)
        .mkdir(7, "inherits", 040755)
        .create(7, "f", 0100644, O_WRONLY);
    out["extensions"] = s;
  }
  {
    // A 7.37 guest with FUSE_SECURITY_CTX: the context follows the name.
    Seq s;
    s.init(GuestKind::kLegacy);
    fuse_create_in cr{};
    cr.mode = 0100600;
    cr.flags = O_RDWR | O_CREAT;
    Bytes block = secctx_block("security.selinux", "label");
    auto b = s.op(FUSE_CREATE, 1).add(cr).add_name("legacy");
    b.add_bytes(block.data(), block.size());
    s.add(b);
    fuse_secctx_header none{};
    none.size = sizeof(none);
    fuse_mkdir_in mk{};
    mk.mode = 040700;
    s.add(s.op(FUSE_MKDIR, 1).add(mk).add_name("nolabel").add(none));
    out["legacy_secctx"] = s;
  }
  {
    // Requests a guest would never send.
    Seq s;
    s.init();
    s.raw(Bytes(10, 0x11));  // shorter than a header
    Bytes bad_len = s.op(FUSE_LOOKUP, 1).add_name("file").finish();
    s.raw(bad_len, kRoom4K, 0);  // len as written
    bad_len[0] = 0xff;
    s.raw(bad_len, kRoom4K, 0);                         // len beyond the bytes
    s.add(s.op(FUSE_LOOKUP, 1).add_bytes("nonul", 5));  // name without NUL
    s.add(s.op(FUSE_LOOKUP, 1).add_name(std::string(300, 'n')));
    s.add(s.op(FUSE_GETATTR, 1).add_bytes("x", 1));  // body too short
    s.add(s.op(4242, 1));                            // unknown opcode
    s.add(s.op(FUSE_SETUPMAPPING, 1)).add(s.op(FUSE_BMAP, 1)).add(s.op(FUSE_POLL, 1));
    s.add(s.op(FUSE_LOOKUP, 1).add_name("file"), 1);  // no room for the header
    s.add(s.op(FUSE_LOOKUP, 1).add_name("file"), 5);  // no room for the entry
    s.read(1, 99, 0, 100).write(1, 99, 0, "x");
    fuse_write_in w{};
    w.size = 100;
    s.add(s.op(FUSE_WRITE, 2).add(w).add_bytes("short", 5));
    s.raw(s.op(FUSE_LOOKUP, 1).add_name("file").finish(), kRoom4K, kFixLen | 1);
    s.raw(s.op(FUSE_LOOKUP, 1).add_name("file").finish(), (7 << 4) | kRoom4K, kFixLen | 3);
    Bytes ext = s.op(FUSE_MKDIR, 1).add_name("x").finish();
    set_extlen(ext, 64);
    s.raw(ext);
    out["malformed"] = s;
  }
  return out;
}

// --- recordings ------------------------------------------------------------------

struct RecordedRequest {
  uint32_t queue = 0;
  uint32_t writable = 0;
  Bytes bytes;
};
struct RecordedMessage {
  std::vector<uint8_t> fd_kinds;
  Bytes bytes;
};

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

uint32_t get_u32(const Bytes& b, size_t& at) {
  uint32_t v = 0;
  if (at + 4 <= b.size()) std::memcpy(&v, b.data() + at, 4);
  at += 4;
  return v;
}

std::vector<RecordedRequest> load_fuse(const std::string& path) {
  Bytes b = read_file(path);
  std::vector<RecordedRequest> out;
  size_t at = 0;
  while (at + 20 <= b.size()) {
    if (std::memcmp(b.data() + at, "VFRQ", 4) != 0) break;
    at += 4;
    RecordedRequest r;
    r.queue = get_u32(b, at);
    const uint32_t len = get_u32(b, at);
    r.writable = get_u32(b, at);
    const uint32_t stored = get_u32(b, at);
    if (at + stored > b.size()) break;
    r.bytes.assign(b.begin() + static_cast<std::ptrdiff_t>(at),
                   b.begin() + static_cast<std::ptrdiff_t>(at + stored));
    at += stored;
    if (stored < len) {
      // A WRITE cut by the recorder: make it a shorter, complete WRITE.
      fuse_in_header h{};
      fuse_write_in w{};
      if (stored < sizeof(h) + sizeof(w)) continue;
      std::memcpy(&h, r.bytes.data(), sizeof(h));
      if (h.opcode != FUSE_WRITE || h.total_extlen != 0) continue;
      std::memcpy(&w, r.bytes.data() + sizeof(h), sizeof(w));
      w.size = static_cast<uint32_t>(stored - sizeof(h) - sizeof(w));
      h.len = stored;
      std::memcpy(r.bytes.data(), &h, sizeof(h));
      std::memcpy(r.bytes.data() + sizeof(h), &w, sizeof(w));
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<RecordedMessage> load_vhost(const std::string& path) {
  Bytes b = read_file(path);
  std::vector<RecordedMessage> out;
  size_t at = 0;
  while (at + 12 <= b.size()) {
    if (std::memcmp(b.data() + at, "VFVU", 4) != 0) break;
    at += 4;
    RecordedMessage m;
    uint32_t nfds = get_u32(b, at);
    if (nfds > 8 || at + nfds > b.size()) break;
    m.fd_kinds.assign(b.begin() + static_cast<std::ptrdiff_t>(at),
                      b.begin() + static_cast<std::ptrdiff_t>(at + nfds));
    at += nfds;
    uint32_t len = get_u32(b, at);
    if (at + len > b.size()) break;
    m.bytes.assign(b.begin() + static_cast<std::ptrdiff_t>(at),
                   b.begin() + static_cast<std::ptrdiff_t>(at + len));
    at += len;
    out.push_back(std::move(m));
  }
  return out;
}

// --- virtqueue seeds ---------------------------------------------------------------

constexpr uint64_t kVqGpaBase = 0x10000;  // virtqueue_fuzzer.cc's layout

// A virtqueue input: rings laid out by VirtqDriver at the start of a
// `mem_size` memory split in two adjacent regions, chains carrying `reqs`
// (every third one indirect when `indirect`), then a second patch that
// publishes `late` more.
Bytes virtqueue_input(uint32_t queue_size, const std::vector<Bytes>& reqs, bool indirect,
                      bool event_idx, bool serve, size_t mem_size = 16384,
                      const std::vector<Bytes>& late = {}) {
  Bytes mem(mem_size, 0);
  test::VirtqDriver d(reinterpret_cast<char*>(mem.data()), kVqGpaBase, mem.size(), queue_size);
  size_t k = 0;
  auto publish_all = [&](const std::vector<Bytes>& list) {
    for (const Bytes& r : list) {
      std::string req(r.begin(), r.end());
      // Requests split over two readable buffers now and then, and the
      // header alone in the first.
      std::vector<std::string> readable{req};
      if (k % 4 == 1 && req.size() > 40) readable = {req.substr(0, 40), req.substr(40)};
      try {
        uint16_t head = (indirect && k % 3 == 2) ? d.add_indirect_chain(readable, {16, 176})
                                                 : d.add_chain(readable, {192});
        d.publish(head);
      } catch (const std::exception&) {
        break;  // the memory is full: fewer chains
      }
      ++k;
    }
  };
  publish_all(reqs);
  InputWriter w;
  const uint8_t size_code = static_cast<uint8_t>(__builtin_ctz(queue_size));
  w.u8(static_cast<uint8_t>(size_code | (event_idx ? 16 : 0) | (indirect ? 32 : 0) |
                            (serve ? 128 : 0)));
  w.u16(0);  // next_avail
  w.u16(static_cast<uint16_t>((d.desc_gpa() - kVqGpaBase) / 16));
  w.u16(static_cast<uint16_t>((d.avail_gpa() - kVqGpaBase) / 2));
  w.u16(static_cast<uint16_t>((d.used_gpa() - kVqGpaBase) / 4));
  w.u16(static_cast<uint16_t>(mem_size - 256));
  w.u16(static_cast<uint16_t>(mem_size / 2));
  // Up to the last byte that is not zero: the memory starts zeroed.
  auto image = [&mem]() {
    size_t used = mem.size();
    while (used > 0 && mem[used - 1] == 0) --used;
    return std::span<const uint8_t>(mem).first(used);
  };
  const uint8_t at0[2] = {0, 0};
  w.frame(at0, image());
  if (!late.empty()) {
    publish_all(late);
    w.frame(at0, image());
  }
  return w.bytes();
}

// Malformed rings: each a small patch on a clean layout.
std::vector<Bytes> virtqueue_malformed() {
  std::vector<Bytes> out;
  for (int kind = 0; kind < 8; ++kind) {
    Bytes mem(8192, 0);
    test::VirtqDriver d(reinterpret_cast<char*>(mem.data()), kVqGpaBase, mem.size(), 16);
    uint16_t head = d.add_chain({"request"}, {64});
    switch (kind) {
      case 0:  // a loop
        d.desc(head).flags |= test::kVirtqDescFNext;
        d.desc(head).next = head;
        break;
      case 1:  // next out of range
        d.desc(head).flags |= test::kVirtqDescFNext;
        d.desc(head).next = 99;
        break;
      case 2:  // a buffer outside memory
        d.desc(head).addr = 0xdead0000;
        break;
      case 3:  // readable after writable
        d.desc(static_cast<uint16_t>(head + 1)).flags =
            test::kVirtqDescFNext | test::kVirtqDescFWrite;
        d.desc(static_cast<uint16_t>(head + 1)).next = 5;
        d.desc(5) = test::VirtqDesc{d.data_gpa(), 8, 0, 0};
        break;
      case 4: {  // nested indirect
        uint16_t h2 = d.add_indirect_chain({"x"}, {8});
        auto* table = reinterpret_cast<test::VirtqDesc*>(d.host(d.desc(h2).addr));
        table[0].flags = test::kVirtqDescFIndirect;
        head = h2;
        break;
      }
      case 5:  // an indirect table of bad length
        head = d.add_indirect_chain({"x"}, {8});
        d.desc(head).len = 24;
        break;
      case 6:  // head out of range: the avail slot names 40
        head = 40;
        break;
      case 7:  // length overflow
        d.desc(head).len = 0xfffffff0;
        d.desc(head).flags |= test::kVirtqDescFNext;
        d.desc(head).next = static_cast<uint16_t>(head + 1);
        d.desc(static_cast<uint16_t>(head + 1)).len = 0x20;
        break;
    }
    d.publish(head);
    d.publish(d.add_chain({"after"}, {16}));
    InputWriter w;
    w.u8(4 | 32 | 16).u16(0).u16(0);
    w.u16(static_cast<uint16_t>((d.avail_gpa() - kVqGpaBase) / 2));
    w.u16(static_cast<uint16_t>((d.used_gpa() - kVqGpaBase) / 4));
    w.u16(8192 - 256).u16(4096);
    const uint8_t at0[2] = {0, 0};
    w.frame(at0, mem);
    out.push_back(w.bytes());
  }
  return out;
}

// --- vhost-user seeds -----------------------------------------------------------

namespace vu = vhost_user;
constexpr uint64_t kUva = 0x7f0000000000;
constexpr size_t kMemfd = 64 * 1024;
// vhost_user_fuzzer.cc's pool: 0 image memfd, 1 memfd, 2 small memfd,
// 3-5 eventfds, 6 /dev/null, 7 empty memfd.
constexpr uint8_t kFdImage = 1, kFdCall0 = 1 << 3, kFdCall1 = 1 << 4, kFdKick = 1 << 5,
                  kFdOther = 1 << 6;

class Session {
 public:
  template <class T>
  Session& msg(vu::Request r, const T& payload, uint8_t fds = 0, bool need_reply = false,
               uint8_t flags = 3) {
    return raw(static_cast<uint32_t>(r), &payload, sizeof(T), fds, need_reply, flags);
  }
  Session& bare(vu::Request r, uint8_t fds = 0, bool need_reply = false) {
    return raw(static_cast<uint32_t>(r), nullptr, 0, fds, need_reply, 3);
  }
  Session& raw(uint32_t request, const void* payload, size_t size, uint8_t fds, bool need_reply,
               uint8_t flags) {
    vu::Header h{request, vu::kVersion | (need_reply ? vu::kFlagNeedReply : 0u),
                 static_cast<uint32_t>(size)};
    Bytes m(sizeof(h) + size);
    std::memcpy(m.data(), &h, sizeof(h));
    if (size > 0) std::memcpy(m.data() + sizeof(h), payload, size);
    return bytes(m, fds, flags);
  }
  Session& bytes(const Bytes& m, uint8_t fds, uint8_t flags) {
    const uint8_t prefix[2] = {fds, flags};
    frames_.push_back({Bytes(prefix, prefix + 2), m});
    return *this;
  }
  Bytes input(uint8_t config, const Bytes& image) const {
    InputWriter w;
    w.u8(config);
    // Only up to the last byte that is not zero: the memfd is zero beyond.
    size_t used = image.size();
    while (used > 0 && image[used - 1] == 0) --used;
    w.frame({}, std::span<const uint8_t>(image).first(used));
    for (const auto& [prefix, body] : frames_) w.frame(prefix, body);
    return w.bytes();
  }

 private:
  std::vector<std::pair<Bytes, Bytes>> frames_;
};

// A ring in the memfd: VirtqDriver layout at `offset`, `size` entries.
struct RingSlot {
  size_t offset;
  uint32_t size;
};

vu::VringAddr ring_addr(uint32_t index, const RingSlot& slot, uint64_t uva_base) {
  Bytes scratch(kMemfd - slot.offset, 0);
  test::VirtqDriver d(reinterpret_cast<char*>(scratch.data()), 0, scratch.size(), slot.size);
  vu::VringAddr a{};
  a.index = index;
  a.desc_user_addr = uva_base + slot.offset + d.desc_gpa();
  a.avail_user_addr = uva_base + slot.offset + d.avail_gpa();
  a.used_user_addr = uva_base + slot.offset + d.used_gpa();
  return a;
}

// The memfd image with `reqs` published on the ring at `slot`; the guest
// physical address of the memfd's start is `gpa_base`.
Bytes ring_image(const RingSlot& slot, uint64_t gpa_base, const std::vector<Bytes>& reqs) {
  Bytes image(kMemfd, 0);
  test::VirtqDriver d(reinterpret_cast<char*>(image.data()) + slot.offset, gpa_base + slot.offset,
                      kMemfd - slot.offset, slot.size);
  for (const Bytes& r : reqs) {
    try {
      d.publish(d.add_chain({std::string(r.begin(), r.end())}, {192}));
    } catch (const std::exception&) {
      break;
    }
  }
  return image;
}

void vhost_user_seeds(const std::vector<Bytes>& fuse_reqs) {
  const RingSlot hiprio{0, 16}, request{0x2000, 64};
  const uint64_t features = vu::kFeatureVersion1 | vu::kFeatureIndirectDesc | vu::kFeatureEventIdx |
                            vu::kFeatureProtocolFeatures;
  auto prologue = [&](Session& s, bool protocol) {
    s.bare(vu::Request::kGetFeatures);
    if (protocol) {
      s.bare(vu::Request::kGetProtocolFeatures)
          .msg(vu::Request::kSetProtocolFeatures, vu::kOfferedProtocolFeatures);
      s.bare(vu::Request::kGetQueueNum, 0, true).bare(vu::Request::kGetMaxMemSlots);
    }
    s.bare(vu::Request::kSetOwner).bare(vu::Request::kSetBackendReqFd, kFdOther, protocol);
    s.msg(vu::Request::kSetVringCall, uint64_t{0}, kFdCall0)
        .msg(vu::Request::kSetVringCall, uint64_t{1}, kFdCall1);
    s.msg(vu::Request::kSetVringErr, uint64_t{0} | vu::kVringNoFdMask);
    s.msg(vu::Request::kSetFeatures,
          protocol ? features : features & ~vu::kFeatureProtocolFeatures);
  };
  auto start_ring = [&](Session& s, uint32_t index, const RingSlot& slot, bool protocol) {
    s.msg(vu::Request::kSetVringNum, vu::VringState{index, slot.size}, 0, protocol);
    s.msg(vu::Request::kSetVringBase, vu::VringState{index, 0});
    s.msg(vu::Request::kSetVringAddr, ring_addr(index, slot, kUva), 0, protocol);
    s.msg(vu::Request::kSetVringKick, uint64_t{index}, kFdKick);
    if (protocol) s.msg(vu::Request::kSetVringEnable, vu::VringState{index, 1}, 0, true, 3 | 8);
  };
  vu::SingleMemoryRegion reg{};
  reg.region = vu::MemoryRegion{0, kMemfd, kUva, 0};
  const Bytes image = ring_image(request, 0, fuse_reqs);

  {  // QEMU 7.2 with CONFIGURE_MEM_SLOTS: ADD_MEM_REG, both rings, then stop.
    Session s;
    prologue(s, true);
    s.msg(vu::Request::kAddMemReg, reg, kFdImage, true);
    start_ring(s, 0, hiprio, true);
    start_ring(s, 1, request, true);
    s.msg(vu::Request::kGetVringBase, vu::VringState{1, 0})
        .msg(vu::Request::kGetVringBase, vu::VringState{0, 0});
    s.msg(vu::Request::kRemMemReg, reg, 0, true).bare(vu::Request::kResetDevice);
    write_seed("vhost_user", "qemu_add_mem_reg", s.input(0, image));
    write_seed("vhost_user", "qemu_add_mem_reg_init", s.input(4, image));
  }
  {  // SET_MEM_TABLE with two regions of two memfds, no protocol features.
    Session s;
    prologue(s, false);
    struct {
      vu::MemoryTableHead head;
      vu::MemoryRegion r[2];
    } table{};
    table.head.nregions = 2;
    table.r[0] = vu::MemoryRegion{0, kMemfd, kUva, 0};
    table.r[1] = vu::MemoryRegion{0x100000, 4096, kUva + 0x100000, 0};
    s.msg(vu::Request::kSetMemTable, table, kFdImage | 4);
    start_ring(s, 1, request, false);
    // The table changes under the running ring, then the ring restarts.
    table.head.nregions = 1;
    s.raw(static_cast<uint32_t>(vu::Request::kSetMemTable), &table,
          sizeof(table.head) + sizeof(table.r[0]), kFdImage, false, 3 | 8);
    s.msg(vu::Request::kGetVringBase, vu::VringState{1, 0})
        .msg(vu::Request::kSetVringKick, uint64_t{1}, kFdKick);
    s.bare(vu::Request::kResetOwner);
    write_seed("vhost_user", "set_mem_table", s.input(4, image));
  }
  {  // Messages a front-end must not send.
    Session s;
    s.msg(vu::Request::kGetFeatures, uint64_t{5});               // payload where none belongs
    s.msg(vu::Request::kSetVringKick, uint64_t{1});              // fd missing
    s.msg(vu::Request::kSetVringCall, uint64_t{300}, kFdCall0);  // index out of range
    s.msg(vu::Request::kSetVringNum, vu::VringState{1, 100});    // not a power of two
    s.msg(vu::Request::kSetVringBase, vu::VringState{1, 70000});
    s.msg(vu::Request::kSetMemTable, vu::MemoryTableHead{9, 0}, kFdImage);
    s.msg(vu::Request::kAddMemReg, reg, 0x81);  // two fds
    vu::SingleMemoryRegion big = reg;
    big.region.memory_size = kMemfd * 4;  // past the memfd's end
    s.msg(vu::Request::kAddMemReg, big, kFdImage);
    big.region.memory_size = 4096;
    s.msg(vu::Request::kAddMemReg, big, 1 << 6);  // not a regular file
    s.msg(vu::Request::kAddMemReg, big, 1 << 7);  // empty memfd
    s.raw(6 /* SET_LOG_BASE */, nullptr, 0, 0, true, 3).raw(99, nullptr, 0, 0, false, 3);
    Bytes bad_version(12, 0);
    bad_version[0] = 1;
    s.bytes(bad_version, 0, 0);
    write_seed("vhost_user", "malformed", s.input(0, {}));
  }
}

// A recorded session moved into the target's pool: every memory region
// maps the image memfd from offset 0 and is cut to its size; rings move to
// fixed slots of that memfd, where the image publishes recorded requests.
void convert_vhost(const std::string& name, const std::vector<RecordedMessage>& msgs,
                   const std::vector<Bytes>& fuse_reqs) {
  Session s;
  std::map<uint32_t, uint32_t> ring_sizes;
  std::vector<vu::MemoryRegion> regions;
  auto region_of = [&](uint64_t uva) -> const vu::MemoryRegion* {
    for (const auto& r : regions) {
      if (uva >= r.userspace_addr && uva - r.userspace_addr < r.memory_size) return &r;
    }
    return regions.empty() ? nullptr : &regions.front();
  };
  uint64_t image_gpa = 0;
  // The first ring's descriptor table: its region gets the image memfd.
  uint64_t ring_uva = 0;
  for (const RecordedMessage& m : msgs) {
    vu::Header h;
    vu::VringAddr a{};
    if (m.bytes.size() < sizeof(h) + sizeof(a)) continue;
    std::memcpy(&h, m.bytes.data(), sizeof(h));
    if (h.request != static_cast<uint32_t>(vu::Request::kSetVringAddr)) continue;
    std::memcpy(&a, m.bytes.data() + sizeof(h), sizeof(a));
    ring_uva = a.desc_user_addr;
    break;
  }
  for (const RecordedMessage& m : msgs) {
    if (m.bytes.size() < sizeof(vu::Header)) continue;
    vu::Header h;
    std::memcpy(&h, m.bytes.data(), sizeof(h));
    Bytes body(m.bytes.begin() + sizeof(h), m.bytes.end());
    uint8_t fds = 0;
    int events = 0;
    for (uint8_t kind : m.fd_kinds) {
      if (kind == 0)
        fds |= kFdImage;
      else if (kind == 1)
        fds |= static_cast<uint8_t>(1u << (3 + (events++ % 3)));
      else
        fds |= kFdOther;
    }
    auto fix_region = [&](vu::MemoryRegion& r) {
      regions.push_back(r);
      r.memory_size = std::min<uint64_t>(r.memory_size, kMemfd);
      r.mmap_offset = 0;
    };
    switch (static_cast<vu::Request>(h.request)) {
      case vu::Request::kSetMemTable: {
        // At most three regions, on the pool's memfds 0-2 (the image is in
        // 0), the one holding the rings first.
        vu::MemoryTableHead head{};
        if (body.size() < sizeof(head)) break;
        std::memcpy(&head, body.data(), sizeof(head));
        std::vector<vu::MemoryRegion> table;
        for (uint32_t i = 0;
             i < head.nregions && sizeof(head) + (i + 1) * sizeof(vu::MemoryRegion) <= body.size();
             ++i) {
          vu::MemoryRegion r;
          std::memcpy(&r, body.data() + sizeof(head) + i * sizeof(r), sizeof(r));
          table.push_back(r);
        }
        std::stable_partition(table.begin(), table.end(), [&](const vu::MemoryRegion& r) {
          return ring_uva >= r.userspace_addr && ring_uva - r.userspace_addr < r.memory_size;
        });
        if (table.size() > 3) table.resize(3);
        regions.clear();
        static constexpr uint64_t kPoolSizes[3] = {kMemfd, kMemfd, 4096};
        head.nregions = static_cast<uint32_t>(table.size());
        body.assign(sizeof(head), 0);
        std::memcpy(body.data(), &head, sizeof(head));
        fds = 0;
        for (size_t i = 0; i < table.size(); ++i) {
          vu::MemoryRegion r = table[i];
          fix_region(r);
          r.memory_size = std::min<uint64_t>(r.memory_size, kPoolSizes[i]);
          const auto* p = reinterpret_cast<const uint8_t*>(&r);
          body.insert(body.end(), p, p + sizeof(r));
          fds |= static_cast<uint8_t>(1u << i);
        }
        h.size = static_cast<uint32_t>(body.size());
        break;
      }
      case vu::Request::kAddMemReg:
      case vu::Request::kRemMemReg: {
        vu::SingleMemoryRegion r{};
        if (body.size() < sizeof(r)) break;
        std::memcpy(&r, body.data(), sizeof(r));
        if (h.request == static_cast<uint32_t>(vu::Request::kAddMemReg)) {
          fix_region(r.region);
        } else {
          r.region.memory_size = std::min<uint64_t>(r.region.memory_size, kMemfd);
          r.region.mmap_offset = 0;
        }
        std::memcpy(body.data(), &r, sizeof(r));
        break;
      }
      case vu::Request::kSetVringNum: {
        vu::VringState st{};
        if (body.size() < sizeof(st)) break;
        std::memcpy(&st, body.data(), sizeof(st));
        // Queues up to 256 entries fit the slots.
        st.num = std::min<uint32_t>(st.num, 256);
        ring_sizes[st.index] = st.num;
        std::memcpy(body.data(), &st, sizeof(st));
        break;
      }
      case vu::Request::kSetVringAddr: {
        vu::VringAddr a{};
        if (body.size() < sizeof(a)) break;
        std::memcpy(&a, body.data(), sizeof(a));
        const vu::MemoryRegion* r = region_of(a.desc_user_addr);
        uint32_t size = ring_sizes.count(a.index) ? ring_sizes[a.index] : 16;
        if (r != nullptr && size > 0 && (size & (size - 1)) == 0) {
          RingSlot slot{(a.index * 0x2000) % 0xe000, size};
          vu::VringAddr moved = ring_addr(a.index, slot, r->userspace_addr);
          moved.flags = a.flags;
          std::memcpy(body.data(), &moved, sizeof(moved));
          if (a.index == 1) image_gpa = r->guest_phys_addr;
        }
        break;
      }
      default:
        break;
    }
    Bytes out(sizeof(h) + body.size());
    std::memcpy(out.data(), &h, sizeof(h));
    if (!body.empty()) std::memcpy(out.data() + sizeof(h), body.data(), body.size());
    s.bytes(out, fds, 0);
  }
  uint32_t size1 = ring_sizes.count(1) ? ring_sizes[1] : 64;
  if (size1 == 0 || (size1 & (size1 - 1)) != 0) size1 = 64;
  Bytes image = ring_image(RingSlot{0x2000, size1}, image_gpa, fuse_reqs);
  write_seed("vhost_user", name, s.input(0, image));
  write_seed("vhost_user", name + "_init", s.input(4, image));
}

// --- xattrmap and command line ------------------------------------------------------

void xattrmap_seeds() {
  const char* maps[] = {
      ":prefix:all::user.virtiofs.::bad:all:::",
      ":map::user.virtiofs.:",
      ":map:security.selinux:user.virtiofs.:",
      ":map:trusted.:user.virtiofs.:",
      ":ok:all:user.keep.:user.keep.: :prefix:all:user.:user.vm.: :bad:all:::",
      ":prefix:client:trusted.:user.t.: :bad:client:user.secret.:: :ok:all:::",
      ":prefix:server::user.t.: :bad:server::security.: :unsupported:server::system.: :ok:all:::",
      ":unsupported:client:security.selinux:: :ok:all:::",
      "/prefix/all/trusted./user.virtiofs./ /ok/all/// ",
      ":prefix:client:trusted.:user.vm.: :ok:server:a:b: :bad:all:c:d: ",
      ":ok:all::: :TOMATO:all:::",
      ":map:a.:b.: :ok:all:::",
      ":prefix:all:trusted.:user.vm.",
  };
  const char* names[] = {"user.a",
                         "trusted.x",
                         "security.selinux",
                         "user.virtiofs.trusted.x",
                         "user.virtiofs.",
                         "system.posix_acl_access",
                         "",
                         "a.b"};
  int n = 0;
  for (const char* map : maps) {
    InputWriter w;
    Bytes parse{0};
    parse.insert(parse.end(), map, map + std::strlen(map));
    w.frame({}, parse);
    for (const char* name : names) {
      for (uint8_t dir : {uint8_t{1}, uint8_t{2}}) {
        Bytes t{dir};
        t.insert(t.end(), name, name + std::strlen(name));
        w.frame({}, t);
      }
    }
    write_seed("xattrmap", "map" + std::to_string(n++), w.bytes());
  }
}

void cmdline_seeds() {
  const std::vector<std::vector<std::string>> lines = {
      {"--socket-path=/tmp/vfsd.sock", "--shared-dir=/srv"},
      {"--socket-path", "/tmp/s", "--shared-dir", "/srv", "--cache=always", "--writeback"},
      {"--fd=3", "--shared-dir=/srv", "--inode-file-handles"},
      {"--socket=/tmp/s", "-o", "source=/srv,cache=none,xattr,no_readdirplus", "-d", "-f"},
      {"--fuse-mount=/mnt", "--shared-dir=/srv", "--readonly", "--xattr", "--posix-lock",
       "--flock"},
      {"--socket-path=/s", "--shared-dir=/srv",
       "--xattrmap=:prefix:all::user.virtiofs.::bad:all:::"},
      {"--socket-path=/s", "--shared-dir=/srv", "--security-label",
       "--xattrmap=:map:security.selinux:user.virtiofs.:"},
      {"--socket-path=/s", "--shared-dir=/srv", "--posix-acl", "--cache=never", "--allow-mmap",
       "--killpriv-v2", "--no-announce-submounts", "--log-level=debug"},
      {"--socket-path=/s", "--shared-dir=/srv", "--ascii-casefold", "--rewrite-security-xattrs",
       "--inode-file-handles=mandatory", "--socket-group=kvm", "--allow-direct-io",
       "--preserve-noatime", "--no-killpriv-v2"},
      {"-o", "source=/srv,loglevel=err,xattrmap=:ok:all:::,posix_acl,no_posix_lock,killpriv_v2"},
      {"--help"},
      {"-V"},
      {"--version"},
      {"--socket-path=/s", "--fd=3", "--shared-dir=/srv"},
      {"--socket-path=/s", "--shared-dir=/srv", "--xattrmap=:bogus"},
      {"--cache=sometimes"},
      {"--sandbox=none", "--seccomp=none", "--socket-path=/s", "--shared-dir=/srv"},
      {"--thread-pool-size=0", "--rlimit-nofile=1024", "--modcaps=-chown", "--socket-path=/s",
       "--shared-dir=/srv"},
      {},
  };
  int n = 0;
  for (const auto& line : lines) {
    Bytes frame;
    for (size_t i = 0; i < line.size(); ++i) {
      if (i > 0) frame.push_back(0);
      frame.insert(frame.end(), line[i].begin(), line[i].end());
    }
    InputWriter w;
    w.frame({}, frame);
    write_seed("cmdline", "line" + std::to_string(n++), w.bytes());
  }
}

std::vector<std::string> list_dir(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind(prefix, 0) == 0 && n.size() > 4 && n.substr(n.size() - 4) == ".rec") {
        out.push_back(dir + "/" + n);
      }
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string recordings;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--recordings" && i + 1 < argc) {
      recordings = argv[++i];

    } else if (g_out.empty()) {
      g_out = a;
    } else {
      std::fprintf(stderr, "usage: vfsd_make_seeds OUT [--recordings DIR]\n");
      return 2;
    }
  }
  if (g_out.empty()) {
    std::fprintf(stderr, "usage: vfsd_make_seeds OUT [--recordings DIR]\n");
    return 2;
  }

  // FUSE sequences: for FakeFs with and without the harness's INIT, and for
  // the passthrough under the option sets that reach each area.
  std::vector<Bytes> sample_requests;
  for (const auto& [name, seq] : fuse_scenarios()) {
    write_seed("fuse_fake", name, fuse_input({0x04}, seq.requests()));
    write_seed("fuse_fake", name + "_612", fuse_input({0x07}, seq.requests()));
    write_seed("fuse_fake", name + "_nodefer", fuse_input({0x14 | 0x20}, seq.requests()));
    struct Variant {
      const char* suffix;
      std::vector<uint8_t> config;
    };
    const Variant variants[] = {
        {"", {0x28, 0x00, 0x00}},           // cache auto, readdirplus
        {"_xattr", {0x28, 0x03, 0x02}},     // --xattr --posix-acl
        {"_label", {0x2b, 0x05, 0x00}},     // INIT from a 6.12 guest, --security-label
        {"_xattrmap", {0x28, 0x09, 0x00}},  // --xattrmap
        {"_locks", {0x28, 0xc0, 0x00}},     // --posix-lock --flock
        {"_readonly", {0x68, 0x01, 0x00}},  // --readonly --xattr
        {"_handles",
         {0x08, 0x20, 0x04}},  // --cache=never --inode-file-handles=mandatory --killpriv-v2
        {"_writeback",
         {0xb8, 0x10, 0x71}},  // --cache=always --writeback, prefer handles, casefold, mmap...
    };
    for (const auto& v : variants) {
      write_seed("fuse_passthrough", name + v.suffix, fuse_input(v.config, seq.requests()));
    }
    if (name == "legacy_secctx" || name == "extensions") {
      // Their own INIT, --security-label.
      write_seed("fuse_passthrough", name + "_label_own_init",
                 fuse_input({0x28, 0x05, 0x00}, seq.requests()));
    }
    for (const Req& r : seq.requests()) {
      if (opcode_of(r.bytes) != FUSE_INIT && sample_requests.size() < 40)
        sample_requests.push_back(r.bytes);
    }
  }

  // Virtqueue: chains of real requests; malformed rings.
  std::vector<Bytes> with_init{guest_init(1, GuestKind::kLinux61)};
  with_init.insert(with_init.end(), sample_requests.begin(),
                   sample_requests.begin() +
                       static_cast<std::ptrdiff_t>(std::min<size_t>(12, sample_requests.size())));
  write_seed("virtqueue", "chains", virtqueue_input(16, with_init, false, false, false));
  write_seed("virtqueue", "chains_served", virtqueue_input(16, with_init, true, true, true));
  write_seed("virtqueue", "chains_late",
             virtqueue_input(8, with_init, true, false, true, 8192, sample_requests));
  int m = 0;
  for (const Bytes& b : virtqueue_malformed())
    write_seed("virtqueue", "malformed" + std::to_string(m++), b);

  vhost_user_seeds(with_init);
  xattrmap_seeds();
  cmdline_seeds();

  if (!recordings.empty()) {
    // FUSE: windows of 24 consecutive requests of one daemon, each after
    // that daemon's first INIT; one window per distinct opcode sequence.
    for (const std::string& path : list_dir(recordings, "fuse-")) {
      auto reqs = load_fuse(path);
      std::string base = path.substr(path.rfind('/') + 1);
      base = base.substr(0, base.size() - 4);
      std::optional<RecordedRequest> init;
      for (const auto& r : reqs) {
        if (opcode_of(r.bytes) == FUSE_INIT) {
          init = r;
          break;
        }
      }
      std::set<std::string> seen;
      std::vector<Bytes> chain_reqs;
      size_t windows = 0;
      for (size_t start = 0; start < reqs.size(); start += 24) {
        std::vector<Req> window;
        std::string signature;
        if (init && start != 0)
          window.push_back(Req{init->bytes, room_for(init->writable), kFixLen});
        for (size_t i = start; i < std::min(reqs.size(), start + 24); ++i) {
          window.push_back(Req{reqs[i].bytes, room_for(reqs[i].writable), kFixLen});
          signature += std::to_string(opcode_of(reqs[i].bytes)) + ",";
        }
        if (!seen.insert(signature).second) continue;
        const std::string n = base + "_" + std::to_string(start);
        write_seed("fuse_fake", n, fuse_input({0x04}, window));
        write_seed("fuse_passthrough", n, fuse_input({0x28, 0x00, 0x00}, window));
        write_seed("fuse_passthrough", n + "_opts", fuse_input({0x28, 0xc7, 0x04}, window));
        if (windows++ < 4) {
          // The ring matters here more than the requests: a few per ring.
          std::vector<Bytes> w;
          for (size_t i = 0; i < window.size() && i < 8; ++i) w.push_back(window[i].bytes);
          write_seed("virtqueue", n, virtqueue_input(16, w, true, true, true, 4096));
        }
      }
      for (size_t i = 0; i < reqs.size() && chain_reqs.size() < 12; ++i)
        chain_reqs.push_back(reqs[i].bytes);
      // The matching vhost-user session of the same daemon.
      std::string pid = base.substr(5);
      std::string vhost = recordings + "/vhost-" + pid + ".rec";
      auto msgs = load_vhost(vhost);
      if (!msgs.empty()) convert_vhost("recorded_" + pid, msgs, chain_reqs);
    }
  }
  std::printf("vfsd_make_seeds: %zu seeds under %s\n", g_written, g_out.c_str());
  return 0;
}
