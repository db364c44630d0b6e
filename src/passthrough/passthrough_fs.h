// PassthroughFs: serves a host directory to the guest through the
// fuse::FileSystem interface.
//
// Every host access is relative to an O_PATH fd of an inode the guest looked
// up, never by a path built from guest input; every name is one component,
// opened through open_beneath() (openat2 with RESOLVE_BENEATH and no symlinks
// or magic links, or its checked openat equivalent: safe_open.h), so host
// symlinks are never followed and lookups stay in the share with or without
// a sandbox. Only regular files and directories are ever opened for I/O
// (reopen()). Unknown node ids and handles answer EBADF, like the Rust
// virtiofsd. What the guest can make the daemon hold is bounded: host fds by
// guest_fd_limit, inodes kept as file handles by handle_inode_limit (ENFILE
// past either).
//
// Process requirements: the daemon runs as root with a process umask of 0
// (the guest's umask is applied by us; a host umask would apply on top), and
// /proc must be mounted when create() runs (the /proc/self/fd directory fd it
// opens is kept for the fs's lifetime, so a later pivot_root is fine).
// Pinned by: escape_test.cc(EscapeTest.*), dotdot_escape_test.cc(DotDotTest.*),
//   special_files_test.cc(SpecialFilesTest.*), fd_budget_test.cc(FdBudgetTest.*),
//   run_escape_test.sh
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "fuse/filesystem.h"
#include "migration/state.h"
#include "passthrough/budget.h"
#include "passthrough/credentials.h"
#include "passthrough/deletion_watch.h"
#include "passthrough/handle_table.h"
#include "passthrough/id_map.h"
#include "passthrough/inode_store.h"
#include "passthrough/locks.h"
#include "passthrough/xattr_map.h"
#include "util/result.h"
#include "util/thread_slots.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// --cache=never|metadata|auto|always
enum class CachePolicy { kNever, kMetadata, kAuto, kAlways };

/// --inode-file-handles=never|prefer|mandatory
enum class InodeFileHandles { kNever, kPrefer, kMandatory };

/// The cap on inodes kept as file handles when PassthroughConfig leaves it at
/// 0. Such an inode holds no fd, only memory. Heap bytes measured on x86_64
/// (glibc 2.36, release build; MemoryTest in tests/unit/passthrough/
/// budget_test.cc prints them): 441 per inode kept as a file handle (its
/// 128-byte handle buffer included), 266 per inode that holds an O_PATH fd,
/// 169 per open handle (plus, for fds, the kernel's struct file and the
/// dentry and inode it pins). A million is the Rust virtiofsd's default
/// RLIMIT_NOFILE target, so the guest can hold as many inodes with handles as
/// it could with fds, in about 420 MiB of heap.
///
/// The ceiling on what a guest can make the daemon hold, then: guest_fd_limit
/// x 266 bytes (fd inodes, handles, lock owners, mount fds: each at most that)
/// + handle_inode_limit x 441 bytes + lock waiters (LockLimits::max_waiters
/// threads) + in-flight requests (bounded by the queues). With the app's
/// defaults (RLIMIT_NOFILE 1,000,000) about 250 MiB + 420 MiB.
inline constexpr uint64_t kDefaultHandleInodeLimit = 1'000'000;

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
  /// --translate-uid / --translate-gid (empty: ids pass unchanged). Applied
  /// where the Rust virtiofsd applies them: the caller's uid, gid and
  /// supplementary groups a request runs under, the owner a SETATTR sets,
  /// the owner of every attribute returned, and ACCESS (guest ids compared
  /// with the translated owner). A forbid-guest id fails the request with
  /// EPERM. Incompatible with --posix-acl (ACL entries hold untranslated ids).
  /// Pinned by: id_translation_test.cc(IdTranslationTest.*),
  ///   config_test.cc(CommandLine.TranslateConflictsWithPosixAcl)
  IdMap uid_map;
  IdMap gid_map;

  // Bounded resources.
  /// How many host fds the guest can make the daemon hold at once: the O_PATH
  /// fd of each inode it looked up (the root excepted), each open file or
  /// directory handle, each lock owner's description and each fd of a host
  /// mount it reached. Past it the request that needs one more answers
  /// ENFILE (ENOLCK for a lock) and everything else goes on. 0: unlimited.
  /// The app sets it to RLIMIT_NOFILE minus an internal reserve, as the Rust
  /// virtiofsd does (INTERNAL_FD_RESERVE: one fd per memory slot plus 100,
  /// plus kThreadFdReserve for the worker threads): the reserve keeps room for the daemon's
  /// own fds (vhost-user socket, eventfds, memory regions, the per-request
  /// fds a request opens and closes again, which are not charged).
  /// Pinned by: fd_budget_test.cc(FdBudgetTest.*),
  ///   capabilities_test.cc(RlimitNofile.TheGuestBudgetIsTheLimitLessTheReserve)
  uint64_t guest_fd_limit = 0;
  /// How many inodes kept as file handles (--inode-file-handles) the guest
  /// can make the daemon remember; they hold no fd, so this bounds memory.
  /// Past it a LOOKUP of a new inode answers ENFILE. 0: the default,
  /// kDefaultHandleInodeLimit.
  uint64_t handle_inode_limit = 0;
  /// How many handle inodes may carry an inotify mark that proves them alive
  /// to a lookup (DeletionWatch); the app derives it from the host's
  /// max_user_watches. 0: none, every lookup of a known handle inode takes
  /// the second walk (name_to_handle_at).
  uint64_t deletion_mark_limit = 0;
};

