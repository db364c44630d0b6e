// PassthroughFs: extended attributes (--xattr, --xattrmap, --posix-acl,
// --security-label, --rewrite-security-xattrs).
//
// As in the Rust virtiofsd, xattr calls run with the daemon's credentials:
// the guest kernel has already checked the caller's right to the namespace.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "fuse/abi_ext.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/safe_open.h"

namespace vfsd::passthrough {

namespace {

// Linux's limits on one value (XATTR_SIZE_MAX) and on a name list
// (XATTR_LIST_MAX): a guest asking for more could not get more, and must not
// make us allocate more.
constexpr size_t kMaxValueSize = 64 * 1024;
constexpr size_t kMaxListSize = 64 * 1024;
constexpr size_t kMaxNameSize = 255;  // XATTR_NAME_MAX

constexpr std::string_view kAclAccess = "system.posix_acl_access";
constexpr std::string_view kAclDefault = "system.posix_acl_default";
constexpr std::string_view kTrustedPrefix = "trusted.";
constexpr std::string_view kSecurityPrefix = "security.";
constexpr std::string_view kSelinux = "security.selinux";
// --rewrite-security-xattrs (crosvm): where guest security.* names live.
constexpr std::string_view kRewritePrefix = "user.virtiofs.";

bool is_acl_name(std::string_view name) {
  return name == kAclAccess || name == kAclDefault;
}

VoidResult check_name(std::string_view name) {
  if (name.empty() || name.find('\0') != std::string_view::npos) return fail(EINVAL);
  if (name.size() > kMaxNameSize) return fail(ERANGE);
  return ok();
}

// Where an xattr call on one inode goes. Regular files and directories get a
// real fd, reopened through /proc/self/fd (the *xattr calls refuse O_PATH
// fds). Other inodes cannot be opened safely (a FIFO blocks, a device may act,
// a symlink would be followed), so they are named by their entry in
// /proc/self/fd: following that magic link ends at the inode the O_PATH fd
// holds, a symlink's own inode included. Before Linux 6.13 the path-based
// calls have no *at form, so the thread's (unshared) working directory moves
// to /proc/self/fd for the call and back afterwards.
class XattrTarget {
 public:
  static Result<XattrTarget> open(int proc_self_fd, const UniqueFd& path_fd, mode_t type) {
    XattrTarget target;
    ProcFdName name(path_fd);
    std::snprintf(target.name_, sizeof(target.name_), "%s", name.c_str());
    if (S_ISREG(type) || S_ISDIR(type)) {
      VFSD_ASSIGN_OR_RETURN(auto fd,
                            reopen_own_fd(proc_self_fd, path_fd, O_RDONLY | O_NONBLOCK | O_NOCTTY));
      target.fd_ = std::move(fd);
      return target;
    }
    VFSD_ASSIGN_OR_RETURN(auto cwd, ProcFdWorkingDirectory::enter(proc_self_fd));
    target.cwd_.emplace(std::move(cwd));
    return target;
  }

  /// Wraps an fd the caller owns (a real one: the *xattr calls work on it).
  static XattrTarget borrow(int fd) {
    XattrTarget target;
    target.borrowed_ = fd;
    return target;
  }

  XattrTarget(XattrTarget&&) = default;
  XattrTarget& operator=(XattrTarget&&) = delete;

  /// The fd the f*xattr calls use, or -1 for the path-based calls.
  int fd() const { return borrowed_ >= 0 ? borrowed_ : fd_.get(); }
  /// The name of the inode inside /proc/self/fd.
  const char* proc_name() const { return name_; }

