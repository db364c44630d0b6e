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

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include <linux/capability.h>

#include "fuse/abi_ext.h"
#include "passthrough/casefold.h"
#include "passthrough/credentials.h"
#include "passthrough/file_handle.h"
#include "passthrough/lookup_ref.h"
#include "passthrough/safe_create.h"
#include "passthrough/safe_open.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace vfsd::passthrough {

using fuse::Entry;
using fuse::HandleId;
using fuse::InodeId;

// A lookup reference this code owns until the guest is sent its entry.
using InodeRef = LookupRef<InodeStore>;

namespace {

constexpr uint64_t kMaxOffset = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

// How far check_inside_share() walks up before it gives up (PATH_MAX / 2:
// deeper than any path the host can name).
constexpr int kMaxWalkUp = PATH_MAX / 2;

// What OPEN may pass on to the host (io_open_flags() then applies the
// options). Everything else is dropped: O_CREAT and O_EXCL (OPEN never
// creates), O_NOFOLLOW (the /proc magic link must be followed), O_PATH and
// O_TMPFILE (would not give an I/O handle), O_NOCTTY, O_ASYNC.
constexpr int kGuestOpenFlags = O_ACCMODE | O_APPEND | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME |
                                O_TRUNC | O_LARGEFILE | O_DIRECTORY | O_DIRECT;

// O_PATH and O_TMPFILE (without the O_DIRECTORY glibc folds into it) never
// reach a filesystem's open in a Linux guest, so OPEN and CREATE never carry
// them; a request that does is not asking for an I/O handle and is refused.
constexpr uint32_t kNotOpenFlags = O_PATH | (O_TMPFILE & ~O_DIRECTORY);

struct HostStat {
  struct stat st {};
  uint64_t mnt_id = 0;
};

// statx on the fd itself: the attributes plus the mount id in one call.
// Linux 6.11 and later take a null path with AT_EMPTY_PATH: the fd alone,
// with no path string copied in and looked up (a good part of a GETATTR's
// time in the kernel). Older kernels answer EFAULT; then "" from there on.
std::atomic<bool> statx_null_path{true};

constexpr unsigned kStatxMask = STATX_BASIC_STATS | STATX_MNT_ID;

int statx_fd(int fd, struct statx* stx) {
  constexpr int kFlags = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT;
  if (statx_null_path.load(std::memory_order_relaxed)) {
    const long rc = ::syscall(SYS_statx, fd, nullptr, kFlags, kStatxMask, stx);
    if (rc == 0 || errno != EFAULT) return static_cast<int>(rc);
    statx_null_path.store(false, std::memory_order_relaxed);
  }
  return ::statx(fd, "", kFlags, kStatxMask, stx);
}

HostStat host_stat_of(const struct statx& stx) {
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

Result<HostStat> stat_fd(int fd) {
  struct statx stx {};
  if (statx_fd(fd, &stx) != 0) return fail_errno();
  return host_stat_of(stx);
}

VoidResult check(int rc) {
  return rc == 0 ? ok() : VoidResult(fail_errno());
}

// Creating and removing operations take a real name only: one component,
// not "." or "..". The server already refuses the rest (fuse::Name), this is
// the second line for the *at() calls that take the name directly (mkdirat,
// mknodat, symlinkat, linkat, renameat2, unlinkat; see safe_open.h).
// The hidden names of crash-safe creation are not the guest's to make.
VoidResult check_new_name(const fuse::Name& name) {
  return !is_single_component(name.view()) || is_hidden_temp_name(name.view())
             ? VoidResult(fail(EINVAL))
             : ok();
}

// Removing operations: a hidden name does not exist for the guest.
VoidResult check_existing_name(const fuse::Name& name) {
  if (is_hidden_temp_name(name.view())) return fail(ENOENT);
  return is_single_component(name.view()) ? ok() : VoidResult(fail(EINVAL));
}

// An O_PATH fd of the inode a real fd of ours is open on (for registering it).
Result<UniqueFd> path_fd_of(int proc_self_fd, const UniqueFd& fd) {
  return reopen_own_fd(proc_self_fd, fd, O_PATH);
}

// Labels a node just made by name in `dir_fd` (symlink, device, FIFO,
// socket: nodes that cannot be made unnamed) through `apply`, and removes it
// again if that fails, so that no unlabelled node stays behind.
template <class Apply>
VoidResult label_or_remove(int dir_fd, const char* name, Apply&& apply) {
  auto fd = open_beneath(dir_fd, name, O_PATH);
  VoidResult labelled = fd ? apply(*fd) : VoidResult(tl::unexpected(fd.error()));
  if (!labelled) ::unlinkat(dir_fd, name, 0);
  return labelled;
}

// Drops CAP_FSETID for a write, truncate or fallocate that must clear
// setuid/setgid, so that the host kernel clears them as it would for the
// guest's unprivileged caller. The daemon runs with CAP_FSETID, which would
// keep the bits: Linux clears them for every writer without it.
Result<std::optional<ScopedCapabilityDrop>> drop_fsetid_if(bool kill) {
  std::optional<ScopedCapabilityDrop> guard;
  if (!kill) return guard;
  VFSD_ASSIGN_OR_RETURN(auto dropped, ScopedCapabilityDrop::drop(CAP_FSETID));
  guard.emplace(std::move(dropped));
  return guard;
}

// preadv and pwritev2 as bare system calls. glibc's wrappers are
// cancellation points that switch asynchronous cancellation on and off
// around the call: 4% of a 4 KiB read's CPU time, and no thread of ours is
// ever cancelled. The offset goes as the kernel's low and high words; on a
// 64-bit kernel the low word carries all of it.
static_assert(sizeof(long) == 8, "the offset is passed in one register");
ssize_t preadv_nocancel(int fd, const iovec* iov, int count, off_t at) {
  return ::syscall(SYS_preadv, fd, iov, count, static_cast<long>(at), 0L);
}
ssize_t pwritev2_nocancel(int fd, const iovec* iov, int count, off_t at, int rwf) {
  return ::syscall(SYS_pwritev2, fd, iov, count, static_cast<long>(at), 0L, rwf);
}

// The host side of READ and WRITE: moves up to `want` bytes between the
// guest's buffers (`cursor`, an IovecWriter or IovecReader) and the file at
// `offset` with `io(iov, count, offset)` (preadv or pwritev2), IOV_MAX
// segments per call, as a guest may describe its buffer in many small pieces.
// Stops at a short transfer (end of file, a short write); an error counts
// only if nothing moved (then the guest gets it), else what moved is
// reported.
template <class Cursor, class Io>
Result<size_t> host_io(Cursor& cursor, size_t want, uint64_t offset, Io&& io) {
  size_t done = 0;
  while (done < want) {
    IovecList iov = cursor.iovecs(want - done);
    if (iov.size() > IOV_MAX) iov.resize(IOV_MAX);
    size_t chunk = 0;
    for (const auto& seg : iov) chunk += seg.iov_len;
    ssize_t n = io(iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return fail_errno();
    }
    cursor.advance(static_cast<size_t>(n));
    done += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < chunk) break;
  }
  return done;
}

// Runs `fn` (returning a Result) with CAP_FSETID dropped if `kill`
// (drop_fsetid_if) and returns what it returns.
template <class Fn>
auto without_fsetid_if(bool kill, Fn&& fn) -> decltype(fn()) {
  VFSD_ASSIGN_OR_RETURN(auto no_fsetid, drop_fsetid_if(kill));
  return fn();
}

// Whether a truncating OPEN must clear setuid/setgid. With killpriv v2 the
// guest says so (FUSE_OPEN_KILL_SUIDGID: its caller lacks CAP_FSETID).
// Without it the guest sends the truncation inside OPEN (atomic O_TRUNC) and
// clears nothing itself: then every caller but root is taken to lack it.
bool truncating_open_kills_priv(const fuse::Context& ctx, int host_flags, bool kill_suidgid,
                                bool killpriv_v2) {
  if (!(host_flags & O_TRUNC)) return false;
  return killpriv_v2 ? kill_suidgid : ctx.uid != 0;
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

Result<std::unique_ptr<PassthroughFs>> PassthroughFs::create(PassthroughConfig config,
                                                             UniqueFd proc_self_fd) {
  // The shared directory itself is configured by the host operator, so its
  // path may contain symlinks; everything below it is resolved by us.
  UniqueFd root(::open(config.shared_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno();
  UniqueFd proc = std::move(proc_self_fd);
  if (!proc) proc.reset(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return fail_errno();
  VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(root.get()));
  if (config.inode_file_handles != InodeFileHandles::kNever) {
    VFSD_ASSIGN_OR_RETURN(
        auto usable,
        check_file_handles(root.get(), config.inode_file_handles == InodeFileHandles::kMandatory));
    if (!usable) config.inode_file_handles = InodeFileHandles::kNever;
  }
  // A bad --xattrmap fails here (EINVAL); validate_config() gives the message.
  XattrMap xattr_map;
  if (!config.xattrmap.empty()) {
    VFSD_ASSIGN_OR_RETURN(auto parsed, XattrMap::parse(config.xattrmap, nullptr));
    xattr_map = std::move(parsed);
  }
  std::unique_ptr<PassthroughFs> fs(new PassthroughFs(std::move(config), std::move(proc)));
  fs->xattr_map_ = std::move(xattr_map);
  // CVE-2021-20263: where the guest's security.capability really lives. The
  // host kernel clears a real security.capability on write, truncate and
  // chown; a renamed one is ours to clear (clear_remapped_capability).
  constexpr std::string_view kCapability = "security.capability";
  if (auto host = fs->xattr_name_to_host(kCapability); host && *host != kCapability) {
    fs->capability_xattr_ = std::move(*host);
  }
  if (fs->config_.inode_file_handles != InodeFileHandles::kNever) {
    fs->deletion_watch_ =
        DeletionWatch::create(fs->proc_self_fd_.get(), fs->config_.deletion_mark_limit);
  }
  fs->inodes_.set_root(std::move(root), InodeKey{st.st.st_dev, st.st.st_ino, st.mnt_id});
  return fs;
}

PassthroughFs::PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd)
    : config_(std::move(config)),
      fd_budget_(config_.guest_fd_limit, "file descriptors (see --rlimit-nofile)"),
      handle_inode_budget_(
          config_.handle_inode_limit != 0 ? config_.handle_inode_limit : kDefaultHandleInodeLimit,
          "inodes kept as file handles"),
      proc_self_fd_(std::move(proc_self_fd)),
      timeout_(cache_timeout(config_.cache)) {
  inodes_.set_budgets(&fd_budget_, &handle_inode_budget_);
}

// --- helpers -------------------------------------------------------------

Result<std::shared_ptr<const InodeData>> PassthroughFs::inode(InodeId id) const {
  // For a handle inode this opens a private O_PATH fd for the caller's
  // request (ESTALE once the host deleted the inode).
  return inodes_.open(id);
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
  owner_to_guest(entry.attr);
  entry.attr_flags = attr_flags;
  entry.entry_timeout = timeout_;
  entry.attr_timeout = timeout_;
  return entry;
}

Result<Entry> PassthroughFs::register_inode(const InodeData& parent, UniqueFd path_fd,
                                            bool parent_lookup, Budget::Charge* prepaid) {
  VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(path_fd.get()));
  InodeKey key{st.st.st_dev, st.st.st_ino, st.mnt_id};
  std::optional<FileHandle> handle;
  if (config_.inode_file_handles != InodeFileHandles::kNever) {
    auto made = FileHandle::from_fd(path_fd.get());
    if (made) {
      handle = *made;
    } else if (!handles_unsupported(made.error())) {
      return tl::unexpected(made.error());
    } else {
      // This filesystem has no (small enough) handles: prefer keeps an fd
      // for its inodes, mandatory refuses them. Said once per mount.
      const bool mandatory = config_.inode_file_handles == InodeFileHandles::kMandatory;
      if (inodes_.first_report_for_mount(key.mnt_id)) {
        if (mandatory) {
          log::error(
              "--inode-file-handles=mandatory: mount {} has no file handles ({}): its "
              "inodes cannot be looked up",
              key.mnt_id, errno_name(made.error().value));
        } else {
          log::warn(
              "--inode-file-handles=prefer: mount {} has no file handles ({}): its inodes "
              "hold O_PATH fds",
              key.mnt_id, errno_name(made.error().value));
        }
      }
      if (mandatory) return tl::unexpected(made.error());
    }
  }
  return store_inode(parent, std::move(path_fd), st.st, st.mnt_id, handle, parent_lookup, prepaid);
}

Result<Entry> PassthroughFs::store_inode(const InodeData& parent, UniqueFd path_fd,
                                         const struct stat& st, uint64_t mnt_id,
                                         std::optional<FileHandle> handle, bool parent_lookup,
                                         Budget::Charge* prepaid) {
  VFSD_ASSIGN_OR_RETURN(
      auto data, inodes_.insert_or_ref(std::move(path_fd), InodeKey{st.st_dev, st.st_ino, mnt_id},
                                       st.st_mode, handle, prepaid));
  return entry_for(*data, st, entry_attr_flags(parent, *data, st, mnt_id, parent_lookup));
}

uint32_t PassthroughFs::entry_attr_flags(const InodeData& parent, const InodeData& data,
                                         const struct stat& st, uint64_t mnt_id,
                                         bool parent_lookup) {
  // A directory on another mount than its parent is a submount root; the
  // guest then gives it a superblock and st_dev of its own, so that st_ino
  // values of different host filesystems cannot collide. (The st_dev we
  // return is the host's, already distinct; the guest uses its own.)
  const bool mount_root = S_ISDIR(st.st_mode) && !parent_lookup &&
                          (mnt_id != parent.key.mnt_id || st.st_dev != parent.key.dev);
  if (mount_root) note_mount_root(data.id, mnt_id);
  return session_has(kSubmounts) && mount_root ? FUSE_ATTR_SUBMOUNT : 0;
}

std::optional<Entry> PassthroughFs::lookup_known(const InodeData& parent, const char* name,
                                                 const struct stat& st, uint64_t mnt_id) {
  // The reference first (one pass under the store's lock), handed back below
  // if the inode turns out not to be the one the name names.
  auto data = inodes_.ref_by_key(InodeKey{st.st_dev, st.st_ino, mnt_id});
  if (!data) return std::nullopt;
  // An inode held by an fd is pinned: its number cannot have been given to
  // another file, so the key alone proves it is this one. A handle inode
  // pins nothing; its number may have been reused after the host deleted
  // it, so the name's handle must be the stored one, unless its inotify mark
  // still holds it (DeletionWatch). (The stat and the proof come from two
  // calls, but the stored object being alive at the second means it was the
  // one with this number at the first.)
  if (data->handle && !(deletion_watch_ && deletion_watch_->pinned(data->watch))) {
    if (!data->handle->names_same_object(parent.fd.get(), name)) {
      inodes_.forget(data->id, 1);
      return std::nullopt;
    }
    mark_looked_up_again(*data);
  }
  bump_owned(lookups_recognised_.local().value);
  return entry_for(*data, st, entry_attr_flags(parent, *data, st, mnt_id, false));
}

void PassthroughFs::mark_looked_up_again(const InodeData& data) {
  // The guest looked the inode up again: a hot one, worth a mark (once).
  if (!deletion_watch_ || !deletion_watch_->wants(data.watch) || !data.mount) return;
  // Opened from the handle: exactly the stored object, whatever the name
  // names by now.
  auto fd = data.handle->open(data.mount->fd.get(), O_PATH);
  if (fd) deletion_watch_->mark(data.watch, *fd);
}

Result<Entry> PassthroughFs::lookup_child(const InodeData& parent, const char* name,
                                          Budget::Charge* prepaid) {
  if (!S_ISDIR(parent.type)) return fail(ENOTDIR);
  // Most lookups are of inodes the guest already holds (its entry timed
  // out): a stat of the name tells their key, and a known inode needs no fd
  // opened and closed again (one system call instead of three; with file
  // handles two instead of four). `name` is one checked component, not
  // followed; a hit answers only an inode registered the full way before.
  struct statx stx {};
  if (::statx(parent.fd.get(), name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_SYNC_AS_STAT,
              kStatxMask, &stx) == 0) {
    const HostStat st = host_stat_of(stx);
    if (auto known = lookup_known(parent, name, st.st, st.mnt_id)) return *known;
  } else if (errno == ENOENT) {
    return fail(ENOENT);  // what the open would answer, for half the cost
  }
  return register_child(parent, name, prepaid);
}

Result<Entry> PassthroughFs::register_child(const InodeData& parent, const char* name,
                                            Budget::Charge* prepaid) {
  // One component, beneath `parent`; never followed: a symlink becomes an
  // inode of its own, never its target.
  VFSD_ASSIGN_OR_RETURN(auto fd, open_beneath(parent.fd.get(), name, O_PATH));
  return register_inode(parent, std::move(fd), /*parent_lookup=*/false, prepaid);
}

Result<Entry> PassthroughFs::lookup_parent(const InodeData& dir) {
  if (!S_ISDIR(dir.type)) return fail(ENOTDIR);
  VFSD_ASSIGN_OR_RETURN(auto parent, open_parent(dir.fd.get()));
  VFSD_TRY(check_inside_share(parent.get()));
  // The parent of a directory is never a submount root as seen from it.
  return register_inode(dir, std::move(parent), /*parent_lookup=*/true);
}

VoidResult PassthroughFs::check_inside_share(int dir_fd) const {
  // A directory the guest holds may have been moved out of the share by the
  // host; its ".." then names something the guest must never see. Walk up
  // until the share's root is met (inside) or the walk stops moving (the
  // top of the host's tree: outside). ".." crosses mount boundaries, so
  // submounts are walked through.
  const InodeKey root = inodes_.root_key();
  UniqueFd cur(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
  if (!cur) return fail_errno();
  VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(cur.get()));
  for (int depth = 0; depth < kMaxWalkUp; ++depth) {
    if (st.st.st_dev == root.dev && st.st.st_ino == root.ino && st.mnt_id == root.mnt_id) {
      return ok();
    }
    VFSD_ASSIGN_OR_RETURN(auto opened, open_parent(cur.get()));
    UniqueFd up = std::move(opened);
    VFSD_ASSIGN_OR_RETURN(auto up_st, stat_fd(up.get()));
    if (up_st.st.st_dev == st.st.st_dev && up_st.st.st_ino == st.st.st_ino &&
        up_st.mnt_id == st.mnt_id) {
      break;  // "/" of the host (or of our mount namespace)
    }
    cur = std::move(up);
    st = up_st;
  }
  log::guest_fault(log::GuestFault::kEscapeAttempt,
                   "lookup: the parent of a directory is outside the shared directory; refused");
  return fail(ENOENT);
}

Result<UniqueFd> PassthroughFs::reopen(const InodeData& data, int flags) const {
  // Opening a FIFO would block the worker, a device could have side effects
  // on the host, and a symlink must not be followed: only regular files and
  // directories get a real fd.
  if (S_ISLNK(data.type)) return fail(ELOOP);
  if (!S_ISREG(data.type) && !S_ISDIR(data.type)) return fail(EBADF);
  // Every fd the guest can use for I/O is made here: on a read-only share
  // none of them can write or truncate, whatever flags got this far.
  if (config_.readonly && ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_CREAT)))) {
    return fail(EROFS);
  }
  // The magic link resolves to exactly the inode the O_PATH fd holds, with no
  // path walk that a concurrent rename could redirect.
  if (data.fd) return reopen_own_fd(proc_self_fd_.get(), data.fd, flags);
  // A handle inode as stored (no O_PATH fd): the handle names exactly its
  // inode too, and opening it directly saves the O_PATH open and its close.
  if (!data.handle || !data.mount) return fail(EBADF);
  return data.handle->open(data.mount->fd.get(), flags & ~(O_NOFOLLOW | O_CREAT));
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

