#include "passthrough/id_map.h"

#include <algorithm>
#include <cctype>

namespace vfsd::passthrough {
namespace {

constexpr uint64_t kIdLimit = 0xffffffffull;  // one past the last id a range may hold

struct KindName {
  IdMapRule::Kind kind;
  const char* name;
  size_t fields;
};
constexpr KindName kKinds[] = {
    {IdMapRule::Kind::kGuest, "guest", 3},
    {IdMapRule::Kind::kHost, "host", 3},
    {IdMapRule::Kind::kSquashGuest, "squash-guest", 3},
    {IdMapRule::Kind::kSquashHost, "squash-host", 3},
    {IdMapRule::Kind::kForbidGuest, "forbid-guest", 2},
    {IdMapRule::Kind::kMap, "map", 3},
};

}  // namespace

std::optional<uint32_t> parse_id(std::string_view text, std::string& error) {
  if (text.empty()) {
    error = "cannot parse integer from empty string";
    return std::nullopt;
  }
  std::string_view digits = text;
  if (digits.front() == '+') digits.remove_prefix(1);
  if (digits.empty()) {
    error = "invalid digit found in string";
    return std::nullopt;
  }
  uint64_t value = 0;
  bool too_large = false;
  for (char c : digits) {
    if (c < '0' || c > '9') {
      error = "invalid digit found in string";
      return std::nullopt;
    }
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > 0xffffffffull) {
      too_large = true;
      value = 0xffffffffull + 1;  // keeps the loop from overflowing
    }
  }
  if (too_large) {
    error = "number too large to fit in target type";
    return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

std::string IdMapRule::text() const {
  for (const auto& k : kKinds) {
    if (k.kind != kind) continue;
    std::string out = std::string(k.name) + ":" + std::to_string(source) + ":";
    if (kind != Kind::kForbidGuest) out += std::to_string(target) + ":";
    return out + std::to_string(count);
  }
  return "?";
}

std::optional<IdMapRule> parse_id_map_rule(std::string_view text, std::string& message) {
  size_t i = 0;
  std::string prefix;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (!std::isalnum(c) && c != '-' && c != '_') break;
    prefix += static_cast<char>(std::tolower(c));
    ++i;
  }
  if (i == text.size()) {
    // As 1.13.3 words it: one separator and at least one value are expected.
    message = "Invalid ID map length (expected 1 elements, got 0 elements)";
    return std::nullopt;
  }
  const char separator = text[i];
  std::vector<uint32_t> values;
  std::string_view rest = text.substr(i + 1);
  for (;;) {
    const size_t next = rest.find(separator);
    const std::string_view field = rest.substr(0, next);
    std::string error;
    auto value = parse_id(field, error);
    if (!value) {
      message = "Invalid value " + std::string(field) + " in ID map: " + error;
      return std::nullopt;
    }
    values.push_back(*value);
    if (next == std::string_view::npos) break;
    rest.remove_prefix(next + 1);
  }
  for (const auto& k : kKinds) {
    if (prefix != k.name) continue;
    if (values.size() != k.fields) {
      message = "Invalid ID map length (expected " + std::to_string(k.fields) + " elements, got " +
                std::to_string(values.size()) + " elements)";
      return std::nullopt;
    }
    IdMapRule rule;
    rule.kind = k.kind;
    rule.source = values[0];
    if (k.fields == 3) {
      rule.target = values[1];
      rule.count = values[2];
    } else {
      rule.count = values[1];
    }
    return rule;
  }
  message = "Invalid ID map prefix " + prefix;
  return std::nullopt;
}

Result<uint32_t> IdMap::lookup(const std::vector<Range>& ranges, uint32_t id) {
  // The last range starting at or below `id`: the only one that can hold it.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), id,
                             [](uint32_t value, const Range& r) { return value < r.first; });
  if (it == ranges.begin()) return id;
  --it;
  if (id >= it->end) return id;
  switch (it->op) {
    case Range::Op::kShift:
      return it->target + (id - it->first);
    case Range::Op::kSquash:
      return it->target;
    case Range::Op::kForbid:
      return fail(EPERM);
  }
  return id;
}

bool IdMap::add(std::vector<Range>& ranges, const Range& range) {
  // An empty range covers nothing and so overlaps nothing.
  if (range.end == range.first) return true;
  auto it = std::upper_bound(ranges.begin(), ranges.end(), range.first,
                             [](uint32_t value, const Range& r) { return value < r.first; });
  if (it != ranges.end() && it->first < range.end) return false;
  if (it != ranges.begin() && std::prev(it)->end > range.first) return false;
  ranges.insert(it, range);
  return true;
}

std::optional<IdMap> IdMap::build(std::span<const IdMapRule> rules, std::string& message) {
  IdMap map;
  for (const IdMapRule& rule : rules) {
    using Kind = IdMapRule::Kind;
    const uint64_t source_end = uint64_t{rule.source} + rule.count;
    const bool one_to_one =
        rule.kind == Kind::kGuest || rule.kind == Kind::kHost || rule.kind == Kind::kMap;
    const uint64_t target_end =
        one_to_one ? uint64_t{rule.target} + rule.count
                   : (rule.kind == Kind::kForbidGuest ? 0 : uint64_t{rule.target} + 1);
    if (source_end > kIdLimit || target_end > kIdLimit) {
      message = "'" + rule.text() + "': range overflow (ids end at 4294967294)";
      return std::nullopt;
    }
    Range range{rule.source, source_end, Range::Op::kShift, rule.target};
    if (rule.kind == Kind::kSquashGuest || rule.kind == Kind::kSquashHost) {
      range.op = Range::Op::kSquash;
    }
    if (rule.kind == Kind::kForbidGuest) range.op = Range::Op::kForbid;
    const bool to_host = rule.kind == Kind::kGuest || rule.kind == Kind::kSquashGuest ||
                         rule.kind == Kind::kForbidGuest || rule.kind == Kind::kMap;
    if (to_host && !add(map.guest_to_host_, range)) {
      message = "'" + rule.text() + "': its guest-to-host range overlaps an earlier rule's";
      return std::nullopt;
    }
    if (rule.kind == Kind::kMap) {
      range = Range{rule.target, target_end, Range::Op::kShift, rule.source};
    }
    if (!to_host || rule.kind == Kind::kMap) {
      if (!add(map.host_to_guest_, range)) {
        message = "'" + rule.text() + "': its host-to-guest range overlaps an earlier rule's";
        return std::nullopt;
      }
    }
  }
  return map;
}

}  // namespace vfsd::passthrough
