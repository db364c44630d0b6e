// --xattrmap: translation of extended attribute names between what the guest
// sees and what the host stores, with the rule grammar of the Rust virtiofsd
// (doc/xattr-mapping.md upstream).
//
// A map is a list of rules, each written `<s>type<s>scope<s>key<s>prepend<s>`
// where <s> is any one character (the first of the rule, chosen per rule) and
// whitespace may separate rules. The first rule that matches a name decides:
//
//   type         guest name matching `key`        host name matching `prepend`
//   prefix       `prepend` is put in front        `prepend` is stripped
//   ok           passes unchanged                 passes unchanged
//   bad          refused (EPERM)                  hidden from listxattr
//   unsupported  refused (ENOTSUP)                hidden from listxattr
//
// Scope `client` matches guest names (get/set/remove), `server` host names
// (listxattr), `all` both. `<s>map<s>key<s>prepend<s>` is shorthand for a
// complete mapping and must be the last rule.
// Pinned by: xattr_map_test.cc(XattrMapTest.*),
//   xattr_test.cc(XattrTest.XattrmapMovesGuestNamesAndFiltersTheList), xattrmap_fuzzer.cc
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace vfsd::passthrough {

class XattrMap {
 public:
  enum class Type { kPrefix, kOk, kBad, kUnsupported };
  static constexpr uint8_t kClient = 1;
  static constexpr uint8_t kServer = 2;
  static constexpr uint8_t kAll = kClient | kServer;

  struct Rule {
    Type type = Type::kOk;
    uint8_t scope = kAll;  // kClient, kServer or kAll
    std::string key;       // matched against guest names
    std::string prepend;   // added to guest names, matched against host names
    friend bool operator==(const Rule&, const Rule&) = default;
  };

  /// The identity map (no --xattrmap): names pass unchanged both ways.
  XattrMap() = default;

  /// Parses --xattrmap text. On failure the errno is EINVAL and
  /// `error_message` (if not null) says what is wrong and names the
  /// offending rule by number and text. Besides syntax errors, a map that
  /// does not end every lookup in a rule (no catch-all for guest names or
  /// for host names) is refused here, where the Rust virtiofsd would abort
  /// at the first unmatched name.
  static Result<XattrMap> parse(std::string_view text, std::string* error_message);

  /// True for the identity map.
  bool empty() const { return rules_.empty(); }
  /// The rules after expanding the `map` shorthand. For tests.
  const std::vector<Rule>& rules() const { return rules_; }

  /// The host name for a guest's name (getxattr, setxattr, removexattr):
  /// EPERM for a `bad` rule, ENOTSUP for `unsupported`.
  Result<std::string> to_host(std::string_view guest_name) const;
  /// The guest's name for a host name (listxattr); nullopt when hidden.
  std::optional<std::string> to_guest(std::string_view host_name) const;

 private:
  const Rule* find(uint8_t scope, std::string_view name) const;

  std::vector<Rule> rules_;
};

}  // namespace vfsd::passthrough
