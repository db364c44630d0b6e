// A file name as the guest sent it, validated once in the protocol layer.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace vfsd::fuse {

/// A single path component: non-empty, at most NAME_MAX bytes, without '/'
/// or NUL. It may be "." or ".." (only LOOKUP accepts those; the server
/// rejects them for every other operation).
class Name {
 public:
  /// Parses a name from raw request bytes that must end with a NUL within
  /// `bytes`; nullopt if the name is invalid.
  static std::optional<Name> parse(std::string_view bytes_with_nul);
  /// Validates a name that has no terminating NUL (tests, host code).
  static std::optional<Name> from(std::string_view name);
  /// Why parse() refused `bytes_with_nul`: ENAMETOOLONG for a well-framed
  /// name longer than NAME_MAX (what the host would answer), else EINVAL.
  static int parse_error(std::string_view bytes_with_nul);

  std::string_view view() const { return name_; }
  /// NUL-terminated, for the *at() syscalls.
  const char* c_str() const { return name_.c_str(); }
  bool is_dot() const { return name_ == "."; }
  bool is_dotdot() const { return name_ == ".."; }
  bool is_dot_or_dotdot() const { return is_dot() || is_dotdot(); }

 private:
  explicit Name(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

}  // namespace vfsd::fuse
