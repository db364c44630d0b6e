#include "app/config.h"
#include "app/startup.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
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
  EXPECT_NE(parse({"--socket-path=/tmp/s", "--shared-dir=/tmp", "--cache=sometimes"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/tmp/s", "--shared-dir=/tmp", "--no-such-option"}).exit_code, 0);
}

TEST(CommandLine, CacheNeverDisablesReaddirplus) {
  auto never = parse({"--socket-path=/s", "--shared-dir=/tmp", "--cache=never"});
  ASSERT_TRUE(never.config);
  EXPECT_EQ(never.config->fs.cache, passthrough::CachePolicy::kNever);
  EXPECT_FALSE(never.config->readdirplus);
  auto off = parse(
      {"--socket-path=/s", "--shared-dir=/tmp", "--no-readdirplus", "--no-announce-submounts"});
  ASSERT_TRUE(off.config);
  EXPECT_FALSE(off.config->readdirplus);
  EXPECT_FALSE(off.config->fs.announce_submounts);
}

TEST(CommandLine, FilesystemOptionsReachTheConfig) {
  auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", "--readonly", "--writeback",
                    "--allow-direct-io", "--allow-mmap", "--preserve-noatime", "--killpriv-v2",
                    "--posix-lock", "--flock", "--ascii-casefold", "--rewrite-security-xattrs",
                    "--inode-file-handles=mandatory"});
  ASSERT_TRUE(out.config);
  const auto& fs = out.config->fs;
  EXPECT_TRUE(fs.readonly);
  EXPECT_TRUE(fs.writeback);
  EXPECT_TRUE(fs.allow_direct_io);
  EXPECT_TRUE(fs.allow_mmap);
  EXPECT_TRUE(fs.preserve_noatime);
  EXPECT_TRUE(fs.killpriv_v2);
  EXPECT_TRUE(fs.posix_lock);
  EXPECT_TRUE(fs.flock);
  EXPECT_TRUE(fs.ascii_casefold);
  EXPECT_TRUE(fs.rewrite_security_xattrs);
  EXPECT_FALSE(fs.xattr);
  EXPECT_EQ(fs.inode_file_handles, passthrough::InodeFileHandles::kMandatory);
}

// 1.13.3: the default is prefer, the mode needs '=' (clap's require_equals),
// fallback is a deprecated alias of prefer.
TEST(CommandLine, InodeFileHandlesDefaultsToPreferAndNeedsEquals) {
  auto def = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(def.config);
  EXPECT_EQ(def.config->fs.inode_file_handles, passthrough::InodeFileHandles::kPrefer);
  EXPECT_EQ(def.config->capabilities.keep.count("DAC_READ_SEARCH"), 1u);
  auto never = parse({"--socket-path=/s", "--shared-dir=/tmp", "--inode-file-handles=never"});
  ASSERT_TRUE(never.config);
  EXPECT_EQ(never.config->fs.inode_file_handles, passthrough::InodeFileHandles::kNever);
  EXPECT_EQ(never.config->capabilities.keep.count("DAC_READ_SEARCH"), 0u);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--inode-file-handles"}).exit_code, 0);
  auto spaced = parse({"--socket-path=/s", "--shared-dir=/tmp", "--inode-file-handles", "never"});
  EXPECT_FALSE(spaced.config);
  EXPECT_NE(spaced.exit_code, 0);
  EXPECT_NE(
      parse({"--socket-path=/s", "--shared-dir=/tmp", "--inode-file-handles=sometimes"}).exit_code,
      0);
  auto fallback = parse({"--socket-path=/s", "--shared-dir=/tmp", "--inode-file-handles=fallback"});
  ASSERT_TRUE(fallback.config);
  EXPECT_EQ(fallback.config->fs.inode_file_handles, passthrough::InodeFileHandles::kPrefer);
  ASSERT_EQ(fallback.config->warnings.size(), 1u);
  EXPECT_NE(fallback.config->warnings[0].find("deprecated value 'fallback'"), std::string::npos);
  // As in 1.13.3: DAC_READ_SEARCH cannot go while file handles may be used.
  EXPECT_NE(
      parse({"--socket-path=/s", "--shared-dir=/tmp", "--modcaps=-dac_read_search"}).exit_code, 0);
  EXPECT_TRUE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--modcaps=-dac_read_search",
                     "--inode-file-handles=never"})
                  .config);
}

