// Group "basic": the namespace and metadata operations of a filesystem, with
// the errno of each refusal. Group "io": data paths under the cache modes.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include <set>
#include <string>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::set<std::string> list_dir(const std::string& path, int* err) {
  std::set<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) {
    *err = errno;
    return names;
  }
  *err = 0;
  while (struct dirent* e = readdir(d)) names.insert(e->d_name);
  closedir(d);
  return names;
}

}  // namespace

CONF_CASE(basic, lookup_missing) {
  Checker c;
  struct stat st;
  c.err("stat_missing", stat((dir + "/nope").c_str(), &st), ENOENT);
  return c.done();
}

CONF_CASE(basic, lookup_enotdir) {
  Checker c;
  struct stat st;
  c.truth("write", write_file(dir + "/f", "x"), "written", errno_name(last_errno()));
  c.err("stat_under_file", stat((dir + "/f/x").c_str(), &st), ENOTDIR);
  return c.done();
}

CONF_CASE(basic, lookup_case_sensitive) {
  Checker c;
  struct stat st;
  c.truth("write", write_file(dir + "/Mixed.Case", "x"), "written", errno_name(last_errno()));
  c.err("stat_other_case", stat((dir + "/mixed.case").c_str(), &st), ENOENT);
  c.err("stat_upper_case", stat((dir + "/MIXED.CASE").c_str(), &st), ENOENT);
  return c.done();
}

// `..` of the shared root leaves the share only the way the VFS allows: to
// the directory the share is mounted on. (A guest's VFS resolves `..` itself;
// the daemon meets `..` only in export lookups, which its unit tests cover.)
CONF_CASE(basic, dotdot_root) {
  Checker c;
  std::string parent = env.root.substr(0, env.root.find_last_of('/'));
  if (parent.empty()) parent = "/";
  struct stat up, real, rootst, back;
  c.ok("stat_root_dotdot", stat((env.root + "/..").c_str(), &up));
  c.ok("stat_parent", stat(parent.c_str(), &real));
  c.truth("dotdot_is_parent", up.st_ino == real.st_ino && up.st_dev == real.st_dev,
          std::to_string(real.st_ino), std::to_string(up.st_ino));
  std::string base = env.root.substr(env.root.find_last_of('/') + 1);
  c.ok("stat_root", stat(env.root.c_str(), &rootst));
  c.ok("stat_dotdot_base", stat((env.root + "/../" + base).c_str(), &back));
  c.truth("round_trip", back.st_ino == rootst.st_ino && back.st_dev == rootst.st_dev,
          std::to_string(rootst.st_ino), std::to_string(back.st_ino));
  int e;
  auto names = list_dir(env.root, &e);
  c.truth("readdir_root_dots", names.count(".") && names.count(".."), ".,..", errno_name(e));
  return c.done();
}

CONF_CASE(basic, create_excl) {
  Checker c;
  std::string f = dir + "/f";
  int fd = open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
  c.ok("create", fd);
  if (fd >= 0) close(fd);
  struct stat st;
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("mode_after_umask_022", st.st_mode & 07777, 0640);
  c.err("create_excl_again", open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640), EEXIST);
  fd = open(f.c_str(), O_CREAT | O_WRONLY, 0600);
  c.ok("create_existing_without_excl", fd);
  if (fd >= 0) close(fd);
  return c.done();
}

CONF_CASE(basic, mkdir_exists) {
  Checker c;
  c.ok("mkdir", mkdir((dir + "/d").c_str(), 0777));
  struct stat st;
  c.ok("stat", stat((dir + "/d").c_str(), &st));
  c.eq_oct("mode", st.st_mode & 07777, 0755);
  c.err("mkdir_again", mkdir((dir + "/d").c_str(), 0755), EEXIST);
  write_file(dir + "/f", "x");
  c.err("mkdir_over_file", mkdir((dir + "/f").c_str(), 0755), EEXIST);
  c.err("mkdir_missing_parent", mkdir((dir + "/no/d").c_str(), 0755), ENOENT);
  return c.done();
}