  ssize_t get(const char* name, void* buf, size_t size) const {
    return fd() >= 0 ? ::fgetxattr(fd(), name, buf, size) : ::getxattr(name_, name, buf, size);
  }
  ssize_t list(char* buf, size_t size) const {
    return fd() >= 0 ? ::flistxattr(fd(), buf, size) : ::listxattr(name_, buf, size);
  }
  int set(const char* name, std::string_view value, int flags) const {
    return fd() >= 0 ? ::fsetxattr(fd(), name, value.data(), value.size(), flags)
                     : ::setxattr(name_, name, value.data(), value.size(), flags);
  }
  int remove(const char* name) const {
    return fd() >= 0 ? ::fremovexattr(fd(), name) : ::removexattr(name_, name);
  }
  int chmod(mode_t mode) const { return fd() >= 0 ? ::fchmod(fd(), mode) : ::chmod(name_, mode); }

 private:
  XattrTarget() = default;
  UniqueFd fd_;                                // reopened regular file or directory
  int borrowed_ = -1;                          // caller's real fd
  std::optional<ProcFdWorkingDirectory> cwd_;  // for the path-based calls
  char name_[16] = {};
};

}  // namespace

VoidResult validate_config(const PassthroughConfig& config, std::string& message) {
  if (!config.xattrmap.empty()) {
    VFSD_TRY(XattrMap::parse(config.xattrmap, &message));
  }
  return ok();
}

// --- name translation --------------------------------------------------------

Result<std::string> PassthroughFs::xattr_name_to_host(std::string_view guest_name) const {
  VFSD_TRY(check_name(guest_name));
  // Without negotiated ACL support the guest kernel does not enforce ACLs,
  // so it must not store any (Rust virtiofsd).
  if (is_acl_name(guest_name) && !session_has(kPosixAcl)) {
    return fail(ENOTSUP);
  }
  std::string name(guest_name);
  if (config_.rewrite_security_xattrs) {
    // The guest may not reach the stored copies under their own names.
    if (guest_name.starts_with(kRewritePrefix)) return fail(EPERM);
    if (guest_name.starts_with(kSecurityPrefix) && guest_name != kSelinux) {
      name.insert(0, kRewritePrefix);
    }
  }
  auto host = xattr_map_.to_host(name);
  // The host's trusted.* namespace is root's private store (overlayfs keeps
  // its whiteouts and redirects there). The Rust virtiofsd runs without
  // CAP_SYS_ADMIN, so a guest cannot reach it by its own name; only a name
  // the administrator's xattrmap moved there (e.g. security labels) may.
  if (host && host->starts_with(kTrustedPrefix) && *host == name) return fail(EPERM);
  return host;
}

std::optional<std::string> PassthroughFs::xattr_name_to_guest(std::string_view host_name) const {
  auto name = xattr_map_.to_guest(host_name);
  if (!name || name->empty()) return std::nullopt;
  if (host_name.starts_with(kTrustedPrefix) && *name == host_name) return std::nullopt;
  if (config_.rewrite_security_xattrs) {
    std::string_view view = *name;
    if (view.starts_with(kRewritePrefix)) {
      name = name->substr(kRewritePrefix.size());
      if (name->empty()) return std::nullopt;
    } else if (view.starts_with(kSecurityPrefix) && view != kSelinux) {
      // The host's own label: the guest's security.* names mean the
      // rewritten copies, so this one is not the guest's to see.
      return std::nullopt;
    }
  }
  if (is_acl_name(*name) && !session_has(kPosixAcl)) {
    return std::nullopt;
  }
  return name;
}

// --- session -------------------------------------------------------------------

uint32_t PassthroughFs::init_xattr(const fuse::InitRequest& request, fuse::InitReply& reply) {
  // Both options are refused outright (EPROTO) by a guest that lacks them,
  // as in the Rust virtiofsd: silently running without would store ACLs the
  // guest does not enforce, or create nodes without their labels.
  bool acl = false;
  if (config_.posix_acl) {
    constexpr uint64_t kAclFlags = FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT;
    reply.wanted_flags |= kAclFlags;
    reply.required_flags |= kAclFlags;
    acl = (request.kernel_flags & kAclFlags) == kAclFlags;
  }
  if (config_.security_label) {
    reply.wanted_flags |= FUSE_SECURITY_CTX;
    reply.required_flags |= FUSE_SECURITY_CTX;
  }
  return acl ? uint32_t{kPosixAcl} : 0u;
}

// --- operations ------------------------------------------------------------------

Result<fuse::XattrReply> PassthroughFs::getxattr(const fuse::Context&, fuse::InodeId ino,
                                                 std::string_view name, uint32_t size) {
  if (!config_.xattr) return fail(ENOSYS);
  auto host_name = xattr_name_to_host(name);
  if (!host_name) {
    // A name the map refuses reads as absent (Rust virtiofsd).
    if (host_name.error().value == EPERM) return fail(ENODATA);
    return tl::unexpected(host_name.error());
  }
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto target, XattrTarget::open(proc_self_fd_.get(), data->fd, data->type));
  const size_t want = std::min<size_t>(size, kMaxValueSize);
  std::string buffer(want, '\0');
  ssize_t n = target.get(host_name->c_str(), want ? buffer.data() : nullptr, want);
  if (n < 0) return fail_errno();
  fuse::XattrReply reply;
  reply.size = static_cast<size_t>(n);
  if (size != 0) {
    buffer.resize(static_cast<size_t>(n));
    reply.data = std::move(buffer);
  }
  return reply;
}

