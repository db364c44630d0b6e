// vfsd_conformance: the profiles, and the commands the runners call.
//
//   vfsd_conformance profiles
//       one line per profile: NAME <TAB> ours|both <TAB> daemon options
//       ("both": the Rust virtiofsd has these options too)
//   vfsd_conformance groups [PROFILE]     PROFILE group/case: what `run` runs
//   vfsd_conformance checks [PROFILE]     PROFILE host.PROFILE/name: what `check` runs
//   vfsd_conformance selftest             checks the helpers the verdicts rest on
//   vfsd_conformance prepare PROFILE SHARED_DIR      (host, before the daemon starts)
//   vfsd_conformance run --mode=plain|host|guest --profile=PROFILE
//                        [--backing=SHARED_DIR] [--only=GROUP[/CASE]] DIR
//   vfsd_conformance check PROFILE SHARED_DIR        (host, after the daemon stopped)
//
// `run` and `check` print CONF lines and a final
// `CONF-SUMMARY passed=N failed=N skipped=N`, and exit 1 if a case failed.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "conformance.h"

namespace vfsd::conformance {

Verdict receive_verdict(int fd, pid_t child, const char* what);
void run_isolated_send(int fd, const Verdict& v);

std::vector<std::pair<std::string, PrepareFn>>& prepare_registry() {
  static std::vector<std::pair<std::string, PrepareFn>> steps;
  return steps;
}
std::vector<CaseDef>& host_check_registry() {
  static std::vector<CaseDef> checks;
  return checks;
}
PrepareRegistrar::PrepareRegistrar(const char* profile, PrepareFn fn) {
  prepare_registry().emplace_back(profile, std::move(fn));
}
HostCheckRegistrar::HostCheckRegistrar(const char* profile, const char* name, CaseFn fn) {
  host_check_registry().push_back(CaseDef{profile, name, std::move(fn)});
}

namespace {

struct Profile {
  const char* name;
  bool rust;            // the Rust virtiofsd 1.13 has every option of it
  const char* options;  // space-separated daemon options
  std::vector<std::string> groups;
};

// The single list of profiles; the runners read it with `profiles`.
const std::vector<Profile>& profiles() {
  static const std::vector<Profile> list = {
      {"default",
       true,
       "--cache=auto",
       {"basic", "io", "ioctl", "perm", "xattr_off", "locks", "killpriv", "suid"}},
      {"writeback", true, "--cache=always --writeback", {"basic", "io", "suid"}},
      {"metadata", true, "--cache=metadata", {"io", "suid"}},
      {"never", true, "--cache=never", {"io", "suid"}},
      {"mmap", true, "--cache=never --allow-mmap", {"io", "suid"}},
      {"handles", true, "--inode-file-handles=mandatory", {"basic", "perm"}},
      {"killpriv", true, "--killpriv-v2", {"killpriv", "suid"}},
      {"killpriv_never", true, "--killpriv-v2 --cache=never", {"suid"}},
      {"xattr", true, "--xattr", {"xattr"}},
      {"xattrmap",
       true,
       "--xattr --xattrmap=:prefix:all::user.virtiofs.::bad:all:::",
       {"xattrmap"}},
      {"acl", true, "--posix-acl", {"acl", "suid"}},
      {"acl_never", true, "--posix-acl --cache=never", {"suid"}},
      {"readonly", true, "--readonly --xattr", {"readonly"}},
      {"seclabel",
       true,
       "--security-label --xattrmap=:map:security.selinux:user.virtiofs.:",
       {"seclabel"}},
      {"locks", false, "--posix-lock --flock", {"locks"}},
      {"casefold", false, "--ascii-casefold", {"casefold"}},
      {"rewrite", false, "--xattr --rewrite-security-xattrs", {"rewrite"}},
      // Only with --mode=plain: the groups whose native answers are the
      // reference (a host directory has xattrs, ACLs and real locks).
      {"plain",
       false,
       "",
       {"basic", "io", "ioctl", "perm", "xattr", "acl", "locks", "killpriv", "suid"}},
  };
  return list;
}

const Profile* find_profile(const std::string& name) {
  for (const auto& p : profiles()) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

struct Totals {
  int passed = 0, failed = 0, skipped = 0;
};

void print_verdict(const std::string& label, const Verdict& v, Totals& t) {
  const char* kind = v.kind == Verdict::kPass ? "PASS" : v.kind == Verdict::kFail ? "FAIL" : "SKIP";
  std::string line = "CONF " + label + " " + kind + " expected=" + v.expected + " got=" + v.got;
  if (!v.step.empty()) line += " step=" + v.step;
  if (!v.note.empty()) line += " note=" + v.note;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (v.kind == Verdict::kPass) ++t.passed;
  if (v.kind == Verdict::kFail) ++t.failed;
  if (v.kind == Verdict::kSkip) ++t.skipped;
}

// Each case runs in a child of its own: a crash, a hang (alarm), a leaked fd
// or a changed umask stays there.
Verdict run_isolated(const CaseDef& c, const Env& env, const std::string& dir) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Verdict{Verdict::kFail, "pipe", errno_name(errno)};
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    umask(022);
    alarm(60);
    Verdict v = c.fn(env, dir);
    run_isolated_send(p[1], v);
    _exit(0);
  }
  close(p[1]);
  return receive_verdict(p[0], pid, "case");
}

int finish(const Totals& t) {
  std::printf("CONF-SUMMARY passed=%d failed=%d skipped=%d\n", t.passed, t.failed, t.skipped);
  std::fflush(stdout);
  return t.failed ? 1 : 0;
}

Env make_env(const std::string& mode, const std::string& profile, const std::string& root,
             const std::string& backing) {
  Env env;
  env.mode = mode;
  env.profile = profile;
  env.root = root;
  env.backing = backing;
  struct utsname u;
  if (uname(&u) == 0) {
    env.kernel = u.release;
    std::sscanf(u.release, "%d.%d", &env.kmajor, &env.kminor);
  }
  return env;
}

int cmd_run(int argc, char** argv) {
  std::string mode = "plain", profile, backing, only, root;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mode=", 0) == 0) {
      mode = a.substr(7);
    } else if (a.rfind("--profile=", 0) == 0) {
      profile = a.substr(10);
    } else if (a.rfind("--backing=", 0) == 0) {
      backing = a.substr(10);
    } else if (a.rfind("--only=", 0) == 0) {
      only = a.substr(7);
    } else if (root.empty() && a[0] != '-') {
      root = a;
    } else {
      std::fprintf(stderr, "run: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const Profile* p = find_profile(profile);
  if (!p || root.empty() || (mode != "plain" && mode != "host" && mode != "guest")) {
    std::fprintf(stderr, "usage: run --mode=plain|host|guest --profile=P [--backing=D] DIR\n");
    return 2;
  }
  if (mode == "plain" && backing.empty()) backing = root;
  Env env = make_env(mode, profile, root, backing);
  std::printf("CONF-START mode=%s profile=%s kernel=%s root=%s\n", mode.c_str(), profile.c_str(),
              env.kernel.c_str(), root.c_str());
  Totals t;
  for (const auto& group : p->groups) {
    for (const auto& c : registry()) {
      if (c.group != group) continue;
      std::string label = c.group + "/" + c.name;
      if (!only.empty() && only != c.group && only != label) continue;
      std::string dir = root + "/" + c.group + "." + c.name;
      // The read-only share cannot take a directory per case: its cases
      // share the fixture the prepare step made.
      if (c.group == "readonly") {
        dir = root + "/ro";
      } else if (mkdir(dir.c_str(), 0755) != 0) {
        print_verdict(label, Verdict{Verdict::kFail, "0", errno_name(errno), "mkdir_case_dir"}, t);
        continue;
      }
      print_verdict(label, run_isolated(c, env, dir), t);
    }
  }
  return finish(t);
}

int cmd_prepare(const std::string& profile, const std::string& backing) {
  for (const auto& [name, fn] : prepare_registry()) {
    if (name != profile) continue;
    std::string error;
    if (!fn(backing, error)) {
      std::fprintf(stderr, "prepare %s: %s\n", profile.c_str(), error.c_str());
      return 1;
    }
  }
  return 0;
}

int cmd_check(const std::string& profile, const std::string& backing) {
  Env env = make_env("host", profile, backing, backing);
  Totals t;
  for (const auto& c : host_check_registry()) {
    if (c.group != profile) continue;
    print_verdict("host." + c.group + "/" + c.name, run_isolated(c, env, backing), t);
  }
  return finish(t);
}

// The helpers the verdicts rest on (ctest conformance_selftest): the
// rendering of name lists must tell every list apart.
int cmd_selftest() {
  int bad = 0;
  auto expect = [&](const char* what, const std::string& got, const std::string& want) {
    if (got != want) {
      std::printf("SELFTEST FAIL %s: got %s, want %s\n", what, got.c_str(), want.c_str());
      ++bad;
    }
  };
  expect("join_empty", join({}), "(none)");
  expect("join_one_empty_name", join({""}), "\"\"");
  expect("join_empty_then_a", join({"", "a"}), "\"\",a");
  expect("join_a_then_empty", join({"a", ""}), "a,\"\"");
  expect("join_two", join({"a", "b"}), "a,b");
  expect("split_nothing", join(split_xattr_list("", 0)), "(none)");
  expect("split_one_nul", join(split_xattr_list("\0", 1)), "\"\"");
  expect("split_two", join(split_xattr_list("user.a\0user.b\0", 14)), "user.a,user.b");
  expect("split_unterminated", join(split_xattr_list("user.a\0user.b", 13)),
         "user.a,user.b(no_NUL)");
  expect("xattr_names_error", xattr_names("/nonexistent/vfsd-selftest"), "error:ENOENT");
  std::printf("SELFTEST %s\n", bad ? "FAIL" : "PASS");
  return bad ? 1 : 0;
}

}  // namespace
}  // namespace vfsd::conformance

