// --translate-uid / --translate-gid through the real stack: raw FUSE
// requests into fuse::Server over a real PassthroughFs with the maps in
// place, each effect checked on the host with stat(2) and in the replies.
//
// The maps (as the command line would give them):
//   uid: map:1000:5000:10      guest 1000-1009 <-> host 5000-5009
//        forbid-guest:1500:5   guest 1500-1504 refused (EPERM)
//        squash-host:7000:1099:3  host 7000-7002 seen as guest 1099
//   gid: map:1000:6000:10      guest 1000-1009 <-> host 6000-6009
//        forbid-guest:1500:1
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuse/abi_ext.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

passthrough::IdMap map_of(const std::vector<std::string>& texts) {
  std::vector<passthrough::IdMapRule> rules;
  std::string message;
  for (const auto& t : texts) {
    auto rule = passthrough::parse_id_map_rule(t, message);
    EXPECT_TRUE(rule) << message;
    if (rule) rules.push_back(*rule);
  }
  auto map = passthrough::IdMap::build(rules, message);
  EXPECT_TRUE(map) << message;
  return map.value_or(passthrough::IdMap{});
}

// A FUSE_EXT_GROUPS extension as the kernel builds it.
Bytes groups_ext(const std::vector<uint32_t>& gids) {
  const size_t body = FUSE_REC_ALIGN(sizeof(fuse::abi::SuppGroups) + 4 * gids.size());
  Bytes out(sizeof(fuse_ext_header) + body, 0);
  fuse_ext_header header{static_cast<uint32_t>(out.size()), fuse::abi::kExtGroups};
  std::memcpy(out.data(), &header, sizeof header);
  const uint32_t n = static_cast<uint32_t>(gids.size());
  std::memcpy(out.data() + sizeof header, &n, 4);
  for (size_t i = 0; i < gids.size(); ++i) {
    std::memcpy(out.data() + sizeof header + 4 + 4 * i, &gids[i], 4);
  }
  return out;
}

class IdTranslationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as guest users";
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-xlate-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_EQ(::chmod(root_.c_str(), 0777), 0);
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.uid_map = map_of({"map:1000:5000:10", "forbid-guest:1500:5", "squash-host:7000:1099:3"});
    config.gid_map = map_of({"map:1000:6000:10", "forbid-guest:1500:1"});
    auto created = passthrough::PassthroughFs::create(std::move(config));
    ASSERT_TRUE(created);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
  }
  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    if (!root_.empty()) fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }
  // INIT as Linux 6.1 does, or with FUSE_CREATE_SUPP_GROUP (6.3+).
  void init(bool supp_groups = false) {
    fuse_init_in in{};
    in.major = FUSE_KERNEL_VERSION;
    in.minor = 39;
    in.max_readahead = 128 * 1024;
    uint64_t flags = FUSE_INIT_EXT | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS | FUSE_EXPORT_SUPPORT;
    if (supp_groups) flags |= FUSE_CREATE_SUPP_GROUP;
    in.flags = static_cast<uint32_t>(flags);
    in.flags2 = static_cast<uint32_t>(flags >> 32);
    ASSERT_TRUE(send(RequestBuilder(FUSE_INIT, 0, unique_ += 2).add(in).finish()).ok());
  }
  Reply send(const Bytes& request) {
    Bytes req = request, out(16384);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }
  RequestBuilder as(uint32_t opcode, uint64_t node, uint32_t uid, uint32_t gid) {
    return RequestBuilder(opcode, node, unique_ += 2).creds(uid, gid);
  }
  uint64_t lookup(const std::string& name, fuse_attr* attr = nullptr) {
    Reply r = send(as(FUSE_LOOKUP, kRootInode.value(), 0, 0).add_name(name).finish());
    EXPECT_TRUE(r.ok()) << name << ": " << r.error();
    if (attr != nullptr) *attr = r.as<fuse_entry_out>().attr;
    return r.as<fuse_entry_out>().nodeid;
  }
  std::string path(const std::string& name) const { return root_ + "/" + name; }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t unique_ = 10;
};