TEST(CommandLine, ReconnectIsAFlagNotForTheFuseMount) {
  auto def = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(def.config);
  EXPECT_FALSE(def.config->reconnect);
  auto on = parse({"--fd=3", "--shared-dir=/tmp", "--reconnect"});
  ASSERT_TRUE(on.config);
  EXPECT_TRUE(on.config->reconnect);
  EXPECT_NE(parse({"--fuse-mount=/mnt", "--shared-dir=/tmp", "--reconnect"}).exit_code, 0);
}

TEST(CommandLine, XattrImpliedByAclLabelAndMap) {
  for (const char* opt : {"--xattr", "--posix-acl", "--security-label", "--xattrmap=:ok:all:::"}) {
    auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", opt});
    ASSERT_TRUE(out.config) << opt;
    EXPECT_TRUE(out.config->fs.xattr) << opt;
  }
}

TEST(CommandLine, LegacyOptionForm) {
  auto out = parse({"--socket-path=/s", "-o", "source=/tmp,cache=none,xattr,posix_lock", "-o",
                    "flock,no_readdirplus,loglevel=debug"});
  ASSERT_TRUE(out.config);
  const auto& c = *out.config;
  EXPECT_EQ(c.fs.shared_dir, "/tmp");
  EXPECT_EQ(c.fs.cache, passthrough::CachePolicy::kNever);
  EXPECT_TRUE(c.fs.xattr);
  EXPECT_TRUE(c.fs.posix_lock);
  EXPECT_TRUE(c.fs.flock);
  EXPECT_FALSE(c.readdirplus);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_FALSE(c.warnings.empty());  // -o is deprecated: the user is told
}

TEST(CommandLine, LegacyOptionFormRefusesUnknownAndBadValues) {
  EXPECT_NE(parse({"--socket-path=/s", "-o", "source=/tmp,bogus"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/s", "-o", "source=/tmp,cache=never"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/s", "-o", "source=/tmp,timeout=5"}).exit_code, 0);
}

TEST(CommandLine, BadXattrmapIsAUsageError) {
  auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", "--xattrmap=:prefix:all:a:b"});
  EXPECT_FALSE(out.config);
  EXPECT_NE(out.exit_code, 0);
  auto good = parse({"--socket-path=/s", "--shared-dir=/tmp",
                     "--xattrmap=:prefix:all::user.virtiofs.::bad:all:::"});
  EXPECT_TRUE(good.config);
}

TEST(CommandLine, FuseMountReplacesTheSocket) {
  auto out = parse({"--shared-dir=/tmp", "--fuse-mount=/mnt"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->fuse_mountpoint, "/mnt");
  EXPECT_FALSE(parse({"--shared-dir=/tmp", "--fuse-mount=/mnt", "--socket-path=/s"}).config);
}

// Launchers append their users' arguments after their own (Kata,
// microvm.nix): the last value of a repeated option wins, as with clap's
// args_override_self in the Rust virtiofsd.
TEST(CommandLine, ARepeatedOptionsLastValueWins) {
  auto out = parse({"--socket-path=/s", "--shared-dir=/a", "--cache=auto", "--cache", "never",
                    "--shared-dir", "/b", "--log-level=debug", "--log-level=error"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->fs.cache, passthrough::CachePolicy::kNever);
  EXPECT_EQ(out.config->fs.shared_dir, "/b");
  EXPECT_EQ(out.config->log_level, "error");
  // -o still collects every occurrence.
  auto compat = parse({"--socket-path=/s", "-o", "source=/c", "-o", "cache=always,xattr"});
  ASSERT_TRUE(compat.config);
  EXPECT_EQ(compat.config->fs.shared_dir, "/c");
  EXPECT_EQ(compat.config->fs.cache, passthrough::CachePolicy::kAlways);
  EXPECT_TRUE(compat.config->fs.xattr);
}

TEST(CommandLine, RustLogOverridesLogLevel) {
  EXPECT_EQ(log_level_from_rust_log("ERROR"), "error");
  EXPECT_EQ(log_level_from_rust_log("warn"), "warn");
  EXPECT_EQ(log_level_from_rust_log("info,virtiofsd=trace"), "trace");
  EXPECT_EQ(log_level_from_rust_log("virtiofsd=debug,other=error"), "debug");
  EXPECT_EQ(log_level_from_rust_log("other=debug"), std::nullopt);
  EXPECT_EQ(log_level_from_rust_log("virtiofsd"), "trace");
  EXPECT_EQ(log_level_from_rust_log("loud"), std::nullopt);

  ::setenv("RUST_LOG", "ERROR", 1);
  auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", "--log-level=debug"});
  ::unsetenv("RUST_LOG");
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->log_level, "error");
  ::setenv("RUST_LOG", "nonsense", 1);
  auto ignored = parse({"--socket-path=/s", "--shared-dir=/tmp", "--log-level=debug"});
  ::unsetenv("RUST_LOG");
  ASSERT_TRUE(ignored.config);
  EXPECT_EQ(ignored.config->log_level, "debug");
  EXPECT_FALSE(ignored.config->warnings.empty());
}

TEST(CommandLine, MigrationOptionsAreValidated) {
  auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", "--migration-mode=find-paths",
                    "--migration-on-error=guest-error", "--migration-verify-handles",
                    "--migration-confirm-paths"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->migration.mode, "find-paths");
  EXPECT_EQ(out.config->migration.on_error, "guest-error");
  EXPECT_TRUE(out.config->migration.verify_handles);
  EXPECT_TRUE(out.config->migration.confirm_paths);
  auto def = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(def.config);
  EXPECT_EQ(def.config->migration.mode, "find-paths");
  EXPECT_EQ(def.config->migration.on_error, "abort");
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--migration-mode=file-handles",
                   "--migration-verify-handles"})
                .exit_code,
            0);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--migration-mode=teleport"}).exit_code,
            0);
  EXPECT_NE(
      parse({"--socket-path=/s", "--shared-dir=/tmp", "--migration-on-error=ignore"}).exit_code, 0);
}

