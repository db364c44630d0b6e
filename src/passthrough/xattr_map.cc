#include "passthrough/xattr_map.h"

#include <algorithm>
#include <cctype>

namespace vfsd::passthrough {

namespace {

using Rule = XattrMap::Rule;
using Type = XattrMap::Type;

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

tl::unexpected<Errno> invalid(std::string* out, std::string message) {
  if (out) *out = std::move(message);
  return fail(EINVAL);
}

std::string describe(size_t number, std::string_view text) {
  return "xattrmap rule " + std::to_string(number) + " (\"" + std::string(text) + "\")";
}

// Splits --xattrmap text into rules and a rule into its fields. A rule starts
// with its separator, a character of its own choosing that also ends each of
// its fields; whitespace may come between rules.
class RuleTokenizer {
 public:
  explicit RuleTokenizer(std::string_view text) : text_(text) {}

  // Moves past the whitespace to the next rule and its separator; false when
  // the text has no more rules.
  bool next_rule() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
    if (pos_ == text_.size()) return false;
    ++number_;
    start_ = pos_;
    separator_ = text_[pos_++];
    return true;
  }

  // The current rule's next field, without its separator; EINVAL (and the
  // message) when the text ends before that separator.
  Result<std::string> next_field(std::string* error_message) {
    const size_t end = text_.find(separator_, pos_);
    if (end == std::string_view::npos) return unterminated(error_message);
    std::string field(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return field;
  }

  // The current rule's number, counting from 1.
  size_t number() const { return number_; }
  // The current rule's text up to the end of the last field read.
  std::string_view rule_so_far() const { return text_.substr(start_, pos_ - start_); }

 private:
  tl::unexpected<Errno> unterminated(std::string* error_message) const {
    std::string message = describe(number_, text_.substr(start_));
    message += ": unterminated rule (every field, the last one too, must end with the separator '";
    message += separator_;
    message += "')";
    return invalid(error_message, std::move(message));
  }

  std::string_view text_;
  size_t pos_ = 0;
  size_t number_ = 0;
  size_t start_ = 0;  // where the current rule starts
  char separator_ = 0;
};

std::optional<Type> type_named(std::string_view name) {
  if (name == "prefix") return Type::kPrefix;
  if (name == "ok") return Type::kOk;
  if (name == "bad") return Type::kBad;
  if (name == "unsupported") return Type::kUnsupported;
  return std::nullopt;
}

std::optional<uint8_t> scope_named(std::string_view name) {
  if (name == "client") return XattrMap::kClient;
  if (name == "server") return XattrMap::kServer;
  if (name == "all") return XattrMap::kAll;
  return std::nullopt;
}

// The error for a field that names no type or scope: the rule so far, the
// field and what it may be.
tl::unexpected<Errno> unknown(const RuleTokenizer& rules, std::string_view what,
                              std::string_view field, std::string_view expected,
                              std::string* error_message) {
  std::string message = describe(rules.number(), rules.rule_so_far());
  message += ": unknown ";
  message += what;
  message += " \"";
  message += field;
  message += "\" (expected ";
  message += expected;
  message += ")";
  return invalid(error_message, std::move(message));
}

// The rest of a rule of type `type_name` (already read): its scope, key and
// prepend.
Result<Rule> parse_rule(RuleTokenizer& rules, std::string_view type_name,
                        std::string* error_message) {
  Rule rule;
  auto type = type_named(type_name);
  if (!type) {
    return unknown(rules, "type", type_name, "prefix, ok, bad, unsupported or map", error_message);
  }
  rule.type = *type;
  VFSD_ASSIGN_OR_RETURN(auto scope_name, rules.next_field(error_message));
  auto scope = scope_named(scope_name);
  if (!scope) return unknown(rules, "scope", scope_name, "client, server or all", error_message);
  rule.scope = *scope;
  VFSD_ASSIGN_OR_RETURN(rule.key, rules.next_field(error_message));
  VFSD_ASSIGN_OR_RETURN(rule.prepend, rules.next_field(error_message));
  return rule;
}

// The rest of a `map` rule (its type already read), expanded into the rules
// it stands for and appended to `out`.
VoidResult parse_map_rule(RuleTokenizer& rules, std::vector<Rule>& out,
                          std::string* error_message) {
  VFSD_ASSIGN_OR_RETURN(auto key, rules.next_field(error_message));
  VFSD_ASSIGN_OR_RETURN(auto prepend, rules.next_field(error_message));
  // The shorthand stands for a complete mapping (as upstream expands it):
  // with a key, only names under it are moved, the host's own names under
  // the key are hidden and the guest may not name the prefix directly;
  // without a key every name is moved and unprefixed host names are hidden.
  if (key.empty()) {
    out.push_back({Type::kPrefix, XattrMap::kAll, "", prepend});
    out.push_back({Type::kBad, XattrMap::kAll, "", ""});
  } else {
    out.push_back({Type::kPrefix, XattrMap::kAll, key, prepend});
    out.push_back({Type::kBad, XattrMap::kServer, "", key});
    out.push_back({Type::kBad, XattrMap::kClient, prepend, ""});
    out.push_back({Type::kOk, XattrMap::kAll, "", ""});
  }
  return ok();
}

// Whether a rule of `scope` matches every name: for guest names (kClient)
// one with an empty key, for host names (kServer) one with an empty prepend.
bool has_catch_all(const std::vector<Rule>& rules, uint8_t scope) {
  return std::any_of(rules.begin(), rules.end(), [scope](const Rule& rule) {
    return (rule.scope & scope) != 0 &&
           (scope == XattrMap::kClient ? rule.key : rule.prepend).empty();
  });
}

// EINVAL (and the message) unless the rules end every lookup: some rule must
// match every guest name and some rule every host name.
VoidResult check_complete(const std::vector<Rule>& rules, std::string* error_message) {
  if (rules.empty()) return invalid(error_message, "xattrmap: no rules given");
  // A guest must not be able to find a name that no rule matches.
  if (!has_catch_all(rules, XattrMap::kClient)) {
    return invalid(error_message,
                   "xattrmap: no rule matches every guest name (end the map with a rule of "
                   "scope client or all and an empty key, e.g. \":ok:all:::\" or \":bad:all:::\")");
  }
  if (!has_catch_all(rules, XattrMap::kServer)) {
    return invalid(error_message,
                   "xattrmap: no rule matches every host name (end the map with a rule of "
                   "scope server or all and an empty prepend, e.g. \":ok:all:::\" or "
                   "\":bad:all:::\")");
  }
  return ok();
}

}  // namespace

Result<XattrMap> XattrMap::parse(std::string_view text, std::string* error_message) {
  XattrMap map;
  RuleTokenizer rules(text);
  size_t map_number = 0;  // the number and text of a `map` rule already seen
  std::string map_text;
  while (rules.next_rule()) {
    if (map_number != 0) {
      return invalid(error_message,
                     describe(map_number, map_text) + ": a 'map' rule must be the last rule");
    }
    VFSD_ASSIGN_OR_RETURN(auto type, rules.next_field(error_message));
    if (type == "map") {
      VFSD_TRY(parse_map_rule(rules, map.rules_, error_message));
      map_number = rules.number();
      map_text = rules.rule_so_far();
      continue;
    }
    VFSD_ASSIGN_OR_RETURN(auto rule, parse_rule(rules, type, error_message));
    map.rules_.push_back(std::move(rule));
  }
  VFSD_TRY(check_complete(map.rules_, error_message));
  return map;
}

const XattrMap::Rule* XattrMap::find(uint8_t scope, std::string_view name) const {
  for (const Rule& rule : rules_) {
    if (!(rule.scope & scope)) continue;
    std::string_view pattern = scope == kClient ? rule.key : rule.prepend;
    if (name.starts_with(pattern)) return &rule;
  }
  return nullptr;
}

Result<std::string> XattrMap::to_host(std::string_view guest_name) const {
  if (rules_.empty()) return std::string(guest_name);
  const Rule* rule = find(kClient, guest_name);
  // parse() guarantees a catch-all; refuse rather than pass if that changes.
  if (!rule) return fail(EPERM);
  switch (rule->type) {
    case Type::kOk:
      return std::string(guest_name);
    case Type::kBad:
      return fail(EPERM);
    case Type::kUnsupported:
      return fail(ENOTSUP);
    case Type::kPrefix:
      return rule->prepend + std::string(guest_name);
  }
  return fail(EPERM);
}

std::optional<std::string> XattrMap::to_guest(std::string_view host_name) const {
  if (rules_.empty()) return std::string(host_name);
  const Rule* rule = find(kServer, host_name);
  if (!rule) return std::nullopt;
  switch (rule->type) {
    case Type::kOk:
      return std::string(host_name);
    case Type::kBad:
    case Type::kUnsupported:
      return std::nullopt;
    case Type::kPrefix:
      // A host name that is the bare prefix would become an empty name.
      if (host_name.size() == rule->prepend.size()) return std::nullopt;
      return std::string(host_name.substr(rule->prepend.size()));
  }
  return std::nullopt;
}

}  // namespace vfsd::passthrough
