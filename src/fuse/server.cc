#include "fuse/server.h"

#include <linux/fuse.h>

#include <fcntl.h>
#include <linux/limits.h>

#include <algorithm>
#include <array>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuse/abi_ext.h"
#include "fuse/extensions.h"
#include "fuse/request.h"
#include "fuse/wire.h"
#include "util/log.h"
#include "util/rate_limit.h"

// Reply policy, in the order the checks happen:
//  - fewer bytes readable than a fuse_in_header: nothing to answer to, no reply;
//  - FORGET, BATCH_FORGET, INTERRUPT never get a reply, well-formed or not;
//  - less reply room than a fuse_out_header: no reply and no side effect,
//    whatever else is wrong with the request;
//  - in.len shorter than the header, longer than the bytes present or than
//    any request a guest sends, extension area longer than the body: EINVAL;
//  - any request but INIT before a successful INIT (or after DESTROY): EIO;
//  - malformed request extension (framing, sizes, a type that was not
//    negotiated, a duplicate): EINVAL;
//  - less reply room than the opcode's fixed reply (Op::reply_size): EIO,
//    before the body is read, so a LOOKUP or CREATE the guest cannot
//    receive takes no reference and creates nothing;
//  - body too short for the opcode's struct, malformed name: EINVAL;
//  - unknown opcode: ENOSYS;
//  - a reply of variable length larger than the reply room: EIO. EIO (not
//    ERANGE) because the transport failed, not the operation, and ERANGE has
//    its own meaning for the xattr calls.

