// Group "readonly" (--readonly): every modification refused with the errno of
// the Rust virtiofsd's PassthroughFsRo, every read allowed, and (host check)
// the share left untouched, access times included.
// Group "locks": POSIX record locks and flock() between two processes, and
// (host mode) whether the host sees them. Group "casefold" (--ascii-casefold).
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <string>
#include <vector>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

// Fixture times of the read-only share, far in the past so that relatime
// would update them on a read.
constexpr time_t kOldAtime = 978307200;  // 2001-01-01
constexpr time_t kOldMtime = 946684800;  // 2000-01-01

bool set_times(const std::string& path, std::string& error) {
  struct timespec ts[2] = {{kOldAtime, 0}, {kOldMtime, 0}};
  if (utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
    error = "utimensat " + path + ": " + errno_name(errno);
    return false;
  }
  return true;
}

std::vector<std::string> names_in(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* d = opendir(path.c_str())) {
    while (struct dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

CONF_PREPARE(readonly) {
  std::string d = backing + "/ro";
  bool ok = mkdir(d.c_str(), 0755) == 0 && write_file(d + "/file", "readonly-data", 0644) &&
            mkdir((d + "/dir").c_str(), 0755) == 0 && write_file(d + "/dir/inner", "in", 0644) &&
            symlink("file", (d + "/link").c_str()) == 0 && write_file(d + "/xfile", "x", 0644) &&
            lsetxattr((d + "/xfile").c_str(), "user.x", "1", 1, 0) == 0;
  int fd = ok ? open((d + "/sparse").c_str(), O_CREAT | O_WRONLY, 0644) : -1;
  std::string block(4096, 's');
  ok = fd >= 0 && pwrite(fd, block.data(), block.size(), 0) == 4096 &&
       pwrite(fd, block.data(), block.size(), 1 << 20) == 4096 && close(fd) == 0;
  if (!ok) {
    error = "creating the fixture under " + d + ": " + errno_name(errno);
    return false;
  }
  for (const char* n : {"/file", "/dir/inner", "/dir", "/link", "/xfile", "/sparse", ""}) {
    if (!set_times(d + n, error)) return false;
  }
  return true;
}

CONF_CASE(readonly, reads_allowed) {
  Checker c;
  struct stat st;
  c.ok("stat", stat((dir + "/file").c_str(), &st));
  c.eq_str("read", read_file(dir + "/file"), "readonly-data");
  c.eq_str("readdir", join(names_in(dir)), "dir,file,link,sparse,xfile");
  char buf[64] = {};
  c.eq("readlink", readlink((dir + "/link").c_str(), buf, sizeof buf), 4);
  struct statfs sf;
  c.ok("statfs", statfs(dir.c_str(), &sf));
  int e;
  c.eq_str("getxattr", get_xattr(dir + "/xfile", "user.x", &e), "1");
  c.eq_str("listxattr", xattr_names(dir + "/xfile"), "user.x");
  int fd = open((dir + "/sparse").c_str(), O_RDONLY);
  c.ok("open_rdonly", fd);
  c.eq("lseek_data", lseek(fd, 8192, SEEK_DATA), 1 << 20);
  c.ok("fsync_rdonly", fsync(fd));
  c.ok("syncfs", syncfs(fd));
  int flags = 0;
  c.ok("ioctl_getflags", ioctl(fd, FS_IOC_GETFLAGS, &flags));
  c.ok("flock_sh", flock(fd, LOCK_SH));
  close(fd);
  int dfd = open((dir + "/dir").c_str(), O_RDONLY | O_DIRECTORY);
  c.ok("opendir", dfd);
  c.ok("fsyncdir", fsync(dfd));
  close(dfd);
  int pfd = open((dir + "/file").c_str(), O_PATH);
  c.ok("open_o_path", pfd);
  close(pfd);
  e = errno_as_user(kUser, kUserGid, {kUserGid},
                    [&] { return open((dir + "/file").c_str(), O_RDONLY); });
  c.eq_str("read_as_user", errno_name(e), "0");
  c.ok("access_r_ok", access((dir + "/file").c_str(), R_OK));
  return c.done();
}

CONF_CASE(readonly, open_rules) {
  Checker c;
  std::string f = dir + "/file";
  c.err("open_wronly", open(f.c_str(), O_WRONLY), EROFS);
  c.err("open_rdwr", open(f.c_str(), O_RDWR), EROFS);
  c.err("open_append", open(f.c_str(), O_WRONLY | O_APPEND), EROFS);
  c.err("open_rdonly_trunc", open(f.c_str(), O_RDONLY | O_TRUNC), EINVAL);
  int fd = open(f.c_str(), O_RDONLY | O_CREAT, 0644);
  c.ok("open_creat_existing", fd);
  if (fd >= 0) close(fd);
  c.err("open_creat_missing", open((dir + "/new").c_str(), O_RDONLY | O_CREAT, 0644), EROFS);
  c.err("open_creat_excl_missing", open((dir + "/new").c_str(), O_RDONLY | O_CREAT | O_EXCL, 0644),
        EROFS);
  // The VFS answers this one before asking the daemon.
  c.err("open_creat_excl_existing", open(f.c_str(), O_RDONLY | O_CREAT | O_EXCL, 0644), EEXIST);
  c.err("creat_wronly_missing", open((dir + "/new").c_str(), O_WRONLY | O_CREAT, 0644), EROFS);
  c.err("o_tmpfile", open(dir.c_str(), O_TMPFILE | O_RDWR, 0600), EROFS);
  c.err("opendir_trunc", open((dir + "/dir").c_str(), O_RDONLY | O_DIRECTORY | O_TRUNC), EISDIR);
  struct stat st;
  c.err("nothing_created", stat((dir + "/new").c_str(), &st), ENOENT);
  return c.done();
}

CONF_CASE(readonly, namespace_erofs) {
  Checker c;
  c.err("mkdir", mkdir((dir + "/newdir").c_str(), 0755), EROFS);
  c.err("mknod_fifo", mknod((dir + "/fifo").c_str(), S_IFIFO | 0644, 0), EROFS);
  c.err("symlink", symlink("file", (dir + "/sym").c_str()), EROFS);
  c.err("link", link((dir + "/file").c_str(), (dir + "/hard").c_str()), EROFS);
  c.err("unlink", unlink((dir + "/file").c_str()), EROFS);
  c.err("rmdir", rmdir((dir + "/dir").c_str()), EROFS);
  c.err("rename", rename((dir + "/file").c_str(), (dir + "/moved").c_str()), EROFS);
  c.err("rename_noreplace",
        renameat2(AT_FDCWD, (dir + "/file").c_str(), AT_FDCWD, (dir + "/moved").c_str(),
                  RENAME_NOREPLACE),
        EROFS);
  c.err("rename_exchange",
        renameat2(AT_FDCWD, (dir + "/file").c_str(), AT_FDCWD, (dir + "/xfile").c_str(),
                  RENAME_EXCHANGE),
        EROFS);
  return c.done();
}

CONF_CASE(readonly, setattr_erofs) {
  Checker c;
  std::string f = dir + "/file";
  c.err("chmod", chmod(f.c_str(), 0600), EROFS);
  c.err("chown", chown(f.c_str(), 1, 1), EROFS);
  c.err("truncate", truncate(f.c_str(), 0), EROFS);
  c.err("utimes_now", utimensat(AT_FDCWD, f.c_str(), nullptr, 0), EROFS);
  struct timespec ts[2] = {{1, 0}, {1, 0}};
  c.err("utimes_set", utimensat(AT_FDCWD, f.c_str(), ts, 0), EROFS);
  return c.done();
}

CONF_CASE(readonly, xattr_and_ioctl_erofs) {
  Checker c;
  std::string f = dir + "/xfile";
  c.err("setxattr", setxattr(f.c_str(), "user.y", "1", 1, 0), EROFS);
  c.err("replace_xattr", setxattr(f.c_str(), "user.x", "2", 1, 0), EROFS);
  c.err("removexattr", removexattr(f.c_str(), "user.x"), EROFS);
  int fd = open(f.c_str(), O_RDONLY);
  int flags = 0;
  c.ok("getflags", ioctl(fd, FS_IOC_GETFLAGS, &flags));
  int with = flags | FS_NOATIME_FL;
  c.err("setflags", ioctl(fd, FS_IOC_SETFLAGS, &with), EROFS);
  struct fsxattr fa = {};
  c.ok("fsgetxattr", ioctl(fd, FS_IOC_FSGETXATTR, &fa));
  c.err("fssetxattr", ioctl(fd, FS_IOC_FSSETXATTR, &fa), EROFS);
  close(fd);
  return c.done();
}

// With default_permissions (always on for virtiofs, and for our host mount)
// the kernel answers access(2) itself and never sends FUSE_ACCESS, so W_OK
// passes for root: the share is not a read-only mount in the kernel's eyes.
CONF_CASE(readonly, access_w_ok) {
  Checker c;
  c.note("kernel_answers_access_itself(default_permissions):no_FUSE_ACCESS");
  c.ok("access_w_ok", access((dir + "/file").c_str(), W_OK));
  return c.done();
}

// write, fallocate and copy_file_range into the share need an fd open for
// writing, which the open rules above never hand out.
CONF_CASE(readonly, write_paths_unreachable) {
  Checker c;
  int fd = open((dir + "/file").c_str(), O_RDONLY);
  c.err("write_rdonly_fd", write(fd, "x", 1), EBADF);
  c.err("fallocate_rdonly_fd", fallocate(fd, 0, 0, 10), EBADF);
  close(fd);
  return c.done();
}

CONF_HOST_CHECK(readonly, share_untouched) {
  Checker c;
  std::string d = dir + "/ro";
  // Times first: reading the fixture here would move them itself.
  for (const char* n : {"/file", "/dir", "/dir/inner", "/xfile", "/sparse", "", "/link"}) {
    struct stat st;
    c.ok(std::string("lstat") + n, lstat((d + n).c_str(), &st));
    // readlink(2) on the host touches the link's atime and no flag avoids
    // that: only the link's mtime is checked.
    if (std::string(n) != "/link") c.eq(std::string("atime") + n, st.st_atime, kOldAtime);
    c.eq(std::string("mtime") + n, st.st_mtime, kOldMtime);
  }
  c.eq_str("names", join(names_in(d)), "dir,file,link,sparse,xfile");
  c.eq_str("dir_names", join(names_in(d + "/dir")), "inner");
  c.eq_str("content", read_file(d + "/file"), "readonly-data");
  int e;
  c.eq_str("xattr", get_xattr(d + "/xfile", "user.x", &e), "1");
  c.eq_str("xattr_names", xattr_names(d + "/xfile"), "user.x");
  struct stat st;
  lstat((d + "/file").c_str(), &st);
  c.eq_oct("mode", st.st_mode & 07777, 0644);
  return c.done();
}

// ---- locks -----------------------------------------------------------------------
namespace {

// A child process that holds a lock until told to release it (or for
// `hold_ms` when that is not 0). kind: 'W'/'R' fcntl F_SETLK, 'F' flock
// LOCK_EX, 'S' flock LOCK_SH.
struct Holder {
  pid_t pid = -1;
  int ready = -1;    // the child writes 'L' when it holds the lock, 'E' if not
  int release = -1;  // write a byte to release
};

// `notice`, if not -1: the holder writes 'R' there right before it drops
// its lock, so that a waiter granted the lock can tell it came after.
Holder start_holder(const std::string& path, char kind, off_t start, off_t len, int notice = -1) {
  int up[2], down[2];
  Holder h;
  if (pipe(up) != 0 || pipe(down) != 0) return h;
  fflush(nullptr);
  h.pid = fork();
  if (h.pid == 0) {
    close(up[0]);
    close(down[1]);
    alarm(50);  // above the setlkw_waits observer's 20 s bound
    int fd = open(path.c_str(), O_RDWR);
    int rc = -1;
    if (fd >= 0 && (kind == 'W' || kind == 'R')) {
      struct flock fl = {};
      fl.l_type = kind == 'W' ? F_WRLCK : F_RDLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = start;
      fl.l_len = len;
      rc = fcntl(fd, F_SETLK, &fl);
    } else if (fd >= 0) {
      rc = flock(fd, kind == 'F' ? LOCK_EX | LOCK_NB : LOCK_SH | LOCK_NB);
    }
    char r = rc == 0 ? 'L' : 'E';
    if (write(up[1], &r, 1) != 1) _exit(1);
    char b;
    ssize_t n = read(down[0], &b, 1);
    (void)n;
    if (notice >= 0 && write(notice, "R", 1) != 1) _exit(1);
    // Closing any fd of the file drops the process's POSIX locks on it.
    close(fd);
    r = 'U';
    if (write(up[1], &r, 1) != 1) _exit(1);
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  h.ready = up[0];
  h.release = down[1];
  return h;
}

bool holder_locked(const Holder& h) {
  char b = 0;
  return h.pid > 0 && wait_readable(h.ready, 10000) && read(h.ready, &b, 1) == 1 && b == 'L';
}

void stop_holder(Holder& h) {
  if (h.pid <= 0) return;
  char b = 'x';
  ssize_t n = write(h.release, &b, 1);
  (void)n;
  int status;
  waitpid(h.pid, &status, 0);
  close(h.ready);
  close(h.release);
  h.pid = -1;
}

// Waits until the holder reports it released its lock.
bool holder_released(const Holder& h) {
  char b = 0;
  return wait_readable(h.ready, 10000) && read(h.ready, &b, 1) == 1 && b == 'U';
}

struct flock make_lock(short type, off_t start, off_t len) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fl;
}

// Forwarded locks (--posix-lock) are host OFD locks: the guest learns the
// holder's type and range but no pid.
bool locks_forwarded(const Env& env) {
  return env.fuse() && env.profile == "locks";
}

}  // namespace

CONF_CASE(locks, setlk_conflict) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, std::string(200, 'l'));
  Holder h = start_holder(f, 'W', 0, 100);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int fd = open(f.c_str(), O_RDWR);
  struct flock fl = make_lock(F_WRLCK, 50, 10);
  c.err("setlk_overlap_wr", fcntl(fd, F_SETLK, &fl), EAGAIN);
  fl = make_lock(F_RDLCK, 0, 1);
  c.err("setlk_overlap_rd", fcntl(fd, F_SETLK, &fl), EAGAIN);
  fl = make_lock(F_WRLCK, 100, 10);
  c.ok("setlk_adjacent", fcntl(fd, F_SETLK, &fl));
  fl = make_lock(F_UNLCK, 100, 10);
  c.ok("unlock", fcntl(fd, F_SETLK, &fl));
  stop_holder(h);
  fl = make_lock(F_WRLCK, 0, 0);
  c.ok("setlk_after_release", fcntl(fd, F_SETLK, &fl));
  close(fd);
  return c.done();
}

