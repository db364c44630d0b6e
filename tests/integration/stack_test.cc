// The whole daemon stack in one process: vhost_user::Backend serves one end
// of a socketpair and hands each chain to fuse::Server over a PassthroughFs
// (through the app's FuseRequestHandler). The test plays QEMU on the other
// end (the vhost-user message sequence of QEMU 7.2) and the guest driver
// (rings and buffers in a memfd it maps too), then checks the host directory,
// the used rings and the call eventfds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "app/fuse_request_handler.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "support/fuse_codec.h"
#include "support/host_files.h"
#include "support/vhost_user_frontend.h"
#include "support/virtq_driver.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"

namespace vfsd::test {
namespace {

using vhost_user::Request;

// Guest RAM: one region, at a guest-physical address that is not 0 and a
// front-end virtual address unrelated to where anyone maps it.
constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1200000000;
constexpr size_t kMemSize = 32 << 20;
// Queue 0 (hiprio) lives in the first MiB, queue 1 (requests) in the rest.
constexpr size_t kHiprioArea = 1 << 20;
constexpr uint32_t kHiprioSize = 64;
constexpr uint32_t kRequestSize = 1024;
constexpr int kTimeoutMs = 10000;

constexpr uint64_t kFeatures = vhost_user::kFeatureVersion1 | vhost_user::kFeatureIndirectDesc |
                               vhost_user::kFeatureEventIdx | vhost_user::kFeatureProtocolFeatures;
constexpr uint64_t kProtocolFeatures = vhost_user::kProtocolMq | vhost_user::kProtocolReplyAck |
                                       vhost_user::kProtocolBackendReq |
                                       vhost_user::kProtocolConfigureMemSlots;
constexpr uint64_t kProtocolConfig = 1ull << 9;

std::string pattern(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 7;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    out[i] = static_cast<char>(x >> 16);
  }
  return out;
}

std::string as_string(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

// How the test hands guest RAM over: one ADD_MEM_REG (QEMU 7.2 once
// CONFIGURE_MEM_SLOTS is agreed), one SET_MEM_TABLE (other front-ends), or
// the same memfd as two adjacent regions (RAM split around a hole).
enum class MemSetup { kAddMemReg, kSetMemTable, kTwoRegions };
constexpr uint64_t kRegionSplit = 16 << 20;

struct Used {
  uint32_t id = 0;
  uint32_t len = 0;
};

class StackTest : public ::testing::TestWithParam<MemSetup> {
 protected:
  void SetUp() override {
    fds_before_ = count_open_fds();
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-stack-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    prepare_share();
    auto created = passthrough::PassthroughFs::create(
        {.shared_dir = root_, .guest_fd_limit = guest_fd_limit()});
    ASSERT_TRUE(created.has_value());
    fs_ = std::move(*created);
    server_ = std::make_unique<fuse::Server>(*fs_, fuse::ServerOptions{});
    handler_ = std::make_unique<app::FuseRequestHandler>(*server_);
    frontend_ = std::make_unique<FakeFrontend>(*handler_, vhost_user::BackendOptions{2});

    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    ASSERT_TRUE(memfd_.valid());
    ASSERT_EQ(::ftruncate(memfd_.get(), kMemSize), 0);
    void* map = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    ASSERT_NE(map, MAP_FAILED);
    ram_ = static_cast<char*>(map);
    drivers_[0] = std::make_unique<VirtqDriver>(ram_, kGpaBase, kHiprioArea, kHiprioSize);
    drivers_[1] = std::make_unique<VirtqDriver>(ram_ + kHiprioArea, kGpaBase + kHiprioArea,
                                                kMemSize - kHiprioArea, kRequestSize);

    ASSERT_NO_FATAL_FAILURE(Handshake());
    Reply init = fuse(1, init_request(next_unique()), sizeof(fuse_out_header) + 256);
    ASSERT_TRUE(init.ok()) << init.error();
    EXPECT_EQ(init.as<fuse_init_out>().max_write, 1u << 20);
  }

  void TearDown() override {
    // Closing the front-end's end is a disconnect: serve() returns ok.
    if (frontend_) {
      frontend_->close();
      if (!wait_until([this] { return frontend_->served(); }, kTimeoutMs)) {
        ADD_FAILURE() << "serve() did not return after the front-end closed its socket";
        std::abort();  // the thread cannot be joined; do not hang the suite
      }
      VoidResult served = frontend_->wait_served();
      EXPECT_TRUE(served.has_value()) << "serve() failed: " << errno_name(served.error().value);
    }
    frontend_.reset();
    handler_.reset();
    server_.reset();
    fs_.reset();
    drivers_[0].reset();
    drivers_[1].reset();
    if (ram_ != nullptr) ::munmap(ram_, kMemSize);
    memfd_.reset();
    for (auto& fds : {&kick_, &call_, &early_call_, &err_}) {
      for (auto& fd : *fds) fd.reset();
    }
    backend_req_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
    ::umask(old_umask_);
    EXPECT_EQ(count_open_fds(), fds_before_) << "file descriptors leaked";
  }

  // The message sequence QEMU 7.2 sends for a vhost-user-fs device, with
  // NEED_REPLY on the set-up messages so that each is known to be done.
  void Handshake() {
    FakeFrontend& fe = *frontend_;
    EXPECT_EQ(fe.call(Request::kGetFeatures).u64() & kFeatures, kFeatures);

    const uint64_t protocol = fe.call(Request::kGetProtocolFeatures).u64();
    EXPECT_EQ(protocol & kProtocolFeatures, kProtocolFeatures);
    EXPECT_EQ(protocol & kProtocolConfig, 0u) << "CONFIG must not be offered";
    fe.send(Request::kSetProtocolFeatures, bytes(kProtocolFeatures));

    EXPECT_EQ(fe.call(Request::kGetQueueNum).u64(), 2u);
    EXPECT_GE(fe.call(Request::kGetMaxMemSlots).u64(), 1u);

    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    backend_req_.reset(sv[0]);
    UniqueFd theirs(sv[1]);
    ASSERT_EQ(fe.acked(Request::kSetBackendReqFd, {}, {theirs.get()}), 0u);
    theirs.reset();

    ASSERT_EQ(fe.acked(Request::kSetOwner), 0u);
    // QEMU sets call fds before SET_FEATURES, while no ring exists, and
    // replaces them later.
    for (uint64_t q = 0; q < 2; ++q) {
      early_call_[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes(q), {early_call_[q].get()}), 0u);
      err_[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringErr, bytes(q), {err_[q].get()}), 0u);
    }
    ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kFeatures)), 0u);

    switch (GetParam()) {
      case MemSetup::kAddMemReg: {
        vhost_user::SingleMemoryRegion reg{};
        reg.region = {kGpaBase, kMemSize, kUvaBase, 0};
        ASSERT_EQ(fe.acked(Request::kAddMemReg, bytes(reg), {memfd_.get()}), 0u);
        break;
      }
      case MemSetup::kSetMemTable: {
        struct {
          vhost_user::MemoryTableHead head;
          vhost_user::MemoryRegion region;
        } table{{1, 0}, {kGpaBase, kMemSize, kUvaBase, 0}};
        ASSERT_EQ(fe.acked(Request::kSetMemTable, bytes(table), {memfd_.get()}), 0u);
        break;
      }
      case MemSetup::kTwoRegions: {
        // Upper half first: the table must not depend on arrival order.
        vhost_user::SingleMemoryRegion hi{};
        hi.region = {kGpaBase + kRegionSplit, kMemSize - kRegionSplit, kUvaBase + kRegionSplit,
                     kRegionSplit};
        ASSERT_EQ(fe.acked(Request::kAddMemReg, bytes(hi), {memfd_.get()}), 0u);
        vhost_user::SingleMemoryRegion lo{};
        lo.region = {kGpaBase, kRegionSplit, kUvaBase, 0};
        ASSERT_EQ(fe.acked(Request::kAddMemReg, bytes(lo), {memfd_.get()}), 0u);
        break;
      }
    }

    for (uint32_t q = 0; q < 2; ++q) {
      VirtqDriver& d = *drivers_[q];
      ASSERT_EQ(fe.acked(Request::kSetVringNum, bytes(vhost_user::VringState{q, d.queue_size()})),
                0u);
      ASSERT_EQ(fe.acked(Request::kSetVringBase, bytes(vhost_user::VringState{q, 0})), 0u);
      vhost_user::VringAddr addr{};
      addr.index = q;
      addr.desc_user_addr = uva(d.desc_gpa());
      addr.used_user_addr = uva(d.used_gpa());
      addr.avail_user_addr = uva(d.avail_gpa());
      ASSERT_EQ(fe.acked(Request::kSetVringAddr, bytes(addr)), 0u);
      kick_[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringKick, bytes(uint64_t{q}), {kick_[q].get()}), 0u);
      call_[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes(uint64_t{q}), {call_[q].get()}), 0u);
      ASSERT_EQ(fe.acked(Request::kSetVringEnable, bytes(vhost_user::VringState{q, 1})), 0u);
    }
  }

  /// The passthrough's guest_fd_limit (0: unlimited), and what the share
  /// holds before the filesystem opens it: for fixtures that derive.
  virtual uint64_t guest_fd_limit() const { return 0; }
  virtual void prepare_share() {}

  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }
  uint64_t next_unique() { return unique_ += 2; }
  VirtqDriver& driver(int q) { return *drivers_[q]; }

  /// Publishes `head` on queue `q` asking for a notification (used_event),
  /// kicks, waits for the call eventfd, and returns the used element.
  std::optional<Used> submit(int q, uint16_t head) {
    VirtqDriver& d = driver(q);
    const uint16_t before = d.used_idx();
    d.set_used_event(before);
    d.publish(head);
    const uint64_t one = 1;
    EXPECT_EQ(::write(kick_[q].get(), &one, sizeof one), 8);
    if (wait_eventfd(call_[q].get(), kTimeoutMs) == 0) {
      ADD_FAILURE() << "queue " << q << ": no call for head " << head;
      return std::nullopt;
    }
    // The call is signalled after the used index moved.
    EXPECT_EQ(d.used_idx(), static_cast<uint16_t>(before + 1));
    auto [id, len] = d.used_elem(before);
    EXPECT_EQ(id, head);
    return Used{id, len};
  }

  /// The bytes of the writable buffers of the chain at `head` (direct or
  /// indirect), concatenated, at most `len`.
  std::string writable_bytes(int q, uint16_t head, size_t len) {
    VirtqDriver& d = driver(q);
    std::string out;
    auto collect = [&](const VirtqDesc& desc) {
      if ((desc.flags & kVirtqDescFWrite) && out.size() < len) {
        size_t take = std::min<size_t>(desc.len, len - out.size());
        out += d.read(desc.addr, take);
      }
    };
    const VirtqDesc first = d.desc(head);
    if (first.flags & kVirtqDescFIndirect) {
      const auto* table = reinterpret_cast<const VirtqDesc*>(d.host(first.addr));
      for (size_t i = 0; i < first.len / sizeof(VirtqDesc); ++i) collect(table[i]);
      return out;
    }
    uint16_t i = head;
    for (uint32_t n = 0; n < d.queue_size(); ++n) {
      const VirtqDesc desc = d.desc(i);
      collect(desc);
      if (!(desc.flags & kVirtqDescFNext)) break;
      i = desc.next;
    }
    return out;
  }

  /// The FUSE reply the device wrote into the chain at `head`.
  Reply reply_of(int q, uint16_t head, const Used& used) {
    std::string bytes = writable_bytes(q, head, used.len);
    return decode_reply(Bytes(bytes.begin(), bytes.end()), used.len);
  }

  /// One FUSE request on queue `q` in a two-descriptor chain.
  Reply fuse(int q, const Bytes& request, uint32_t reply_room) {
    uint16_t head = driver(q).add_chain({as_string(request)}, {reply_room});
    auto used = submit(q, head);
    if (!used) return Reply{};
    return reply_of(q, head, *used);
  }

  RequestBuilder req(uint32_t opcode, uint64_t nodeid) {
    return RequestBuilder(opcode, nodeid, next_unique());
  }

  uint64_t lookup(const std::string& name) {
    Reply r = fuse(1, req(FUSE_LOOKUP, fuse::kRootInode.value()).add_name(name).finish(),
                   sizeof(fuse_out_header) + sizeof(fuse_entry_out));
    EXPECT_TRUE(r.ok()) << name << ": " << r.error();
    return r.as<fuse_entry_out>().nodeid;
  }

  int fds_before_ = 0;
  mode_t old_umask_ = 0;
  std::string root_;
  std::unique_ptr<passthrough::PassthroughFs> fs_;
  std::unique_ptr<fuse::Server> server_;
  std::unique_ptr<app::FuseRequestHandler> handler_;
  std::unique_ptr<FakeFrontend> frontend_;
  UniqueFd memfd_;
  char* ram_ = nullptr;
  std::unique_ptr<VirtqDriver> drivers_[2];
  UniqueFd kick_[2], call_[2], early_call_[2], err_[2];
  UniqueFd backend_req_;
  uint64_t unique_ = 0;
};

