// Group "suid": a world-writable set-user-ID/set-group-ID file owned by root,
// changed by a user who does not own it (uid 1000). Linux clears both bits
// (set-group-ID because the group may execute) on every write, truncation
// and fallocate by a caller without CAP_FSETID, and keeps them for root.
// Run under every cache policy: with --cache=never the guest's direct-I/O
// path leaves the clearing to the daemon (the Rust virtiofsd leaves the
// bits set there).
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

const std::vector<gid_t> kGroups = {kUserGid, kSuppGid};
constexpr mode_t kPrivMode = 06777;

// Makes the root-owned file, runs `change` as kUser, and checks the mode.
Verdict after_stranger(const std::string& dir,
                       const std::function<long(const std::string&)>& change, mode_t want) {
  Checker c;
  const std::string f = dir + "/suid";
  c.truth("create", write_file(f, "0123456789"), "written", "failed");
  c.ok("chmod", chmod(f.c_str(), kPrivMode));
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] { return change(f); });
  c.eq_str("change_as_stranger", errno_name(e), "0");
  struct stat st {};
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("mode_after", st.st_mode & 07777, want);
  return c.done();
}

long write_one(const std::string& f) {
  int fd = open(f.c_str(), O_WRONLY);
  if (fd < 0) return -1;
  ssize_t n = pwrite(fd, "y", 1, 3);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == 1 ? 0 : -1;
}

}  // namespace

CONF_CASE(suid, write_by_stranger_clears) {
  return after_stranger(dir, write_one, 0777);
}

CONF_CASE(suid, ftruncate_by_stranger_clears) {
  return after_stranger(
      dir,
      [](const std::string& f) -> long {
        int fd = open(f.c_str(), O_WRONLY);
        if (fd < 0) return -1;
        int rc = ftruncate(fd, 4);
        int saved = errno;
        close(fd);
        errno = saved;
        return rc;
      },
      0777);
}

CONF_CASE(suid, truncating_open_by_stranger_clears) {
  return after_stranger(
      dir,
      [](const std::string& f) -> long {
        int fd = open(f.c_str(), O_WRONLY | O_TRUNC);
        if (fd < 0) return -1;
        close(fd);
        return 0;
      },
      0777);
}

CONF_CASE(suid, fallocate_by_stranger_clears) {
  return after_stranger(
      dir,
      [](const std::string& f) -> long {
        int fd = open(f.c_str(), O_WRONLY);
        if (fd < 0) return -1;
        int rc = fallocate(fd, 0, 0, 65536);
        int saved = errno;
        close(fd);
        errno = saved;
        return rc;
      },
      0777);
}

// Root (CAP_FSETID) keeps them.
CONF_CASE(suid, write_by_root_keeps) {
  Checker c;
  const std::string f = dir + "/suid";
  c.truth("create", write_file(f, "0123456789"), "written", "failed");
  c.ok("chmod", chmod(f.c_str(), kPrivMode));
  c.ok("write_as_root", write_one(f));
  struct stat st {};
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("mode_after", st.st_mode & 07777, kPrivMode);
  return c.done();
}

}  // namespace vfsd::conformance
