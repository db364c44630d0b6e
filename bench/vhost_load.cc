// vhost_load: a protocol-level load generator for any vhost-user-fs daemon.
// It plays QEMU and a Linux guest's virtiofs driver at once: one memfd region
// of guest memory (SET_MEM_TABLE, as QEMU 7.2 sends it), split rings with
// EVENT_IDX, and FUSE requests shaped as the guest shapes them (header and
// arguments in one readable buffer, the data of a WRITE in a second; the
// reply header and the data of a READ in writable buffers of the guest's
// sizes). It keeps `--depth` requests in flight on one request queue for
// `--seconds`, then prints one line:
//
//   workload depth ops_per_s p50_us p99_us daemon_cpu_us_per_op errors
//
// The daemon's CPU time comes from /proc/PID/stat (utime + stime of every
// thread), so a speed-up bought with a spinning core shows as such.
//
// The shared directory must hold a regular file "f" of at least 1 MiB
// (bench/run_protocol.sh makes one).
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/fuse_codec.h"
#include "support/vhost_user_frontend.h"
#include "support/virtq_driver.h"
#include "vhost_user/message.h"

namespace {

using vfsd::UniqueFd;
using vfsd::test::Bytes;
using vfsd::test::Frontend;
using vfsd::test::RequestBuilder;
using vfsd::test::VirtqDesc;
using vfsd::test::VirtqDriver;
namespace vu = vfsd::vhost_user;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1200000000;
constexpr size_t kRingArea = 1 << 20;  // per queue: rings only
constexpr uint32_t kQueueSize = 1024;
constexpr uint32_t kDescsPerSlot = 4;  // request, write data, reply header, read data
constexpr size_t kRequestRoom = 4096;
constexpr uint64_t kRootNode = 1;

struct Options {
  std::string socket;
  std::string workload = "getattr";
  uint32_t depth = 1;
  double seconds = 3;
  pid_t daemon_pid = 0;
};

// One operation is one FUSE request, or a short sequence of them that a
// guest sends for one system call (open+close, create+close+unlink).
struct Workload {
  uint32_t opcode;        // of the first request
  uint32_t data_out = 0;  // WRITE payload
  uint32_t data_in = 0;   // READ payload room
  uint32_t reply_room = 0;
  uint32_t steps = 1;  // requests per operation
};

// The reply room of the multi-step operations: an entry and an open reply.
constexpr uint32_t kCreateReply = sizeof(fuse_entry_out) + sizeof(fuse_open_out);

Workload workload_named(const std::string& name) {
  if (name == "getattr") return {FUSE_GETATTR, 0, 0, sizeof(fuse_attr_out)};
  if (name == "lookup" || name == "lookup-miss") return {FUSE_LOOKUP, 0, 0, sizeof(fuse_entry_out)};
  if (name == "read-4k") return {FUSE_READ, 0, 4096, 0};
  if (name == "read-1m") return {FUSE_READ, 0, 1 << 20, 0};
  if (name == "write-4k") return {FUSE_WRITE, 4096, 0, sizeof(fuse_write_out)};
  if (name == "write-1m") return {FUSE_WRITE, 1 << 20, 0, sizeof(fuse_write_out)};
  // OPEN then RELEASE of its handle.
  if (name == "open") return {FUSE_OPEN, 0, 0, kCreateReply, 2};
  // CREATE, RELEASE, UNLINK, then the FORGET that gives the entry back.
  if (name == "create") return {FUSE_CREATE, 0, 0, kCreateReply, 4};
  throw std::runtime_error("unknown workload " + name);
}

// Where one slot is in its operation.
struct SlotState {
  uint32_t step = 0;
  uint64_t node = 0;  // from the OPEN/CREATE reply
  uint64_t fh = 0;
  uint64_t serial = 0;  // names of created files
};

UniqueFd connect_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
  }
  return fd;
}

// utime + stime of one process (all its threads), in microseconds.
double process_cpu_us(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The same for `pid` and every process below it: a sandboxed daemon serves
// from a child (the namespace sandbox forks), the launcher's pid is the parent.
double tree_cpu_us(pid_t pid) {
  if (pid == 0) return 0;
  double total = process_cpu_us(pid);
  std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) +
                         "/children");
  pid_t child = 0;
  while (children >> child) total += tree_cpu_us(child);
  return total;
}

