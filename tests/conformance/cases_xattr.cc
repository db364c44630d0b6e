// Extended attributes: absent without --xattr ("xattr_off"), plain ("xattr"),
// renamed by an --xattrmap ("xattrmap", "seclabel"), --rewrite-security-xattrs
// ("rewrite") and POSIX ACLs ("acl"). Host-side prepare steps and checks look
// at the names the host really stores.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "conformance.h"

namespace vfsd::conformance {
namespace {

// The names, sorted; "error:<errno>" if listxattr failed (never "(none)").
std::string sorted_list(const std::string& path, int* err) {
  auto names = list_xattrs(path, err);
  if (*err) return "error:" + errno_name(*err);
  std::sort(names.begin(), names.end());
  return join(names);
}

bool host_set(const std::string& path, const char* name, const std::string& value,
              std::string& error) {
  if (lsetxattr(path.c_str(), name, value.data(), value.size(), 0) != 0) {
    error = std::string("setxattr ") + name + " on " + path + ": " + errno_name(errno);
    return false;
  }
  return true;
}

// Checks that host file `path` has xattr `name` = `value` (or, with value
// nullptr, that it lacks it).
void expect_host_xattr(Checker& c, const std::string& path, const std::string& name,
                       const char* value) {
  int e;
  std::string got = get_xattr(path, name, &e);
  if (value) {
    c.eq_str("host_" + name, e ? errno_name(e) : got, value);
  } else {
    c.eq_str("host_" + name + "_absent", errno_name(e), "ENODATA");
  }
}

// ---- POSIX ACL xattr encoding (the kernel's posix_acl_xattr format) ----
struct AclEntry {
  uint16_t tag;
  uint16_t perm;
  uint32_t id;
};
constexpr uint16_t kUserObj = 0x01, kUserTag = 0x02, kGroupObj = 0x04, kMask = 0x10,
                   kOtherTag = 0x20;
constexpr uint32_t kUndefined = 0xffffffff;

std::string encode_acl(const std::vector<AclEntry>& entries) {
  std::string out(4, '\0');
  uint32_t version = 2;
  memcpy(out.data(), &version, 4);
  for (const auto& e : entries) {
    char buf[8];
    memcpy(buf, &e.tag, 2);
    memcpy(buf + 2, &e.perm, 2);
    memcpy(buf + 4, &e.id, 4);
    out.append(buf, 8);
  }
  return out;
}

std::vector<AclEntry> decode_acl(const std::string& s) {
  std::vector<AclEntry> out;
  for (size_t i = 4; i + 8 <= s.size(); i += 8) {
    AclEntry e;
    memcpy(&e.tag, s.data() + i, 2);
    memcpy(&e.perm, s.data() + i + 2, 2);
    memcpy(&e.id, s.data() + i + 4, 4);
    out.push_back(e);
  }
  return out;
}

int find_user_perm(const std::string& acl, uint32_t uid) {
  for (const auto& e : decode_acl(acl)) {
    if (e.tag == kUserTag && e.id == uid) return e.perm;
  }
  return -1;
}

const std::vector<gid_t> kGroups = {kUserGid, kSuppGid};

}  // namespace

// ---- xattr_off: no --xattr --------------------------------------------------------
// The daemon answers ENOSYS; the FUSE client turns that into EOPNOTSUPP and
// stops asking.
CONF_CASE(xattr_off, all_ops_eopnotsupp) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  char buf[64];
  c.err("setxattr", setxattr(f.c_str(), "user.a", "1", 1, 0), EOPNOTSUPP);
  c.err("getxattr", getxattr(f.c_str(), "user.a", buf, sizeof buf), EOPNOTSUPP);
  c.err("listxattr", listxattr(f.c_str(), buf, sizeof buf), EOPNOTSUPP);
  c.err("removexattr", removexattr(f.c_str(), "user.a"), EOPNOTSUPP);
  // From 6.2 the FUSE client reads ACLs through its get_acl path, which
  // answers "no ACL" (ENODATA) once getxattr is known to be missing; 6.1
  // refuses ACL names on a mount without POSIX ACL support.
  const bool acl_enodata = env.kernel_at_least(6, 2);
  if (acl_enodata) c.note("kernel_6.2+_get_acl_path:ENODATA");
  c.err("get_acl", getxattr(f.c_str(), "system.posix_acl_access", buf, sizeof buf),
        acl_enodata ? ENODATA : EOPNOTSUPP);
  c.err("setxattr_again", setxattr(f.c_str(), "user.b", "1", 1, 0), EOPNOTSUPP);
  return c.done();
}

