#include "fuse/name.h"

#include <cerrno>
#include <climits>

#include "util/name_bytes.h"

namespace vfsd::fuse {

// Strict framing: the NUL must be the last byte and the only one. The kernel
// sends each name as exactly its bytes plus one NUL, so anything after the
// NUL (or a second NUL) is a malformed request, not padding to tolerate.
std::optional<Name> Name::parse(std::string_view bytes_with_nul) {
  if (bytes_with_nul.empty() || bytes_with_nul.back() != '\0') return std::nullopt;
  bytes_with_nul.remove_suffix(1);
  return from(bytes_with_nul);
}

int Name::parse_error(std::string_view bytes_with_nul) {
  if (bytes_with_nul.size() > NAME_MAX + 1 && bytes_with_nul.back() == '\0' &&
      bytes_with_nul.find('\0') == bytes_with_nul.size() - 1 &&
      bytes_with_nul.find('/') == std::string_view::npos) {
    return ENAMETOOLONG;
  }
  return EINVAL;
}

std::optional<Name> Name::from(std::string_view name) {
  if (name.empty() || name.size() > NAME_MAX) return std::nullopt;
  if (has_slash_or_nul(name)) return std::nullopt;
  return Name(std::string(name));
}

}  // namespace vfsd::fuse