TEST_P(StackTest, CreateWriteAndIndirectReadOfOneMebibyte) {
  // CREATE on the request queue.
  fuse_create_in cin{};
  cin.flags = O_RDWR;
  cin.mode = S_IFREG | 0644;
  Reply c = fuse(1, req(FUSE_CREATE, fuse::kRootInode.value()).add(cin).add_name("big").finish(),
                 sizeof(fuse_out_header) + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  ASSERT_TRUE(c.ok()) << c.error();
  const uint64_t node = c.as<fuse_entry_out>().nodeid;
  const uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/big").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, c.as<fuse_entry_out>().attr.ino);

  // WRITE of 1 MiB: header and write_in in descriptors of their own, the data
  // in 256 page-sized descriptors, as a Linux guest lays it out.
  const std::string data = pattern(1 << 20, 3);
  fuse_write_in win{};
  win.fh = fh;
  win.size = static_cast<uint32_t>(data.size());
  Bytes header = req(FUSE_WRITE, node).add(win).finish();
  fuse_in_header* in = reinterpret_cast<fuse_in_header*>(header.data());
  in->len = static_cast<uint32_t>(header.size() + data.size());
  std::vector<std::string> readable = {std::string(header.begin(), header.begin() + 40),
                                       std::string(header.begin() + 40, header.end())};
  for (size_t off = 0; off < data.size(); off += 4096) readable.push_back(data.substr(off, 4096));
  uint16_t whead =
      driver(1).add_chain(readable, {sizeof(fuse_out_header) + sizeof(fuse_write_out)});
  auto wused = submit(1, whead);
  ASSERT_TRUE(wused.has_value());
  Reply w = reply_of(1, whead, *wused);
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_EQ(w.as<fuse_write_out>().size, data.size());
  EXPECT_TRUE(read_host(root_ + "/big") == data) << "host file differs from what was written";

  // READ back through an indirect table: header room + 256 pages.
  fuse_read_in rin{};
  rin.fh = fh;
  rin.size = static_cast<uint32_t>(data.size());
  Bytes rreq = req(FUSE_READ, node).add(rin).finish();
  std::vector<uint32_t> writable = {sizeof(fuse_out_header)};
  for (int i = 0; i < 256; ++i) writable.push_back(4096);
  uint16_t rhead = driver(1).add_indirect_chain({as_string(rreq)}, writable);
  ASSERT_TRUE(driver(1).desc(rhead).flags & kVirtqDescFIndirect);
  auto rused = submit(1, rhead);
  ASSERT_TRUE(rused.has_value());
  EXPECT_EQ(rused->len, sizeof(fuse_out_header) + data.size());
  Reply r = reply_of(1, rhead, *rused);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r.text() == data) << "data read through the indirect chain differs";

  // The early call fds were replaced before the rings started: never used.
  EXPECT_EQ(wait_eventfd(early_call_[0].get(), 0), 0u);
  EXPECT_EQ(wait_eventfd(early_call_[1].get(), 0), 0u);
}