// ---- xattr: --xattr ------------------------------------------------------------------

CONF_CASE(xattr, set_get_size) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.ok("setxattr", setxattr(f.c_str(), "user.a", "value", 5, 0));
  int e;
  c.eq_str("getxattr", get_xattr(f, "user.a", &e), "value");
  c.eq("size_query", getxattr(f.c_str(), "user.a", nullptr, 0), 5);
  char small[2];
  c.err("erange", getxattr(f.c_str(), "user.a", small, sizeof small), ERANGE);
  c.ok("set_empty", setxattr(f.c_str(), "user.empty", "", 0, 0));
  c.eq("get_empty", getxattr(f.c_str(), "user.empty", nullptr, 0), 0);
  std::string big(3000, 'b');
  c.ok("set_3000", setxattr(f.c_str(), "user.big", big.data(), big.size(), 0));
  c.truth("get_3000", get_xattr(f, "user.big", &e) == big, "equal", errno_name(e));
  c.err("get_missing", getxattr(f.c_str(), "user.none", small, sizeof small), ENODATA);
  c.ok("set_on_dir", setxattr(dir.c_str(), "user.d", "d", 1, 0));
  c.eq_str("get_on_dir", get_xattr(dir, "user.d", &e), "d");
  return c.done();
}

CONF_CASE(xattr, list) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  setxattr(f.c_str(), "user.one", "1", 1, 0);
  setxattr(f.c_str(), "user.two", "22", 2, 0);
  int e;
  c.eq_str("list", sorted_list(f, &e), "user.one,user.two");
  c.eq("size_query", listxattr(f.c_str(), nullptr, 0), 18);
  char small[4];
  c.err("erange", listxattr(f.c_str(), small, sizeof small), ERANGE);
  write_file(dir + "/g", "x");
  c.eq("empty_list", listxattr((dir + "/g").c_str(), nullptr, 0), 0);
  return c.done();
}

CONF_CASE(xattr, create_replace_remove) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.ok("create", setxattr(f.c_str(), "user.a", "1", 1, XATTR_CREATE));
  c.err("create_existing", setxattr(f.c_str(), "user.a", "2", 1, XATTR_CREATE), EEXIST);
  c.err("replace_missing", setxattr(f.c_str(), "user.b", "2", 1, XATTR_REPLACE), ENODATA);
  c.ok("replace", setxattr(f.c_str(), "user.a", "3", 1, XATTR_REPLACE));
  int e;
  c.eq_str("replaced", get_xattr(f, "user.a", &e), "3");
  c.err("bad_flags", setxattr(f.c_str(), "user.a", "3", 1, 4), EINVAL);
  c.ok("remove", removexattr(f.c_str(), "user.a"));
  c.eq_str("get_removed", (get_xattr(f, "user.a", &e), errno_name(e)), "ENODATA");
  c.err("remove_missing", removexattr(f.c_str(), "user.a"), ENODATA);
  return c.done();
}

CONF_CASE(xattr, vfs_limits) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  symlink("f", (dir + "/l").c_str());
  c.err("user_on_symlink", lsetxattr((dir + "/l").c_str(), "user.a", "1", 1, 0), EPERM);
  std::string huge(65537, 'h');
  c.err("value_too_big", setxattr(f.c_str(), "user.h", huge.data(), huge.size(), 0), E2BIG);
  std::string long_name = "user." + std::string(251, 'n');
  c.err("name_too_long", setxattr(f.c_str(), long_name.c_str(), "1", 1, 0), ERANGE);
  c.err("no_namespace", setxattr(f.c_str(), "nonamespace", "1", 1, 0), EOPNOTSUPP);
  mknod((dir + "/fifo").c_str(), S_IFIFO | 0644, 0);
  c.err("user_on_fifo", setxattr((dir + "/fifo").c_str(), "user.a", "1", 1, 0), EPERM);
  return c.done();
}

