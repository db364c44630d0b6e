// --readonly against a hostile guest, through the real stack: raw FUSE bytes
// into fuse::Server, ReadOnlyFs over a real PassthroughFs on a host folder.
// Every open-flag combination a guest can put on the wire is tried with
// OPEN, CREATE (existing and new name), OPENDIR and TMPFILE; every handle
// that comes back is then used for everything that could modify (WRITE,
// FALLOCATE, truncating SETATTR, COPY_FILE_RANGE, the setter ioctls, locks).
// After each step the host side is checked: the file's bytes, size, mode,
// owner, times and xattrs, the folder's entries, and that no fd this process
// holds on the share is writable (lock-owner descriptions included).
//
// The same flag matrix also runs against the bare PassthroughFs in
// read-only mode, without the decorator: the guard at the depth where fds
// are made holds on its own.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "passthrough/read_only_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

// The kernel's generic __O_TMPFILE bit (glibc's O_TMPFILE adds O_DIRECTORY).
constexpr uint32_t kTmpfileBit = 020000000;
// Bits no open flag uses on x86_64: a guest may still set them.
constexpr uint32_t kUnknownBits = 0x40000000u | 0x80000000u;

// What the host shows of one file; equal before and after means untouched.
struct FileState {
  std::string bytes;
  struct stat st {};
  std::string xattrs;  // names and values, in the host's order
  unsigned long attr_flags = 0;

  bool operator==(const FileState& o) const {
    return bytes == o.bytes && st.st_size == o.st.st_size && st.st_mode == o.st.st_mode &&
           st.st_uid == o.st.st_uid && st.st_gid == o.st.st_gid && st.st_nlink == o.st.st_nlink &&
           st.st_mtim.tv_sec == o.st.st_mtim.tv_sec && st.st_mtim.tv_nsec == o.st.st_mtim.tv_nsec &&
           st.st_ctim.tv_sec == o.st.st_ctim.tv_sec && st.st_ctim.tv_nsec == o.st.st_ctim.tv_nsec &&
           st.st_atim.tv_sec == o.st.st_atim.tv_sec && st.st_atim.tv_nsec == o.st.st_atim.tv_nsec &&
           xattrs == o.xattrs && attr_flags == o.attr_flags;
  }
};

std::ostream& operator<<(std::ostream& out, const FileState& s) {
  return out << "{size " << s.st.st_size << " mode " << std::oct << s.st.st_mode << std::dec
             << " owner " << s.st.st_uid << ":" << s.st.st_gid << " mtime " << s.st.st_mtim.tv_sec
             << "." << s.st.st_mtim.tv_nsec << " ctime " << s.st.st_ctim.tv_sec << "."
             << s.st.st_ctim.tv_nsec << " flags " << std::hex << s.attr_flags << std::dec
             << " xattrs '" << s.xattrs << "' " << s.bytes.size() << " bytes}";
}

FileState file_state(const std::string& path) {
  FileState s;
  s.bytes = test::read_host(path);
  EXPECT_EQ(::lstat(path.c_str(), &s.st), 0) << path;
  char names[1024];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t pos = 0; n > 0 && pos < n;
       pos += static_cast<ssize_t>(std::strlen(names + pos)) + 1) {
    char value[256];
    ssize_t v = ::lgetxattr(path.c_str(), names + pos, value, sizeof value);
    s.xattrs += std::string(names + pos) + "=" + std::string(value, v > 0 ? size_t(v) : 0) + ";";
  }
  if (S_ISREG(s.st.st_mode)) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC);
    if (fd >= 0) {
      int flags = 0;
      if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) s.attr_flags = static_cast<unsigned>(flags);
      ::close(fd);
    }
  }
  return s;
}

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(dir)) names.insert(e.path().string());
  return names;
}

// The fds of this process that are open on something under `root` with a
// write access mode. O_PATH fds (access mode 0) cannot write.
std::vector<std::string> writable_fds_under(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    std::string target = fs::read_symlink(e.path(), ec).string();
    if (ec || target.rfind(root, 0) != 0) continue;
    std::string info = test::read_host("/proc/self/fdinfo/" + e.path().filename().string());
    auto pos = info.find("flags:");
    if (pos == std::string::npos) continue;
    const unsigned long flags = std::stoul(info.substr(pos + 6), nullptr, 8);
    if ((flags & O_ACCMODE) != O_RDONLY)
      out.push_back(e.path().filename().string() + " -> " + target);
  }
  return out;
}

