// IOCTL: the few file ioctls a Linux guest forwards through FUSE (chattr and
// lsattr, xfs_io's project quota and extent size hints, fscrypt's policy
// query), each decoded from the guest's bytes with its size checked and run
// on the host handle. Anything else answers ENOTTY: an arbitrary ioctl number
// with guest-chosen bytes is not something to hand the host kernel.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fscrypt.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>

#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {
namespace {

// The 32-bit compat numbers (an int argument in the encoding), which a 32-bit
// guest process sends. The value is an int in both forms.
constexpr uint32_t kGetFlags32 = _IOR('f', 1, int);
constexpr uint32_t kSetFlags32 = _IOW('f', 2, int);
constexpr uint32_t kGetFlags64 = FS_IOC_GETFLAGS;
constexpr uint32_t kSetFlags64 = FS_IOC_SETFLAGS;

std::string bytes_of(const void* data, size_t n) {
  return std::string(static_cast<const char*>(data), n);
}

// A setter's argument from the guest's input bytes (EINVAL if too short).
template <class T>
Result<T> read_arg(std::string_view in) {
  if (in.size() < sizeof(T)) return fail(EINVAL);
  T value{};
  std::memcpy(&value, in.data(), sizeof(T));
  return value;
}

// A getter's answer: `cmd` fills a T, which must fit the guest's room.
template <class T>
Result<fuse::IoctlReply> get_arg(int fd, unsigned long cmd, uint32_t out_size) {
  if (out_size < sizeof(T)) return fail(EINVAL);
  T value{};
  if (::ioctl(fd, cmd, &value) != 0) return fail_errno();
  return fuse::IoctlReply{0, bytes_of(&value, sizeof(value))};
}

// FS_IOC_GET_ENCRYPTION_POLICY_EX. In: the room the caller has for the
// policy (policy_size); out: the size actually used, then the policy. The
// guest's number is only a bound: the host is always given our full buffer.
Result<fuse::IoctlReply> get_encryption_policy(int fd, std::string_view in, uint32_t out_size) {
  struct fscrypt_get_policy_ex_arg arg {};
  constexpr size_t kSizeField = sizeof(arg.policy_size);
  if (in.size() < kSizeField || out_size < kSizeField) return fail(EINVAL);
  uint64_t guest_room = 0;
  std::memcpy(&guest_room, in.data(), kSizeField);
  arg.policy_size = sizeof(arg.policy);
  if (::ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, &arg) != 0) return fail_errno();
  // The policy must fit both the caller's struct and the reply room.
  if (arg.policy_size > guest_room) return fail(EOVERFLOW);
  const size_t total = kSizeField + static_cast<size_t>(arg.policy_size);
  return fuse::IoctlReply{0, bytes_of(&arg, std::min<size_t>(total, out_size))};
}

}  // namespace

Result<fuse::IoctlReply> PassthroughFs::ioctl(const fuse::Context& ctx, fuse::InodeId ino,
                                              fuse::HandleId fh, uint32_t /*ioctl_flags*/,
                                              uint32_t cmd, std::string_view in,
                                              uint32_t out_size) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  const int fd = h->fd.get();
  // The setters work on a read-only fd: the share's mode is checked here.
  // They run as the guest: only the owner (or a guest root) may change the
  // attributes.
  auto set_as_guest = [&](unsigned long host_cmd, auto arg) -> Result<fuse::IoctlReply> {
    if (config_.readonly) return fail(EROFS);
    VFSD_ASSIGN_OR_RETURN(auto value, arg);
    VFSD_TRY(as_caller(ctx, {}, [&]() -> VoidResult {
      if (::ioctl(fd, host_cmd, &value) != 0) return fail_errno();
      return ok();
    }));
    return fuse::IoctlReply{};
  };
  switch (cmd) {
    case kGetFlags32:
    case kGetFlags64:
      // The 64-bit number's encoding says long, but the kernel and every
      // caller use an int.
      return get_arg<int>(fd, FS_IOC_GETFLAGS, out_size);
    case kSetFlags32:
    case kSetFlags64:
      return set_as_guest(FS_IOC_SETFLAGS, read_arg<int>(in));
    case FS_IOC_FSGETXATTR:
      return get_arg<struct fsxattr>(fd, FS_IOC_FSGETXATTR, out_size);
    case FS_IOC_FSSETXATTR:
      return set_as_guest(FS_IOC_FSSETXATTR, read_arg<struct fsxattr>(in));
    case FS_IOC_GET_ENCRYPTION_POLICY_EX:
      return get_encryption_policy(fd, in, out_size);
    default:
      return fail(ENOTTY);
  }
}

}  // namespace vfsd::passthrough
