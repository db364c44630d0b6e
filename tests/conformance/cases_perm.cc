// Group "perm": permission checks as a non-root user (uid 1000, gid 1000,
// supplementary group 2000), and owners of what such a user creates.
// Group "ioctl": the file-attribute ioctls and ENOTTY for the rest.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

const std::vector<gid_t> kGroups = {kUserGid, kSuppGid};

std::string owner(const struct stat& st) {
  return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
}

// A write by someone other than root clears set-user-ID and set-group-ID
// (POSIX). Without killpriv v2 the guest kernel clears them with a SETATTR
// of its own; with --killpriv-v2 it leaves that to the daemon (WRITE with
// FUSE_WRITE_KILL_SUIDGID), so the host must see the same result.
CONF_CASE(killpriv, write_clears_setuid) {
  Checker c;
  const std::string f = dir + "/suid";
  write_file(f, "x");
  c.ok("chown", chown(f.c_str(), kUser, kUserGid));
  c.ok("chmod", chmod(f.c_str(), 06755));
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    int fd = open(f.c_str(), O_WRONLY | O_APPEND);
    if (fd < 0) return -1;
    ssize_t n = write(fd, "y", 1);
    close(fd);
    return n == 1 ? 0 : -1;
  });
  c.eq_str("write_as_owner", errno_name(e), "0");
  struct stat st;
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("mode_after_write", st.st_mode & 07777, 0755);
  return c.done();
}

}  // namespace

CONF_CASE(perm, create_denied_in_root_dir) {
  Checker c;
  // dir is root:root 0755
  c.eq_str("create_file",
           errno_name(
               errno_as_user(kUser, kUserGid, kGroups,
                             [&] { return open((dir + "/f").c_str(), O_CREAT | O_WRONLY, 0644); })),
           "EACCES");
  c.eq_str("mkdir",
           errno_name(errno_as_user(kUser, kUserGid, kGroups,
                                    [&] { return mkdir((dir + "/d").c_str(), 0755); })),
           "EACCES");
  write_file(dir + "/rootfile", "secret", 0600);
  c.eq_str("unlink_root_file",
           errno_name(errno_as_user(kUser, kUserGid, kGroups,
                                    [&] { return unlink((dir + "/rootfile").c_str()); })),
           "EACCES");
  c.eq_str("read_0600_root_file",
           errno_name(errno_as_user(kUser, kUserGid, kGroups,
                                    [&] { return open((dir + "/rootfile").c_str(), O_RDONLY); })),
           "EACCES");
  c.eq_str("chmod_root_file",
           errno_name(errno_as_user(kUser, kUserGid, kGroups,
                                    [&] { return chmod((dir + "/rootfile").c_str(), 0666); })),
           "EPERM");
  return c.done();
}

CONF_CASE(perm, owner_of_created) {
  Checker c;
  chmod(dir.c_str(), 0777);
  Verdict v = as_user(kUser, kUserGid, kGroups, [&] {
    Checker u;
    u.truth("create", write_file(dir + "/f", "u"), "0", errno_name(last_errno()));
    u.ok("mkdir", mkdir((dir + "/d").c_str(), 0777));
    u.ok("symlink", symlink("f", (dir + "/l").c_str()));
    u.ok("mknod_fifo", mknod((dir + "/p").c_str(), S_IFIFO | 0666, 0));
    struct stat st;
    for (const char* n : {"/f", "/d", "/l", "/p"}) {
      u.ok(std::string("stat") + n, lstat((dir + n).c_str(), &st));
      u.eq_str(std::string("owner") + n, owner(st), "1000:1000");
    }
    u.ok("stat_d", stat((dir + "/d").c_str(), &st));
    u.eq_oct("mkdir_mode_umask", st.st_mode & 07777, 0755);
    return u.done();
  });
  return v;
}

CONF_CASE(perm, setgid_dir_inheritance) {
  Checker c;
  c.ok("chown_dir", chown(dir.c_str(), 0, kSuppGid));
  c.ok("chmod_dir", chmod(dir.c_str(), 02777));
  Verdict v = as_user(kUser, kUserGid, kGroups, [&] {
    Checker u;
    u.truth("create", write_file(dir + "/f", "u"), "0", errno_name(last_errno()));
    u.ok("mkdir", mkdir((dir + "/d").c_str(), 0755));
    struct stat st;
    u.ok("stat_f", stat((dir + "/f").c_str(), &st));
    u.eq_str("file_group_inherited", owner(st), "1000:2000");
    u.ok("stat_d", stat((dir + "/d").c_str(), &st));
    u.eq_str("dir_group_inherited", owner(st), "1000:2000");
    u.eq_oct("dir_keeps_setgid", st.st_mode & 07777, 02755);
    return u.done();
  });
  return v;
}