void PassthroughFs::owner_to_guest(struct stat& st) const {
  st.st_uid = config_.uid_map.host_to_guest(st.st_uid);
  st.st_gid = config_.gid_map.host_to_guest(st.st_gid);
}

Result<ScopedCredentials> PassthroughFs::guest_credentials(const fuse::Context& ctx,
                                                           std::span<const gid_t> groups) const {
  uid_t uid = ctx.uid;
  gid_t gid = ctx.gid;
  std::vector<gid_t> host_groups;
  if (!config_.uid_map.empty() || !config_.gid_map.empty()) {
    VFSD_ASSIGN_OR_RETURN(auto host_uid, config_.uid_map.guest_to_host(uid));
    VFSD_ASSIGN_OR_RETURN(auto host_gid, config_.gid_map.guest_to_host(gid));
    uid = host_uid;
    gid = host_gid;
    host_groups.reserve(groups.size());
    for (gid_t g : groups) {
      VFSD_ASSIGN_OR_RETURN(auto host, config_.gid_map.guest_to_host(g));
      host_groups.push_back(host);
    }
    groups = host_groups;
  }
  if (!session_has(kSuppGroup) && uid != 0) {
    // As the Rust virtiofsd: without the groups, a member of the parent's
    // group only (not its owner, not its primary group) would get EACCES
    // although the guest kernel allowed the call.
    return ScopedCredentials::enter_trusting_guest_permission_check(uid, gid);
  }
  return ScopedCredentials::enter(uid, gid, groups);
}

