// Bounded resources: a guest cannot make the daemon hold more host fds than
// its budget (PassthroughConfig::guest_fd_limit), nor more inodes kept as
// file handles than their cap; past either it gets ENFILE (ENOLCK for a lock)
// and everything that needs nothing new keeps working: GETATTR of known
// inodes, lookups of known names, READ and WRITE on open handles, RELEASE,
// FORGET. Forged FORGETs (huge counts, unknown ids, the root, one id repeated
// in a BATCH_FORGET) cannot crash the daemon, underflow a count or free the
// root, and a FORGET of an inode in use leaves its users working. A guest
// that never sends FORGET stops at the budget. Raw FUSE bytes over a real
// PassthroughFs; the process's own fd table is the host-side evidence.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "raw_fuse.h"
#include "support/host_files.h"

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;
using passthrough::InodeFileHandles;

constexpr uint64_t kBudget = 64;
constexpr int kFiles = 150;

std::set<std::string> host_names(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

class FdBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-budget-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (int i = 0; i < kFiles; ++i) test::write_host(path(name(i)), "data " + std::to_string(i));
    ASSERT_EQ(::mkdir(path("dir").c_str(), 0755), 0);
  }
  void TearDown() override {
    fuse_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }
  void start(InodeFileHandles handles = InodeFileHandles::kNever, uint64_t fd_limit = kBudget,
             uint64_t handle_limit = 0) {
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.guest_fd_limit = fd_limit;
    config.handle_inode_limit = handle_limit;
    config.inode_file_handles = handles;
    config.posix_lock = true;
    fuse_ = std::make_unique<RawFuse>(config);
    ASSERT_TRUE(fuse_->ready());
  }
  static std::string name(int i) { return "f" + std::to_string(i); }
  std::string path(const std::string& rel) const { return root_ + "/" + rel; }
  RawFuse& g() { return *fuse_; }
  passthrough::PassthroughFs& pfs() { return fuse_->fs(); }

  // Looks up f<from>, f<from+1>, ... until one answers ENFILE; their nodes.
  std::vector<uint64_t> lookup_until_enfile(int from = 0) {
    std::vector<uint64_t> nodes;
    for (int i = from; i < kFiles; ++i) {
      Reply r = g().lookup(kRootInode.value(), name(i));
      if (!r.ok()) {
        EXPECT_EQ(r.error(), ENFILE) << name(i);
        break;
      }
      nodes.push_back(r.as<fuse_entry_out>().nodeid);
    }
    return nodes;
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<RawFuse> fuse_;
};

TEST_F(FdBudgetTest, LookupsStopAtTheBudgetAndForgetsGiveItBack) {
  start();
  EXPECT_EQ(pfs().fd_budget_limit(), kBudget);
  EXPECT_EQ(pfs().fd_budget_used(), 0u) << "the root is the daemon's own";
  const int fds_before = test::count_open_fds();
  // An open file from before the budget runs out.
  const uint64_t first = g().node(kRootInode.value(), name(0));
  Reply o = g().open(first, O_RDWR);
  ASSERT_TRUE(o.ok());
  const uint64_t fh = o.as<fuse_open_out>().fh;
  EXPECT_EQ(pfs().fd_budget_used(), 2u);

  std::vector<uint64_t> nodes = lookup_until_enfile(1);
  EXPECT_EQ(nodes.size(), kBudget - 2);
  EXPECT_EQ(pfs().fd_budget_used(), kBudget);
  // The guest never sent FORGET: the daemon holds no more than the budget.
  EXPECT_LE(test::count_open_fds(), fds_before + static_cast<int>(kBudget));
  EXPECT_EQ(pfs().inode_count(), kBudget);  // the root + 63 inodes
  // Still past it: every new inode and every new open answers ENFILE.
  EXPECT_EQ(g().lookup(kRootInode.value(), name(kFiles - 1)).error(), ENFILE);
  EXPECT_EQ(g().lookup(kRootInode.value(), "dir").error(), ENFILE);
  EXPECT_EQ(g().open(first, O_RDONLY).error(), ENFILE);
  EXPECT_EQ(g().opendir(kRootInode.value()).error(), ENFILE);

  // Everything that needs nothing new goes on.
  for (uint64_t node : nodes) EXPECT_TRUE(g().getattr(node).ok());
  EXPECT_TRUE(g().getattr(kRootInode.value()).ok());
  Reply again = g().lookup(kRootInode.value(), name(1));  // known: no new fd
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.as<fuse_entry_out>().nodeid, nodes[0]);
  EXPECT_TRUE(g().write(first, fh, "still").ok());
  Reply r = g().read(first, fh, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.text(), "still0");
  EXPECT_TRUE(g().statfs(kRootInode.value()).ok());
  EXPECT_EQ(pfs().fd_budget_used(), kBudget);

  // FORGET gives units back, exactly.
  for (size_t i = 1; i < 11; ++i) g().forget(nodes[i], 1);
  g().forget(nodes[0], 2);  // it was looked up twice
  EXPECT_EQ(pfs().fd_budget_used(), kBudget - 11);
  std::vector<uint64_t> more = lookup_until_enfile(kBudget);
  EXPECT_EQ(more.size(), 11u);
  EXPECT_EQ(pfs().fd_budget_used(), kBudget);
  // RELEASE gives the handle's back.
  ASSERT_TRUE(g().release(first, fh).ok());
  EXPECT_EQ(pfs().fd_budget_used(), kBudget - 1);
  EXPECT_TRUE(g().opendir(kRootInode.value()).ok());
  EXPECT_EQ(pfs().fd_budget_used(), kBudget);
}

