#include "passthrough/credentials.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "util/log.h"

namespace vfsd::passthrough {
namespace {

// -1 leaves the real and saved ids untouched: only the effective (and with it
// the filesystem) id moves.
long set_effective_uid(uid_t uid) {
  return ::syscall(SYS_setresuid, -1, uid, -1);
}
long set_effective_gid(gid_t gid) {
  return ::syscall(SYS_setresgid, -1, gid, -1);
}
long set_groups(std::span<const gid_t> groups) {
  return ::syscall(SYS_setgroups, groups.size(), groups.data());
}

Result<std::vector<gid_t>> get_groups() {
  long n = ::syscall(SYS_getgroups, 0, nullptr);
  if (n < 0) return fail_errno();
  std::vector<gid_t> groups(static_cast<size_t>(n));
  n = ::syscall(SYS_getgroups, groups.size(), groups.data());
  if (n < 0) return fail_errno();
  groups.resize(static_cast<size_t>(n));
  return groups;
}

[[noreturn]] void die(const char* what) {
  // A worker stuck with a guest's identity would serve later requests with
  // it; stopping is the only safe answer.
  log::error("{}: {}", what, errno_name(errno));
  std::abort();
}

struct CapSets {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};  // pid 0: this thread
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
};

bool read_caps(CapSets& caps) {
  return ::syscall(SYS_capget, &caps.header, caps.data) == 0;
}

bool write_caps(CapSets& caps) {
  return ::syscall(SYS_capset, &caps.header, caps.data) == 0;
}

}  // namespace

Result<ScopedCredentials> ScopedCredentials::enter(uid_t uid, gid_t gid,
                                                   std::span<const gid_t> groups) {
  // -1 means "leave unchanged" to setresuid/setresgid: the operation would
  // run as root. A guest kernel never sends it (it refuses unmappable ids
  // itself, with EOVERFLOW), so only a hostile one does.
  constexpr uid_t kNoUid = static_cast<uid_t>(-1);
  constexpr gid_t kNoGid = static_cast<gid_t>(-1);
  if (uid == kNoUid || gid == kNoGid) return fail(EOVERFLOW);
  for (gid_t g : groups) {
    if (g == kNoGid) return fail(EOVERFLOW);
  }
  ScopedCredentials creds;
  // As the Rust virtiofsd: an id that is root's or already the thread's
  // stays as it is. An unprivileged daemon (--sandbox=none as a user) thus
  // serves the requests whose ids are its own, and cannot take on groups:
  // it keeps its own instead of failing the request.
  // Root's ids never change anything: the current ones are asked for only
  // when they matter (two system calls fewer per request from root).
  const bool uid_matters = uid != 0 || !groups.empty();
  const uid_t current_uid = uid_matters ? static_cast<uid_t>(::syscall(SYS_geteuid)) : 0;
  const gid_t current_gid = gid != 0 ? static_cast<gid_t>(::syscall(SYS_getegid)) : 0;
  if (!groups.empty() && current_uid == 0) {
    VFSD_ASSIGN_OR_RETURN(auto saved, get_groups());
    if (set_groups(groups) != 0) return fail_errno();
    creds.saved_groups_ = std::move(saved);
    creds.groups_changed_ = true;
  }
  if (gid != 0 && gid != current_gid) {
    // On failure `creds` restores what was changed so far.
    if (set_effective_gid(gid) != 0) return fail_errno();
    creds.restore_gid_ = current_gid;
    creds.gid_changed_ = true;
  }
  if (uid != 0 && uid != current_uid) {
    if (set_effective_uid(uid) != 0) return fail_errno();
    creds.restore_uid_ = current_uid;
    creds.uid_changed_ = true;
  }
  return creds;
}

Result<ScopedCredentials> ScopedCredentials::enter_trusting_guest_permission_check(uid_t uid,
                                                                                   gid_t gid) {
  auto creds = enter(uid, gid);
  if (!creds || !creds->uid_changed_) return creds;
  // Changing the effective uid away from 0 cleared the effective set, but the
  // permitted set survives (real and saved uid stay 0), so this raise is
  // allowed; switching back to uid 0 makes the effective set full again.
  CapSets caps;
  if (!read_caps(caps)) return fail_errno();
  caps.data[CAP_DAC_OVERRIDE / 32].effective |= 1u << (CAP_DAC_OVERRIDE % 32);
  if (!write_caps(caps)) return fail_errno();
  return creds;
}

ScopedCredentials::ScopedCredentials(ScopedCredentials&& other) noexcept
    : uid_changed_(std::exchange(other.uid_changed_, false)),
      gid_changed_(std::exchange(other.gid_changed_, false)),
      groups_changed_(std::exchange(other.groups_changed_, false)),
      restore_uid_(other.restore_uid_),
      restore_gid_(other.restore_gid_),
      saved_groups_(std::move(other.saved_groups_)) {}

ScopedCredentials::~ScopedCredentials() {
  if (uid_changed_ && set_effective_uid(restore_uid_) != 0) die("cannot restore the uid");
  if (gid_changed_ && set_effective_gid(restore_gid_) != 0) die("cannot restore the gid");
  if (groups_changed_ && set_groups(saved_groups_) != 0) die("cannot restore groups");
}

bool thread_has_capability(int capability) {
  CapSets caps;
  if (capability < 0 || capability > CAP_LAST_CAP || !read_caps(caps)) return false;
  return (caps.data[capability / 32].effective & (1u << (capability % 32))) != 0;
}

Result<ScopedCapabilityDrop> ScopedCapabilityDrop::drop(int capability) {
  if (capability < 0 || capability > CAP_LAST_CAP) return fail(EINVAL);
  CapSets caps;
  if (!read_caps(caps)) return fail_errno();
  const uint32_t bit = 1u << (capability % 32);
  auto& word = caps.data[capability / 32];
  if (!(word.effective & bit)) return ScopedCapabilityDrop(-1);
  word.effective &= ~bit;
  if (!write_caps(caps)) return fail_errno();
  return ScopedCapabilityDrop(capability);
}

ScopedCapabilityDrop::ScopedCapabilityDrop(ScopedCapabilityDrop&& other) noexcept
    : capability_(std::exchange(other.capability_, -1)) {}

ScopedCapabilityDrop::~ScopedCapabilityDrop() {
  if (capability_ < 0) return;
  CapSets caps;
  if (!read_caps(caps)) die("cannot read capabilities");
  caps.data[capability_ / 32].effective |= 1u << (capability_ % 32);
  // Without the capability back, later requests would run with less than
  // root's rights and fail in ways the guest cannot explain.
  if (!write_caps(caps)) die("cannot restore a dropped capability");
}

}  // namespace vfsd::passthrough