CONF_CASE(basic, mknod_types) {
  Checker c;
  struct stat st;
  c.ok("mknod_fifo", mknod((dir + "/fifo").c_str(), S_IFIFO | 0640, 0));
  c.ok("stat_fifo", lstat((dir + "/fifo").c_str(), &st));
  c.truth("is_fifo", S_ISFIFO(st.st_mode), "fifo", std::to_string(st.st_mode));
  c.ok("mknod_chr", mknod((dir + "/chr").c_str(), S_IFCHR | 0600, makedev(1, 3)));
  c.ok("stat_chr", lstat((dir + "/chr").c_str(), &st));
  c.truth("chr_rdev", S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "chr_1:3",
          std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)));
  c.ok("mknod_sock", mknod((dir + "/sock").c_str(), S_IFSOCK | 0644, 0));
  c.ok("stat_sock", lstat((dir + "/sock").c_str(), &st));
  c.truth("is_sock", S_ISSOCK(st.st_mode), "sock", std::to_string(st.st_mode));
  c.ok("mknod_reg", mknod((dir + "/reg").c_str(), S_IFREG | 0644, 0));
  c.err("mknod_exists", mknod((dir + "/fifo").c_str(), S_IFIFO | 0644, 0), EEXIST);
  return c.done();
}

CONF_CASE(basic, symlink_readlink) {
  Checker c;
  std::string l = dir + "/l";
  c.ok("symlink", symlink("target/../x y", l.c_str()));
  char buf[256] = {};
  ssize_t n = readlink(l.c_str(), buf, sizeof buf);
  c.ok("readlink", n);
  c.eq_str("target", std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "target/../x y");
  struct stat st;
  c.ok("lstat", lstat(l.c_str(), &st));
  c.truth("is_link", S_ISLNK(st.st_mode) && st.st_size == 13, "link_size_13",
          std::to_string(st.st_size));
  c.err("stat_dangling", stat(l.c_str(), &st), ENOENT);
  c.err("symlink_exists", symlink("t", l.c_str()), EEXIST);
  write_file(dir + "/f", "x");
  c.err("readlink_regular", readlink((dir + "/f").c_str(), buf, sizeof buf), EINVAL);
  return c.done();
}

CONF_CASE(basic, link_rules) {
  Checker c;
  std::string f = dir + "/f", g = dir + "/g";
  write_file(f, "data");
  c.ok("link", link(f.c_str(), g.c_str()));
  struct stat a, b;
  c.ok("stat_f", stat(f.c_str(), &a));
  c.ok("stat_g", stat(g.c_str(), &b));
  c.eq("same_ino", static_cast<long long>(b.st_ino), static_cast<long long>(a.st_ino));
  c.eq("nlink", static_cast<long long>(a.st_nlink), 2);
  c.err("link_exists", link(f.c_str(), g.c_str()), EEXIST);
  mkdir((dir + "/d").c_str(), 0755);
  c.err("link_dir", link((dir + "/d").c_str(), (dir + "/d2").c_str()), EPERM);
  c.err("link_missing", link((dir + "/none").c_str(), (dir + "/x").c_str()), ENOENT);
  c.ok("unlink_one", unlink(f.c_str()));
  c.ok("stat_g_after", stat(g.c_str(), &b));
  c.eq("nlink_after", static_cast<long long>(b.st_nlink), 1);
  return c.done();
}

CONF_CASE(basic, rename_plain) {
  Checker c;
  write_file(dir + "/a", "A");
  write_file(dir + "/b", "B");
  c.ok("rename_over", rename((dir + "/a").c_str(), (dir + "/b").c_str()));
  struct stat st;
  c.err("old_gone", stat((dir + "/a").c_str(), &st), ENOENT);
  c.eq_str("content", read_file(dir + "/b"), "A");
  c.err("rename_missing", rename((dir + "/a").c_str(), (dir + "/c").c_str()), ENOENT);
  mkdir((dir + "/d1").c_str(), 0755);
  mkdir((dir + "/d1/sub").c_str(), 0755);
  c.ok("rename_dir_across", rename((dir + "/d1/sub").c_str(), (dir + "/sub2").c_str()));
  c.ok("rename_same", rename((dir + "/b").c_str(), (dir + "/b").c_str()));
  return c.done();
}