TEST_F(IdTranslationTest, CreatingRequestsLandAsTheHostIdsAndAnswerTheGuestView) {
  init();
  fuse_create_in create{};
  create.flags = O_RDWR;
  create.mode = S_IFREG | 0644;
  Reply c =
      send(as(FUSE_CREATE, kRootInode.value(), 1001, 1002).add(create).add_name("file").finish());
  ASSERT_TRUE(c.ok()) << c.error();
  struct stat st = test::host_lstat(path("file"));
  EXPECT_EQ(st.st_uid, 5001u);
  EXPECT_EQ(st.st_gid, 6002u);
  EXPECT_EQ(c.as<fuse_entry_out>().attr.uid, 1001u);
  EXPECT_EQ(c.as<fuse_entry_out>().attr.gid, 1002u);

  fuse_mkdir_in mkdir{};
  mkdir.mode = 0755;
  Reply d =
      send(as(FUSE_MKDIR, kRootInode.value(), 1003, 1004).add(mkdir).add_name("dir").finish());
  ASSERT_TRUE(d.ok()) << d.error();
  st = test::host_lstat(path("dir"));
  EXPECT_EQ(st.st_uid, 5003u);
  EXPECT_EQ(st.st_gid, 6004u);
  EXPECT_EQ(d.as<fuse_entry_out>().attr.uid, 1003u);
  EXPECT_EQ(d.as<fuse_entry_out>().attr.gid, 1004u);

  fuse_mknod_in mknod{};
  mknod.mode = S_IFIFO | 0644;
  Reply n =
      send(as(FUSE_MKNOD, kRootInode.value(), 1005, 1005).add(mknod).add_name("fifo").finish());
  ASSERT_TRUE(n.ok()) << n.error();
  st = test::host_lstat(path("fifo"));
  EXPECT_EQ(st.st_uid, 5005u);
  EXPECT_EQ(st.st_gid, 6005u);
  EXPECT_EQ(n.as<fuse_entry_out>().attr.uid, 1005u);

  Reply s = send(
      as(FUSE_SYMLINK, kRootInode.value(), 1006, 1007).add_name("link").add_name("file").finish());
  ASSERT_TRUE(s.ok()) << s.error();
  st = test::host_lstat(path("link"));
  EXPECT_EQ(st.st_uid, 5006u);
  EXPECT_EQ(st.st_gid, 6007u);
  EXPECT_EQ(s.as<fuse_entry_out>().attr.uid, 1006u);
  EXPECT_EQ(s.as<fuse_entry_out>().attr.gid, 1007u);

  // LINK answers the (unchanged) owner of the file in the guest's view.
  fuse_link_in link{};
  link.oldnodeid = c.as<fuse_entry_out>().nodeid;
  Reply l = send(as(FUSE_LINK, kRootInode.value(), 1001, 1002).add(link).add_name("hard").finish());
  ASSERT_TRUE(l.ok()) << l.error();
  EXPECT_EQ(l.as<fuse_entry_out>().attr.uid, 1001u);
  EXPECT_EQ(l.as<fuse_entry_out>().attr.gid, 1002u);
}

TEST_F(IdTranslationTest, UnmappedGuestIdsPassUnchanged) {
  init();
  fuse_mkdir_in mkdir{};
  mkdir.mode = 0755;
  Reply d =
      send(as(FUSE_MKDIR, kRootInode.value(), 4321, 5432).add(mkdir).add_name("plain").finish());
  ASSERT_TRUE(d.ok()) << d.error();
  struct stat st = test::host_lstat(path("plain"));
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 5432u);
  EXPECT_EQ(d.as<fuse_entry_out>().attr.uid, 4321u);
}

TEST_F(IdTranslationTest, ForbiddenGuestIdsAreEpermAndCreateNothing) {
  init();
  fuse_create_in create{};
  create.flags = O_RDWR;
  create.mode = S_IFREG | 0644;
  EXPECT_EQ(send(as(FUSE_CREATE, kRootInode.value(), 1502, 1000).add(create).add_name("a").finish())
                .error(),
            EPERM);
  EXPECT_EQ(send(as(FUSE_CREATE, kRootInode.value(), 1000, 1500).add(create).add_name("b").finish())
                .error(),
            EPERM);
  fuse_mkdir_in mkdir{};
  mkdir.mode = 0755;
  EXPECT_EQ(send(as(FUSE_MKDIR, kRootInode.value(), 1504, 1000).add(mkdir).add_name("c").finish())
                .error(),
            EPERM);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root_)) ++entries;
  EXPECT_EQ(entries, 0u);
  // One past the range is an ordinary id.
  EXPECT_TRUE(
      send(as(FUSE_MKDIR, kRootInode.value(), 1505, 1501).add(mkdir).add_name("d").finish()).ok());
  EXPECT_EQ(test::host_lstat(path("d")).st_uid, 1505u);
}