// trusted.* needs CAP_SYS_ADMIN on the host, which the daemon does not use
// on the guest's behalf (the Rust virtiofsd runs without it): the guest's
// root gets EPERM. An --xattrmap can move trusted.* into user.*.
CONF_CASE(xattr, trusted_as_root) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  if (!env.fuse()) {
    c.ok("set_trusted", setxattr(f.c_str(), "trusted.t", "t", 1, 0));
    int e;
    c.eq_str("get_trusted", get_xattr(f, "trusted.t", &e), "t");
    return c.done();
  }
  c.note("daemon_without_CAP_SYS_ADMIN");
  c.err("set_trusted", setxattr(f.c_str(), "trusted.t", "t", 1, 0), EPERM);
  return c.done();
}

CONF_CASE(xattr, non_owner) {
  Checker c;
  write_file(dir + "/rootfile", "x", 0644);
  write_file(dir + "/open", "x", 0666);
  chmod((dir + "/open").c_str(), 0666);
  setxattr((dir + "/rootfile").c_str(), "user.r", "r", 1, 0);
  int e = errno_as_user(kUser, kUserGid, kGroups,
                        [&] { return setxattr((dir + "/rootfile").c_str(), "user.a", "1", 1, 0); });
  c.eq_str("set_on_unwritable", errno_name(e), "EACCES");
  e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    char b[8];
    return static_cast<long>(getxattr((dir + "/rootfile").c_str(), "user.r", b, sizeof b));
  });
  c.eq_str("get_on_readable", errno_name(e), "0");
  e = errno_as_user(kUser, kUserGid, kGroups,
                    [&] { return setxattr((dir + "/open").c_str(), "user.a", "1", 1, 0); });
  c.eq_str("set_on_writable", errno_name(e), "0");
  e = errno_as_user(kUser, kUserGid, kGroups,
                    [&] { return setxattr((dir + "/open").c_str(), "trusted.a", "1", 1, 0); });
  c.eq_str("set_trusted_unprivileged", errno_name(e), "EPERM");
  return c.done();
}

CONF_HOST_CHECK(xattr, names_unchanged) {
  Checker c;
  expect_host_xattr(c, dir + "/xattr.set_get_size/f", "user.a", "value");
  expect_host_xattr(c, dir + "/xattr.trusted_as_root/f", "trusted.t", nullptr);
  return c.done();
}

// ---- xattrmap: --xattrmap=:prefix:all::user.virtiofs.::bad:all::: ---------------------
// Every guest name is stored with "user.virtiofs." in front; host names
// without that prefix are hidden from the guest.

CONF_PREPARE(xattrmap) {
  std::string d = backing + "/xmap";
  if (mkdir(d.c_str(), 0755) != 0 || !write_file(d + "/hostfile", "h")) {
    error = "creating " + d + ": " + errno_name(errno);
    return false;
  }
  return host_set(d + "/hostfile", "user.hostonly", "h", error) &&
         host_set(d + "/hostfile", "user.virtiofs.user.visible", "v", error) &&
         host_set(d + "/hostfile", "user.virtiofs.trusted.vt", "t", error);
}

CONF_CASE(xattrmap, list_strips_and_hides) {
  Checker c;
  int e;
  c.eq_str("list", sorted_list(env.root + "/xmap/hostfile", &e), "trusted.vt,user.visible");
  c.eq_str("get_visible", get_xattr(env.root + "/xmap/hostfile", "user.visible", &e), "v");
  c.eq_str("get_trusted", get_xattr(env.root + "/xmap/hostfile", "trusted.vt", &e), "t");
  get_xattr(env.root + "/xmap/hostfile", "user.hostonly", &e);
  c.eq_str("get_unprefixed_host_name", errno_name(e), "ENODATA");
  return c.done();
}

CONF_CASE(xattrmap, set_remove_prefixed) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.ok("set_user", setxattr(f.c_str(), "user.new", "n", 1, 0));
  c.ok("set_trusted", setxattr(f.c_str(), "trusted.new", "t", 1, 0));
  c.ok("set_gone", setxattr(f.c_str(), "user.gone", "g", 1, 0));
  c.ok("remove", removexattr(f.c_str(), "user.gone"));
  int e;
  c.eq_str("list", sorted_list(f, &e), "trusted.new,user.new");
  c.eq_str("get", get_xattr(f, "user.new", &e), "n");
  c.err("create_existing", setxattr(f.c_str(), "user.new", "n", 1, XATTR_CREATE), EEXIST);
  return c.done();
}