CONF_CASE(locks, getlk_reports_holder) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, std::string(200, 'l'));
  Holder h = start_holder(f, 'W', 10, 90);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int fd = open(f.c_str(), O_RDWR);
  struct flock fl = make_lock(F_WRLCK, 0, 0);
  c.ok("getlk", fcntl(fd, F_GETLK, &fl));
  c.eq("l_type", fl.l_type, F_WRLCK);
  c.eq("l_start", fl.l_start, 10);
  c.eq("l_len", fl.l_len, 90);
  if (locks_forwarded(env)) {
    c.note("forwarded_as_host_OFD_lock:no_pid");
    c.eq("l_pid", fl.l_pid, 0);
  } else {
    c.eq("l_pid", fl.l_pid, h.pid);
  }
  fl = make_lock(F_WRLCK, 100, 50);
  c.ok("getlk_free_range", fcntl(fd, F_GETLK, &fl));
  c.eq("free_l_type", fl.l_type, F_UNLCK);
  stop_holder(h);
  close(fd);
  return c.done();
}

// Whether `pid` sleeps in fcntl(fd, F_SETLKW, ...): /proc/PID/syscall names
// the call a blocked task is in ("NR arg0 arg1 ..."), /proc/PID/stat its state.
bool sleeps_in_setlkw(pid_t pid) {
  std::string base = "/proc/" + std::to_string(pid);
  bool ok = false;
  std::string sc = read_file(base + "/syscall", &ok);
  long nr = -1;
  unsigned long arg0 = 0, arg1 = 0;
  if (!ok || std::sscanf(sc.c_str(), "%ld %lx %lx", &nr, &arg0, &arg1) != 3) return false;
  if (nr != SYS_fcntl || arg1 != F_SETLKW) return false;
  std::string st = read_file(base + "/stat", &ok);
  size_t paren = st.rfind(')');
  return ok && paren != std::string::npos && paren + 2 < st.size() && st[paren + 2] == 'S';
}