TEST_F(IdTranslationTest, SetattrChownStoresTheHostIdsAndAnswersTheGuestOnes) {
  init();
  test::write_host(path("f"), "x");
  ASSERT_EQ(::chown(path("f").c_str(), 5000, 6000), 0);
  const uint64_t node = lookup("f");
  fuse_setattr_in sa{};
  sa.valid = FATTR_UID | FATTR_GID;
  sa.uid = 1008;
  sa.gid = 1009;
  Reply r = send(as(FUSE_SETATTR, node, 0, 0).add(sa).finish());
  ASSERT_TRUE(r.ok()) << r.error();
  struct stat st = test::host_lstat(path("f"));
  EXPECT_EQ(st.st_uid, 5008u);
  EXPECT_EQ(st.st_gid, 6009u);
  EXPECT_EQ(r.as<fuse_attr_out>().attr.uid, 1008u);
  EXPECT_EQ(r.as<fuse_attr_out>().attr.gid, 1009u);
  // The gid alone: the uid stays.
  sa.valid = FATTR_GID;
  sa.gid = 1001;
  ASSERT_TRUE(send(as(FUSE_SETATTR, node, 0, 0).add(sa).finish()).ok());
  st = test::host_lstat(path("f"));
  EXPECT_EQ(st.st_uid, 5008u);
  EXPECT_EQ(st.st_gid, 6001u);
  // To a forbidden id: EPERM, nothing changes.
  sa.valid = FATTR_UID;
  sa.uid = 1500;
  EXPECT_EQ(send(as(FUSE_SETATTR, node, 0, 0).add(sa).finish()).error(), EPERM);
  sa.valid = FATTR_UID | FATTR_GID;
  sa.uid = 1000;
  sa.gid = 1500;
  EXPECT_EQ(send(as(FUSE_SETATTR, node, 0, 0).add(sa).finish()).error(), EPERM);
  st = test::host_lstat(path("f"));
  EXPECT_EQ(st.st_uid, 5008u);
  EXPECT_EQ(st.st_gid, 6001u);
}

TEST_F(IdTranslationTest, GetattrLookupAndReaddirplusReportTheGuestView) {
  init();
  const std::pair<uid_t, gid_t> owners[] = {{5004, 6003}, {7001, 6000}, {42, 43}};
  for (size_t i = 0; i < 3; ++i) {
    const std::string name = "h" + std::to_string(i);
    test::write_host(path(name), "x");
    ASSERT_EQ(::lchown(path(name).c_str(), owners[i].first, owners[i].second), 0);
  }
  // map, squash-host, unmapped.
  const std::pair<uint32_t, uint32_t> guest[] = {{1004, 1003}, {1099, 1000}, {42, 43}};
  for (size_t i = 0; i < 3; ++i) {
    fuse_attr attr{};
    const uint64_t node = lookup("h" + std::to_string(i), &attr);
    EXPECT_EQ(attr.uid, guest[i].first) << i;
    EXPECT_EQ(attr.gid, guest[i].second) << i;
    fuse_getattr_in ga{};
    Reply g = send(as(FUSE_GETATTR, node, 0, 0).add(ga).finish());
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(g.as<fuse_attr_out>().attr.uid, guest[i].first) << i;
    EXPECT_EQ(g.as<fuse_attr_out>().attr.gid, guest[i].second) << i;
  }
  // The root too (LOOKUP of "." is answered from its own stat).
  ASSERT_EQ(::chown(root_.c_str(), 5009, 6009), 0);
  fuse_getattr_in ga{};
  Reply g = send(as(FUSE_GETATTR, kRootInode.value(), 0, 0).add(ga).finish());
  EXPECT_EQ(g.as<fuse_attr_out>().attr.uid, 1009u);

  fuse_open_in open{};
  open.flags = O_RDONLY | O_DIRECTORY;
  Reply o = send(as(FUSE_OPENDIR, kRootInode.value(), 0, 0).add(open).finish());
  ASSERT_TRUE(o.ok());
  fuse_read_in read{};
  read.fh = o.as<fuse_open_out>().fh;
  read.size = 8192;
  Reply r = send(as(FUSE_READDIRPLUS, kRootInode.value(), 0, 0).add(read).finish());
  ASSERT_TRUE(r.ok()) << r.error();
  size_t seen = 0;
  for (const auto& e : decode_dirents(r.payload, /*plus=*/true)) {
    if (e.name.size() != 2 || e.name[0] != 'h') continue;
    const size_t i = static_cast<size_t>(e.name[1] - '0');
    ASSERT_LT(i, 3u);
    EXPECT_EQ(e.entry.attr.uid, guest[i].first) << e.name;
    EXPECT_EQ(e.entry.attr.gid, guest[i].second) << e.name;
    ++seen;
  }
  EXPECT_EQ(seen, 3u);
}

