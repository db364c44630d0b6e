// Shared pieces of the /dev/fuse tests: temporary directories and the skip
// conditions (a failure instead under CI).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "fuse/server.h"
#include "fusedev/session.h"
#include "passthrough/passthrough_fs.h"
#include "support/host_files.h"

namespace vfsd::fusedev::testing {

/// A fresh directory under /tmp, removed with its contents afterwards.
class TempDir {
 public:
  explicit TempDir(const char* tag) {
    std::string pattern = std::string("/tmp/vfsd-fusedev-") + tag + "-XXXXXX";
    if (char* made = ::mkdtemp(pattern.data())) path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// Why the host cannot run a FUSE mount, or nullopt if it can.
inline std::optional<std::string> cannot_mount() {
  if (::geteuid() != 0) return "mounting FUSE needs root";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is missing or not accessible";
  return std::nullopt;
}

/// True when the environment variable CI is set ("0" and "false" count as
/// unset), as .ci/run does. The CI machine runs as root with /dev/fuse, so
/// there a fusedev test that would skip has found a broken setup, and
/// ctest would count the skip as a pass.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  if (!ci || !*ci) return false;
  std::string v = ci;
  return v != "0" && v != "false";
}

/// Skips the current test for `reason` (a std::string), or fails it under CI.
#define VFSD_SKIP_OR_FAIL_IN_CI(reason)                                                  \
  do {                                                                                   \
    const std::string vfsd_reason_ = (reason);                                           \
    if (::vfsd::fusedev::testing::in_ci()) {                                             \
      FAIL() << "CI is set, so this test must run, but it would skip: " << vfsd_reason_; \
    }                                                                                    \
    GTEST_SKIP() << vfsd_reason_;                                                        \
  } while (0)

#define VFSD_SKIP_WITHOUT_FUSE()                                  \
  do {                                                            \
    if (auto reason = ::vfsd::fusedev::testing::cannot_mount()) { \
      VFSD_SKIP_OR_FAIL_IN_CI(*reason);                           \
    }                                                             \
  } while (0)

// The host-file helpers of tests/support, under the names these tests use.
inline std::string read_file(const std::string& path) {
  return ::vfsd::test::read_host(path);
}
inline void write_file(const std::string& path, const std::string& data) {
  ::vfsd::test::write_host(path, data);
}

inline bool is_mounted(const std::string& path) {
  char resolved[PATH_MAX];
  if (!::realpath(path.c_str(), resolved)) return false;
  return find_mount(resolved).has_value();
}

}  // namespace vfsd::fusedev::testing
