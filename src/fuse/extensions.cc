#include "fuse/extensions.h"

#include <linux/fuse.h>
#include <linux/limits.h>

#include <cstring>
#include <utility>

#include "fuse/abi_ext.h"

namespace vfsd::fuse::detail {

// An xattr name as the guest sends it: 1..XATTR_NAME_MAX bytes, then the
// only NUL as the last byte.
std::optional<std::string_view> xattr_name(std::string_view bytes_with_nul) {
  if (bytes_with_nul.empty() || bytes_with_nul.back() != '\0') return std::nullopt;
  bytes_with_nul.remove_suffix(1);
  if (bytes_with_nul.empty() || bytes_with_nul.size() > XATTR_NAME_MAX ||
      bytes_with_nul.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  return bytes_with_nul;
}

// A security context block: fuse_secctx_header{size, nr_secctx}, then for
// nr_secctx == 1 a fuse_secctx{size} followed by the xattr name (with NUL)
// and `size` value bytes, padded to 8 bytes. `block` is the whole block; its
// header's size must say exactly that. The kernel sends at most one context,
// and a header alone (nr_secctx 0) when no LSM labels the new node.
Result<std::optional<SecurityContext>> parse_secctx(std::string_view block) {
  fuse_secctx_header header{};
  if (block.size() < sizeof(header)) return fail(EINVAL);
  std::memcpy(&header, block.data(), sizeof(header));
  if (header.size != block.size() || header.nr_secctx > 1) return fail(EINVAL);
  if (header.nr_secctx == 0) {
    if (block.size() != sizeof(header)) return fail(EINVAL);
    return std::optional<SecurityContext>();
  }
  std::string_view rest = block.substr(sizeof(header));
  fuse_secctx one{};
  if (rest.size() < sizeof(one)) return fail(EINVAL);
  std::memcpy(&one, rest.data(), sizeof(one));
  rest.remove_prefix(sizeof(one));
  size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) return fail(EINVAL);
  auto name = xattr_name(rest.substr(0, nul + 1));
  if (!name) return fail(EINVAL);
  rest.remove_prefix(nul + 1);
  if (one.size == 0 || one.size > XATTR_SIZE_MAX || one.size > rest.size()) return fail(EINVAL);
  // Exactly the record the kernel builds: nothing but padding after the value.
  if (block.size() !=
      sizeof(header) + FUSE_REC_ALIGN(sizeof(one) + name->size() + 1 + size_t{one.size})) {
    return fail(EINVAL);
  }
  return std::optional<SecurityContext>(
      SecurityContext{std::string(*name), std::string(rest.substr(0, one.size))});
}

namespace {

// The body of a kExtGroups extension (after its fuse_ext_header): nr_groups,
// the gids, padding to 8 bytes.
Result<std::vector<gid_t>> parse_supp_groups(std::string_view body) {
  abi::SuppGroups header{};
  if (body.size() < sizeof(header)) return fail(EINVAL);
  std::memcpy(&header, body.data(), sizeof(header));
  if (header.nr_groups > abi::kMaxSuppGroups ||
      body.size() != FUSE_REC_ALIGN(sizeof(header) + sizeof(uint32_t) * header.nr_groups)) {
    return fail(EINVAL);
  }
  std::vector<gid_t> groups(header.nr_groups);
  for (size_t i = 0; i < groups.size(); ++i) {
    uint32_t gid = 0;
    std::memcpy(&gid, body.data() + sizeof(header) + i * sizeof(gid), sizeof(gid));
    groups[i] = gid;
  }
  return groups;
}

}  // namespace

// Walks the extension area (total_extlen * 8 bytes after the body): a chain
// of fuse_ext_header{size, type} records, each `size` bytes long header
// included. Only the types this session negotiated are accepted, each once.
VoidResult parse_extensions(std::string_view area, uint64_t agreed, Extensions& ext) {
  bool secctx_seen = false;
  bool groups_seen = false;
  while (!area.empty()) {
    fuse_ext_header header{};
    if (area.size() < sizeof(header)) return fail(EINVAL);
    std::memcpy(&header, area.data(), sizeof(header));
    if (header.size < sizeof(header) || header.size > area.size() || header.size % 8 != 0) {
      return fail(EINVAL);
    }
    std::string_view block = area.substr(0, header.size);
    area.remove_prefix(header.size);
    if (header.type <= abi::kMaxNrSecctx) {
      // The security context block is its own extension header (type =
      // nr_secctx).
      if (!(agreed & FUSE_SECURITY_CTX) || secctx_seen) return fail(EINVAL);
      secctx_seen = true;
      auto secctx = parse_secctx(block);
      if (!secctx) return tl::unexpected(secctx.error());
      ext.security_context = std::move(*secctx);
    } else if (header.type == abi::kExtGroups) {
      if (!(agreed & FUSE_CREATE_SUPP_GROUP) || groups_seen) return fail(EINVAL);
      groups_seen = true;
      auto groups = parse_supp_groups(block.substr(sizeof(header)));
      if (!groups) return tl::unexpected(groups.error());
      ext.supplementary_groups = std::move(*groups);
    } else {
      return fail(EINVAL);
    }
  }
  return ok();
}

// Reads the rest of a creating request's body: `count` NUL-terminated
// strings (each returned with its NUL) and nothing else, except, from a
// pre-7.38 guest that agreed FUSE_SECURITY_CTX, the security context block
// right after them, which goes into req.extensions.
bool read_creation_tail(Request& req, size_t count, size_t strings_cap, std::string& buf,
                        std::array<std::string_view, 2>& strings) {
  size_t cap = strings_cap + (req.legacy_secctx ? kMaxSecctxBlock : 0);
  if (count > strings.size() || !req.read_rest(buf, cap)) return false;
  std::string_view rest(buf);
  for (size_t i = 0; i < count; ++i) {
    size_t nul = rest.find('\0');
    if (nul == std::string_view::npos) return false;
    strings[i] = rest.substr(0, nul + 1);
    rest.remove_prefix(nul + 1);
  }
  if (rest.empty()) return true;
  if (!req.legacy_secctx || req.extensions.security_context) return false;
  auto secctx = parse_secctx(rest);
  if (!secctx) return false;
  req.extensions.security_context = std::move(*secctx);
  return true;
}

}  // namespace vfsd::fuse::detail