CONF_CASE(basic, rename_noreplace) {
  Checker c;
  write_file(dir + "/a", "A");
  write_file(dir + "/b", "B");
  c.err("noreplace_existing",
        renameat2(AT_FDCWD, (dir + "/a").c_str(), AT_FDCWD, (dir + "/b").c_str(), RENAME_NOREPLACE),
        EEXIST);
  c.eq_str("a_intact", read_file(dir + "/a"), "A");
  c.eq_str("b_intact", read_file(dir + "/b"), "B");
  c.ok("noreplace_new",
       renameat2(AT_FDCWD, (dir + "/a").c_str(), AT_FDCWD, (dir + "/c").c_str(), RENAME_NOREPLACE));
  c.eq_str("c_content", read_file(dir + "/c"), "A");
  return c.done();
}

CONF_CASE(basic, rename_exchange) {
  Checker c;
  write_file(dir + "/a", "A");
  mkdir((dir + "/b").c_str(), 0755);
  c.ok("exchange",
       renameat2(AT_FDCWD, (dir + "/a").c_str(), AT_FDCWD, (dir + "/b").c_str(), RENAME_EXCHANGE));
  struct stat st;
  c.ok("stat_a", stat((dir + "/a").c_str(), &st));
  c.truth("a_is_dir", S_ISDIR(st.st_mode), "dir", std::to_string(st.st_mode));
  c.eq_str("b_content", read_file(dir + "/b"), "A");
  c.err(
      "exchange_missing",
      renameat2(AT_FDCWD, (dir + "/b").c_str(), AT_FDCWD, (dir + "/none").c_str(), RENAME_EXCHANGE),
      ENOENT);
  c.err("exchange_and_noreplace",
        renameat2(AT_FDCWD, (dir + "/a").c_str(), AT_FDCWD, (dir + "/b").c_str(),
                  RENAME_EXCHANGE | RENAME_NOREPLACE),
        EINVAL);
  return c.done();
}

CONF_CASE(basic, rename_whiteout) {
  Checker c;
  write_file(dir + "/a", "A");
  c.ok("whiteout",
       renameat2(AT_FDCWD, (dir + "/a").c_str(), AT_FDCWD, (dir + "/b").c_str(), RENAME_WHITEOUT));
  struct stat st;
  c.ok("stat_whiteout", lstat((dir + "/a").c_str(), &st));
  c.truth("a_is_whiteout", S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0), "chr_0:0",
          std::to_string(st.st_mode) + ":" + std::to_string(st.st_rdev));
  c.eq_str("b_content", read_file(dir + "/b"), "A");
  return c.done();
}

CONF_CASE(basic, rename_dir_errors) {
  Checker c;
  mkdir((dir + "/d").c_str(), 0755);
  mkdir((dir + "/full").c_str(), 0755);
  write_file(dir + "/full/x", "x");
  write_file(dir + "/f", "f");
  c.err("dir_over_nonempty", rename((dir + "/d").c_str(), (dir + "/full").c_str()), ENOTEMPTY);
  c.err("dir_over_file", rename((dir + "/d").c_str(), (dir + "/f").c_str()), ENOTDIR);
  c.err("file_over_dir", rename((dir + "/f").c_str(), (dir + "/d").c_str()), EISDIR);
  c.err("dir_into_itself", rename((dir + "/d").c_str(), (dir + "/d/sub").c_str()), EINVAL);
  mkdir((dir + "/empty").c_str(), 0755);
  c.ok("dir_over_empty", rename((dir + "/d").c_str(), (dir + "/empty").c_str()));
  return c.done();
}

CONF_CASE(basic, unlink_rmdir_errors) {
  Checker c;
  mkdir((dir + "/d").c_str(), 0755);
  mkdir((dir + "/full").c_str(), 0755);
  write_file(dir + "/full/x", "x");
  write_file(dir + "/f", "f");
  c.err("unlink_dir", unlink((dir + "/d").c_str()), EISDIR);
  c.err("unlink_missing", unlink((dir + "/none").c_str()), ENOENT);
  c.err("rmdir_file", rmdir((dir + "/f").c_str()), ENOTDIR);
  c.err("rmdir_nonempty", rmdir((dir + "/full").c_str()), ENOTEMPTY);
  c.err("rmdir_missing", rmdir((dir + "/none").c_str()), ENOENT);
  c.err("rmdir_dot", rmdir((dir + "/d/.").c_str()), EINVAL);
  c.err("unlink_under_file", unlink((dir + "/f/x").c_str()), ENOTDIR);
  c.ok("rmdir", rmdir((dir + "/d").c_str()));
  c.ok("unlink", unlink((dir + "/f").c_str()));
  return c.done();
}