TEST_P(StackTest, ForgetOnTheHiprioQueueComesBackWithLengthZero) {
  { std::ofstream(root_ + "/existing") << "x"; }
  const uint64_t node = lookup("existing");
  ASSERT_NE(node, 0u);
  ASSERT_EQ(fs_->lookup_count(fuse::InodeId{node}), 1u);
  const size_t inodes = fs_->inode_count();

  fuse_forget_in fin{};
  fin.nlookup = 1;
  Bytes forget = req(FUSE_FORGET, node).add(fin).finish();
  uint16_t head = driver(0).add_chain({as_string(forget)}, {});
  auto used = submit(0, head);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(fs_->lookup_count(fuse::InodeId{node}), 0u);
  EXPECT_EQ(fs_->inode_count(), inodes - 1);
  // The request queue is still served after the hiprio traffic.
  EXPECT_NE(lookup("existing"), 0u);
}

TEST_P(StackTest, MalformedChainFailsAloneAndTheQueueKeepsServing) {
  Reply attr = fuse(1, req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish(),
                    sizeof(fuse_out_header) + sizeof(fuse_attr_out));
  ASSERT_TRUE(attr.ok());

  // A request buffer that lies beyond the end of guest memory.
  Bytes bad = req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish();
  uint16_t head = driver(1).add_chain({as_string(bad)}, {256});
  driver(1).desc(head).addr = kGpaBase + kMemSize + 0x1000;
  auto used = submit(1, head);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  // A reply buffer straddling the end of guest memory.
  uint16_t head2 = driver(1).add_chain({as_string(bad)}, {256});
  driver(1).desc(driver(1).desc(head2).next).addr = kGpaBase + kMemSize - 16;
  auto used2 = submit(1, head2);
  ASSERT_TRUE(used2.has_value());
  EXPECT_EQ(used2->len, 0u);

  Reply again = fuse(1, req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish(),
                     sizeof(fuse_out_header) + sizeof(fuse_attr_out));
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again.as<fuse_attr_out>().attr.ino, attr.as<fuse_attr_out>().attr.ino);
}