Result<fuse::XattrReply> PassthroughFs::listxattr(const fuse::Context&, fuse::InodeId ino,
                                                  uint32_t size) {
  if (!config_.xattr) return fail(ENOSYS);
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto target, XattrTarget::open(proc_self_fd_.get(), data->fd, data->type));
  const size_t want = std::min<size_t>(size, kMaxListSize);
  std::string host_list(want, '\0');
  ssize_t n = target.list(want ? host_list.data() : nullptr, want);
  if (n < 0) return fail_errno();
  fuse::XattrReply reply;
  if (size == 0) {
    // The host list's length bounds the guest's: translation only strips
    // prefixes and drops names.
    reply.size = static_cast<size_t>(n);
    return reply;
  }
  host_list.resize(static_cast<size_t>(n));
  std::string_view rest = host_list;
  while (!rest.empty()) {
    size_t end = rest.find('\0');
    std::string_view host_name = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (host_name.empty()) continue;
    auto guest_name = xattr_name_to_guest(host_name);
    if (!guest_name) continue;
    reply.data += *guest_name;
    reply.data += '\0';
  }
  reply.size = reply.data.size();
  return reply;
}

VoidResult PassthroughFs::setxattr(const fuse::Context&, fuse::InodeId ino, std::string_view name,
                                   std::string_view value, uint32_t flags,
                                   uint32_t setxattr_flags) {
  if (!config_.xattr) return fail(ENOSYS);
  if (value.size() > kMaxValueSize) return fail(E2BIG);
  if (flags & ~static_cast<uint32_t>(XATTR_CREATE | XATTR_REPLACE)) return fail(EINVAL);
  VFSD_ASSIGN_OR_RETURN(auto host_name, xattr_name_to_host(name));
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto target, XattrTarget::open(proc_self_fd_.get(), data->fd, data->type));
  // The guest kernel asks for this when the caller is neither in the file's
  // group nor holds CAP_FSETID; the host kernel would not clear the bit for
  // us (we hold CAP_FSETID), so it is cleared before the ACL changes the mode.
  if (session_has(kPosixAcl) && (setxattr_flags & FUSE_SETXATTR_ACL_KILL_SGID) &&
      host_name == kAclAccess) {
    struct stat st {};
    if (::fstatat(data->fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return fail_errno();
    }
    if ((st.st_mode & S_ISGID) && target.chmod(st.st_mode & 07777 & ~S_ISGID) != 0) {
      return fail_errno();
    }
  }
  if (target.set(host_name.c_str(), value, static_cast<int>(flags)) != 0) return fail_errno();
  return ok();
}

