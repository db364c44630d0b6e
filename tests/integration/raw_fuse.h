// The hostile-guest harness of the passthrough integration tests: raw FUSE
// requests, built byte by byte as a guest kernel (or a guest that is not a
// kernel) would put them on the wire, handed to a real fuse::Server over a
// real PassthroughFs; and a snapshot of a host directory that tells whether
// anything in it was read, written, created or removed.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "util/unique_fd.h"

namespace vfsd::test {

/// One PassthroughFs behind one fuse::Server, after INIT.
class RawFuse {
 public:
  explicit RawFuse(passthrough::PassthroughConfig config) {
    auto created = passthrough::PassthroughFs::create(std::move(config));
    if (!created) {
      ADD_FAILURE() << "PassthroughFs::create: " << errno_name(created.error().value);
      return;
    }
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    Reply init = send(init_request(2));
    EXPECT_TRUE(init.ok()) << "INIT: " << init.error();
  }
  ~RawFuse() {
    server_.reset();
    fs_.reset();
  }
  bool ready() const { return server_ != nullptr; }
  passthrough::PassthroughFs& fs() { return *fs_; }
  uint64_t agreed() const { return server_->agreed_flags(); }

  Reply send(const Bytes& request, size_t reply_size = 64 * 1024) {
    Bytes req = request, out(reply_size);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }
  /// A request from guest user `uid` (gid the same).
  RequestBuilder req(uint32_t opcode, uint64_t node, uint32_t uid = 0) {
    return std::move(RequestBuilder(opcode, node, unique_ += 2).creds(uid, uid));
  }

