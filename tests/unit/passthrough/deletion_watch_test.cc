// DeletionWatch against real host files: a mark proves an inode alive until
// the host removes its last link, and only then; it is given to no deleted
// inode, kept under its limit, and removed with its slot.
#include "passthrough/deletion_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "support/host_files.h"

namespace vfsd::passthrough {
namespace {

using test::write_host;

class DeletionWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vfsd-watch-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    proc_.reset(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(proc_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }
  UniqueFd make_file(const std::string& rel) {
    write_host(path(rel), "x");
    return UniqueFd(::open(path(rel).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  }
  std::unique_ptr<DeletionWatch> watch(size_t max_marks = 16) {
    return DeletionWatch::create(proc_.get(), max_marks);
  }

  std::string dir_;
  UniqueFd proc_;
};

TEST_F(DeletionWatchTest, NoLimitMeansNoWatch) {
  EXPECT_EQ(watch(0), nullptr);
}

TEST_F(DeletionWatchTest, AMarkedInodeIsPinnedUntilTheHostDeletesIt) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  WatchSlot slot;
  {
    UniqueFd fd = make_file("f");
    ASSERT_TRUE(fd);
    EXPECT_FALSE(w->pinned(slot));  // not marked yet
    ASSERT_TRUE(w->wants(slot));
    ASSERT_TRUE(w->mark(slot, fd));
    EXPECT_FALSE(w->wants(slot));
    EXPECT_FALSE(w->mark(slot, fd));  // once per slot
  }
  EXPECT_EQ(w->marks(), 1u);
  EXPECT_TRUE(w->pinned(slot));
  EXPECT_TRUE(w->pinned(slot));
  ASSERT_EQ(::unlink(path("f").c_str()), 0);
  EXPECT_FALSE(w->pinned(slot));
  EXPECT_EQ(w->marks(), 0u);  // the kernel took the mark with the inode
  EXPECT_FALSE(w->pinned(slot));
}

TEST_F(DeletionWatchTest, AnotherLinkKeepsTheInodeAndItsProof) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  WatchSlot slot;
  ASSERT_TRUE(w->mark(slot, make_file("a")));
  ASSERT_EQ(::link(path("a").c_str(), path("b").c_str()), 0);
  ASSERT_EQ(::unlink(path("a").c_str()), 0);
  EXPECT_TRUE(w->pinned(slot));
  ASSERT_EQ(::unlink(path("b").c_str()), 0);
  EXPECT_FALSE(w->pinned(slot));
}

TEST_F(DeletionWatchTest, RenamingAnotherFileOverItEndsTheProof) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  WatchSlot slot;
  ASSERT_TRUE(w->mark(slot, make_file("victim")));
  write_host(path("other"), "y");
  ASSERT_EQ(::rename(path("victim").c_str(), path("moved").c_str()), 0);
  EXPECT_TRUE(w->pinned(slot));  // a rename keeps the inode
  ASSERT_EQ(::rename(path("other").c_str(), path("moved").c_str()), 0);
  EXPECT_FALSE(w->pinned(slot));
}

TEST_F(DeletionWatchTest, ARemovedDirectoryEndsItsProof) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(::mkdir(path("d").c_str(), 0755), 0);
  WatchSlot slot;
  {
    UniqueFd fd(::open(path("d").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(w->mark(slot, fd));
  }
  ASSERT_EQ(::rmdir(path("d").c_str()), 0);
  EXPECT_FALSE(w->pinned(slot));
}

// Where another machine or layer may free a number unseen, a mark proves
// nothing: procfs here (NFS, FUSE, overlayfs are refused the same way).
TEST_F(DeletionWatchTest, OnlyLocalFilesystemsGetMarks) {
  EXPECT_TRUE(marks_prove_identity_on(0xEF53));       // ext4
  EXPECT_TRUE(marks_prove_identity_on(0x01021994));   // tmpfs
  EXPECT_FALSE(marks_prove_identity_on(0x6969));      // NFS
  EXPECT_FALSE(marks_prove_identity_on(0x65735546));  // FUSE
  EXPECT_FALSE(marks_prove_identity_on(0x794c7630));  // overlayfs
  auto w = watch();
  ASSERT_NE(w, nullptr);
  UniqueFd proc_file(::open("/proc/self/status", O_PATH | O_CLOEXEC));
  ASSERT_TRUE(proc_file);
  WatchSlot slot;
  EXPECT_FALSE(w->mark(slot, proc_file));
  EXPECT_EQ(w->marks(), 0u);
  WatchSlot local;
  EXPECT_TRUE(w->mark(local, make_file("f")));
}

// A mark made after the last link went would get no IN_DELETE_SELF and hold
// the deleted inode: none is made.
TEST_F(DeletionWatchTest, ADeletedInodeGetsNoMark) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  UniqueFd fd = make_file("f");
  ASSERT_EQ(::unlink(path("f").c_str()), 0);
  WatchSlot slot;
  EXPECT_FALSE(w->mark(slot, fd));
  EXPECT_FALSE(w->pinned(slot));
  EXPECT_EQ(w->marks(), 0u);
  EXPECT_FALSE(w->wants(slot));  // not tried again
}

TEST_F(DeletionWatchTest, TheLimitIsKeptAndFreedByAGoneSlot) {
  auto w = watch(1);
  ASSERT_NE(w, nullptr);
  UniqueFd b = make_file("b");
  WatchSlot slot_b;
  {
    WatchSlot slot_a;
    ASSERT_TRUE(w->mark(slot_a, make_file("a")));
    EXPECT_FALSE(w->wants(slot_b));
    EXPECT_FALSE(w->mark(slot_b, b));
    EXPECT_FALSE(w->pinned(slot_b));
    EXPECT_EQ(w->marks(), 1u);
  }
  EXPECT_EQ(w->marks(), 0u);  // slot_a's mark went with it
  EXPECT_TRUE(w->wants(slot_b));
  EXPECT_TRUE(w->mark(slot_b, b));
  EXPECT_TRUE(w->pinned(slot_b));
}

// One inode reached through two slots (two mounts of one filesystem): the
// first slot owns the mark, the second gets none, and the first's proof
// survives the second going.
TEST_F(DeletionWatchTest, OneInodeIsMarkedForOneSlotOnly) {
  auto w = watch();
  ASSERT_NE(w, nullptr);
  UniqueFd fd = make_file("f");
  WatchSlot first;
  ASSERT_TRUE(w->mark(first, fd));
  {
    WatchSlot second;
    EXPECT_FALSE(w->mark(second, fd));
    EXPECT_FALSE(w->pinned(second));
  }
  EXPECT_TRUE(w->pinned(first));
  EXPECT_EQ(w->marks(), 1u);
}

// Slots may outlive the watch (an inode still in use when the filesystem
// goes): their marks are removed safely.
TEST_F(DeletionWatchTest, ASlotMayOutliveItsWatch) {
  auto slot = std::make_unique<WatchSlot>();
  {
    auto w = watch();
    ASSERT_NE(w, nullptr);
    ASSERT_TRUE(w->mark(*slot, make_file("f")));
  }
  slot.reset();
  SUCCEED();
}

}  // namespace
}  // namespace vfsd::passthrough