int main(int argc, char** argv) {
  using namespace vfsd::conformance;
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "profiles") {
    for (const auto& p : profiles()) {
      if (std::string(p.name) == "plain") continue;
      std::printf("%s\t%s\t%s\n", p.name, p.rust ? "both" : "ours", p.options);
    }
    return 0;
  }
  // The runners compare what ran with these lists: a case missing from a
  // run's output fails the run.
  if ((cmd == "groups" || cmd == "checks") && argc <= 3) {
    std::string only = argc == 3 ? argv[2] : "";
    if (!only.empty() && !find_profile(only)) {
      std::fprintf(stderr, "%s: no profile %s\n", cmd.c_str(), only.c_str());
      return 2;
    }
    for (const auto& p : profiles()) {
      if (!only.empty() && only != p.name) continue;
      if (cmd == "checks") {
        for (const auto& c : host_check_registry()) {
          if (c.group == p.name) std::printf("%s host.%s/%s\n", p.name, p.name, c.name.c_str());
        }
        continue;
      }
      for (const auto& g : p.groups) {
        for (const auto& c : registry()) {
          if (c.group == g) std::printf("%s %s/%s\n", p.name, g.c_str(), c.name.c_str());
        }
      }
    }
    return 0;
  }
  if (cmd == "selftest") return cmd_selftest();
  if (cmd == "run") return cmd_run(argc - 2, argv + 2);
  if ((cmd == "prepare" || cmd == "check") && argc == 4) {
    return cmd == "prepare" ? cmd_prepare(argv[2], argv[3]) : cmd_check(argv[2], argv[3]);
  }
  std::fprintf(
      stderr,
      "usage: vfsd_conformance profiles | groups [PROFILE] | checks [PROFILE] | selftest |\n"
      "       prepare PROFILE DIR | check PROFILE DIR |\n"
      "       run --mode=plain|host|guest --profile=P [--backing=DIR] [--only=G[/C]] DIR\n");
  return 2;
}
