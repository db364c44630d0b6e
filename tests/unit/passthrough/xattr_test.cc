// PassthroughFs extended attributes against a fresh temporary directory
// (ext4 or any filesystem with user.*, trusted.* and POSIX ACL support).
// Every change is checked on the host with the l*xattr calls. Runs as root.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "passthrough/passthrough_fs.h"

namespace vfsd::passthrough {

// Reaches the private creation helpers that the creating operations call.
class XattrTestPeer {
 public:
  static VoidResult apply_security_context(PassthroughFs& fs, const UniqueFd& fd,
                                           const fuse::Extensions& ext) {
    return fs.apply_security_context(fd, ext);
  }
  static mode_t effective_create_mode(const PassthroughFs& fs, const UniqueFd& parent_fd,
                                      mode_t mode, mode_t umask) {
    return fs.effective_create_mode(parent_fd, mode, umask);
  }
};

namespace {

using fuse::InodeId;
using fuse::kRootInode;

constexpr uint64_t kAclFlags = FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT;

// The host's value of `name` on `path` itself (symlinks not followed), or
// nullopt with errno set.
std::optional<std::string> host_get(const std::string& path, const char* name) {
  char buf[65536];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof(buf));
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

// The host's value, or "<absent>", for comparisons that fail cleanly.
std::string host_value(const std::string& path, const char* name) {
  return host_get(path, name).value_or("<absent>");
}

void host_set(const std::string& path, const char* name, const std::string& value) {
  ASSERT_EQ(::lsetxattr(path.c_str(), name, value.data(), value.size(), 0), 0)
      << path << " " << name << ": " << errno_name(errno);
}

std::set<std::string> split_list(const std::string& list) {
  std::set<std::string> names;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find('\0', pos);
    EXPECT_NE(end, std::string::npos) << "list must end with NUL";
    if (end == std::string::npos) break;
    names.insert(list.substr(pos, end - pos));
    pos = end + 1;
  }
  return names;
}

// Moves the guest's trusted.* below trusted.guest. on the host: a mapped name
// is the administrator's choice, so the guest may use it.
constexpr const char* kTrustedMap = ":prefix:all:trusted.:trusted.guest.::ok:all:::";

class XattrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "these tests run as root";
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-xattr-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    std::ofstream(path("file")) << "data";
    ASSERT_EQ(::mkdir(path("dir").c_str(), 0755), 0);
    ASSERT_EQ(::symlink("file", path("link").c_str()), 0);
    ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0644), 0);
    config_.shared_dir = root_;
    config_.xattr = true;
  }
  void TearDown() override {
    fs_.reset();
    std::filesystem::remove_all(root_);
    ::umask(old_umask_);
  }

  // Creates the fs from config_ and runs INIT with `kernel_flags`.
  void start(uint64_t kernel_flags = 0) {
    auto fs = PassthroughFs::create(config_);
    ASSERT_TRUE(fs.has_value()) << errno_name(fs.error().value);
    fs_ = std::move(*fs);
    auto init = fs_->init(fuse::InitRequest{kernel_flags});
    ASSERT_TRUE(init.has_value());
    init_reply_ = *init;
  }

  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  InodeId ino(std::string_view name) {
    auto e = fs_->lookup(ctx_, kRootInode, *fuse::Name::from(name));
    EXPECT_TRUE(e.has_value()) << name;
    return e ? e->inode : InodeId{0};
  }

  Result<std::string> get(InodeId inode, std::string_view name, uint32_t size = 65536) {
    auto r = fs_->getxattr(ctx_, inode, name, size);
    if (!r) return tl::unexpected(r.error());
    return r->data;
  }
  std::string get_value(InodeId inode, std::string_view name) {
    auto r = get(inode, name);
    return r ? *r : "<" + errno_name(r.error().value) + ">";
  }
  VoidResult set(InodeId inode, std::string_view name, std::string_view value, uint32_t flags = 0,
                 uint32_t setxattr_flags = 0) {
    return fs_->setxattr(ctx_, inode, name, value, flags, setxattr_flags);
  }
  std::set<std::string> list(InodeId inode) {
    auto r = fs_->listxattr(ctx_, inode, 65536);
    EXPECT_TRUE(r.has_value()) << (r ? "" : errno_name(r.error().value));
    if (!r) return {};
    EXPECT_EQ(r->size, r->data.size());
    return split_list(r->data);
  }

  std::string root_;
  mode_t old_umask_ = 0;
  PassthroughConfig config_;
  std::unique_ptr<PassthroughFs> fs_;
  fuse::InitReply init_reply_;
  fuse::Context ctx_;
};

