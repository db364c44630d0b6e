// Request extensions (FUSE 7.38+: supplementary groups, security context)
// and the security context block a pre-7.38 guest puts in the body of a
// creating request. Internal to src/fuse.
// Pinned by: server_ops_test.cc(SessionTest.SupplementaryGroupsExtension,
//   SessionTest.ExtensionsRejectedUnlessNegotiated, SessionTest.MalformedExtensionsAreEinval,
//   SessionTest.LegacyInlineSecurityContext, SessionTest.InlineSecurityContextOnlyBefore738)
#pragma once

#include <linux/fuse.h>
#include <linux/limits.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuse/filesystem.h"
#include "fuse/request.h"
#include "util/result.h"

namespace vfsd::fuse::detail {

// Largest security context block we accept: header, one fuse_secctx, a name
// of at most XATTR_NAME_MAX bytes plus NUL, a value that fits an xattr, and
// the record padding.
constexpr size_t kMaxSecctxBlock =
    sizeof(fuse_secctx_header) + sizeof(fuse_secctx) + XATTR_NAME_MAX + 1 + XATTR_SIZE_MAX + 8;

/// An xattr name as the guest sends it: 1..XATTR_NAME_MAX bytes, then the
/// only NUL as the last byte. Returns the name without its NUL.
std::optional<std::string_view> xattr_name(std::string_view bytes_with_nul);

/// A whole security context block (fuse_secctx_header and at most one
/// context); nullopt inside when it carries none.
Result<std::optional<SecurityContext>> parse_secctx(std::string_view block);

/// Walks the extension area and fills `ext` with what it carries; EINVAL for
/// bad framing, a type this session did not negotiate (`agreed`), or a
/// duplicate.
VoidResult parse_extensions(std::string_view area, uint64_t agreed, Extensions& ext);

/// Reads the rest of a creating request's body: `count` NUL-terminated
/// strings (each returned with its NUL, pointing into `buf`) and nothing
/// else, except from a legacy-secctx guest the security context block, which
/// goes into req.extensions. False if the body is anything else.
bool read_creation_tail(Request& req, size_t count, size_t strings_cap, std::string& buf,
                        std::array<std::string_view, 2>& strings);

}  // namespace vfsd::fuse::detail