namespace vfsd::fuse {

using detail::parse_extensions;
using detail::read_creation_tail;
using detail::Request;
using detail::xattr_name;

namespace {

constexpr size_t kOutHeader = sizeof(fuse_out_header);

// INIT flags the server offers whatever the filesystem and its options:
// asynchronous and parallel requests, large writes, O_TRUNC on open, the
// cache hints AUTO_INVAL_DATA / ASYNC_DIO (as the Rust virtiofsd), ioctls on
// directories, lookups of "." and ".." (EXPORT_SUPPORT). Cached symlink
// targets depend on the cache policy: the filesystem asks for them.
constexpr uint64_t kServerFlags = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_BIG_WRITES |
                                  FUSE_ATOMIC_O_TRUNC | FUSE_MAX_PAGES | FUSE_INIT_EXT |
                                  FUSE_AUTO_INVAL_DATA | FUSE_ASYNC_DIO | FUSE_HAS_IOCTL_DIR |
                                  FUSE_EXPORT_SUPPORT;
// fuse_out_header.len is 32 bits: data replies stay below that whatever room
// the guest offers.
constexpr size_t kMaxPayload = std::numeric_limits<uint32_t>::max() - kOutHeader;

// The largest in/out size of a restricted ioctl (_IOC_SIZEMASK).
constexpr uint32_t kMaxIoctlSize = (1u << 14) - 1;

// The longest name (with its NUL) read off the wire: the guest kernel sends
// up to FUSE_NAME_MAX (1024) bytes, so that a name longer than the host's
// NAME_MAX is answered ENAMETOOLONG, as the host would, not EINVAL.
constexpr size_t kMaxWireName = 1024 + 1;

// Reads the rest of the body as exactly one NUL-terminated name.
Result<Name> parse_name(std::string_view bytes_with_nul) {
  auto name = Name::parse(bytes_with_nul);
  if (!name) return fail(Name::parse_error(bytes_with_nul));
  return std::move(*name);
}

Result<Name> read_name(Request& req) {
  std::string buf;
  if (!req.read_rest(buf, kMaxWireName)) return fail(EINVAL);
  return parse_name(buf);
}

// Like read_name, for the operations that create or remove an entry: "." and
// ".." name the directory itself or its parent, never a child to act on.
Result<Name> read_child_name(Request& req) {
  auto name = read_name(req);
  if (name && name->is_dot_or_dotdot()) return fail(EINVAL);
  return name;
}

// Splits "first\0second\0" (the whole rest of the body) into two pieces,
// each still carrying its NUL.
bool read_two(Request& req, size_t cap, std::string& buf, std::string_view& first,
              std::string_view& second) {
  if (!req.read_rest(buf, cap)) return false;
  size_t nul = buf.find('\0');
  if (nul == std::string::npos) return false;
  std::string_view all(buf);
  first = all.substr(0, nul + 1);
  second = all.substr(nul + 1);
  return true;
}

// The name of the entry a creating request makes: a valid Name, not "." or "..".
Result<Name> read_new_name(Request& req) {
  std::string buf;
  std::array<std::string_view, 2> strings;
  if (!read_creation_tail(req, 1, kMaxWireName, buf, strings)) return fail(EINVAL);
  auto name = parse_name(strings[0]);
  if (name && name->is_dot_or_dotdot()) return fail(EINVAL);
  return name;
}

size_t reply_entry(Request& req, const Result<Entry>& entry) {
  if (!entry) return req.reply_error(entry.error());
  return req.reply_obj(wire::to_entry_out(*entry));
}

size_t reply_attr(Request& req, const Result<AttrReply>& attr) {
  if (!attr) return req.reply_error(attr.error());
  return req.reply_obj(wire::to_attr_out(*attr));
}

size_t reply_open(Request& req, const Result<OpenReply>& open) {
  if (!open) return req.reply_error(open.error());
  fuse_open_out out{};
  out.fh = open->handle.value();
  out.open_flags = open->open_flags;
  return req.reply_obj(out);
}

size_t reply_void(Request& req, const VoidResult& result) {
  if (!result) return req.reply_error(result.error());
  return req.reply_ok();
}

// CREATE and TMPFILE: fuse_entry_out then fuse_open_out.
size_t reply_created(Request& req, const Result<std::pair<Entry, OpenReply>>& created) {
  if (!created) return req.reply_error(created.error());
  fuse_entry_out entry = wire::to_entry_out(created->first);
  fuse_open_out open{};
  open.fh = created->second.handle.value();
  open.open_flags = created->second.open_flags;
  return req.reply_ok(&entry, sizeof(entry), &open, sizeof(open));
}

// --- no-reply operations ---------------------------------------------------

size_t do_forget(FileSystem& fs, Request& req) {
  fuse_forget_in in{};
  if (!req.read(in)) {
    log::debug("fuse: FORGET with a short body dropped");
    return 0;
  }
  fs.forget(req.node(), in.nlookup);
  return 0;
}

size_t do_batch_forget(FileSystem& fs, Request& req) {
  fuse_batch_forget_in in{};
  if (!req.read(in) ||
      static_cast<uint64_t>(in.count) * sizeof(fuse_forget_one) != req.body_left()) {
    // The count must describe exactly the entries present; a mismatch means
    // the request is not what the guest claims, so none of it is trusted.
    log::debug("fuse: BATCH_FORGET count does not match its body, dropped");
    return 0;
  }
  // Bounded chunks: the guest decides the count, not our stack or heap.
  std::array<std::pair<InodeId, uint64_t>, 64> chunk;
  size_t left = in.count;
  while (left > 0) {
    size_t n = std::min(left, chunk.size());
    for (size_t i = 0; i < n; ++i) {
      fuse_forget_one one{};
      req.read(one);  // cannot fail: the body length was checked above
      chunk[i] = {InodeId{one.nodeid}, one.nlookup};
    }
    fs.batch_forget(std::span<const std::pair<InodeId, uint64_t>>(chunk.data(), n));
    left -= n;
  }
  return 0;
}

// --- attributes and names --------------------------------------------------

size_t do_lookup(FileSystem& fs, Request& req) {
  auto name = read_name(req);  // "." and ".." are the filesystem's to resolve
  if (!name) return req.reply_error(name.error());
  return reply_entry(req, fs.lookup(req.ctx, req.node(), *name));
}

size_t do_getattr(FileSystem& fs, Request& req) {
  fuse_getattr_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  std::optional<HandleId> fh;
  if (in.getattr_flags & FUSE_GETATTR_FH) fh = HandleId{in.fh};
  return reply_attr(req, fs.getattr(req.ctx, req.node(), fh));
}

size_t do_setattr(FileSystem& fs, Request& req) {
  fuse_setattr_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  constexpr uint32_t kMaxNsec = 999'999'999;
  SetattrRequest s;
  s.valid = in.valid;
  s.mode = in.mode;
  s.uid = in.uid;
  s.gid = in.gid;
  s.size = in.size;
  if (in.valid & FATTR_ATIME_NOW) {
    s.atime = {0, UTIME_NOW};
  } else if (in.valid & FATTR_ATIME) {
    if (in.atimensec > kMaxNsec) return req.reply_error(EINVAL);
    s.atime = {static_cast<time_t>(in.atime), static_cast<long>(in.atimensec)};
  }
  if (in.valid & FATTR_MTIME_NOW) {
    s.mtime = {0, UTIME_NOW};
  } else if (in.valid & FATTR_MTIME) {
    if (in.mtimensec > kMaxNsec) return req.reply_error(EINVAL);
    s.mtime = {static_cast<time_t>(in.mtime), static_cast<long>(in.mtimensec)};
  }
  if (in.valid & FATTR_FH) s.handle = HandleId{in.fh};
  return reply_attr(req, fs.setattr(req.ctx, req.node(), s));
}

size_t do_readlink(FileSystem& fs, Request& req) {
  auto target = fs.readlink(req.ctx, req.node());
  if (!target) return req.reply_error(target.error());
  return req.reply_ok(target->data(), target->size());
}

size_t do_symlink(FileSystem& fs, Request& req) {
  std::string buf;
  std::array<std::string_view, 2> strings;
  if (!read_creation_tail(req, 2, kMaxWireName + PATH_MAX, buf, strings)) {
    return req.reply_error(EINVAL);
  }
  auto name = parse_name(strings[0]);
  std::string_view target_bytes = strings[1];
  if (!name) return req.reply_error(name.error());
  if (name->is_dot_or_dotdot()) return req.reply_error(EINVAL);
  // The target: non-empty, one NUL and only at the end, shorter than
  // PATH_MAX with its NUL (what symlink(2) accepts).
  if (target_bytes.size() < 2 || target_bytes.size() > PATH_MAX || target_bytes.back() != '\0' ||
      target_bytes.find('\0') != target_bytes.size() - 1) {
    return req.reply_error(EINVAL);
  }
  target_bytes.remove_suffix(1);
  return reply_entry(req, fs.symlink(req.ctx, req.node(), *name, target_bytes, req.extensions));
}

size_t do_mknod(FileSystem& fs, Request& req) {
  fuse_mknod_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  auto name = read_new_name(req);
  if (!name) return req.reply_error(name.error());
  return reply_entry(req, fs.mknod(req.ctx, req.node(), *name, in.mode, wire::decode_dev(in.rdev),
                                   in.umask, req.extensions));
}

size_t do_mkdir(FileSystem& fs, Request& req) {
  fuse_mkdir_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  auto name = read_new_name(req);
  if (!name) return req.reply_error(name.error());
  return reply_entry(req, fs.mkdir(req.ctx, req.node(), *name, in.mode, in.umask, req.extensions));
}

size_t do_unlink(FileSystem& fs, Request& req) {
  auto name = read_child_name(req);
  if (!name) return req.reply_error(name.error());
  return reply_void(req, fs.unlink(req.ctx, req.node(), *name));
}

size_t do_rmdir(FileSystem& fs, Request& req) {
  auto name = read_child_name(req);
  if (!name) return req.reply_error(name.error());
  return reply_void(req, fs.rmdir(req.ctx, req.node(), *name));
}

// RENAME and RENAME2 after their fixed part: the two names, then the call.
size_t rename_names(FileSystem& fs, Request& req, uint64_t new_dir, uint32_t flags) {
  std::string buf;
  std::string_view old_bytes, new_bytes;
  if (!read_two(req, 2 * kMaxWireName, buf, old_bytes, new_bytes)) {
    return req.reply_error(EINVAL);
  }
  auto old_name = parse_name(old_bytes);
  if (!old_name) return req.reply_error(old_name.error());
  auto new_name = parse_name(new_bytes);
  if (!new_name) return req.reply_error(new_name.error());
  if (old_name->is_dot_or_dotdot() || new_name->is_dot_or_dotdot()) {
    return req.reply_error(EINVAL);
  }
  return reply_void(req,
                    fs.rename(req.ctx, req.node(), *old_name, InodeId{new_dir}, *new_name, flags));
}

size_t do_rename(FileSystem& fs, Request& req) {
  fuse_rename_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return rename_names(fs, req, in.newdir, 0);
}

size_t do_rename2(FileSystem& fs, Request& req) {
  fuse_rename2_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return rename_names(fs, req, in.newdir, in.flags);
}

size_t do_link(FileSystem& fs, Request& req) {
  fuse_link_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  auto name = read_child_name(req);
  if (!name) return req.reply_error(name.error());
  return reply_entry(req, fs.link(req.ctx, InodeId{in.oldnodeid}, req.node(), *name));
}

// --- files -------------------------------------------------------------------

size_t do_open(FileSystem& fs, Request& req) {
  fuse_open_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  const bool kill_suidgid = (in.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
  return reply_open(req, fs.open(req.ctx, req.node(), in.flags, kill_suidgid));
}

size_t do_opendir(FileSystem& fs, Request& req) {
  fuse_open_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_open(req, fs.opendir(req.ctx, req.node(), in.flags));
}

size_t do_create(FileSystem& fs, Request& req) {
  fuse_create_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  auto name = read_new_name(req);
  if (!name) return req.reply_error(name.error());
  const bool kill_suidgid = (in.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
  return reply_created(req, fs.create(req.ctx, req.node(), *name, in.mode, in.flags, in.umask,
                                      kill_suidgid, req.extensions));
}

// TMPFILE: a fuse_create_in and a name the kernel fills with the dentry
// vfs_tmpfile() makes ("/"); the file has no name, so it is not used, only
// checked to be framed like one.
size_t do_tmpfile(FileSystem& fs, Request& req) {
  fuse_create_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  std::string buf;
  std::array<std::string_view, 2> strings;
  if (!read_creation_tail(req, 1, kMaxWireName, buf, strings)) return req.reply_error(EINVAL);
  return reply_created(
      req, fs.tmpfile(req.ctx, req.node(), in.mode, in.flags, in.umask, req.extensions));
}

// The data is read straight into the reply buffer behind the header. A size
// larger than the reply room is clamped to the room: the data goes into the
// guest's own buffers, so its size costs us nothing and needs no other cap.
size_t do_read(FileSystem& fs, Request& req) {
  fuse_read_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  IovecWriter data = req.reply.split_at(kOutHeader);
  auto size = static_cast<uint32_t>(std::min({size_t{in.size}, data.remaining(), kMaxPayload}));
  auto n = fs.read(req.ctx, req.node(), HandleId{in.fh}, data, size, in.offset);
  if (!n) return req.reply_error(n.error());
  return req.reply_header(std::min<size_t>(*n, size));
}

size_t do_write(FileSystem& fs, Request& req) {
  fuse_write_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  if (in.size > req.max_write || in.size != req.body_left()) return req.reply_error(EINVAL);
  // A reader over exactly the data: the filesystem cannot read past it.
  IovecReader data(req.body.iovecs(in.size));
  // The file's flags now, not at OPEN: fcntl(F_SETFL) may have changed
  // O_APPEND since (writeback-cache flushes carry 0 here).
  auto n = fs.write(req.ctx, req.node(), HandleId{in.fh}, data, in.size, in.offset, in.write_flags,
                    in.flags);
  req.consume(in.size);
  if (!n) return req.reply_error(n.error());
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(std::min<size_t>(*n, in.size));
  return req.reply_obj(out);
}

size_t do_statfs(FileSystem& fs, Request& req) {
  auto st = fs.statfs(req.ctx, req.node());
  if (!st) return req.reply_error(st.error());
  fuse_statfs_out out{};
  out.st = wire::to_kstatfs(*st);
  return req.reply_obj(out);
}

size_t do_release(FileSystem& fs, Request& req) {
  fuse_release_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(req, fs.release(req.ctx, req.node(), HandleId{in.fh}, in.flags));
}

size_t do_releasedir(FileSystem& fs, Request& req) {
  fuse_release_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(req, fs.releasedir(req.ctx, req.node(), HandleId{in.fh}));
}

size_t do_fsync(FileSystem& fs, Request& req) {
  fuse_fsync_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  const bool datasync = (in.fsync_flags & FUSE_FSYNC_FDATASYNC) != 0;
  return reply_void(req, fs.fsync(req.ctx, req.node(), HandleId{in.fh}, datasync));
}

size_t do_fsyncdir(FileSystem& fs, Request& req) {
  fuse_fsync_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  const bool datasync = (in.fsync_flags & FUSE_FSYNC_FDATASYNC) != 0;
  return reply_void(req, fs.fsyncdir(req.ctx, req.node(), HandleId{in.fh}, datasync));
}

size_t do_flush(FileSystem& fs, Request& req) {
  fuse_flush_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(req, fs.flush(req.ctx, req.node(), HandleId{in.fh}, in.lock_owner));
}

size_t do_access(FileSystem& fs, Request& req) {
  fuse_access_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(req, fs.access(req.ctx, req.node(), in.mask));
}

size_t do_lseek(FileSystem& fs, Request& req) {
  fuse_lseek_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  auto off = fs.lseek(req.ctx, req.node(), HandleId{in.fh}, in.offset, in.whence);
  if (!off) return req.reply_error(off.error());
  fuse_lseek_out out{};
  out.offset = *off;
  return req.reply_obj(out);
}

size_t do_fallocate(FileSystem& fs, Request& req) {
  fuse_fallocate_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(
      req, fs.fallocate(req.ctx, req.node(), HandleId{in.fh}, in.mode, in.offset, in.length));
}

size_t do_syncfs(FileSystem& fs, Request& req) {
  fuse_syncfs_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  return reply_void(req, fs.syncfs(req.ctx, req.node()));
}

// --- directories -------------------------------------------------------------

// READDIR answers fuse_dirent records, READDIRPLUS fuse_direntplus ones (an
// entry before each).
enum class DirRecord { kDirent, kDirentPlus };

// Writes fuse_dirent / fuse_direntplus records into the reply behind the
// header, never more than `limit` bytes.
class ReplyDirSink final : public DirSink {
 public:
  ReplyDirSink(IovecWriter& out, size_t limit, DirRecord record)
      : out_(out), limit_(limit), plus_(record == DirRecord::kDirentPlus) {}

  bool fits(size_t name_len) const override {
    return name_len > 0 && name_len <= NAME_MAX && record_size(name_len) <= limit_ - used_;
  }

  void add(const DirEntry& d, const Entry* entry) override {
    // A filesystem that ignores fits() loses the entry instead of
    // overflowing the reply.
    if (!fits(d.name.size())) return;
    if (plus_) {
      fuse_entry_out eo = entry ? wire::to_entry_out(*entry) : fuse_entry_out{};
      out_.write_obj(eo);
    }
    fuse_dirent de{};
    de.ino = d.ino;
    de.off = d.next_offset;
    de.namelen = static_cast<uint32_t>(d.name.size());
    de.type = d.type;
    out_.write(&de, FUSE_NAME_OFFSET);
    out_.write(d.name.data(), d.name.size());
    static constexpr char kZeros[8] = {};
    size_t rec = record_size(d.name.size());
    size_t pad = rec - (plus_ ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET) - d.name.size();
    out_.write(kZeros, pad);
    used_ += rec;
  }

  size_t used() const { return used_; }

 private:
  size_t record_size(size_t name_len) const {
    return FUSE_DIRENT_ALIGN((plus_ ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET) + name_len);
  }

  IovecWriter& out_;
  const size_t limit_;
  const bool plus_;
  size_t used_ = 0;
};

size_t list_directory(FileSystem& fs, Request& req, DirRecord record) {
  fuse_read_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  IovecWriter data = req.reply.split_at(kOutHeader);
  ReplyDirSink sink(data, std::min({size_t{in.size}, data.remaining(), kMaxPayload}), record);
  auto result = fs.readdir(req.ctx, req.node(), HandleId{in.fh}, in.offset,
                           record == DirRecord::kDirentPlus, sink);
  // Entries already in the sink (for READDIRPLUS: lookup references already
  // taken) go back even if the listing failed later; the guest's next call
  // resumes after them and meets the error again.
  if (!result && sink.used() == 0) return req.reply_error(result.error());
  return req.reply_header(sink.used());
}

size_t do_readdir(FileSystem& fs, Request& req) {
  return list_directory(fs, req, DirRecord::kDirent);
}

size_t do_readdirplus(FileSystem& fs, Request& req) {
  return list_directory(fs, req, DirRecord::kDirentPlus);
}

// --- extended attributes -----------------------------------------------------

// GETXATTR / LISTXATTR: with size 0 the guest asks for the length only
// (fuse_getxattr_out); otherwise the bytes themselves, at most `size`.
size_t reply_xattr(Request& req, uint32_t size, const Result<XattrReply>& reply) {
  if (!reply) return req.reply_error(reply.error());
  if (size == 0) {
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(std::min<size_t>(reply->size, UINT32_MAX));
    return req.reply_obj(out);
  }
  // The filesystem should have said ERANGE itself; the guest must never get
  // more than it asked for.
  if (reply->data.size() > size) return req.reply_error(ERANGE);
  return req.reply_ok(reply->data.data(), reply->data.size());
}

size_t do_getxattr(FileSystem& fs, Request& req) {
  fuse_getxattr_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  std::string buf;
  if (!req.read_rest(buf, XATTR_NAME_MAX + 1)) return req.reply_error(EINVAL);
  auto name = xattr_name(buf);
  if (!name) return req.reply_error(EINVAL);
  // getxattr(2) never asks for more than XATTR_SIZE_MAX; a larger size from
  // the guest means the same.
  uint32_t size = std::min<uint32_t>(in.size, XATTR_SIZE_MAX);
  return reply_xattr(req, size, fs.getxattr(req.ctx, req.node(), *name, size));
}

size_t do_listxattr(FileSystem& fs, Request& req) {
  fuse_getxattr_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  uint32_t size = std::min<uint32_t>(in.size, XATTR_LIST_MAX);
  return reply_xattr(req, size, fs.listxattr(req.ctx, req.node(), size));
}

// SETXATTR: fuse_setxattr_in (16 bytes once FUSE_SETXATTR_EXT is agreed, the
// 8-byte size + flags before), then name\0, then exactly `size` value bytes.
size_t do_setxattr(FileSystem& fs, Request& req) {
  fuse_setxattr_in in{};
  const size_t in_len =
      (req.agreed & FUSE_SETXATTR_EXT) ? sizeof(in) : FUSE_COMPAT_SETXATTR_IN_SIZE;
  if (!req.read_bytes(&in, in_len)) return req.reply_error(EINVAL);
  // What setxattr(2) answers for a value it cannot store.
  if (in.size > XATTR_SIZE_MAX) return req.reply_error(E2BIG);
  std::string buf;
  if (!req.read_rest(buf, XATTR_NAME_MAX + 1 + size_t{in.size})) return req.reply_error(EINVAL);
  size_t nul = buf.find('\0');
  if (nul == std::string::npos) return req.reply_error(EINVAL);
  std::string_view all(buf);
  auto name = xattr_name(all.substr(0, nul + 1));
  std::string_view value = all.substr(nul + 1);
  if (!name || value.size() != in.size) return req.reply_error(EINVAL);
  return reply_void(req,
                    fs.setxattr(req.ctx, req.node(), *name, value, in.flags, in.setxattr_flags));
}

size_t do_removexattr(FileSystem& fs, Request& req) {
  std::string buf;
  if (!req.read_rest(buf, XATTR_NAME_MAX + 1)) return req.reply_error(EINVAL);
  auto name = xattr_name(buf);
  if (!name) return req.reply_error(EINVAL);
  return reply_void(req, fs.removexattr(req.ctx, req.node(), *name));
}

// --- data and special operations ------------------------------------------------

size_t do_copy_file_range(FileSystem& fs, Request& req) {
  fuse_copy_file_range_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  // The count goes back in the 32-bit fuse_write_out.size: a longer copy
  // could not be reported, so ask for no more than that (the kernel itself
  // clamps to UINT_MAX & PAGE_MASK).
  constexpr uint64_t kMaxCopy = UINT32_MAX & ~uint64_t{0xfff};
  const uint64_t length = std::min<uint64_t>(in.len, kMaxCopy);
  auto n =
      fs.copy_file_range(req.ctx, req.node(), HandleId{in.fh_in}, in.off_in, InodeId{in.nodeid_out},
                         HandleId{in.fh_out}, in.off_out, length, in.flags);
  if (!n) return req.reply_error(n.error());
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(std::min<uint64_t>(*n, length));
  return req.reply_obj(out);
}

// IOCTL: fuse_ioctl_in, then exactly in_size input bytes. The reply is
// fuse_ioctl_out then at most out_size output bytes. Only restricted ioctls
// (sizes encoded in the command, data copied by the kernel) are served.
size_t do_ioctl(FileSystem& fs, Request& req) {
  fuse_ioctl_in in{};
  if (!req.read(in)) return req.reply_error(EINVAL);
  if (in.in_size != req.body_left()) return req.reply_error(EINVAL);
  // Unrestricted ioctls need the RETRY dance with guest pointers; a
  // virtio-fs guest never sends them (only CUSE does). The kernel turns
  // ENOSYS into ENOTTY for the caller.
  if (in.flags & FUSE_IOCTL_UNRESTRICTED) return req.reply_error(ENOSYS);
  // A restricted ioctl's sizes come from its number (_IOC_SIZE, 14 bits):
  // anything larger is not one the kernel forwarded, and must not become an
  // allocation of the guest's choosing.
  if (in.in_size > kMaxIoctlSize || in.out_size > kMaxIoctlSize) return req.reply_error(EINVAL);
  std::string data;
  req.read_rest(data, in.in_size);  // cannot fail: in_size == body_left()
  // The op table checked the room for the header and fuse_ioctl_out.
  constexpr size_t kFixed = kOutHeader + sizeof(fuse_ioctl_out);
  // The filesystem never produces more than the reply can carry.
  const auto out_size =
      static_cast<uint32_t>(std::min<size_t>(in.out_size, req.reply.remaining() - kFixed));
  auto reply = fs.ioctl(req.ctx, req.node(), HandleId{in.fh}, in.flags, in.cmd, data, out_size);
  if (!reply) return req.reply_error(reply.error());
  if (reply->out.size() > out_size) return req.reply_error(EIO);
  fuse_ioctl_out out{};
  out.result = reply->result;
  return req.reply_ok(&out, sizeof(out), reply->out.data(), reply->out.size());
}

// --- locks -----------------------------------------------------------------

// A lock the host can represent: a known type, start <= end, and an end
// within off_t (OFFSET_MAX, the largest, means "to the end of the file").
bool valid_lock(const fuse_file_lock& lk) {
  const bool type_ok = lk.type == F_RDLCK || lk.type == F_WRLCK || lk.type == F_UNLCK;
  return type_ok && lk.start <= lk.end &&
         lk.end <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

size_t do_getlk(FileSystem& fs, Request& req) {
  fuse_lk_in in{};
  if (!req.read(in) || !valid_lock(in.lk)) return req.reply_error(EINVAL);
  auto lock = fs.getlk(req.ctx, req.node(), HandleId{in.fh}, in.owner, wire::from_file_lock(in.lk),
                       in.lk_flags);
  if (!lock) return req.reply_error(lock.error());
  fuse_lk_out out{};
  out.lk = wire::to_file_lock(*lock);
  return req.reply_obj(out);
}

size_t do_setlk(FileSystem& fs, Request& req) {
  fuse_lk_in in{};
  if (!req.read(in) || !valid_lock(in.lk)) return req.reply_error(EINVAL);
  return reply_void(req, fs.setlk(req.ctx, req.node(), HandleId{in.fh}, in.owner,
                                  wire::from_file_lock(in.lk), in.lk_flags));
}

// Writes a header-only reply (success or an errno) for `unique`.
size_t write_status_reply(IovecWriter& w, uint64_t unique, const VoidResult& result) {
  fuse_out_header out{};
  out.len = sizeof(out);
  out.error = result ? 0 : Request::wire_error(result.error().value);
  out.unique = unique;
  return w.write_obj(out) ? out.len : 0;
}

// The synchronous fallback of SETLKW: the caller's thread waits for `done`.
class SyncWait {
 public:
  void complete(VoidResult result) {
    std::lock_guard lock(mutex_);
    if (result_) return;  // a second completion is a filesystem bug; ignore it
    result_ = result;
    cv_.notify_all();
  }
  VoidResult wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return result_.has_value(); });
    return *result_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<VoidResult> result_;
};

// SETLKW waits for the lock. With a deferrer the request leaves the worker:
// the filesystem calls `done` when the wait ends, from whatever thread ends
// it, and that writes and finishes the reply. Without one, the calling
// thread blocks until then.
size_t do_setlkw(FileSystem& fs, Request& req) {
  fuse_lk_in in{};
  if (!req.read(in) || !valid_lock(in.lk)) return req.reply_error(EINVAL);
  const FileLock lock = wire::from_file_lock(in.lk);
  const uint64_t unique = req.header.unique;
  std::shared_ptr<DeferredReply> deferred;
  if (req.deferrer != nullptr) deferred = req.deferrer->defer();
  if (deferred) {
    // std::function needs a copyable callable, hence shared ownership; the
    // flag keeps a second call (a filesystem bug) from finishing twice.
    auto called = std::make_shared<std::atomic<bool>>(false);
    fs.setlkw(req.ctx, req.node(), HandleId{in.fh}, in.owner, lock, in.lk_flags, unique,
              [deferred, called, unique](VoidResult result) {
                if (called->exchange(true)) return;
                deferred->finish(write_status_reply(deferred->writer(), unique, result));
              });
    return 0;
  }
  auto wait = std::make_shared<SyncWait>();
  fs.setlkw(req.ctx, req.node(), HandleId{in.fh}, in.owner, lock, in.lk_flags, unique,
            [wait](VoidResult result) { wait->complete(result); });
  // A session reset is what ends a wait that nothing else ends: it must not
  // wait for this request.
  if (req.pass) req.pass->release();
  return reply_void(req, wait->wait());
}

// A virtio-fs guest never sends it; the host FUSE mount does, and only a
// waiting SETLKW can be cut short.
size_t do_interrupt(FileSystem& fs, Request& req) {
  fuse_interrupt_in in{};
  if (!req.read(in)) {
    log::debug("fuse: INTERRUPT with a short body dropped");
    return 0;
  }
  fs.interrupt(in.unique);
  return 0;
}

// Like the Rust virtiofsd: no block mapping (BMAP), no poll notifications
// (POLL), no DAX window (SETUPMAPPING, REMOVEMAPPING).
size_t do_unsupported(FileSystem&, Request& req) {
  return req.reply_error(ENOSYS);
}

size_t do_unknown(FileSystem&, Request& req) {
  log::debug("fuse: unknown opcode {} answered ENOSYS", req.header.opcode);
  return req.reply_error(ENOSYS);
}

// --- the op table --------------------------------------------------------------

// How the server treats an opcode before its handler runs.
enum class Kind : uint8_t {
  kReply,    // answered; the reply's fixed part must fit before anything happens
  kNoReply,  // FORGET, BATCH_FORGET, INTERRUPT: never answered, well-formed or not
  kSession,  // INIT, DESTROY: run by the Server itself, outside the session gate
};

using Handler = size_t (*)(FileSystem&, Request&);

}  // namespace

// Everything the server knows about one opcode, in one row.
struct detail::Op {
  std::string_view name = "UNKNOWN";  // the opcode without FUSE_, for logs
  Handler handler = do_unknown;       // null for Kind::kSession
  Kind kind = Kind::kReply;
  // Payload bytes after fuse_out_header that every successful reply carries
  // (checked once, before the handler runs); 0 when the reply is the header
  // alone or its length depends on the answer (checked when it is written).
  uint32_t reply_size = 0;
};

namespace {

using detail::Op;

constexpr uint32_t kEntryReply = sizeof(fuse_entry_out);
constexpr uint32_t kCreatedReply = sizeof(fuse_entry_out) + sizeof(fuse_open_out);

// Indexed by opcode; larger than the highest one we serve (FUSE_TMPFILE, 51).
constexpr size_t kOpcodeLimit = 64;

constexpr std::array<Op, kOpcodeLimit> make_op_table() {
  std::array<Op, kOpcodeLimit> t{};
  constexpr Kind kReply = Kind::kReply;
  t[FUSE_LOOKUP] = {"LOOKUP", do_lookup, kReply, kEntryReply};
  t[FUSE_FORGET] = {"FORGET", do_forget, Kind::kNoReply, 0};
  t[FUSE_GETATTR] = {"GETATTR", do_getattr, kReply, sizeof(fuse_attr_out)};
  t[FUSE_SETATTR] = {"SETATTR", do_setattr, kReply, sizeof(fuse_attr_out)};
  t[FUSE_READLINK] = {"READLINK", do_readlink, kReply, 0};
  t[FUSE_SYMLINK] = {"SYMLINK", do_symlink, kReply, kEntryReply};
  t[FUSE_MKNOD] = {"MKNOD", do_mknod, kReply, kEntryReply};
  t[FUSE_MKDIR] = {"MKDIR", do_mkdir, kReply, kEntryReply};
  t[FUSE_UNLINK] = {"UNLINK", do_unlink, kReply, 0};
  t[FUSE_RMDIR] = {"RMDIR", do_rmdir, kReply, 0};
  t[FUSE_RENAME] = {"RENAME", do_rename, kReply, 0};
  t[FUSE_LINK] = {"LINK", do_link, kReply, kEntryReply};
  t[FUSE_OPEN] = {"OPEN", do_open, kReply, sizeof(fuse_open_out)};
  t[FUSE_READ] = {"READ", do_read, kReply, 0};
  t[FUSE_WRITE] = {"WRITE", do_write, kReply, sizeof(fuse_write_out)};
  t[FUSE_STATFS] = {"STATFS", do_statfs, kReply, sizeof(fuse_statfs_out)};
  t[FUSE_RELEASE] = {"RELEASE", do_release, kReply, 0};
  t[FUSE_FSYNC] = {"FSYNC", do_fsync, kReply, 0};
  t[FUSE_SETXATTR] = {"SETXATTR", do_setxattr, kReply, 0};
  t[FUSE_GETXATTR] = {"GETXATTR", do_getxattr, kReply, 0};
  t[FUSE_LISTXATTR] = {"LISTXATTR", do_listxattr, kReply, 0};
  t[FUSE_REMOVEXATTR] = {"REMOVEXATTR", do_removexattr, kReply, 0};
  t[FUSE_FLUSH] = {"FLUSH", do_flush, kReply, 0};
  t[FUSE_INIT] = {"INIT", nullptr, Kind::kSession, sizeof(fuse_init_out)};
  t[FUSE_OPENDIR] = {"OPENDIR", do_opendir, kReply, sizeof(fuse_open_out)};
  t[FUSE_READDIR] = {"READDIR", do_readdir, kReply, 0};
  t[FUSE_RELEASEDIR] = {"RELEASEDIR", do_releasedir, kReply, 0};
  t[FUSE_FSYNCDIR] = {"FSYNCDIR", do_fsyncdir, kReply, 0};
  t[FUSE_GETLK] = {"GETLK", do_getlk, kReply, sizeof(fuse_lk_out)};
  t[FUSE_SETLK] = {"SETLK", do_setlk, kReply, 0};
  t[FUSE_SETLKW] = {"SETLKW", do_setlkw, kReply, 0};
  t[FUSE_ACCESS] = {"ACCESS", do_access, kReply, 0};
  t[FUSE_CREATE] = {"CREATE", do_create, kReply, kCreatedReply};
  t[FUSE_INTERRUPT] = {"INTERRUPT", do_interrupt, Kind::kNoReply, 0};
  t[FUSE_BMAP] = {"BMAP", do_unsupported, kReply, 0};
  t[FUSE_DESTROY] = {"DESTROY", nullptr, Kind::kSession, 0};
  // The fixed part only; the output bytes after it are fitted to the room.
  t[FUSE_IOCTL] = {"IOCTL", do_ioctl, kReply, sizeof(fuse_ioctl_out)};
  t[FUSE_POLL] = {"POLL", do_unsupported, kReply, 0};
  t[FUSE_BATCH_FORGET] = {"BATCH_FORGET", do_batch_forget, Kind::kNoReply, 0};
  t[FUSE_FALLOCATE] = {"FALLOCATE", do_fallocate, kReply, 0};
  t[FUSE_READDIRPLUS] = {"READDIRPLUS", do_readdirplus, kReply, 0};
  t[FUSE_RENAME2] = {"RENAME2", do_rename2, kReply, 0};
  t[FUSE_LSEEK] = {"LSEEK", do_lseek, kReply, sizeof(fuse_lseek_out)};
  t[FUSE_COPY_FILE_RANGE] = {"COPY_FILE_RANGE", do_copy_file_range, kReply, sizeof(fuse_write_out)};
  t[FUSE_SETUPMAPPING] = {"SETUPMAPPING", do_unsupported, kReply, 0};
  t[FUSE_REMOVEMAPPING] = {"REMOVEMAPPING", do_unsupported, kReply, 0};
  t[FUSE_SYNCFS] = {"SYNCFS", do_syncfs, kReply, 0};
  t[FUSE_TMPFILE] = {"TMPFILE", do_tmpfile, kReply, kCreatedReply};
  return t;
}

constexpr std::array<Op, kOpcodeLimit> kOps = make_op_table();
constexpr Op kUnknownOp{};

const Op& op_for(uint32_t opcode) {
  return opcode < kOps.size() ? kOps[opcode] : kUnknownOp;
}

// The longest request a guest kernel sends: a WRITE of max_write bytes, or
// the largest other body (a SETXATTR value of XATTR_SIZE_MAX plus its name,
// a symlink's two names, a security context), plus the request extensions
// (total_extlen is 16 bits of 8-byte units). Anything longer is refused
// before a byte of it is looked at.
size_t max_request_len(uint32_t max_write) {
  const size_t body = std::max<size_t>(max_write, 2 * XATTR_SIZE_MAX + PATH_MAX + 2 * 1025);
  return sizeof(fuse_in_header) + sizeof(fuse_write_in) + body + 8 * size_t{UINT16_MAX};
}

}  // namespace

namespace {

// The INIT flags the guest offers, flags2 in the upper half when it sent
// them (`in_len`: the bytes of fuse_init_in it sent).
uint64_t guest_init_flags(const fuse_init_in& in, size_t in_len) {
  uint64_t flags = in.flags;
  if ((in.flags & FUSE_INIT_EXT) && in_len >= offsetof(fuse_init_in, flags2) + sizeof(in.flags2)) {
    flags |= static_cast<uint64_t>(in.flags2) << 32;
  }
  return flags;
}

// The INIT reply of a session that starts with the `agreed` flags.
fuse_init_out init_reply(const fuse_init_in& in, uint64_t agreed, const ServerOptions& options) {
  fuse_init_out out{};
  out.major = FUSE_KERNEL_VERSION;
  out.minor = abi::kMinorVersion;
  out.max_readahead = in.max_readahead;
  out.flags = static_cast<uint32_t>(agreed);
  out.flags2 = static_cast<uint32_t>(agreed >> 32);
  // The virtqueue bounds what is really in flight; let the guest queue as
  // much background work (readahead, async writes) as it likes.
  out.max_background = std::numeric_limits<uint16_t>::max();
  out.congestion_threshold = std::numeric_limits<uint16_t>::max() / 4 * 3;
  out.max_write = options.max_write;
  out.time_gran = 1;
  out.max_pages = static_cast<uint16_t>(
      std::clamp<uint32_t>(options.max_pages, 1, std::numeric_limits<uint16_t>::max()));
  return out;
}

}  // namespace

Server::Server(FileSystem& fs, ServerOptions options)
    : fs_(fs), options_(options), max_request_len_(max_request_len(options.max_write)) {}

const std::array<std::string_view, metrics::kOpSlots>& op_names() {
  static_assert(kOps.size() == metrics::kOpSlots, "one metrics slot per op table row");
  static const auto names = [] {
    std::array<std::string_view, metrics::kOpSlots> n{};
    for (size_t i = 0; i < kOps.size(); ++i) n[i] = kOps[i].name;
    return n;
  }();
  return names;
}

size_t Server::handle(IovecReader& request, IovecWriter& reply, ReplyDeferrer* deferrer) {
  Outcome outcome;
  metrics::RequestMetrics* const metrics = options_.metrics;
  if (metrics == nullptr) return serve(request, reply, deferrer, outcome);
  // Around everything the server does for the request, decoding included; a
  // deferred request (SETLKW that waits) is timed until it is deferred.
  const uint64_t start = metrics::now_ns();
  const size_t written = serve(request, reply, deferrer, outcome);
  metrics->record(outcome.slot, metrics::now_ns() - start, outcome.failed);
  return written;
}

size_t Server::serve(IovecReader& request, IovecWriter& reply, ReplyDeferrer* deferrer,
                     Outcome& outcome) {
  const size_t available = request.remaining();
  fuse_in_header in{};
  // Counted as failed until an answer says otherwise; a request too short
  // for its header goes to slot 0 with the unknown opcodes.
  outcome.failed = true;
  if (!request.read_obj(in)) {
    log::debug("fuse: request shorter than its header dropped");
    return 0;
  }
  const Op& op = op_for(in.opcode);
  outcome.slot = op.handler == do_unknown ? 0 : in.opcode;
  const bool no_reply = op.kind == Kind::kNoReply;
  // Nothing happens for a request that could not be answered.
  if (!no_reply && reply.remaining() < kOutHeader) {
    log::debug("fuse: no room for a reply header ({}), dropped", op.name);
    return 0;
  }

  size_t body_len = 0;
  size_t ext_len = 0;
  bool framed = in.len >= sizeof(in) && in.len <= available && in.len <= max_request_len_;
  if (framed) {
    body_len = in.len - sizeof(in);
    // Extensions (7.38+) sit after the body, inside in.len.
    ext_len = static_cast<size_t>(in.total_extlen) * 8;
    framed = ext_len <= body_len;
    if (framed) body_len -= ext_len;
  }
  Request req(in, body_len, framed ? ext_len : 0, request, reply);
  if (!framed) {
    log::debug("fuse: bad request length {} ({}, {} bytes present)", in.len, op.name, available);
    return no_reply ? 0 : req.reply_error(EINVAL);
  }
  req.deferrer = deferrer;
  req.max_write = options_.max_write;
  // The request path reports errors as values; what still throws (an
  // allocation that failed, a bug) costs this request, never the daemon.
  const size_t reply_start = reply.consumed();
  // --log-level=trace: every request, the size of its reply and its error.
  // The level is looked up once per request (each lookup goes through
  // spdlog's registry).
  const bool tracing = spdlog::should_log(spdlog::level::trace);
  if (tracing) {
    log::trace("fuse: request {} unique {} nodeid {} uid {} gid {} pid {} len {}", op.name,
               in.unique, in.nodeid, in.uid, in.gid, in.pid, in.len);
  }
  try {
    const size_t written = dispatch(req, op);
    if (tracing) {
      log::trace("fuse: reply unique {}: {} bytes, error {}", in.unique, written,
                 req.replied_error());
    }
    // A request without a reply (FORGET, a deferred one) did not fail here.
    outcome.failed = req.replied_error() != 0;
    return written;
  } catch (const std::exception& e) {
    log::guest_fault(log::GuestFault::kRequestFailed, "fuse: {} failed: {}; answered EIO", op.name,
                     e.what());
  } catch (...) {
    log::guest_fault(log::GuestFault::kRequestFailed, "fuse: {} failed; answered EIO", op.name);
  }
  // Answer unless the reply was already (partly) written or none is due.
  if (no_reply || reply.consumed() != reply_start) return 0;
  return req.reply_error(EIO);
}

size_t Server::dispatch(Request& req, const Op& op) {
  if (op.kind == Kind::kSession) {
    if (!req.has_room(op.reply_size)) return req.reply_error(EIO);
    return req.header.opcode == FUSE_INIT ? do_init(req) : do_destroy(req);
  }
  const bool replies = op.kind == Kind::kReply;
  req.pass.emplace(gate_.enter());
  if (!initialized()) return replies ? req.reply_error(EIO) : 0;
  // initialized() was an acquire load: these are the values INIT stored.
  req.agreed = agreed_flags_.load(std::memory_order_relaxed);
  req.legacy_secctx = (req.agreed & FUSE_SECURITY_CTX) &&
                      guest_minor_.load(std::memory_order_relaxed) < abi::kMinorWithExtensions;
  if (req.ext_len() > 0) {
    if (auto parsed = parse_extensions(req.read_extension_area(), req.agreed, req.extensions);
        !parsed) {
      log::debug("fuse: malformed request extension ({})", op.name);
      return replies ? req.reply_error(parsed.error()) : 0;
    }
  }
  // A request whose reply cannot reach the guest does nothing: a LOOKUP or
  // CREATE that could not be answered takes no reference, creates nothing.
  if (replies && !req.has_room(op.reply_size)) return req.reply_error(EIO);
  return op.handler(fs_, req);
}

size_t Server::do_init(Request& req) {
  // fuse_init_in grew from 16 bytes to 64 in 7.36 (flags2 and reserved
  // words); an older guest sends only the first four fields.
  fuse_init_in in{};
  constexpr size_t kMinInit = offsetof(fuse_init_in, flags2);
  if (req.body_left() < kMinInit) return req.reply_error(EINVAL);
  const size_t in_len = std::min(req.body_left(), sizeof(in));
  req.read_bytes(&in, in_len);
  if (in.major < FUSE_KERNEL_VERSION) return req.reply_error(EPROTO);
  if (in.major > FUSE_KERNEL_VERSION) {
    // The protocol: answer with our major only and wait for the guest to
    // send a new INIT in that version.
    fuse_init_out out{};
    out.major = FUSE_KERNEL_VERSION;
    out.minor = abi::kMinorVersion;
    return req.reply_obj(out);
  }
  if (in.minor < abi::kMinMinorVersion) return req.reply_error(EPROTO);

  const uint64_t kernel_flags = guest_init_flags(in, in_len);

  std::lock_guard lock(session_mutex_);
  // No request of the old session is still running when the filesystem
  // resets, and none of the new one starts before INIT is answered.
  gate_.close_and_wait();
  struct Reopen {
    SessionGate& gate;
    ~Reopen() { gate.reopen(); }
  } reopen{gate_};
  if (initialized_.load(std::memory_order_acquire)) {
    // INIT without DESTROY: the guest was reset and forgot every inode and
    // handle it held; drop them before starting over.
    log::info("fuse: INIT on an open session, resetting the filesystem");
    initialized_.store(false, std::memory_order_release);
    fs_.destroy();
  }
  auto fs_reply = fs_.init(InitRequest{kernel_flags});
  if (!fs_reply) return req.reply_error(fs_reply.error());

  // What the server itself handles whatever the filesystem; everything that
  // depends on an option (writeback, killpriv v2, ACLs, security labels,
  // submounts, supplementary groups, mmap of direct-I/O files, locks) is the
  // filesystem's to ask for.
  uint64_t offered = kServerFlags | fs_reply->wanted_flags | fs_reply->required_flags;
  if (options_.readdirplus) offered |= FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
  const uint64_t agreed = offered & kernel_flags;
  if (const uint64_t missing = fs_reply->required_flags & ~kernel_flags; missing != 0) {
    log::error("fuse: the guest does not offer INIT flags {:#x} that the options require", missing);
    // The filesystem started a session that will not happen.
    fs_.destroy();
    return req.reply_error(EPROTO);
  }

  const fuse_init_out out = init_reply(in, agreed, options_);
  agreed_flags_.store(agreed, std::memory_order_relaxed);
  guest_minor_.store(in.minor, std::memory_order_relaxed);
  initialized_.store(true, std::memory_order_release);
  log::debug("fuse: INIT {}.{} agreed flags {:#x}", in.major, in.minor, agreed);
  return req.reply_obj(out);
}

size_t Server::do_destroy(Request& req) {
  // As any request outside a session.
  if (!close_session()) return req.reply_error(EIO);
  return req.reply_ok();
}

void Server::end_session() {
  if (close_session()) log::info("fuse: session ended without DESTROY; filesystem reset");
}

bool Server::close_session() {
  std::lock_guard lock(session_mutex_);
  if (!initialized()) return false;
  gate_.close_and_wait();
  initialized_.store(false, std::memory_order_release);
  fs_.destroy();
  gate_.reopen();
  return true;
}

migration::SessionState Server::session_state() const {
  migration::SessionState state;
  if (!initialized()) return state;
  state.open = true;
  state.guest_minor = guest_minor_.load(std::memory_order_relaxed);
  state.agreed_flags = agreed_flags_.load(std::memory_order_relaxed);
  state.max_write = options_.max_write;
  state.max_pages =
      std::clamp<uint32_t>(options_.max_pages, 1, std::numeric_limits<uint16_t>::max());
  return state;
}

VoidResult Server::restore_session(const migration::SessionState& state) {
  if (!state.open) return ok();  // the guest never mounted: nothing to go on with
  std::lock_guard lock(session_mutex_);
  if (initialized()) {
    log::error("migration: a FUSE session is open here already; refusing the source's");
    return fail(EBUSY);
  }
  if (state.guest_minor < abi::kMinMinorVersion) {
    log::error("migration: the source's guest speaks FUSE 7.{}, below what we serve",
               state.guest_minor);
    return fail(EPROTO);
  }
  // The guest keeps what it was told: larger requests than we take, or
  // flags we would not have agreed, would break it.
  const uint32_t max_pages =
      std::clamp<uint32_t>(options_.max_pages, 1, std::numeric_limits<uint16_t>::max());
  if (state.max_write > options_.max_write || state.max_pages > max_pages) {
    log::error(
        "migration: the source announced max_write {} / max_pages {}, this daemon takes {} / {}",
        state.max_write, state.max_pages, options_.max_write, max_pages);
    return fail(EPROTO);
  }
  auto fs_reply = fs_.init(InitRequest{state.agreed_flags});
  if (!fs_reply) return tl::unexpected(fs_reply.error());
  uint64_t offered = kServerFlags | fs_reply->wanted_flags | fs_reply->required_flags;
  if (options_.readdirplus) offered |= FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
  const uint64_t would_agree = offered & state.agreed_flags;
  if (would_agree != state.agreed_flags) {
    log::error(
        "migration: the source agreed FUSE flags {:#x} that this daemon's options do not "
        "(start it with the source's options)",
        state.agreed_flags & ~would_agree);
    fs_.destroy();
    return fail(EPROTO);
  }
  agreed_flags_.store(state.agreed_flags, std::memory_order_relaxed);
  guest_minor_.store(state.guest_minor, std::memory_order_relaxed);
  initialized_.store(true, std::memory_order_release);
  log::info("migration: FUSE session 7.{} restored (flags {:#x})", state.guest_minor,
            state.agreed_flags);
  return ok();
}

}  // namespace vfsd::fuse