TEST_F(XattrTest, WithoutXattrOptionEveryOpIsEnosys) {
  config_.xattr = false;
  start();
  host_set(path("file"), "user.a", "1");
  InodeId f = ino("file");
  EXPECT_EQ(fs_->getxattr(ctx_, f, "user.a", 100).error().value, ENOSYS);
  EXPECT_EQ(fs_->listxattr(ctx_, f, 100).error().value, ENOSYS);
  EXPECT_EQ(set(f, "user.b", "2").error().value, ENOSYS);
  EXPECT_EQ(fs_->removexattr(ctx_, f, "user.a").error().value, ENOSYS);
  EXPECT_FALSE(host_get(path("file"), "user.b"));
  EXPECT_EQ(host_value(path("file"), "user.a"), "1");
}

TEST_F(XattrTest, RegularFileSetGetListRemove) {
  start();
  InodeId f = ino("file");
  ASSERT_TRUE(set(f, "user.color", "blue"));
  EXPECT_EQ(host_value(path("file"), "user.color"), "blue");
  EXPECT_EQ(get_value(f, "user.color"), "blue");
  EXPECT_TRUE(list(f).contains("user.color"));
  ASSERT_TRUE(fs_->removexattr(ctx_, f, "user.color"));
  EXPECT_FALSE(host_get(path("file"), "user.color"));
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(get(f, "user.color").error().value, ENODATA);
  EXPECT_EQ(fs_->removexattr(ctx_, f, "user.color").error().value, ENODATA);
}

TEST_F(XattrTest, CreateAndReplaceFlags) {
  start();
  InodeId f = ino("file");
  EXPECT_EQ(set(f, "user.k", "1", XATTR_REPLACE).error().value, ENODATA);
  ASSERT_TRUE(set(f, "user.k", "1", XATTR_CREATE));
  EXPECT_EQ(set(f, "user.k", "2", XATTR_CREATE).error().value, EEXIST);
  ASSERT_TRUE(set(f, "user.k", "3", XATTR_REPLACE));
  EXPECT_EQ(host_value(path("file"), "user.k"), "3");
  EXPECT_EQ(set(f, "user.k", "4", 0x80).error().value, EINVAL);
}

TEST_F(XattrTest, SizeQueryAndErange) {
  start();
  InodeId f = ino("file");
  host_set(path("file"), "user.v", "0123456789");
  host_set(path("file"), "user.w", "x");
  auto query = fs_->getxattr(ctx_, f, "user.v", 0);
  ASSERT_TRUE(query);
  EXPECT_EQ(query->size, 10u);
  EXPECT_TRUE(query->data.empty());
  auto exact = fs_->getxattr(ctx_, f, "user.v", 10);
  ASSERT_TRUE(exact);
  EXPECT_EQ(exact->data, "0123456789");
  EXPECT_EQ(fs_->getxattr(ctx_, f, "user.v", 9).error().value, ERANGE);
  // A huge request size is capped, not allocated.
  auto huge = fs_->getxattr(ctx_, f, "user.v", 0xffffffffu);
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->data, "0123456789");

  auto list_query = fs_->listxattr(ctx_, f, 0);
  ASSERT_TRUE(list_query);
  const size_t full = std::string("user.v\0user.w\0", 14).size();
  EXPECT_EQ(list_query->size, full);
  EXPECT_TRUE(list_query->data.empty());
  auto short_list = fs_->listxattr(ctx_, f, static_cast<uint32_t>(full - 1));
  ASSERT_FALSE(short_list);
  EXPECT_EQ(short_list.error().value, ERANGE);
  auto names = fs_->listxattr(ctx_, f, static_cast<uint32_t>(full));
  ASSERT_TRUE(names);
  EXPECT_EQ(split_list(names->data), (std::set<std::string>{"user.v", "user.w"}));
}

