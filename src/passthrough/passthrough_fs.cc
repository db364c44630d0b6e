#include "passthrough/passthrough_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "passthrough/credentials.h"

namespace vfsd::passthrough {

using fuse::Entry;
using fuse::HandleId;
using fuse::InodeId;

namespace {

constexpr uint64_t kMaxOffset = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

// What OPEN may pass on to the host. Everything else is dropped: O_CREAT and
// O_EXCL (OPEN never creates), O_NOFOLLOW (the /proc magic link must be
// followed), O_PATH and O_TMPFILE (would not give an I/O handle), O_DIRECT
// (as the Rust virtiofsd without --allow-direct-io), O_NOCTTY, O_ASYNC.
constexpr int kGuestOpenFlags = O_ACCMODE | O_APPEND | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME |
                                O_TRUNC | O_LARGEFILE | O_DIRECTORY;

int host_open_flags(uint32_t guest_flags) {
  return (static_cast<int>(guest_flags) & kGuestOpenFlags) | O_CLOEXEC;
}

struct HostStat {
  struct stat st {};
  uint64_t mnt_id = 0;
};

// statx on the fd itself: the attributes plus the mount id in one call.
Result<HostStat> stat_fd(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
              STATX_BASIC_STATS | STATX_MNT_ID, &stx) != 0) {
    return fail_errno();
  }
  HostStat out;
  struct stat& st = out.st;
  st.st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  st.st_ino = stx.stx_ino;
  st.st_mode = stx.stx_mode;
  st.st_nlink = stx.stx_nlink;
  st.st_uid = stx.stx_uid;
  st.st_gid = stx.stx_gid;
  st.st_rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
  st.st_size = static_cast<off_t>(stx.stx_size);
  st.st_blksize = stx.stx_blksize;
  st.st_blocks = static_cast<blkcnt_t>(stx.stx_blocks);
  st.st_atim = {stx.stx_atime.tv_sec, stx.stx_atime.tv_nsec};
  st.st_mtim = {stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec};
  st.st_ctim = {stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec};
  out.mnt_id = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0;
  return out;
}

// The name of an fd inside /proc/self/fd.
struct FdName {
  explicit FdName(int fd) { std::snprintf(text, sizeof(text), "%d", fd); }
  char text[16];
};

VoidResult check(int rc) {
  return rc == 0 ? ok() : VoidResult(fail_errno());
}

// Creating and removing operations take a real name only: the server already
// refuses "." and "..", this is the second line.
VoidResult check_new_name(const fuse::Name& name) {
  return name.is_dot_or_dotdot() ? VoidResult(fail(EINVAL)) : ok();
}

// A raw linux_dirent64 record as getdents64 writes it.
struct Dirent64Header {
  uint64_t d_ino;
  int64_t d_off;
  uint16_t d_reclen;
  uint8_t d_type;
};
constexpr size_t kDirentNameOffset = offsetof(Dirent64Header, d_type) + 1;

}  // namespace

std::chrono::nanoseconds cache_timeout(CachePolicy policy) {
  using std::chrono::seconds;
  switch (policy) {
    case CachePolicy::kNever:
      return seconds(0);
    case CachePolicy::kAuto:
      return seconds(1);
    case CachePolicy::kMetadata:
    case CachePolicy::kAlways:
      return seconds(86400);
  }
  return seconds(0);
}

