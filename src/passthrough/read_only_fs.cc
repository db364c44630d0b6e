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
  auto reply = inner_.init(request);
  if (!reply) return reply;
  // Writeback caching lets the guest keep dirty pages and write them back
  // later; on a share that refuses every write that only loses data.
  reply->wanted_flags &= ~static_cast<uint64_t>(FUSE_WRITEBACK_CACHE);
  reply->required_flags &= ~static_cast<uint64_t>(FUSE_WRITEBACK_CACHE);
  return reply;
}

void ReadOnlyFs::destroy() {
  inner_.destroy();
}

Result<fuse::Entry> ReadOnlyFs::lookup(const fuse::Context& ctx, fuse::InodeId parent,
                                       const fuse::Name& name) {
  return inner_.lookup(ctx, parent, name);
}

void ReadOnlyFs::forget(fuse::InodeId inode, uint64_t count) {
  inner_.forget(inode, count);
}

void ReadOnlyFs::batch_forget(std::span<const std::pair<fuse::InodeId, uint64_t>> items) {
  inner_.batch_forget(items);
}

Result<fuse::AttrReply> ReadOnlyFs::getattr(const fuse::Context& ctx, fuse::InodeId inode,
                                            std::optional<fuse::HandleId> handle) {
  return inner_.getattr(ctx, inode, handle);
}

Result<fuse::AttrReply> ReadOnlyFs::setattr(const fuse::Context&, fuse::InodeId,
                                            const fuse::SetattrRequest&) {
  return fail(EROFS);
}

Result<std::string> ReadOnlyFs::readlink(const fuse::Context& ctx, fuse::InodeId inode) {
  return inner_.readlink(ctx, inode);
}

// The Rust virtiofsd answers EROFS without checking whether e.g. the name
// already exists (a kernel "ro" mount would say EEXIST first); checking
// would race with the host anyway.
Result<fuse::Entry> ReadOnlyFs::symlink(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                        std::string_view) {
  return fail(EROFS);
}

Result<fuse::Entry> ReadOnlyFs::mknod(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                      mode_t, dev_t, mode_t) {
  return fail(EROFS);
}

Result<fuse::Entry> ReadOnlyFs::mkdir(const fuse::Context&, fuse::InodeId, const fuse::Name&,
                                      mode_t, mode_t) {
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
                                         uint32_t flags) {
  return open_read_only(flags, [&](uint32_t allowed) { return inner_.open(ctx, inode, allowed); });
}

Result<std::pair<fuse::Entry, fuse::OpenReply>> ReadOnlyFs::create(const fuse::Context& ctx,
                                                                   fuse::InodeId parent,
                                                                   const fuse::Name& name, mode_t,
                                                                   uint32_t flags, mode_t) {
  auto entry = inner_.lookup(ctx, parent, name);
  if (!entry) {
    if (entry.error().value == ENOENT) return fail(EROFS);
    return tl::unexpected(entry.error());
  }
  // A negative entry (inode 0) carries no reference: the name is absent.
  if (entry->inode == 0) return fail(EROFS);
  // The guest sees the entry only if the open succeeds; else it could never
  // forget it, so the reference goes back.
  LookupRef<fuse::FileSystem> ref(inner_, entry->inode);
  VFSD_ASSIGN_OR_RETURN(auto opened, open(ctx, entry->inode, flags));
  ref.release_to_guest();
  return std::pair{std::move(*entry), opened};
}

Result<size_t> ReadOnlyFs::read(const fuse::Context& ctx, fuse::InodeId inode,
                                fuse::HandleId handle, IovecWriter& out, uint32_t size,
                                uint64_t offset) {
  return inner_.read(ctx, inode, handle, out, size, offset);
}

Result<size_t> ReadOnlyFs::write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader&,
                                 uint32_t, uint64_t, uint32_t) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::flush(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                             uint64_t lock_owner) {
  return inner_.flush(ctx, inode, handle, lock_owner);
}

VoidResult ReadOnlyFs::fsync(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                             bool datasync) {
  return inner_.fsync(ctx, inode, handle, datasync);
}

VoidResult ReadOnlyFs::release(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                               uint32_t flags) {
  return inner_.release(ctx, inode, handle, flags);
}

Result<struct statvfs> ReadOnlyFs::statfs(const fuse::Context& ctx, fuse::InodeId inode) {
  return inner_.statfs(ctx, inode);
}