// A handshake, no timing: the holder keeps its lock until an observer has
// seen this process asleep in F_SETLKW, and writes 'R' (notice pipe) just
// before it releases; the lock granted, this process checks that it was
// seen blocked and that the release came first.
CONF_CASE(locks, setlkw_waits) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "w");
  int notice[2], seen[2];
  if (pipe2(notice, O_CLOEXEC) != 0 || pipe2(seen, O_CLOEXEC) != 0) return c.skip("pipe");
  Holder h = start_holder(f, 'W', 0, 0, notice[1]);
  close(notice[1]);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  pid_t waiter = getpid();
  fflush(nullptr);
  pid_t observer = fork();
  if (observer == 0) {
    close(seen[0]);
    // Polls the waiter's state (bounded: a waiter that never blocks must
    // not leave the holder holding), then reports and lets the holder go.
    char verdict = 'N';
    for (int i = 0; i < 20000; ++i) {
      if (sleeps_in_setlkw(waiter)) {
        verdict = 'B';
        break;
      }
      usleep(1000);
    }
    if (write(seen[1], &verdict, 1) != 1) _exit(1);
    if (write(h.release, "x", 1) != 1) _exit(1);
    _exit(0);
  }
  close(seen[1]);
  int fd = open(f.c_str(), O_RDWR);
  struct flock fl = make_lock(F_WRLCK, 0, 0);
  c.ok("setlkw", fcntl(fd, F_SETLKW, &fl));
  // Both bytes were written before the release, so before the grant: they
  // are there now, or the lock was granted while the holder still held it.
  char b = 0;
  bool was_seen = wait_readable(seen[0], 0) && read(seen[0], &b, 1) == 1 && b == 'B';
  char r = 0;
  bool released_first = wait_readable(notice[0], 0) && read(notice[0], &r, 1) == 1 && r == 'R';
  c.truth("seen_blocked_in_setlkw", was_seen, "B", b ? std::string(1, b) : "granted_first");
  c.truth("released_before_granted", released_first, "R", "granted_while_held");
  if (!was_seen) {  // granted without waiting: end the observer's watch now
    kill(observer, SIGKILL);
    if (write(h.release, "x", 1) != 1) c.truth("release_holder", false, "1", "0");
  }
  waitpid(observer, nullptr, 0);
  c.truth("holder_released", holder_released(h), "U", "none");
  // Another process now meets our lock.
  int e = errno_as_user(0, 0, {0}, [&] {
    int o = open(f.c_str(), O_RDWR);
    struct flock t = make_lock(F_WRLCK, 0, 1);
    return static_cast<long>(fcntl(o, F_SETLK, &t));
  });
  c.eq_str("now_held_by_us", errno_name(e), "EAGAIN");
  waitpid(h.pid, nullptr, 0);
  close(fd);
  close(notice[0]);
  close(seen[0]);
  return c.done();
}

