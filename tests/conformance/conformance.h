// The conformance suite: what a program sees when it uses a directory served
// by a virtio-fs daemon, call by call, with the exact errno.
//
// The same static binary runs on the host (over a plain directory, or over
// `virtiofsd --fuse-mount`) and inside the test guest (over a virtiofs mount).
// Cases are grouped by feature; a profile names the daemon options it needs
// and the groups that run under it. Every case runs in a process of its own,
// in a fresh directory `<root>/<group>.<case>`, and prints one line:
//
//   CONF <group>/<case> PASS|FAIL|SKIP expected=<value> got=<value> [step=..] [note=..]
//
// Where the answer depends on the kernel (the guest's 6.1 or 6.12, or the
// host's for --fuse-mount), the case says so in its expectation instead of
// accepting either answer.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vfsd::conformance {

/// Where and how the suite runs.
struct Env {
  std::string mode;     // "plain" (a host directory), "host" (--fuse-mount), "guest"
  std::string profile;  // which daemon options are on (see profiles())
  std::string root;     // the directory under test
  std::string backing;  // the host directory behind root; empty in the guest
  std::string kernel;   // uname -r of the kernel answering the calls
  int kmajor = 0;
  int kminor = 0;

  /// True when the calls go through FUSE (host or guest mode).
  bool fuse() const { return mode != "plain"; }
  bool guest() const { return mode == "guest"; }
  bool kernel_at_least(int major, int minor) const {
    return kmajor > major || (kmajor == major && kminor >= minor);
  }
};

struct Verdict {
  enum Kind { kPass, kFail, kSkip };
  Kind kind = kPass;
  std::string expected;
  std::string got;
  std::string step;  // the call that decided the verdict
  std::string note;  // why the expectation is what it is (kernel differences)
};

/// Collects the checks of one case. The first failing check decides the
/// verdict; later checks are skipped (they return false) so a case can chain
/// them with `&&` or early returns.
class Checker {
 public:
  /// Expects a syscall result `rc` to be a success (not -1).
  bool ok(std::string_view step, long rc);
  /// Expects `rc == -1` with errno `want` (errno read right after the call).
  bool err(std::string_view step, long rc, int want);
  /// Expects rc: 0 when want is 0, else -1 with errno want.
  bool result(std::string_view step, long rc, int want) {
    return want == 0 ? ok(step, rc) : err(step, rc, want);
  }
  bool eq(std::string_view step, long long got, long long want);
  bool eq_str(std::string_view step, std::string_view got, std::string_view want);
  bool eq_oct(std::string_view step, unsigned got, unsigned want);
  bool truth(std::string_view step, bool cond, std::string_view want, std::string_view got);
  /// Adds the kernel-dependence explanation printed with the verdict.
  void note(std::string_view text);
  bool failed() const { return failed_; }

  Verdict done() const;
  Verdict skip(std::string_view why) const;

 private:
  void record(std::string_view step, std::string want, std::string got, bool pass);

  bool failed_ = false;
  std::string expected_ = "-", got_ = "-", step_, note_;
};

using CaseFn = std::function<Verdict(const Env&, const std::string& dir)>;

struct CaseDef {
  std::string group;
  std::string name;
  CaseFn fn;
};

std::vector<CaseDef>& registry();

struct Registrar {
  Registrar(const char* group, const char* name, CaseFn fn);
};

#define CONF_CASE(group, name)                                                                 \
  static ::vfsd::conformance::Verdict conf_case_##group##_##name(                              \
      [[maybe_unused]] const ::vfsd::conformance::Env& env,                                    \
      [[maybe_unused]] const std::string& dir);                                                \
  static ::vfsd::conformance::Registrar conf_reg_##group##_##name(#group, #name,               \
                                                                  conf_case_##group##_##name); \
  static ::vfsd::conformance::Verdict conf_case_##group##_##name(                              \
      [[maybe_unused]] const ::vfsd::conformance::Env& env,                                    \
      [[maybe_unused]] const std::string& dir)

