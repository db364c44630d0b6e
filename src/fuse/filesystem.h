// The abstract filesystem the FUSE server dispatches to. It speaks domain
// types only: no wire structs, no descriptor chains. Every method defaults to
// ENOSYS so that a filesystem implements only what it supports.
//
// Thread safety: the server calls these methods concurrently from several
// queue workers; implementations synchronise their own state.
//
// Lookup counts (as the kernel keeps them, fuse_lowlevel.h's contract): every
// Entry with a nonzero inode that the server sends to the guest carries one
// lookup reference, taken by the method that made it (lookup, mknod, mkdir,
// symlink, link, create, tmpfile, and each READDIRPLUS entry). The guest
// gives references back only with FORGET/BATCH_FORGET, counted, and a reset
// or DESTROY drops them all (destroy()). A method that fails, or whose entry
// the server cannot deliver, must not leave a reference behind
// (passthrough/lookup_ref.h). An inode stays valid while it has references;
// the root (kRootInode) is never freed.
// Pinned by: server_test.cc(OpTest.ConcurrentRequests),
//   passthrough_fs_test.cc(PassthroughFsTest.LookupCountsReferencesAndForgetClosesTheFd,
//   PassthroughFsTest.ReaddirplusTakesOneReferencePerReturnedEntry),
//   read_only_fs_test.cc(ReadOnlyFsTest.CreateWhoseOpenFailsGivesTheLookupReferenceBack),
//   server_test.cc(MalformedTest.MalformedAndUnanswerable),
//   fd_budget_test.cc(FdBudgetTest.ForgedForgetsCrashNothingAndFreeOnlyWhatTheyName)
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuse/name.h"
#include "util/iovec_io.h"
#include "util/result.h"
#include "util/strong_id.h"