// vring_need_event of the virtio spec: whether moving the index from `old`
// to `now` crosses the other side's event index.
bool need_event(uint16_t event, uint16_t now, uint16_t old) {
  return static_cast<uint16_t>(now - event - 1) < static_cast<uint16_t>(now - old);
}

class Guest {
 public:
  explicit Guest(const Options& options)
      : options_(options), load_(workload_named(options.workload)) {
    slot_bytes_ = kRequestRoom + load_.data_out + sizeof(fuse_out_header) +
                  std::max(load_.reply_room, load_.data_in);
    mem_size_ = 2 * kRingArea + options.depth * ((slot_bytes_ + 4095) & ~size_t{4095});
    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    if (!memfd_ || ::ftruncate(memfd_.get(), static_cast<off_t>(mem_size_)) != 0) {
      throw std::runtime_error("memfd");
    }
    void* map = ::mmap(nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (map == MAP_FAILED) throw std::runtime_error("mmap");
    ram_ = static_cast<char*>(map);
    hiprio_ = std::make_unique<VirtqDriver>(ram_, kGpaBase, kRingArea, 64);
    queue_ = std::make_unique<VirtqDriver>(ram_ + kRingArea, kGpaBase + kRingArea, kRingArea,
                                           kQueueSize);
    frontend_ = std::make_unique<Frontend>(connect_unix(options.socket));
    handshake();
  }
  ~Guest() {
    frontend_.reset();
    if (ram_ != nullptr) ::munmap(ram_, mem_size_);
  }

  // One request at depth 1 outside the measurement (INIT, set-up lookups).
  vfsd::test::Reply call(const Bytes& request, uint32_t reply_room) {
    char* req = slot_host(0);
    std::memcpy(req, request.data(), request.size());
    const uint64_t req_gpa = slot_gpa(0);
    const uint64_t reply_gpa = req_gpa + kRequestRoom;
    queue_->desc(0) =
        VirtqDesc{req_gpa, static_cast<uint32_t>(request.size()), vfsd::test::kVirtqDescFNext, 1};
    queue_->desc(1) = VirtqDesc{reply_gpa, reply_room, vfsd::test::kVirtqDescFWrite, 0};
    const uint16_t before = queue_->used_idx();
    queue_->set_used_event(before);
    queue_->publish(0);
    kick();
    while (queue_->used_idx() == before) {
      if (vfsd::test::wait_eventfd(call_[1].get(), 30000) == 0) {
        throw std::runtime_error("no reply within 30 s");
      }
    }
    auto [id, len] = queue_->used_elem(before);
    last_used_ = static_cast<uint16_t>(before + 1);
    std::string bytes(ram_ + (reply_gpa - kGpaBase), len);
    return vfsd::test::decode_reply(Bytes(bytes.begin(), bytes.end()), len);
  }

  void set_up() {
    auto init = call(vfsd::test::init_request(next_unique()), sizeof(fuse_out_header) + 256);
    if (!init.ok()) throw std::runtime_error("INIT: error " + std::to_string(init.error()));
    if (load_.opcode == FUSE_READ || load_.opcode == FUSE_WRITE || load_.opcode == FUSE_OPEN ||
        options_.workload == "lookup") {
      auto e = call(RequestBuilder(FUSE_LOOKUP, kRootNode, next_unique()).add_name("f").finish(),
                    sizeof(fuse_out_header) + sizeof(fuse_entry_out));
      if (!e.ok()) throw std::runtime_error("LOOKUP f: error " + std::to_string(e.error()));
      file_ = e.as<fuse_entry_out>().nodeid;
    }
    if (load_.opcode == FUSE_READ || load_.opcode == FUSE_WRITE) {
      fuse_open_in in{};
      in.flags = O_RDWR;
      auto o = call(RequestBuilder(FUSE_OPEN, file_, next_unique()).add(in).finish(),
                    sizeof(fuse_out_header) + sizeof(fuse_open_out));
      if (!o.ok()) throw std::runtime_error("OPEN f: error " + std::to_string(o.error()));
      fh_ = o.as<fuse_open_out>().fh;
    }
  }

  void run() {
    const uint32_t depth = options_.depth;
    std::vector<Clock::time_point> started(depth);
    slots_.assign(depth, SlotState{});
    std::vector<double> latencies_us;
    latencies_us.reserve(1 << 20);
    uint64_t done = 0, errors = 0;
    const uint16_t first_avail = queue_->avail_idx();
    uint16_t kicked_at = first_avail;
    for (uint32_t s = 0; s < depth; ++s) {
      submit(s);
      started[s] = Clock::now();
    }
    kick_if_needed(kicked_at);
    const double cpu_before = tree_cpu_us(options_.daemon_pid);
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration<double>(options_.seconds);
    uint32_t outstanding = depth;
    bool stopping = false;
    while (outstanding > 0) {
      queue_->set_used_event(last_used_);
      if (queue_->used_idx() == last_used_) {
        if (vfsd::test::wait_eventfd(call_[1].get(), 30000) == 0 &&
            queue_->used_idx() == last_used_) {
          throw std::runtime_error("no completion within 30 s");
        }
        continue;
      }
      const uint16_t used = queue_->used_idx();
      const auto now = Clock::now();
      if (now >= end) stopping = true;
      for (; last_used_ != used; ++last_used_) {
        auto [id, len] = queue_->used_elem(last_used_);
        const uint32_t slot = id / kDescsPerSlot;
        SlotState& st = slots_[slot];
        fuse_out_header out{};
        const char* reply = slot_host(slot) + reply_offset();
        std::memcpy(&out, reply, sizeof(out));
        const bool no_reply = load_.opcode == FUSE_CREATE && st.step == 3;  // FORGET
        // A miss is the answer a lookup-miss asks for.
        const bool expected_miss = options_.workload == "lookup-miss" && out.error == -ENOENT;
        if (!no_reply && (len < sizeof(out) || (out.error != 0 && !expected_miss))) ++errors;
        if (st.step == 0 && load_.steps > 1) {
          fuse_entry_out e{};
          fuse_open_out o{};
          if (load_.opcode == FUSE_OPEN) {
            std::memcpy(&o, reply + sizeof(out), sizeof(o));
            e.nodeid = file_;
          } else {
            std::memcpy(&e, reply + sizeof(out), sizeof(e));
            std::memcpy(&o, reply + sizeof(out) + sizeof(e), sizeof(o));
          }
          st.node = e.nodeid;
          st.fh = o.fh;
        }
        if (++st.step < load_.steps) {
          submit(slot);  // the operation's next request
          continue;
        }
        st.step = 0;
        ++st.serial;
        latencies_us.push_back(
            std::chrono::duration<double, std::micro>(now - started[slot]).count());
        ++done;
        if (stopping) {
          --outstanding;
        } else {
          submit(slot);
          started[slot] = now;
        }
      }
      kick_if_needed(kicked_at);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu_us = tree_cpu_us(options_.daemon_pid) - cpu_before;
    std::sort(latencies_us.begin(), latencies_us.end());
    auto pct = [&](double p) {
      if (latencies_us.empty()) return 0.0;
      return latencies_us[std::min(
          latencies_us.size() - 1,
          static_cast<size_t>(p * static_cast<double>(latencies_us.size())))];
    };
    std::printf("%s %u %.0f %.1f %.1f %.2f %llu\n", options_.workload.c_str(), depth,
                static_cast<double>(done) / seconds, pct(0.5), pct(0.99),
                done ? cpu_us / static_cast<double>(done) : 0.0,
                static_cast<unsigned long long>(errors));
  }

 private:
  uint64_t next_unique() { return unique_ += 2; }
  size_t slot_stride() const { return (slot_bytes_ + 4095) & ~size_t{4095}; }
  uint64_t slot_gpa(uint32_t slot) const { return kGpaBase + 2 * kRingArea + slot * slot_stride(); }
  char* slot_host(uint32_t slot) const { return ram_ + (slot_gpa(slot) - kGpaBase); }
  size_t reply_offset() const { return kRequestRoom + load_.data_out; }

  // READ or WRITE of `size` bytes at offset 0 of the open file.
  template <class In>
  RequestBuilder io_request(uint32_t opcode, uint32_t size) {
    In in{};
    in.fh = fh_;
    in.size = size;
    RequestBuilder b(opcode, file_, unique_);
    b.add(in);
    return b;
  }

  // The request of step `st.step` of a multi-step operation.
  RequestBuilder step_request(uint32_t slot, const SlotState& st) {
    const std::string name = "c-" + std::to_string(slot) + "-" + std::to_string(st.serial);
    RequestBuilder b(FUSE_FORGET, st.node, unique_);
    if (load_.opcode == FUSE_OPEN && st.step == 0) {
      fuse_open_in in{};
      in.flags = O_RDONLY;
      b = RequestBuilder(FUSE_OPEN, file_, unique_);
      b.add(in);
    } else if (st.step == 0) {
      fuse_create_in in{};
      in.flags = O_RDWR | O_CREAT | O_EXCL;
      in.mode = S_IFREG | 0644;
      b = RequestBuilder(FUSE_CREATE, kRootNode, unique_);
      b.add(in).add_name(name);
    } else if (st.step == 1) {
      fuse_release_in in{};
      in.fh = st.fh;
      b = RequestBuilder(FUSE_RELEASE, st.node, unique_);
      b.add(in);
    } else if (st.step == 2) {
      b = RequestBuilder(FUSE_UNLINK, kRootNode, unique_);
      b.add_name(name);
    } else {
      fuse_forget_in in{};
      in.nlookup = 1;
      b.add(in);
    }
    return b;
  }

  // Builds slot `slot`'s next request in its own buffers and publishes it.
  void submit(uint32_t slot) {
    RequestBuilder b(load_.opcode, kRootNode, next_unique());
    if (load_.steps > 1) {
      b = step_request(slot, slots_[slot]);
    } else if (load_.opcode == FUSE_GETATTR) {
      b.add(fuse_getattr_in{});
    } else if (load_.opcode == FUSE_LOOKUP) {
      b = RequestBuilder(FUSE_LOOKUP, kRootNode, unique_);
      b.add_name(options_.workload == "lookup" ? std::string("f")
                                               : "missing-" + std::to_string(unique_));
    } else if (load_.opcode == FUSE_READ) {
      b = io_request<fuse_read_in>(FUSE_READ, load_.data_in);
    } else {
      b = io_request<fuse_write_in>(FUSE_WRITE, load_.data_out);
    }
    Bytes request = b.finish();
    if (load_.opcode == FUSE_WRITE) {
      // The header claims the data that follows in the second buffer.
      fuse_in_header h{};
      std::memcpy(&h, request.data(), sizeof(h));
      h.len += load_.data_out;
      std::memcpy(request.data(), &h, sizeof(h));
    }
    char* base = slot_host(slot);
    std::memcpy(base, request.data(), request.size());
    const uint64_t gpa = slot_gpa(slot);
    const auto d0 = static_cast<uint16_t>(slot * kDescsPerSlot);
    std::vector<VirtqDesc> chain;
    chain.push_back({gpa, static_cast<uint32_t>(request.size()), 0, 0});
    if (load_.data_out) chain.push_back({gpa + kRequestRoom, load_.data_out, 0, 0});
    const uint64_t reply = gpa + reply_offset();
    chain.push_back({reply, sizeof(fuse_out_header), vfsd::test::kVirtqDescFWrite, 0});
    const uint32_t room = std::max(load_.reply_room, load_.data_in);
    if (room) {
      chain.push_back({reply + sizeof(fuse_out_header), room, vfsd::test::kVirtqDescFWrite, 0});
    }
    for (size_t i = 0; i < chain.size(); ++i) {
      if (i + 1 < chain.size()) {
        chain[i].flags |= vfsd::test::kVirtqDescFNext;
        chain[i].next = static_cast<uint16_t>(d0 + i + 1);
      }
      queue_->desc(static_cast<uint16_t>(d0 + i)) = chain[i];
    }
    queue_->publish(d0);
  }

  void kick() {
    const uint64_t one = 1;
    if (::write(kick_[1].get(), &one, sizeof one) != 8) throw std::runtime_error("kick");
  }
  // Kicks only when the device asked for it (EVENT_IDX avail_event).
  void kick_if_needed(uint16_t& kicked_at) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t now = queue_->avail_idx();
    if (now == kicked_at) return;
    if (need_event(queue_->avail_event(), now, kicked_at)) kick();
    kicked_at = now;
  }

  void handshake() {
    using vu::Request;
    Frontend& fe = *frontend_;
    constexpr uint64_t features =
        vu::kFeatureVersion1 | vu::kFeatureEventIdx | vu::kFeatureProtocolFeatures;
    if ((fe.call(Request::kGetFeatures).u64() & features) != features) {
      throw std::runtime_error("GET_FEATURES: no VERSION_1/EVENT_IDX/PROTOCOL_FEATURES");
    }
    const uint64_t protocol = fe.call(Request::kGetProtocolFeatures).u64() & vu::kProtocolReplyAck;
    if (!protocol) throw std::runtime_error("no REPLY_ACK");
    fe.send(Request::kSetProtocolFeatures, vfsd::test::bytes(protocol));
    if (fe.acked(Request::kSetOwner) != 0) throw std::runtime_error("SET_OWNER");
    if (fe.acked(Request::kSetFeatures, vfsd::test::bytes(features)) != 0) {
      throw std::runtime_error("SET_FEATURES");
    }
    struct {
      vu::MemoryTableHead head;
      vu::MemoryRegion region;
    } table{};
    table.head.nregions = 1;
    table.region = {kGpaBase, mem_size_, kUvaBase, 0};
    if (fe.acked(Request::kSetMemTable, vfsd::test::bytes(table), {memfd_.get()}) != 0) {
      throw std::runtime_error("SET_MEM_TABLE");
    }
    VirtqDriver* drivers[2] = {hiprio_.get(), queue_.get()};
    for (uint32_t q = 0; q < 2; ++q) {
      VirtqDriver& d = *drivers[q];
      if (fe.acked(Request::kSetVringNum, vfsd::test::bytes(vu::VringState{q, d.queue_size()})) !=
              0 ||
          fe.acked(Request::kSetVringBase, vfsd::test::bytes(vu::VringState{q, 0})) != 0) {
        throw std::runtime_error("SET_VRING_NUM/BASE");
      }
      vu::VringAddr addr{};
      addr.index = q;
      addr.desc_user_addr = uva(d.desc_gpa());
      addr.used_user_addr = uva(d.used_gpa());
      addr.avail_user_addr = uva(d.avail_gpa());
      if (fe.acked(Request::kSetVringAddr, vfsd::test::bytes(addr)) != 0) {
        throw std::runtime_error("SET_VRING_ADDR");
      }
      kick_[q] = vfsd::test::make_eventfd();
      call_[q] = vfsd::test::make_eventfd();
      if (fe.acked(Request::kSetVringKick, vfsd::test::bytes(uint64_t{q}), {kick_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringCall, vfsd::test::bytes(uint64_t{q}), {call_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringEnable, vfsd::test::bytes(vu::VringState{q, 1})) != 0) {
        throw std::runtime_error("SET_VRING_KICK/CALL/ENABLE");
      }
    }
  }
  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }

  Options options_;
  Workload load_;
  size_t slot_bytes_ = 0;
  size_t mem_size_ = 0;
  UniqueFd memfd_;
  char* ram_ = nullptr;
  std::unique_ptr<VirtqDriver> hiprio_, queue_;
  std::unique_ptr<Frontend> frontend_;
  UniqueFd kick_[2], call_[2];
  uint64_t unique_ = 0;
  uint16_t last_used_ = 0;
  uint64_t file_ = 0, fh_ = 0;
  std::vector<SlotState> slots_;
};

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--socket") {
      o.socket = value();
    } else if (a == "--workload") {
      o.workload = value();
    } else if (a == "--depth") {
      o.depth = static_cast<uint32_t>(std::stoul(value()));
    } else if (a == "--seconds") {
      o.seconds = std::stod(value());
    } else if (a == "--daemon-pid") {
      o.daemon_pid = static_cast<pid_t>(std::stol(value()));
    } else {
      std::fprintf(stderr,
                   "usage: vhost_load --socket PATH [--workload getattr|lookup|lookup-miss|"
                   "read-4k|read-1m|write-4k|write-1m|open|create] [--depth N] [--seconds S] "
                   "[--daemon-pid PID]\n");
      return 2;
    }
  }
  if (o.socket.empty() || o.depth == 0 || o.depth > kQueueSize / kDescsPerSlot) {
    std::fprintf(stderr, "vhost_load: --socket is needed and --depth is 1..%u\n",
                 kQueueSize / kDescsPerSlot);
    return 2;
  }
  Guest guest(o);
  guest.set_up();
  guest.run();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "vhost_load: %s\n", e.what());
  return 1;
}