Result<std::unique_ptr<PassthroughFs>> PassthroughFs::create(PassthroughConfig config) {
  // The shared directory itself is configured by the host operator, so its
  // path may contain symlinks; everything below it is resolved by us.
  UniqueFd root(::open(config.shared_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno();
  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return fail_errno();
  auto st = stat_fd(root.get());
  if (!st) return tl::unexpected(st.error());
  std::unique_ptr<PassthroughFs> fs(new PassthroughFs(std::move(config), std::move(proc)));
  fs->inodes_.set_root(std::move(root), InodeKey{st->st.st_dev, st->st.st_ino, st->mnt_id});
  return fs;
}

PassthroughFs::PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd)
    : config_(std::move(config)),
      proc_self_fd_(std::move(proc_self_fd)),
      timeout_(cache_timeout(config_.cache)) {}

// --- helpers -------------------------------------------------------------

Result<std::shared_ptr<const InodeData>> PassthroughFs::inode(InodeId id) const {
  auto data = inodes_.get(id);
  if (!data) return fail(EBADF);
  return data;
}

Result<std::shared_ptr<HandleData>> PassthroughFs::handle(HandleId id, InodeId inode) const {
  auto data = handles_.get(id, inode);
  if (!data) return fail(EBADF);
  return data;
}

Entry PassthroughFs::entry_for(const InodeData& data, const struct stat& st,
                               uint32_t attr_flags) const {
  Entry entry;
  entry.inode = data.id;
  entry.attr = st;
  entry.attr_flags = attr_flags;
  entry.entry_timeout = timeout_;
  entry.attr_timeout = timeout_;
  return entry;
}

Result<Entry> PassthroughFs::register_inode(const InodeData& parent, UniqueFd path_fd) {
  auto st = stat_fd(path_fd.get());
  if (!st) return tl::unexpected(st.error());
  InodeKey key{st->st.st_dev, st->st.st_ino, st->mnt_id};
  auto data = inodes_.insert_or_ref(std::move(path_fd), key, st->st.st_mode);
  uint32_t flags = 0;
  // A directory on another mount than its parent is a submount root; the
  // guest then gives it its own st_dev, so that st_ino values of different
  // host filesystems cannot collide.
  if (submounts_active_.load(std::memory_order_relaxed) && S_ISDIR(st->st.st_mode) &&
      st->mnt_id != parent.key.mnt_id) {
    flags |= FUSE_ATTR_SUBMOUNT;
  }
  return entry_for(*data, st->st, flags);
}

Result<Entry> PassthroughFs::lookup_child(const InodeData& parent, const char* name) {
  if (!S_ISDIR(parent.type)) return fail(ENOTDIR);
  // O_NOFOLLOW: a symlink becomes an inode of its own, never its target.
  UniqueFd fd(::openat(parent.fd.get(), name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno();
  return register_inode(parent, std::move(fd));
}

Result<UniqueFd> PassthroughFs::reopen(const InodeData& data, int flags) const {
  // Opening a FIFO would block the worker, a device could have side effects
  // on the host, and a symlink must not be followed: only regular files and
  // directories get a real fd.
  if (S_ISLNK(data.type)) return fail(ELOOP);
  if (!S_ISREG(data.type) && !S_ISDIR(data.type)) return fail(EBADF);
  // The magic link resolves to exactly the inode the O_PATH fd holds, with no
  // path walk that a concurrent rename could redirect.
  FdName name(data.fd.get());
  UniqueFd fd(
      ::openat(proc_self_fd_.get(), name.text, (flags & ~(O_NOFOLLOW | O_CREAT)) | O_CLOEXEC));
  if (!fd) return fail_errno();
  return fd;
}

uint32_t PassthroughFs::open_reply_flags(bool directory) const {
  // As the Rust virtiofsd: never/metadata bypass the guest page cache for
  // files; metadata/always let the guest keep directory listings; always
  // keeps file data across opens.
  switch (config_.cache) {
    case CachePolicy::kNever:
      return directory ? 0 : FOPEN_DIRECT_IO;
    case CachePolicy::kMetadata:
      return directory ? (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE) : FOPEN_DIRECT_IO;
    case CachePolicy::kAuto:
      return 0;
    case CachePolicy::kAlways:
      return directory ? (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE) : FOPEN_KEEP_CACHE;
  }
  return 0;
}

// --- session --------------------------------------------------------------

Result<fuse::InitReply> PassthroughFs::init(const fuse::InitRequest& request) {
  bool submounts = config_.announce_submounts && (request.kernel_flags & FUSE_SUBMOUNTS) != 0;
  submounts_active_.store(submounts, std::memory_order_relaxed);
  fuse::InitReply reply;
  if (submounts) reply.wanted_flags |= FUSE_SUBMOUNTS;
  return reply;
}

void PassthroughFs::destroy() {
  handles_.clear();
  inodes_.clear_except_root();
}

// --- inodes ---------------------------------------------------------------

Result<Entry> PassthroughFs::lookup(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  // "." is the directory itself, and ".." at the shared root stays there.
  if (name.is_dot() || (name.is_dotdot() && parent == fuse::kRootInode)) {
    if (!S_ISDIR((*dir)->type)) return fail(ENOTDIR);
    auto st = stat_fd((*dir)->fd.get());
    if (!st) return tl::unexpected(st.error());
    if (!inodes_.add_ref(parent)) return fail(EBADF);
    return entry_for(**dir, st->st, 0);
  }
  return lookup_child(**dir, name.c_str());
}

void PassthroughFs::forget(InodeId inode, uint64_t count) {
  inodes_.forget(inode, count);
}

void PassthroughFs::batch_forget(std::span<const std::pair<InodeId, uint64_t>> items) {
  for (const auto& [inode, count] : items) inodes_.forget(inode, count);
}

Result<fuse::AttrReply> PassthroughFs::getattr(const fuse::Context&, InodeId ino,
                                               std::optional<HandleId>) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  auto st = stat_fd((*data)->fd.get());
  if (!st) return tl::unexpected(st.error());
  return fuse::AttrReply{st->st, timeout_};
}

Result<fuse::AttrReply> PassthroughFs::setattr(const fuse::Context& ctx, InodeId ino,
                                               const fuse::SetattrRequest& req) {
  auto found = inode(ino);
  if (!found) return tl::unexpected(found.error());
  const InodeData& data = **found;
  std::shared_ptr<HandleData> open_file;
  if (req.handle) {
    auto h = handle(*req.handle, ino);
    if (!h) return tl::unexpected(h.error());
    open_file = std::move(*h);
  }
  // Without a handle, path-based calls go through the /proc magic link of the
  // O_PATH fd: it names the inode itself (a symlink stays the symlink).
  FdName proc_name(data.fd.get());
  const int proc = proc_self_fd_.get();

  if (req.valid & FATTR_MODE) {
    mode_t mode = req.mode & 07777;
    VFSD_TRY(check(open_file ? ::fchmod(open_file->fd.get(), mode)
                             : ::fchmodat(proc, proc_name.text, mode, 0)));
  }
  if (req.valid & (FATTR_UID | FATTR_GID)) {
    uid_t uid = (req.valid & FATTR_UID) ? req.uid : static_cast<uid_t>(-1);
    gid_t gid = (req.valid & FATTR_GID) ? req.gid : static_cast<gid_t>(-1);
    VFSD_TRY(check(::fchownat(data.fd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)));
  }
  if (req.valid & FATTR_SIZE) {
    if (req.size > kMaxOffset) return fail(EINVAL);
    if (open_file) {
      VFSD_TRY(check(::ftruncate(open_file->fd.get(), static_cast<off_t>(req.size))));
    } else {
      // There is no ftruncateat: open the file for writing just for this.
      if (S_ISDIR(data.type)) return fail(EISDIR);
      if (!S_ISREG(data.type)) return fail(EINVAL);
      auto fd = reopen(data, O_WRONLY | O_NONBLOCK);
      if (!fd) return tl::unexpected(fd.error());
      VFSD_TRY(check(::ftruncate(fd->get(), static_cast<off_t>(req.size))));
    }
  }
  if (req.valid & (FATTR_ATIME | FATTR_MTIME)) {
    auto pick = [&](uint32_t set, uint32_t now, const timespec& value) {
      if (!(req.valid & set)) return timespec{0, UTIME_OMIT};
      if (req.valid & now) return timespec{0, UTIME_NOW};
      return value;
    };
    timespec times[2] = {pick(FATTR_ATIME, FATTR_ATIME_NOW, req.atime),
                         pick(FATTR_MTIME, FATTR_MTIME_NOW, req.mtime)};
    VFSD_TRY(check(open_file ? ::futimens(open_file->fd.get(), times)
                             : ::utimensat(proc, proc_name.text, times, 0)));
  }
  return getattr(ctx, ino, std::nullopt);
}

Result<std::string> PassthroughFs::readlink(const fuse::Context&, InodeId ino) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  if (!S_ISLNK((*data)->type)) return fail(EINVAL);
  std::string target(PATH_MAX, '\0');
  ssize_t n = ::readlinkat((*data)->fd.get(), "", target.data(), target.size());
  if (n < 0) return fail_errno();
  target.resize(static_cast<size_t>(n));
  return target;
}

Result<Entry> PassthroughFs::symlink(const fuse::Context& ctx, InodeId parent,
                                     const fuse::Name& name, std::string_view target) {
  VFSD_TRY(check_new_name(name));
  if (target.empty() || target.find('\0') != std::string_view::npos) return fail(EINVAL);
  if (target.size() >= PATH_MAX) return fail(ENAMETOOLONG);
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  std::string target_z(target);
  {
    auto creds = ScopedCredentials::enter(ctx.uid, ctx.gid);
    if (!creds) return tl::unexpected(creds.error());
    VFSD_TRY(check(::symlinkat(target_z.c_str(), (*dir)->fd.get(), name.c_str())));
  }
  return lookup_child(**dir, name.c_str());
}

Result<Entry> PassthroughFs::mknod(const fuse::Context& ctx, InodeId parent, const fuse::Name& name,
                                   mode_t mode, dev_t rdev, mode_t umask) {
  VFSD_TRY(check_new_name(name));
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  mode_t host_mode = (mode & S_IFMT) | (mode & 07777 & ~umask);
  {
    auto creds = ScopedCredentials::enter(ctx.uid, ctx.gid);
    if (!creds) return tl::unexpected(creds.error());
    VFSD_TRY(check(::mknodat((*dir)->fd.get(), name.c_str(), host_mode, rdev)));
  }
  return lookup_child(**dir, name.c_str());
}

Result<Entry> PassthroughFs::mkdir(const fuse::Context& ctx, InodeId parent, const fuse::Name& name,
                                   mode_t mode, mode_t umask) {
  VFSD_TRY(check_new_name(name));
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  {
    auto creds = ScopedCredentials::enter(ctx.uid, ctx.gid);
    if (!creds) return tl::unexpected(creds.error());
    VFSD_TRY(check(::mkdirat((*dir)->fd.get(), name.c_str(), mode & 07777 & ~umask)));
  }
  return lookup_child(**dir, name.c_str());
}

VoidResult PassthroughFs::unlink(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  VFSD_TRY(check_new_name(name));
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  return check(::unlinkat((*dir)->fd.get(), name.c_str(), 0));
}

VoidResult PassthroughFs::rmdir(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  VFSD_TRY(check_new_name(name));
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  return check(::unlinkat((*dir)->fd.get(), name.c_str(), AT_REMOVEDIR));
}

VoidResult PassthroughFs::rename(const fuse::Context&, InodeId old_parent,
                                 const fuse::Name& old_name, InodeId new_parent,
                                 const fuse::Name& new_name, uint32_t flags) {
  VFSD_TRY(check_new_name(old_name));
  VFSD_TRY(check_new_name(new_name));
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return fail(EINVAL);
  auto from = inode(old_parent);
  if (!from) return tl::unexpected(from.error());
  auto to = inode(new_parent);
  if (!to) return tl::unexpected(to.error());
  return check(
      ::renameat2((*from)->fd.get(), old_name.c_str(), (*to)->fd.get(), new_name.c_str(), flags));
}

Result<Entry> PassthroughFs::link(const fuse::Context&, InodeId ino, InodeId new_parent,
                                  const fuse::Name& name) {
  VFSD_TRY(check_new_name(name));
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  auto dir = inode(new_parent);
  if (!dir) return tl::unexpected(dir.error());
  // AT_SYMLINK_FOLLOW follows only the /proc magic link, to the inode itself
  // (a symlink inode is linked as the symlink, not its target).
  FdName proc_name((*data)->fd.get());
  VFSD_TRY(check(::linkat(proc_self_fd_.get(), proc_name.text, (*dir)->fd.get(), name.c_str(),
                          AT_SYMLINK_FOLLOW)));
  return lookup_child(**dir, name.c_str());
}

// --- files ----------------------------------------------------------------

Result<fuse::OpenReply> PassthroughFs::open(const fuse::Context&, InodeId ino, uint32_t flags) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  auto fd = reopen(**data, host_open_flags(flags));
  if (!fd) return tl::unexpected(fd.error());
  auto h = std::make_shared<HandleData>();
  h->inode = ino;
  h->fd = std::move(*fd);
  h->is_dir = S_ISDIR((*data)->type);
  bool is_dir = h->is_dir;
  return fuse::OpenReply{handles_.insert(std::move(h)), open_reply_flags(is_dir)};
}

