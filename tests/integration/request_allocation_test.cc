// The request path makes no heap allocation. Chains shaped as a Linux guest
// shapes them (a header and its arguments readable, a reply header and its
// payload writable) are popped from a real split ring, served by fuse::Server
// over the real PassthroughFs and put on the used ring, while every operator
// new of the process is counted. Small requests fit the segment lists'
// inline room, so once the inode and the file handle exist a GETATTR, a
// LOOKUP of a known name, a READ and a WRITE of 4 KiB take nothing from the
// heap.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"
#include "support/virtq_driver.h"
#include "virtio/guest_memory.h"
#include "virtio/queue.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};

void* counted_alloc(size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
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

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f0000000000;
constexpr size_t kMemSize = 8 << 20;
constexpr uint32_t kQueueSize = 256;
constexpr size_t kOutHeader = sizeof(fuse_out_header);

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

class RequestAllocationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-reqalloc-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    write_host(root_ + "/file", std::string(64 * 1024, 'x'));
    auto created = passthrough::PassthroughFs::create({.shared_dir = root_});
    ASSERT_TRUE(created.has_value());
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});

    mem_.reset(static_cast<char*>(std::aligned_alloc(4096, kMemSize)));
    std::memset(mem_.get(), 0, kMemSize);
    auto gm = virtio::GuestMemory::create(
        {virtio::MappedRegion::wrap(mem_.get(), kGpaBase, kMemSize, kUvaBase)});
    ASSERT_TRUE(gm.has_value());
    memory_ = std::make_shared<const virtio::GuestMemory>(std::move(*gm));
    driver_ = std::make_unique<VirtqDriver>(mem_.get(), kGpaBase, kMemSize, kQueueSize);
    virtio::QueueConfig config;
    config.size = kQueueSize;
    config.desc_user_addr = uva(driver_->desc_gpa());
    config.avail_user_addr = uva(driver_->avail_gpa());
    config.used_user_addr = uva(driver_->used_gpa());
    auto queue = virtio::SplitQueue::create(memory_, config);
    ASSERT_TRUE(queue.has_value());
    queue_ = std::make_unique<virtio::SplitQueue>(std::move(*queue));

    ASSERT_TRUE(call(init_request(next_unique()), sizeof(fuse_init_out)).ok());
    Reply entry = call(lookup_request(), sizeof(fuse_entry_out));
    ASSERT_TRUE(entry.ok());
    file_ = entry.as<fuse_entry_out>().nodeid;
    fuse_open_in open{};
    open.flags = O_RDWR;
    Reply opened = call(RequestBuilder(FUSE_OPEN, file_, next_unique()).add(open).finish(),
                        sizeof(fuse_open_out));
    ASSERT_TRUE(opened.ok());
    fh_ = opened.as<fuse_open_out>().fh;
  }

  void TearDown() override {
    server_.reset();
    fs_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }
  uint64_t next_unique() { return unique_ += 2; }

  Bytes lookup_request() {
    return RequestBuilder(FUSE_LOOKUP, kRootInode.value(), next_unique()).add_name("file").finish();
  }
  Bytes getattr_request() {
    return RequestBuilder(FUSE_GETATTR, file_, next_unique()).add(fuse_getattr_in{}).finish();
  }
  Bytes read_request() {
    fuse_read_in in{};
    in.fh = fh_;
    in.size = 4096;
    return RequestBuilder(FUSE_READ, file_, next_unique()).add(in).finish();
  }
  Bytes write_request() {
    fuse_write_in in{};
    in.fh = fh_;
    in.size = 4096;
    in.offset = 8192;
    return RequestBuilder(FUSE_WRITE, file_, next_unique())
        .add(in)
        .add_bytes(std::string(4096, 'w'))
        .finish();
  }

  // Publishes one request as Linux lays it out: the fuse_in_header, then
  // the arguments (for a WRITE: its fuse_write_in, then the data page);
  // writable: the reply header, then `payload` bytes if any.
  void publish(const Bytes& request, size_t payload) {
    const auto* at = reinterpret_cast<const char*>(request.data());
    std::vector<std::string> readable{std::string(at, sizeof(fuse_in_header))};
    fuse_in_header in{};
    std::memcpy(&in, at, sizeof in);
    size_t args = request.size() - sizeof(fuse_in_header);
    if (in.opcode == FUSE_WRITE) {
      readable.emplace_back(at + sizeof(fuse_in_header), sizeof(fuse_write_in));
      args -= sizeof(fuse_write_in);
      readable.emplace_back(at + sizeof(fuse_in_header) + sizeof(fuse_write_in), args);
    } else if (args > 0) {
      readable.emplace_back(at + sizeof(fuse_in_header), args);
    }
    std::vector<uint32_t> writable{kOutHeader};
    if (payload > 0) writable.push_back(static_cast<uint32_t>(payload));
    driver_->publish(driver_->add_chain(readable, writable));
  }

  // Serves every published chain the way a ring worker does; returns the
  // reply lengths in order.
  void serve_published(std::vector<uint32_t>& lengths) {
    while (auto popped = queue_->pop(*memory_)) {
      uint32_t len = 0;
      if (popped->chain) {
        IovecReader request(std::move(popped->chain->readable));
        IovecWriter reply(popped->chain->writable);
        len = static_cast<uint32_t>(server_->handle(request, reply));
      }
      queue_->add_used(popped->head, len);
      lengths.push_back(len);
    }
    queue_->publish_used();
  }

  // One request through the ring, outside the counted window.
  Reply call(const Bytes& request, size_t payload) {
    const uint16_t slot = driver_->used_idx();
    publish(request, payload);
    std::vector<uint32_t> lengths;
    serve_published(lengths);
    EXPECT_EQ(lengths.size(), 1u);
    const auto [head, len] = driver_->used_elem(slot);
    const uint16_t desc = static_cast<uint16_t>(head);
    // The reply header and its payload sit in the chain's two writable
    // buffers, which the driver allocated back to back (16-aligned).
    std::string bytes;
    uint16_t index = desc;
    while (driver_->desc(index).flags & kVirtqDescFNext) {
      const VirtqDesc& d = driver_->desc(index);
      if (d.flags & kVirtqDescFWrite) bytes += driver_->read(d.addr, d.len);
      index = driver_->desc(index).next;
    }
    bytes += driver_->read(driver_->desc(index).addr, driver_->desc(index).len);
    Bytes out(bytes.begin(), bytes.end());
    driver_->reset_alloc();
    return decode_reply(out, len);
  }

  std::string root_;
  mode_t old_umask_ = 0;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  std::unique_ptr<char, FreeDeleter> mem_;
  std::shared_ptr<const virtio::GuestMemory> memory_;
  std::unique_ptr<VirtqDriver> driver_;
  std::unique_ptr<virtio::SplitQueue> queue_;
  uint64_t unique_ = 0;
  uint64_t file_ = 0;
  uint64_t fh_ = 0;
};

