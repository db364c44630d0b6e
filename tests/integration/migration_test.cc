// Live migration through the whole stack in one process: a source daemon
// (vhost_user::Backend, fuse::Server, a real PassthroughFs, the app's
// MigrationHandler) serves a guest that opens and writes a file; the test,
// playing QEMU, turns dirty logging on, stops the rings, saves the state
// through SET_DEVICE_STATE_FD and hands it to a destination daemon on the
// same folder, which must go on serving the guest's node ids and file
// handles. What changed is checked on the host.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/config.h"
#include "app/fuse_request_handler.h"
#include "app/migration_handler.h"
#include "fuse/server.h"
#include "migration/state.h"
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

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1200000000;
constexpr size_t kMemSize = 16 << 20;
constexpr size_t kHiprioArea = 1 << 20;
constexpr uint32_t kQueueSize = 256;
constexpr int kTimeoutMs = 10000;
constexpr uint64_t kFeatures = vhost_user::kFeatureVersion1 | vhost_user::kFeatureEventIdx |
                               vhost_user::kFeatureProtocolFeatures;
constexpr uint64_t kProtocol = vhost_user::kProtocolMq | vhost_user::kProtocolReplyAck |
                               vhost_user::kProtocolLogShmfd | vhost_user::kProtocolDeviceState;
// The log covers guest memory up to its end: one bit per page.
constexpr size_t kLogBytes = (kGpaBase + kMemSize) / vhost_user::kLogPageSize / 8;