Result<std::pair<Entry, fuse::OpenReply>> PassthroughFs::create(const fuse::Context& ctx,
                                                                InodeId parent,
                                                                const fuse::Name& name, mode_t mode,
                                                                uint32_t flags, mode_t umask) {
  VFSD_TRY(check_new_name(name));
  auto dir = inode(parent);
  if (!dir) return tl::unexpected(dir.error());
  if (!S_ISDIR((*dir)->type)) return fail(ENOTDIR);
  const int open_flags = host_open_flags(flags) & ~O_DIRECTORY;
  UniqueFd fd;
  {
    auto creds = ScopedCredentials::enter(ctx.uid, ctx.gid);
    if (!creds) return tl::unexpected(creds.error());
    // Always exclusive on the host: opening whatever already has the name
    // could be a FIFO (blocks the worker) or a device.
    fd.reset(::openat((*dir)->fd.get(), name.c_str(), open_flags | O_CREAT | O_EXCL | O_NOFOLLOW,
                      mode & 07777 & ~umask));
    if (!fd && (errno != EEXIST || (flags & O_EXCL))) return fail_errno();
  }
  if (!fd) {
    // The name exists and the guest did not ask for O_EXCL: open it as OPEN
    // would (regular files only), with the caller's permission checks.
    auto existing = lookup_child(**dir, name.c_str());
    if (!existing) return tl::unexpected(existing.error());
    auto data = inodes_.get(existing->inode);
    Result<UniqueFd> reopened = fail(EBADF);
    if (data && S_ISDIR(data->type)) {
      reopened = fail(EISDIR);
    } else if (data) {
      // reopen() refuses symlinks (ELOOP) and special files (EBADF).
      auto creds = ScopedCredentials::enter(ctx.uid, ctx.gid);
      reopened = creds ? reopen(*data, open_flags) : tl::unexpected(creds.error());
    }
    if (!reopened) {
      inodes_.forget(existing->inode, 1);
      return tl::unexpected(reopened.error());
    }
    auto h = std::make_shared<HandleData>();
    h->inode = existing->inode;
    h->fd = std::move(*reopened);
    fuse::OpenReply reply{handles_.insert(std::move(h)), open_reply_flags(false)};
    return std::pair{*existing, reply};
  }
  // Register the inode that was really created, not whatever has the name by
  // the time a second lookup would run.
  FdName proc_name(fd.get());
  UniqueFd path_fd(::openat(proc_self_fd_.get(), proc_name.text, O_PATH | O_CLOEXEC));
  if (!path_fd) return fail_errno();
  auto entry = register_inode(**dir, std::move(path_fd));
  if (!entry) return tl::unexpected(entry.error());
  auto h = std::make_shared<HandleData>();
  h->inode = entry->inode;
  h->fd = std::move(fd);
  fuse::OpenReply reply{handles_.insert(std::move(h)), open_reply_flags(false)};
  return std::pair{*entry, reply};
}