CONF_CASE(locks, read_locks_shared) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "r");
  Holder h = start_holder(f, 'R', 0, 0);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int fd = open(f.c_str(), O_RDWR);
  struct flock fl = make_lock(F_RDLCK, 0, 0);
  c.ok("second_read_lock", fcntl(fd, F_SETLK, &fl));
  fl = make_lock(F_WRLCK, 0, 0);
  c.err("upgrade_blocked", fcntl(fd, F_SETLK, &fl), EAGAIN);
  stop_holder(h);
  c.ok("upgrade_after_release", fcntl(fd, F_SETLK, &fl));
  close(fd);
  return c.done();
}

CONF_CASE(locks, released_on_close) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "c");
  Holder h = start_holder(f, 'W', 0, 0);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  char b = 'x';
  c.eq("release", write(h.release, &b, 1), 1);
  c.truth("holder_closed", holder_released(h), "U", "none");
  int fd = open(f.c_str(), O_RDWR);
  struct flock fl = make_lock(F_WRLCK, 0, 0);
  c.ok("setlk_after_close", fcntl(fd, F_SETLK, &fl));
  waitpid(h.pid, nullptr, 0);
  close(fd);
  return c.done();
}

CONF_CASE(locks, flock_exclusive) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "f");
  Holder h = start_holder(f, 'F', 0, 0);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int fd = open(f.c_str(), O_RDWR);
  c.err("flock_ex_nb", flock(fd, LOCK_EX | LOCK_NB), EWOULDBLOCK);
  c.err("flock_sh_nb", flock(fd, LOCK_SH | LOCK_NB), EWOULDBLOCK);
  // flock and POSIX locks are independent of each other.
  struct flock fl = make_lock(F_WRLCK, 0, 0);
  c.ok("posix_lock_beside_flock", fcntl(fd, F_SETLK, &fl));
  stop_holder(h);
  c.ok("flock_after_release", flock(fd, LOCK_EX | LOCK_NB));
  c.ok("flock_unlock", flock(fd, LOCK_UN));
  close(fd);
  return c.done();
}