namespace vfsd::fuse {

/// A FUSE node id. kRootInode is the shared directory itself; 0 in an Entry
/// is a negative entry.
using InodeId = StrongId<struct InodeIdTag>;
inline constexpr InodeId kRootInode{1};

/// A FUSE file handle, as returned by open/opendir/create.
using HandleId = StrongId<struct HandleIdTag>;

/// Who is asking: the credentials of the guest process behind a request.
/// Facts of one operation travel as that method's parameters.
struct Context {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

/// A security label for a node being created (FUSE_SECURITY_CTX): the
/// xattr name the guest's LSM chose (e.g. "security.selinux") and its value.
struct SecurityContext {
  std::string name;
  std::string value;
};

/// The request extensions of a creating request (symlink, mknod, mkdir,
/// create, tmpfile); empty when not negotiated or not sent.
struct Extensions {
  /// FUSE_CREATE_SUPP_GROUP: the caller's supplementary group.
  std::vector<gid_t> supplementary_groups;
  /// FUSE_SECURITY_CTX: the label the new node gets.
  std::optional<SecurityContext> security_context;
};

/// What LOOKUP and the creating operations answer.
struct Entry {
  InodeId inode{0};  // 0 = negative entry (cacheable ENOENT)
  uint64_t generation = 0;
  struct stat attr {};
  uint32_t attr_flags = 0;  // FUSE_ATTR_* (e.g. SUBMOUNT)
  std::chrono::nanoseconds entry_timeout{0};
  std::chrono::nanoseconds attr_timeout{0};
};

/// What GETATTR and SETATTR answer.
struct AttrReply {
  struct stat attr {};
  std::chrono::nanoseconds timeout{0};
};

/// What OPEN, OPENDIR and CREATE answer.
struct OpenReply {
  HandleId handle{0};
  uint32_t open_flags = 0;  // FOPEN_* (DIRECT_IO, KEEP_CACHE, CACHE_DIR, ...)
};

/// SETATTR: which fields to change (FATTR_* bits) and their new values.
struct SetattrRequest {
  uint32_t valid = 0;  // FATTR_MODE | FATTR_UID | ...
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;
  struct timespec atime {};        // unless FATTR_ATIME_NOW
  struct timespec mtime {};        // unless FATTR_MTIME_NOW
  std::optional<HandleId> handle;  // FATTR_FH
};

/// One directory entry for READDIR / READDIRPLUS.
struct DirEntry {
  uint64_t ino = 0;
  uint64_t next_offset = 0;  // the cookie that resumes after this entry
  uint32_t type = 0;         // DT_* value
  std::string_view name;
};

/// Collects directory entries into the reply buffer.
class DirSink {
 public:
  virtual ~DirSink() = default;
  /// Whether an entry with a name of `name_len` bytes still fits. A
  /// READDIRPLUS filesystem asks before looking the entry up, so that it
  /// never takes a lookup reference for an entry that is then dropped.
  virtual bool fits(size_t name_len) const = 0;
  /// Appends an entry (the caller checked fits()). `entry` is the looked-up
  /// entry for READDIRPLUS (null for READDIR; zeroed inode for "." and "..").
  virtual void add(const DirEntry& dirent, const Entry* entry) = 0;
};

/// The INIT exchange, seen from the filesystem.
struct InitRequest {
  uint64_t kernel_flags = 0;  // FUSE_* capability bits the guest offers
};
struct InitReply {
  uint64_t wanted_flags = 0;  // FUSE_* bits the filesystem wants (server ANDs with offered)
  /// Bits the filesystem cannot work without (e.g. POSIX_ACL + DONT_MASK +
  /// SETXATTR_EXT for --posix-acl): INIT fails with EPROTO if the guest
  /// does not offer all of them.
  uint64_t required_flags = 0;
};

/// GETXATTR / LISTXATTR answer. With a request size of 0 the guest asks only
/// for the size: `data` stays empty and `size` is the length it needs.
/// Otherwise `data` holds the value (or NUL-separated names) and a value
/// longer than the request's size is ERANGE.
/// Pinned by: server_ops_test.cc(OpTest.GetxattrSizeQuery,
///   OpTest.GetxattrValueLongerThanAskedIsErange)
struct XattrReply {
  std::string data;
  size_t size = 0;
};

/// A POSIX record lock as FUSE carries it (fuse_file_lock).
struct FileLock {
  uint64_t start = 0;
  uint64_t end = 0;   // inclusive; OFFSET_MAX = to end of file
  uint32_t type = 0;  // F_RDLCK, F_WRLCK, F_UNLCK
  uint32_t pid = 0;
};

/// IOCTL answer: the ioctl's result and the bytes it returns to the guest.
struct IoctlReply {
  int32_t result = 0;
  std::string out;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  /// Session start. Called on INIT; a second INIT without DESTROY (guest
  /// reset) is preceded by destroy().
  virtual Result<InitReply> init(const InitRequest&) { return InitReply{}; }
  /// Session end: drop every inode and handle the guest held.
  virtual void destroy() {}

  /// Looks `name` up in `parent` and takes one lookup reference on the result.
  /// "." and ".." may arrive here (".." at the root is the root).
  virtual Result<Entry> lookup(const Context&, InodeId, const Name&) { return fail(ENOSYS); }
  /// Drops `count` lookup references; frees the inode at zero.
  virtual void forget(InodeId, uint64_t /*count*/) {}
  virtual void batch_forget(std::span<const std::pair<InodeId, uint64_t>> items) {
    for (const auto& [inode, count] : items) forget(inode, count);
  }

  virtual Result<AttrReply> getattr(const Context&, InodeId, std::optional<HandleId>) {
    return fail(ENOSYS);
  }
  virtual Result<AttrReply> setattr(const Context&, InodeId, const SetattrRequest&) {
    return fail(ENOSYS);
  }
  virtual Result<std::string> readlink(const Context&, InodeId) { return fail(ENOSYS); }
  virtual Result<Entry> symlink(const Context&, InodeId /*parent*/, const Name&,
                                std::string_view /*target*/, const Extensions&) {
    return fail(ENOSYS);
  }
  virtual Result<Entry> mknod(const Context&, InodeId /*parent*/, const Name&, mode_t, dev_t,
                              mode_t /*umask*/, const Extensions&) {
    return fail(ENOSYS);
  }
  virtual Result<Entry> mkdir(const Context&, InodeId /*parent*/, const Name&, mode_t,
                              mode_t /*umask*/, const Extensions&) {
    return fail(ENOSYS);
  }
  virtual VoidResult unlink(const Context&, InodeId /*parent*/, const Name&) {
    return fail(ENOSYS);
  }
  virtual VoidResult rmdir(const Context&, InodeId /*parent*/, const Name&) { return fail(ENOSYS); }
  /// RENAME and RENAME2; `flags` are RENAME_NOREPLACE / EXCHANGE / WHITEOUT.
  virtual VoidResult rename(const Context&, InodeId /*old_parent*/, const Name& /*old_name*/,
                            InodeId /*new_parent*/, const Name& /*new_name*/, uint32_t /*flags*/) {
    return fail(ENOSYS);
  }
  virtual Result<Entry> link(const Context&, InodeId /*inode*/, InodeId /*new_parent*/,
                             const Name&) {
    return fail(ENOSYS);
  }