Result<size_t> PassthroughFs::read(const fuse::Context&, InodeId ino, HandleId fh, IovecWriter& out,
                                   uint32_t size, uint64_t offset) {
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  if (offset > kMaxOffset) return fail(EINVAL);
  size_t want = std::min<size_t>(size, out.remaining());
  want = std::min<uint64_t>(want, kMaxOffset - offset);
  size_t done = 0;
  // Straight into the reply buffers; IOV_MAX segments per call, as a guest
  // may describe its buffer in many small pieces.
  while (done < want) {
    IovecList iov = out.iovecs(want - done);
    if (iov.size() > IOV_MAX) iov.resize(IOV_MAX);
    size_t chunk = 0;
    for (const auto& seg : iov) chunk += seg.iov_len;
    ssize_t n = ::preadv((*h)->fd.get(), iov.data(), static_cast<int>(iov.size()),
                         static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return fail_errno();
    }
    out.advance(static_cast<size_t>(n));
    done += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < chunk) break;  // end of file
  }
  return done;
}

Result<size_t> PassthroughFs::write(const fuse::Context&, InodeId ino, HandleId fh, IovecReader& in,
                                    uint32_t size, uint64_t offset, uint32_t /*write_flags*/) {
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  if (size > in.remaining()) return fail(EINVAL);
  if (offset > kMaxOffset || size > kMaxOffset - offset) return fail(EFBIG);
  size_t done = 0;
  while (done < size) {
    IovecList iov = in.iovecs(size - done);
    if (iov.size() > IOV_MAX) iov.resize(IOV_MAX);
    size_t chunk = 0;
    for (const auto& seg : iov) chunk += seg.iov_len;
    ssize_t n = ::pwritev((*h)->fd.get(), iov.data(), static_cast<int>(iov.size()),
                          static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return fail_errno();
    }
    in.advance(static_cast<size_t>(n));
    done += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < chunk) break;  // short write: report what was written
  }
  return done;
}