std::string flag_text(uint32_t flags) {
  std::string s;
  static const std::pair<uint32_t, const char*> kNames[] = {
      {O_PATH, "O_PATH"},     {O_TRUNC, "O_TRUNC"},       {O_CREAT, "O_CREAT"},
      {O_EXCL, "O_EXCL"},     {kTmpfileBit, "O_TMPFILE"}, {O_APPEND, "O_APPEND"},
      {O_DIRECT, "O_DIRECT"}, {kUnknownBits, "unknown"}};
  static const char* kModes[] = {"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"};
  s = kModes[flags & O_ACCMODE];
  for (const auto& [bit, name] : kNames) {
    if ((flags & bit) == bit) s += std::string("|") + name;
  }
  return s;
}

// Every combination of an access mode (the invalid 3 included) with any
// subset of the extra flags.
std::vector<uint32_t> hostile_flag_matrix() {
  const uint32_t extras[] = {O_PATH,      O_TRUNC,  O_CREAT,  O_EXCL,
                             kTmpfileBit, O_APPEND, O_DIRECT, kUnknownBits};
  std::vector<uint32_t> out;
  for (uint32_t mode = 0; mode < 4; ++mode) {
    for (uint32_t subset = 0; subset < (1u << std::size(extras)); ++subset) {
      uint32_t flags = mode;
      for (size_t i = 0; i < std::size(extras); ++i) {
        if (subset & (1u << i)) flags |= extras[i];
      }
      out.push_back(flags);
    }
  }
  return out;
}