  /// `flags` are the open(2) flags; `kill_suidgid` is the guest's
  /// FUSE_OPEN_KILL_SUIDGID (a truncating caller without CAP_FSETID).
  virtual Result<OpenReply> open(const Context&, InodeId, uint32_t /*flags*/,
                                 bool /*kill_suidgid*/) {
    return fail(ENOSYS);
  }
  /// CREATE: creates and opens `name`; the entry carries one lookup reference.
  virtual Result<std::pair<Entry, OpenReply>> create(const Context&, InodeId /*parent*/,
                                                     const Name&, mode_t, uint32_t /*flags*/,
                                                     mode_t /*umask*/, bool /*kill_suidgid*/,
                                                     const Extensions&) {
    return fail(ENOSYS);
  }
  /// Reads up to `size` bytes at `offset` straight into `out` (preadv on its
  /// iovecs); returns the byte count.
  virtual Result<size_t> read(const Context&, InodeId, HandleId, IovecWriter& /*out*/,
                              uint32_t /*size*/, uint64_t /*offset*/) {
    return fail(ENOSYS);
  }
  /// Writes `size` bytes from `in` at `offset` (pwritev on its iovecs).
  /// `write_flags` are FUSE_WRITE_*; `file_flags` the guest file's open
  /// flags at the time of the write (fcntl(F_SETFL) may have changed
  /// O_APPEND since OPEN), nullopt when the transport does not pass them.
  /// Returns the byte count.
  virtual Result<size_t> write(const Context&, InodeId, HandleId, IovecReader& /*in*/,
                               uint32_t /*size*/, uint64_t /*offset*/, uint32_t /*write_flags*/,
                               std::optional<uint32_t> /*file_flags*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult flush(const Context&, InodeId, HandleId, uint64_t /*lock_owner*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult fsync(const Context&, InodeId, HandleId, bool /*datasync*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult release(const Context&, InodeId, HandleId, uint32_t /*flags*/) {
    return fail(ENOSYS);
  }
  virtual Result<struct statvfs> statfs(const Context&, InodeId) { return fail(ENOSYS); }
  virtual VoidResult access(const Context&, InodeId, uint32_t /*mask*/) { return fail(ENOSYS); }
  virtual Result<uint64_t> lseek(const Context&, InodeId, HandleId, uint64_t /*offset*/,
                                 uint32_t /*whence*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult fallocate(const Context&, InodeId, HandleId, uint32_t /*mode*/,
                               uint64_t /*offset*/, uint64_t /*length*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult syncfs(const Context&, InodeId) { return fail(ENOSYS); }

  virtual Result<OpenReply> opendir(const Context&, InodeId, uint32_t /*flags*/) {
    return fail(ENOSYS);
  }
  /// READDIR (`plus` false) and READDIRPLUS (`plus` true): entries after the
  /// cookie `offset`, appended to `sink` until it is full.
  virtual VoidResult readdir(const Context&, InodeId, HandleId, uint64_t /*offset*/, bool /*plus*/,
                             DirSink&) {
    return fail(ENOSYS);
  }
  virtual VoidResult fsyncdir(const Context&, InodeId, HandleId, bool /*datasync*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult releasedir(const Context&, InodeId, HandleId) { return fail(ENOSYS); }

  // --- Extended attributes (names are NUL-free, 1..255 bytes; values <= 64 KiB).
  virtual Result<XattrReply> getxattr(const Context&, InodeId, std::string_view /*name*/,
                                      uint32_t /*size*/) {
    return fail(ENOSYS);
  }
  /// `flags` are XATTR_CREATE / XATTR_REPLACE; `setxattr_flags` FUSE_SETXATTR_*
  /// (SETXATTR_EXT layout), 0 otherwise.
  virtual VoidResult setxattr(const Context&, InodeId, std::string_view /*name*/,
                              std::string_view /*value*/, uint32_t /*flags*/,
                              uint32_t /*setxattr_flags*/) {
    return fail(ENOSYS);
  }
  virtual Result<XattrReply> listxattr(const Context&, InodeId, uint32_t /*size*/) {
    return fail(ENOSYS);
  }
  virtual VoidResult removexattr(const Context&, InodeId, std::string_view /*name*/) {
    return fail(ENOSYS);
  }