TEST(CommandLine, PrintCapabilitiesNeedsNothingElseAndExitsZero) {
  auto alone = parse({"--print-capabilities"});
  EXPECT_FALSE(alone.config);
  EXPECT_EQ(alone.exit_code, 0);
  // A wrapper's options come along (crun-vm: --modcaps=... "$@").
  auto wrapped = parse({"--modcaps=-mknod:-setfcap", "--print-capabilities"});
  EXPECT_FALSE(wrapped.config);
  EXPECT_EQ(wrapped.exit_code, 0);
  EXPECT_EQ(capabilities_json(),
            "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"migrate-precopy\",\n    "
            "\"separate-options\"\n  ]\n}\n");
}

// What a refused command line printed: one line naming the option.
std::string refusal(std::vector<const char*> args) {
  ::testing::internal::CaptureStderr();
  auto out = parse(std::move(args));
  std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(out.config);
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), 1) << printed;
  return printed;
}

TEST(CommandLine, TranslateUidAndGidKeepEveryValueInOrder) {
  // Incus's command line for an isolated container, count 0 included.
  auto out =
      parse({"--fd=3", "--shared-dir=/tmp", "--translate-uid=map:0:1000000:65536",
             "--translate-uid=forbid-guest:65536:0", "--translate-gid", "map:0:2000000:10",
             "--translate-uid=forbid-guest:65536:4294901759", "--translate-gid=squash-host:0:7:5"});
  ASSERT_TRUE(out.config);
  const auto& fs = out.config->fs;
  EXPECT_EQ(fs.uid_map.guest_to_host(0), 1000000u);
  EXPECT_EQ(fs.uid_map.guest_to_host(65535), 1065535u);
  EXPECT_FALSE(fs.uid_map.guest_to_host(70000));
  EXPECT_EQ(fs.uid_map.host_to_guest(1000001), 1u);
  EXPECT_EQ(fs.gid_map.guest_to_host(9), 2000009u);
  EXPECT_EQ(fs.gid_map.host_to_guest(4), 7u);
  EXPECT_EQ(fs.gid_map.host_to_guest(2000000), 0u);
  // The uid rules do not leak into the gid map and vice versa.
  EXPECT_EQ(fs.gid_map.guest_to_host(70000), 70000u);
  EXPECT_EQ(fs.uid_map.host_to_guest(4), 4u);
  // One value per occurrence, as clap takes them: a second word is not a
  // second rule.
  EXPECT_NE(
      parse({"--fd=3", "--shared-dir=/tmp", "--translate-uid", "map:0:1:1", "map:5:6:1"}).exit_code,
      0);
  // Without the options: the identity.
  auto none = parse({"--fd=3", "--shared-dir=/tmp"});
  ASSERT_TRUE(none.config);
  EXPECT_TRUE(none.config->fs.uid_map.empty());
  EXPECT_TRUE(none.config->fs.gid_map.empty());
}