class ReadOnlyShareTest : public ::testing::Test {
 protected:
  // true = ReadOnlyFs over PassthroughFs (what --readonly runs), false = the
  // bare PassthroughFs in read-only mode (the depth guard alone).
  bool decorated() const { return decorated_; }
  bool decorated_ = true;

  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-ro-hostile-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    victim_ = root_ + "/victim";
    test::write_host(victim_, std::string(8192, 'v') + "end of the victim");
    ASSERT_EQ(::chmod(victim_.c_str(), 04755), 0);
    ASSERT_EQ(::chown(victim_.c_str(), 1234, 2345), 0);
    // chown cleared the setuid bit; set it again, it must survive too.
    ASSERT_EQ(::chmod(victim_.c_str(), 04755), 0);
    ASSERT_EQ(::setxattr(victim_.c_str(), "user.keep", "kept", 4, 0), 0);
    ASSERT_EQ(::mkdir((root_ + "/dir").c_str(), 0755), 0);
    test::write_host(root_ + "/dir/inner", "inner");
    // mtime in the past, atime now: relatime then leaves atime alone for a
    // day, so only an access through the daemon (one without O_NOATIME)
    // could move it.
    const timespec times[2] = {{0, UTIME_NOW}, {1400000000, 7}};
    ASSERT_EQ(::utimensat(AT_FDCWD, victim_.c_str(), times, 0), 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, (root_ + "/dir").c_str(), times, 0), 0);

    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.readonly = true;
    config.xattr = true;
    config.posix_lock = true;
    config.flock = true;
    auto created = passthrough::PassthroughFs::create(config);
    ASSERT_TRUE(created.has_value()) << errno_name(created.error().value);
    passthrough_ = std::move(*created);
    fuse::FileSystem* fs = passthrough_.get();
    if (decorated()) {
      read_only_ = std::make_unique<passthrough::ReadOnlyFs>(*passthrough_);
      fs = read_only_.get();
    }
    server_ = std::make_unique<fuse::Server>(*fs, fuse::ServerOptions{});
    ASSERT_TRUE(send(init_request(next_unique())).ok());

    victim_node_ = lookup_ok("victim");
    dir_node_ = lookup_ok("dir");
    // relatime moves an atime that is not newer than the ctime on the first
    // read: let the test's own first reads happen before the snapshot.
    (void)file_state(victim_);
    (void)listing(root_);
    victim_before_ = file_state(victim_);
    dir_before_ = file_state(root_ + "/dir");
    listing_before_ = listing(root_);
  }

  void TearDown() override {
    server_.reset();
    read_only_.reset();
    passthrough_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  uint64_t next_unique() { return unique_ += 2; }

  Reply send(const Bytes& request) {
    Bytes req = request;
    Bytes out(64 * 1024, 0);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }

  RequestBuilder req(uint32_t opcode, uint64_t nodeid) {
    return RequestBuilder(opcode, nodeid, next_unique()).creds(0, 0);
  }

  uint64_t lookup_ok(const std::string& name) {
    Reply r = send(req(FUSE_LOOKUP, kRootInode.value()).add_name(name).finish());
    EXPECT_TRUE(r.ok()) << name << ": " << r.error();
    return r.as<fuse_entry_out>().nodeid;
  }

  // Fails the test (naming `what`) if anything on the host changed or a
  // writable fd on the share exists.
  void expect_untouched(const std::string& what) {
    ASSERT_EQ(file_state(victim_), victim_before_) << what;
    ASSERT_EQ(file_state(root_ + "/dir"), dir_before_) << what;
    ASSERT_EQ(listing(root_), listing_before_) << what;
    ASSERT_EQ(writable_fds_under(root_), std::vector<std::string>{}) << what;
  }

  // Uses a handle the share gave out for everything that could modify the
  // file, checking the host after each.
  void try_to_modify_through(uint64_t node, uint64_t fh, const std::string& what) {
    const std::string data = "EVIL";
    fuse_write_in w{};
    w.fh = fh;
    w.size = static_cast<uint32_t>(data.size());
    Reply r = send(req(FUSE_WRITE, node).add(w).add_bytes(data.data(), data.size()).finish());
    EXPECT_FALSE(r.ok()) << what << ": WRITE succeeded";
    expect_untouched(what + " then WRITE");

    fuse_fallocate_in fa{};
    fa.fh = fh;
    fa.length = 1 << 20;
    EXPECT_FALSE(send(req(FUSE_FALLOCATE, node).add(fa).finish()).ok()) << what;
    fa.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    EXPECT_FALSE(send(req(FUSE_FALLOCATE, node).add(fa).finish()).ok()) << what;
    expect_untouched(what + " then FALLOCATE");

    fuse_setattr_in sa{};
    sa.valid = FATTR_FH | FATTR_SIZE;
    sa.fh = fh;
    EXPECT_FALSE(send(req(FUSE_SETATTR, node).add(sa).finish()).ok()) << what;
    if (decorated()) {
      // fchmod needs no writable fd: the bare filesystem's guard is about
      // fds, ReadOnlyFs refuses SETATTR as a whole.
      sa.valid = FATTR_FH | FATTR_MODE;
      sa.mode = 0777;
      EXPECT_FALSE(send(req(FUSE_SETATTR, node).add(sa).finish()).ok()) << what;
    }
    expect_untouched(what + " then SETATTR");

    fuse_copy_file_range_in cr{};
    cr.fh_in = fh;
    cr.nodeid_out = node;
    cr.fh_out = fh;
    cr.off_out = 100;
    cr.len = 100;
    EXPECT_FALSE(send(req(FUSE_COPY_FILE_RANGE, node).add(cr).finish()).ok()) << what;
    expect_untouched(what + " then COPY_FILE_RANGE");

    for (uint32_t cmd :
         {static_cast<uint32_t>(FS_IOC_SETFLAGS), static_cast<uint32_t>(FS_IOC32_SETFLAGS)}) {
      int flags = FS_APPEND_FL | FS_IMMUTABLE_FL | FS_NOATIME_FL;
      fuse_ioctl_in io{};
      io.fh = fh;
      io.cmd = cmd;
      io.in_size = sizeof flags;
      Reply ir = send(req(FUSE_IOCTL, node).add(io).add(flags).finish());
      EXPECT_FALSE(ir.ok() && ir.as<fuse_ioctl_out>().result == 0) << what << ": SETFLAGS";
    }
    struct fsxattr fx {};
    fx.fsx_projid = 77;
    fuse_ioctl_in io{};
    io.fh = fh;
    io.cmd = FS_IOC_FSSETXATTR;
    io.in_size = sizeof fx;
    Reply xr = send(req(FUSE_IOCTL, node).add(io).add(fx).finish());
    EXPECT_FALSE(xr.ok() && xr.as<fuse_ioctl_out>().result == 0) << what << ": FSSETXATTR";
    expect_untouched(what + " then ioctls");

    // Locks change nothing in the file, but a write lock needs an fd that
    // could write: none may exist, not even as a lock owner's description.
    for (uint32_t type : {uint32_t{F_WRLCK}, uint32_t{F_RDLCK}, uint32_t{F_UNLCK}}) {
      for (uint32_t lk_flags : {0u, uint32_t{FUSE_LK_FLOCK}}) {
        fuse_lk_in lk{};
        lk.fh = fh;
        lk.owner = 0x1234;
        lk.lk.type = type;
        lk.lk.end = INT64_MAX;
        lk.lk_flags = lk_flags;
        send(req(FUSE_SETLK, node).add(lk).finish());
        expect_untouched(what + " then SETLK");
      }
    }
  }

  void release(uint64_t node, uint64_t fh, bool dir) {
    fuse_release_in rel{};
    rel.fh = fh;
    send(req(dir ? FUSE_RELEASEDIR : FUSE_RELEASE, node).add(rel).finish());
  }

  // Every open-like request with `flags`, then everything through each
  // handle it yields.
  void try_flags(uint32_t flags) {
    const std::string text = flag_text(flags);
    fuse_open_in open{};
    open.flags = flags;
    Reply r = send(req(FUSE_OPEN, victim_node_).add(open).finish());
    expect_untouched("OPEN " + text);
    if (r.ok()) {
      // Only a plain read-only open may succeed.
      EXPECT_EQ(flags & (O_ACCMODE | O_PATH | O_TRUNC | kTmpfileBit), 0u) << "OPEN " << text;
      const uint64_t fh = r.as<fuse_open_out>().fh;
      try_to_modify_through(victim_node_, fh, "OPEN " + text);
      release(victim_node_, fh, false);
    }

    for (const char* name : {"victim", "newname"}) {
      fuse_create_in create{};
      create.flags = flags;
      create.mode = S_IFREG | 07777;
      Reply c = send(req(FUSE_CREATE, kRootInode.value()).add(create).add_name(name).finish());
      expect_untouched(std::string("CREATE ") + name + " " + text);
      if (c.ok()) {
        EXPECT_EQ(std::string(name), "victim") << "CREATE made a file: " << text;
        const auto entry = c.as<fuse_entry_out>();
        const uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
        try_to_modify_through(entry.nodeid, fh, std::string("CREATE ") + name + " " + text);
        release(entry.nodeid, fh, false);
        fuse_forget_in forget{1};
        send(req(FUSE_FORGET, entry.nodeid).add(forget).finish());
      }
    }

    Reply d = send(req(FUSE_OPENDIR, dir_node_).add(open).finish());
    expect_untouched("OPENDIR " + text);
    if (d.ok()) release(dir_node_, d.as<fuse_open_out>().fh, true);

    fuse_create_in tmp{};
    tmp.flags = flags;
    tmp.mode = S_IFREG | 0644;
    Reply t = send(req(FUSE_TMPFILE, kRootInode.value()).add(tmp).add_name("/").finish());
    EXPECT_FALSE(t.ok()) << "TMPFILE " << text;
    expect_untouched("TMPFILE " + text);
  }

  mode_t old_umask_ = 0;
  std::string root_, victim_;
  std::unique_ptr<passthrough::PassthroughFs> passthrough_;
  std::unique_ptr<passthrough::ReadOnlyFs> read_only_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 0;
  uint64_t victim_node_ = 0, dir_node_ = 0;
  FileState victim_before_, dir_before_;
  std::set<std::string> listing_before_;
};

