// Target fuse_passthrough: fuse::Server::handle over a real
// passthrough::PassthroughFs (optionally behind ReadOnlyFs), sharing a
// scratch directory.
//
// The scratch share is a small tmpfs (16 MiB, 4096 inodes, nodev: a device
// node the guest makes cannot be opened as a device) mounted in a private
// mount namespace of the fuzzer process, under /tmp/vfsd-fuzz-pt-XXXXXX/share.
// Before every input it is mounted afresh and filled with a few entries
// (files, a directory tree, symlinks pointing in and out, a FIFO, setuid and
// setgid entries, a sticky world-writable folder, xattrs); the filesystem and the server are new
// for every input, and destroyed after it. So state never carries over between inputs and cannot
// grow; within an input, any sequence goes (INIT, DESTROY, INIT, FORGET, locks that wait, ...).
//
// Checked after every input, besides fuse_driver.h's reply checks: every
// deferred reply (SETLKW) was finished; the process holds exactly the fds it
// held before (the filesystem closed everything it opened); and nothing
// outside the share changed (a canary folder beside it).
//
// Input: three configuration bytes, then frames (fuse_driver.h).
//   byte 0  bit 0 the harness sends an INIT first; bits 1-2 which guest's
//           (0 Linux 6.1, 1 and 3 Linux 6.12, 2 a 7.37 one); bit 3
//           readdirplus; bits 4-5 cache never|metadata|auto|always; bit 6
//           --readonly; bit 7 --writeback
//   byte 1  bit 0 --xattr; 1 --posix-acl; 2 --security-label; 3 an
//           --xattrmap; bits 4-5 --inode-file-handles never|prefer|
//           mandatory|never; 6 --posix-lock; 7 --flock
//   byte 2  bit 0 --ascii-casefold; 1 --rewrite-security-xattrs;
//           2 --killpriv-v2; 3 --no-announce-submounts; 4 --allow-direct-io;
//           5 --allow-mmap; 6 --preserve-noatime; 7 max_write 4 KiB
//
// Needs root (mount namespace, tmpfs, the credential switching of the
// passthrough).
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "fuse/server.h"
#include "fuse_driver.h"
#include "fuzz_common.h"
#include "guest_init.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/read_only_fs.h"

using namespace vfsd;
using namespace vfsd::fuzz;

