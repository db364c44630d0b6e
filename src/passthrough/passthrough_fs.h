// PassthroughFs: serves a host directory to the guest through the
// fuse::FileSystem interface.
//
// Every host access is relative to an O_PATH fd of an inode the guest looked
// up, never by a path built from guest input; host symlinks are never
// followed. Unknown node ids and handles answer EBADF, like the Rust
// virtiofsd.
//
// Process requirements: the daemon runs as root with a process umask of 0
// (the guest's umask is applied by us; a host umask would apply on top), and
// /proc must be mounted when create() runs (the /proc/self/fd directory fd it
// opens is kept for the fs's lifetime, so a later pivot_root is fine).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "fuse/filesystem.h"
#include "passthrough/handle_table.h"
#include "passthrough/inode_store.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// --cache=never|metadata|auto|always
enum class CachePolicy { kNever, kMetadata, kAuto, kAlways };

/// --inode-file-handles=never|prefer|mandatory
enum class InodeFileHandles { kNever, kPrefer, kMandatory };

/// Everything the command line decides about the filesystem. Option names
/// are the Rust virtiofsd's (crosvm's for the last group).
struct PassthroughConfig {
  std::string shared_dir;
  CachePolicy cache = CachePolicy::kAuto;
  /// Flag submount roots (FUSE_ATTR_SUBMOUNT) when the guest supports it.
  bool announce_submounts = true;
  /// --readonly: the app wraps the fs in ReadOnlyFs; the passthrough itself
  /// then opens files with O_NOATIME wherever it may and never asks for
  /// writeback caching.
  bool readonly = false;
  bool writeback = false;         // --writeback (FUSE_WRITEBACK_CACHE)
  bool allow_direct_io = false;   // --allow-direct-io (else O_DIRECT is stripped)
  bool preserve_noatime = false;  // --preserve-noatime (else O_NOATIME is cleared)
  bool allow_mmap = false;        // --allow-mmap (FUSE_DIRECT_IO_ALLOW_MMAP)
  bool killpriv_v2 = false;       // --killpriv-v2 (FUSE_HANDLE_KILLPRIV_V2)
  bool xattr = false;             // --xattr (else xattr ops answer ENOSYS)
  bool posix_acl = false;         // --posix-acl (POSIX_ACL + DONT_MASK + SETXATTR_EXT)
  bool security_label = false;    // --security-label (FUSE_SECURITY_CTX)
  std::string xattrmap;           // --xattrmap rules; empty: names pass unchanged
  InodeFileHandles inode_file_handles = InodeFileHandles::kNever;
  bool posix_lock = false;  // --posix-lock: POSIX record locks forwarded as OFD locks
  bool flock = false;       // --flock: flock() forwarded as OFD locks
  // From crosvm's passthrough:
  bool ascii_casefold = false;           // --ascii-casefold
  bool rewrite_security_xattrs = false;  // --rewrite-security-xattrs
};

/// Entry/attr timeout for a cache policy (the Rust virtiofsd's values).
std::chrono::nanoseconds cache_timeout(CachePolicy policy);

class PassthroughFs final : public fuse::FileSystem {
 public:
  /// Opens the shared directory (O_PATH); fails with ENOTDIR if it is not a
  /// directory, or the open's errno.
  static Result<std::unique_ptr<PassthroughFs>> create(PassthroughConfig config);

  Result<fuse::InitReply> init(const fuse::InitRequest&) override;
  void destroy() override;

  Result<fuse::Entry> lookup(const fuse::Context&, fuse::InodeId parent,
                             const fuse::Name& name) override;
  void forget(fuse::InodeId, uint64_t count) override;
  void batch_forget(std::span<const std::pair<fuse::InodeId, uint64_t>> items) override;