CONF_HOST_CHECK(xattrmap, host_names_prefixed) {
  Checker c;
  std::string f = dir + "/xattrmap.set_remove_prefixed/f";
  expect_host_xattr(c, f, "user.virtiofs.user.new", "n");
  expect_host_xattr(c, f, "user.virtiofs.trusted.new", "t");
  expect_host_xattr(c, f, "user.new", nullptr);
  expect_host_xattr(c, f, "trusted.new", nullptr);
  expect_host_xattr(c, f, "user.virtiofs.user.gone", nullptr);
  return c.done();
}

// ---- seclabel: --security-label --xattrmap=:map:security.selinux:user.virtiofs.: -------
// The map shorthand expands to: prefix security.selinux with user.virtiofs.,
// hide the host's own security.selinux, refuse guest names starting with
// user.virtiofs., pass everything else.

CONF_PREPARE(seclabel) {
  std::string d = backing + "/sl";
  if (mkdir(d.c_str(), 0755) != 0 || !write_file(d + "/hostlabeled", "h") ||
      !write_file(d + "/guestlabeled", "g")) {
    error = "creating " + d + ": " + errno_name(errno);
    return false;
  }
  return host_set(d + "/hostlabeled", "security.selinux", "host_label", error) &&
         host_set(d + "/guestlabeled", "user.virtiofs.security.selinux", "guest_label", error);
}

// No LSM in the guest: the create carries an empty security context, and
// nothing is stored for it.
CONF_CASE(seclabel, create_without_lsm) {
  Checker c;
  c.truth("create", write_file(dir + "/f", "x"), "0", errno_name(last_errno()));
  c.ok("mkdir", mkdir((dir + "/d").c_str(), 0755));
  c.ok("symlink", symlink("f", (dir + "/l").c_str()));
  c.ok("mknod", mknod((dir + "/p").c_str(), S_IFIFO | 0644, 0));
  int e;
  get_xattr(dir + "/f", "security.selinux", &e);
  c.eq_str("no_label", errno_name(e), "ENODATA");
  return c.done();
}

CONF_CASE(seclabel, label_mapped) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.ok("set_label", setxattr(f.c_str(), "security.selinux", "guest_t", 7, 0));
  int e;
  c.eq_str("get_label", get_xattr(f, "security.selinux", &e), "guest_t");
  c.eq_str("list", sorted_list(f, &e), "security.selinux");
  c.ok("set_user", setxattr(f.c_str(), "user.plain", "p", 1, 0));
  c.eq_str("get_user", get_xattr(f, "user.plain", &e), "p");
  return c.done();
}

CONF_CASE(seclabel, host_label_hidden) {
  Checker c;
  int e;
  c.eq_str("list_hostlabeled", sorted_list(env.root + "/sl/hostlabeled", &e), "(none)");
  get_xattr(env.root + "/sl/hostlabeled", "security.selinux", &e);
  c.eq_str("get_hostlabeled", errno_name(e), "ENODATA");
  c.eq_str("get_guestlabeled", get_xattr(env.root + "/sl/guestlabeled", "security.selinux", &e),
           "guest_label");
  c.eq_str("list_guestlabeled", sorted_list(env.root + "/sl/guestlabeled", &e), "security.selinux");
  return c.done();
}

CONF_CASE(seclabel, prefix_refused) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.err("set_prefixed", setxattr(f.c_str(), "user.virtiofs.x", "1", 1, 0), EPERM);
  int e;
  get_xattr(env.root + "/sl/guestlabeled", "user.virtiofs.security.selinux", &e);
  c.eq_str("get_prefixed", errno_name(e), "ENODATA");
  c.err("remove_prefixed", removexattr(f.c_str(), "user.virtiofs.x"), EPERM);
  return c.done();
}

CONF_HOST_CHECK(seclabel, host_names) {
  Checker c;
  std::string f = dir + "/seclabel.label_mapped/f";
  expect_host_xattr(c, f, "user.virtiofs.security.selinux", "guest_t");
  expect_host_xattr(c, f, "security.selinux", nullptr);
  expect_host_xattr(c, f, "user.plain", "p");
  std::string n = dir + "/seclabel.create_without_lsm/f";
  expect_host_xattr(c, n, "user.virtiofs.security.selinux", nullptr);
  expect_host_xattr(c, n, "security.selinux", nullptr);
  expect_host_xattr(c, dir + "/sl/hostlabeled", "security.selinux", "host_label");
  return c.done();
}