// Creating requests reserve their units before they change the host: one
// past the budget creates nothing.
TEST_F(FdBudgetTest, CreatingPastTheBudgetCreatesNothing) {
  start();
  const uint64_t dir = g().node(kRootInode.value(), "dir");
  ASSERT_EQ(lookup_until_enfile().size(), kBudget - 1);
  ASSERT_EQ(pfs().fd_budget_used(), kBudget);
  const std::set<std::string> before = host_names(path("dir"));
  EXPECT_EQ(g().create(dir, "c", O_RDWR).error(), ENFILE);
  EXPECT_EQ(g().mkdir(dir, "d").error(), ENFILE);
  EXPECT_EQ(g().mknod(dir, "n", S_IFIFO | 0644).error(), ENFILE);
  EXPECT_EQ(g().mknod(dir, "r", S_IFREG | 0644).error(), ENFILE);
  EXPECT_EQ(g().symlink(dir, "s", "target").error(), ENFILE);
  fuse_create_in tmp{};
  tmp.flags = O_RDWR;
  tmp.mode = S_IFREG | 0600;
  EXPECT_EQ(g().send(g().req(FUSE_TMPFILE, dir).add(tmp).add_name("/").finish()).error(), ENFILE);
  EXPECT_EQ(host_names(path("dir")), before);
  // With one unit free, CREATE (which needs two: inode and handle) still
  // refuses, and still creates nothing.
  g().forget(dir, 1);
  EXPECT_EQ(pfs().fd_budget_used(), kBudget - 1);
  const uint64_t root_child = g().node(kRootInode.value(), name(kFiles - 1));  // takes it back
  g().forget(root_child, 1);
  EXPECT_EQ(g().create(kRootInode.value(), "c2", O_RDWR).error(), ENFILE);
  EXPECT_FALSE(fs::exists(path("c2")));
  EXPECT_EQ(pfs().fd_budget_used(), kBudget - 1);
}

TEST_F(FdBudgetTest, LockOwnerDescriptionsCountAndAnswerEnolckPastIt) {
  start();
  const uint64_t node = g().node(kRootInode.value(), name(0));
  Reply o = g().open(node, O_RDWR);
  ASSERT_TRUE(o.ok());
  const uint64_t fh = o.as<fuse_open_out>().fh;
  auto setlk = [&](uint64_t owner) {
    fuse_lk_in lk{};
    lk.fh = fh;
    lk.owner = owner;
    lk.lk.type = F_WRLCK;
    lk.lk.start = owner * 10;
    lk.lk.end = owner * 10 + 1;
    return g().send(g().req(FUSE_SETLK, node).add(lk).finish());
  };
  ASSERT_TRUE(setlk(1).ok());
  EXPECT_EQ(pfs().fd_budget_used(), 3u);  // inode, handle, owner 1's description
  ASSERT_EQ(lookup_until_enfile(1).size(), kBudget - 3);
  EXPECT_EQ(setlk(2).error(), ENOLCK);
  EXPECT_TRUE(setlk(1).ok()) << "an owner that has its description goes on";
  // RELEASE drops the handle and the descriptions used through it.
  ASSERT_TRUE(g().release(node, fh).ok());
  EXPECT_EQ(pfs().fd_budget_used(), kBudget - 2);
}

