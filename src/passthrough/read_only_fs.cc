#include "passthrough/read_only_fs.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fscrypt.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <utility>

#include "passthrough/lookup_ref.h"

namespace vfsd::passthrough {
namespace {

// The guest's open flags, in the values of the kernel's generic
// <asm-generic/fcntl.h> (x86_64 and aarch64 share every one read here).
// glibc's __O_TMPFILE includes O_DIRECTORY, whose value differs between
// architectures; only the kernel's own __O_TMPFILE bit is tested.
constexpr uint32_t kAccessModeMask = 03;
constexpr uint32_t kReadOnly = 00;
constexpr uint32_t kCreate = 0100;
constexpr uint32_t kExclusive = 0200;
constexpr uint32_t kTruncate = 01000;
constexpr uint32_t kTmpfileBit = 020000000;
static_assert(kAccessModeMask == O_ACCMODE && kCreate == O_CREAT && kExclusive == O_EXCL &&
              kTruncate == O_TRUNC && (kTmpfileBit & O_TMPFILE) != 0);

// What a read-only share does with the open flags a guest sent.
struct ReadOnlyOpen {
  uint32_t flags = 0;
  // The guest asked for O_CREAT, which `flags` no longer carry: a file that
  // does not exist is EROFS rather than ENOENT.
  bool existing_only = false;
};

Result<ReadOnlyOpen> read_only_open(uint32_t flags) {
  // No flag is exempt, O_PATH included: a guest kernel never sends O_PATH in
  // OPEN or CREATE, so one that does is hostile, and the rules below hold
  // whatever else the flags carry (the filesystem then refuses O_PATH).
  if ((flags & kAccessModeMask) != kReadOnly) return fail(EROFS);
  // O_EXCL only means something with O_CREAT, which a read-only share never
  // honours.
  if (flags & kExclusive) return fail(EROFS);
  // O_TMPFILE needs a write access mode; refused here too in case the
  // guest's kernel did not.
  if (flags & kTmpfileBit) return fail(EINVAL);
  // O_TRUNC with O_RDONLY is undefined, and Linux does truncate.
  if (flags & kTruncate) return fail(EINVAL);
  if (flags & kCreate) return ReadOnlyOpen{flags & ~kCreate, true};
  return ReadOnlyOpen{flags, false};
}

// Runs an open-like call under the read-only rules.
template <class OpenFn>
Result<fuse::OpenReply> open_read_only(uint32_t flags, OpenFn&& open_fn) {
  VFSD_ASSIGN_OR_RETURN(auto decided, read_only_open(flags));
  auto opened = open_fn(decided.flags);
  if (!opened && decided.existing_only && opened.error().value == ENOENT) return fail(EROFS);
  return opened;
}

// The ioctls a read-only share serves: those that only read. An allow-list,
// so that an ioctl the filesystem learns later is refused here until it is
// known not to modify anything. The flag ioctls exist in a 32-bit form (an
// int in the encoding) and a long one; both read or write an int.
bool is_read_only_ioctl(uint32_t cmd) {
  return cmd == static_cast<uint32_t>(FS_IOC_GETFLAGS) ||
         cmd == static_cast<uint32_t>(FS_IOC32_GETFLAGS) ||
         cmd == static_cast<uint32_t>(FS_IOC_FSGETXATTR) ||
         cmd == static_cast<uint32_t>(FS_IOC_GET_ENCRYPTION_POLICY_EX);
}

bool is_modifying_ioctl(uint32_t cmd) {
  return cmd == static_cast<uint32_t>(FS_IOC_SETFLAGS) ||
         cmd == static_cast<uint32_t>(FS_IOC32_SETFLAGS) ||
         cmd == static_cast<uint32_t>(FS_IOC_FSSETXATTR);
}

}  // namespace

Result<fuse::InitReply> ReadOnlyFs::init(const fuse::InitRequest& request) {
  auto reply = inner().init(request);
  if (!reply) return reply;
  // Writeback caching lets the guest keep dirty pages and write them back
  // later; on a share that refuses every write that only loses data.
  reply->wanted_flags &= ~static_cast<uint64_t>(FUSE_WRITEBACK_CACHE);
  reply->required_flags &= ~static_cast<uint64_t>(FUSE_WRITEBACK_CACHE);
  return reply;
}

Result<fuse::AttrReply> ReadOnlyFs::setattr(const fuse::Context&, fuse::InodeId,
                                            const fuse::SetattrRequest&) {
  return fail(EROFS);
}

// The Rust virtiofsd answers EROFS without checking whether e.g. the name
// already exists (a kernel "ro" mount would say EEXIST first); checking
// would race with the host anyway.
Result<fuse::Entry> ReadOnlyFs::symlink(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                        std::string_view, const fuse::Extensions&) {
  return fail(EROFS);
}

Result<fuse::Entry> ReadOnlyFs::mknod(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                      mode_t, dev_t, mode_t, const fuse::Extensions&) {
  return fail(EROFS);
}

Result<fuse::Entry> ReadOnlyFs::mkdir(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                      mode_t, mode_t, const fuse::Extensions&) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::unlink(const fuse::Context&, fuse::InodeId, const fuse::Name&) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::rmdir(const fuse::Context&, fuse::InodeId, const fuse::Name&) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::rename(const fuse::Context&, fuse::InodeId, const fuse::Name&, fuse::InodeId,
                              const fuse::Name&, uint32_t) {
  return fail(EROFS);
}

Result<fuse::Entry> ReadOnlyFs::link(const fuse::Context&, fuse::InodeId, fuse::InodeId,
                                     const fuse::Name&) {
  return fail(EROFS);
}

Result<fuse::OpenReply> ReadOnlyFs::open(const fuse::Context& ctx, fuse::InodeId inode,
                                         uint32_t flags, bool kill_suidgid) {
  return open_read_only(
      flags, [&](uint32_t allowed) { return inner().open(ctx, inode, allowed, kill_suidgid); });
}

Result<std::pair<fuse::Entry, fuse::OpenReply>> ReadOnlyFs::create(
    const fuse::Context& ctx, fuse::InodeId parent, const fuse::Name& name, mode_t, uint32_t flags,
    mode_t, bool kill_suidgid, const fuse::Extensions&) {
  auto entry = inner().lookup(ctx, parent, name);
  if (!entry) {
    if (entry.error().value == ENOENT) return fail(EROFS);
    return tl::unexpected(entry.error());
  }
  // A negative entry (inode 0) carries no reference: the name is absent.
  if (entry->inode == fuse::InodeId{0}) return fail(EROFS);
  // The guest sees the entry only if the open succeeds; else it could never
  // forget it, so the reference goes back.
  LookupRef<fuse::FileSystem> ref(inner(), entry->inode);
  VFSD_ASSIGN_OR_RETURN(auto opened, open(ctx, entry->inode, flags, kill_suidgid));
  ref.release_to_guest();
  return std::pair{*entry, opened};
}

Result<size_t> ReadOnlyFs::write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader&,
                                 uint32_t, uint64_t, uint32_t, std::optional<uint32_t>) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::access(const fuse::Context& ctx, fuse::InodeId inode, uint32_t mask) {
  if (mask & W_OK) return fail(EROFS);
  return inner().access(ctx, inode, mask);
}