std::string as_string(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

// One daemon: filesystem, FUSE server, migration handler, back-end, and
// the test's end of its vhost-user socket.
struct Daemon {
  Daemon(const std::string& dir, const app::Config::Migration& options,
         passthrough::PassthroughConfig config = {}) {
    config.shared_dir = dir;
    auto created = passthrough::PassthroughFs::create(std::move(config));
    EXPECT_TRUE(created.has_value());
    fs = std::move(*created);
    server = std::make_unique<fuse::Server>(*fs, fuse::ServerOptions{});
    handler = std::make_unique<app::FuseRequestHandler>(*server);
    migration = std::make_unique<app::MigrationHandler>(*server, *fs, options);
    frontend = std::make_unique<FakeFrontend>(
        *handler, vhost_user::BackendOptions{.num_queues = 2, .device_state = migration.get()});
  }
  ~Daemon() {
    frontend.reset();
    migration.reset();
    handler.reset();
    server.reset();
    fs.reset();
  }
  std::unique_ptr<passthrough::PassthroughFs> fs;
  std::unique_ptr<fuse::Server> server;
  std::unique_ptr<app::FuseRequestHandler> handler;
  std::unique_ptr<app::MigrationHandler> migration;
  std::unique_ptr<FakeFrontend> frontend;
  UniqueFd kick[2], call[2];
};

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_umask_ = ::umask(0);
    char tmpl[] = "/tmp/vfsd-migration-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(memfd_.get(), kMemSize), 0);
    void* map = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    ASSERT_NE(map, MAP_FAILED);
    ram_ = static_cast<char*>(map);
    drivers_[0] = std::make_unique<VirtqDriver>(ram_, kGpaBase, kHiprioArea, kQueueSize);
    drivers_[1] = std::make_unique<VirtqDriver>(ram_ + kHiprioArea, kGpaBase + kHiprioArea,
                                                kMemSize - kHiprioArea, kQueueSize);
    logfd_.reset(::memfd_create("dirty-log", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(logfd_.get(), kLogBytes), 0);
    void* log = ::mmap(nullptr, kLogBytes, PROT_READ | PROT_WRITE, MAP_SHARED, logfd_.get(), 0);
    ASSERT_NE(log, MAP_FAILED);
    log_ = static_cast<uint8_t*>(log);
  }
  void TearDown() override {
    source_.reset();
    destination_.reset();
    ::munmap(ram_, kMemSize);
    ::munmap(log_, kLogBytes);
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
    ::umask(old_umask_);
  }

  // The connection set-up QEMU does for every back-end; the rings start
  // (from `bases`) only with `start_rings`, as on a destination QEMU starts
  // them after the state is loaded.
  void connect(Daemon& d, bool start_rings, const uint16_t bases[2] = nullptr) {
    FakeFrontend& fe = *d.frontend;
    ASSERT_EQ(fe.call(Request::kGetFeatures).u64() & vhost_user::kFeatureLogAll,
              vhost_user::kFeatureLogAll);
    ASSERT_EQ(fe.call(Request::kGetProtocolFeatures).u64() & kProtocol, kProtocol);
    fe.send(Request::kSetProtocolFeatures, bytes(kProtocol));
    ASSERT_EQ(fe.acked(Request::kSetOwner), 0u);
    ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kFeatures)), 0u);
    if (start_rings) this->start_rings(d, bases);
  }
  void start_rings(Daemon& d, const uint16_t bases[2] = nullptr) {
    FakeFrontend& fe = *d.frontend;
    struct {
      vhost_user::MemoryTableHead head;
      vhost_user::MemoryRegion region;
    } table{{1, 0}, {kGpaBase, kMemSize, kUvaBase, 0}};
    ASSERT_EQ(fe.acked(Request::kSetMemTable, bytes(table), {memfd_.get()}), 0u);
    for (uint32_t q = 0; q < 2; ++q) {
      VirtqDriver& drv = *drivers_[q];
      ASSERT_EQ(fe.acked(Request::kSetVringNum, bytes(vhost_user::VringState{q, kQueueSize})), 0u);
      const uint32_t base = bases ? bases[q] : 0;
      ASSERT_EQ(fe.acked(Request::kSetVringBase, bytes(vhost_user::VringState{q, base})), 0u);
      ASSERT_EQ(fe.acked(Request::kSetVringAddr, bytes(addr_of(q, false))), 0u);
      d.kick[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringKick, bytes(uint64_t{q}), {d.kick[q].get()}), 0u);
      d.call[q] = make_eventfd();
      ASSERT_EQ(fe.acked(Request::kSetVringCall, bytes(uint64_t{q}), {d.call[q].get()}), 0u);
      ASSERT_EQ(fe.acked(Request::kSetVringEnable, bytes(vhost_user::VringState{q, 1})), 0u);
      (void)drv;
    }
  }
  vhost_user::VringAddr addr_of(uint32_t q, bool log) const {
    VirtqDriver& drv = *drivers_[q];
    vhost_user::VringAddr addr{};
    addr.index = q;
    addr.flags = log ? vhost_user::kVringFlagLog : 0;
    addr.desc_user_addr = kUvaBase + (drv.desc_gpa() - kGpaBase);
    addr.used_user_addr = kUvaBase + (drv.used_gpa() - kGpaBase);
    addr.avail_user_addr = kUvaBase + (drv.avail_gpa() - kGpaBase);
    addr.log_guest_addr = drv.used_gpa();
    return addr;
  }
  // QEMU's order when a migration begins: the log, LOG_ALL, then each
  // ring's log flag, all while the rings run.
  void start_logging(Daemon& d) {
    FakeFrontend& fe = *d.frontend;
    vhost_user::LogRegion region{kLogBytes, 0};
    auto echo = fe.call(Request::kSetLogBase, bytes(region), {logfd_.get()});
    ASSERT_EQ(echo.payload.size(), sizeof region);
    ASSERT_EQ(fe.acked(Request::kSetFeatures, bytes(kFeatures | vhost_user::kFeatureLogAll)), 0u);
    for (uint32_t q = 0; q < 2; ++q)
      ASSERT_EQ(fe.acked(Request::kSetVringAddr, bytes(addr_of(q, true))), 0u);
  }
  // The switch-over on the source: stop every ring, then save. Returns the
  // state bytes, or nullopt when the back-end refused (the reply's error).
  std::optional<std::vector<uint8_t>> stop_and_save(Daemon& d, uint16_t bases[2]) {
    FakeFrontend& fe = *d.frontend;
    for (uint32_t q = 0; q < 2; ++q)
      bases[q] = static_cast<uint16_t>(
          fe.call(Request::kGetVringBase, bytes(vhost_user::VringState{q, 0})).state().num);
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd read_end(p[0]), write_end(p[1]);
    const uint64_t reply =
        fe.call(Request::kSetDeviceStateFd,
                bytes(vhost_user::DeviceStateTransfer{vhost_user::kStateSave, 0}),
                {write_end.get()})
            .u64();
    write_end.reset();
    EXPECT_TRUE(reply & vhost_user::kStateReplyNoFd) << reply;
    if (reply & 0xff) return std::nullopt;
    std::vector<uint8_t> state;
    char buf[4096];
    for (ssize_t n; (n = ::read(read_end.get(), buf, sizeof buf)) > 0;)
      state.insert(state.end(), buf, buf + n);
    EXPECT_EQ(fe.call(Request::kCheckDeviceState).u64(), 0u);
    return state;
  }
  // The destination's load; returns CHECK_DEVICE_STATE's answer.
  uint64_t load(Daemon& d, const std::vector<uint8_t>& state) {
    FakeFrontend& fe = *d.frontend;
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd read_end(p[0]), write_end(p[1]);
    const uint64_t reply =
        fe.call(Request::kSetDeviceStateFd,
                bytes(vhost_user::DeviceStateTransfer{vhost_user::kStateLoad, 0}), {read_end.get()})
            .u64();
    read_end.reset();
    EXPECT_EQ(reply, vhost_user::kStateReplyNoFd);
    size_t done = 0;
    while (done < state.size()) {
      const ssize_t n = ::write(write_end.get(), state.data() + done, state.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    write_end.reset();
    return fe.call(Request::kCheckDeviceState).u64();
  }

  // A destination daemon, connected with its rings not yet started.
  void new_destination(const app::Config::Migration& options = {}) {
    destination_ = std::make_unique<Daemon>(root_, options);
    ASSERT_NO_FATAL_FAILURE(connect(*destination_, false));
  }
  // The rest of a successful switch-over: the destination loads `state`, the
  // source's QEMU quits, the destination's rings start at `bases`.
  void switch_to_destination(const std::vector<uint8_t>& state, const uint16_t bases[2],
                             const app::Config::Migration& options = {}) {
    ASSERT_NO_FATAL_FAILURE(new_destination(options));
    ASSERT_EQ(load(*destination_, state), 0u);
    source_.reset();
    ASSERT_NO_FATAL_FAILURE(start_rings(*destination_, bases));
  }
  // Whether the saved state describes inode `node` by `path`.
  static bool state_names(const std::vector<uint8_t>& state, uint64_t node,
                          const std::string& path) {
    auto decoded = migration::decode(state);
    EXPECT_TRUE(decoded.has_value()) << decoded.error().message;
    if (!decoded) return false;
    for (const auto& rec : decoded->inodes)
      if (rec.id == node && rec.path == path) return true;
    return false;
  }

  Reply fuse(Daemon& d, const Bytes& request, uint32_t reply_room = 4096) {
    VirtqDriver& drv = *drivers_[1];
    const uint16_t head = drv.add_chain({as_string(request)}, {reply_room});
    const uint16_t before = drv.used_idx();
    drv.set_used_event(before);
    drv.publish(head);
    const uint64_t one = 1;
    EXPECT_EQ(::write(d.kick[1].get(), &one, sizeof one), 8);
    if (wait_eventfd(d.call[1].get(), kTimeoutMs) == 0) {
      ADD_FAILURE() << "no call for head " << head;
      return Reply{};
    }
    auto [id, len] = drv.used_elem(before);
    EXPECT_EQ(id, head);
    std::string out;
    const VirtqDesc first = drv.desc(head);
    const VirtqDesc second = drv.desc(first.next);
    out = drv.read(second.addr, len);
    last_reply_gpa_ = second.addr;
    return decode_reply(Bytes(out.begin(), out.end()), len);
  }
  RequestBuilder req(uint32_t opcode, uint64_t nodeid) {
    return RequestBuilder(opcode, nodeid, unique_ += 2);
  }
  Reply write(Daemon& d, uint64_t node, uint64_t fh, uint64_t offset, const std::string& data) {
    fuse_write_in in{};
    in.fh = fh;
    in.offset = offset;
    in.size = static_cast<uint32_t>(data.size());
    return fuse(d, req(FUSE_WRITE, node).add(in).add_bytes(data).finish());
  }
  Reply read(Daemon& d, uint64_t node, uint64_t fh, uint32_t size) {
    fuse_read_in in{};
    in.fh = fh;
    in.size = size;
    return fuse(d, req(FUSE_READ, node).add(in).finish(), sizeof(fuse_out_header) + size);
  }
  // INIT, then CREATE of `name` (O_RDWR): the node id and the handle.
  std::pair<uint64_t, uint64_t> mount_and_create(Daemon& d, const std::string& name) {
    Reply init = fuse(d, init_request(unique_ += 2), sizeof(fuse_out_header) + 256);
    EXPECT_TRUE(init.ok()) << init.error();
    fuse_create_in in{};
    in.flags = O_RDWR;
    in.mode = S_IFREG | 0644;
    Reply c = fuse(d, req(FUSE_CREATE, 1).add(in).add_name(name).finish());
    EXPECT_TRUE(c.ok()) << c.error();
    if (!c.ok()) return {0, 0};
    auto entry = c.as<fuse_entry_out>();
    fuse_open_out open{};
    std::memcpy(&open, c.payload.data() + sizeof(fuse_entry_out), sizeof open);
    return {entry.nodeid, open.fh};
  }
  bool page_marked(uint64_t gpa) const {
    const uint64_t page = gpa / vhost_user::kLogPageSize;
    return (log_[page / 8] >> (page % 8)) & 1;
  }
  size_t marked_pages() const {
    size_t n = 0;
    for (size_t i = 0; i < kLogBytes; ++i) n += __builtin_popcount(log_[i]);
    return n;
  }
  // A source with one file written through an open handle, logging on.
  void source_with_open_file(const app::Config::Migration& options,
                             passthrough::PassthroughConfig config = {}) {
    source_ = std::make_unique<Daemon>(root_, options, config);
    ASSERT_NO_FATAL_FAILURE(connect(*source_, true));
    std::tie(node_, fh_) = mount_and_create(*source_, "f");
    ASSERT_NE(node_, 0u);
    ASSERT_TRUE(write(*source_, node_, fh_, 0, "before|").ok());
    EXPECT_EQ(marked_pages(), 0u) << "nothing is logged before LOG_ALL";
    ASSERT_NO_FATAL_FAILURE(start_logging(*source_));
  }

  mode_t old_umask_ = 0;
  std::string root_;
  UniqueFd memfd_, logfd_;
  char* ram_ = nullptr;
  uint8_t* log_ = nullptr;
  std::unique_ptr<VirtqDriver> drivers_[2];
  std::unique_ptr<Daemon> source_, destination_;
  uint64_t unique_ = 0, node_ = 0, fh_ = 0, last_reply_gpa_ = 0;
};

TEST_F(MigrationTest, TheGuestWritesThroughItsOpenHandleAcrossTheSwitch) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  ASSERT_TRUE(write(*source_, node_, fh_, 7, "during|").ok());
  // The reply went into guest memory: its page and the used ring are marked.
  EXPECT_TRUE(page_marked(last_reply_gpa_));
  EXPECT_TRUE(page_marked(drivers_[1]->used_gpa()));
  const uint64_t lookups = source_->fs->lookup_count(fuse::InodeId{node_});

  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases));

  EXPECT_EQ(destination_->fs->lookup_count(fuse::InodeId{node_}), lookups);
  ASSERT_TRUE(write(*destination_, node_, fh_, 14, "after").ok());
  Reply r = read(*destination_, node_, fh_, 64);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(as_string(r.payload), "before|during|after");
  EXPECT_EQ(read_host(root_ + "/f"), "before|during|after");
  // A new lookup gets a new node id, not one the guest already holds.
  ::close(::open((root_ + "/g").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  Reply g = fuse(*destination_, req(FUSE_LOOKUP, 1).add_name("g").finish());
  ASSERT_TRUE(g.ok()) << g.error();
  EXPECT_GT(g.as<fuse_entry_out>().nodeid, node_);
}

TEST_F(MigrationTest, ASecondMigrationRightAfterTheFirstWorks) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases));
  ASSERT_TRUE(write(*destination_, node_, fh_, 7, "one|").ok());
  // ... and on again, to a third daemon.
  ASSERT_NO_FATAL_FAILURE(start_logging(*destination_));
  auto again = stop_and_save(*destination_, bases);
  ASSERT_TRUE(again.has_value());
  source_ = std::make_unique<Daemon>(root_, app::Config::Migration{});
  ASSERT_NO_FATAL_FAILURE(connect(*source_, false));
  ASSERT_EQ(load(*source_, *again), 0u);
  destination_.reset();
  ASSERT_NO_FATAL_FAILURE(start_rings(*source_, bases));
  ASSERT_TRUE(write(*source_, node_, fh_, 11, "two").ok());
  EXPECT_EQ(read_host(root_ + "/f"), "before|one|two");
}