TEST_P(StackTest, GetVringBaseReturnsTheNextIndexAndStopsTheRing) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(fuse(1, req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish(),
                     sizeof(fuse_out_header) + sizeof(fuse_attr_out))
                    .ok());
  }
  const uint16_t published = driver(1).avail_idx();  // INIT + 3 GETATTR
  EXPECT_EQ(published, 4u);
  FakeFrontend::Reply base =
      frontend_->call(Request::kGetVringBase, bytes(vhost_user::VringState{1, 0}));
  ASSERT_EQ(base.payload.size(), sizeof(vhost_user::VringState));
  EXPECT_EQ(base.state().index, 1u);
  EXPECT_EQ(base.state().num, published);
  FakeFrontend::Reply base0 =
      frontend_->call(Request::kGetVringBase, bytes(vhost_user::VringState{0, 0}));
  EXPECT_EQ(base0.state().num, 0u);

  // Stopped: a chain published now is not served.
  const uint16_t used_before = driver(1).used_idx();
  uint16_t head = driver(1).add_chain(
      {as_string(req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish())},
      {256});
  driver(1).publish(head);
  const uint64_t one = 1;
  EXPECT_EQ(::write(kick_[1].get(), &one, sizeof one), 8);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(driver(1).used_idx(), used_before);
}

