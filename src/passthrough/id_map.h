// --translate-uid / --translate-gid: ids translated by the daemon between
// what the guest sees and what the host stores, with the rule grammar and
// semantics of the Rust virtiofsd 1.13.3 (its soft_idmap module):
//
//   guest:<guest>:<host>:<count>         guest range -> host range (1:1)
//   host:<host>:<guest>:<count>          host range -> guest range (1:1)
//   squash-guest:<guest>:<host>:<count>  guest range -> one host id
//   squash-host:<host>:<guest>:<count>   host range -> one guest id
//   forbid-guest:<guest>:<count>         guest range -> EPERM
//   map:<guest>:<host>:<count>           both directions (1:1)
//
// The two directions are independent (a map need not be invertible). An id
// no rule covers maps to itself, so an empty map is the identity and costs
// one branch. Within a direction, source ranges must not overlap; a count of
// 0 is an empty range that covers nothing (Incus sends such rules).
// Pinned by: id_map_test.cc(IdMapRuleParse.*, IdMap.*), run_idmap_test.sh,
// id_translation_test.cc(IdTranslationTest.*)
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace vfsd::passthrough {

/// One rule as given on the command line.
struct IdMapRule {
  enum class Kind { kGuest, kHost, kSquashGuest, kSquashHost, kForbidGuest, kMap };
  Kind kind = Kind::kGuest;
  /// The first id of the range the rule reads from (for kMap: the guest's).
  uint32_t source = 0;
  /// The first id of the target range, or the one target of a squash (for
  /// kMap: the host's); unused by kForbidGuest.
  uint32_t target = 0;
  uint32_t count = 0;

  /// The rule in its canonical command-line form ("map:1000:0:1").
  std::string text() const;
  friend bool operator==(const IdMapRule&, const IdMapRule&) = default;
};

/// One id as 1.13.3 reads the numbers of its id options (Rust's u32 from_str:
/// decimal, an optional '+'); nullopt with `error` in Rust's words.
std::optional<uint32_t> parse_id(std::string_view text, std::string& error);

/// Parses one rule as 1.13.3 does: a prefix of letters, digits, '-' and '_'
/// (any case), then any other character as the separator, used between all
/// the numbers (decimal u32, an optional '+'). nullopt with `message` (1.13.3's
/// wording) when it is not a rule.
std::optional<IdMapRule> parse_id_map_rule(std::string_view text, std::string& message);

class IdMap {
 public:
  /// The identity.
  IdMap() = default;

  /// The map the rules describe, in order. nullopt with `message` naming the
  /// rule when a range leaves the u32 ids (base + count > 4294967295, on
  /// either side: 4294967295 is no id, it means "unchanged" to chown) or a
  /// source range overlaps an earlier one of the same direction.
  /// Pinned by: id_map_test.cc(IdMap.RangesPastTheLastIdAreRefused,
  ///   IdMap.OverlappingSourceRangesAreRefusedPerDirection)
  static std::optional<IdMap> build(std::span<const IdMapRule> rules, std::string& message);

  /// No rule at all: both directions are the identity.
  bool empty() const { return guest_to_host_.empty() && host_to_guest_.empty(); }

  /// A guest id as the host stores it; EPERM for a forbid-guest id.
  Result<uint32_t> guest_to_host(uint32_t id) const {
    if (guest_to_host_.empty()) return id;
    return lookup(guest_to_host_, id);
  }
  /// A host id as the guest sees it (never fails: no rule forbids host ids).
  uint32_t host_to_guest(uint32_t id) const {
    if (host_to_guest_.empty()) return id;
    return *lookup(host_to_guest_, id);
  }

 private:
  struct Range {
    uint32_t first = 0;  // source range [first, end)
    uint64_t end = 0;
    enum class Op { kShift, kSquash, kForbid } op = Op::kShift;
    uint32_t target = 0;  // first target id (kShift) or the target (kSquash)
  };
  static Result<uint32_t> lookup(const std::vector<Range>& ranges, uint32_t id);
  static bool add(std::vector<Range>& ranges, const Range& range);

  std::vector<Range> guest_to_host_;  // sorted by first, disjoint
  std::vector<Range> host_to_guest_;
};

}  // namespace vfsd::passthrough