// --inode-file-handles: inodes hold no fd, so the fd budget does not limit
// them; their own cap does, and the daemon's fd table stays flat.
TEST_F(FdBudgetTest, FileHandleInodesStopAtTheirCap) {
  // A host property, probed on the host: whether this filesystem has handles.
  struct {
    file_handle header;
    unsigned char bytes[128];
  } probe{};
  probe.header.handle_bytes = sizeof(probe.bytes);
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, path(name(0)).c_str(), &probe.header, &mount_id, 0) != 0) {
    GTEST_SKIP() << "this filesystem has no file handles: " << errno_name(errno);
  }
  start(InodeFileHandles::kPrefer, /*fd_limit=*/kBudget, /*handle_limit=*/100);
  EXPECT_EQ(pfs().handle_inodes_limit(), 100u);
  const int fds_before = test::count_open_fds();
  std::vector<uint64_t> nodes = lookup_until_enfile();
  EXPECT_EQ(nodes.size(), 100u);
  EXPECT_EQ(pfs().handle_inodes_used(), 100u);
  EXPECT_EQ(pfs().fd_budget_used(), 0u);
  EXPECT_LE(test::count_open_fds(), fds_before + 1);
  for (uint64_t node : nodes) EXPECT_TRUE(g().getattr(node).ok());
  g().batch_forget({{nodes[0], 1}, {nodes[1], 1}});
  EXPECT_EQ(pfs().handle_inodes_used(), 98u);
  EXPECT_EQ(lookup_until_enfile(100).size(), 2u);
}

// The default cap applies when the option is left at 0, even with an
// unlimited fd budget.
TEST_F(FdBudgetTest, DefaultCaps) {
  start(InodeFileHandles::kNever, /*fd_limit=*/0, /*handle_limit=*/0);
  EXPECT_EQ(pfs().fd_budget_limit(), 0u);
  EXPECT_EQ(pfs().handle_inodes_limit(), passthrough::kDefaultHandleInodeLimit);
  EXPECT_EQ(lookup_until_enfile().size(), static_cast<size_t>(kFiles));
  EXPECT_EQ(pfs().fd_budget_used(), static_cast<uint64_t>(kFiles));
}

TEST_F(FdBudgetTest, ForgedForgetsCrashNothingAndFreeOnlyWhatTheyName) {
  start();
  const uint64_t a = g().node(kRootInode.value(), name(0));
  for (int i = 0; i < 4; ++i) g().node(kRootInode.value(), name(0));  // 5 references
  const uint64_t b = g().node(kRootInode.value(), name(1));
  EXPECT_EQ(pfs().lookup_count(fuse::InodeId{a}), 5u);
  // Unknown ids, id 0, the largest id: nothing happens.
  for (uint64_t bogus : {uint64_t{0}, uint64_t{999999}, UINT64_MAX, b + 1000}) {
    EXPECT_EQ(g().forget(bogus, 1).bytes, 0u) << "FORGET gets no reply";
    g().forget(bogus, UINT64_MAX);
  }
  EXPECT_EQ(pfs().inode_count(), 3u);
  // The root is never freed, whatever the count.
  g().forget(kRootInode.value(), UINT64_MAX);
  g().batch_forget({{kRootInode.value(), UINT64_MAX}, {kRootInode.value(), UINT64_MAX}});
  EXPECT_TRUE(g().getattr(kRootInode.value()).ok());
  EXPECT_NE(g().node(kRootInode.value(), name(2)), 0u) << "the root still serves lookups";
  // One id repeated in a BATCH_FORGET: counts saturate at zero, once.
  std::vector<std::pair<uint64_t, uint64_t>> repeated(1000, {a, 1});
  g().batch_forget(repeated);
  EXPECT_EQ(pfs().lookup_count(fuse::InodeId{a}), 0u);
  EXPECT_EQ(g().getattr(a).error(), EBADF) << "forgotten";
  EXPECT_TRUE(g().getattr(b).ok()) << "its neighbour untouched";
  // A huge count on a live inode frees it (the guest said so) and only it.
  g().forget(b, UINT64_MAX);
  EXPECT_EQ(g().getattr(b).error(), EBADF);
  EXPECT_EQ(pfs().inode_count(), 2u);  // the root and f2
  EXPECT_EQ(pfs().fd_budget_used(), 1u);
  // Looked up again, the file is a new node.
  const uint64_t a2 = g().node(kRootInode.value(), name(0));
  EXPECT_NE(a2, a);
  EXPECT_TRUE(g().getattr(a2).ok());
  // Unknown handles answer EBADF, and a handle only works with its inode.
  Reply o = g().open(a2, O_RDONLY);
  ASSERT_TRUE(o.ok());
  const uint64_t fh = o.as<fuse_open_out>().fh;
  EXPECT_EQ(g().read(a2, fh + 1000, 10).error(), EBADF);
  EXPECT_EQ(g().read(kRootInode.value(), fh, 10).error(), EBADF);
  EXPECT_EQ(g().release(a2, fh + 1000).error(), EBADF);
  EXPECT_EQ(g().release(kRootInode.value(), fh).error(), EBADF);
  EXPECT_TRUE(g().read(a2, fh, 10).ok());
}