int PassthroughFs::io_open_flags(uint32_t guest_flags) const {
  int flags = static_cast<int>(guest_flags) & kGuestOpenFlags;
  // O_APPEND never reaches the host fd: the guest may mmap the file or flip
  // the flag with fcntl, and under writeback caching it computes the offsets
  // itself. WRITE appends per request where the guest asks for it.
  flags &= ~O_APPEND;
  if (!config_.allow_direct_io) flags &= ~O_DIRECT;
  // The guest's O_NOATIME could fail with EPERM on the host for files the
  // daemon does not own; the Rust virtiofsd clears it unless asked not to.
  if (!config_.preserve_noatime) flags &= ~O_NOATIME;
  // Under writeback caching the guest reads pages of files it opened
  // write-only (partial page writes).
  if (session_has(kWriteback) && (flags & O_ACCMODE) == O_WRONLY) {
    flags = (flags & ~O_ACCMODE) | O_RDWR;
  }
  return flags | O_CLOEXEC;
}

Result<UniqueFd> PassthroughFs::reopen_io(const InodeData& data, int flags) const {
  if (config_.readonly && (flags & O_ACCMODE) == O_RDONLY && !(flags & O_NOATIME)) {
    // A read-only share leaves the host untouched, access times included.
    // The kernel refuses O_NOATIME (EPERM) unless we own the file or hold
    // CAP_FOWNER over it; then the open goes ahead without it.
    auto fd = reopen(data, flags | O_NOATIME);
    if (fd || fd.error().value != EPERM) return fd;
  }
  return reopen(data, flags);
}

