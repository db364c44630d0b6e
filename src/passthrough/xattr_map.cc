#include "passthrough/xattr_map.h"

#include <cctype>

namespace vfsd::passthrough {

namespace {

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

Result<XattrMap> invalid(std::string* out, std::string message) {
  if (out) *out = std::move(message);
  return fail(EINVAL);
}

std::string describe(size_t number, std::string_view text) {
  return "xattrmap rule " + std::to_string(number) + " (\"" + std::string(text) + "\")";
}

}  // namespace

Result<XattrMap> XattrMap::parse(std::string_view text, std::string* error_message) {
  XattrMap map;
  size_t pos = 0;
  size_t number = 0;
  std::string map_rule;  // the text of a `map` rule already seen
  size_t map_number = 0;
  while (true) {
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (pos == text.size()) break;
    ++number;
    const size_t start = pos;
    const char sep = text[pos++];
    // Reads the field up to the next separator; nullopt if the text ends
    // first (the rule is unterminated).
    auto next_field = [&]() -> std::optional<std::string> {
      size_t end = text.find(sep, pos);
      if (end == std::string_view::npos) return std::nullopt;
      std::string field(text.substr(pos, end - pos));
      pos = end + 1;
      return field;
    };
    auto unterminated = [&]() {
      return invalid(error_message, describe(number, text.substr(start)) +
                                        ": unterminated rule (every field, the last one too, "
                                        "must end with the separator '" +
                                        std::string(1, sep) + "')");
    };
    if (map_number != 0) {
      return invalid(error_message,
                     describe(map_number, map_rule) + ": a 'map' rule must be the last rule");
    }
    auto type = next_field();
    if (!type) return unterminated();
    if (*type == "map") {
      auto key = next_field();
      if (!key) return unterminated();
      auto prepend = next_field();
      if (!prepend) return unterminated();
      map_number = number;
      map_rule = text.substr(start, pos - start);
      // The shorthand stands for a complete mapping (as upstream expands it):
      // with a key, only names under it are moved, the host's own names under
      // the key are hidden and the guest may not name the prefix directly;
      // without a key every name is moved and unprefixed host names are hidden.
      if (key->empty()) {
        map.rules_.push_back({Type::kPrefix, kAll, "", *prepend});
        map.rules_.push_back({Type::kBad, kAll, "", ""});
      } else {
        map.rules_.push_back({Type::kPrefix, kAll, *key, *prepend});
        map.rules_.push_back({Type::kBad, kServer, "", *key});
        map.rules_.push_back({Type::kBad, kClient, *prepend, ""});
        map.rules_.push_back({Type::kOk, kAll, "", ""});
      }
      continue;
    }
    Rule rule;
    if (*type == "prefix") {
      rule.type = Type::kPrefix;
    } else if (*type == "ok") {
      rule.type = Type::kOk;
    } else if (*type == "bad") {
      rule.type = Type::kBad;
    } else if (*type == "unsupported") {
      rule.type = Type::kUnsupported;
    } else {
      return invalid(error_message, describe(number, text.substr(start, pos - start)) +
                                        ": unknown type \"" + *type +
                                        "\" (expected prefix, ok, bad, unsupported or map)");
    }
    auto scope = next_field();
    if (!scope) return unterminated();
    if (*scope == "client") {
      rule.scope = kClient;
    } else if (*scope == "server") {
      rule.scope = kServer;
    } else if (*scope == "all") {
      rule.scope = kAll;
    } else {
      return invalid(error_message, describe(number, text.substr(start, pos - start)) +
                                        ": unknown scope \"" + *scope +
                                        "\" (expected client, server or all)");
    }
    auto key = next_field();
    if (!key) return unterminated();
    auto prepend = next_field();
    if (!prepend) return unterminated();
    rule.key = std::move(*key);
    rule.prepend = std::move(*prepend);
    map.rules_.push_back(std::move(rule));
  }
  if (map.rules_.empty()) return invalid(error_message, "xattrmap: no rules given");
  // Every name must meet a rule; a guest must not be able to find a name
  // that none matches.
  if (!map.find(kClient, "")) {
    return invalid(error_message,
                   "xattrmap: no rule matches every guest name (end the map with a rule of "
                   "scope client or all and an empty key, e.g. \":ok:all:::\" or \":bad:all:::\")");
  }
  if (!map.find(kServer, "")) {
    return invalid(error_message,
                   "xattrmap: no rule matches every host name (end the map with a rule of "
                   "scope server or all and an empty prepend, e.g. \":ok:all:::\" or "
                   "\":bad:all:::\")");
  }
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