// The create runs where only a supplementary group grants write access. The
// guest kernel checked the caller's groups already (default_permissions);
// the daemon must not refuse it for lacking groups it was never told about
// (a Linux guest sends one only from 6.6, FUSE_CREATE_SUPP_GROUP).
CONF_CASE(perm, create_via_supplementary_group) {
  Checker c;
  c.ok("chown_dir", chown(dir.c_str(), 0, kSuppGid));
  c.ok("chmod_dir", chmod(dir.c_str(), 0770));
  int e = errno_as_user(kUser, kUserGid, kGroups,
                        [&] { return open((dir + "/f").c_str(), O_CREAT | O_WRONLY, 0644); });
  c.eq_str("create", errno_name(e), "0");
  struct stat st;
  c.ok("stat", stat((dir + "/f").c_str(), &st));
  // No set-group-ID on the directory: the group is the creator's.
  c.eq_str("owner", owner(st), "1000:1000");
  return c.done();
}

CONF_CASE(perm, read_via_supplementary_group) {
  Checker c;
  write_file(dir + "/f", "group-readable", 0640);
  c.ok("chown_file", chown((dir + "/f").c_str(), 0, kSuppGid));
  Verdict v = as_user(kUser, kUserGid, kGroups, [&] {
    Checker u;
    bool ok = false;
    std::string s = read_file(dir + "/f", &ok);
    u.truth("read", ok, "0", errno_name(last_errno()));
    u.eq_str("content", s, "group-readable");
    u.eq_str("write", write_file(dir + "/f", "x") ? "0" : errno_name(last_errno()), "EACCES");
    return u.done();
  });
  return v;
}

CONF_CASE(perm, chown_rules) {
  Checker c;
  chmod(dir.c_str(), 0777);
  Verdict v = as_user(kUser, kUserGid, kGroups, [&] {
    Checker u;
    std::string f = dir + "/f";
    u.truth("create", write_file(f, "u"), "0", errno_name(last_errno()));
    u.err("chown_to_other_user", chown(f.c_str(), kOther, kUserGid), EPERM);
    u.err("chgrp_to_foreign_group", chown(f.c_str(), -1, 3000), EPERM);
    u.ok("chgrp_to_supplementary", chown(f.c_str(), -1, kSuppGid));
    struct stat st;
    u.ok("stat", stat(f.c_str(), &st));
    u.eq_str("owner", owner(st), "1000:2000");
    u.ok("chmod_own", chmod(f.c_str(), 0600));
    return u.done();
  });
  return v;
}

CONF_CASE(perm, sticky_dir) {
  Checker c;
  c.ok("chmod_sticky", chmod(dir.c_str(), 01777));
  write_file(dir + "/rootfile", "r", 0666);
  int e =
      errno_as_user(kUser, kUserGid, kGroups, [&] { return unlink((dir + "/rootfile").c_str()); });
  c.eq_str("unlink_foreign_in_sticky", errno_name(e), "EPERM");
  e = errno_as_user(kUser, kUserGid, kGroups,
                    [&] { return rename((dir + "/rootfile").c_str(), (dir + "/moved").c_str()); });
  c.eq_str("rename_foreign_in_sticky", errno_name(e), "EPERM");
  return c.done();
}

CONF_CASE(perm, utimes_rules) {
  Checker c;
  write_file(dir + "/f", "w", 0666);
  chmod((dir + "/f").c_str(), 0666);
  int e = errno_as_user(kUser, kUserGid, kGroups,
                        [&] { return utimensat(AT_FDCWD, (dir + "/f").c_str(), nullptr, 0); });
  c.eq_str("touch_now_writable_foreign", errno_name(e), "0");
  struct timespec ts[2] = {{1000, 0}, {1000, 0}};
  e = errno_as_user(kUser, kUserGid, kGroups,
                    [&] { return utimensat(AT_FDCWD, (dir + "/f").c_str(), ts, 0); });
  c.eq_str("set_explicit_times_foreign", errno_name(e), "EPERM");
  return c.done();
}

