#include "passthrough/safe_open.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>

#include "util/name_bytes.h"

namespace vfsd::passthrough {

namespace {

// The only flags open(2) keeps with O_PATH (it ignores the rest; openat2
// refuses them with EINVAL, so they are dropped here as open(2) would).
constexpr int kPathFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

// openat2 answers EAGAIN only when it cannot rule out a ".." race, which a
// single component never has; retried a few times all the same.
constexpr int kEagainRetries = 8;

std::atomic<bool> openat2_missing{false};   // the kernel said ENOSYS
std::atomic<bool> openat2_disabled{false};  // test hook

long sys_openat2(int dir_fd, const char* name, int flags, mode_t mode) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(static_cast<unsigned>(flags));
  // openat2 refuses a mode without O_CREAT or O_TMPFILE, and bits above 07777.
  if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) how.mode = mode & 07777;
  how.resolve = kResolve;
  return ::syscall(SYS_openat2, dir_fd, name, &how, sizeof(how));
}

}  // namespace

bool is_single_component(std::string_view name, bool allow_dot) {
  if (name.empty() || name.size() > NAME_MAX) return false;
  if (has_slash_or_nul(name)) return false;
  if (name == "..") return false;
  return allow_dot || name != ".";
}

Result<UniqueFd> open_beneath(int dir_fd, const char* name, int flags, mode_t mode) {
  if (name == nullptr) return fail(EINVAL);
  const std::string_view view(name);
  if (!is_single_component(view, /*allow_dot=*/true)) {
    return fail(view.size() > NAME_MAX && view.find('/') == std::string_view::npos ? ENAMETOOLONG
                                                                                   : EINVAL);
  }
  flags |= O_NOFOLLOW | O_CLOEXEC;
  if (flags & O_PATH) flags &= kPathFlags;
  if (!openat2_disabled.load(std::memory_order_relaxed) &&
      !openat2_missing.load(std::memory_order_relaxed)) {
    for (int attempt = 0;; ++attempt) {
      long fd = sys_openat2(dir_fd, name, flags, mode);
      if (fd >= 0) return UniqueFd(static_cast<int>(fd));
      if (errno == EAGAIN && attempt < kEagainRetries) continue;
      if (errno != ENOSYS) return fail_errno();
      openat2_missing.store(true, std::memory_order_relaxed);
      break;
    }
  }
  // The equivalent guarantee for one checked component (see safe_open.h).
  UniqueFd fd(::openat(dir_fd, name, flags, mode));
  if (!fd) return fail_errno();
  return fd;
}

Result<UniqueFd> open_parent(int dir_fd) {
  UniqueFd fd(::openat(dir_fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno();
  return fd;
}

ProcFdName::ProcFdName(const UniqueFd& own_fd) {
  std::snprintf(text_, sizeof(text_), "%d", own_fd.get());
}

namespace {

VoidResult unshare_working_directory() {
  thread_local bool unshared = false;
  if (unshared) return ok();
  if (::unshare(CLONE_FS) != 0) return fail_errno();
  unshared = true;
  return ok();
}

}  // namespace

Result<ProcFdWorkingDirectory> ProcFdWorkingDirectory::enter(int proc_self_fd) {
  VFSD_TRY(unshare_working_directory());
  ProcFdWorkingDirectory cwd;
  cwd.back_.reset(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cwd.back_) cwd.back_.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cwd.back_) return fail_errno();
  if (::fchdir(proc_self_fd) != 0) return fail_errno();
  return cwd;
}

ProcFdWorkingDirectory::~ProcFdWorkingDirectory() {
  if (!back_) return;
  int saved = errno;
  (void)!::fchdir(back_.get());
  errno = saved;
}

Result<UniqueFd> reopen_own_fd(int proc_self_fd, const UniqueFd& own_fd, int flags) {
  if (!own_fd) return fail(EBADF);
  ProcFdName name(own_fd);
  UniqueFd fd(::openat(proc_self_fd, name.c_str(), (flags & ~(O_NOFOLLOW | O_CREAT)) | O_CLOEXEC));
  if (!fd) return fail_errno();
  return fd;
}

bool openat2_in_use() {
  return !openat2_disabled.load(std::memory_order_relaxed) &&
         !openat2_missing.load(std::memory_order_relaxed);
}

void disable_openat2_for_testing(bool disabled) {
  openat2_disabled.store(disabled, std::memory_order_relaxed);
}

}  // namespace vfsd::passthrough