VoidResult PassthroughFs::removexattr(const fuse::Context&, fuse::InodeId ino,
                                      std::string_view name) {
  if (!config_.xattr) return fail(ENOSYS);
  VFSD_ASSIGN_OR_RETURN(auto host_name, xattr_name_to_host(name));
  VFSD_ASSIGN_OR_RETURN(auto data, inode(ino));
  VFSD_ASSIGN_OR_RETURN(auto target, XattrTarget::open(proc_self_fd_.get(), data->fd, data->type));
  if (target.remove(host_name.c_str()) != 0) return fail_errno();
  return ok();
}

// --- creation helpers -------------------------------------------------------------

VoidResult PassthroughFs::apply_security_context(const UniqueFd& fd, const fuse::Extensions& ext) {
  if (!ext.security_context) return ok();
  const fuse::SecurityContext& label = *ext.security_context;
  if (label.value.size() > kMaxValueSize) return fail(E2BIG);
  VFSD_ASSIGN_OR_RETURN(auto host_name, xattr_name_to_host(label.name));
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0) return fail_errno();
  // An O_PATH fd of any type goes the path-based way: the node may be a
  // device or FIFO that must not be opened.
  VFSD_ASSIGN_OR_RETURN(auto target, (fl & O_PATH)
                                         ? XattrTarget::open(proc_self_fd_.get(), fd, S_IFLNK)
                                         : Result<XattrTarget>(XattrTarget::borrow(fd.get())));
  if (target.set(host_name.c_str(), label.value, 0) != 0) return fail_errno();
  return ok();
}

mode_t PassthroughFs::effective_create_mode(const UniqueFd& parent_fd, mode_t mode,
                                            mode_t umask) const {
  const mode_t type = mode & S_IFMT;
  const mode_t perms = mode & 07777;
  if (session_has(kPosixAcl)) {
    // With DONT_MASK the guest left the umask to us; the host applies a
    // default ACL of the parent instead of any umask, so pass the bits
    // unmasked then (the daemon's own umask is 0).
    // O_DIRECTORY: whatever the parent is, only a directory is opened.
    auto dir = reopen_own_fd(proc_self_fd_.get(), parent_fd, O_RDONLY | O_DIRECTORY);
    if (dir && ::fgetxattr(dir->get(), kAclDefault.data(), nullptr, 0) >= 0) return type | perms;
  }
  return type | (perms & ~umask & 07777);
}

}  // namespace vfsd::passthrough

namespace vfsd::passthrough {

// --- CVE-2021-20263 ----------------------------------------------------------------

namespace {
// ENOTSUP and EOPNOTSUPP are one errno on Linux (the only host this daemon
// runs on), so testing for ENOTSUP covers both spellings.
static_assert(ENOTSUP == EOPNOTSUPP);

// What a removal of the remapped capability may answer when there is none to
// remove: ENODATA (absent), ENOTSUP (no xattrs of that namespace here).
bool nothing_to_clear(int error) {
  return error == ENODATA || error == ENOTSUP;
}
}  // namespace

VoidResult PassthroughFs::clear_remapped_capability(int io_fd) const {
  if (capability_xattr_.empty()) return ok();
  if (::fremovexattr(io_fd, capability_xattr_.c_str()) == 0 || nothing_to_clear(errno)) {
    return ok();
  }
  return fail_errno();
}

VoidResult PassthroughFs::clear_remapped_capability(const InodeData& data) const {
  if (capability_xattr_.empty()) return ok();
  // Path-based through the magic link for every type: a special file is
  // never opened, a symlink is the symlink itself.
  VFSD_ASSIGN_OR_RETURN(auto target, XattrTarget::open(proc_self_fd_.get(), data.fd, S_IFLNK));
  if (target.remove(capability_xattr_.c_str()) == 0 || nothing_to_clear(errno)) return ok();
  // user.* xattrs exist on regular files and directories only: on anything
  // else the host refuses the name (EPERM), so there is nothing to clear.
  if (errno == EPERM && !S_ISREG(data.type)) return ok();
  return fail_errno();
}

}  // namespace vfsd::passthrough