TEST_F(XattrTest, HostileNamesAndValues) {
  start();
  InodeId f = ino("file");
  EXPECT_EQ(set(f, "", "v").error().value, EINVAL);
  EXPECT_EQ(set(f, std::string_view("user.a\0b", 8), "v").error().value, EINVAL);
  EXPECT_EQ(set(f, "user." + std::string(300, 'n'), "v").error().value, ERANGE);
  EXPECT_EQ(get(f, "user." + std::string(300, 'n')).error().value, ERANGE);
  EXPECT_EQ(set(f, "user.big", std::string(64 * 1024 + 1, 'v')).error().value, E2BIG);
  EXPECT_EQ(get(fuse::InodeId{9999}, "user.a").error().value, EBADF);
  EXPECT_EQ(fs_->listxattr(ctx_, fuse::InodeId{9999}, 10).error().value, EBADF);
}

TEST_F(XattrTest, Directory) {
  start();
  InodeId d = ino("dir");
  ASSERT_TRUE(set(d, "user.d", "dirval"));
  EXPECT_EQ(host_value(path("dir"), "user.d"), "dirval");
  EXPECT_EQ(get_value(d, "user.d"), "dirval");
  EXPECT_TRUE(list(d).contains("user.d"));
}

TEST_F(XattrTest, SymlinkItselfNotItsTarget) {
  // trusted.* is the only namespace Linux allows on symlinks besides
  // security.*; the guest reaches it only through a mapping (see
  // GuestCannotReachHostTrustedNamespaceByItsOwnName).
  config_.xattrmap = kTrustedMap;
  start();
  InodeId l = ino("link");
  // Linux allows user.* only on regular files and directories.
  EXPECT_EQ(set(l, "user.x", "1").error().value, EPERM);
  EXPECT_FALSE(host_get(path("file"), "user.x"));
  EXPECT_EQ(get(l, "user.x").error().value, ENODATA);
  ASSERT_TRUE(set(l, "trusted.t", "on-link"));
  EXPECT_EQ(host_value(path("link"), "trusted.guest.trusted.t"), "on-link");
  EXPECT_FALSE(host_get(path("file"), "trusted.guest.trusted.t"))
      << "the target must stay untouched";
  EXPECT_EQ(get_value(l, "trusted.t"), "on-link");
  EXPECT_EQ(list(l), std::set<std::string>{"trusted.t"});
  ASSERT_TRUE(fs_->removexattr(ctx_, l, "trusted.t"));
  EXPECT_FALSE(host_get(path("link"), "trusted.guest.trusted.t"));
}

TEST_F(XattrTest, GuestCannotReachHostTrustedNamespaceByItsOwnName) {
  start();
  InodeId f = ino("file");
  ASSERT_EQ(::setxattr(path("file").c_str(), "trusted.host", "h", 1, 0), 0);
  EXPECT_EQ(set(f, "trusted.t", "x").error().value, EPERM);
  EXPECT_FALSE(host_get(path("file"), "trusted.t"));
  EXPECT_EQ(get(f, "trusted.host").error().value, ENODATA);
  EXPECT_EQ(fs_->removexattr(ctx_, f, "trusted.host").error().value, EPERM);
  EXPECT_EQ(host_value(path("file"), "trusted.host"), "h");
  EXPECT_FALSE(list(f).contains("trusted.host"));
}