fuse::OpenReply PassthroughFs::insert_handle(InodeId inode, UniqueFd fd, bool is_dir,
                                             uint32_t guest_flags, Budget::Charge charge) {
  auto h = std::make_shared<HandleData>();
  h->inode = inode;
  h->fd = std::move(fd);
  h->charge = std::move(charge);
  h->is_dir = is_dir;
  h->append = (guest_flags & O_APPEND) != 0;
  return fuse::OpenReply{handles_.insert(std::move(h)), open_reply_flags(is_dir)};
}

Result<Entry> PassthroughFs::lookup_casefold(const InodeData& parent, std::string_view name) {
  VFSD_ASSIGN_OR_RETURN(auto dir, reopen(parent, O_RDONLY | O_DIRECTORY));
  VFSD_ASSIGN_OR_RETURN(auto real,
                        find_ascii_casefold_match(dir.get(), name, &is_hidden_temp_name));
  return lookup_child(parent, real.c_str());
}

void PassthroughFs::note_mount_root(InodeId id, uint64_t mnt_id) {
  if (mnt_id == 0) return;
  std::lock_guard lock(mount_roots_mutex_);
  mount_roots_.insert_or_assign(mnt_id, id);
}

VoidResult PassthroughFs::syncfs_all(const InodeData& data) {
  // syncfs() needs a real fd: O_PATH ones are refused.
  VFSD_ASSIGN_OR_RETURN(auto fd, reopen(data, O_RDONLY | O_NONBLOCK));
  VoidResult result = check(::syncfs(fd.get()));
  // With submounts announced, the guest has one superblock per host mount
  // and sends SYNCFS for each; otherwise it knows only the root, and the
  // mounts below it must be reached from here.
  if (data.id != fuse::kRootInode || session_has(kSubmounts)) {
    return result;
  }
  std::vector<std::pair<uint64_t, InodeId>> roots;
  {
    std::lock_guard lock(mount_roots_mutex_);
    roots.assign(mount_roots_.begin(), mount_roots_.end());
  }
  for (const auto& [mnt_id, id] : roots) {
    auto root = inode(id);
    if (!root) {
      // Forgotten by the guest: it can have no dirty data there through us.
      std::lock_guard lock(mount_roots_mutex_);
      if (auto it = mount_roots_.find(mnt_id); it != mount_roots_.end() && it->second == id) {
        mount_roots_.erase(it);
      }
      continue;
    }
    auto sub = reopen(**root, O_RDONLY | O_NONBLOCK);
    if (!sub || ::syncfs(sub->get()) != 0) {
      if (result) result = fail(sub ? errno : sub.error().value);
    }
  }
  return result;
}

// --- session --------------------------------------------------------------

Result<fuse::InitReply> PassthroughFs::init(const fuse::InitRequest& request) {
  uint32_t session = 0;
  bool submounts = config_.announce_submounts && (request.kernel_flags & FUSE_SUBMOUNTS) != 0;
  fuse::InitReply reply;
  if (submounts) {
    session |= kSubmounts;
    reply.wanted_flags |= FUSE_SUBMOUNTS;
  }
  const uint64_t offered = request.kernel_flags;
  // A read-only share never caches writes in the guest.
  const bool writeback =
      config_.writeback && !config_.readonly && (offered & FUSE_WRITEBACK_CACHE) != 0;
  if (writeback) {
    session |= kWriteback;
    reply.wanted_flags |= FUSE_WRITEBACK_CACHE;
  }
  const bool killpriv = config_.killpriv_v2 && (offered & FUSE_HANDLE_KILLPRIV_V2) != 0;
  if (killpriv) {
    session |= kKillprivV2;
    reply.wanted_flags |= FUSE_HANDLE_KILLPRIV_V2;
  }
  if (config_.allow_mmap) reply.wanted_flags |= FUSE_DIRECT_IO_ALLOW_MMAP;
  if (offered & FUSE_CREATE_SUPP_GROUP) session |= kSuppGroup;
  // Harmless to ask always: the guest then sends the caller's supplementary
  // group with creating requests, which guest_credentials() enters.
  reply.wanted_flags |= FUSE_CREATE_SUPP_GROUP;
  // LOOKUP of "." and ".." works (the guest can NFS-export the mount); ioctls
  // on directory handles are served (chattr on a directory).
  reply.wanted_flags |= FUSE_EXPORT_SUPPORT | FUSE_HAS_IOCTL_DIR;
  // Symlink targets may stay in the guest's page cache unless every cache is off.
  if (config_.cache != CachePolicy::kNever) reply.wanted_flags |= FUSE_CACHE_SYMLINKS;
  session |= init_xattr(request, reply);
  // Guest locks forwarded to the host (locks.cc); without them the guest
  // keeps its locks local.
  if (config_.posix_lock) reply.wanted_flags |= FUSE_POSIX_LOCKS;
  if (config_.flock) reply.wanted_flags |= FUSE_FLOCK_LOCKS;
  session_flags_.store(session, std::memory_order_relaxed);
  return reply;
}

void PassthroughFs::destroy() {
  // Lock waits end (EINTR) and the session's lock descriptions close before
  // the handles they were taken through.
  locks_.reset();
  handles_.clear();
  inodes_.clear_except_root();
  session_flags_.store(0, std::memory_order_relaxed);
  std::lock_guard lock(mount_roots_mutex_);
  mount_roots_.clear();
}

// --- inodes ---------------------------------------------------------------

Result<Entry> PassthroughFs::lookup(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  VFSD_ASSIGN_OR_RETURN(auto dir, inode(parent));
  // "." is the directory itself, and ".." at the shared root stays there.
  if (name.is_dot() || (name.is_dotdot() && parent == fuse::kRootInode)) {
    if (!S_ISDIR(dir->type)) return fail(ENOTDIR);
    VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(dir->fd.get()));
    if (!inodes_.add_ref(parent)) return fail(EBADF);
    return entry_for(*dir, st.st, 0);
  }
  if (name.is_dotdot()) return lookup_parent(*dir);
  // One component (the server's fuse::Name says so already; this holds
  // without it, e.g. a NUL inside would cut the name short for the host).
  if (!is_single_component(name.view())) return fail(EINVAL);
  // Half-made directories of a crash-safe mkdir do not exist for the guest.
  if (is_hidden_temp_name(name.view())) return fail(ENOENT);
  auto found = lookup_child(*dir, name.c_str());
  if (!found && found.error().value == ENOENT && config_.ascii_casefold) {
    return lookup_casefold(*dir, name.view());
  }
  return found;
}

void PassthroughFs::forget(InodeId inode, uint64_t count) {
  inodes_.forget(inode, count);
}

void PassthroughFs::batch_forget(std::span<const std::pair<InodeId, uint64_t>> items) {
  for (const auto& [inode, count] : items) inodes_.forget(inode, count);
}

Result<fuse::AttrReply> PassthroughFs::getattr(const fuse::Context&, InodeId ino,
                                               std::optional<HandleId>) {
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(data->fd.get()));
  owner_to_guest(st.st);
  return fuse::AttrReply{st.st, timeout_};
}