/// Host-side steps of a profile, run on the shared directory itself: prepare
/// (fixtures, before the daemon starts) and checks (after it stopped, e.g.
/// that a read-only share left atimes alone). A host check's `dir` is the
/// shared directory; it prints as `CONF host.<profile>/<name>`.
using PrepareFn = std::function<bool(const std::string& backing, std::string& error)>;
std::vector<std::pair<std::string, PrepareFn>>& prepare_registry();
std::vector<CaseDef>& host_check_registry();  // CaseDef::group is the profile

struct PrepareRegistrar {
  PrepareRegistrar(const char* profile, PrepareFn fn);
};
struct HostCheckRegistrar {
  HostCheckRegistrar(const char* profile, const char* name, CaseFn fn);
};

#define CONF_PREPARE(profile)                                                               \
  static bool conf_prepare_##profile(const std::string& backing, std::string& error);       \
  static ::vfsd::conformance::PrepareRegistrar conf_prep_##profile(#profile,                \
                                                                   conf_prepare_##profile); \
  static bool conf_prepare_##profile(const std::string& backing, std::string& error)

#define CONF_HOST_CHECK(profile, name)                                         \
  static ::vfsd::conformance::Verdict conf_host_##profile##_##name(            \
      [[maybe_unused]] const ::vfsd::conformance::Env& env,                    \
      [[maybe_unused]] const std::string& dir);                                \
  static ::vfsd::conformance::HostCheckRegistrar conf_hreg_##profile##_##name( \
      #profile, #name, conf_host_##profile##_##name);                          \
  static ::vfsd::conformance::Verdict conf_host_##profile##_##name(            \
      [[maybe_unused]] const ::vfsd::conformance::Env& env,                    \
      [[maybe_unused]] const std::string& dir)

// ---- helpers shared by the cases (helpers.cc) --------------------------------

/// "ENOENT", or the number for an errno without a name; "0" for success.
std::string errno_name(int e);
/// Writes `data` to a new file (O_CREAT|O_TRUNC) with `mode`. False on error.
bool write_file(const std::string& path, std::string_view data, mode_t mode = 0644);
/// The whole content of a file; `ok` false on error.
std::string read_file(const std::string& path, bool* ok = nullptr);
/// errno of the last failing call helper, 0 on success.
int last_errno();

/// Runs `fn` in a child process with the given credentials (setgroups,
/// setresgid, setresuid, in that order) and returns its verdict. The child
/// starts with umask 022.
Verdict as_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                const std::function<Verdict()>& fn);
/// Runs one call as that user: 0 on success, its errno on failure (fn
/// returns the syscall's result), -1000 when switching credentials failed.
int errno_as_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                  const std::function<long()>& fn);

/// The test users (numbers only: the static binary reads no passwd file).
inline constexpr uid_t kUser = 1000;
inline constexpr gid_t kUserGid = 1000;
inline constexpr gid_t kSuppGid = 2000;  // a supplementary group of kUser
inline constexpr uid_t kOther = 1001;
inline constexpr gid_t kOtherGid = 1001;

/// getxattr/lgetxattr as a string; `err` receives the errno (0 on success).
std::string get_xattr(const std::string& path, const std::string& name, int* err);
/// llistxattr as a list of names; `err` receives the errno. A reply of one
/// NUL byte is one empty name, an empty reply no name.
std::vector<std::string> list_xattrs(const std::string& path, int* err);
/// The names in a listxattr reply of `n` bytes (what list_xattrs parses).
std::vector<std::string> split_xattr_list(const char* buf, size_t n);
/// "a,b"; "(none)" for no item, and an empty item shows as "" (so an empty
/// list, one empty name and "a" after an empty name all differ).
std::string join(const std::vector<std::string>& items, char sep = ',');
/// The xattr names of `path` (llistxattr) as join() shows them, or
/// "error:<errno>" when the call fails, so an error never reads as "(none)".
std::string xattr_names(const std::string& path, bool sorted = false);

/// Waits up to `ms` for a byte on `fd`; false on timeout.
bool wait_readable(int fd, int ms);

}  // namespace vfsd::conformance