// ---- rewrite: --xattr --rewrite-security-xattrs (crosvm) -------------------------------

CONF_CASE(rewrite, security_names) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.ok("set_security_foo", setxattr(f.c_str(), "security.foo", "1", 1, 0));
  int e;
  c.eq_str("get_security_foo", get_xattr(f, "security.foo", &e), "1");
  c.ok("set_selinux", setxattr(f.c_str(), "security.selinux", "lbl", 3, 0));
  c.eq_str("get_selinux", get_xattr(f, "security.selinux", &e), "lbl");
  c.ok("set_user", setxattr(f.c_str(), "user.plain", "p", 1, 0));
  c.eq_str("list", sorted_list(f, &e), "security.foo,security.selinux,user.plain");
  c.ok("remove_security_foo", removexattr(f.c_str(), "security.foo"));
  c.ok("set_security_bar", setxattr(f.c_str(), "security.bar", "2", 1, 0));
  return c.done();
}

CONF_CASE(rewrite, prefix_refused) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x");
  c.err("set_prefixed", setxattr(f.c_str(), "user.virtiofs.x", "1", 1, 0), EPERM);
  // A refused name reads as absent, as for an xattrmap `bad` rule.
  char b[8];
  c.err("get_prefixed", getxattr(f.c_str(), "user.virtiofs.x", b, sizeof b), ENODATA);
  c.err("remove_prefixed", removexattr(f.c_str(), "user.virtiofs.x"), EPERM);
  return c.done();
}

CONF_HOST_CHECK(rewrite, host_names) {
  Checker c;
  std::string f = dir + "/rewrite.security_names/f";
  expect_host_xattr(c, f, "user.virtiofs.security.bar", "2");
  expect_host_xattr(c, f, "security.bar", nullptr);
  expect_host_xattr(c, f, "user.virtiofs.security.foo", nullptr);
  expect_host_xattr(c, f, "security.selinux", "lbl");
  expect_host_xattr(c, f, "user.plain", "p");
  return c.done();
}

// ---- acl: --posix-acl ------------------------------------------------------------------

CONF_CASE(acl, named_user_entry) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "acl-data", 0600);
  std::string acl = encode_acl({{kUserObj, 6, kUndefined},
                                {kUserTag, 4, kUser},
                                {kGroupObj, 0, kUndefined},
                                {kMask, 4, kUndefined},
                                {kOtherTag, 0, kUndefined}});
  c.ok("set_access_acl", setxattr(f.c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0));
  struct stat st;
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("mode_group_is_mask", st.st_mode & 07777, 0640);
  int e;
  std::string back = get_xattr(f, "system.posix_acl_access", &e);
  c.eq("get_acl_user_perm", find_user_perm(back, kUser), 4);
  e = errno_as_user(kUser, kUserGid, kGroups, [&] { return open(f.c_str(), O_RDONLY); });
  c.eq_str("named_user_reads", errno_name(e), "0");
  e = errno_as_user(kUser, kUserGid, kGroups, [&] { return open(f.c_str(), O_WRONLY); });
  c.eq_str("named_user_cannot_write", errno_name(e), "EACCES");
  e = errno_as_user(kOther, kOtherGid, {kOtherGid}, [&] { return open(f.c_str(), O_RDONLY); });
  c.eq_str("other_user_denied", errno_name(e), "EACCES");
  // chmod rewrites the mask: group bits 0 leave the named user nothing.
  c.ok("chmod_0600", chmod(f.c_str(), 0600));
  e = errno_as_user(kUser, kUserGid, kGroups, [&] { return open(f.c_str(), O_RDONLY); });
  c.eq_str("masked_after_chmod", errno_name(e), "EACCES");
  c.ok("remove_acl", removexattr(f.c_str(), "system.posix_acl_access"));
  get_xattr(f, "system.posix_acl_access", &e);
  c.eq_str("acl_gone", errno_name(e), "ENODATA");
  return c.done();
}