Result<fuse::AttrReply> PassthroughFs::setattr(const fuse::Context& ctx, InodeId ino,
                                               const fuse::SetattrRequest& req) {
  // -1 is fchownat's "leave unchanged", never an owner the guest can mean
  // (checked before anything changes).
  if (((req.valid & FATTR_UID) && req.uid == static_cast<uid_t>(-1)) ||
      ((req.valid & FATTR_GID) && req.gid == static_cast<gid_t>(-1))) {
    return fail(EINVAL);
  }
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  std::shared_ptr<HandleData> open_file;
  if (req.handle) {
    VFSD_ASSIGN_OR_RETURN(auto h, handle(*req.handle, ino));
    open_file = std::move(h);
  }
  // Without a handle, path-based calls go through the /proc magic link of the
  // O_PATH fd: it names the inode itself (a symlink stays the symlink).
  ProcFdName proc_name(data->fd);
  const int proc = proc_self_fd_.get();
  if (req.valid & FATTR_MODE) {
    mode_t mode = req.mode & 07777;
    VFSD_TRY(check(open_file ? ::fchmod(open_file->fd.get(), mode)
                             : ::fchmodat(proc, proc_name.c_str(), mode, 0)));
  }
  {
    // A chown or truncate the guest marked (killpriv v2 sends the flag;
    // without it the guest puts the new mode in the same request) clears
    // setuid/setgid as it would for a caller without CAP_FSETID.
    VFSD_ASSIGN_OR_RETURN(auto no_fsetid, drop_fsetid_if((req.valid & FATTR_KILL_SUIDGID) != 0));
    if (req.valid & (FATTR_UID | FATTR_GID)) VFSD_TRY(set_owner(*data, req));
    if (req.valid & FATTR_SIZE) VFSD_TRY(set_size(*data, open_file.get(), req.size));
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
                             : ::utimensat(proc, proc_name.c_str(), times, 0)));
  }
  return getattr(ctx, ino, std::nullopt);
}

VoidResult PassthroughFs::set_owner(const InodeData& data, const fuse::SetattrRequest& req) {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  // The new owner as the host stores it (EPERM for a forbid-guest id).
  if (req.valid & FATTR_UID) {
    VFSD_ASSIGN_OR_RETURN(uid, config_.uid_map.guest_to_host(req.uid));
  }
  if (req.valid & FATTR_GID) {
    VFSD_ASSIGN_OR_RETURN(gid, config_.gid_map.guest_to_host(req.gid));
  }
  // A chown of anything but a directory drops file capabilities.
  if (!S_ISDIR(data.type)) VFSD_TRY(clear_remapped_capability(data));
  return check(::fchownat(data.fd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
}

VoidResult PassthroughFs::set_size(const InodeData& data, const HandleData* open_file,
                                   uint64_t size) {
  if (size > kMaxOffset) return fail(EINVAL);
  if (open_file) {
    VFSD_TRY(clear_remapped_capability(open_file->fd.get()));
    return check(::ftruncate(open_file->fd.get(), static_cast<off_t>(size)));
  }
  // There is no ftruncateat: open the file for writing just for this
  // (regular files only: nothing else is opened for the guest).
  if (S_ISDIR(data.type)) return fail(EISDIR);
  if (!S_ISREG(data.type)) return fail(EINVAL);
  VFSD_ASSIGN_OR_RETURN(auto fd, reopen(data, O_WRONLY | O_NONBLOCK));
  VFSD_TRY(clear_remapped_capability(fd.get()));
  return check(::ftruncate(fd.get(), static_cast<off_t>(size)));
}

Result<std::string> PassthroughFs::readlink(const fuse::Context&, InodeId ino) {
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  if (!S_ISLNK(data->type)) return fail(EINVAL);
  std::string target(PATH_MAX, '\0');
  ssize_t n = ::readlinkat(data->fd.get(), "", target.data(), target.size());
  if (n < 0) return fail_errno();
  target.resize(static_cast<size_t>(n));
  return target;
}

Result<PassthroughFs::CreationSite> PassthroughFs::prepare_creation(InodeId parent,
                                                                    const fuse::Name* name,
                                                                    uint64_t fd_units) {
  if (name) VFSD_TRY(check_new_name(*name));
  VFSD_ASSIGN_OR_RETURN(auto dir, inode(parent));
  if (!S_ISDIR(dir->type)) return fail(ENOTDIR);
  // The units of what the operation will hold (the new inode's fd, a
  // handle's), so that a full budget refuses it before the host changes.
  VFSD_ASSIGN_OR_RETURN(auto charge, fd_budget_.acquire(fd_units));
  return CreationSite{std::move(dir), std::move(charge)};
}

Result<Entry> PassthroughFs::finish_named_creation(CreationSite& site, const fuse::Name& name,
                                                   const fuse::Extensions& ext) {
  const int dir_fd = site.dir->fd.get();
  if (ext.security_context) {
    VFSD_TRY(label_or_remove(dir_fd, name.c_str(),
                             [&](const UniqueFd& fd) { return apply_security_context(fd, ext); }));
  }
  // Just made: not known yet, so straight to the full way.
  return register_child(*site.dir, name.c_str(), &site.charge);
}

Result<Entry> PassthroughFs::register_created(CreationSite& site, const UniqueFd& fd) {
  // A handle inode keeps no fd, so the O_PATH reopen through /proc (a path
  // walk and a close) is not needed when the new inode's stat and handle can
  // come from the creation's own fd, and its mount (the parent's, where it
  // was made) is known and opens handles. Anything else takes the full way.
  const MountFd* mount = site.dir->mount.get();
  if (config_.inode_file_handles != InodeFileHandles::kNever && mount != nullptr &&
      mount->opens_handles()) {
    VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(fd.get()));
    auto handle = FileHandle::from_fd(fd.get());
    if (handle && handle->mount_id() == mount->mnt_id && st.mnt_id == mount->mnt_id) {
      return store_inode(*site.dir, UniqueFd{}, st.st, st.mnt_id, *handle,
                         /*parent_lookup=*/false, &site.charge);
    }
  }
  VFSD_ASSIGN_OR_RETURN(auto path_fd, path_fd_of(proc_self_fd_.get(), fd));
  return register_inode(*site.dir, std::move(path_fd), /*parent_lookup=*/false, &site.charge);
}

Result<Entry> PassthroughFs::symlink(const fuse::Context& ctx, InodeId parent,
                                     const fuse::Name& name, std::string_view target,
                                     const fuse::Extensions& ext) {
  VFSD_TRY(check_new_name(name));
  if (target.empty() || target.find('\0') != std::string_view::npos) return fail(EINVAL);
  if (target.size() >= PATH_MAX) return fail(ENAMETOOLONG);
  VFSD_ASSIGN_OR_RETURN(auto site, prepare_creation(parent, nullptr));
  std::string target_z(target);
  // The target is stored, never resolved by us: an absolute or ".." target
  // only means something to the guest, which resolves it in its own tree
  // (every later open of the link is refused: reopen, open_beneath).
  VFSD_TRY(as_caller(ctx, ext.supplementary_groups, [&] {
    return check(::symlinkat(target_z.c_str(), site.dir->fd.get(), name.c_str()));
  }));
  return finish_named_creation(site, name, ext);
}

Result<Entry> PassthroughFs::mknod(const fuse::Context& ctx, InodeId parent, const fuse::Name& name,
                                   mode_t mode, dev_t rdev, mode_t umask,
                                   const fuse::Extensions& ext) {
  VFSD_ASSIGN_OR_RETURN(auto site, prepare_creation(parent, &name));
  const mode_t type = mode & S_IFMT;
  const mode_t host_mode = effective_create_mode(site.dir->fd, type | (mode & 07777), umask);
  if (type == S_IFREG || type == 0) {
    // A regular file is made unnamed and linked in complete.
    VFSD_ASSIGN_OR_RETURN(auto fd,
                          create_file_safely(ctx, ext, *site.dir, name, host_mode & 07777, O_RDWR));
    return register_created(site, fd);
  }
  // A device, FIFO or socket node is made, never opened (it is looked up
  // O_PATH, and reopen() refuses it).
  VFSD_TRY(as_caller(ctx, ext.supplementary_groups, [&] {
    return check(::mknodat(site.dir->fd.get(), name.c_str(), host_mode, rdev));
  }));
  return finish_named_creation(site, name, ext);
}

Result<Entry> PassthroughFs::mkdir(const fuse::Context& ctx, InodeId parent, const fuse::Name& name,
                                   mode_t mode, mode_t umask, const fuse::Extensions& ext) {
  VFSD_ASSIGN_OR_RETURN(auto site, prepare_creation(parent, &name));
  const mode_t host_mode = effective_create_mode(site.dir->fd, mode & 07777, umask) & 07777;
  VFSD_ASSIGN_OR_RETURN(auto path_fd, mkdir_safely(ctx, ext, *site.dir, name, host_mode));
  return register_inode(*site.dir, std::move(path_fd), /*parent_lookup=*/false, &site.charge);
}

VoidResult PassthroughFs::unlink(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  VFSD_TRY(check_existing_name(name));
  VFSD_ASSIGN_OR_RETURN(auto dir, inode(parent));
  keep_fd_of_victim(dir->fd.get(), name.c_str());
  return check(::unlinkat(dir->fd.get(), name.c_str(), 0));
}

VoidResult PassthroughFs::rmdir(const fuse::Context&, InodeId parent, const fuse::Name& name) {
  VFSD_TRY(check_existing_name(name));
  VFSD_ASSIGN_OR_RETURN(auto dir, inode(parent));
  return check(::unlinkat(dir->fd.get(), name.c_str(), AT_REMOVEDIR));
}

VoidResult PassthroughFs::rename(const fuse::Context&, InodeId old_parent,
                                 const fuse::Name& old_name, InodeId new_parent,
                                 const fuse::Name& new_name, uint32_t flags) {
  VFSD_TRY(check_existing_name(old_name));
  VFSD_TRY(check_new_name(new_name));
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return fail(EINVAL);
  VFSD_ASSIGN_OR_RETURN(auto from, inode(old_parent));
  VFSD_ASSIGN_OR_RETURN(auto to, inode(new_parent));
  if (!(flags & (RENAME_NOREPLACE | RENAME_EXCHANGE))) {
    keep_fd_of_victim(to->fd.get(), new_name.c_str());
  }
  return check(
      ::renameat2(from->fd.get(), old_name.c_str(), to->fd.get(), new_name.c_str(), flags));
}

void PassthroughFs::keep_fd_of_victim(int dir_fd, const char* name) {
  // Only handle inodes lose their way back with their last name; an fd
  // inode still holds its inode.
  if (config_.inode_file_handles == InodeFileHandles::kNever) return;
  auto victim = open_beneath(dir_fd, name, O_PATH | O_NOFOLLOW);
  if (!victim) return;  // nothing there: the call itself reports it
  auto st = stat_fd(victim->get());
  if (!st) return;
  inodes_.keep_fd(InodeKey{st->st.st_dev, st->st.st_ino, st->mnt_id}, std::move(*victim));
}

Result<Entry> PassthroughFs::link(const fuse::Context&, InodeId ino, InodeId new_parent,
                                  const fuse::Name& name) {
  VFSD_TRY(check_new_name(name));
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto dir, inode(new_parent));
  // AT_SYMLINK_FOLLOW follows only the /proc magic link, to the inode itself
  // (a symlink inode is linked as the symlink, not its target).
  ProcFdName proc_name(data->fd);
  VFSD_TRY(check(::linkat(proc_self_fd_.get(), proc_name.c_str(), dir->fd.get(), name.c_str(),
                          AT_SYMLINK_FOLLOW)));
  return lookup_child(*dir, name.c_str());
}