CONF_CASE(basic, name_length) {
  Checker c;
  std::string n255(255, 'n'), n256(256, 'n');
  c.truth("create_255", write_file(dir + "/" + n255, "x"), "0", errno_name(last_errno()));
  int e;
  auto names = list_dir(dir, &e);
  c.truth("listed_255", names.count(n255) == 1, "listed", "missing");
  c.err("create_256", open((dir + "/" + n256).c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  c.err("mkdir_256", mkdir((dir + "/" + n256).c_str(), 0755), ENAMETOOLONG);
  struct stat st;
  c.err("stat_256", stat((dir + "/" + n256).c_str(), &st), ENAMETOOLONG);
  c.err("symlink_256", symlink("t", (dir + "/" + n256).c_str()), ENAMETOOLONG);
  return c.done();
}

CONF_CASE(basic, setattr) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "0123456789");
  struct stat st;
  c.ok("chmod", chmod(f.c_str(), 0640));
  c.ok("stat1", stat(f.c_str(), &st));
  c.eq_oct("mode", st.st_mode & 07777, 0640);
  c.ok("chmod_suid", chmod(f.c_str(), 04755));
  c.ok("stat2", stat(f.c_str(), &st));
  c.eq_oct("mode_suid", st.st_mode & 07777, 04755);
  c.ok("chown", chown(f.c_str(), 1234, 2345));
  c.ok("stat3", stat(f.c_str(), &st));
  c.truth("owner", st.st_uid == 1234 && st.st_gid == 2345, "1234:2345",
          std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid));
  // Root's chown keeps no set-user-ID bit on a regular file.
  c.eq_oct("suid_cleared_by_chown", st.st_mode & 07777, 0755);
  c.ok("truncate_grow", truncate(f.c_str(), 10000));
  c.ok("stat4", stat(f.c_str(), &st));
  c.eq("size_grown", st.st_size, 10000);
  std::string content = read_file(f);
  c.truth("tail_zero", content.size() == 10000 && content[9999] == '\0' && content[0] == '0',
          "zeros", std::to_string(content.size()));
  c.ok("truncate_shrink", truncate(f.c_str(), 5));
  c.eq_str("content_shrunk", read_file(f), "01234");
  struct timespec ts[2] = {{1000000000, 500000000}, {1100000000, 250000000}};
  c.ok("utimensat", utimensat(AT_FDCWD, f.c_str(), ts, 0));
  c.ok("stat5", stat(f.c_str(), &st));
  c.truth("times",
          st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 500000000 &&
              st.st_mtim.tv_sec == 1100000000 && st.st_mtim.tv_nsec == 250000000,
          "1000000000.5/1100000000.25",
          std::to_string(st.st_atim.tv_sec) + "." + std::to_string(st.st_atim.tv_nsec) + "/" +
              std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  struct timespec omit[2] = {{0, UTIME_OMIT}, {1200000000, 0}};
  c.ok("utimensat_omit", utimensat(AT_FDCWD, f.c_str(), omit, 0));
  c.ok("stat6", stat(f.c_str(), &st));
  c.truth("atime_kept", st.st_atim.tv_sec == 1000000000 && st.st_mtim.tv_sec == 1200000000,
          "1000000000/1200000000",
          std::to_string(st.st_atim.tv_sec) + "/" + std::to_string(st.st_mtim.tv_sec));
  c.err("truncate_dir", truncate(dir.c_str(), 0), EISDIR);
  c.err("truncate_negative", truncate(f.c_str(), -1), EINVAL);
  return c.done();
}

