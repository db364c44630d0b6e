#include "passthrough/safe_create.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "passthrough/credentials.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/safe_open.h"

namespace vfsd::passthrough {
namespace {

// Status flags an unnamed file may carry from the guest's open; the access
// mode is ours (O_TMPFILE needs write access) and the creation flags mean
// nothing for an unnamed file.
constexpr int kStatusFlags = O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME | O_DIRECT | O_LARGEFILE;

// Attempts at a free temporary name before giving up: with 64 random bits a
// collision is all but impossible, so repeated EEXIST means something odd.
constexpr int kTempNameAttempts = 16;

VoidResult run_hook(std::string_view step) {
  auto& hook = safe_create_test_hook();
  return hook ? hook(step) : ok();
}

// Fails with EEXIST if `name` exists in `dir_fd`. Run as the guest, so that a
// directory the guest may not search answers EACCES, and an existing name
// answers EEXIST before any permission on creating is checked, as the kernel
// orders them.
VoidResult check_absent(int dir_fd, const char* name) {
  struct stat st {};
  if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) return fail(EEXIST);
  return errno == ENOENT ? ok() : VoidResult(fail_errno());
}

}  // namespace

bool is_hidden_temp_name(std::string_view name) {
  return name.starts_with(kHiddenTempPrefix);
}

std::function<VoidResult(std::string_view)>& safe_create_test_hook() {
  static std::function<VoidResult(std::string_view)> hook;
  return hook;
}

Result<UniqueFd> open_unnamed_file(int dir_fd, int flags, mode_t mode) {
  // O_TMPFILE can only make a regular file, never open an existing node.
  auto fd = open_beneath(dir_fd, ".", flags | O_TMPFILE, mode);
  if (fd) return fd;
  // EISDIR: a kernel that predates O_TMPFILE saw only O_DIRECTORY.
  if (fd.error().value == EOPNOTSUPP || fd.error().value == EISDIR) return fail(EOPNOTSUPP);
  return fd;
}

VoidResult link_unnamed_file(int proc_self_fd, const UniqueFd& fd, int dir_fd, const char* name) {
  ProcFdName proc_name(fd);
  // AT_SYMLINK_FOLLOW follows the magic link to the unnamed inode itself;
  // AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH.
  if (::linkat(proc_self_fd, proc_name.c_str(), dir_fd, name, AT_SYMLINK_FOLLOW) != 0) {
    return fail_errno();
  }
  return ok();
}

Result<std::string> make_hidden_temp_dir(int dir_fd, mode_t mode) {
  for (int attempt = 0; attempt < kTempNameAttempts; ++attempt) {
    uint64_t random = 0;
    if (::getrandom(&random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
      return fail_errno();
    }
    char suffix[17];
    std::snprintf(suffix, sizeof(suffix), "%016llx", static_cast<unsigned long long>(random));
    std::string name = std::string(kHiddenTempPrefix) + suffix;
    if (::mkdirat(dir_fd, name.c_str(), mode) == 0) return name;
    if (errno != EEXIST) return fail_errno();
  }
  return fail(EEXIST);
}

// --- PassthroughFs members -----------------------------------------------------

Result<UniqueFd> PassthroughFs::create_file_safely(const fuse::Context& ctx,
                                                   const fuse::Extensions& ext,
                                                   const InodeData& dir, const fuse::Name& name,
                                                   mode_t mode, int io_flags) {
  // The new file comes back open read-write: never on a read-only share.
  if (config_.readonly) return fail(EROFS);
  const int dir_fd = dir.fd.get();
  const int flags = (io_flags & kStatusFlags) | O_RDWR;
  Result<UniqueFd> unnamed = fail(EOPNOTSUPP);
  if (ext.security_context) {
    VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, ext.supplementary_groups));
    VFSD_TRY(check_absent(dir_fd, name.c_str()));
    // Owner, group (setgid directories included) and mode are the kernel's
    // to set at creation under the guest's credentials.
    unnamed = open_unnamed_file(dir_fd, flags, mode);
    if (!unnamed && unnamed.error().value != EOPNOTSUPP) return unnamed;
  }

  if (!unnamed) {
    // Nothing to add after the creation, or no O_TMPFILE on this
    // filesystem: a plain exclusive create, labelled afterwards (if at all)
    // and removed again if that fails (the Rust virtiofsd's way).
    UniqueFd fd;
    {
      VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, ext.supplementary_groups));
      // O_EXCL: an existing name (a FIFO, a device, a symlink to anywhere)
      // is never opened, only refused.
      VFSD_ASSIGN_OR_RETURN(auto made,
                            open_beneath(dir_fd, name.c_str(), flags | O_CREAT | O_EXCL, mode));
      fd = std::move(made);
    }
    if (auto labelled = apply_security_context(fd, ext); !labelled) {
      ::unlinkat(dir_fd, name.c_str(), 0);
      return tl::unexpected(labelled.error());
    }
    return fd;
  }

  // The label is set while the file has no name: nobody can see it unlabelled.
  VFSD_TRY(apply_security_context(*unnamed, ext));
  VFSD_TRY(run_hook("link"));
  {
    // Linking is a creation in `dir`: the guest's permission on it counts.
    VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, ext.supplementary_groups));
    VFSD_TRY(link_unnamed_file(proc_self_fd_.get(), *unnamed, dir_fd, name.c_str()));
  }
  return std::move(*unnamed);
}

Result<UniqueFd> PassthroughFs::mkdir_safely(const fuse::Context& ctx, const fuse::Extensions& ext,
                                             const InodeData& dir, const fuse::Name& name,
                                             mode_t mode) {
  const int dir_fd = dir.fd.get();
  if (!ext.security_context) {
    // Complete when made: the mkdirat is the one step.
    {
      VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, ext.supplementary_groups));
      if (::mkdirat(dir_fd, name.c_str(), mode) != 0) return fail_errno();
    }
    // O_DIRECTORY: if the host replaced it meanwhile with something else,
    // that is refused, never opened.
    return open_beneath(dir_fd, name.c_str(), O_PATH | O_DIRECTORY);
  }
  std::string temp;
  {
    VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx, ext.supplementary_groups));
    VFSD_TRY(check_absent(dir_fd, name.c_str()));
    // Made by the guest: its owner, the setgid inheritance and the guest's
    // permission check on `dir` come from the kernel, as for a plain mkdir.
    VFSD_ASSIGN_OR_RETURN(auto made, make_hidden_temp_dir(dir_fd, mode));
    temp = std::move(made);
  }
  auto finish = [&]() -> Result<UniqueFd> {
    // O_DIRECTORY: if the host put something else under the hidden name,
    // it is refused, never opened.
    VFSD_ASSIGN_OR_RETURN(auto path_fd, open_beneath(dir_fd, temp.c_str(), O_PATH | O_DIRECTORY));
    if (ext.security_context) {
      VFSD_ASSIGN_OR_RETURN(auto real, open_beneath(dir_fd, temp.c_str(), O_RDONLY | O_DIRECTORY));
      VFSD_TRY(apply_security_context(real, ext));
    }
    VFSD_TRY(run_hook("rename"));
    if (::renameat2(dir_fd, temp.c_str(), dir_fd, name.c_str(), RENAME_NOREPLACE) != 0) {
      return fail_errno();
    }
    return path_fd;
  };
  auto done = finish();
  // Whatever failed, the half-made directory goes (it is empty: nobody could
  // name it to fill it).
  if (!done) ::unlinkat(dir_fd, temp.c_str(), AT_REMOVEDIR);
  return done;
}

}  // namespace vfsd::passthrough