TEST_F(MigrationTest, FileHandlesModeCarriesAFileTheHostUnlinked) {
  app::Config::Migration options;
  options.mode = "file-handles";
  ASSERT_NO_FATAL_FAILURE(source_with_open_file(options));
  ASSERT_EQ(::unlink((root_ + "/f").c_str()), 0);
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  // Once the source is gone, the destination's fd keeps the file alive.
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases, options));
  ASSERT_TRUE(write(*destination_, node_, fh_, 7, "after").ok());
  Reply r = read(*destination_, node_, fh_, 64);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(as_string(r.payload), "before|after");
}

TEST_F(MigrationTest, FindPathsFollowsARenameOnTheHost) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  ASSERT_EQ(::rename((root_ + "/f").c_str(), (root_ + "/sub/moved").c_str()), 0);
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  EXPECT_TRUE(state_names(*state, node_, "sub/moved"))
      << "the source sends the inode's current path";
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases));
  ASSERT_TRUE(write(*destination_, node_, fh_, 7, "after").ok());
  EXPECT_EQ(read_host(root_ + "/sub/moved"), "before|after");
}

// Preparation finds the paths while the guest runs; the switch-over
// confirms each and finds again one that moved after preparation.
TEST_F(MigrationTest, PreparedPathsAreConfirmedAtTheSwitchOver) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  ASSERT_TRUE(wait_until([&] { return source_->fs->prepared_path_count() == 1; }, kTimeoutMs))
      << "LOG_ALL starts the preparation";
  ASSERT_EQ(::rename((root_ + "/f").c_str(), (root_ + "/g").c_str()), 0);  // behind our back
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(source_->fs->prepared_path_count(), 0u) << "used up by the save";
  EXPECT_TRUE(state_names(*state, node_, "g"))
      << "the prepared 'f' failed its confirmation; 'g' was found";
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases));
  ASSERT_TRUE(write(*destination_, node_, fh_, 7, "after").ok());
  EXPECT_EQ(read_host(root_ + "/g"), "before|after");
}