CONF_CASE(basic, fallocate_modes) {
  Checker c;
  std::string f = dir + "/f";
  int fd = open(f.c_str(), O_CREAT | O_RDWR, 0644);
  c.ok("open", fd);
  struct stat st;
  c.ok("fallocate_0", fallocate(fd, 0, 0, 65536));
  c.ok("fstat1", fstat(fd, &st));
  c.eq("size_after_alloc", st.st_size, 65536);
  c.ok("fallocate_keep_size", fallocate(fd, FALLOC_FL_KEEP_SIZE, 65536, 65536));
  c.ok("fstat2", fstat(fd, &st));
  c.eq("size_kept", st.st_size, 65536);
  std::string data(65536, 'x');
  c.eq("pwrite", pwrite(fd, data.data(), data.size(), 0), 65536);
  c.ok("punch_hole", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
  char buf[4096];
  c.eq("pread_hole", pread(fd, buf, sizeof buf, 4096), 4096);
  c.truth("hole_zero", buf[0] == 0 && buf[4095] == 0, "zeros", "data");
  c.eq("pread_after_hole", pread(fd, buf, 1, 8192), 1);
  c.truth("data_kept", buf[0] == 'x', "x", std::string(1, buf[0]));
  c.err("punch_without_keep", fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
  c.err("negative_len", fallocate(fd, 0, 0, -1), EINVAL);
  if (fd >= 0) close(fd);
  int ro = open(f.c_str(), O_RDONLY);
  c.err("fallocate_rdonly_fd", fallocate(ro, 0, 0, 4096), EBADF);
  if (ro >= 0) close(ro);
  return c.done();
}

// The modes the FUSE client does not forward: it answers EOPNOTSUPP itself.
CONF_CASE(basic, fallocate_unforwarded) {
  Checker c;
  std::string f = dir + "/f";
  int fd = open(f.c_str(), O_CREAT | O_RDWR, 0644);
  std::string data(65536, 'x');
  c.eq("pwrite", pwrite(fd, data.data(), data.size(), 0), 65536);
  struct stat st;
  if (env.fuse()) {
    c.note("fuse_client_forwards_KEEP_SIZE_PUNCH_HOLE_ZERO_RANGE_only");
    c.ok("zero_range", fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096));
    char b = 'x';
    c.eq("pread_zeroed", pread(fd, &b, 1, 100), 1);
    c.eq("zeroed", b, 0);
    c.err("collapse_range", fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), EOPNOTSUPP);
    c.err("insert_range", fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, 4096), EOPNOTSUPP);
  } else {
    c.ok("zero_range", fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096));
    c.ok("collapse_range", fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096));
    c.ok("fstat", fstat(fd, &st));
    c.eq("size_collapsed", st.st_size, 61440);
  }
  close(fd);
  return c.done();
}

CONF_CASE(basic, lseek_data_hole) {
  Checker c;
  std::string f = dir + "/f";
  int fd = open(f.c_str(), O_CREAT | O_RDWR, 0644);
  c.ok("open", fd);
  std::string block(4096, 'd');
  c.eq("write_head", pwrite(fd, block.data(), block.size(), 0), 4096);
  c.eq("write_tail", pwrite(fd, block.data(), block.size(), 1 << 20), 4096);
  c.ok("fsync", fsync(fd));
  c.eq("seek_hole_0", lseek(fd, 0, SEEK_HOLE), 4096);
  c.eq("seek_data_8192", lseek(fd, 8192, SEEK_DATA), 1 << 20);
  c.eq("seek_hole_tail", lseek(fd, (1 << 20) + 10, SEEK_HOLE), (1 << 20) + 4096);
  c.err("seek_data_eof", lseek(fd, (1 << 20) + 4096, SEEK_DATA), ENXIO);
  c.err("seek_hole_past_eof", lseek(fd, (1 << 20) + 8192, SEEK_HOLE), ENXIO);
  c.eq("seek_end", lseek(fd, 0, SEEK_END), (1 << 20) + 4096);
  c.err("seek_negative", lseek(fd, -1, SEEK_SET), EINVAL);
  if (fd >= 0) close(fd);
  return c.done();
}

CONF_CASE(basic, copy_file_range) {
  Checker c;
  std::string data = pattern(300000, 7);
  write_file(dir + "/in", data);
  int in = open((dir + "/in").c_str(), O_RDONLY);
  int out = open((dir + "/out").c_str(), O_CREAT | O_RDWR, 0644);
  c.ok("open_in", in);
  c.ok("open_out", out);
  loff_t off_in = 1000, off_out = 0;
  size_t total = 0;
  while (total < 200000 && !c.failed()) {
    ssize_t n = copy_file_range(in, &off_in, out, &off_out, 200000 - total, 0);
    if (!c.ok("copy_file_range", n) || n == 0) break;
    total += static_cast<size_t>(n);
  }
  c.eq("copied", static_cast<long long>(total), 200000);
  close(out);
  c.truth("content", read_file(dir + "/out") == data.substr(1000, 200000), "equal", "differs");
  loff_t a = 0, b = 100;
  c.err("same_file_overlap", copy_file_range(in, &a, in, &b, 1000, 0), EBADF);
  int rw = open((dir + "/in").c_str(), O_RDWR);
  a = 0, b = 100;
  c.err("same_file_overlap_rw", copy_file_range(rw, &a, rw, &b, 1000, 0), EINVAL);
  c.err("bad_flags", copy_file_range(in, &a, rw, &b, 10, 1), EINVAL);
  close(rw);
  close(in);
  return c.done();
}