VoidResult ReadOnlyFs::access(const fuse::Context& ctx, fuse::InodeId inode, uint32_t mask) {
  if (mask & W_OK) return fail(EROFS);
  return inner_.access(ctx, inode, mask);
}

Result<uint64_t> ReadOnlyFs::lseek(const fuse::Context& ctx, fuse::InodeId inode,
                                   fuse::HandleId handle, uint64_t offset, uint32_t whence) {
  return inner_.lseek(ctx, inode, handle, offset, whence);
}

VoidResult ReadOnlyFs::fallocate(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t,
                                 uint64_t, uint64_t) {
  return fail(EROFS);
}

VoidResult ReadOnlyFs::syncfs(const fuse::Context& ctx, fuse::InodeId inode) {
  return inner_.syncfs(ctx, inode);
}

Result<fuse::OpenReply> ReadOnlyFs::opendir(const fuse::Context& ctx, fuse::InodeId inode,
                                            uint32_t flags) {
  return open_read_only(flags,
                        [&](uint32_t allowed) { return inner_.opendir(ctx, inode, allowed); });
}

VoidResult ReadOnlyFs::readdir(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                               uint64_t offset, bool plus, fuse::DirSink& sink) {
  return inner_.readdir(ctx, inode, handle, offset, plus, sink);
}

VoidResult ReadOnlyFs::fsyncdir(const fuse::Context& ctx, fuse::InodeId inode,
                                fuse::HandleId handle, bool datasync) {
  return inner_.fsyncdir(ctx, inode, handle, datasync);
}

VoidResult ReadOnlyFs::releasedir(const fuse::Context& ctx, fuse::InodeId inode,
                                  fuse::HandleId handle) {
  return inner_.releasedir(ctx, inode, handle);
}

Result<fuse::XattrReply> ReadOnlyFs::getxattr(const fuse::Context& ctx, fuse::InodeId inode,
                                              std::string_view name, uint32_t size) {
  return inner_.getxattr(ctx, inode, name, size);
}

VoidResult ReadOnlyFs::setxattr(const fuse::Context&, fuse::InodeId, std::string_view,
                                std::string_view, uint32_t, uint32_t) {
  return fail(EROFS);
}

Result<fuse::XattrReply> ReadOnlyFs::listxattr(const fuse::Context& ctx, fuse::InodeId inode,
                                               uint32_t size) {
  return inner_.listxattr(ctx, inode, size);
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
                                                                    mode_t) {
  return fail(EROFS);
}

Result<fuse::IoctlReply> ReadOnlyFs::ioctl(const fuse::Context& ctx, fuse::InodeId inode,
                                           fuse::HandleId handle, uint32_t ioctl_flags,
                                           uint32_t cmd, std::string_view in, uint32_t out_size) {
  // A known setter is EROFS, as on a read-only mount; anything else not on
  // the allow-list is an ioctl this share does not serve.
  if (is_modifying_ioctl(cmd)) return fail(EROFS);
  if (!is_read_only_ioctl(cmd)) return fail(ENOTTY);
  return inner_.ioctl(ctx, inode, handle, ioctl_flags, cmd, in, out_size);
}

Result<fuse::FileLock> ReadOnlyFs::getlk(const fuse::Context& ctx, fuse::InodeId inode,
                                         fuse::HandleId handle, uint64_t owner,
                                         const fuse::FileLock& lock, uint32_t lock_flags) {
  return inner_.getlk(ctx, inode, handle, owner, lock, lock_flags);
}

VoidResult ReadOnlyFs::setlk(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                             uint64_t owner, const fuse::FileLock& lock, uint32_t lock_flags) {
  return inner_.setlk(ctx, inode, handle, owner, lock, lock_flags);
}

void ReadOnlyFs::setlkw(const fuse::Context& ctx, fuse::InodeId inode, fuse::HandleId handle,
                        uint64_t owner, const fuse::FileLock& lock, uint32_t lock_flags,
                        uint64_t unique, std::function<void(VoidResult)> done) {
  inner_.setlkw(ctx, inode, handle, owner, lock, lock_flags, unique, std::move(done));
}

void ReadOnlyFs::interrupt(uint64_t unique) {
  inner_.interrupt(unique);
}

}  // namespace vfsd::passthrough
