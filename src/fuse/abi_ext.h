// FUSE ABI definitions newer than the system's <linux/fuse.h>.
//
// Debian 12 ships the 7.38 header; later protocol bits (7.39/7.40 INIT flags,
// the supplementary-groups request extension) live here, in one place, so
// that the rest of the code includes this file instead of redefining them
// ad hoc. Each definition is guarded so a newer system header wins.
#pragma once

#include <linux/fuse.h>

#include <cstdint>

// INIT flags2 bits (shifted into the upper 32 bits of the 64-bit flags).
#ifndef FUSE_CREATE_SUPP_GROUP
#define FUSE_CREATE_SUPP_GROUP (1ULL << 34)
#endif
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH (1ULL << 37)
#endif
#ifndef FUSE_NO_EXPORT_SUPPORT
#define FUSE_NO_EXPORT_SUPPORT (1ULL << 38)
#endif
#ifndef FUSE_HAS_RESEND
#define FUSE_HAS_RESEND (1ULL << 39)
#endif

namespace vfsd::fuse::abi {

/// Request extension type carrying the caller's supplementary group (sent
/// with create/mkdir/symlink/mknod once FUSE_CREATE_SUPP_GROUP is agreed).
/// fuse_ext_type in 7.39 headers; the 7.38 enum stops at FUSE_MAX_NR_SECCTX.
inline constexpr uint32_t kExtGroups = 32;

/// Body of a kExtGroups extension: nr_groups then that many gids.
struct SuppGroups {
  uint32_t nr_groups;
  // uint32_t groups[nr_groups] follows.
};

/// fuse_ext_header.type values 0..kMaxNrSecctx are not extension types but the
/// nr_secctx of a fuse_secctx_header: the security context block doubles as
/// an extension whose "type" is its context count (FUSE_MAX_NR_SECCTX).
inline constexpr uint32_t kMaxNrSecctx = 31;

/// Most supplementary groups a kExtGroups extension may carry (NGROUPS_MAX).
inline constexpr uint32_t kMaxSuppGroups = 65536;

/// First protocol minor that carries request extensions (fuse_in_header's
/// total_extlen). Older guests with FUSE_SECURITY_CTX put the security
/// context block in the body, right after the name(s).
inline constexpr uint32_t kMinorWithExtensions = 38;

/// The protocol minor we implement and announce in the INIT reply.
inline constexpr uint32_t kMinorVersion = FUSE_KERNEL_MINOR_VERSION;
/// Oldest guest protocol minor we accept (Linux 4.20, virtio-fs' first).
inline constexpr uint32_t kMinMinorVersion = 27;

}  // namespace vfsd::fuse::abi