  // --- Data and special files.
  virtual Result<size_t> copy_file_range(const Context&, InodeId /*in*/, HandleId /*in_handle*/,
                                         uint64_t /*in_offset*/, InodeId /*out*/,
                                         HandleId /*out_handle*/, uint64_t /*out_offset*/,
                                         uint64_t /*length*/, uint64_t /*flags*/) {
    return fail(ENOSYS);
  }
  /// TMPFILE: an unnamed file in `parent`, opened; the entry carries one
  /// lookup reference.
  virtual Result<std::pair<Entry, OpenReply>> tmpfile(const Context&, InodeId /*parent*/, mode_t,
                                                      uint32_t /*flags*/, mode_t /*umask*/,
                                                      const Extensions&) {
    return fail(ENOSYS);
  }
  /// IOCTL on an open file. `in` holds the guest's input bytes, `out_size`
  /// the room for output. Unsupported commands answer ENOTTY.
  virtual Result<IoctlReply> ioctl(const Context&, InodeId, HandleId, uint32_t /*ioctl_flags*/,
                                   uint32_t /*cmd*/, std::string_view /*in*/,
                                   uint32_t /*out_size*/) {
    return fail(ENOSYS);
  }

  // --- Locks. `owner` is the guest's lock owner; `lock_flags` has
  // FUSE_LK_FLOCK for flock() (BSD) locks, else POSIX record locks.
  virtual Result<FileLock> getlk(const Context&, InodeId, HandleId, uint64_t /*owner*/,
                                 const FileLock&, uint32_t /*lock_flags*/) {
    return fail(ENOSYS);
  }
  /// SETLK: take or release a lock without waiting (EAGAIN if held).
  virtual VoidResult setlk(const Context&, InodeId, HandleId, uint64_t /*owner*/, const FileLock&,
                           uint32_t /*lock_flags*/) {
    return fail(ENOSYS);
  }
  /// SETLKW: take a lock, waiting as long as needed. It must not block the
  /// calling worker: return at once and call `done` exactly once, from any
  /// thread, when the lock is taken or the wait ends (EINTR on interrupt(),
  /// destroy() or a guest reset). `unique` identifies the request for
  /// interrupt().
  /// Pinned by: server_ops_test.cc(SetlkwTest.*),
  ///   locks_test.cc(LocksTest.InterruptEndsTheWaitWithEintrOnce,
  ///   LocksTest.DestroyEndsEveryWaitWithEintrOnce),
  ///   session_reset_test.cc(SessionReset.LockWaitsRacingWithResetsAllEndAndNoResetHangs)
  virtual void setlkw(const Context&, InodeId, HandleId, uint64_t /*owner*/, const FileLock&,
                      uint32_t /*lock_flags*/, uint64_t /*unique*/,
                      std::function<void(VoidResult)> done) {
    auto finish = std::move(done);
    finish(fail(ENOSYS));
  }
  /// INTERRUPT: ends the wait of the request `unique` if it is still waiting.
  virtual void interrupt(uint64_t /*unique*/) {}
};

}  // namespace vfsd::fuse
