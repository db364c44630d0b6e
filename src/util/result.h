// Errors as values: a Result<T> carries either a T or the errno that the
// guest (or the start-up code) should see. No exceptions on the request path.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include <tl/expected.hpp>

namespace vfsd {

/// A positive errno value (ENOENT, EINVAL, ...).
struct Errno {
  int value = 0;
  friend bool operator==(Errno, Errno) = default;
};

template <class T>
using Result = tl::expected<T, Errno>;

using VoidResult = Result<void>;

/// The failure branch of a Result: `return fail(ENOENT);`
inline tl::unexpected<Errno> fail(int error) { return tl::unexpected<Errno>(Errno{error}); }

/// The failure branch for the errno the last syscall left behind.
inline tl::unexpected<Errno> fail_errno() { return fail(errno); }

inline VoidResult ok() { return {}; }

inline std::string errno_name(int error) { return std::strerror(error); }

}  // namespace vfsd

/// Propagates the error of an expression returning Result<...>.
#define VFSD_TRY(expr)                                                   \
  do {                                                                   \
    if (auto vfsd_try_result_ = (expr); !vfsd_try_result_.has_value()) { \
      return tl::unexpected(vfsd_try_result_.error());                   \
    }                                                                    \
  } while (0)