  // `name` may hold any bytes (a NUL inside included); one NUL is added.
  Reply lookup(uint64_t parent, const std::string& name) {
    return send(req(FUSE_LOOKUP, parent).add_name(name).finish());
  }
  /// The node id of a lookup that must succeed (0 if it failed).
  uint64_t node(uint64_t parent, const std::string& name) {
    Reply r = lookup(parent, name);
    EXPECT_TRUE(r.ok()) << "LOOKUP " << name << ": " << r.error();
    return r.ok() ? r.as<fuse_entry_out>().nodeid : 0;
  }
  Reply getattr(uint64_t node) {
    fuse_getattr_in in{};
    return send(req(FUSE_GETATTR, node).add(in).finish());
  }
  Reply open(uint64_t node, uint32_t flags, uint32_t uid = 0) {
    fuse_open_in in{};
    in.flags = flags;
    return send(req(FUSE_OPEN, node, uid).add(in).finish());
  }
  Reply opendir(uint64_t node) {
    fuse_open_in in{};
    in.flags = O_RDONLY | O_DIRECTORY;
    return send(req(FUSE_OPENDIR, node).add(in).finish());
  }
  Reply release(uint64_t node, uint64_t fh, bool dir = false) {
    fuse_release_in in{};
    in.fh = fh;
    return send(req(dir ? FUSE_RELEASEDIR : FUSE_RELEASE, node).add(in).finish());
  }
  Reply create(uint64_t parent, const std::string& name, uint32_t flags, mode_t mode = 0644) {
    fuse_create_in in{};
    in.flags = flags | O_CREAT;
    in.mode = S_IFREG | mode;
    return send(req(FUSE_CREATE, parent).add(in).add_name(name).finish());
  }
  Reply mkdir(uint64_t parent, const std::string& name, mode_t mode = 0755) {
    fuse_mkdir_in in{};
    in.mode = mode;
    return send(req(FUSE_MKDIR, parent).add(in).add_name(name).finish());
  }
  Reply mknod(uint64_t parent, const std::string& name, mode_t mode, dev_t rdev = 0) {
    fuse_mknod_in in{};
    in.mode = mode;
    in.rdev = static_cast<uint32_t>(rdev);
    return send(req(FUSE_MKNOD, parent).add(in).add_name(name).finish());
  }
  Reply symlink(uint64_t parent, const std::string& name, const std::string& target) {
    return send(req(FUSE_SYMLINK, parent).add_name(name).add_name(target).finish());
  }
  Reply link(uint64_t node, uint64_t new_parent, const std::string& name) {
    fuse_link_in in{};
    in.oldnodeid = node;
    return send(req(FUSE_LINK, new_parent).add(in).add_name(name).finish());
  }
  Reply unlink(uint64_t parent, const std::string& name) {
    return send(req(FUSE_UNLINK, parent).add_name(name).finish());
  }
  Reply rmdir(uint64_t parent, const std::string& name) {
    return send(req(FUSE_RMDIR, parent).add_name(name).finish());
  }
  Reply rename(uint64_t parent, const std::string& from, uint64_t new_parent,
               const std::string& to) {
    fuse_rename_in in{};
    in.newdir = new_parent;
    return send(req(FUSE_RENAME, parent).add(in).add_name(from).add_name(to).finish());
  }
  Reply readlink(uint64_t node) { return send(req(FUSE_READLINK, node).finish()); }
  Reply setattr(uint64_t node, const fuse_setattr_in& in, uint32_t uid = 0) {
    return send(req(FUSE_SETATTR, node, uid).add(in).finish());
  }
  Reply truncate(uint64_t node, uint64_t size, std::optional<uint64_t> fh = std::nullopt) {
    fuse_setattr_in in{};
    in.valid = FATTR_SIZE | (fh ? FATTR_FH : 0);
    in.size = size;
    in.fh = fh.value_or(0);
    return setattr(node, in);
  }
  Reply chown(uint64_t node, uint32_t uid, uint32_t gid) {
    fuse_setattr_in in{};
    in.valid = FATTR_UID | FATTR_GID;
    in.uid = uid;
    in.gid = gid;
    return setattr(node, in);
  }
  Reply write(uint64_t node, uint64_t fh, const std::string& data, uint64_t offset = 0) {
    fuse_write_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = static_cast<uint32_t>(data.size());
    return send(req(FUSE_WRITE, node).add(in).add_bytes(data.data(), data.size()).finish());
  }
  Reply read(uint64_t node, uint64_t fh, uint32_t size, uint64_t offset = 0) {
    fuse_read_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = size;
    return send(req(FUSE_READ, node).add(in).finish());
  }
  Reply readdirplus(uint64_t node, uint64_t fh, uint64_t offset = 0) {
    fuse_read_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = 32 * 1024;
    return send(req(FUSE_READDIRPLUS, node).add(in).finish());
  }
  Reply setxattr(uint64_t node, const std::string& name, const std::string& value) {
    fuse_setxattr_in in{};
    in.size = static_cast<uint32_t>(value.size());
    const size_t in_size =
        (agreed() & FUSE_SETXATTR_EXT) ? sizeof(in) : FUSE_COMPAT_SETXATTR_IN_SIZE;
    return send(req(FUSE_SETXATTR, node)
                    .add_bytes(&in, in_size)
                    .add_name(name)
                    .add_bytes(value.data(), value.size())
                    .finish());
  }
  Reply getxattr(uint64_t node, const std::string& name, uint32_t size = 4096) {
    fuse_getxattr_in in{};
    in.size = size;
    return send(req(FUSE_GETXATTR, node).add(in).add_name(name).finish());
  }
  Reply listxattr(uint64_t node, uint32_t size = 4096) {
    fuse_getxattr_in in{};
    in.size = size;
    return send(req(FUSE_LISTXATTR, node).add(in).finish());
  }
  Reply removexattr(uint64_t node, const std::string& name) {
    return send(req(FUSE_REMOVEXATTR, node).add_name(name).finish());
  }
  Reply syncfs(uint64_t node) {
    fuse_syncfs_in in{};
    return send(req(FUSE_SYNCFS, node).add(in).finish());
  }
  Reply statfs(uint64_t node) { return send(req(FUSE_STATFS, node).finish()); }
  /// FORGET and BATCH_FORGET get no reply (bytes 0).
  Reply forget(uint64_t node, uint64_t count) {
    fuse_forget_in in{};
    in.nlookup = count;
    return send(req(FUSE_FORGET, node).add(in).finish());
  }
  Reply batch_forget(const std::vector<std::pair<uint64_t, uint64_t>>& items) {
    fuse_batch_forget_in in{};
    in.count = static_cast<uint32_t>(items.size());
    RequestBuilder b = req(FUSE_BATCH_FORGET, 0);
    b.add(in);
    for (const auto& [node, count] : items) {
      fuse_forget_one one{};
      one.nodeid = node;
      one.nlookup = count;
      b.add(one);
    }
    return send(b.finish());
  }

 private:
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 10;
};

/// What the host shows of every entry under a directory, read without
/// touching access times (O_NOATIME: the snapshot itself reads nothing in the
/// eyes of the next one). Two equal snapshots: nothing under it was read
/// (access times, when the filesystem keeps them: see atime_detects_reads),
/// written, created, removed, renamed, chmod'ed, chown'ed or relabelled.
struct HostEntry {
  struct stat st {};
  std::string contents;  // files: the bytes; symlinks: the target
  std::string xattrs;    // "name=value;" in the host's order