TEST_F(MigrationTest, DroppingLogAllEndsThePreparation) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  ASSERT_TRUE(wait_until([&] { return source_->fs->prepared_path_count() == 1; }, kTimeoutMs));
  ASSERT_EQ(source_->frontend->acked(Request::kSetFeatures, bytes(kFeatures)), 0u);
  EXPECT_EQ(source_->fs->prepared_path_count(), 0u) << "a cancelled migration keeps nothing";
  EXPECT_TRUE(write(*source_, node_, fh_, 7, "on").ok());
}

// Between save and load another file takes the name: only
// --migration-verify-handles tells (the destination would serve the wrong
// file as the guest's).
TEST_F(MigrationTest, VerifyHandlesRefusesAPathThatNowNamesAnotherFile) {
  app::Config::Migration options;
  options.verify_handles = true;
  ASSERT_NO_FATAL_FAILURE(source_with_open_file(options));
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  // The source still holds the old file open, so its inode number stays taken.
  ASSERT_EQ(::unlink((root_ + "/f").c_str()), 0);
  write_host(root_ + "/f", "another file");
  ASSERT_NO_FATAL_FAILURE(new_destination(options));
  EXPECT_EQ(load(*destination_, *state), 1u) << "the file handle differs";
  EXPECT_EQ(destination_->fs->inode_count(), 1u);
  // Without the option the same state loads: the check is the option's doing.
  ASSERT_NO_FATAL_FAILURE(new_destination());
  EXPECT_EQ(load(*destination_, *state), 0u);
}

