// --ascii-casefold (from crosvm): a LOOKUP that finds nothing retries by
// scanning the directory for a name that is equal once ASCII letters are
// folded, so a guest expecting a case-insensitive filesystem (Windows
// software, Android media) finds "README.TXT" as "readme.txt". Only ASCII is
// folded: Unicode folding rules differ between systems and would make two
// distinct host names collide.
// Pinned by: semantics_test.cc(CasefoldTest.AsciiOnlyComparison,
// SemanticsTest.CasefoldLookupFindsTheHostNameIgnoringAsciiCase)
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "util/result.h"

namespace vfsd::passthrough {

/// Entries a casefold scan examines at most. A failed lookup in a huge
/// directory must not cost the worker an unbounded walk; past this bound the
/// lookup answers ENOENT as it would have without casefolding.
/// Pinned by: semantics_test.cc(SemanticsTest.CasefoldScanIsBounded)
inline constexpr size_t kCasefoldScanLimit = 1 << 16;

/// Whether `a` and `b` are equal when ASCII letters are compared without case.
bool ascii_equal_ignoring_case(std::string_view a, std::string_view b);

/// Scans the directory open for reading on `dir_fd` (not O_PATH) from its
/// start for an entry equal to `name` ignoring ASCII case, skipping "." and
/// "..", names for which `hidden(name)` is true, and anything after
/// `max_entries` entries. Returns the first such entry's real name, or ENOENT.
/// Moves the fd's position.
Result<std::string> find_ascii_casefold_match(int dir_fd, std::string_view name,
                                              bool (*hidden)(std::string_view) = nullptr,
                                              size_t max_entries = kCasefoldScanLimit);

}  // namespace vfsd::passthrough