CONF_CASE(basic, tmpfile) {
  Checker c;
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR, 0600);
  if (!c.ok("open_tmpfile", fd)) return c.done();
  c.eq("write", write(fd, "tmp", 3), 3);
  struct stat st;
  c.ok("fstat", fstat(fd, &st));
  c.eq("nlink_0", static_cast<long long>(st.st_nlink), 0);
  c.eq_oct("mode", st.st_mode & 07777, 0600);
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  c.ok("linkat",
       linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, (dir + "/named").c_str(), AT_SYMLINK_FOLLOW));
  c.eq_str("content", read_file(dir + "/named"), "tmp");
  close(fd);
  c.err("tmpfile_rdonly", open(dir.c_str(), O_TMPFILE | O_RDONLY, 0600), EINVAL);
  int excl = open(dir.c_str(), O_TMPFILE | O_RDWR | O_EXCL, 0600);
  c.ok("tmpfile_excl", excl);
  c.err("link_excl_tmpfile",
        linkat(AT_FDCWD, ("/proc/self/fd/" + std::to_string(excl)).c_str(), AT_FDCWD,
               (dir + "/named2").c_str(), AT_SYMLINK_FOLLOW),
        ENOENT);
  if (excl >= 0) close(excl);
  return c.done();
}

CONF_CASE(basic, statfs) {
  Checker c;
  struct statfs sf;
  c.ok("statfs", statfs(dir.c_str(), &sf));
  c.eq("namelen", sf.f_namelen, 255);
  c.truth("sane", sf.f_bsize > 0 && sf.f_blocks > 0 && sf.f_bfree <= sf.f_blocks, "sane",
          std::to_string(sf.f_bsize) + "/" + std::to_string(sf.f_blocks));
  if (!env.backing.empty()) {
    struct statfs host;
    c.ok("statfs_backing", statfs(env.backing.c_str(), &host));
    c.eq("total_bytes_as_host", static_cast<long long>(sf.f_blocks * sf.f_frsize),
         static_cast<long long>(host.f_blocks * host.f_frsize));
  }
  return c.done();
}

CONF_CASE(basic, readdir) {
  Checker c;
  write_file(dir + "/a", "");
  mkdir((dir + "/b").c_str(), 0755);
  symlink("a", (dir + "/c").c_str());
  int e;
  auto names = list_dir(dir, &e);
  c.ok("opendir", e ? -1 : 0);
  std::vector<std::string> v(names.begin(), names.end());
  c.eq_str("entries", join(v), ".,..,a,b,c");
  c.err("opendir_file", open((dir + "/a").c_str(), O_RDONLY | O_DIRECTORY), ENOTDIR);
  return c.done();
}

// ---- io ------------------------------------------------------------------------

CONF_CASE(io, write_read) {
  Checker c;
  std::string data = pattern((1 << 20) + 123, 1);
  c.truth("write", write_file(dir + "/f", data), "0", errno_name(last_errno()));
  bool ok = false;
  std::string back = read_file(dir + "/f", &ok);
  c.truth("read_back", ok && back == data, "equal", ok ? "differs" : errno_name(last_errno()));
  struct stat st;
  c.ok("stat", stat((dir + "/f").c_str(), &st));
  c.eq("size", st.st_size, (1 << 20) + 123);
  return c.done();
}

CONF_CASE(io, append) {
  Checker c;
  write_file(dir + "/f", "start:");
  int a = open((dir + "/f").c_str(), O_WRONLY | O_APPEND);
  int b = open((dir + "/f").c_str(), O_WRONLY | O_APPEND);
  c.ok("open_a", a);
  c.ok("open_b", b);
  c.eq("write_a", write(a, "aa", 2), 2);
  c.eq("write_b", write(b, "bbb", 3), 3);
  c.eq("write_a2", write(a, "c", 1), 1);
  c.eq("pwrite_append_ignores_offset", pwrite(b, "P", 1, 0), 1);
  close(a);
  close(b);
  c.eq_str("content", read_file(dir + "/f"), "start:aabbbcP");
  return c.done();
}