// --- files ----------------------------------------------------------------

Result<fuse::OpenReply> PassthroughFs::open(const fuse::Context& ctx, InodeId ino, uint32_t flags,
                                            bool kill_suidgid) {
  if (flags & kNotOpenFlags) return fail(EINVAL);
  // As stored: reopen() opens a handle inode straight from its handle.
  VFSD_ASSIGN_OR_RETURN(auto data, inodes_.get_stored(ino));
  const int host_flags = io_open_flags(flags);
  // The handle's unit of the fd budget before its fd exists.
  VFSD_ASSIGN_OR_RETURN(auto charge, fd_budget_.acquire());
  const bool kill_priv =
      truncating_open_kills_priv(ctx, host_flags, kill_suidgid, session_has(kKillprivV2));
  VFSD_ASSIGN_OR_RETURN(auto fd,
                        without_fsetid_if(kill_priv, [&] { return reopen_io(*data, host_flags); }));
  if (host_flags & O_TRUNC) VFSD_TRY(clear_remapped_capability(fd.get()));
  return insert_handle(ino, std::move(fd), S_ISDIR(data->type), flags, std::move(charge));
}

Result<std::pair<Entry, fuse::OpenReply>> PassthroughFs::create(
    const fuse::Context& ctx, InodeId parent, const fuse::Name& name, mode_t mode, uint32_t flags,
    mode_t umask, bool kill_suidgid, const fuse::Extensions& ext) {
  if (flags & kNotOpenFlags) return fail(EINVAL);
  // Two units of the fd budget: the new inode's and the handle's.
  VFSD_ASSIGN_OR_RETURN(auto site, prepare_creation(parent, &name, 2));
  const int open_flags = io_open_flags(flags) & ~O_DIRECTORY;
  const mode_t host_mode = effective_create_mode(site.dir->fd, mode & 07777, umask) & 07777;
  auto created = create_file_safely(ctx, ext, *site.dir, name, host_mode, open_flags);
  if (!created && created.error().value == EEXIST && !(flags & O_EXCL)) {
    return open_existing_for_create(ctx, ext, site, name, open_flags, flags, kill_suidgid);
  }
  if (!created) return tl::unexpected(created.error());
  Budget::Charge handle_charge = site.charge.take(1);
  UniqueFd fd = std::move(*created);
  VFSD_ASSIGN_OR_RETURN(auto entry, register_created(site, fd));
  // Ours until the guest is sent the entry: dropped again on any failure.
  InodeRef ref(inodes_, entry.inode);
  if ((open_flags & O_ACCMODE) != O_RDWR) {
    // The new file is open O_RDWR; the guest asked for another access mode,
    // which its creation grants whatever the new mode says, so the daemon
    // (not the guest) reopens it.
    VFSD_ASSIGN_OR_RETURN(fd,
                          reopen_own_fd(proc_self_fd_.get(), fd, open_flags & ~(O_TRUNC | O_EXCL)));
  }
  return std::pair{entry, insert_handle(ref.release_to_guest(), std::move(fd), false, flags,
                                        std::move(handle_charge))};
}

