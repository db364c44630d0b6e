// Errors as values: a Result<T> carries either a T or the errno that the
// guest (or the start-up code) should see. No exceptions on the request path.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace vfsd {

/// A positive errno value (ENOENT, EINVAL, ...).
struct Errno {
  int value = 0;
  friend bool operator==(Errno, Errno) = default;
};

/// A T or an Errno. [[nodiscard]]: a call whose failure nobody looks at is a
/// bug (tl::expected itself does not say so).
template <class T>
class [[nodiscard]] Result : public tl::expected<T, Errno> {
 public:
  using tl::expected<T, Errno>::expected;
  Result() = default;
  Result(tl::expected<T, Errno> value) : tl::expected<T, Errno>(std::move(value)) {}
};

using VoidResult = Result<void>;

/// The failure branch of a Result: `return fail(ENOENT);`
inline tl::unexpected<Errno> fail(int error) {
  return tl::unexpected<Errno>(Errno{error});
}

/// The failure branch for the errno the last syscall left behind.
inline tl::unexpected<Errno> fail_errno() {
  return fail(errno);
}

inline VoidResult ok() {
  return {};
}

/// The symbolic name of an errno value ("ENOENT"), or its number for a value
/// the C library does not know. Thread-safe (no shared buffer).
inline std::string errno_name(int error) {
  if (const char* name = ::strerrorname_np(error)) return name;
  return std::to_string(error);
}

}  // namespace vfsd

#define VFSD_RESULT_CONCAT_INNER_(a, b) a##b
#define VFSD_RESULT_CONCAT_(a, b) VFSD_RESULT_CONCAT_INNER_(a, b)

/// Propagates the error of an expression returning Result<...>.
#define VFSD_TRY(expr)                                                   \
  do {                                                                   \
    if (auto vfsd_try_result_ = (expr); !vfsd_try_result_.has_value()) { \
      return tl::unexpected(vfsd_try_result_.error());                   \
    }                                                                    \
  } while (0)

/// Evaluates `expr` (a Result<T>); on failure returns its error from the
/// enclosing function, else moves the value into `lhs`, which may declare a
/// variable in the enclosing scope:
///
///   VFSD_ASSIGN_OR_RETURN(auto fd, open_beneath(dir, name, O_PATH));
///   VFSD_ASSIGN_OR_RETURN(existing, lookup(...));  // assigns
///
/// `lhs` may not contain unparenthesised commas (use a type alias).
// `lhs` is a declaration and `result` a name: neither can be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define VFSD_ASSIGN_OR_RETURN(lhs, expr) \
  VFSD_ASSIGN_OR_RETURN_IMPL_(VFSD_RESULT_CONCAT_(vfsd_aor_result_, __LINE__), lhs, expr)

#define VFSD_ASSIGN_OR_RETURN_IMPL_(result, lhs, expr) \
  auto result = (expr);                                \
  if (!result.has_value()) [[unlikely]] {              \
    return tl::unexpected(std::move(result).error());  \
  }                                                    \
  lhs = std::move(*result)
// NOLINTEND(bugprone-macro-parentheses)