CONF_CASE(locks, flock_shared) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "s");
  Holder h = start_holder(f, 'S', 0, 0);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int fd = open(f.c_str(), O_RDWR);
  c.ok("flock_sh_shared", flock(fd, LOCK_SH | LOCK_NB));
  c.err("flock_ex_blocked", flock(fd, LOCK_EX | LOCK_NB), EWOULDBLOCK);
  stop_holder(h);
  c.ok("flock_upgrade_after_release", flock(fd, LOCK_EX | LOCK_NB));
  close(fd);
  return c.done();
}

// Host mode only: a lock taken through the mount is (with --posix-lock /
// --flock) or is not (without: the FUSE client keeps locks local) seen by a
// process using the shared directory directly.
CONF_CASE(locks, host_sees_guest_locks) {
  Checker c;
  if (env.backing.empty()) return c.skip("needs the shared directory (host or plain mode)");
  std::string f = dir + "/f";
  write_file(f, "h");
  std::string host = env.backing + dir.substr(env.root.size()) + "/f";
  bool shared = !env.fuse() || env.profile == "locks";
  if (!shared) c.note("no_--posix-lock/--flock:locks_stay_in_the_FUSE_client");
  Holder h = start_holder(f, 'W', 0, 0);
  c.truth("holder_locked", holder_locked(h), "L", "E");
  int hfd = open(host.c_str(), O_RDWR);
  c.ok("open_host", hfd);
  struct flock fl = make_lock(F_WRLCK, 0, 0);
  fl.l_pid = 0;
  c.ok("host_ofd_getlk", fcntl(hfd, F_OFD_GETLK, &fl));
  c.eq("host_sees_posix_lock", fl.l_type, shared ? F_WRLCK : F_UNLCK);
  stop_holder(h);
  Holder g = start_holder(f, 'F', 0, 0);
  c.truth("flock_holder_locked", holder_locked(g), "L", "E");
  c.result("host_flock", flock(hfd, LOCK_EX | LOCK_NB), shared ? EWOULDBLOCK : 0);
  stop_holder(g);
  close(hfd);
  return c.done();
}