TEST_F(IdTranslationTest, AccessComparesGuestIdsWithTheOwnerAsTheGuestSeesIt) {
  init();
  test::write_host(path("mine"), "x");
  ASSERT_EQ(::chown(path("mine").c_str(), 5000, 6000), 0);
  ASSERT_EQ(::chmod(path("mine").c_str(), 0600), 0);
  test::write_host(path("ours"), "x");
  ASSERT_EQ(::chown(path("ours").c_str(), 0, 6002), 0);
  ASSERT_EQ(::chmod(path("ours").c_str(), 0060), 0);
  const uint64_t mine = lookup("mine"), ours = lookup("ours");
  fuse_access_in rw{};
  rw.mask = R_OK | W_OK;
  // The guest owner is 1000 (host 5000).
  EXPECT_EQ(send(as(FUSE_ACCESS, mine, 1000, 1000).add(rw).finish()).error(), 0);
  // Guest uid 5000 is not the owner the guest sees, although the host's
  // number is the same.
  EXPECT_EQ(send(as(FUSE_ACCESS, mine, 5000, 5000).add(rw).finish()).error(), EACCES);
  EXPECT_EQ(send(as(FUSE_ACCESS, mine, 1001, 1000).add(rw).finish()).error(), EACCES);
  // The group class: guest gid 1002 is host 6002.
  EXPECT_EQ(send(as(FUSE_ACCESS, ours, 1003, 1002).add(rw).finish()).error(), 0);
  EXPECT_EQ(send(as(FUSE_ACCESS, ours, 1003, 6002).add(rw).finish()).error(), EACCES);
}

TEST_F(IdTranslationTest, SupplementaryGroupsAreTranslatedToo) {
  init(/*supp_groups=*/true);
  // Only members of host group 6007 (guest 1007) may create in here.
  ASSERT_EQ(::mkdir(path("team").c_str(), 0770), 0);
  ASSERT_EQ(::chown(path("team").c_str(), 0, 6007), 0);
  const uint64_t team = lookup("team");
  auto mkdir_with_groups = [&](const std::string& name, const std::vector<uint32_t>& groups) {
    Bytes ext = groups_ext(groups);
    fuse_mkdir_in in{};
    in.mode = 0755;
    Bytes req = as(FUSE_MKDIR, team, 1000, 1000)
                    .add(in)
                    .add_name(name)
                    .add_bytes(ext.data(), ext.size())
                    .finish();
    reinterpret_cast<fuse_in_header*>(req.data())->total_extlen =
        static_cast<uint16_t>(ext.size() / 8);
    return send(req);
  };
  Reply ok = mkdir_with_groups("member", {1007});
  ASSERT_TRUE(ok.ok()) << ok.error();
  struct stat st = test::host_lstat(path("team/member"));
  EXPECT_EQ(st.st_uid, 5000u);
  EXPECT_EQ(st.st_gid, 6000u);
  // The control: a group that is not the directory's is refused (so the
  // success above is the translated 1007's doing).
  EXPECT_EQ(mkdir_with_groups("outsider", {1008}).error(), EACCES);
  EXPECT_FALSE(fs::exists(path("team/outsider")));
  // A forbidden supplementary group fails the request.
  EXPECT_EQ(mkdir_with_groups("forbidden", {1500}).error(), EPERM);
  EXPECT_FALSE(fs::exists(path("team/forbidden")));
}

}  // namespace
}  // namespace vfsd::test
