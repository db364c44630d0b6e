#include "app/config.h"

#include <gtest/gtest.h>

#include <vector>

namespace vfsd::app {
namespace {

ParseOutcome parse(std::vector<const char*> args) {
  args.insert(args.begin(), "virtiofsd");
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

TEST(CommandLine, SocketPathAndSharedDir) {
  auto out = parse({"--socket-path=/tmp/x.sock", "--shared-dir=/tmp"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->socket_path, "/tmp/x.sock");
  EXPECT_EQ(out.config->fs.shared_dir, "/tmp");
  EXPECT_FALSE(out.config->listen_fd);
  EXPECT_EQ(out.config->fs.cache, passthrough::CachePolicy::kAuto);
  EXPECT_TRUE(out.config->readdirplus);
  EXPECT_TRUE(out.config->fs.announce_submounts);
}

TEST(CommandLine, InheritedFd) {
  auto out = parse({"--fd", "3", "--shared-dir", "/tmp"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->listen_fd, 3);
}

TEST(CommandLine, RefusesMissingOrConflictingSocket) {
  EXPECT_FALSE(parse({"--shared-dir=/tmp"}).config);
  auto both = parse({"--shared-dir=/tmp", "--fd=3", "--socket-path=/tmp/s"});
  EXPECT_FALSE(both.config);
  EXPECT_NE(both.exit_code, 0);
}

TEST(CommandLine, RefusesMissingSharedDirAndBadValues) {
  EXPECT_NE(parse({"--socket-path=/tmp/s"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/tmp/s", "--shared-dir=/nonexistent/dir"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/tmp/s", "--shared-dir=/tmp", "--cache=sometimes"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/tmp/s", "--shared-dir=/tmp", "--no-such-option"}).exit_code, 0);
}

TEST(CommandLine, CacheNeverDisablesReaddirplus) {
  auto never = parse({"--socket-path=/s", "--shared-dir=/tmp", "--cache=never"});
  ASSERT_TRUE(never.config);
  EXPECT_EQ(never.config->fs.cache, passthrough::CachePolicy::kNever);
  EXPECT_FALSE(never.config->readdirplus);
  auto off = parse({"--socket-path=/s", "--shared-dir=/tmp", "--no-readdirplus",
                    "--no-announce-submounts"});
  ASSERT_TRUE(off.config);
  EXPECT_FALSE(off.config->readdirplus);
  EXPECT_FALSE(off.config->fs.announce_submounts);
}

}  // namespace
}  // namespace vfsd::app