Result<std::pair<Entry, fuse::OpenReply>> PassthroughFs::open_existing_for_create(
    const fuse::Context& ctx, const fuse::Extensions& ext, CreationSite& site,
    const fuse::Name& name, int open_flags, uint32_t guest_flags, bool kill_suidgid) {
  Budget::Charge handle_charge = site.charge.take(1);
  VFSD_ASSIGN_OR_RETURN(auto existing, lookup_child(*site.dir, name.c_str(), &site.charge));
  InodeRef ref(inodes_, existing.inode);
  VFSD_ASSIGN_OR_RETURN(auto data, inode(existing.inode));
  if (S_ISDIR(data->type)) return fail(EISDIR);
  // With the caller's permission checks; reopen() refuses symlinks (ELOOP)
  // and special files (EBADF).
  const bool kill_priv =
      truncating_open_kills_priv(ctx, open_flags, kill_suidgid, session_has(kKillprivV2));
  VFSD_ASSIGN_OR_RETURN(auto fd, without_fsetid_if(kill_priv, [&] {
                          return as_caller(ctx, ext.supplementary_groups,
                                           [&] { return reopen(*data, open_flags); });
                        }));
  if (open_flags & O_TRUNC) VFSD_TRY(clear_remapped_capability(fd.get()));
  return std::pair{existing, insert_handle(ref.release_to_guest(), std::move(fd), false,
                                           guest_flags, std::move(handle_charge))};
}

Result<size_t> PassthroughFs::read(const fuse::Context&, InodeId ino, HandleId fh, IovecWriter& out,
                                   uint32_t size, uint64_t offset) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  if (offset > kMaxOffset) return fail(EINVAL);
  size_t want = std::min<size_t>(size, out.remaining());
  want = std::min<uint64_t>(want, kMaxOffset - offset);
  // Straight into the reply buffers.
  const int fd = h->fd.get();
  return host_io(out, want, offset, [fd](const iovec* iov, int count, off_t at) {
    return preadv_nocancel(fd, iov, count, at);
  });
}

Result<size_t> PassthroughFs::write(const fuse::Context&, InodeId ino, HandleId fh, IovecReader& in,
                                    uint32_t size, uint64_t offset, uint32_t write_flags,
                                    std::optional<uint32_t> file_flags) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  if (size > in.remaining()) return fail(EINVAL);
  if (offset > kMaxOffset || size > kMaxOffset - offset) return fail(EFBIG);
  // O_APPEND is not on the host fd: a write the guest makes through an
  // O_APPEND file goes to the host's end of file, so that guests (or host
  // processes) appending to one file do not overwrite each other. Writes out
  // of the guest page cache (writeback, mmap) carry their own offsets.
  const bool guest_append = file_flags ? (*file_flags & O_APPEND) != 0 : h->append;
  const int rwf = (guest_append && !(write_flags & FUSE_WRITE_CACHE)) ? RWF_APPEND : 0;
  // The guest marks a write whose caller lacks CAP_FSETID, with killpriv v2
  // and without it (its direct-I/O path, --cache=never, does; its cached
  // path clears the bits itself first, with a SETATTR).
  VFSD_ASSIGN_OR_RETURN(auto no_fsetid,
                        drop_fsetid_if((write_flags & FUSE_WRITE_KILL_SUIDGID) != 0));
  // As Linux before any write: file capabilities go (CVE-2021-20263).
  if (!capability_xattr_.empty() && !h->is_dir) {
    VFSD_TRY(clear_remapped_capability(h->fd.get()));
  }
  // Straight from the request's buffers.
  const int fd = h->fd.get();
  return host_io(in, size, offset, [fd, rwf](const iovec* iov, int count, off_t at) {
    return pwritev2_nocancel(fd, iov, count, at, rwf);
  });
}

VoidResult PassthroughFs::flush(const fuse::Context&, InodeId ino, HandleId fh,
                                uint64_t lock_owner) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  // A close() by a process releases all its POSIX locks on the file.
  if (config_.posix_lock) locks_.flush(ino, lock_owner);
  // The guest sends FLUSH on each close() of its file; closing a duplicate
  // gives the host the same close-time effects (NFS writeback, lock release)
  // and reports their error, while the handle stays open.
  UniqueFd dup_fd(::dup(h->fd.get()));
  if (!dup_fd) return fail_errno();
  return check(::close(dup_fd.release()));
}

VoidResult PassthroughFs::fsync(const fuse::Context&, InodeId ino, HandleId fh, bool datasync) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  int fd = h->fd.get();
  return check(datasync ? ::fdatasync(fd) : ::fsync(fd));
}

VoidResult PassthroughFs::release(const fuse::Context&, InodeId ino, HandleId fh, uint32_t) {
  auto h = handles_.remove(fh, ino);
  if (!h) return fail(EBADF);
  if (config_.posix_lock) locks_.release(ino, fh);
  return ok();
}

Result<struct statvfs> PassthroughFs::statfs(const fuse::Context&, InodeId ino) {
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  struct statvfs out {};
  if (::fstatvfs(data->fd.get(), &out) != 0) return fail_errno();
  return out;
}

VoidResult PassthroughFs::access(const fuse::Context& ctx, InodeId ino, uint32_t mask) {
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto st, stat_fd(data->fd.get()));
  // Checked against the inode's mode, as the Rust virtiofsd does, instead of
  // switching credentials: the caller passes when any class it belongs to
  // (owner, its primary group, others) grants the bit; root passes read and
  // write, and execute when anyone may execute (or it is a directory).
  // The guest's ids against the owner as the guest sees it (--translate-*).
  owner_to_guest(st.st);
  const mode_t mode = st.st.st_mode;
  const bool owner = ctx.uid == st.st.st_uid;
  const bool group = ctx.gid == st.st.st_gid;
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
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  // The file position is shared with READDIR on directories.
  std::lock_guard lock(h->dir_mutex);
  off_t pos = ::lseek(h->fd.get(), static_cast<off_t>(offset), static_cast<int>(whence));
  if (pos < 0) return fail_errno();
  return static_cast<uint64_t>(pos);
}

VoidResult PassthroughFs::fallocate(const fuse::Context& ctx, InodeId ino, HandleId fh,
                                    uint32_t mode, uint64_t offset, uint64_t length) {
  if (offset > kMaxOffset || length > kMaxOffset - offset) return fail(EFBIG);
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  // FALLOCATE carries no kill flag: as on Linux, it clears setuid/setgid
  // unless the caller is privileged, which for a guest means root.
  VFSD_ASSIGN_OR_RETURN(auto no_fsetid, drop_fsetid_if(ctx.uid != 0));
  // Linux drops file capabilities on fallocate too (file_modified()).
  if (!capability_xattr_.empty()) {
    VFSD_TRY(clear_remapped_capability(h->fd.get()));
  }
  return check(::fallocate(h->fd.get(), static_cast<int>(mode), static_cast<off_t>(offset),
                           static_cast<off_t>(length)));
}

VoidResult PassthroughFs::syncfs(const fuse::Context&, InodeId ino) {
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  return syncfs_all(*data);
}