TEST(CommandLine, TranslateErrorsAreOneLineNamingTheOption) {
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--translate-uid=squash:0:1:2"}),
            "virtiofsd: --translate-uid: invalid value 'squash:0:1:2': Invalid ID map prefix "
            "squash\n");
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--translate-gid=guest:0:1"}),
            "virtiofsd: --translate-gid: invalid value 'guest:0:1': Invalid ID map length "
            "(expected 3 elements, got 2 elements)\n");
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--translate-uid=map:0:x:1"}),
            "virtiofsd: --translate-uid: invalid value 'map:0:x:1': Invalid value x in ID map: "
            "invalid digit found in string\n");
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--translate-uid=guest:0:100:10",
                     "--translate-uid=map:5:200:1"}),
            "virtiofsd: --translate-uid: 'map:5:200:1': its guest-to-host range overlaps an "
            "earlier rule's\n");
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--translate-gid=guest:4294967290:0:10"}),
            "virtiofsd: --translate-gid: 'guest:4294967290:0:10': range overflow (ids end at "
            "4294967294)\n");
  // The same rule for uids and for gids is no overlap.
  EXPECT_TRUE(parse({"--fd=3", "--shared-dir=/tmp", "--translate-uid=guest:0:100:10",
                     "--translate-gid=guest:0:100:10"})
                  .config);
}

TEST(CommandLine, TranslateConflictsWithPosixAcl) {
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--posix-acl", "--translate-uid=map:0:1:1"}),
            "virtiofsd: --translate-uid cannot be used with --posix-acl (translating ids would "
            "break POSIX ACLs)\n");
  EXPECT_EQ(
      refusal({"--fd=3", "--shared-dir=/tmp", "--translate-gid=map:0:1:1", "-o", "posix_acl"}),
      "virtiofsd: --translate-gid cannot be used with --posix-acl (translating ids would "
      "break POSIX ACLs)\n");
  EXPECT_TRUE(
      parse({"--fd=3", "--shared-dir=/tmp", "--xattr", "--translate-gid=map:0:1:1"}).config);
}

TEST(CommandLine, UidAndGidMapsInRustsSyntax) {
  auto out =
      parse({"--fd=3", "--shared-dir=/tmp",
             "--uid-map=:0:1000:1:", "--uid-map=:1:100000:65536:", "--gid-map", "/0/2000/1/"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->uid_map,
            (std::vector<sandbox::NamespaceIdMap>{{0, 1000, 1}, {1, 100000, 65536}}));
  EXPECT_EQ(out.config->gid_map, (std::vector<sandbox::NamespaceIdMap>{{0, 2000, 1}}));
  std::string message;
  EXPECT_FALSE(parse_namespace_id_map("0:1000:1:", message));
  EXPECT_EQ(message,
            "A delimiter has been found that does not match the delimiter the map started with");
  EXPECT_FALSE(parse_namespace_id_map(":0:1000:1:a", message));
  EXPECT_EQ(message,
            "A delimiter has been found that does not match the delimiter the map started with");
  EXPECT_FALSE(parse_namespace_id_map("", message));
  EXPECT_EQ(message, "The map is empty or incorrect number of values are provided");
  EXPECT_FALSE(parse_namespace_id_map(":0:1000:", message));
  EXPECT_EQ(message, "The map is empty or incorrect number of values are provided");
  EXPECT_FALSE(parse_namespace_id_map(":0:1000:1:2:", message));
  EXPECT_EQ(message, "The map is empty or incorrect number of values are provided");
  EXPECT_FALSE(parse_namespace_id_map(":0:-1:1:", message));
  EXPECT_EQ(message, "invalid digit found in string");
  EXPECT_FALSE(parse_namespace_id_map("/0:1/2/3/", message));
  EXPECT_EQ(message, "invalid digit found in string");
  EXPECT_FALSE(parse_namespace_id_map(":0:4294967296:1:", message));
  EXPECT_EQ(message, "number too large to fit in target type");
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--uid-map=0:1:1"}),
            "virtiofsd: --uid-map: invalid value '0:1:1': A delimiter has been found that does "
            "not match the delimiter the map started with\n");
  // Only the namespace sandbox has a user namespace to map.
  EXPECT_EQ(refusal({"--fd=3", "--shared-dir=/tmp", "--sandbox=none", "--gid-map=:0:1:1:"}),
            "virtiofsd: --gid-map needs --sandbox=namespace (the map is that of its user "
            "namespace), not --sandbox=none\n");
  EXPECT_NE(
      parse({"--fd=3", "--shared-dir=/tmp", "--sandbox=chroot", "--uid-map=:0:1:1:"}).exit_code, 0);
}

