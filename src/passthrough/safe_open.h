// How the passthrough opens host files: the two ways there are, each in one
// place.
//
// 1. By name, relative to a directory fd (open_beneath): every open of a name
//    the guest supplied (LOOKUP, READDIRPLUS, the casefold retry, crash-safe
//    creation, labelling a new node) goes through it. The name must be one
//    path component that stays in the directory; the open never follows a
//    symlink, a magic link or "..", and with openat2 the kernel enforces that
//    (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so even
//    a name that slipped past validation could not leave `dir_fd`. This holds
//    with --sandbox=none too: it is not the sandbox that keeps lookups in the
//    share.
//
//    Why RESOLVE_BENEATH and not RESOLVE_IN_ROOT: the passthrough never
//    resolves a path of several components. Each lookup is one component
//    relative to a directory the guest already holds inside the share, so
//    "refuse anything that leaves dir_fd" (BENEATH) is the stronger rule;
//    IN_ROOT would instead clamp ".." and absolute symlinks at dir_fd. The one
//    walk upwards, LOOKUP of "..", is open_parent() plus
//    PassthroughFs::check_inside_share().
//
//    Without openat2 (ENOSYS: Linux before 5.6, or a syscall filter that
//    refuses it that way) the open is a plain openat with O_NOFOLLOW after the
//    same name check. That is an equivalent guarantee for one component: with
//    no '/' in the name there is no intermediate component to resolve, so
//    nothing but the final one is looked up, inside `dir_fd`; ".." is refused
//    by the check; "." is the directory itself; and O_NOFOLLOW keeps the final
//    component from being followed, whether a symlink or a magic link (an
//    O_PATH open gives the link itself, any other open fails with ELOOP). What
//    openat2 adds is defence in depth against a bug in the check.
//
//    The other *at() calls the passthrough makes with guest names (mkdirat,
//    mknodat, symlinkat, unlinkat, renameat2, linkat, fstatat with
//    AT_SYMLINK_NOFOLLOW) take a fuse::Name, which is one such component by
//    construction, and none of them follows its final component: they are
//    covered by the same argument.
//    Pinned by: safe_open_test.cc(SingleComponentTest.*, OpenBeneathTest.*), escape_test.cc(
//    EscapeTest.*), dotdot_escape_test.cc(DotDotTest.*), run_escape_test.sh
//
// 2. By a magic link in /proc/self/fd (reopen_own_fd, ProcFdName): turns an fd
//    the daemon holds (an O_PATH fd of an inode, a handle's fd) into a new
//    open file description of exactly that inode, with no path walk a rename
//    could redirect. These are deliberate magic-link opens, and the fd number
//    in them is always one of ours: ProcFdName only takes a UniqueFd, an fd
//    the daemon owns; nothing the guest sends is ever turned into a
//    /proc/self/fd name (a guest name such as "/proc/self/fd/3" has a '/' and
//    is refused, and "3" is looked up in the guest's directory, never in
//    /proc).
//    Pinned by: escape_test.cc(EscapeTest.DigitNamesAreNotTheDaemonsFds),
//    safe_open_test.cc(OpenBeneathTest.ParentAndOwnFdReopen)
#pragma once

#include <sys/types.h>

#include <string_view>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// Whether `name` is one path component that names an entry of the directory
/// it is looked up in: not empty, at most NAME_MAX bytes, no '/' and no NUL,
/// not "..", and not "." unless `allow_dot`.
bool is_single_component(std::string_view name, bool allow_dot = false);

/// Opens the component `name` of the directory `dir_fd` with `flags` (O_PATH
/// allowed; O_NOFOLLOW and O_CLOEXEC are always added) and `mode` (O_CREAT,
/// O_TMPFILE). A name that is not a single component (is_single_component,
/// "." allowed) fails with EINVAL, or ENAMETOOLONG when it is only too long.
/// Through openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS when the kernel has it, else openat (see above).
/// Errors are the open's: ELOOP for a symlink opened without O_PATH, EXDEV if
/// the kernel saw the name leave `dir_fd` (never, after the check).
/// Pinned by: safe_open_test.cc(OpenBeneathTest.*, SingleComponentTest.*)
Result<UniqueFd> open_beneath(int dir_fd, const char* name, int flags, mode_t mode = 0);

/// The parent directory of the directory `dir_fd` (O_PATH | O_DIRECTORY): the
/// one open of "..". Whether it is still inside the share is the caller's to
/// check (PassthroughFs::check_inside_share).
Result<UniqueFd> open_parent(int dir_fd);

/// The name of one of the daemon's own fds inside /proc/self/fd. Takes a
/// UniqueFd, never a number: only fds the daemon owns can be named.
class ProcFdName {
 public:
  explicit ProcFdName(const UniqueFd& own_fd);
  const char* c_str() const { return text_; }

 private:
  char text_[16];
};

/// For the path-based calls that have no *at form (the *xattr calls before
/// Linux 6.13, inotify_add_watch): makes the calling thread's working
/// directory its own (once per thread, unshare(CLONE_FS)) and moves it into
/// /proc/self/fd while this object lives, so that a ProcFdName, as a relative
/// path, names the inode the daemon's fd holds. Moves it back when destroyed,
/// keeping errno (callers read it after the call).
class ProcFdWorkingDirectory {
 public:
  static Result<ProcFdWorkingDirectory> enter(int proc_self_fd);
  ProcFdWorkingDirectory(ProcFdWorkingDirectory&&) = default;
  ProcFdWorkingDirectory& operator=(ProcFdWorkingDirectory&&) = delete;
  ~ProcFdWorkingDirectory();

 private:
  ProcFdWorkingDirectory() = default;
  UniqueFd back_;  // the working directory to return to
};

/// Reopens the inode the daemon's fd `own_fd` refers to through its magic
/// link in /proc/self/fd (`proc_self_fd` is an fd of that directory), with
/// `flags` (O_CLOEXEC added; O_NOFOLLOW and O_CREAT dropped: the magic link
/// must be followed, and nothing is created). Callers decide which inodes may
/// be opened for I/O (PassthroughFs::reopen: regular files and directories).
/// Pinned by: safe_open_test.cc(OpenBeneathTest.ParentAndOwnFdReopen),
/// special_files_test.cc(SpecialFilesTest.*)
Result<UniqueFd> reopen_own_fd(int proc_self_fd, const UniqueFd& own_fd, int flags);

/// Whether open_beneath() goes through openat2 (false after the kernel
/// answered ENOSYS once, or when a test turned it off).
bool openat2_in_use();

/// Test hook: with true, open_beneath() takes the openat fallback as if the
/// kernel had no openat2. Not synchronised with opens in flight.
void disable_openat2_for_testing(bool disabled);

}  // namespace vfsd::passthrough
