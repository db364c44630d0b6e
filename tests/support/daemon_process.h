// The daemon binary run as a launcher runs it, for tests that look at the
// process from outside (tests/unit/app/daemon_process_test.cc, the soak test).
// The including target defines VFSD_DAEMON_BINARY, the path of build/virtiofsd.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "support/host_files.h"

namespace vfsd::test {

// A daemon started with `args`, with the supplementary groups `groups`
// (empty: as the test's own), stopped with SIGKILL when the test ends.
class DaemonProcess {
 public:
  /// `run_as`: a uid (and gid) to drop to before the exec; 0 stays root.
  /// `prepare`: run in the child first, still as root (e.g. to give it a
  /// mount namespace of its own); the child exits 125 if it returns false.
  DaemonProcess(const std::vector<std::string>& args, const std::vector<gid_t>& groups,
                const std::string& log, uid_t run_as = 0,
                const std::function<bool()>& prepare = nullptr) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (out >= 0) {
        ::dup2(out, STDOUT_FILENO);
        ::dup2(out, STDERR_FILENO);
      }
      if (prepare && !prepare()) _exit(125);
      if (!groups.empty() && ::setgroups(groups.size(), groups.data()) != 0) _exit(126);
      if (run_as != 0 &&
          (::setgroups(0, nullptr) != 0 || ::setresgid(run_as, run_as, run_as) != 0 ||
           ::setresuid(run_as, run_as, run_as) != 0)) {
        _exit(126);
      }
      // A sanitized daemon: LeakSanitizer's check at exit enumerates
      // /proc/PID/task, which the namespace sandbox hides, and fails
      // fatally there (tests/e2e/lib.sh does the same for the guest runs).
      const char* asan = ::getenv("ASAN_OPTIONS");
      const std::string no_leak_check = std::string(asan ? asan : "") + ":detect_leaks=0";
      ::setenv("ASAN_OPTIONS", no_leak_check.c_str(), 1);
      std::vector<char*> argv;
      std::string binary = VFSD_DAEMON_BINARY;
      argv.push_back(binary.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~DaemonProcess() {
    if (pid_ > 0 && !exit_status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  bool alive() {
    if (exit_status_) return false;
    int status = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) == 0) return pid_ > 0;
    exit_status_ = status;
    return false;
  }
  /// Waits for the daemon to exit by itself; its wait status.
  int wait_exit() {
    if (!exit_status_) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      exit_status_ = status;
    }
    return *exit_status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

}  // namespace vfsd::test