TEST(CommandLine, TagIsOneTo36Bytes) {
  auto out = parse({"--socket-path=/s", "--shared-dir=/tmp", "--tag", "myfs"});
  ASSERT_TRUE(out.config);
  EXPECT_EQ(out.config->tag, "myfs");
  auto none = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(none.config);
  EXPECT_TRUE(none.config->tag.empty());
  const std::string longest(36, 't'), too_long(37, 't');
  EXPECT_TRUE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--tag", longest.c_str()}).config);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--tag", too_long.c_str()}).exit_code,
            0);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--tag="}).exit_code, 0);
}

TEST(CommandLine, ThreadPoolSizeDefaultsToZero) {
  auto def = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(def.config);
  EXPECT_EQ(def.config->thread_pool_size, 0u);
  // Kata's default extra arguments, and LXD's two-word form.
  auto kata = parse({"--socket-path=/s", "--shared-dir=/tmp", "--thread-pool-size=1"});
  ASSERT_TRUE(kata.config);
  EXPECT_EQ(kata.config->thread_pool_size, 1u);
  auto lxd = parse({"--fd=3", "--shared-dir", "/tmp", "--thread-pool-size", "0"});
  ASSERT_TRUE(lxd.config);
  EXPECT_EQ(lxd.config->thread_pool_size, 0u);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--thread-pool-size=-1"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--thread-pool-size=many"}).exit_code,
            0);
}

TEST(CommandLine, SeveralRequestQueuesAreOfferedUnlessTheConfigSpaceIsOurs) {
  auto plain = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(plain.config);
  EXPECT_GE(offered_request_queues(*plain.config), 4u);
  auto tagged = parse({"--socket-path=/s", "--shared-dir=/tmp", "--tag=fs"});
  ASSERT_TRUE(tagged.config);
  EXPECT_EQ(offered_request_queues(*tagged.config), 1u);
}

TEST(CommandLine, PollMaxUsDefaultsToAShortPollAndIsBounded) {
  auto def = parse({"--socket-path=/s", "--shared-dir=/tmp"});
  ASSERT_TRUE(def.config);
  EXPECT_EQ(def.config->poll_max_us, 8u);
  auto off = parse({"--socket-path=/s", "--shared-dir=/tmp", "--poll-max-us=0"});
  ASSERT_TRUE(off.config);
  EXPECT_EQ(off.config->poll_max_us, 0u);
  auto set = parse({"--socket-path=/s", "--shared-dir=/tmp", "--poll-max-us=50"});
  ASSERT_TRUE(set.config);
  EXPECT_EQ(set.config->poll_max_us, 50u);
  // A window past a millisecond is a spinning core, not a poll.
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--poll-max-us=5000"}).exit_code, 0);
  EXPECT_NE(parse({"--socket-path=/s", "--shared-dir=/tmp", "--poll-max-us=-1"}).exit_code, 0);
}

}  // namespace
}  // namespace vfsd::app

namespace vfsd::app {
namespace {

// What /proc/self shows in `unshare --map-root-user` (mkosi --become-root)
// and in other namespaces.
TEST(SupplementaryGroups, KeptOnlyInASingleIdNamespaceThatDeniesSetgroups) {
  const std::string one = "         0       1000          1\n";
  EXPECT_TRUE(can_keep_supplementary_groups("deny\n", one, one));
  // The initial namespace, or one whose maps allow setgroups: drop.
  const std::string all = "         0          0 4294967295\n";
  EXPECT_FALSE(can_keep_supplementary_groups("allow\n", all, all));
  EXPECT_FALSE(can_keep_supplementary_groups("allow\n", one, one));
  // More than one id mapped (LXD, --uid-map ranges): drop.
  const std::string range = "0 100000 65536\n";
  const std::string two = "0 1000 1\n1 100000 65536\n";
  EXPECT_FALSE(can_keep_supplementary_groups("deny\n", range, one));
  EXPECT_FALSE(can_keep_supplementary_groups("deny\n", one, two));
  // Unreadable files (empty text): drop.
  EXPECT_FALSE(can_keep_supplementary_groups("", one, one));
  EXPECT_FALSE(can_keep_supplementary_groups("deny\n", "", one));
}

}  // namespace
}  // namespace vfsd::app
