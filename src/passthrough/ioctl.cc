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

}  // namespace

Result<fuse::IoctlReply> PassthroughFs::ioctl(const fuse::Context& ctx, fuse::InodeId ino,
                                              fuse::HandleId fh, uint32_t /*ioctl_flags*/,
                                              uint32_t cmd, std::string_view in,
                                              uint32_t out_size) {
  VFSD_ASSIGN_OR_RETURN(auto h, handle(fh, ino));
  const int fd = h->fd.get();
  fuse::IoctlReply reply;

  switch (cmd) {
    case kGetFlags32:
    case kGetFlags64: {
      // The 64-bit number's encoding says long, but the kernel and every
      // caller use an int.
      if (out_size < sizeof(int)) return fail(EINVAL);
      int flags = 0;
      if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return fail_errno();
      reply.out = bytes_of(&flags, sizeof(flags));
      return reply;
    }
    case kSetFlags32:
    case kSetFlags64: {
      // The setters work on a read-only fd: the share's mode is checked here.
      if (config_.readonly) return fail(EROFS);
      if (in.size() < sizeof(int)) return fail(EINVAL);
      int flags = 0;
      std::memcpy(&flags, in.data(), sizeof(flags));
      // As the guest: only the owner (or a guest root) may change them.
      VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx));
      if (::ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) return fail_errno();
      return reply;
    }
    case FS_IOC_FSGETXATTR: {
      if (out_size < sizeof(struct fsxattr)) return fail(EINVAL);
      struct fsxattr attr {};
      if (::ioctl(fd, FS_IOC_FSGETXATTR, &attr) != 0) return fail_errno();
      reply.out = bytes_of(&attr, sizeof(attr));
      return reply;
    }
    case FS_IOC_FSSETXATTR: {
      if (config_.readonly) return fail(EROFS);
      if (in.size() < sizeof(struct fsxattr)) return fail(EINVAL);
      struct fsxattr attr {};
      std::memcpy(&attr, in.data(), sizeof(attr));
      VFSD_ASSIGN_OR_RETURN(auto creds, guest_credentials(ctx));
      if (::ioctl(fd, FS_IOC_FSSETXATTR, &attr) != 0) return fail_errno();
      return reply;
    }
    case FS_IOC_GET_ENCRYPTION_POLICY_EX: {
      // In: the room the caller has for the policy (policy_size); out: the
      // size actually used, then the policy. The guest's number is only a
      // bound: the host is always given our full buffer.
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
      reply.out = bytes_of(&arg, std::min<size_t>(total, out_size));
      return reply;
    }
    default:
      return fail(ENOTTY);
  }
}

}  // namespace vfsd::passthrough