// Both layers: ReadOnlyFs + PassthroughFs, and the bare PassthroughFs.
class ReadOnlyHostileTest : public ReadOnlyShareTest, public ::testing::WithParamInterface<bool> {
 protected:
  ReadOnlyHostileTest() { decorated_ = GetParam(); }
};

TEST_P(ReadOnlyHostileTest, NoOpenFlagCombinationModifiesTheHost) {
  for (uint32_t flags : hostile_flag_matrix()) {
    try_flags(flags);
    if (HasFatalFailure()) return;
  }
  // Nothing the guest was handed is left open either.
  EXPECT_EQ(passthrough_->handle_count(), 0u);
}

TEST_P(ReadOnlyHostileTest, AReadOnlyHandleServesReadsAndNothingElse) {
  fuse_open_in open{};
  open.flags = O_RDONLY;
  Reply r = send(req(FUSE_OPEN, victim_node_).add(open).finish());
  ASSERT_TRUE(r.ok()) << r.error();
  const uint64_t fh = r.as<fuse_open_out>().fh;
  fuse_read_in rd{};
  rd.fh = fh;
  rd.size = 3;
  rd.offset = 8192;
  Reply data = send(req(FUSE_READ, victim_node_).add(rd).finish());
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data.text(), "end");
  try_to_modify_through(victim_node_, fh, "read-only handle");
  release(victim_node_, fh, false);
  expect_untouched("after release");
}