CONF_CASE(perm, truncate_and_noatime) {
  Checker c;
  write_file(dir + "/ro", "readonly", 0644);
  int e =
      errno_as_user(kUser, kUserGid, kGroups, [&] { return truncate((dir + "/ro").c_str(), 0); });
  c.eq_str("truncate_unwritable", errno_name(e), "EACCES");
  e = errno_as_user(kUser, kUserGid, kGroups,
                    [&] { return open((dir + "/ro").c_str(), O_RDONLY | O_NOATIME); });
  c.eq_str("noatime_foreign", errno_name(e), "EPERM");
  return c.done();
}

// A write by someone other than the owner drops set-user-ID (and set-group-ID
// with group execute) from the file.
CONF_CASE(perm, suid_killed_on_write) {
  Checker c;
  write_file(dir + "/f", "data", 0644);
  c.ok("chmod", chmod((dir + "/f").c_str(), 06777));
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    int fd = open((dir + "/f").c_str(), O_WRONLY);
    if (fd < 0) return -1L;
    long n = write(fd, "x", 1);
    close(fd);
    return n;
  });
  c.eq_str("write", errno_name(e), "0");
  struct stat st;
  c.ok("stat", stat((dir + "/f").c_str(), &st));
  c.eq_oct("mode_after_write", st.st_mode & 07777, 0777);
  return c.done();
}

// ---- ioctl ---------------------------------------------------------------------

CONF_CASE(ioctl, getflags_setflags) {
  Checker c;
  write_file(dir + "/f", "x");
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  int flags = 0;
  c.ok("getflags", ioctl(fd, FS_IOC_GETFLAGS, &flags));
  if (!env.backing.empty() && env.fuse()) {
    std::string host = env.backing + dir.substr(env.root.size()) + "/f";
    int hfd = open(host.c_str(), O_RDONLY);
    int hflags = -1;
    c.ok("host_getflags", ioctl(hfd, FS_IOC_GETFLAGS, &hflags));
    c.eq("flags_as_host", flags, hflags);
    if (hfd >= 0) close(hfd);
  }
  int with = flags | FS_NOATIME_FL;
  c.ok("setflags_noatime", ioctl(fd, FS_IOC_SETFLAGS, &with));
  int back = 0;
  c.ok("getflags_again", ioctl(fd, FS_IOC_GETFLAGS, &back));
  c.truth("noatime_set", (back & FS_NOATIME_FL) != 0, "FS_NOATIME_FL", std::to_string(back));
  c.ok("setflags_restore", ioctl(fd, FS_IOC_SETFLAGS, &flags));
  close(fd);
  return c.done();
}

CONF_CASE(ioctl, setflags_as_non_owner) {
  Checker c;
  write_file(dir + "/f", "x", 0666);
  chmod((dir + "/f").c_str(), 0666);
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    int fd = open((dir + "/f").c_str(), O_RDONLY);
    if (fd < 0) return -1L;
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return -1L;
    flags |= FS_NOATIME_FL;
    return static_cast<long>(ioctl(fd, FS_IOC_SETFLAGS, &flags));
  });
  c.eq_str("setflags_foreign", errno_name(e), "EPERM");
  return c.done();
}

CONF_CASE(ioctl, fsgetxattr) {
  Checker c;
  write_file(dir + "/f", "x");
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  struct fsxattr fa = {};
  c.ok("fsgetxattr", ioctl(fd, FS_IOC_FSGETXATTR, &fa));
  c.ok("fssetxattr_same", ioctl(fd, FS_IOC_FSSETXATTR, &fa));
  close(fd);
  return c.done();
}

CONF_CASE(ioctl, getflags_directory) {
  Checker c;
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  int flags = 0;
  c.ok("getflags_dir", ioctl(fd, FS_IOC_GETFLAGS, &flags));
  close(fd);
  return c.done();
}

CONF_CASE(ioctl, unknown_enotty) {
  Checker c;
  write_file(dir + "/f", "x");
  int fd = open((dir + "/f").c_str(), O_RDWR);
  int arg = 0;
  c.err("unknown_read_ioctl", ioctl(fd, _IOR('X', 99, int), &arg), ENOTTY);
  c.err("unknown_write_ioctl", ioctl(fd, _IOW('v', 77, int), &arg), ENOTTY);
  // ext4 answers GETVERSION itself; through FUSE it is one of the "others".
  c.result("fs_ioc_getversion", ioctl(fd, FS_IOC_GETVERSION, &arg), env.fuse() ? ENOTTY : 0);
  close(fd);
  return c.done();
}

}  // namespace vfsd::conformance