VoidResult PassthroughFs::flush(const fuse::Context&, InodeId ino, HandleId fh, uint64_t) {
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  // The guest sends FLUSH on each close() of its file; closing a duplicate
  // gives the host the same close-time effects (NFS writeback, lock release)
  // and reports their error, while the handle stays open.
  UniqueFd dup_fd(::dup((*h)->fd.get()));
  if (!dup_fd) return fail_errno();
  return check(::close(dup_fd.release()));
}

VoidResult PassthroughFs::fsync(const fuse::Context&, InodeId ino, HandleId fh, bool datasync) {
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  int fd = (*h)->fd.get();
  return check(datasync ? ::fdatasync(fd) : ::fsync(fd));
}

VoidResult PassthroughFs::release(const fuse::Context&, InodeId ino, HandleId fh, uint32_t) {
  auto h = handles_.remove(fh, ino);
  if (!h) return fail(EBADF);
  return ok();
}

Result<struct statvfs> PassthroughFs::statfs(const fuse::Context&, InodeId ino) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  struct statvfs out {};
  if (::fstatvfs((*data)->fd.get(), &out) != 0) return fail_errno();
  return out;
}

VoidResult PassthroughFs::access(const fuse::Context& ctx, InodeId ino, uint32_t mask) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  auto st = stat_fd((*data)->fd.get());
  if (!st) return tl::unexpected(st.error());
  // Checked against the inode's mode, as the Rust virtiofsd does, instead of
  // switching credentials: the caller passes when any class it belongs to
  // (owner, its primary group, others) grants the bit; root passes read and
  // write, and execute when anyone may execute (or it is a directory).
  const mode_t mode = st->st.st_mode;
  const bool owner = ctx.uid == st->st.st_uid;
  const bool group = ctx.gid == st->st.st_gid;
  auto granted = [&](mode_t user_bit, mode_t group_bit, mode_t other_bit) {
    return (owner && (mode & user_bit)) || (group && (mode & group_bit)) || (mode & other_bit);
  };
  if ((mask & R_OK) && ctx.uid != 0 && !granted(S_IRUSR, S_IRGRP, S_IROTH)) return fail(EACCES);
  if ((mask & W_OK) && ctx.uid != 0 && !granted(S_IWUSR, S_IWGRP, S_IWOTH)) return fail(EACCES);
  if (mask & X_OK) {
    bool root_ok = ctx.uid == 0 && (S_ISDIR(mode) || (mode & (S_IXUSR | S_IXGRP | S_IXOTH)));
    if (!root_ok && !granted(S_IXUSR, S_IXGRP, S_IXOTH)) return fail(EACCES);
  }
  return ok();
}