// The path-based operations, with every SETATTR field at once and alone.
// (ReadOnlyFs only: the bare filesystem leaves path operations to it.)
TEST_F(ReadOnlyShareTest, PathOperationsModifyNothing) {
  const uint32_t kFields[] = {FATTR_MODE,  FATTR_UID,         FATTR_GID,       FATTR_SIZE,
                              FATTR_ATIME, FATTR_MTIME,       FATTR_ATIME_NOW, FATTR_MTIME_NOW,
                              FATTR_CTIME, FATTR_KILL_SUIDGID};
  uint32_t all = 0;
  for (uint32_t f : kFields) all |= f;
  std::vector<uint32_t> masks(std::begin(kFields), std::end(kFields));
  masks.push_back(all);
  for (uint32_t valid : masks) {
    fuse_setattr_in sa{};
    sa.valid = valid;
    sa.mode = 0777;
    sa.uid = 0;
    sa.gid = 0;
    sa.atime = sa.mtime = 1;
    EXPECT_FALSE(send(req(FUSE_SETATTR, victim_node_).add(sa).finish()).ok()) << valid;
    expect_untouched("SETATTR valid=" + std::to_string(valid));
  }
  const uint32_t ext = (server_->agreed_flags() & FUSE_SETXATTR_EXT) ? sizeof(fuse_setxattr_in)
                                                                     : FUSE_COMPAT_SETXATTR_IN_SIZE;
  fuse_setxattr_in sx{};
  sx.size = 3;
  Bytes sx_bytes(reinterpret_cast<uint8_t*>(&sx), reinterpret_cast<uint8_t*>(&sx) + ext);
  EXPECT_FALSE(send(req(FUSE_SETXATTR, victim_node_)
                        .add_bytes(sx_bytes.data(), sx_bytes.size())
                        .add_name("user.keep")
                        .add_bytes("bad", 3)
                        .finish())
                   .ok());
  EXPECT_FALSE(send(req(FUSE_REMOVEXATTR, victim_node_).add_name("user.keep").finish()).ok());
  EXPECT_FALSE(send(req(FUSE_UNLINK, kRootInode.value()).add_name("victim").finish()).ok());
  EXPECT_FALSE(send(req(FUSE_RMDIR, kRootInode.value()).add_name("dir").finish()).ok());
  fuse_rename2_in rn{};
  rn.newdir = dir_node_;
  EXPECT_FALSE(send(req(FUSE_RENAME2, kRootInode.value())
                        .add(rn)
                        .add_name("victim")
                        .add_name("moved")
                        .finish())
                   .ok());
  fuse_link_in ln{};
  ln.oldnodeid = victim_node_;
  EXPECT_FALSE(send(req(FUSE_LINK, dir_node_).add(ln).add_name("hard").finish()).ok());
  EXPECT_FALSE(
      send(req(FUSE_SYMLINK, kRootInode.value()).add_name("sym").add_name("/etc/passwd").finish())
          .ok());
  fuse_mkdir_in md{};
  md.mode = 0777;
  EXPECT_FALSE(send(req(FUSE_MKDIR, kRootInode.value()).add(md).add_name("newdir").finish()).ok());
  fuse_mknod_in mn{};
  mn.mode = S_IFIFO | 0666;
  EXPECT_FALSE(send(req(FUSE_MKNOD, kRootInode.value()).add(mn).add_name("fifo").finish()).ok());
  mn.mode = S_IFREG | 0666;
  EXPECT_FALSE(send(req(FUSE_MKNOD, kRootInode.value()).add(mn).add_name("file").finish()).ok());
  expect_untouched("path operations");
}

INSTANTIATE_TEST_SUITE_P(Layers, ReadOnlyHostileTest, ::testing::Bool(), [](const auto& info) {
  return info.param ? "ReadOnlyFs" : "BarePassthrough";
});

}  // namespace
}  // namespace vfsd::test