/// Entry/attr timeout for a cache policy (the Rust virtiofsd's values).
std::chrono::nanoseconds cache_timeout(CachePolicy policy);

/// Checks the options that can be wrong in themselves (the --xattrmap rules). On failure `message`
/// says what is wrong, naming the offending rule, and the errno is EINVAL. PassthroughFs::create()
/// fails with the same errno, so the app calls this first to print the message.
VoidResult validate_config(const PassthroughConfig& config, std::string& message);

class PassthroughFs final : public fuse::FileSystem {
 public:
  /// Opens the shared directory (O_PATH); fails with ENOTDIR if it is not a
  /// directory, or the open's errno. `proc_self_fd` is an fd of the
  /// process's /proc/self/fd directory that stays usable for reopening
  /// (the sandbox provides one that works after pivot_root); without it
  /// /proc/self/fd is opened here.
  static Result<std::unique_ptr<PassthroughFs>> create(PassthroughConfig config,
                                                       UniqueFd proc_self_fd = UniqueFd());

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
                              std::string_view target, const fuse::Extensions&) override;
  Result<fuse::Entry> mknod(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, dev_t rdev, mode_t umask,
                            const fuse::Extensions&) override;
  Result<fuse::Entry> mkdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, mode_t umask, const fuse::Extensions&) override;
  VoidResult unlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rmdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rename(const fuse::Context&, fuse::InodeId old_parent, const fuse::Name& old_name,
                    fuse::InodeId new_parent, const fuse::Name& new_name, uint32_t flags) override;
  Result<fuse::Entry> link(const fuse::Context&, fuse::InodeId inode, fuse::InodeId new_parent,
                           const fuse::Name& name) override;

  Result<fuse::OpenReply> open(const fuse::Context&, fuse::InodeId, uint32_t flags,
                               bool kill_suidgid) override;
  Result<std::pair<fuse::Entry, fuse::OpenReply>> create(const fuse::Context&, fuse::InodeId parent,
                                                         const fuse::Name& name, mode_t mode,
                                                         uint32_t flags, mode_t umask,
                                                         bool kill_suidgid,
                                                         const fuse::Extensions&) override;
  Result<size_t> read(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecWriter& out,
                      uint32_t size, uint64_t offset) override;
  Result<size_t> write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader& in,
                       uint32_t size, uint64_t offset, uint32_t write_flags,
                       std::optional<uint32_t> file_flags) override;
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

  // Extended attributes (xattr.cc). ENOSYS unless config.xattr.
  Result<fuse::XattrReply> getxattr(const fuse::Context&, fuse::InodeId, std::string_view name,
                                    uint32_t size) override;
  VoidResult setxattr(const fuse::Context&, fuse::InodeId, std::string_view name,
                      std::string_view value, uint32_t flags, uint32_t setxattr_flags) override;
  Result<fuse::XattrReply> listxattr(const fuse::Context&, fuse::InodeId, uint32_t size) override;
  VoidResult removexattr(const fuse::Context&, fuse::InodeId, std::string_view name) override;

  /// copy_file_range(2) between two open handles, under the guest's
  /// credentials.
  Result<size_t> copy_file_range(const fuse::Context&, fuse::InodeId in, fuse::HandleId in_handle,
                                 uint64_t in_offset, fuse::InodeId out, fuse::HandleId out_handle,
                                 uint64_t out_offset, uint64_t length, uint64_t flags) override;
  /// An unnamed (O_TMPFILE) file in `parent`, made under the guest's
  /// credentials, registered as an inode and opened.
  Result<std::pair<fuse::Entry, fuse::OpenReply>> tmpfile(const fuse::Context&,
                                                          fuse::InodeId parent, mode_t mode,
                                                          uint32_t flags, mode_t umask,
                                                          const fuse::Extensions&) override;
  /// ioctl.cc: FS_IOC_GETFLAGS/SETFLAGS (32 and 64 bit), FS_IOC_FSGETXATTR/
  /// FSSETXATTR and FS_IOC_GET_ENCRYPTION_POLICY_EX on an open handle; the
  /// setting ones run under the guest's credentials. Anything else ENOTTY.
  Result<fuse::IoctlReply> ioctl(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                                 uint32_t ioctl_flags, uint32_t cmd, std::string_view in,
                                 uint32_t out_size) override;

  // Locks (locks.cc): forwarded to the host as OFD locks (POSIX, with
  // --posix-lock) and flock() (with --flock); ENOSYS without the option.
  Result<fuse::FileLock> getlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
                               const fuse::FileLock&, uint32_t lock_flags) override;
  VoidResult setlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
                   const fuse::FileLock&, uint32_t lock_flags) override;
  void setlkw(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
              const fuse::FileLock&, uint32_t lock_flags, uint64_t unique,
              std::function<void(VoidResult)> done) override;
  void interrupt(uint64_t unique) override;
  // Migration (migration.cc).
  /// --migration-* as the passthrough uses them.
  struct MigrationOptions {
    bool file_handles = false;    // --migration-mode=file-handles (else find-paths)
    bool verify_handles = false;  // --migration-verify-handles
    bool abort_on_error = true;   // --migration-on-error=abort (else guest-error)
  };
  /// A migration's source (the rings are stopped): every inode the guest
  /// holds, with how the destination finds it again, and every open handle,
  /// into `out` (inodes, handles, next ids). An inode that cannot be
  /// described becomes a kInvalid record (the destination's
  /// --migration-on-error decides). Refused (EBUSY, logged) while the guest
  /// holds or waits for a forwarded lock: a lock cannot move to another
  /// process, and dropping it silently would break the guest's program.
  /// Pinned by: migration_test.cc(MigrationTest.*)
  VoidResult save_migration_state(const MigrationOptions& options, migration::State& out);
  /// A migration's destination, before the guest's first request: recreates
  /// the source's inodes (same node ids and lookup counts) and handles (same
  /// ids, reopened with their flags). An inode that cannot be found or is not
  /// the source's (a different type, or with verify_handles a different file
  /// handle) fails the whole load with abort_on_error (nothing stays), else
  /// stays unknown here and the guest's requests on it fail (EBADF), as do
  /// those on its handles. EBUSY if this daemon serves inodes already.
  VoidResult load_migration_state(const MigrationOptions& options, const migration::State& in);
  /// Preparation, while the guest still runs (find-paths): finds the path of
  /// every inode the guest holds now, the share searched where
  /// /proc/self/fd has none, so that the switch-over only confirms each
  /// (one walk and a statx) instead of finding it. Stops early once `cancel`
  /// is set. Safe beside requests.
  /// Pinned by: migration_test.cc(MigrationTest.PreparedPathsAreConfirmedAtTheSwitchOver)
  void prepare_migration(const MigrationOptions& options, const std::atomic<bool>& cancel);
  /// Forgets what prepare_migration found (the migration ended).
  void drop_migration_preparation();
  /// Inodes with a prepared path. For tests and diagnostics.
  size_t prepared_path_count() const;

  /// SETLKW requests waiting for a lock. For tests and diagnostics.
  size_t lock_waiter_count() const { return locks_.waiter_count(); }

  /// Inodes currently known (root included). For tests and diagnostics.
  size_t inode_count() const { return inodes_.size(); }
  /// LOOKUPs answered by recognising a stored inode (lookup_known), for
  /// tests and diagnostics.
  uint64_t lookups_recognised() const {
    uint64_t sum = 0;
    lookups_recognised_.for_each(
        [&](const OwnedCounter& slot) { sum += slot.value.load(std::memory_order_relaxed); });
    return sum;
  }
  /// Handle inodes with an inotify mark (DeletionWatch). For tests and
  /// diagnostics.
  size_t inode_marks() const { return deletion_watch_ ? deletion_watch_->marks() : 0; }
  /// Lookup references held on `inode`. For tests and diagnostics.
  uint64_t lookup_count(fuse::InodeId inode) const { return inodes_.refcount(inode); }
  /// Open handles. For tests and diagnostics.
  size_t handle_count() const { return handles_.size(); }
  /// Host fds held for the guest now, and their limit (0: unlimited); see
  /// PassthroughConfig::guest_fd_limit. For tests and diagnostics.
  uint64_t fd_budget_used() const { return fd_budget_.used(); }
  uint64_t fd_budget_limit() const { return fd_budget_.limit(); }
  /// Inodes kept as file handles now, and their limit.
  uint64_t handle_inodes_used() const { return handle_inode_budget_.used(); }
  uint64_t handle_inodes_limit() const { return handle_inode_budget_.limit(); }
  /// The host name a guest's security.capability is stored under when the
  /// xattr options move it (empty when they do not: the host kernel then
  /// clears it itself). For tests and diagnostics.
  const std::string& remapped_capability_xattr() const { return capability_xattr_; }

 private:
  friend class XattrTestPeer;  // tests of the xattr.cc creation helpers
  PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd);

  Result<std::shared_ptr<const InodeData>> inode(fuse::InodeId id) const;
  // migration.cc: one record for the source; the fd or handle for the
  // destination (with its host stat), or why not.
  // `prepared`: the path preparation found, used if it still names the inode.
  migration::InodeRecord describe_inode(const MigrationOptions& options, const InodeData& data,
                                        uint64_t lookups, const std::string& root_path,
                                        const std::string* prepared = nullptr);
  // What /proc/self/fd shows for the shared directory, '/'-terminated.
  Result<std::string> root_proc_path() const;
  // Whether `path` below the share names the inode `data` now.
  bool path_names(const std::string& path, const InodeData& data) const;
  Result<UniqueFd> find_migrated_inode(const MigrationOptions& options,
                                       const migration::InodeRecord& record, std::string& why);
  // Whether any forwarded lock is held or waited for (the reason in `why`).
  bool locks_in_use(std::string& why);
  Result<std::shared_ptr<HandleData>> handle(fuse::HandleId id, fuse::InodeId inode) const;
  // Registers an O_PATH fd found under `parent` (or, with `parent_lookup`,
  // found as the parent of `parent`) and answers its entry (one lookup
  // reference taken). A new fd inode takes its budget unit from `prepaid`
  // if that has one, else from the fd budget (ENFILE past it).
  Result<fuse::Entry> register_inode(const InodeData& parent, UniqueFd path_fd,
                                     bool parent_lookup = false, Budget::Charge* prepaid = nullptr);
  // register_inode's last step, once the stat and the handle (if any) are
  // known: the store's reference, and the entry answered. `path_fd` may be
  // empty with a handle on a mount the store knows (insert_or_ref).
  Result<fuse::Entry> store_inode(const InodeData& parent, UniqueFd path_fd, const struct stat& st,
                                  uint64_t mnt_id, std::optional<FileHandle> handle,
                                  bool parent_lookup, Budget::Charge* prepaid);
  // LOOKUP of ".." below the root: the real parent, if it is inside the share.
  Result<fuse::Entry> lookup_parent(const InodeData& dir);
  // ENOENT unless the directory `dir_fd` is the share's root or below it.
  VoidResult check_inside_share(int dir_fd) const;
  // Opens `name` under `parent` with O_PATH|O_NOFOLLOW (open_beneath) and
  // registers it; an inode already known is recognised without that open
  // (lookup_known).
  // Pinned by: file_handle_test.cc(FileHandleTest.KnownInode*)
  Result<fuse::Entry> lookup_child(const InodeData& parent, const char* name,
                                   Budget::Charge* prepaid = nullptr);
  // The full way of lookup_child: open_beneath, then register_inode.
  Result<fuse::Entry> register_child(const InodeData& parent, const char* name,
                                     Budget::Charge* prepaid = nullptr);
  // The entry (one lookup reference taken) of the stored inode that `name`
  // under `parent` names, given the name's stat `st` (with its mount id), or
  // nullopt when no stored inode is provably that object.
  std::optional<fuse::Entry> lookup_known(const InodeData& parent, const char* name,
                                          const struct stat& st, uint64_t mnt_id);
  // Gives a handle inode the guest looked up again its inotify mark, if
  // the watch wants one.
  void mark_looked_up_again(const InodeData& data);
  // FUSE_ATTR_SUBMOUNT when `data` (stat `st` on mount `mnt_id`) is a
  // submount root seen from `parent`; records it as one.
  uint32_t entry_attr_flags(const InodeData& parent, const InodeData& data, const struct stat& st,
                            uint64_t mnt_id, bool parent_lookup);
  fuse::Entry entry_for(const InodeData& data, const struct stat& st, uint32_t attr_flags) const;
  // Reopens an inode for I/O through /proc/self/fd. Regular files and
  // directories only (CVE-2020-35517): opening a FIFO blocks, a device acts
  // on the host, a socket cannot be opened, a symlink must not be followed.
  // Every real fd of an inode the passthrough makes on the guest's behalf
  // comes from here, or from a reopen of an fd made here (lock owners), or
  // from a creation that can only make a regular file or a directory.
  // Pinned by: special_files_test.cc(SpecialFilesTest.*),
  //   xattr_test.cc(XattrTest.FifoIsNeverOpened)
  Result<UniqueFd> reopen(const InodeData& data, int flags) const;
  uint32_t open_reply_flags(bool directory) const;
  // The host's owner fields of `st` as the guest sees them (--translate-*).
  void owner_to_guest(struct stat& st) const;

  // Enters the guest's uid, gid and supplementary groups (those a creating
  // request carries; none otherwise) on this thread, translated to the
  // host's (EPERM for a forbid-guest id).
  Result<ScopedCredentials> guest_credentials(const fuse::Context& ctx,
                                              std::span<const gid_t> groups = {}) const;
  // Runs `fn` (returning a Result) under the guest's credentials and returns
  // what it returns; the daemon's own are back before the caller goes on.
  template <class Fn>
  auto as_caller(const fuse::Context& ctx, std::span<const gid_t> groups, Fn&& fn) const
      -> decltype(fn()) {
    VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, groups));
    return fn();
  }

  // READDIR(PLUS): the getdents64 `records` into `sink` (with a lookup of
  // each entry in `plus_dir` for READDIRPLUS, null for READDIR); `added` is
  // set once one entry went in. kFull when the sink has no room left.
  enum class DirFill { kMore, kFull };
  // `consumed` is how far into `records` it went (whole records), `cookie`
  // the d_off of the last record consumed (unchanged if none).
  Result<DirFill> add_dirents(std::span<const char> records, const InodeData* plus_dir,
                              fuse::DirSink& sink, bool& added, size_t& consumed, uint64_t& cookie);

  // SETATTR's FATTR_UID/GID (translated to the host's ids) and FATTR_SIZE
  // (through the open handle if the guest named one).
  VoidResult set_owner(const InodeData& data, const fuse::SetattrRequest& req);
  VoidResult set_size(const InodeData& data, const HandleData* open_file, uint64_t size);

  // The shared first steps of the five creating operations (symlink, mknod,
  // mkdir, create, tmpfile): the new name checked (when there is one), the
  // parent a directory, and `fd_units` of the fd budget reserved for what
  // the operation will hold, all before anything changes on the host.
  // Pinned by: safe_create_test.cc(SafeCreateTest.*),
  //   fd_budget_test.cc(FdBudgetTest.CreatingPastTheBudgetCreatesNothing),
  //   xattr_test.cc(XattrTest.SecurityContextStoredThroughTheMap)
  struct CreationSite {
    std::shared_ptr<const InodeData> dir;
    Budget::Charge charge;
  };
  Result<CreationSite> prepare_creation(fuse::InodeId parent, const fuse::Name* name,
                                        uint64_t fd_units = 1);
  // The last steps for a node made by name (symlink, a special file): its
  // label, or its removal if labelling fails, then its lookup.
  Result<fuse::Entry> finish_named_creation(CreationSite& site, const fuse::Name& name,
                                            const fuse::Extensions& ext);
  // The last step for a node made as an fd (a file, a directory): that very
  // inode is registered, not whatever has the name by the time a lookup ran.
  Result<fuse::Entry> register_created(CreationSite& site, const UniqueFd& fd);
  // CREATE of a name that exists, without O_EXCL: opened as OPEN would be.
  Result<std::pair<fuse::Entry, fuse::OpenReply>> open_existing_for_create(
      const fuse::Context& ctx, const fuse::Extensions& ext, CreationSite& site,
      const fuse::Name& name, int open_flags, uint32_t guest_flags, bool kill_suidgid);
  // Host open flags for a guest OPEN/CREATE/OPENDIR (the Rust virtiofsd's
  // rules: O_APPEND handled per write, O_DIRECT only with --allow-direct-io,
  // O_NOATIME only with --preserve-noatime, O_WRONLY widened to O_RDWR under
  // writeback caching), without O_NOATIME for read-only mode (reopen_io adds it).
  // Pinned by: semantics_test.cc(SemanticsTest.WritebackOpensWriteOnlyFilesForReading,
  //   SemanticsTest.AppendIsHandledPerWriteNotOnTheHostFd,
  //   SemanticsTest.DirectIoAndNoatimeFollowTheOptions)
  int io_open_flags(uint32_t guest_flags) const;
  // reopen() for a handle the guest gets: in read-only mode reads leave the
  // host's access times alone (O_NOATIME, dropped again where refused).
  Result<UniqueFd> reopen_io(const InodeData& data, int flags) const;
  // A handle for `inode` around `fd`, remembering the guest's O_APPEND;
  // `charge` is its unit of the fd budget (taken before `fd` was opened).
  fuse::OpenReply insert_handle(fuse::InodeId inode, UniqueFd fd, bool is_dir, uint32_t guest_flags,
                                Budget::Charge charge);
  // xattr.cc. CVE-2021-20263: when the xattr options store the guest's
  // security.capability under another host name, the host kernel no longer
  // clears it on a write, truncation or chown, so we do, as Linux would
  // (before the change, as Linux does). On `io_fd`, a real fd of the inode;
  // or on `data` by its magic link, path-based, so that nothing is opened
  // (for chown, of any type). No-op without such a mapping, and when the
  // inode has no such xattr.
  // Pinned by: capability_xattr_test.cc(CapabilityXattrTest.*, CapabilityXattrUnmappedTest.*)
  VoidResult clear_remapped_capability(int io_fd) const;
  VoidResult clear_remapped_capability(const InodeData& data) const;
  // --ascii-casefold: `name` in `parent` by a case-insensitive scan.
  Result<fuse::Entry> lookup_casefold(const InodeData& parent, std::string_view name);
  // Remembers a directory that is the root of a mount other than its
  // parent's, so that SYNCFS of the shared root can reach it.
  void note_mount_root(fuse::InodeId id, uint64_t mnt_id);
  // SYNCFS: the filesystem of `data` and, when the guest sees the whole tree
  // as one filesystem (no submounts announced) and asks for the root, every
  // other mount the guest has reached.
  // Pinned by: semantics_test.cc(SemanticsTest.SyncfsOfTheRootReachesSubmountsTheGuestDoesNotSee),
  //   file_handle_test.cc(FileHandleTest.SyncfsOfTheRootReachesTheMountsTheGuestReached)
  VoidResult syncfs_all(const InodeData& data);
  // Before `name` in `dir_fd` is unlinked or renamed over: a handle inode
  // of what it names keeps an fd, so the guest can still reach it.
  void keep_fd_of_victim(int dir_fd, const char* name);

  // safe_create.cc. A regular file `name` in `dir`, complete (owner, mode,
  // label) before it is linked in; returns it open O_RDWR with the status
  // flags of `io_flags`. EEXIST if the name exists.
  // Pinned by: safe_create_test.cc(SafeCreateTest.*)
  Result<UniqueFd> create_file_safely(const fuse::Context& ctx, const fuse::Extensions& ext,
                                      const InodeData& dir, const fuse::Name& name, mode_t mode,
                                      int io_flags);
  // A directory `name` in `dir`, complete before it is renamed into place;
  // returns its O_PATH fd.
  Result<UniqueFd> mkdir_safely(const fuse::Context& ctx, const fuse::Extensions& ext,
                                const InodeData& dir, const fuse::Name& name, mode_t mode);

  // xattr.cc. Stores ext.security_context (if any) as an xattr of the new
  // node `fd` (O_PATH or real), through the xattr map; no-op without one.
  // On failure the caller removes the node again.
  VoidResult apply_security_context(const UniqueFd& fd, const fuse::Extensions& ext);
  // The mode bits a new node gets: `umask` applied unless --posix-acl is on
  // and the parent directory `parent_fd` has a default ACL (with DONT_MASK
  // the guest kernel left the umask to us, and a default ACL replaces it).
  // Call it with the daemon's credentials, before switching to the guest's.
  // Pinned by: xattr_test.cc(XattrTest.CreateModeAppliesUmaskUnlessParentHasDefaultAcl)
  mode_t effective_create_mode(const UniqueFd& parent_fd, mode_t mode, mode_t umask) const;
  // xattr.cc. init() part for --posix-acl and --security-label; returns the
  // session flags it decided (kPosixAcl).
  uint32_t init_xattr(const fuse::InitRequest& request, fuse::InitReply& reply);

  // What the guest agreed to at INIT (session_flags_).
  enum SessionFlag : uint32_t {
    kSubmounts = 1u << 0,   // submount roots are flagged (FUSE_SUBMOUNTS)
    kWriteback = 1u << 1,   // --writeback and the guest agreed
    kKillprivV2 = 1u << 2,  // --killpriv-v2 and the guest agreed
    kSuppGroup = 1u << 3,   // the guest sends supplementary groups
    kPosixAcl = 1u << 4,    // --posix-acl and the guest agreed
  };
  bool session_has(SessionFlag flag) const {
    return (session_flags_.load(std::memory_order_relaxed) & flag) != 0;
  }
  // Guest xattr name -> host name (ACL gate, --rewrite-security-xattrs,
  // --xattrmap), and back for listxattr (nullopt: hidden from the guest).
  Result<std::string> xattr_name_to_host(std::string_view guest_name) const;
  std::optional<std::string> xattr_name_to_guest(std::string_view host_name) const;

  PassthroughConfig config_;
  // Declared before everything that holds charges (inodes, handles, lock
  // owners, mount fds), so destroyed after them.
  Budget fd_budget_;
  Budget handle_inode_budget_;
  UniqueFd proc_self_fd_;  // O_PATH of /proc/self/fd
  // The host name of the guest's security.capability if the xattr options
  // move it elsewhere (see clear_remapped_capability); empty otherwise.
  std::string capability_xattr_;
  XattrMap xattr_map_;  // parsed config_.xattrmap (empty: names pass unchanged)
  std::chrono::nanoseconds timeout_;
  // SessionFlag bits of the session INIT opened: published by init() and
  // cleared by destroy() in one store each, so no request sees half of one
  // session's flags and half of another's.
  std::atomic<uint32_t> session_flags_{0};
  std::mutex mount_roots_mutex_;
  // prepare_migration's paths by node id.
  mutable std::mutex prepared_mutex_;
  std::unordered_map<uint64_t, std::string> prepared_paths_;
  std::map<uint64_t, fuse::InodeId> mount_roots_;  // mount id -> a root the guest reached
  // Per thread: a shared counter would cost every lookup a locked instruction.
  struct OwnedCounter {
    std::atomic<uint64_t> value{0};
  };
  ThreadSlots<OwnedCounter> lookups_recognised_;
  // Null in never mode, or when inotify is unavailable.
  std::unique_ptr<DeletionWatch> deletion_watch_;
  InodeStore inodes_;
  HandleTable handles_;
  // Declared last: destroyed first, ending lock waits while everything they
  // use is still there.
  LockManager locks_{proc_self_fd_.get(),
                     LockLimits{.read_only = config_.readonly, .fd_budget = &fd_budget_}};
};

}  // namespace vfsd::passthrough
