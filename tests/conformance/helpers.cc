// Shared helpers of the conformance cases: verdict bookkeeping, file and
// xattr shortcuts, and running a check as a non-root user.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

// Console lines are split on whitespace: keep values one token.
std::string token(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') c = '_';
  }
  return out.empty() ? "''" : out;
}

thread_local int g_last_errno = 0;

}  // namespace

std::string errno_name(int e) {
  if (e == 0) return "0";
  const char* n = strerrorname_np(e);
  return n ? n : std::to_string(e);
}

int last_errno() {
  return g_last_errno;
}

void Checker::record(std::string_view step, std::string want, std::string got, bool pass) {
  if (failed_) return;
  step_ = token(step);
  expected_ = token(want);
  got_ = token(got);
  if (!pass) failed_ = true;
}

bool Checker::ok(std::string_view step, long rc) {
  if (failed_) return false;
  const int e = errno;
  const bool pass = rc != -1;
  record(step, "0", pass ? "0" : errno_name(e), pass);
  return pass;
}

bool Checker::err(std::string_view step, long rc, int want) {
  if (failed_) return false;
  const int e = errno;
  const bool pass = rc == -1 && e == want;
  record(step, errno_name(want), rc == -1 ? errno_name(e) : "0", pass);
  return pass;
}

bool Checker::eq(std::string_view step, long long got, long long want) {
  if (failed_) return false;
  record(step, std::to_string(want), std::to_string(got), got == want);
  return got == want;
}

bool Checker::eq_str(std::string_view step, std::string_view got, std::string_view want) {
  if (failed_) return false;
  record(step, std::string(want), std::string(got), got == want);
  return got == want;
}

bool Checker::eq_oct(std::string_view step, unsigned got, unsigned want) {
  if (failed_) return false;
  char g[16], w[16];
  snprintf(g, sizeof g, "0%o", got);
  snprintf(w, sizeof w, "0%o", want);
  record(step, w, g, got == want);
  return got == want;
}

bool Checker::truth(std::string_view step, bool cond, std::string_view want, std::string_view got) {
  if (failed_) return false;
  record(step, std::string(want), std::string(got), cond);
  return cond;
}

void Checker::note(std::string_view text) {
  if (!note_.empty()) note_ += ';';
  note_ += token(text);
}

Verdict Checker::done() const {
  return Verdict{failed_ ? Verdict::kFail : Verdict::kPass, expected_, got_, step_, note_};
}

Verdict Checker::skip(std::string_view why) const {
  return Verdict{Verdict::kSkip, "-", "-", "", token(why)};
}

std::vector<CaseDef>& registry() {
  static std::vector<CaseDef> cases;
  return cases;
}

Registrar::Registrar(const char* group, const char* name, CaseFn fn) {
  registry().push_back(CaseDef{group, name, std::move(fn)});
}

bool write_file(const std::string& path, std::string_view data, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    g_last_errno = errno;
    return false;
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      g_last_errno = errno;
      close(fd);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    g_last_errno = errno;
    return false;
  }
  g_last_errno = 0;
  return true;
}

std::string read_file(const std::string& path, bool* ok) {
  std::string out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    g_last_errno = errno;
    if (ok) *ok = false;
    return out;
  }
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  g_last_errno = n < 0 ? errno : 0;
  close(fd);
  if (ok) *ok = n == 0;
  return out;
}

std::string get_xattr(const std::string& path, const std::string& name, int* err) {
  char buf[65536];
  ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  if (n < 0) {
    *err = errno;
    return {};
  }
  *err = 0;
  return std::string(buf, static_cast<size_t>(n));
}

std::vector<std::string> list_xattrs(const std::string& path, int* err) {
  char buf[65536];
  ssize_t n = llistxattr(path.c_str(), buf, sizeof buf);
  if (n < 0) {
    *err = errno;
    return {};
  }
  *err = 0;
  return split_xattr_list(buf, static_cast<size_t>(n));
}

std::vector<std::string> split_xattr_list(const char* buf, size_t n) {
  std::vector<std::string> names;
  // Every name ends with a NUL: one NUL byte is one empty name, not an
  // empty list; a last name without its NUL is shown as such.
  for (size_t i = 0; i < n;) {
    size_t len = strnlen(buf + i, n - i);
    std::string name(buf + i, len);
    if (len == n - i) name += "(no_NUL)";
    i += len + 1;
    names.push_back(std::move(name));
  }
  return names;
}

std::string join(const std::vector<std::string>& items, char sep) {
  if (items.empty()) return "(none)";
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i].empty() ? "\"\"" : items[i];
  }
  return out;
}

std::string xattr_names(const std::string& path, bool sorted) {
  int e = 0;
  auto names = list_xattrs(path, &e);
  if (e) return "error:" + errno_name(e);
  if (sorted) std::sort(names.begin(), names.end());
  return join(names);
}

bool wait_readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  int rc;
  do {
    rc = poll(&p, 1, ms);
  } while (rc < 0 && errno == EINTR);
  return rc > 0;
}

namespace {

bool enter_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  umask(022);
  return setgroups(groups.size(), groups.data()) == 0 && setresgid(gid, gid, gid) == 0 &&
         setresuid(uid, uid, uid) == 0;
}

// Fields of a verdict travel NUL-separated through a pipe.
void send_verdict(int fd, const Verdict& v) {
  std::string msg = std::to_string(static_cast<int>(v.kind));
  for (const auto* f : {&v.expected, &v.got, &v.step, &v.note}) {
    msg += '\0';
    msg += *f;
  }
  ssize_t n = write(fd, msg.data(), msg.size());
  (void)n;
}

}  // namespace

Verdict receive_verdict(int fd, pid_t child, const char* what);

Verdict as_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                const std::function<Verdict()>& fn) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Verdict{Verdict::kFail, "pipe", errno_name(errno)};
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    Verdict v;
    if (!enter_user(uid, gid, groups)) {
      v = Verdict{Verdict::kFail, "0", errno_name(errno), "switch_credentials"};
    } else {
      v = fn();
    }
    send_verdict(p[1], v);
    _exit(0);
  }
  close(p[1]);
  return receive_verdict(p[0], pid, "as_user");
}

int errno_as_user(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                  const std::function<long()>& fn) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    if (!enter_user(uid, gid, groups)) _exit(255);
    long rc = fn();
    _exit(rc == -1 ? (errno & 0xff) : 0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 255) return -1000;
  return WEXITSTATUS(status);
}

Verdict receive_verdict(int fd, pid_t child, const char* what) {
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) msg.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (msg.empty()) {
    std::string how = WIFSIGNALED(status)
                          ? std::string("signal_") + std::to_string(WTERMSIG(status))
                          : "exit_" + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) how = "timeout";
    return Verdict{Verdict::kFail, "verdict", how, what};
  }
  std::vector<std::string> f;
  size_t start = 0;
  for (size_t i = 0; i <= msg.size(); ++i) {
    if (i == msg.size() || msg[i] == '\0') {
      f.push_back(msg.substr(start, i - start));
      start = i + 1;
    }
  }
  f.resize(5);
  return Verdict{static_cast<Verdict::Kind>(std::stoi(f[0])), f[1], f[2], f[3], f[4]};
}

void run_isolated_send(int fd, const Verdict& v) {
  send_verdict(fd, v);
}

}  // namespace vfsd::conformance
