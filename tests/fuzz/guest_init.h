// The INIT requests of the guests we know, for the targets' "INIT first"
// option and the seed generator.
#pragma once

#include <linux/fuse.h>

#include <cstdint>

#include "fuse/abi_ext.h"
#include "support/fuse_codec.h"

namespace vfsd::fuzz {

enum class GuestKind {
  kLinux61,   // 7.38, what tests/support/fuse_codec.h sends
  kLinux612,  // 7.40 flags: security contexts, supplementary groups
  kLegacy,    // 7.37 with FUSE_SECURITY_CTX: the context travels in the body
};

inline test::Bytes guest_init(uint64_t unique, GuestKind kind) {
  if (kind == GuestKind::kLinux61) return test::init_request(unique);
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = kind == GuestKind::kLinux612 ? 40 : 37;
  in.max_readahead = 128 * 1024;
  // Linux 6.1's flags, and the security contexts both of these add.
  uint64_t flags = test::kLinux61InitFlags | FUSE_SECURITY_CTX | FUSE_HAS_EXPIRE_ONLY;
  if (kind == GuestKind::kLinux612) {
    flags |= FUSE_CREATE_SUPP_GROUP | FUSE_DIRECT_IO_ALLOW_MMAP | FUSE_NO_EXPORT_SUPPORT |
             FUSE_HAS_RESEND;
  }
  in.flags = static_cast<uint32_t>(flags);
  in.flags2 = static_cast<uint32_t>(flags >> 32);
  return test::RequestBuilder(FUSE_INIT, 0, unique).add(in).finish();
}

}  // namespace vfsd::fuzz
