// Crash-safe creation. A node the guest creates becomes visible under its
// name only once it is complete. When the creation itself makes it complete
// (owner, group and mode come from the kernel under the guest's credentials)
// an exclusive create (O_CREAT|O_EXCL, mkdirat) is that single step. When a
// step must follow (a security label), a regular file is made unnamed
// (O_TMPFILE), labelled, and only then linked in; a directory is made under a
// hidden temporary name in the same parent, labelled, then renamed into place
// with RENAME_NOREPLACE. A crash (or an error) between the steps never leaves
// an entry with the wrong owner, mode or label under the guest's name: an
// unnamed file vanishes by itself, a hidden directory is never shown to the
// guest and is removed on error. (The unnamed way costs about 60% more host
// time per file on ext4, hence only where it is needed.)
// Pinned by: safe_create_test.cc(SafeCreateTest.*)
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// Prefix of the hidden temporary directory names. LOOKUP and READDIR never
/// show such names, and the guest may not create or remove them.
inline constexpr std::string_view kHiddenTempPrefix = ".vfsd-tmp-";

/// Whether `name` is one of our hidden temporary names.
bool is_hidden_temp_name(std::string_view name);

/// Test hook: when set, called between the steps of a crash-safe creation
/// with the name of the step about to run ("link" for files, "rename" for
/// directories), while the new node exists but has no visible name yet. An
/// error it returns aborts the creation there, as a crash would. Not for
/// production use; not synchronised.
std::function<VoidResult(std::string_view step)>& safe_create_test_hook();

/// Creates an unnamed regular file in the directory `dir_fd` (O_TMPFILE) with
/// `flags` (an access mode of O_WRONLY or O_RDWR plus status flags) and
/// `mode`. EOPNOTSUPP when the host filesystem cannot make unnamed files (the
/// caller then falls back to a plain create).
Result<UniqueFd> open_unnamed_file(int dir_fd, int flags, mode_t mode);

/// Gives the unnamed file `fd` the name `name` in `dir_fd`, through its
/// /proc/self/fd magic link (`proc_self_fd` is an fd of /proc/self/fd).
/// EEXIST if the name is taken.
VoidResult link_unnamed_file(int proc_self_fd, const UniqueFd& fd, int dir_fd, const char* name);

/// Creates a directory with `mode` under a fresh hidden temporary name in
/// `dir_fd` and returns that name. The final mode is used from the start: with
/// a default ACL on the parent the mode acts as a mask at creation only.
Result<std::string> make_hidden_temp_dir(int dir_fd, mode_t mode);

}  // namespace vfsd::passthrough