// The fd's path went (unlinked), but the file lives on under another name:
// the search of the shared directory finds it.
TEST_F(MigrationTest, FindPathsSearchesTheShareForAFileKnownUnderAnotherName) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  ASSERT_EQ(::mkdir((root_ + "/deep").c_str(), 0755), 0);
  ASSERT_EQ(::link((root_ + "/f").c_str(), (root_ + "/deep/other").c_str()), 0);
  ASSERT_EQ(::unlink((root_ + "/f").c_str()), 0);
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  EXPECT_TRUE(state_names(*state, node_, "deep/other")) << "found by the search";
  ASSERT_NO_FATAL_FAILURE(switch_to_destination(*state, bases));
  ASSERT_TRUE(write(*destination_, node_, fh_, 7, "after").ok());
  EXPECT_EQ(read_host(root_ + "/deep/other"), "before|after");
}

// find-paths cannot describe a file without a name: the destination's
// --migration-on-error decides.
TEST_F(MigrationTest, AnUnlinkedFileAbortsTheLoadOrAnswersErrors) {
  for (const char* on_error : {"abort", "guest-error"}) {
    SCOPED_TRACE(on_error);
    TearDown();
    SetUp();
    ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
    Reply dir =
        fuse(*source_, req(FUSE_MKDIR, 1).add(fuse_mkdir_in{0755, 0}).add_name("d").finish());
    ASSERT_TRUE(dir.ok()) << dir.error();
    const uint64_t dir_node = dir.as<fuse_entry_out>().nodeid;
    ASSERT_EQ(::unlink((root_ + "/f").c_str()), 0);
    uint16_t bases[2];
    auto state = stop_and_save(*source_, bases);
    ASSERT_TRUE(state.has_value());
    app::Config::Migration options;
    options.on_error = on_error;
    ASSERT_NO_FATAL_FAILURE(new_destination(options));
    const uint64_t check = load(*destination_, *state);
    if (std::string(on_error) == "abort") {
      EXPECT_EQ(check, 1u) << "the migration fails; the source goes on";
      EXPECT_EQ(destination_->fs->inode_count(), 1u) << "nothing half-loaded stays";
      EXPECT_FALSE(destination_->server->initialized());
      continue;
    }
    EXPECT_EQ(check, 0u);
    source_.reset();
    ASSERT_NO_FATAL_FAILURE(start_rings(*destination_, bases));
    EXPECT_FALSE(write(*destination_, node_, fh_, 7, "lost").ok()) << "the invalid inode errs";
    fuse_getattr_in in{};
    EXPECT_TRUE(fuse(*destination_, req(FUSE_GETATTR, dir_node).add(in).finish()).ok())
        << "the other inodes serve on";
  }
}

