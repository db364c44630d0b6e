// No size a guest claims becomes an allocation of that size. Requests are
// fed to fuse::Server over a real PassthroughFs with buffers as large as a
// descriptor chain can describe (the same guest pages repeated, up to 4 GiB
// readable or writable), and every heap allocation the process makes while
// serving them is recorded: none may exceed a small fixed bound. Before the
// caps, FUSE_IOCTL allocated whatever in_size said, and a std::bad_alloc on
// a worker ended in std::terminate.
//
// Also: a request that throws inside the daemon is answered EIO and the
// server goes on serving.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"

// Every operator new of the process goes through here, so the test sees the
// largest single allocation made while it watches.
namespace {
std::atomic<bool> g_watching{false};
std::atomic<size_t> g_largest{0};

void* counted_alloc(size_t n) {
  if (g_watching.load(std::memory_order_relaxed)) {
    size_t seen = g_largest.load(std::memory_order_relaxed);
    while (n > seen && !g_largest.compare_exchange_weak(seen, n)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t n) {
  return counted_alloc(n);
}
void* operator new[](size_t n) {
  return counted_alloc(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}

namespace vfsd::test {
namespace {

namespace fs = std::filesystem;
using fuse::kRootInode;

// No allocation while serving one request may be larger than this: the
// largest fixed buffers are the 32 KiB getdents buffer, xattr values and
// lists (64 KiB) and a request's extension area (at most 512 KiB, its
// length field being 16 bits of 8-byte units).
constexpr size_t kLargestAllowed = 1 << 20;

constexpr size_t kPage = 1 << 20;  // the "guest page" repeated
constexpr size_t kRepeat = 4095;   // ~4 GiB of it

class GuestSizedAllocationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-alloc-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    test::write_host(root_ + "/file", "content");
    ASSERT_EQ(::mkdir((root_ + "/dir").c_str(), 0755), 0);
    for (int i = 0; i < 50; ++i) test::write_host(root_ + "/dir/f" + std::to_string(i), "x");
    passthrough::PassthroughConfig config{.shared_dir = root_};
    config.xattr = true;
    auto created = passthrough::PassthroughFs::create(config);
    ASSERT_TRUE(created);
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    ASSERT_TRUE(send_small(init_request(2)).ok());
    file_ = lookup("file");
    dir_ = lookup("dir");
    fuse_open_in open{};
    open.flags = O_RDONLY;
    Reply o = send_small(RequestBuilder(FUSE_OPEN, file_, 10).add(open).finish());
    ASSERT_TRUE(o.ok());
    fh_ = o.as<fuse_open_out>().fh;
    Reply d = send_small(RequestBuilder(FUSE_OPENDIR, dir_, 12).add(open).finish());
    ASSERT_TRUE(d.ok());
    dir_fh_ = d.as<fuse_open_out>().fh;
    page_.assign(kPage, 0);
  }

  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  uint64_t lookup(const std::string& name) {
    Reply r =
        send_small(RequestBuilder(FUSE_LOOKUP, kRootInode.value(), 4).add_name(name).finish());
    EXPECT_TRUE(r.ok());
    return r.as<fuse_entry_out>().nodeid;
  }

  Reply send_small(const Bytes& request) {
    Bytes req = request, out(64 * 1024);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server_->handle(reader, writer));
  }

  // Sends `head` followed by `extra_read` bytes of the repeated page, with
  // a reply area of one real buffer plus `extra_reply` bytes of the page,
  // and records the largest allocation made meanwhile.
  Reply send_huge(Bytes head, size_t extra_read, size_t extra_reply, size_t* largest) {
    IovecList in{{head.data(), head.size()}};
    for (size_t left = extra_read; left > 0;) {
      size_t n = std::min(left, kPage);
      in.push_back({page_.data(), n});
      left -= n;
    }
    Bytes out(64 * 1024);
    IovecList reply{{out.data(), out.size()}};
    for (size_t left = extra_reply; left > 0;) {
      size_t n = std::min(left, kPage);
      reply.push_back({page_.data(), n});
      left -= n;
    }
    IovecReader reader(std::move(in));
    IovecWriter writer(std::move(reply));
    g_largest = 0;
    g_watching = true;
    size_t n = server_->handle(reader, writer);
    g_watching = false;
    *largest = g_largest;
    return decode_reply(out, std::min(n, out.size()));
  }

  // A header whose len claims `claimed_len` bytes in all.
  static Bytes with_len(Bytes head, size_t claimed_len) {
    fuse_in_header h{};
    std::memcpy(&h, head.data(), sizeof h);
    h.len = static_cast<uint32_t>(claimed_len);
    std::memcpy(head.data(), &h, sizeof h);
    return head;
  }

  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  uint64_t file_ = 0, dir_ = 0, fh_ = 0, dir_fh_ = 0;
  std::vector<uint8_t> page_;
};

TEST_F(GuestSizedAllocationTest, IoctlSizesAreCappedBeforeAnyAllocation) {
  const size_t huge = kRepeat * kPage;
  // in_size matching a 4 GiB body: refused as a request longer than any the
  // guest kernel sends.
  fuse_ioctl_in io{};
  io.fh = fh_;
  io.cmd = FS_IOC_SETFLAGS;
  io.in_size = static_cast<uint32_t>(huge);
  Bytes head = RequestBuilder(FUSE_IOCTL, file_, 20).add(io).finish();
  size_t largest = 0;
  Reply r = send_huge(with_len(head, head.size() + huge), huge, 0, &largest);
  EXPECT_EQ(r.error(), EINVAL);
  EXPECT_LT(largest, kLargestAllowed);
  // in_size matching a body that is within the request bound, but larger
  // than any restricted ioctl.
  const size_t body = 1 << 20;
  io.in_size = static_cast<uint32_t>(body);
  head = RequestBuilder(FUSE_IOCTL, file_, 22).add(io).finish();
  r = send_huge(with_len(head, head.size() + body), body, 0, &largest);
  EXPECT_EQ(r.error(), EINVAL);
  EXPECT_LT(largest, kLargestAllowed);
  // out_size of 4 GiB with 4 GiB of reply room.
  io.cmd = FS_IOC_GETFLAGS;
  io.in_size = 0;
  io.out_size = UINT32_MAX;
  head = RequestBuilder(FUSE_IOCTL, file_, 24).add(io).finish();
  r = send_huge(head, 0, huge, &largest);
  EXPECT_EQ(r.error(), EINVAL);
  EXPECT_LT(largest, kLargestAllowed);
}

TEST_F(GuestSizedAllocationTest, XattrDirectoryAndDataSizesCostNothing) {
  const size_t huge = kRepeat * kPage;
  size_t largest = 0;
  fuse_getxattr_in gx{};
  gx.size = UINT32_MAX;
  Reply r = send_huge(RequestBuilder(FUSE_GETXATTR, file_, 30).add(gx).add_name("user.x").finish(),
                      0, huge, &largest);
  EXPECT_EQ(r.error(), ENODATA);
  EXPECT_LT(largest, kLargestAllowed);
  r = send_huge(RequestBuilder(FUSE_LISTXATTR, file_, 32).add(gx).finish(), 0, huge, &largest);
  EXPECT_TRUE(r.ok()) << r.error();
  EXPECT_LT(largest, kLargestAllowed);

  fuse_setxattr_in sx{};
  sx.size = UINT32_MAX;
  Bytes head(reinterpret_cast<uint8_t*>(&sx),
             reinterpret_cast<uint8_t*>(&sx) + FUSE_COMPAT_SETXATTR_IN_SIZE);
  Bytes req = RequestBuilder(FUSE_SETXATTR, file_, 34)
                  .add_bytes(head.data(), head.size())
                  .add_name("user.x")
                  .finish();
  r = send_huge(with_len(req, req.size() + (1 << 20)), 1 << 20, 0, &largest);
  EXPECT_FALSE(r.ok());
  EXPECT_LT(largest, kLargestAllowed);

  fuse_read_in rd{};
  rd.fh = dir_fh_;
  rd.size = UINT32_MAX;
  for (uint32_t op : {FUSE_READDIR, FUSE_READDIRPLUS}) {
    r = send_huge(RequestBuilder(op, dir_, 36).add(rd).finish(), 0, huge, &largest);
    EXPECT_TRUE(r.ok()) << op << ": " << r.error();
    EXPECT_LT(largest, kLargestAllowed) << op;
  }
  rd.fh = fh_;
  r = send_huge(RequestBuilder(FUSE_READ, file_, 38).add(rd).finish(), 0, huge, &largest);
  EXPECT_TRUE(r.ok()) << r.error();
  EXPECT_LT(largest, kLargestAllowed);
}

TEST_F(GuestSizedAllocationTest, RequestLengthAndForgetBatchesAreBounded) {
  size_t largest = 0;
  // The largest extension area a header can announce, on a request whose
  // length exceeds the bound: refused before it is read.
  Bytes head = RequestBuilder(FUSE_GETATTR, file_, 40).add(fuse_getattr_in{}).finish();
  fuse_in_header h{};
  std::memcpy(&h, head.data(), sizeof h);
  h.total_extlen = UINT16_MAX;
  std::memcpy(head.data(), &h, sizeof h);
  const size_t huge = kRepeat * kPage;
  Reply r = send_huge(with_len(head, head.size() + huge), huge, 0, &largest);
  EXPECT_EQ(r.error(), EINVAL);
  EXPECT_LT(largest, kLargestAllowed);
  // A BATCH_FORGET whose count matches a body of 4 GiB, every entry
  // forgetting the file once: refused, no reply, nothing forgotten (it used
  // to run all 268 million entries on the worker, and free the file).
  for (size_t pos = 0; pos + sizeof(fuse_forget_one) <= page_.size();
       pos += sizeof(fuse_forget_one)) {
    fuse_forget_one one{file_, 1};
    std::memcpy(page_.data() + pos, &one, sizeof one);
  }
  const uint64_t refs_before = fs_->lookup_count(fuse::InodeId{file_});
  fuse_batch_forget_in bf{};
  bf.count = static_cast<uint32_t>(huge / sizeof(fuse_forget_one));
  head = RequestBuilder(FUSE_BATCH_FORGET, 0, 42).add(bf).finish();
  r = send_huge(with_len(head, head.size() + huge), huge, 0, &largest);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_LT(largest, kLargestAllowed);
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{file_}), refs_before);
  EXPECT_GE(refs_before, 1u);
}

// Throws from one operation, forwards the rest.
class ThrowingFs final : public fuse::FileSystem {
 public:
  explicit ThrowingFs(fuse::FileSystem& inner) : inner_(inner) {}
  Result<fuse::InitReply> init(const fuse::InitRequest& r) override { return inner_.init(r); }
  Result<fuse::Entry> lookup(const fuse::Context& c, fuse::InodeId p,
                             const fuse::Name& n) override {
    if (n.view() == "boom") throw std::bad_alloc();
    return inner_.lookup(c, p, n);
  }
  Result<fuse::AttrReply> getattr(const fuse::Context& c, fuse::InodeId i,
                                  std::optional<fuse::HandleId> h) override {
    return inner_.getattr(c, i, h);
  }

 private:
  fuse::FileSystem& inner_;
};

TEST_F(GuestSizedAllocationTest, ARequestThatThrowsIsAnsweredEioAndServingGoesOn) {
  ThrowingFs throwing(*fs_);
  fuse::Server server(throwing, fuse::ServerOptions{});
  auto send = [&](const Bytes& request) {
    Bytes req = request, out(4096);
    IovecReader reader(segments(req.data(), req.size(), 0));
    IovecWriter writer(segments(out.data(), out.size(), 0));
    return decode_reply(out, server.handle(reader, writer));
  };
  ASSERT_TRUE(send(init_request(50)).ok());
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kRootInode.value(), 52).add_name("boom").finish());
  EXPECT_EQ(r.error(), EIO);
  EXPECT_EQ(r.header.unique, 52u);
  Reply next = send(RequestBuilder(FUSE_LOOKUP, kRootInode.value(), 54).add_name("file").finish());
  EXPECT_TRUE(next.ok()) << next.error();
}

}  // namespace
}  // namespace vfsd::test