Result<size_t> PassthroughFs::copy_file_range(const fuse::Context& ctx, InodeId in,
                                              HandleId in_handle, uint64_t in_offset, InodeId out,
                                              HandleId out_handle, uint64_t out_offset,
                                              uint64_t length, uint64_t flags) {
  VFSD_ASSIGN_OR_RETURN(auto src, handle(in_handle, in));
  VFSD_ASSIGN_OR_RETURN(auto dst, handle(out_handle, out));
  if (in_offset > kMaxOffset || out_offset > kMaxOffset) return fail(EINVAL);
  // No flags are defined; the host refuses any with EINVAL, as we do for
  // values that would not even fit its argument.
  if (flags > std::numeric_limits<unsigned int>::max()) return fail(EINVAL);
  // The reply's byte count is 32 bits wide.
  const size_t len = static_cast<size_t>(std::min<uint64_t>(length, 0xfffff000u));
  loff_t off_in = static_cast<loff_t>(in_offset);
  loff_t off_out = static_cast<loff_t>(out_offset);
  // The destination is written: its file capabilities go, as on Linux.
  if (!capability_xattr_.empty()) {
    VFSD_TRY(clear_remapped_capability(dst->fd.get()));
  }
  // As the guest: quotas and the setuid clearing of the destination follow
  // the caller, not the daemon.
  VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx));
  ssize_t n = ::copy_file_range(src->fd.get(), &off_in, dst->fd.get(), &off_out, len,
                                static_cast<unsigned int>(flags));
  if (n < 0) return fail_errno();
  return static_cast<size_t>(n);
}

Result<std::pair<Entry, fuse::OpenReply>> PassthroughFs::tmpfile(const fuse::Context& ctx,
                                                                 InodeId parent, mode_t mode,
                                                                 uint32_t flags, mode_t umask,
                                                                 const fuse::Extensions& ext) {
  // The file it makes is writable: never on a read-only share.
  if (config_.readonly) return fail(EROFS);
  if (flags & O_PATH) return fail(EINVAL);
  const int open_flags = io_open_flags(flags) & ~(O_DIRECTORY | O_TRUNC | O_CLOEXEC);
  // open(2) refuses a read-only O_TMPFILE the same way.
  if ((open_flags & O_ACCMODE) == O_RDONLY) return fail(EINVAL);
  // Two units of the fd budget: the inode's and the handle's.
  VFSD_ASSIGN_OR_RETURN(auto site, prepare_creation(parent, nullptr, 2));
  Budget::Charge handle_charge = site.charge.take(1);
  const int dir_fd = site.dir->fd.get();
  const mode_t host_mode = effective_create_mode(site.dir->fd, mode & 07777, umask) & 07777;
  VFSD_ASSIGN_OR_RETURN(auto fd, as_caller(ctx, ext.supplementary_groups, [&] {
                          return open_unnamed_file(dir_fd, open_flags, host_mode);
                        }));
  VFSD_TRY(apply_security_context(fd, ext));
  VFSD_ASSIGN_OR_RETURN(auto entry, register_created(site, fd));
  return std::pair{
      entry, insert_handle(entry.inode, std::move(fd), false, flags, std::move(handle_charge))};
}

// --- directories ------------------------------------------------------------

Result<fuse::OpenReply> PassthroughFs::opendir(const fuse::Context&, InodeId ino, uint32_t) {
  VFSD_ASSIGN_OR_RETURN(auto data, inodes_.get_stored(ino));
  if (!S_ISDIR(data->type)) return fail(ENOTDIR);
  VFSD_ASSIGN_OR_RETURN(auto charge, fd_budget_.acquire());
  VFSD_ASSIGN_OR_RETURN(auto fd, reopen_io(*data, O_RDONLY | O_DIRECTORY));
  return insert_handle(ino, std::move(fd), true, 0, std::move(charge));
}

VoidResult PassthroughFs::readdir(const fuse::Context&, InodeId ino, HandleId fh, uint64_t offset,
                                  bool plus, fuse::DirSink& sink) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  if (!h->is_dir) return fail(ENOTDIR);
  if (offset > kMaxOffset) return fail(EINVAL);
  std::shared_ptr<const InodeData> dir;
  if (plus) {
    VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
    dir = std::move(data);
  }

  std::lock_guard lock(h->dir_mutex);
  const int fd = h->fd.get();
  HandleData::DirStream& stream = h->dir_stream;
  if (!stream.valid || stream.offset != offset) {
    stream.valid = false;
    if (::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) return fail_errno();
    stream.pos = stream.end = 0;
    stream.offset = offset;
    stream.valid = true;
  }
  // Records read but not taken by the sink stay in the stream for the next
  // READDIR from this cookie. An error after some entries were added ends
  // the reply with those (the guest asks again).
  constexpr size_t kRecordBuffer = 8 * 1024;
  if (stream.records.size() != kRecordBuffer) stream.records.resize(kRecordBuffer);
  bool added = false;
  for (;;) {
    if (stream.pos == stream.end) {
      long n = ::syscall(SYS_getdents64, fd, stream.records.data(), stream.records.size());
      if (n < 0) {
        const int error = errno;
        stream.valid = false;  // the fd's position is not known any more
        return added ? ok() : VoidResult(fail(error));
      }
      if (n == 0) return ok();
      stream.pos = 0;
      stream.end = static_cast<size_t>(n);
    }
    size_t consumed = 0;
    auto filled =
        add_dirents(std::span(stream.records.data() + stream.pos, stream.end - stream.pos),
                    dir.get(), sink, added, consumed, stream.offset);
    stream.pos += consumed;
    if (!filled) {
      if (filled.error().value == EIO) stream.valid = false;  // a broken record: start over
      return added ? ok() : VoidResult(tl::unexpected(filled.error()));
    }
    if (*filled == DirFill::kFull) return ok();
  }
}

Result<PassthroughFs::DirFill> PassthroughFs::add_dirents(std::span<const char> records,
                                                          const InodeData* plus_dir,
                                                          fuse::DirSink& sink, bool& added,
                                                          size_t& consumed, uint64_t& cookie) {
  for (size_t pos = 0; pos < records.size(); consumed = pos) {
    Dirent64Header header;
    std::memcpy(&header, records.data() + pos, sizeof(header));
    if (header.d_reclen <= kDirentNameOffset || pos + header.d_reclen > records.size()) {
      return fail(EIO);
    }
    const char* raw_name = records.data() + pos + kDirentNameOffset;
    std::string_view name(raw_name, ::strnlen(raw_name, header.d_reclen - kDirentNameOffset));
    // Ask before looking up, so that no lookup reference is taken for an
    // entry the reply has no room for.
    if (!is_hidden_temp_name(name) && !sink.fits(name.size())) return DirFill::kFull;
    pos += header.d_reclen;
    const uint64_t previous_cookie = cookie;
    cookie = static_cast<uint64_t>(header.d_off);
    if (is_hidden_temp_name(name)) continue;  // a crash-safe mkdir in progress
    fuse::DirEntry entry{header.d_ino, static_cast<uint64_t>(header.d_off), header.d_type, name};
    if (!plus_dir) {
      sink.add(entry, nullptr);
    } else if (name == "." || name == "..") {
      Entry none;  // zeroed: the guest must not take a reference on these
      sink.add(entry, &none);
    } else {
      std::string name_z(name);
      // The entry's inode number tells (but for a mount point) whether it
      // is known: only then is the cheap recognition worth its stat.
      const bool maybe_known =
          inodes_.find(InodeKey{plus_dir->key.dev, header.d_ino, plus_dir->key.mnt_id}) != nullptr;
      auto looked_up = maybe_known ? lookup_child(*plus_dir, name_z.c_str())
                                   : register_child(*plus_dir, name_z.c_str());
      if (!looked_up) {
        if (looked_up.error().value == ENOENT) continue;  // removed meanwhile
        // Not consumed (`consumed` stops before it): the guest asks again
        // from the entry before it.
        cookie = previous_cookie;
        return tl::unexpected(looked_up.error());
      }
      sink.add(entry, &*looked_up);
    }
    added = true;
  }
  return DirFill::kMore;
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