CONF_CASE(io, wronly_and_rdwr) {
  Checker c;
  int w = open((dir + "/f").c_str(), O_CREAT | O_WRONLY, 0644);
  c.ok("open_wronly", w);
  c.eq("write", write(w, "hello", 5), 5);
  char buf[8];
  c.err("read_wronly", read(w, buf, 1), EBADF);
  close(w);
  int r = open((dir + "/f").c_str(), O_RDONLY);
  c.err("write_rdonly", write(r, "x", 1), EBADF);
  close(r);
  int rw = open((dir + "/f").c_str(), O_RDWR);
  c.eq("pwrite", pwrite(rw, "J", 1, 1), 1);
  c.eq("pread", pread(rw, buf, 5, 0), 5);
  c.eq_str("content", std::string(buf, 5), "hJllo");
  c.eq("pwrite_hole", pwrite(rw, "Z", 1, 10), 1);
  c.eq("pread_hole", pread(rw, buf, 6, 5), 6);
  c.truth("hole_zeros", buf[0] == 0 && buf[4] == 0 && buf[5] == 'Z', "zeros_then_Z", "other");
  close(rw);
  return c.done();
}

CONF_CASE(io, o_direct) {
  Checker c;
  int fd = open((dir + "/f").c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  if (!c.ok("open_direct", fd)) return c.done();
  void* buf = nullptr;
  if (posix_memalign(&buf, 4096, 8192) != 0) return c.skip("no memory");
  memset(buf, 'q', 8192);
  c.eq("pwrite_aligned", pwrite(fd, buf, 8192, 0), 8192);
  memset(buf, 0, 8192);
  c.eq("pread_aligned", pread(fd, buf, 8192, 0), 8192);
  c.truth("data", static_cast<char*>(buf)[8191] == 'q', "q", "other");
  free(buf);
  close(fd);
  return c.done();
}

CONF_CASE(io, mmap_shared) {
  Checker c;
  write_file(dir + "/f", std::string(8192, 'm'));
  int fd = open((dir + "/f").c_str(), O_RDWR);
  c.ok("open", fd);
  void* p = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  // --cache=never and --cache=metadata open files with DIRECT_IO; a shared
  // mapping of such a file is refused unless --allow-mmap is negotiated
  // (FUSE 7.39+).
  // With --allow-mmap the daemon offers FUSE_DIRECT_IO_ALLOW_MMAP (7.39):
  // a kernel that knows it (6.6 and later) maps; 6.1 still refuses.
  const bool allow_mmap_known = env.profile == "mmap" && env.kernel_at_least(6, 6);
  const bool direct_io =
      env.profile == "never" || env.profile == "metadata" || env.profile == "mmap";
  if (env.fuse() && direct_io && !allow_mmap_known) {
    c.note(env.profile == "mmap" ? "kernel_before_6.6_ignores_allow_mmap:ENODEV"
                                 : "direct_io_without_allow_mmap:ENODEV");
    c.truth("mmap_shared", p == MAP_FAILED && errno == ENODEV, "ENODEV",
            p == MAP_FAILED ? errno_name(errno) : "0");
    if (p != MAP_FAILED) munmap(p, 8192);
    close(fd);
    return c.done();
  }
  c.truth("mmap_shared", p != MAP_FAILED, "0", p == MAP_FAILED ? errno_name(errno) : "0");
  if (p == MAP_FAILED) return c.done();
  memcpy(p, "mapped", 6);
  c.ok("msync", msync(p, 8192, MS_SYNC));
  munmap(p, 8192);
  close(fd);
  c.eq_str("content", read_file(dir + "/f").substr(0, 7), "mappedm");
  return c.done();
}

CONF_CASE(io, fsync_variants) {
  Checker c;
  int fd = open((dir + "/f").c_str(), O_CREAT | O_RDWR, 0644);
  c.eq("write", write(fd, "s", 1), 1);
  c.ok("fsync", fsync(fd));
  c.ok("fdatasync", fdatasync(fd));
  c.ok("syncfs", syncfs(fd));
  close(fd);
  int d = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  c.ok("fsync_dir", fsync(d));
  close(d);
  return c.done();
}

}  // namespace vfsd::conformance