CONF_CASE(acl, default_acl_inherited) {
  Checker c;
  std::string d = dir + "/d";
  mkdir(d.c_str(), 0755);
  std::string def = encode_acl({{kUserObj, 7, kUndefined},
                                {kUserTag, 7, kUser},
                                {kGroupObj, 5, kUndefined},
                                {kMask, 7, kUndefined},
                                {kOtherTag, 5, kUndefined}});
  c.ok("set_default_acl",
       setxattr(d.c_str(), "system.posix_acl_default", def.data(), def.size(), 0));
  umask(022);
  int fd = open((d + "/f").c_str(), O_CREAT | O_WRONLY, 0666);
  c.ok("create", fd);
  if (fd >= 0) close(fd);
  struct stat st;
  c.ok("stat_f", stat((d + "/f").c_str(), &st));
  // A default ACL replaces the umask: mode 0666 meets the ACL, group bits
  // show the mask (rw-).
  c.eq_oct("file_mode_ignores_umask", st.st_mode & 07777, 0664);
  int e;
  std::string acl = get_xattr(d + "/f", "system.posix_acl_access", &e);
  c.eq("inherited_named_user", find_user_perm(acl, kUser), 7);
  c.ok("mkdir_sub", mkdir((d + "/sub").c_str(), 0777));
  std::string subdef = get_xattr(d + "/sub", "system.posix_acl_default", &e);
  c.eq("sub_inherits_default", find_user_perm(subdef, kUser), 7);
  e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    int w = open((d + "/f").c_str(), O_WRONLY);
    if (w >= 0) close(w);
    return static_cast<long>(w);
  });
  c.eq_str("named_user_writes", errno_name(e), "0");
  return c.done();
}

// Without a default ACL the guest's umask applies (the daemon gets it from
// the request: FUSE_DONT_MASK is on with ACLs).
CONF_CASE(acl, umask_without_default_acl) {
  Checker c;
  umask(027);
  int fd = open((dir + "/f").c_str(), O_CREAT | O_WRONLY, 0666);
  c.ok("create", fd);
  if (fd >= 0) close(fd);
  c.ok("mkdir", mkdir((dir + "/d").c_str(), 0777));
  struct stat st;
  c.ok("stat_f", stat((dir + "/f").c_str(), &st));
  c.eq_oct("file_mode", st.st_mode & 07777, 0640);
  c.ok("stat_d", stat((dir + "/d").c_str(), &st));
  c.eq_oct("dir_mode", st.st_mode & 07777, 0750);
  return c.done();
}

// Setting an access ACL as an owner outside the file's group drops S_ISGID
// (FUSE_SETXATTR_ACL_KILL_SGID through the FUSE client).
CONF_CASE(acl, sgid_killed_by_acl) {
  Checker c;
  chmod(dir.c_str(), 0777);
  std::string f = dir + "/f";
  write_file(f, "x", 0644);
  c.ok("chown", chown(f.c_str(), kUser, 3000));
  c.ok("chmod", chmod(f.c_str(), 02770));
  std::string acl = encode_acl({{kUserObj, 7, kUndefined},
                                {kUserTag, 5, kOther},
                                {kGroupObj, 7, kUndefined},
                                {kMask, 7, kUndefined},
                                {kOtherTag, 0, kUndefined}});
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    return setxattr(f.c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0);
  });
  c.eq_str("set_acl_as_owner", errno_name(e), "0");
  struct stat st;
  c.ok("stat", stat(f.c_str(), &st));
  c.eq_oct("sgid_cleared", st.st_mode & 07777, 0770);
  // Root (CAP_FSETID) keeps it.
  c.ok("chmod_again", chmod(f.c_str(), 02770));
  c.ok("set_acl_as_root",
       setxattr(f.c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0));
  c.ok("stat2", stat(f.c_str(), &st));
  c.eq_oct("sgid_kept_for_root", st.st_mode & 07777, 02770);
  return c.done();
}

CONF_CASE(acl, set_acl_not_owner) {
  Checker c;
  std::string f = dir + "/f";
  write_file(f, "x", 0666);
  chmod(f.c_str(), 0666);
  std::string acl = encode_acl(
      {{kUserObj, 6, kUndefined}, {kGroupObj, 6, kUndefined}, {kOtherTag, 6, kUndefined}});
  int e = errno_as_user(kUser, kUserGid, kGroups, [&] {
    return setxattr(f.c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0);
  });
  c.eq_str("set_acl_foreign", errno_name(e), "EPERM");
  // A valid header followed by a partial entry.
  std::string bad = encode_acl({}) + "abc";
  c.err("set_malformed_acl",
        setxattr(f.c_str(), "system.posix_acl_access", bad.data(), bad.size(), 0), EINVAL);
  return c.done();
}

}  // namespace vfsd::conformance