TEST_F(XattrTest, FifoIsNeverOpened) {
  config_.xattrmap = kTrustedMap;
  start();
  InodeId p = ino("fifo");
  // Opening a FIFO could block, and opening a device could act on it: an
  // inotify watch sees any open of the node.
  UniqueFd watch(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  ASSERT_TRUE(watch);
  ASSERT_GE(::inotify_add_watch(watch.get(), path("fifo").c_str(), IN_OPEN), 0);
  ASSERT_TRUE(set(p, "trusted.f", "fifo"));
  EXPECT_EQ(host_value(path("fifo"), "trusted.guest.trusted.f"), "fifo");
  EXPECT_EQ(get_value(p, "trusted.f"), "fifo");
  EXPECT_EQ(list(p), std::set<std::string>{"trusted.f"});
  ASSERT_TRUE(fs_->removexattr(ctx_, p, "trusted.f"));
  char events[4096];
  EXPECT_EQ(::read(watch.get(), events, sizeof(events)), -1) << "the FIFO was opened";
  EXPECT_EQ(errno, EAGAIN);
}

TEST_F(XattrTest, PathBasedCallsLeaveTheWorkingDirectoryAlone) {
  config_.xattrmap = kTrustedMap;
  start();
  char before[4096];
  ASSERT_NE(::getcwd(before, sizeof(before)), nullptr);
  InodeId l = ino("link");
  ASSERT_TRUE(set(l, "trusted.t", "1"));
  EXPECT_TRUE(get(l, "trusted.t"));
  char after[4096];
  ASSERT_NE(::getcwd(after, sizeof(after)), nullptr);
  EXPECT_STREQ(before, after);
  // Another thread's working directory is never moved either.
  std::string other_before, other_after;
  std::thread other([&] {
    char buf[4096];
    other_before = ::getcwd(buf, sizeof(buf));
    ASSERT_TRUE(set(l, "trusted.u", "2"));
    other_after = ::getcwd(buf, sizeof(buf));
  });
  other.join();
  EXPECT_EQ(other_before, other_after);
  ASSERT_NE(::getcwd(after, sizeof(after)), nullptr);
  EXPECT_STREQ(before, after);
}

// --- POSIX ACLs -------------------------------------------------------------

// The raw xattr value of an ACL, made by setfacl on a scratch file.
std::string acl_value(const std::string& scratch, const std::string& spec, bool default_acl) {
  std::string cmd =
      "setfacl " + std::string(default_acl ? "-d " : "") + "-m '" + spec + "' '" + scratch + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto value =
      host_get(scratch, default_acl ? "system.posix_acl_default" : "system.posix_acl_access");
  EXPECT_TRUE(value.has_value());
  return value.value_or("");
}

TEST_F(XattrTest, InitAsksForAndRequiresAclAndSecurityFlags) {
  start();
  EXPECT_EQ(init_reply_.wanted_flags & (kAclFlags | FUSE_SECURITY_CTX), 0u);
  EXPECT_EQ(init_reply_.required_flags, 0u);
  config_.posix_acl = true;
  config_.security_label = true;
  start(kAclFlags | FUSE_SECURITY_CTX);
  EXPECT_EQ(init_reply_.wanted_flags & (kAclFlags | FUSE_SECURITY_CTX),
            kAclFlags | FUSE_SECURITY_CTX);
  EXPECT_EQ(init_reply_.required_flags & (kAclFlags | FUSE_SECURITY_CTX),
            kAclFlags | FUSE_SECURITY_CTX);
}

TEST_F(XattrTest, AclNamesAreRefusedAndHiddenWithoutPosixAcl) {
  start();
  std::ofstream(path("scratch")) << "";
  std::string acl = acl_value(path("scratch"), "u:1234:r", false);
  InodeId f = ino("file");
  EXPECT_EQ(set(f, "system.posix_acl_access", acl).error().value, ENOTSUP);
  EXPECT_FALSE(host_get(path("file"), "system.posix_acl_access"));
  EXPECT_EQ(get(ino("scratch"), "system.posix_acl_access").error().value, ENOTSUP);
  host_set(path("scratch"), "user.visible", "1");
  EXPECT_EQ(list(ino("scratch")), std::set<std::string>{"user.visible"});
}

TEST_F(XattrTest, AclSetGetAndKillSgid) {
  config_.posix_acl = true;
  start(kAclFlags);
  std::ofstream(path("scratch")) << "";
  std::string acl = acl_value(path("scratch"), "u:1234:rw", false);
  ASSERT_EQ(::chmod(path("file").c_str(), 02775), 0);
  InodeId f = ino("file");

  // Without the flag the SGID bit stays (the caller was in the group).
  ASSERT_TRUE(set(f, "system.posix_acl_access", acl));
  EXPECT_EQ(host_value(path("file"), "system.posix_acl_access"), acl);
  EXPECT_EQ(get_value(f, "system.posix_acl_access"), acl);
  EXPECT_TRUE(list(f).contains("system.posix_acl_access"));
  struct stat st {};
  ASSERT_EQ(::stat(path("file").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_ISGID);

  // With FUSE_SETXATTR_ACL_KILL_SGID the bit goes, and the ACL is set.
  ASSERT_TRUE(set(f, "system.posix_acl_access", acl, 0, FUSE_SETXATTR_ACL_KILL_SGID));
  ASSERT_EQ(::stat(path("file").c_str(), &st), 0);
  EXPECT_FALSE(st.st_mode & S_ISGID);
  EXPECT_EQ(host_value(path("file"), "system.posix_acl_access"), acl);

  // The flag on any other name changes nothing.
  ASSERT_EQ(::chmod(path("file").c_str(), 02775), 0);
  ASSERT_TRUE(set(f, "user.n", "v", 0, FUSE_SETXATTR_ACL_KILL_SGID));
  ASSERT_EQ(::stat(path("file").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_ISGID);
}

TEST_F(XattrTest, AclNotActiveWhenGuestLacksTheFlags) {
  config_.posix_acl = true;
  start(FUSE_POSIX_ACL);  // no DONT_MASK / SETXATTR_EXT: the server fails INIT
  EXPECT_EQ(init_reply_.required_flags & kAclFlags, kAclFlags);
  std::ofstream(path("scratch")) << "";
  std::string acl = acl_value(path("scratch"), "u:1234:r", false);
  EXPECT_EQ(set(ino("file"), "system.posix_acl_access", acl).error().value, ENOTSUP);
}

// --- --xattrmap ---------------------------------------------------------------

TEST_F(XattrTest, XattrmapMovesGuestNamesAndFiltersTheList) {
  config_.xattrmap = ":map:trusted.:user.virtiofs.:";
  start();
  InodeId f = ino("file");
  ASSERT_TRUE(set(f, "trusted.overlay.opaque", "y"));
  EXPECT_EQ(host_value(path("file"), "user.virtiofs.trusted.overlay.opaque"), "y");
  EXPECT_FALSE(host_get(path("file"), "trusted.overlay.opaque"));
  EXPECT_EQ(get_value(f, "trusted.overlay.opaque"), "y");
  // The host's own trusted.* is neither visible nor reachable.
  host_set(path("file"), "trusted.host", "secret");
  host_set(path("file"), "user.plain", "p");
  EXPECT_EQ(list(f), (std::set<std::string>{"trusted.overlay.opaque", "user.plain"}));
  // The guest may not use the host-side prefix itself: EPERM, and absent on get.
  EXPECT_EQ(set(f, "user.virtiofs.x", "1").error().value, EPERM);
  EXPECT_EQ(get(f, "user.virtiofs.trusted.overlay.opaque").error().value, ENODATA);
  EXPECT_EQ(fs_->removexattr(ctx_, f, "user.virtiofs.trusted.overlay.opaque").error().value, EPERM);
  ASSERT_TRUE(fs_->removexattr(ctx_, f, "trusted.overlay.opaque"));
  EXPECT_FALSE(host_get(path("file"), "user.virtiofs.trusted.overlay.opaque"));
  EXPECT_EQ(host_value(path("file"), "trusted.host"), "secret");
}

TEST_F(XattrTest, XattrmapUnsupportedAndBad) {
  config_.xattrmap =
      "/unsupported/all/security.selinux/security.selinux/ /bad/all/user.no./user.no./ "
      "/ok/all///";
  start();
  InodeId f = ino("file");
  EXPECT_EQ(set(f, "security.selinux", "l").error().value, ENOTSUP);
  EXPECT_EQ(get(f, "security.selinux").error().value, ENOTSUP);
  EXPECT_EQ(set(f, "user.no.x", "1").error().value, EPERM);
  EXPECT_EQ(get(f, "user.no.x").error().value, ENODATA);
  host_set(path("file"), "user.no.host", "1");
  host_set(path("file"), "user.yes", "1");
  EXPECT_EQ(list(f), std::set<std::string>{"user.yes"});
}

TEST_F(XattrTest, BadXattrmapFailsCreateAndValidateNamesTheRule) {
  config_.xattrmap = ":ok:all::: :prefix:all:a:b";
  auto fs = PassthroughFs::create(config_);
  ASSERT_FALSE(fs.has_value());
  EXPECT_EQ(fs.error().value, EINVAL);
  std::string message;
  auto valid = validate_config(config_, message);
  ASSERT_FALSE(valid.has_value());
  EXPECT_EQ(valid.error().value, EINVAL);
  EXPECT_NE(message.find("rule 2"), std::string::npos) << message;
  config_.xattrmap = ":ok:all:::";
  message.clear();
  EXPECT_TRUE(validate_config(config_, message).has_value());
  EXPECT_TRUE(message.empty());
}

// --- --rewrite-security-xattrs ------------------------------------------------

TEST_F(XattrTest, RewriteSecurityXattrs) {
  config_.rewrite_security_xattrs = true;
  start();
  InodeId f = ino("file");
  ASSERT_TRUE(set(f, "security.ima", "hash"));
  EXPECT_EQ(host_value(path("file"), "user.virtiofs.security.ima"), "hash");
  EXPECT_FALSE(host_get(path("file"), "security.ima"));
  EXPECT_EQ(get_value(f, "security.ima"), "hash");
  // security.selinux is not rewritten.
  ASSERT_TRUE(set(f, "security.selinux", "label"));
  EXPECT_EQ(host_value(path("file"), "security.selinux"), "label");
  // The stored copies are not the guest's to touch by their own names.
  EXPECT_EQ(set(f, "user.virtiofs.security.ima", "x").error().value, EPERM);
  EXPECT_EQ(get(f, "user.virtiofs.security.ima").error().value, ENODATA);
  EXPECT_EQ(fs_->removexattr(ctx_, f, "user.virtiofs.security.ima").error().value, EPERM);
  // The host's own security.* labels stay hidden; the prefix is stripped.
  host_set(path("file"), "security.host", "h");
  host_set(path("file"), "user.other", "o");
  EXPECT_EQ(list(f), (std::set<std::string>{"security.ima", "security.selinux", "user.other"}));
  ASSERT_TRUE(fs_->removexattr(ctx_, f, "security.ima"));
  EXPECT_FALSE(host_get(path("file"), "user.virtiofs.security.ima"));
}

// --- creation helpers -----------------------------------------------------------

TEST_F(XattrTest, SecurityContextStoredThroughTheMap) {
  config_.xattr = false;  // labels on create do not depend on --xattr
  config_.security_label = true;
  config_.xattrmap = ":map:security.selinux:trusted.virtiofs.:";
  start(FUSE_SECURITY_CTX);
  fuse::Extensions ext;
  ext.security_context = fuse::SecurityContext{"security.selinux", "system_u:object_r:t:s0"};
  const std::string label = "system_u:object_r:t:s0";

  // A real fd (the O_TMPFILE / create path) and O_PATH fds of every type.
  UniqueFd file(::open(path("file").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd dir(::open(path("dir").c_str(), O_PATH | O_CLOEXEC));
  UniqueFd link(::open(path("link").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  UniqueFd fifo(::open(path("fifo").c_str(), O_PATH | O_CLOEXEC));
  for (const auto& [fd, rel] : {std::pair{&file, "file"}, std::pair{&dir, "dir"},
                                std::pair{&link, "link"}, std::pair{&fifo, "fifo"}}) {
    ASSERT_TRUE(XattrTestPeer::apply_security_context(*fs_, *fd, ext)) << rel;
    EXPECT_EQ(host_get(path(rel), "trusted.virtiofs.security.selinux").value_or("<none>"), label)
        << rel;
    EXPECT_FALSE(host_get(path(rel), "security.selinux")) << rel;
  }
}

TEST_F(XattrTest, SecurityContextAbsentIsANoOp) {
  config_.xattrmap = ":map:security.selinux:trusted.virtiofs.:";
  start();
  UniqueFd file(::open(path("file").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(XattrTestPeer::apply_security_context(*fs_, file, fuse::Extensions{}));
  char names[1024];
  EXPECT_EQ(::llistxattr(path("file").c_str(), names, sizeof(names)), 0);
}

TEST_F(XattrTest, SecurityContextFailureIsReported) {
  // Mapped into user.*, which a symlink cannot carry: the caller must learn
  // it failed (and removes the node).
  config_.xattrmap = ":map:security.:user.guest.:";
  start();
  fuse::Extensions ext;
  ext.security_context = fuse::SecurityContext{"security.selinux", "l"};
  UniqueFd link(::open(path("link").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  auto r = XattrTestPeer::apply_security_context(*fs_, link, ext);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().value, EPERM);
  // A name the map refuses is refused too.
  ext.security_context = fuse::SecurityContext{"user.guest.x", "l"};
  UniqueFd file(::open(path("file").c_str(), O_RDWR | O_CLOEXEC));
  EXPECT_EQ(XattrTestPeer::apply_security_context(*fs_, file, ext).error().value, EPERM);
  EXPECT_FALSE(host_get(path("file"), "user.guest.user.guest.x"));
}

TEST_F(XattrTest, CreateModeAppliesUmaskUnlessParentHasDefaultAcl) {
  UniqueFd dir(::open(path("dir").c_str(), O_PATH | O_CLOEXEC));
  // ACLs off: the umask always applies; the type bits stay.
  start();
  EXPECT_EQ(XattrTestPeer::effective_create_mode(*fs_, dir, S_IFREG | 0666, 022), S_IFREG | 0644u);
  config_.posix_acl = true;
  start(kAclFlags);
  EXPECT_EQ(XattrTestPeer::effective_create_mode(*fs_, dir, 0777, 027), 0750u);
  ASSERT_EQ(std::system(("setfacl -d -m u::rwx,g::rwx,o::rwx '" + path("dir") + "'").c_str()), 0);
  // A default ACL replaces the umask: the host applies the ACL to the bits.
  EXPECT_EQ(XattrTestPeer::effective_create_mode(*fs_, dir, 0777, 027), 0777u);
  EXPECT_EQ(XattrTestPeer::effective_create_mode(*fs_, dir, S_IFCHR | 04777, 027),
            S_IFCHR | 04777u);
  // Without negotiated ACLs the parent's ACL does not matter.
  config_.posix_acl = false;
  start();
  EXPECT_EQ(XattrTestPeer::effective_create_mode(*fs_, dir, 0777, 027), 0750u);
}

}  // namespace
}  // namespace vfsd::passthrough