// ---- casefold: --ascii-casefold ---------------------------------------------------------

CONF_PREPARE(casefold) {
  std::string d = backing + "/cf";
  bool ok = mkdir(d.c_str(), 0755) == 0 && write_file(d + "/Dup.txt", "upper") &&
            write_file(d + "/dup.txt", "lower") && write_file(d + "/\xc3\xa9.txt", "e-acute") &&
            write_file(d + "/Only.Upper", "only") && mkdir((d + "/SubDir").c_str(), 0755) == 0 &&
            write_file(d + "/SubDir/Inner", "inner");
  if (!ok) error = "creating " + d + ": " + errno_name(errno);
  return ok;
}

CONF_CASE(casefold, folded_lookup) {
  Checker c;
  std::string d = env.root + "/cf";
  c.eq_str("lower_name", read_file(d + "/only.upper"), "only");
  c.eq_str("upper_name", read_file(d + "/ONLY.UPPER"), "only");
  struct stat a, b;
  c.ok("stat_exact", stat((d + "/Only.Upper").c_str(), &a));
  c.ok("stat_folded", stat((d + "/oNLY.uPPER").c_str(), &b));
  c.eq("same_inode", static_cast<long long>(b.st_ino), static_cast<long long>(a.st_ino));
  c.eq_str("folded_path", read_file(d + "/subdir/inner"), "inner");
  return c.done();
}

CONF_CASE(casefold, exact_match_preferred) {
  Checker c;
  std::string d = env.root + "/cf";
  c.eq_str("dup_lower", read_file(d + "/dup.txt"), "lower");
  c.eq_str("dup_upper", read_file(d + "/Dup.txt"), "upper");
  return c.done();
}

CONF_CASE(casefold, ascii_only) {
  Checker c;
  std::string d = env.root + "/cf";
  struct stat st;
  c.ok("exact_utf8", stat((d + "/\xc3\xa9.txt").c_str(), &st));
  c.err("non_ascii_not_folded", stat((d + "/\xc3\x89.txt").c_str(), &st), ENOENT);
  c.err("missing", stat((d + "/nothing").c_str(), &st), ENOENT);
  return c.done();
}

CONF_CASE(casefold, create_then_fold) {
  Checker c;
  c.truth("create", write_file(dir + "/NewFile.TXT", "new"), "0", errno_name(last_errno()));
  c.eq_str("read_folded", read_file(dir + "/newfile.txt"), "new");
  c.err("create_excl_folded",
        open((dir + "/NEWFILE.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
  c.err("mkdir_folded", mkdir((dir + "/newFILE.txt").c_str(), 0755), EEXIST);
  return c.done();
}

}  // namespace vfsd::conformance