TEST_P(StackTest, CreateRunsUnderTheGuestCredentialsOnTheWorkerThread) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create files for another uid";
  ASSERT_EQ(::chmod(root_.c_str(), 0777), 0);
  auto create = [&](const std::string& name, uint32_t uid, uint32_t gid) {
    fuse_create_in in{};
    in.flags = O_WRONLY;
    in.mode = S_IFREG | 0666;
    in.umask = 022;
    return fuse(
        1,
        req(FUSE_CREATE, fuse::kRootInode.value()).creds(uid, gid).add(in).add_name(name).finish(),
        sizeof(fuse_out_header) + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  };
  ASSERT_TRUE(create("user-file", 1234, 5678).ok());
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/user-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  // The worker went back to the daemon's credentials.
  ASSERT_TRUE(create("root-file", 0, 0).ok());
  ASSERT_EQ(::stat((root_ + "/root-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(::geteuid(), 0u);
}

TEST_P(StackTest, ReplyRoomAndZeroLengthBuffersAreHonoured) {
  fuse_create_in cin{};
  cin.flags = O_RDWR;
  cin.mode = S_IFREG | 0644;
  Reply c = fuse(1, req(FUSE_CREATE, fuse::kRootInode.value()).add(cin).add_name("f").finish(),
                 sizeof(fuse_out_header) + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  ASSERT_TRUE(c.ok());
  const uint64_t node = c.as<fuse_entry_out>().nodeid;
  const uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;

  // WRITE data with a zero-length descriptor in the middle (virtio allows it).
  const std::string data = pattern(4096, 9);
  fuse_write_in win{};
  win.fh = fh;
  win.size = 4096;
  Bytes header = req(FUSE_WRITE, node).add(win).finish();
  reinterpret_cast<fuse_in_header*>(header.data())->len =
      static_cast<uint32_t>(header.size() + data.size());
  uint16_t whead =
      driver(1).add_chain({as_string(header), data.substr(0, 1000), "", data.substr(1000)}, {64});
  auto wused = submit(1, whead);
  ASSERT_TRUE(wused.has_value());
  Reply w = reply_of(1, whead, *wused);
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_EQ(read_host(root_ + "/f"), data);

  // A READ of 4096 bytes into 16 + 100 bytes of room answers 100 bytes.
  fuse_read_in rin{};
  rin.fh = fh;
  rin.size = 4096;
  Reply r = fuse(1, req(FUSE_READ, node).add(rin).finish(), sizeof(fuse_out_header) + 100);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.text(), data.substr(0, 100));
}

TEST_P(StackTest, HostileFuseRequestsFailAlone) {
  // in.len claims more bytes than the chain carries.
  Bytes lying = req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish();
  reinterpret_cast<fuse_in_header*>(lying.data())->len = 1 << 20;
  Reply r = fuse(1, lying, 256);
  EXPECT_EQ(r.error(), EINVAL);
  // No writable part at all: nowhere to answer, the chain comes back empty.
  uint16_t head = driver(1).add_chain(
      {as_string(req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish())}, {});
  auto used = submit(1, head);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  // A name with a slash, and ".." at the root.
  Reply slash = fuse(1, req(FUSE_LOOKUP, fuse::kRootInode.value()).add_name("a/b").finish(), 256);
  EXPECT_EQ(slash.error(), EINVAL);
  Reply dotdot = fuse(1, req(FUSE_LOOKUP, fuse::kRootInode.value()).add_name("..").finish(), 256);
  ASSERT_TRUE(dotdot.ok());
  EXPECT_EQ(dotdot.as<fuse_entry_out>().nodeid, fuse::kRootInode.value());
  EXPECT_TRUE(
      fuse(1, req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish(), 256)
          .ok());
}

TEST_P(StackTest, WriteBufferStraddlingARegionBoundary) {
  fuse_create_in cin{};
  cin.flags = O_RDWR;
  cin.mode = S_IFREG | 0644;
  Reply c = fuse(1, req(FUSE_CREATE, fuse::kRootInode.value()).add(cin).add_name("f").finish(),
                 sizeof(fuse_out_header) + sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  ASSERT_TRUE(c.ok());
  const uint64_t node = c.as<fuse_entry_out>().nodeid;
  const uint64_t fh = c.as<fuse_open_out>(sizeof(fuse_entry_out)).fh;

  // One 1 MiB data descriptor centred on guest-physical kGpaBase + 16 MiB
  // (the boundary between the two regions in the kTwoRegions setup).
  const std::string data = pattern(1 << 20, 11);
  const uint64_t data_gpa = kGpaBase + kRegionSplit - data.size() / 2;
  std::memcpy(ram_ + (data_gpa - kGpaBase), data.data(), data.size());
  fuse_write_in win{};
  win.fh = fh;
  win.size = static_cast<uint32_t>(data.size());
  Bytes header = req(FUSE_WRITE, node).add(win).finish();
  reinterpret_cast<fuse_in_header*>(header.data())->len =
      static_cast<uint32_t>(header.size() + data.size());
  uint16_t head = driver(1).add_chain({as_string(header), "placeholder"}, {64});
  VirtqDesc& data_desc = driver(1).desc(driver(1).desc(head).next);
  data_desc.addr = data_gpa;
  data_desc.len = static_cast<uint32_t>(data.size());
  auto used = submit(1, head);
  ASSERT_TRUE(used.has_value());
  Reply w = reply_of(1, head, *used);
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_EQ(w.as<fuse_write_out>().size, data.size());
  EXPECT_TRUE(read_host(root_ + "/f") == data);

  // And read back into one straddling buffer.
  std::memset(ram_ + (data_gpa - kGpaBase), 0, data.size());
  fuse_read_in rin{};
  rin.fh = fh;
  rin.size = static_cast<uint32_t>(data.size());
  uint16_t rhead = driver(1).add_chain({as_string(req(FUSE_READ, node).add(rin).finish())},
                                       {sizeof(fuse_out_header), 8});
  // The third descriptor (after the request and the reply header) is the
  // data buffer.
  VirtqDesc& out_desc = driver(1).desc(driver(1).desc(driver(1).desc(rhead).next).next);
  out_desc.addr = data_gpa;
  out_desc.len = static_cast<uint32_t>(data.size());
  auto rused = submit(1, rhead);
  ASSERT_TRUE(rused.has_value());
  EXPECT_EQ(rused->len, sizeof(fuse_out_header) + data.size());
  EXPECT_TRUE(std::string(ram_ + (data_gpa - kGpaBase), data.size()) == data);
}

TEST_P(StackTest, CallFdReplacedWhileTheRingRunsIsTheOneSignalled) {
  auto getattr = [&] {
    return fuse(1, req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish(),
                256);
  };
  ASSERT_TRUE(getattr().ok());
  // QEMU swaps the call fd while the guest runs.
  UniqueFd old_call = std::move(call_[1]);
  call_[1] = make_eventfd();
  ASSERT_EQ(frontend_->acked(Request::kSetVringCall, bytes(uint64_t{1}), {call_[1].get()}), 0u);
  ASSERT_TRUE(getattr().ok());  // submit() waits on the new call fd
  EXPECT_EQ(wait_eventfd(old_call.get(), 0), 0u);
}

TEST_P(StackTest, ClosingTheFrontendEndsServeCleanly) {
  frontend_->close();
  ASSERT_TRUE(wait_until([this] { return frontend_->served(); }, kTimeoutMs));
  EXPECT_TRUE(frontend_->wait_served().has_value());
}

// The guest's fd budget against the daemon's own fds: with RLIMIT_NOFILE
// just above what is open plus the budget plus a small reserve, a guest that
// looks up more files than the budget allows gets ENFILE, and the front-end
// can still hand the daemon new eventfds and a new memory region, which the
// daemon keeps using.
constexpr uint64_t kBudget = 24;
constexpr int kFiles = 64;

class StackBudgetTest : public StackTest {
 protected:
  uint64_t guest_fd_limit() const override { return kBudget; }
  void prepare_share() override {
    for (int i = 0; i < kFiles; ++i) test::write_host(root_ + "/f" + std::to_string(i), "x");
  }
  void TearDown() override {
    if (lowered_) ::setrlimit(RLIMIT_NOFILE, &saved_);
    StackTest::TearDown();
  }
  void lower_fd_limit(rlim_t reserve) {
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved_), 0);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(count_open_fds()) + kBudget + reserve;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    lowered_ = true;
  }
  rlimit saved_{};
  bool lowered_ = false;
};

TEST_P(StackBudgetTest, PastTheBudgetTheGuestGetsEnfileAndTheFrontEndStillWorks) {
  // Reserve: the front-end's new eventfds and memfd, the daemon's copies of
  // them and its per-request opens.
  ASSERT_NO_FATAL_FAILURE(lower_fd_limit(16));
  int found = 0, refused_errno = 0;
  for (int i = 0; i < kFiles; ++i) {
    Reply r = fuse(
        1, req(FUSE_LOOKUP, fuse::kRootInode.value()).add_name("f" + std::to_string(i)).finish(),
        sizeof(fuse_out_header) + sizeof(fuse_entry_out));
    if (r.ok()) {
      ++found;
    } else {
      refused_errno = r.error();
      break;
    }
  }
  EXPECT_EQ(found, static_cast<int>(kBudget));
  EXPECT_EQ(refused_errno, ENFILE);
  EXPECT_EQ(fs_->fd_budget_used(), kBudget);

  // A new call eventfd is taken and signalled.
  UniqueFd old_call = std::move(call_[1]);
  call_[1] = make_eventfd();
  ASSERT_TRUE(call_[1].valid()) << "the test's own eventfd: " << errno_name(errno);
  ASSERT_EQ(frontend_->acked(Request::kSetVringCall, bytes(uint64_t{1}), {call_[1].get()}), 0u);
  // A new memory region is mapped, and a request whose reply lands there is
  // served.
  constexpr uint64_t kExtraGpa = kGpaBase + kMemSize + (1 << 20);
  constexpr size_t kExtraSize = 1 << 20;
  UniqueFd extra(::memfd_create("guest-ram-2", MFD_CLOEXEC));
  ASSERT_TRUE(extra.valid());
  ASSERT_EQ(::ftruncate(extra.get(), kExtraSize), 0);
  vhost_user::SingleMemoryRegion reg{};
  reg.region = {kExtraGpa, kExtraSize, kUvaBase + kMemSize + (1 << 20), 0};
  ASSERT_EQ(frontend_->acked(Request::kAddMemReg, bytes(reg), {extra.get()}), 0u);
  void* map = ::mmap(nullptr, kExtraSize, PROT_READ | PROT_WRITE, MAP_SHARED, extra.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  Bytes getattr = req(FUSE_GETATTR, fuse::kRootInode.value()).add(fuse_getattr_in{}).finish();
  const uint16_t head = driver(1).add_chain({as_string(getattr)}, {256});
  // Point the reply buffer into the new region.
  driver(1).desc(driver(1).desc(head).next).addr = kExtraGpa;
  auto used = submit(1, head);
  ASSERT_TRUE(used.has_value());
  const auto* out = static_cast<const fuse_out_header*>(map);
  EXPECT_EQ(out->error, 0);
  EXPECT_EQ(out->len, sizeof(fuse_out_header) + sizeof(fuse_attr_out));
  ::munmap(map, kExtraSize);

  // What needs no new fd goes on: a LOOKUP of an inode already held.
  Reply again = fuse(1, req(FUSE_LOOKUP, fuse::kRootInode.value()).add_name("f0").finish(),
                     sizeof(fuse_out_header) + sizeof(fuse_entry_out));
  EXPECT_TRUE(again.ok()) << again.error();
}

INSTANTIATE_TEST_SUITE_P(Memory, StackBudgetTest, ::testing::Values(MemSetup::kAddMemReg),
                         [](const auto&) { return std::string("AddMemReg"); });

INSTANTIATE_TEST_SUITE_P(Memory, StackTest,
                         ::testing::Values(MemSetup::kAddMemReg, MemSetup::kSetMemTable,
                                           MemSetup::kTwoRegions),
                         [](const auto& info) {
                           switch (info.param) {
                             case MemSetup::kAddMemReg:
                               return "AddMemReg";
                             case MemSetup::kSetMemTable:
                               return "SetMemTable";
                             case MemSetup::kTwoRegions:
                               return "TwoRegions";
                           }
                           return "Unknown";
                         });

}  // namespace
}  // namespace vfsd::test