VoidResult ReadOnlyFs::fallocate(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t,
                                 uint64_t, uint64_t) {
  return fail(EROFS);
}

Result<fuse::OpenReply> ReadOnlyFs::opendir(const fuse::Context& ctx, fuse::InodeId inode,
                                            uint32_t flags) {
  return open_read_only(flags,
                        [&](uint32_t allowed) { return inner().opendir(ctx, inode, allowed); });
}

VoidResult ReadOnlyFs::setxattr(const fuse::Context&, fuse::InodeId, std::string_view,
                                std::string_view, uint32_t, uint32_t) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::removexattr(const fuse::Context&, fuse::InodeId, std::string_view) {
  return fail(EROFS);
}

Result<size_t> ReadOnlyFs::copy_file_range(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                                           uint64_t, fuse::InodeId, fuse::HandleId, uint64_t,
                                           uint64_t, uint64_t) {
  return fail(EROFS);
}

Result<std::pair<fuse::Entry, fuse::OpenReply>> ReadOnlyFs::tmpfile(const fuse::Context&,
                                                                    fuse::InodeId, mode_t, uint32_t,
                                                                    mode_t,
                                                                    const fuse::Extensions&) {
  return fail(EROFS);
}

Result<fuse::IoctlReply> ReadOnlyFs::ioctl(const fuse::Context& ctx, fuse::InodeId inode,
                                           fuse::HandleId handle, uint32_t ioctl_flags,
                                           uint32_t cmd, std::string_view in, uint32_t out_size) {
  // A known setter is EROFS, as on a read-only mount; anything else not on
  // the allow-list is an ioctl this share does not serve.
  if (is_modifying_ioctl(cmd)) return fail(EROFS);
  if (!is_read_only_ioctl(cmd)) return fail(ENOTTY);
  return inner().ioctl(ctx, inode, handle, ioctl_flags, cmd, in, out_size);
}

}  // namespace vfsd::passthrough