TEST_F(MigrationTest, ATruncatedOrForeignStateFailsTheCheckAndLoadsNothing) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  uint16_t bases[2];
  auto state = stop_and_save(*source_, bases);
  ASSERT_TRUE(state.has_value());
  for (size_t keep : {size_t{0}, size_t{10}, state->size() / 2, state->size() - 1}) {
    ASSERT_NO_FATAL_FAILURE(new_destination());
    EXPECT_EQ(load(*destination_, std::vector<uint8_t>(state->begin(), state->begin() + keep)), 1u)
        << keep << " of " << state->size() << " bytes";
    EXPECT_EQ(destination_->fs->inode_count(), 1u);
    EXPECT_FALSE(destination_->server->initialized());
  }
  std::vector<uint8_t> foreign(state->size(), 'x');
  ASSERT_NO_FATAL_FAILURE(new_destination());
  EXPECT_EQ(load(*destination_, foreign), 1u);
}

TEST_F(MigrationTest, AHeldLockRefusesTheSave) {
  passthrough::PassthroughConfig config;
  config.posix_lock = true;
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}, config));
  fuse_lk_in lk{};
  lk.fh = fh_;
  lk.owner = 42;
  lk.lk.type = F_WRLCK;
  lk.lk.end = 10;
  Reply r = fuse(*source_, req(FUSE_SETLK, node_).add(lk).finish());
  ASSERT_TRUE(r.ok()) << r.error();
  uint16_t bases[2];
  EXPECT_FALSE(stop_and_save(*source_, bases).has_value());
  // Unlocked, the same source migrates.
  lk.lk.type = F_UNLCK;
  ASSERT_NO_FATAL_FAILURE(start_rings(*source_, bases));
  ASSERT_TRUE(fuse(*source_, req(FUSE_SETLK, node_).add(lk).finish()).ok());
  EXPECT_TRUE(stop_and_save(*source_, bases).has_value());
}

TEST_F(MigrationTest, StateTransferIsRefusedWhileARingRuns) {
  ASSERT_NO_FATAL_FAILURE(source_with_open_file({}));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  const uint64_t reply =
      source_->frontend
          ->call(Request::kSetDeviceStateFd,
                 bytes(vhost_user::DeviceStateTransfer{vhost_user::kStateSave, 0}),
                 {write_end.get()})
          .u64();
  EXPECT_EQ(reply, vhost_user::kStateReplyError | vhost_user::kStateReplyNoFd);
  // And the guest goes on.
  EXPECT_TRUE(write(*source_, node_, fh_, 7, "on").ok());
}

}  // namespace
}  // namespace vfsd::test