  bool operator==(const HostEntry& o) const {
    auto same = [](const timespec& a, const timespec& b) {
      return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
    };
    // A symlink's access time moves when anyone reads it (the snapshot
    // included); what the daemon can do with one is READLINK, which reads
    // only the link. Files and directories are compared with it.
    const bool atime = !S_ISLNK(st.st_mode);
    return st.st_ino == o.st.st_ino && st.st_mode == o.st.st_mode && st.st_nlink == o.st.st_nlink &&
           st.st_uid == o.st.st_uid && st.st_gid == o.st.st_gid && st.st_size == o.st.st_size &&
           (!atime || same(st.st_atim, o.st.st_atim)) && same(st.st_mtim, o.st.st_mtim) &&
           same(st.st_ctim, o.st.st_ctim) && contents == o.contents && xattrs == o.xattrs;
  }
};

inline std::ostream& operator<<(std::ostream& out, const HostEntry& e) {
  return out << "{ino " << e.st.st_ino << " mode " << std::oct << e.st.st_mode << std::dec
             << " nlink " << e.st.st_nlink << " owner " << e.st.st_uid << ":" << e.st.st_gid
             << " size " << e.st.st_size << " atime " << e.st.st_atim.tv_sec << "."
             << e.st.st_atim.tv_nsec << " mtime " << e.st.st_mtim.tv_sec << "."
             << e.st.st_mtim.tv_nsec << " ctime " << e.st.st_ctim.tv_sec << "."
             << e.st.st_ctim.tv_nsec << " '" << e.contents << "' xattrs '" << e.xattrs << "'}";
}

using HostSnapshot = std::map<std::string, HostEntry>;

namespace detail {
inline void snapshot_into(const std::string& path, const std::string& rel, HostSnapshot& out) {
  HostEntry e;
  if (::lstat(path.c_str(), &e.st) != 0) return;
  char names[4096];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t pos = 0; n > 0 && pos < n;
       pos += static_cast<ssize_t>(std::strlen(names + pos)) + 1) {
    char value[512];
    ssize_t v = ::lgetxattr(path.c_str(), names + pos, value, sizeof value);
    e.xattrs += std::string(names + pos) + "=" + std::string(value, v > 0 ? size_t(v) : 0) + ";";
  }
  if (S_ISLNK(e.st.st_mode)) {
    char target[4096];
    ssize_t len = ::readlink(path.c_str(), target, sizeof target);
    if (len > 0) e.contents.assign(target, static_cast<size_t>(len));
  } else if (S_ISREG(e.st.st_mode)) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC));
    char buf[4096];
    ssize_t got;
    while (fd && (got = ::read(fd.get(), buf, sizeof buf)) > 0) {
      e.contents.append(buf, static_cast<size_t>(got));
    }
  } else if (S_ISDIR(e.st.st_mode)) {
    int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOATIME | O_CLOEXEC);
    DIR* dir = dfd >= 0 ? ::fdopendir(dfd) : nullptr;
    std::vector<std::string> children;
    while (dir != nullptr) {
      dirent* d = ::readdir(dir);
      if (d == nullptr) break;
      std::string name = d->d_name;
      if (name != "." && name != "..") children.push_back(name);
    }
    if (dir != nullptr) ::closedir(dir);
    for (const auto& child : children) snapshot_into(path + "/" + child, rel + "/" + child, out);
  }
  out[rel.empty() ? "." : rel] = std::move(e);
}
}  // namespace detail

inline HostSnapshot host_snapshot(const std::string& dir) {
  HostSnapshot out;
  detail::snapshot_into(dir, "", out);
  return out;
}

/// Sets every access time under `dir` (the directory itself included) a day
/// before the modification time, so that under relatime any read or listing
/// moves it: a changed atime then shows a read.
inline void age_access_times(const std::string& dir) {
  for (const auto& [rel, e] : host_snapshot(dir)) {
    const std::string path = rel == "." ? dir : dir + rel;
    timespec times[2] = {{e.st.st_mtim.tv_sec - 86400 * 2, 0}, {0, UTIME_OMIT}};
    ::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
  }
}

/// Whether reading a file in `dir` moves its access time (it does unless the
/// host mounted the filesystem noatime): a host property, probed on a file of
/// our own, never on the daemon's answer.
inline bool atime_detects_reads(const std::string& dir) {
  const std::string probe = dir + "/.atime-probe";
  {
    UniqueFd fd(::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd || ::write(fd.get(), "x", 1) != 1) return false;
  }
  struct stat before {};
  ::lstat(probe.c_str(), &before);
  timespec times[2] = {{before.st_mtim.tv_sec - 86400 * 2, 0}, {0, UTIME_OMIT}};
  ::utimensat(AT_FDCWD, probe.c_str(), times, 0);
  ::lstat(probe.c_str(), &before);
  {
    UniqueFd fd(::open(probe.c_str(), O_RDONLY | O_CLOEXEC));
    char c;
    if (!fd || ::read(fd.get(), &c, 1) != 1) return false;
  }
  struct stat after {};
  ::lstat(probe.c_str(), &after);
  ::unlink(probe.c_str());
  return after.st_atim.tv_sec != before.st_atim.tv_sec;
}

/// Fails the test, naming each entry that differs, when the snapshots differ.
inline void expect_same_host(const HostSnapshot& before, const HostSnapshot& after,
                             const std::string& what) {
  for (const auto& [rel, e] : before) {
    auto it = after.find(rel);
    if (it == after.end()) {
      ADD_FAILURE() << what << ": " << rel << " is gone";
    } else if (!(it->second == e)) {
      ADD_FAILURE() << what << ": " << rel << " changed: " << e << " -> " << it->second;
    }
  }
  for (const auto& [rel, e] : after) {
    if (!before.count(rel)) ADD_FAILURE() << what << ": " << rel << " appeared: " << e;
  }
}

}  // namespace vfsd::test