// FORGET of an inode while the guest still uses it through an open handle:
// the handle keeps working, its fd and unit go with RELEASE.
TEST_F(FdBudgetTest, ForgetOfAnInodeInUseLeavesItsHandleWorking) {
  start();
  const uint64_t node = g().node(kRootInode.value(), name(3));
  Reply o = g().open(node, O_RDWR);
  ASSERT_TRUE(o.ok());
  const uint64_t fh = o.as<fuse_open_out>().fh;
  g().forget(node, UINT64_MAX);
  EXPECT_EQ(pfs().fd_budget_used(), 1u) << "the inode's fd went, the handle's stays";
  EXPECT_TRUE(g().write(node, fh, "after").ok());
  Reply r = g().read(node, fh, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.text(), "after3");
  EXPECT_EQ(test::read_host(path(name(3))), "after3");
  ASSERT_TRUE(g().release(node, fh).ok());
  EXPECT_EQ(pfs().fd_budget_used(), 0u);
}

// Requests racing with FORGETs of the inode they use (the server runs one
// worker per queue, concurrently): a request either finds the inode or
// answers EBADF, never uses a freed one (the sanitizer build checks), and
// the units come back exactly once.
TEST_F(FdBudgetTest, ForgetsRacingWithRequestsFreeEachInodeOnce) {
  start(InodeFileHandles::kNever, /*fd_limit=*/kBudget);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> unique{1'000'000};
  std::atomic<uint64_t> node{g().node(kRootInode.value(), name(5))};
  auto send = [&](uint32_t opcode, uint64_t id, auto&& body) {
    RequestBuilder b(opcode, id, unique += 2);
    body(b);
    return g().send(b.finish());
  };
  std::thread user([&] {
    while (!stop) {
      Reply r =
          send(FUSE_GETATTR, node.load(), [](RequestBuilder& b) { b.add(fuse_getattr_in{}); });
      EXPECT_TRUE(r.ok() || r.error() == EBADF) << r.error();
      Reply x = send(FUSE_LISTXATTR, node.load(), [](RequestBuilder& b) {
        fuse_getxattr_in in{};
        b.add(in);
      });
      (void)x;
    }
  });
  for (int i = 0; i < 2000; ++i) {
    send(FUSE_FORGET, node.load(), [](RequestBuilder& b) {
      fuse_forget_in in{};
      in.nlookup = 1;
      b.add(in);
    });
    Reply e = send(FUSE_LOOKUP, kRootInode.value(), [](RequestBuilder& b) { b.add_name("f5"); });
    ASSERT_TRUE(e.ok()) << e.error();
    node = e.as<fuse_entry_out>().nodeid;
  }
  stop = true;
  user.join();
  EXPECT_EQ(pfs().fd_budget_used(), 1u);
  g().forget(node.load(), 1);
  EXPECT_EQ(pfs().fd_budget_used(), 0u);
  EXPECT_EQ(pfs().inode_count(), 1u);
}

}  // namespace
}  // namespace vfsd::test
