// Host-side checks shared by the tests that look at what the daemon did to
// the shared directory: read and write host files, stat them, count our fds.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace vfsd::test {

inline std::string read_host(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_host(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

/// lstat() that fails the test when the path is missing.
inline struct stat host_lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

/// The fds this process holds: the leak checks compare it before and after.
inline int count_open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// Whether the filesystem of `dir` itself takes fallocate(`mode`) (e.g.
/// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_COLLAPSE_RANGE,
/// FALLOC_FL_INSERT_RANGE): a probe on a plain file of its own there, four
/// blocks long with the first block as the range, removed afterwards. A
/// test may skip on the host's inability, never on the daemon's answer.
inline bool host_fallocate_supported(const std::string& dir, int mode) {
  std::string probe = dir + "/.vfsd-fallocate-probe";
  int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    ADD_FAILURE() << "cannot create the probe " << probe << ": " << std::strerror(errno);
    return false;
  }
  struct stat st {};
  ::fstat(fd, &st);
  off_t block = st.st_blksize > 0 ? st.st_blksize : 4096;
  std::string data(static_cast<size_t>(4 * block), 'p');
  bool wrote = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  int rc = wrote ? ::fallocate(fd, mode, 0, block) : -1;
  int error = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  EXPECT_TRUE(wrote) << "writing the probe " << probe;
  if (rc == 0) return true;
  EXPECT_TRUE(error == EOPNOTSUPP || error == ENOSYS)
      << "fallocate probe, mode " << mode << ": " << std::strerror(error);
  return false;
}

/// The value of `key` in /proc/PID/status ("?" if absent).
inline std::string status_line(pid_t pid, const std::string& key) {
  std::string status = test::read_host("/proc/" + std::to_string(pid) + "/status");
  auto pos = status.find("\n" + key + ":");
  if (pos == std::string::npos) return "?";
  auto start = status.find_first_not_of(" \t", pos + key.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

/// The one child of `pid` (0 if none).
inline pid_t only_child_of(pid_t pid) {
  std::string children = test::read_host("/proc/" + std::to_string(pid) + "/task/" +
                                         std::to_string(pid) + "/children");
  return children.empty() ? 0 : static_cast<pid_t>(std::stol(children));
}

}  // namespace vfsd::test
