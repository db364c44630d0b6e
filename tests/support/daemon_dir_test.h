// A fixture for tests that start the real daemon binary: a fresh folder
// under /tmp with the shared directory and the vhost-user socket path in
// it, removed afterwards. The daemon runs as root, as launchers start it.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "support/host_files.h"

namespace vfsd::test {

class DaemonDirTest : public ::testing::Test {
 protected:
  /// `name` tells the folders of different tests apart (/tmp/vfsd-NAME-XXXXXX).
  explicit DaemonDirTest(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the daemon's normal user)";
    std::string tmpl = "/tmp/vfsd-" + name_ + "-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    share_ = dir_ + "/share";
    ASSERT_EQ(::mkdir(share_.c_str(), 0755), 0);
    socket_ = dir_ + "/vhost.sock";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  /// What the daemon logged, for tests that send its output to daemon.log.
  std::string log() const { return read_host(dir_ + "/daemon.log"); }

  std::string dir_, share_, socket_;

 private:
  std::string name_;
};

}  // namespace vfsd::test