  Result<fuse::AttrReply> getattr(const fuse::Context&, fuse::InodeId,
                                  std::optional<fuse::HandleId>) override;
  Result<fuse::AttrReply> setattr(const fuse::Context&, fuse::InodeId,
                                  const fuse::SetattrRequest&) override;
  Result<std::string> readlink(const fuse::Context&, fuse::InodeId) override;
  Result<fuse::Entry> symlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                              std::string_view target) override;
  Result<fuse::Entry> mknod(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, dev_t rdev, mode_t umask) override;
  Result<fuse::Entry> mkdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, mode_t umask) override;
  VoidResult unlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rmdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rename(const fuse::Context&, fuse::InodeId old_parent, const fuse::Name& old_name,
                    fuse::InodeId new_parent, const fuse::Name& new_name, uint32_t flags) override;
  Result<fuse::Entry> link(const fuse::Context&, fuse::InodeId inode, fuse::InodeId new_parent,
                           const fuse::Name& name) override;

  Result<fuse::OpenReply> open(const fuse::Context&, fuse::InodeId, uint32_t flags) override;
  Result<std::pair<fuse::Entry, fuse::OpenReply>> create(const fuse::Context&, fuse::InodeId parent,
                                                         const fuse::Name& name, mode_t mode,
                                                         uint32_t flags, mode_t umask) override;
  Result<size_t> read(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecWriter& out,
                      uint32_t size, uint64_t offset) override;
  Result<size_t> write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader& in,
                       uint32_t size, uint64_t offset, uint32_t write_flags) override;
  VoidResult flush(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                   uint64_t lock_owner) override;
  VoidResult fsync(const fuse::Context&, fuse::InodeId, fuse::HandleId, bool datasync) override;
  VoidResult release(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t flags) override;
  Result<struct statvfs> statfs(const fuse::Context&, fuse::InodeId) override;
  VoidResult access(const fuse::Context&, fuse::InodeId, uint32_t mask) override;
  Result<uint64_t> lseek(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t offset,
                         uint32_t whence) override;
  VoidResult fallocate(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t mode,
                       uint64_t offset, uint64_t length) override;
  VoidResult syncfs(const fuse::Context&, fuse::InodeId) override;

  Result<fuse::OpenReply> opendir(const fuse::Context&, fuse::InodeId, uint32_t flags) override;
  VoidResult readdir(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t offset,
                     bool plus, fuse::DirSink& sink) override;
  VoidResult fsyncdir(const fuse::Context&, fuse::InodeId, fuse::HandleId, bool datasync) override;
  VoidResult releasedir(const fuse::Context&, fuse::InodeId, fuse::HandleId) override;

  /// Inodes currently known (root included). For tests and diagnostics.
  size_t inode_count() const { return inodes_.size(); }
  /// Lookup references held on `inode`. For tests and diagnostics.
  uint64_t lookup_count(fuse::InodeId inode) const { return inodes_.refcount(inode); }
  /// Open handles. For tests and diagnostics.
  size_t handle_count() const { return handles_.size(); }

 private:
  PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd);

  Result<std::shared_ptr<const InodeData>> inode(fuse::InodeId id) const;
  Result<std::shared_ptr<HandleData>> handle(fuse::HandleId id, fuse::InodeId inode) const;
  // Registers an O_PATH fd found under `parent` and answers its entry (one
  // lookup reference taken).
  Result<fuse::Entry> register_inode(const InodeData& parent, UniqueFd path_fd);
  // Opens `name` under `parent` with O_PATH|O_NOFOLLOW and registers it.
  Result<fuse::Entry> lookup_child(const InodeData& parent, const char* name);
  fuse::Entry entry_for(const InodeData& data, const struct stat& st, uint32_t attr_flags) const;
  // Reopens an inode for I/O through /proc/self/fd (regular files and
  // directories only).
  Result<UniqueFd> reopen(const InodeData& data, int flags) const;
  uint32_t open_reply_flags(bool directory) const;

  PassthroughConfig config_;
  UniqueFd proc_self_fd_;  // O_PATH of /proc/self/fd
  std::chrono::nanoseconds timeout_;
  std::atomic<bool> submounts_active_{false};
  InodeStore inodes_;
  HandleTable handles_;
};

}  // namespace vfsd::passthrough