Result<uint64_t> PassthroughFs::lseek(const fuse::Context&, InodeId ino, HandleId fh,
                                      uint64_t offset, uint32_t whence) {
  if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END && whence != SEEK_DATA &&
      whence != SEEK_HOLE) {
    return fail(EINVAL);
  }
  if (offset > kMaxOffset) return fail(EINVAL);
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  // The file position is shared with READDIR on directories.
  std::lock_guard lock((*h)->dir_mutex);
  off_t pos = ::lseek((*h)->fd.get(), static_cast<off_t>(offset), static_cast<int>(whence));
  if (pos < 0) return fail_errno();
  return static_cast<uint64_t>(pos);
}

VoidResult PassthroughFs::fallocate(const fuse::Context&, InodeId ino, HandleId fh, uint32_t mode,
                                    uint64_t offset, uint64_t length) {
  if (offset > kMaxOffset || length > kMaxOffset - offset) return fail(EFBIG);
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  return check(::fallocate((*h)->fd.get(), static_cast<int>(mode), static_cast<off_t>(offset),
                           static_cast<off_t>(length)));
}

VoidResult PassthroughFs::syncfs(const fuse::Context&, InodeId ino) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  // syncfs() needs a real fd: O_PATH ones are refused. The guest names the
  // root of each (sub)mount it wants synced.
  auto fd = reopen(**data, O_RDONLY | O_NONBLOCK);
  if (!fd) return tl::unexpected(fd.error());
  return check(::syncfs(fd->get()));
}