namespace {

std::string g_base;   // /tmp/vfsd-fuzz-pt-XXXXXX
std::string g_share;  // g_base/share: the tmpfs the guest sees
std::string g_outside;
bool g_warm = false;

[[noreturn]] void setup_failed(const char* what) {
  std::fprintf(stderr, "fuse_passthrough: %s: %s (the target needs root)\n", what,
               std::strerror(errno));
  std::abort();
}

void write_file(const std::string& path, const std::string& content, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) setup_failed(path.c_str());
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    setup_failed(path.c_str());
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

// What must not change: the canary folder beside the share and its file.
struct Canary {
  struct stat dir {
  }, file{};
  static Canary take() {
    Canary c;
    if (::lstat(g_outside.c_str(), &c.dir) != 0 ||
        ::lstat((g_outside + "/canary").c_str(), &c.file) != 0) {
      die("the canary outside the share is gone");
    }
    return c;
  }
  static bool same(const struct stat& a, const struct stat& b) {
    return a.st_ino == b.st_ino && a.st_mode == b.st_mode && a.st_nlink == b.st_nlink &&
           a.st_uid == b.st_uid && a.st_gid == b.st_gid && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
           a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
  }
  bool operator==(const Canary& o) const { return same(dir, o.dir) && same(file, o.file); }
};
Canary g_canary;

// A fresh tmpfs with the share's initial entries.
void reset_share() {
  ::umount2(g_share.c_str(), MNT_DETACH);
  if (::mount("vfsd-fuzz", g_share.c_str(), "tmpfs", MS_NODEV,
              "size=16m,nr_inodes=4096,mode=0755") != 0) {
    setup_failed("mount tmpfs");
  }
  const std::string s = g_share + "/";
  std::string pattern(4096, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>('a' + i % 26);
  write_file(s + "file", pattern, 0644);
  ::setxattr((s + "file").c_str(), "user.fuzz", "1", 1, 0);
  ::setxattr((s + "file").c_str(), "trusted.fuzz", "2", 1, 0);
  write_file(s + "empty", "", 0600);
  ::chown((s + "empty").c_str(), 1000, 1000);
  write_file(s + "Mixed", "case", 0644);
  write_file(s + "suid", "#!/bin/sh\n", 06755);
  ::mkdir((s + "dir").c_str(), 0755);
  write_file(s + "dir/inner", "hello", 0644);
  ::mkdir((s + "dir/sub").c_str(), 0700);
  ::mkdir((s + "pub").c_str(), 01777);
  ::chmod((s + "pub").c_str(), 01777);
  ::mkdir((s + "sgid").c_str(), 02775);
  ::chown((s + "sgid").c_str(), 0, 100);
  ::chmod((s + "sgid").c_str(), 02775);
  ::symlink("file", (s + "link").c_str());
  ::symlink("/etc/passwd", (s + "abs").c_str());
  ::symlink("../outside/canary", (s + "up").c_str());
  ::mkfifo((s + "fifo").c_str(), 0644);
  ::link((s + "file").c_str(), (s + "hard").c_str());
}

void cleanup() {
  if (g_share.empty()) return;
  ::umount2(g_share.c_str(), MNT_DETACH);
  ::unlink((g_outside + "/canary").c_str());
  ::rmdir(g_outside.c_str());
  ::rmdir(g_share.c_str());
  ::rmdir(g_base.c_str());
}

passthrough::PassthroughConfig make_config(uint8_t c0, uint8_t c1, uint8_t c2) {
  passthrough::PassthroughConfig config;
  config.shared_dir = g_share;
  static constexpr passthrough::CachePolicy kCache[4] = {
      passthrough::CachePolicy::kNever, passthrough::CachePolicy::kMetadata,
      passthrough::CachePolicy::kAuto, passthrough::CachePolicy::kAlways};
  config.cache = kCache[(c0 >> 4) & 3];
  config.readonly = (c0 & 64) != 0;
  config.writeback = (c0 & 128) != 0;
  config.xattr = (c1 & 1) != 0;
  config.posix_acl = (c1 & 2) != 0;
  config.security_label = (c1 & 4) != 0;
  if (c1 & 8) config.xattrmap = ":prefix:all:trusted.:user.virtiofs.trusted.::ok:all:::";
  static constexpr passthrough::InodeFileHandles kHandles[4] = {
      passthrough::InodeFileHandles::kNever, passthrough::InodeFileHandles::kPrefer,
      passthrough::InodeFileHandles::kMandatory, passthrough::InodeFileHandles::kNever};
  config.inode_file_handles = kHandles[(c1 >> 4) & 3];
  config.posix_lock = (c1 & 64) != 0;
  config.flock = (c1 & 128) != 0;
  config.ascii_casefold = (c2 & 1) != 0;
  config.rewrite_security_xattrs = (c2 & 2) != 0;
  config.killpriv_v2 = (c2 & 4) != 0;
  config.announce_submounts = (c2 & 8) == 0;
  config.allow_direct_io = (c2 & 16) != 0;
  config.allow_mmap = (c2 & 32) != 0;
  config.preserve_noatime = (c2 & 64) != 0;
  // As the app does: options that need xattrs turn them on.
  config.xattr =
      config.xattr || config.posix_acl || config.security_label || !config.xattrmap.empty();
  return config;
}

void run_input(const uint8_t* data, size_t size) {
  static DeferredLedger ledger;
  // Counted per input: libFuzzer itself opens fds between inputs (the
  // pipes of llvm-symbolizer when it reports new functions).
  const int fds_before = count_fds();
  Input input(data, size);
  const uint8_t c0 = input.u8(), c1 = input.u8(), c2 = input.u8();
  reset_share();
  auto config = make_config(c0, c1, c2);
  const bool readonly = config.readonly;
  auto created = passthrough::PassthroughFs::create(std::move(config));
  if (!created) die("PassthroughFs::create failed on the scratch share");
  {
    std::unique_ptr<passthrough::PassthroughFs> fs = std::move(*created);
    std::optional<passthrough::ReadOnlyFs> read_only;
    fuse::FileSystem* served = fs.get();
    if (readonly) served = &read_only.emplace(*fs);

    fuse::ServerOptions options;
    options.readdirplus = (c0 & 8) != 0;
    if (c2 & 128) options.max_write = 4096;
    fuse::Server server(*served, options);
    // Always a deferrer: a SETLKW that waits must not block the fuzzer.
    FuseDriver driver(server, ledger, /*defer=*/true);
    if (c0 & 1) {
      static constexpr GuestKind kKinds[4] = {GuestKind::kLinux61, GuestKind::kLinux612,
                                              GuestKind::kLegacy, GuestKind::kLinux612};
      Bytes init = guest_init(1, kKinds[(c0 >> 1) & 3]);
      driver.run(init, 4096, 0, 0, false);
    }
    std::span<const uint8_t> frame;
    while (input.frame(frame)) driver.run_frame(frame);
    // The server goes first, then the decorator, then the filesystem (its
    // lock waits end, their replies are finished).
  }
  VFSD_FUZZ_CHECK(ledger.outstanding() == 0);
  if (g_warm && count_fds() != fds_before) {
    std::fprintf(stderr, "fuse_passthrough: %d fds open after the input, %d before\n", count_fds(),
                 fds_before);
    print_fds();
    die("fd leak: the filesystem did not close everything it opened");
  }
  if (!(Canary::take() == g_canary)) die("something outside the share changed");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  // As the daemon: the guest's umask is applied by the passthrough.
  ::umask(0);
  if (::unshare(CLONE_NEWNS) != 0) setup_failed("unshare(CLONE_NEWNS)");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    setup_failed("making / private");
  }
  char base[] = "/tmp/vfsd-fuzz-pt-XXXXXX";
  if (::mkdtemp(base) == nullptr) setup_failed("mkdtemp");
  g_base = base;
  g_share = g_base + "/share";
  g_outside = g_base + "/outside";
  ::mkdir(g_share.c_str(), 0755);
  ::mkdir(g_outside.c_str(), 0755);
  write_file(g_outside + "/canary", "outside the share", 0644);
  g_canary = Canary::take();
  std::atexit(cleanup);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first run opens what stays open for the process's life (the
  // passthrough's process-wide set-up, signal handlers), so it is not
  // checked for fd leaks. Not in LLVMFuzzerInitialize: the lock waiters' signal handler
  // must be installed after libFuzzer's own handlers.
  if (!g_warm) {
    static const uint8_t kWarmUp[] = {0xff, 0xff, 0xff};
    run_input(kWarmUp, sizeof(kWarmUp));
    g_warm = true;
  }
  run_input(data, size);
  return 0;
}
