// Byte checks on file names the guest sends, shared by the wire parser
// (fuse::Name) and the passthrough's second line (is_single_component).
// Pinned by: name_test.cc(NameTest.*), safe_open_test.cc
#pragma once

#include <string_view>

namespace vfsd {

/// Whether `name` holds a '/' or a NUL: either makes it more (or less) than
/// one path component. One pass: libstdc++'s find_first_of runs a memchr
/// over the set for every byte, a visible cost on a lookup's hot path.
inline bool has_slash_or_nul(std::string_view name) {
  for (const char c : name) {
    if (c == '/' || c == '\0') return true;
  }
  return false;
}

}  // namespace vfsd