TEST_F(RequestAllocationTest, SmallRequestsThroughTheRingTakeNothingFromTheHeap) {
  // Each kind once more outside the window: whatever is made on first use
  // (a metrics slot, a lazily built table) is not a per-request cost.
  ASSERT_TRUE(call(getattr_request(), sizeof(fuse_attr_out)).ok());
  ASSERT_TRUE(call(read_request(), 4096).ok());
  ASSERT_TRUE(call(write_request(), sizeof(fuse_write_out)).ok());
  ASSERT_TRUE(call(lookup_request(), sizeof(fuse_entry_out)).ok());

  constexpr int kRounds = 12;  // 48 chains of 4 descriptors: the ring has 256
  for (int i = 0; i < kRounds; ++i) {
    publish(getattr_request(), sizeof(fuse_attr_out));
    publish(read_request(), 4096);
    publish(write_request(), sizeof(fuse_write_out));
    publish(lookup_request(), sizeof(fuse_entry_out));
  }
  std::vector<uint32_t> lengths;
  lengths.reserve(4 * kRounds);
  g_allocations = 0;
  g_counting = true;
  serve_published(lengths);
  g_counting = false;
  const size_t allocations = g_allocations.load();

  ASSERT_EQ(lengths.size(), 4u * kRounds);
  for (int i = 0; i < kRounds; ++i) {
    SCOPED_TRACE(i);
    // Every request was answered in full, without an error.
    EXPECT_EQ(lengths[4 * i + 0], kOutHeader + sizeof(fuse_attr_out));
    EXPECT_EQ(lengths[4 * i + 1], kOutHeader + 4096);
    EXPECT_EQ(lengths[4 * i + 2], kOutHeader + sizeof(fuse_write_out));
    EXPECT_EQ(lengths[4 * i + 3], kOutHeader + sizeof(fuse_entry_out));
  }
  EXPECT_EQ(allocations, 0u) << "heap allocations while serving " << 4 * kRounds << " requests";
  // The writes reached the host file.
  EXPECT_EQ(read_host(root_ + "/file").substr(8192, 4096), std::string(4096, 'w'));
}

}  // namespace
}  // namespace vfsd::test
