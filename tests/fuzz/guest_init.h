// The INIT requests of the guests we know, for the targets' "INIT first"
// option and the seed generator.
#pragma once

#include <linux/fuse.h>

#include <cstdint>

#include "fuse/abi_ext.h"
#include "integration/fuse_codec.h"

namespace vfsd::fuzz {

enum class GuestKind {
  kLinux61,   // 7.38, what tests/integration/fuse_codec.h sends
  kLinux612,  // 7.40 flags: security contexts, supplementary groups
  kLegacy,    // 7.37 with FUSE_SECURITY_CTX: the context travels in the body
};

inline itest::Bytes guest_init(uint64_t unique, GuestKind kind) {
  if (kind == GuestKind::kLinux61) return itest::init_request(unique);
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = kind == GuestKind::kLinux612 ? 40 : 37;
  in.max_readahead = 128 * 1024;
  uint64_t flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
                   FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_SPLICE_WRITE | FUSE_SPLICE_MOVE |
                   FUSE_SPLICE_READ | FUSE_FLOCK_LOCKS | FUSE_HAS_IOCTL_DIR | FUSE_AUTO_INVAL_DATA |
                   FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_ASYNC_DIO |
                   FUSE_WRITEBACK_CACHE | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS |
                   FUSE_HANDLE_KILLPRIV | FUSE_POSIX_ACL | FUSE_ABORT_ERROR | FUSE_MAX_PAGES |
                   FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_EXPLICIT_INVAL_DATA |
                   FUSE_MAP_ALIGNMENT | FUSE_SUBMOUNTS | FUSE_HANDLE_KILLPRIV_V2 |
                   FUSE_SETXATTR_EXT | FUSE_INIT_EXT | FUSE_SECURITY_CTX | FUSE_HAS_EXPIRE_ONLY;
  if (kind == GuestKind::kLinux612) {
    flags |= FUSE_CREATE_SUPP_GROUP | FUSE_DIRECT_IO_ALLOW_MMAP | FUSE_NO_EXPORT_SUPPORT |
             FUSE_HAS_RESEND;
  }
  in.flags = static_cast<uint32_t>(flags);
  in.flags2 = static_cast<uint32_t>(flags >> 32);
  return itest::RequestBuilder(FUSE_INIT, 0, unique).add(in).finish();
}

}  // namespace vfsd::fuzz