// --- directories ------------------------------------------------------------

Result<fuse::OpenReply> PassthroughFs::opendir(const fuse::Context&, InodeId ino, uint32_t) {
  auto data = inode(ino);
  if (!data) return tl::unexpected(data.error());
  if (!S_ISDIR((*data)->type)) return fail(ENOTDIR);
  auto fd = reopen(**data, O_RDONLY | O_DIRECTORY);
  if (!fd) return tl::unexpected(fd.error());
  auto h = std::make_shared<HandleData>();
  h->inode = ino;
  h->fd = std::move(*fd);
  h->is_dir = true;
  return fuse::OpenReply{handles_.insert(std::move(h)), open_reply_flags(true)};
}

VoidResult PassthroughFs::readdir(const fuse::Context&, InodeId ino, HandleId fh, uint64_t offset,
                                  bool plus, fuse::DirSink& sink) {
  auto h = handle(fh, ino);
  if (!h) return tl::unexpected(h.error());
  if (!(*h)->is_dir) return fail(ENOTDIR);
  if (offset > kMaxOffset) return fail(EINVAL);
  std::shared_ptr<const InodeData> dir;
  if (plus) {
    auto data = inode(ino);
    if (!data) return tl::unexpected(data.error());
    dir = std::move(*data);
  }

  std::lock_guard lock((*h)->dir_mutex);
  const int fd = (*h)->fd.get();
  if (::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) return fail_errno();
  // Entries read but not taken by the sink are read again by the next
  // READDIR, which seeks to the cookie of the last one taken.
  std::vector<char> buffer(32 * 1024);
  bool added = false;
  for (;;) {
    long n = ::syscall(SYS_getdents64, fd, buffer.data(), buffer.size());
    if (n < 0) return added ? ok() : VoidResult(fail_errno());
    if (n == 0) return ok();
    for (size_t pos = 0; pos < static_cast<size_t>(n);) {
      Dirent64Header header;
      std::memcpy(&header, buffer.data() + pos, sizeof(header));
      if (header.d_reclen <= kDirentNameOffset || pos + header.d_reclen > size_t(n)) {
        return added ? ok() : VoidResult(fail(EIO));
      }
      const char* raw_name = buffer.data() + pos + kDirentNameOffset;
      std::string_view name(raw_name, ::strnlen(raw_name, header.d_reclen - kDirentNameOffset));
      pos += header.d_reclen;
      // Ask before looking up, so that no lookup reference is taken for an
      // entry the reply has no room for.
      if (!sink.fits(name.size())) return ok();
      fuse::DirEntry entry{header.d_ino, static_cast<uint64_t>(header.d_off), header.d_type, name};
      if (!plus) {
        sink.add(entry, nullptr);
      } else if (name == "." || name == "..") {
        Entry none;  // zeroed: the guest must not take a reference on these
        sink.add(entry, &none);
      } else {
        std::string name_z(name);
        auto looked_up = lookup_child(*dir, name_z.c_str());
        if (!looked_up) {
          if (looked_up.error().value == ENOENT) continue;  // removed meanwhile
          return added ? ok() : VoidResult(tl::unexpected(looked_up.error()));
        }
        sink.add(entry, &*looked_up);
      }
      added = true;
    }
  }
}

VoidResult PassthroughFs::fsyncdir(const fuse::Context& ctx, InodeId ino, HandleId fh,
                                   bool datasync) {
  return fsync(ctx, ino, fh, datasync);
}

VoidResult PassthroughFs::releasedir(const fuse::Context&, InodeId ino, HandleId fh) {
  auto h = handles_.remove(fh, ino);
  if (!h) return fail(EBADF);
  return ok();
}

}  // namespace vfsd::passthrough
