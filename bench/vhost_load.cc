// vhost_load: a protocol-level load generator for any vhost-user-fs daemon.
// It plays QEMU and a Linux guest's virtiofs driver at once: one memfd region
// of guest memory (SET_MEM_TABLE, as QEMU 7.2 sends it), split rings with
// EVENT_IDX, and FUSE requests shaped as the guest shapes them (header and
// arguments in one readable buffer, the data of a WRITE in a second; the
// reply header and the data of a READ in writable buffers of the guest's
// sizes; FORGET on the hiprio queue, one request per forgotten inode).
//
// `--queues N` request queues, each driven by its own client thread that
// keeps `--depth` requests in flight for `--seconds`; then one line:
//
//   workload depth queues wait ops_per_s p50_us p99_us daemon_cpu_us_per_op errors
//
// (ops/s summed over the queues, latencies of all queues merged). `--wait
// block` sleeps on the call eventfd between completions, as an idle guest
// vCPU does; `--wait poll` spins on the used index instead (a busy vCPU, a
// polling driver), still setting used_event as the driver does, so the
// daemon signals exactly as often in both modes.
//
// The daemon's CPU time comes from /proc/PID/stat (utime + stime of every
// thread, and of its children), so a speed-up bought with a spinning core
// shows as such. `--client-cpu` also prints the generator's own CPU time per
// operation to stderr.
//
// Requests are built once per slot and per step before the measurement;
// while it runs the generator only patches the fields that change (unique,
// a file handle, a nodeid, a directory offset, the digits of a new name),
// so no heap allocation and no formatting happens per request.
//
// The shared directory must hold a regular file "f" of at least 1 MiB and,
// for readdirplus, a directory "d" (bench/run_protocol.sh makes both).
//
// Exit status: 0 measured, 1 failed, 2 usage, 3 the daemon offers fewer
// request queues than --queues asks for.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
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
using vfsd::test::kVirtqDescFNext;
using vfsd::test::kVirtqDescFWrite;

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint64_t kUvaBase = 0x7f1200000000;
constexpr size_t kRingArea = 1 << 20;  // per queue: rings (and the hiprio FORGET buffers)
constexpr uint32_t kQueueSize = 1024;
constexpr uint32_t kHiprioSize = 128;  // QEMU's vhost-user-fs hiprio queue size
constexpr uint32_t kDescsPerSlot = 4;  // request, write data, reply header, reply body
constexpr uint32_t kMaxDepth = kQueueSize / kDescsPerSlot;
constexpr size_t kRequestRoom = 4096;  // the request images of a slot's steps
constexpr size_t kStepRoom = 256;      // one step's request image
// lookup-miss asks for this many missing names per queue, over and over: a
// probe of a name the host has seen missing before, as PATH, include-path
// and module searches are. A new name every time made the host's dentry
// cache grow by a million negative entries per second of run, names that
// the next daemon's run then found made (the names restart with each run):
// the same binary measured 707k/s after a dentry drop and 986k/s after a
// run of its own. bench/host_limit cycles through the same names.
constexpr uint64_t kMissNames = 4096;
// The reply header has a page of its own, so that the body starts on a page
// boundary, as a Linux guest's read pages do. (A body right after the
// 16-byte header made every daemon's 1 MiB read copy to a misaligned
// destination, which this machine's kernel copy runs several times slower.)
constexpr size_t kReplyHeaderRoom = 4096;
constexpr size_t kMaxSteps = kRequestRoom / kStepRoom;
constexpr uint64_t kRootNode = 1;
constexpr uint32_t kMaxQueues = 8;
constexpr uint32_t kReaddirBuffer = 4096;  // the guest reads a directory one page at a time
constexpr int kExitTooFewQueues = 3;

struct Options {
  std::string socket;
  std::string workload = "getattr";
  uint32_t depth = 1;
  uint32_t queues = 1;
  double seconds = 3;
  pid_t daemon_pid = 0;
  bool poll = false;
  bool client_cpu = false;
};

enum class Kind { kGetattr, kLookup, kLookupMiss, kRead, kWrite, kOpen, kCreate, kReaddirplus };

struct Workload {
  Kind kind;
  uint32_t size = 0;  // READ / WRITE payload
};

Workload workload_named(const std::string& name) {
  if (name == "getattr") return {Kind::kGetattr};
  if (name == "lookup") return {Kind::kLookup};
  if (name == "lookup-miss") return {Kind::kLookupMiss};
  if (name == "read-4k") return {Kind::kRead, 4096};
  if (name == "read-1m") return {Kind::kRead, 1 << 20};
  if (name == "write-4k") return {Kind::kWrite, 4096};
  if (name == "write-1m") return {Kind::kWrite, 1 << 20};
  // OPEN then RELEASE of its handle.
  if (name == "open") return {Kind::kOpen};
  // CREATE, RELEASE, UNLINK; then the FORGET of the entry on the hiprio queue.
  if (name == "create") return {Kind::kCreate};
  // OPENDIR, READDIRPLUS of one page until the end, RELEASEDIR; a FORGET on
  // the hiprio queue for every entry that came back with a nodeid.
  if (name == "readdirplus") return {Kind::kReaddirplus};
  throw std::runtime_error("unknown workload " + name);
}

template <class T>
void put(char* p, const T& v) {
  std::memcpy(p, &v, sizeof v);
}
template <class T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Writes `v` as exactly `width` decimal digits (the name keeps its length,
// so the request image around it stays valid).
void put_digits(char* p, int width, uint64_t v) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// One request of an operation, as built before the run, and what the
// generator patches into it each time it is sent.
struct Step {
  uint32_t opcode = 0;
  uint32_t data_out = 0;    // WRITE payload (its own readable buffer)
  uint32_t reply_body = 0;  // the out arguments, one writable buffer
  Bytes image;              // header + in arguments, built once per slot
  int name_at = -1;         // where the digits of a fresh name start
  int name_digits = 0;
  int fh_at = -1;           // fh of the open handle (RELEASE, READDIRPLUS)
  int offset_at = -1;       // directory offset (READDIRPLUS)
  bool patch_node = false;  // nodeid from the first step's reply (RELEASE after CREATE)
};

// Latencies in 0.1 µs units: exact below 409.6 µs, then 2048 buckets per
// power of two (0.05 % wide); fixed size, so recording never allocates.
class Histogram {
 public:
  static constexpr size_t kLinear = 4096;
  static constexpr size_t kBuckets = kLinear + 40 * 2048;
  Histogram() : counts_(kBuckets, 0) {}
  void add(double us) {
    const auto v = static_cast<uint64_t>(us * 10);
    ++counts_[index(v)];
    ++total_;
  }
  void merge(const Histogram& o) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
  }
  double percentile(double p) const {
    if (total_ == 0) return 0;
    const auto rank = std::min(total_ - 1, static_cast<uint64_t>(p * static_cast<double>(total_)));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen > rank) return static_cast<double>(lower_bound(i)) / 10;
    }
    return 0;
  }

 private:
  static size_t index(uint64_t v) {
    if (v < kLinear) return v;
    const int shift = 63 - __builtin_clzll(v) - 11;  // v >> shift is in [2048, 4096)
    return std::min(kBuckets - 1, kLinear + static_cast<size_t>(shift - 1) * 2048 +
                                      static_cast<size_t>((v >> shift) - 2048));
  }
  static uint64_t lower_bound(size_t i) {
    if (i < kLinear) return i;
    const size_t shift = (i - kLinear) / 2048 + 1;
    return (((i - kLinear) % 2048) + 2048) << shift;
  }
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
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

double thread_cpu_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}
double thread_user_us() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec) * 1e6 + static_cast<double>(ru.ru_utime.tv_usec);
}

// vring_need_event of the virtio spec: whether moving the index from `old`
// to `now` crosses the other side's event index.
bool need_event(uint16_t event, uint16_t now, uint16_t old) {
  return static_cast<uint16_t>(now - event - 1) < static_cast<uint16_t>(now - old);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void kick(int fd) {
  const uint64_t one = 1;
  if (::write(fd, &one, sizeof one) != 8) throw std::runtime_error("kick");
}

// Waits until the device moved the used index past `last` (block: on the
// call eventfd; poll: spinning); throws after 30 s without progress.
uint16_t wait_used(VirtqDriver& q, int call_fd, uint16_t last, bool poll) {
  q.set_used_event(last);
  if (poll) {
    uint64_t spins = 0;
    Clock::time_point since{};
    for (;;) {
      const uint16_t used = q.used_idx();
      if (used != last) return used;
      cpu_relax();
      if ((++spins & 0xffff) == 0) {
        const auto now = Clock::now();
        if (spins == 0x10000) {
          since = now;
        } else if (now - since > std::chrono::seconds(30)) {
          throw std::runtime_error("no completion within 30 s");
        }
      }
    }
  }
  for (;;) {
    const uint16_t used = q.used_idx();
    if (used != last) return used;
    if (vfsd::test::wait_eventfd(call_fd, 30000) == 0 && q.used_idx() == last) {
      throw std::runtime_error("no completion within 30 s");
    }
  }
}

// The hiprio queue: FORGETs, one per request, one readable buffer each
// (fuse_in_header + fuse_forget_in, as the guest's virtio_fs_forget), no
// reply. Shared by the client threads, as the guest shares it.
class ForgetQueue {
 public:
  ForgetQueue(VirtqDriver& q, int kick_fd, int call_fd, bool poll)
      : q_(q), kick_(kick_fd), call_(call_fd), poll_(poll) {
    gpa_ = q_.alloc(kHiprioSize * kBufferSize);
    buffers_ = q_.host(gpa_);
    for (uint32_t i = 0; i < kHiprioSize; ++i) free_.push_back(static_cast<uint16_t>(i));
  }

  void forget(uint64_t node, uint64_t nlookup) {
    std::lock_guard lock(mu_);
    if (free_.empty()) reclaim(true);
    const uint16_t id = free_.back();
    free_.pop_back();
    char* b = buffers_ + id * kBufferSize;
    fuse_in_header h{};
    h.len = sizeof(fuse_in_header) + sizeof(fuse_forget_in);
    h.opcode = FUSE_FORGET;
    h.unique = (unique_ += 2);
    h.nodeid = node;
    fuse_forget_in in{};
    in.nlookup = nlookup;
    put(b, h);
    put(b + sizeof h, in);
    q_.desc(id) = VirtqDesc{gpa_ + id * kBufferSize, h.len, 0, 0};
    q_.publish(id);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t now = q_.avail_idx();
    if (need_event(q_.avail_event(), now, kicked_at_)) kick(kick_);
    kicked_at_ = now;
    ++sent_;
  }

  // Waits until the device consumed every FORGET sent.
  void drain() {
    std::lock_guard lock(mu_);
    while (free_.size() < kHiprioSize) reclaim(true);
  }
  uint64_t sent() const { return sent_; }

 private:
  static constexpr size_t kBufferSize = 64;

  // Takes back the descriptors the device used; waits for one when `wait`
  // and none is there yet.
  void reclaim(bool wait) {
    uint16_t used = q_.used_idx();
    if (used == last_used_ && wait) used = wait_used(q_, call_, last_used_, poll_);
    for (; last_used_ != used; ++last_used_) {
      free_.push_back(static_cast<uint16_t>(q_.used_elem(last_used_).first));
    }
    q_.set_used_event(last_used_);
  }

  std::mutex mu_;
  VirtqDriver& q_;
  int kick_, call_;
  bool poll_;
  uint64_t gpa_ = 0;
  char* buffers_ = nullptr;
  std::vector<uint16_t> free_;
  uint16_t last_used_ = 0, kicked_at_ = 0;
  uint64_t unique_ = 1ull << 62;
  uint64_t sent_ = 0;
};

// What the set-up found, shared (read-only) by the client threads.
struct Shared {
  Options options;
  Workload load;
  uint64_t file = 0, fh = 0, dir = 0;
  ForgetQueue* forgets = nullptr;
};

// One request queue and its client thread.
class Lane {
 public:
  Lane(const Shared& shared, uint32_t index, VirtqDriver& q, int kick_fd, int call_fd, char* ram,
       uint64_t slots_gpa, size_t stride)
      : sh_(shared),
        index_(index),
        q_(q),
        kick_(kick_fd),
        call_(call_fd),
        ram_(ram),
        slots_gpa_(slots_gpa),
        stride_(stride) {}

  // One request at depth 1 outside the measurement (INIT, set-up lookups).
  vfsd::test::Reply call(const Bytes& request, uint32_t reply_room) {
    char* req = slot_host(0);
    std::memcpy(req, request.data(), request.size());
    const uint64_t req_gpa = slot_gpa(0);
    const uint64_t reply_gpa = req_gpa + kRequestRoom;
    q_.desc(0) = VirtqDesc{req_gpa, static_cast<uint32_t>(request.size()), kVirtqDescFNext, 1};
    q_.desc(1) = VirtqDesc{reply_gpa, reply_room, kVirtqDescFWrite, 0};
    q_.publish(0);
    kick(kick_);
    wait_used(q_, call_, last_used_, false);
    auto [id, len] = q_.used_elem(last_used_);
    ++last_used_;
    kicked_at_ = q_.avail_idx();
    const char* r = host(reply_gpa);
    return vfsd::test::decode_reply(Bytes(r, r + len), len);
  }

  // Builds every slot's request images and descriptor chains.
  void prepare() {
    steps_ = steps_for(sh_.load);
    slots_.assign(sh_.options.depth, Slot{});
    for (uint32_t s = 0; s < sh_.options.depth; ++s) {
      char* base = slot_host(s);
      for (size_t k = 0; k < steps_.size(); ++k) {
        const Step& st = steps_[k];
        std::memcpy(base + k * kStepRoom, st.image.data(), st.image.size());
        if (st.name_at >= 0 && sh_.load.kind == Kind::kCreate) {
          // c-QUEUE-SLOT-SERIAL: unique over the queues and the slots.
          char prefix[16];
          std::snprintf(prefix, sizeof prefix, "c-%u-%03u-", index_, s);
          std::memcpy(base + k * kStepRoom + st.name_at - std::strlen(prefix), prefix,
                      std::strlen(prefix));
        }
      }
    }
  }

  void run(Clock::time_point end) {
    const double cpu0 = thread_cpu_us(), user0 = thread_user_us();
    const uint32_t depth = sh_.options.depth;
    for (uint32_t s = 0; s < depth; ++s) {
      slots_[s].started = Clock::now();
      submit(s);
    }
    kick_if_needed();
    uint32_t outstanding = depth;
    bool stopping = false;
    while (outstanding > 0) {
      const uint16_t used = wait_used(q_, call_, last_used_, sh_.options.poll);
      const auto now = Clock::now();
      if (now >= end) stopping = true;
      for (; last_used_ != used; ++last_used_) {
        auto [id, len] = q_.used_elem(last_used_);
        const uint32_t s = id / kDescsPerSlot;
        if (!complete(s, len)) continue;  // the operation's next request went out
        Slot& slot = slots_[s];
        latencies_.add(std::chrono::duration<double, std::micro>(now - slot.started).count());
        ++done_;
        if (stopping) {
          --outstanding;
        } else {
          slot.started = now;
          submit(s);
        }
      }
      kick_if_needed();
    }
    client_cpu_us_ = thread_cpu_us() - cpu0;
    client_user_us_ = thread_user_us() - user0;
  }

  uint64_t done() const { return done_; }
  uint64_t errors() const { return errors_; }
  uint64_t entries() const { return entries_; }
  const Histogram& latencies() const { return latencies_; }
  double client_cpu_us() const { return client_cpu_us_; }
  double client_user_us() const { return client_user_us_; }

 private:
  struct Slot {
    uint32_t step = 0;
    uint64_t node = 0;  // from the CREATE reply
    uint64_t fh = 0;    // from the OPEN/CREATE/OPENDIR reply
    uint64_t offset = 0;
    uint64_t serial = 0;  // names of created files
    Clock::time_point started;
  };

  std::vector<Step> steps_for(const Workload& load) const {
    std::vector<Step> steps;
    auto step = [&](uint32_t opcode, uint64_t node, uint32_t reply_body) -> RequestBuilder {
      Step st;
      st.opcode = opcode;
      st.reply_body = reply_body;
      steps.push_back(st);
      return RequestBuilder(opcode, node, 0);
    };
    auto finish = [&](const RequestBuilder& b) {
      Step& st = steps.back();
      st.image = b.finish();
      if (st.image.size() > kStepRoom) throw std::runtime_error("request image too long");
    };
    // Offsets in the image of fields patched per send.
    constexpr int kIn = sizeof(fuse_in_header);
    switch (load.kind) {
      case Kind::kGetattr: {
        auto b = step(FUSE_GETATTR, kRootNode, sizeof(fuse_attr_out));
        b.add(fuse_getattr_in{});
        finish(b);
        break;
      }
      case Kind::kLookup: {
        auto b = step(FUSE_LOOKUP, kRootNode, sizeof(fuse_entry_out));
        b.add_name("f");
        finish(b);
        break;
      }
      case Kind::kLookupMiss: {
        // missing-QUEUE-N, N cycling through kMissNames names (see there).
        const std::string prefix = "missing-" + std::to_string(index_) + "-";
        auto b = step(FUSE_LOOKUP, kRootNode, sizeof(fuse_entry_out));
        b.add_name(prefix + std::string(16, '0'));
        finish(b);
        steps.back().name_at = kIn + static_cast<int>(prefix.size());
        steps.back().name_digits = 16;
        break;
      }
      case Kind::kRead: {
        fuse_read_in in{};
        in.fh = sh_.fh;
        in.size = load.size;
        auto b = step(FUSE_READ, sh_.file, load.size);
        b.add(in);
        finish(b);
        break;
      }
      case Kind::kWrite: {
        fuse_write_in in{};
        in.fh = sh_.fh;
        in.size = load.size;
        auto b = step(FUSE_WRITE, sh_.file, sizeof(fuse_write_out));
        b.add(in);
        finish(b);
        Step& st = steps.back();
        st.data_out = load.size;
        // The header claims the data that follows in the second buffer.
        auto h = get<fuse_in_header>(reinterpret_cast<const char*>(st.image.data()));
        h.len += load.size;
        put(reinterpret_cast<char*>(st.image.data()), h);
        break;
      }
      case Kind::kOpen: {
        fuse_open_in in{};
        in.flags = O_RDONLY;
        auto b = step(FUSE_OPEN, sh_.file, sizeof(fuse_open_out));
        b.add(in);
        finish(b);
        auto r = step(FUSE_RELEASE, sh_.file, 0);
        r.add(fuse_release_in{});
        finish(r);
        steps.back().fh_at = kIn + offsetof(fuse_release_in, fh);
        break;
      }
      case Kind::kCreate: {
        // c-QUEUE-SLOT-SERIAL; prepare() writes the prefix, each send the serial.
        const std::string name = "c-" + std::to_string(index_) + "-000-" + std::string(12, '0');
        const int digits_at = static_cast<int>(name.size()) - 12;
        fuse_create_in in{};
        in.flags = O_RDWR | O_CREAT | O_EXCL;
        in.mode = S_IFREG | 0644;
        auto c = step(FUSE_CREATE, kRootNode, sizeof(fuse_entry_out) + sizeof(fuse_open_out));
        c.add(in).add_name(name);
        finish(c);
        steps.back().name_at = kIn + static_cast<int>(sizeof in) + digits_at;
        steps.back().name_digits = 12;
        auto r = step(FUSE_RELEASE, 0, 0);
        r.add(fuse_release_in{});
        finish(r);
        steps.back().fh_at = kIn + offsetof(fuse_release_in, fh);
        steps.back().patch_node = true;
        auto u = step(FUSE_UNLINK, kRootNode, 0);
        u.add_name(name);
        finish(u);
        steps.back().name_at = kIn + digits_at;
        steps.back().name_digits = 12;
        break;
      }
      case Kind::kReaddirplus: {
        fuse_open_in in{};
        in.flags = O_RDONLY | O_DIRECTORY;
        auto o = step(FUSE_OPENDIR, sh_.dir, sizeof(fuse_open_out));
        o.add(in);
        finish(o);
        fuse_read_in rd{};
        rd.size = kReaddirBuffer;
        rd.flags = O_RDONLY | O_DIRECTORY;
        auto r = step(FUSE_READDIRPLUS, sh_.dir, kReaddirBuffer);
        r.add(rd);
        finish(r);
        steps.back().fh_at = kIn + offsetof(fuse_read_in, fh);
        steps.back().offset_at = kIn + offsetof(fuse_read_in, offset);
        fuse_release_in rel{};
        rel.flags = O_RDONLY | O_DIRECTORY;
        auto c = step(FUSE_RELEASEDIR, sh_.dir, 0);
        c.add(rel);
        finish(c);
        steps.back().fh_at = kIn + offsetof(fuse_release_in, fh);
        break;
      }
    }
    if (steps.size() > kMaxSteps) throw std::runtime_error("too many steps");
    return steps;
  }

  uint64_t slot_gpa(uint32_t slot) const { return slots_gpa_ + slot * stride_; }
  char* host(uint64_t gpa) const { return ram_ + (gpa - kGpaBase); }
  char* slot_host(uint32_t slot) const { return host(slot_gpa(slot)); }
  size_t reply_offset(const Step& st) const { return kRequestRoom + st.data_out; }

  // Patches slot `s`'s image of its current step and publishes its chain.
  void submit(uint32_t s) {
    Slot& slot = slots_[s];
    const Step& st = steps_[slot.step];
    char* req = slot_host(s) + slot.step * kStepRoom;
    put(req + offsetof(fuse_in_header, unique), next_unique());
    if (st.patch_node) put(req + offsetof(fuse_in_header, nodeid), slot.node);
    if (st.fh_at >= 0) put(req + st.fh_at, slot.fh);
    if (st.offset_at >= 0) put(req + st.offset_at, slot.offset);
    if (st.name_at >= 0) {
      const uint64_t serial = sh_.load.kind == Kind::kCreate ? slot.serial : ++misses_ % kMissNames;
      put_digits(req + st.name_at, st.name_digits, serial);
    }
    const uint64_t gpa = slot_gpa(s);
    const auto d0 = static_cast<uint16_t>(s * kDescsPerSlot);
    uint16_t d = d0;
    auto add = [&](uint64_t addr, uint32_t len, uint16_t flags, bool last) {
      q_.desc(d) = VirtqDesc{addr, len, static_cast<uint16_t>(flags | (last ? 0 : kVirtqDescFNext)),
                             static_cast<uint16_t>(last ? 0 : d + 1)};
      ++d;
    };
    add(gpa + slot.step * kStepRoom, static_cast<uint32_t>(st.image.size()), 0, false);
    if (st.data_out) add(gpa + kRequestRoom, st.data_out, 0, false);
    const uint64_t reply = gpa + reply_offset(st);
    add(reply, sizeof(fuse_out_header), kVirtqDescFWrite, st.reply_body == 0);
    if (st.reply_body) add(reply + kReplyHeaderRoom, st.reply_body, kVirtqDescFWrite, true);
    q_.publish(d0);
  }

  // Handles the reply of slot `s`'s current step; returns whether its
  // operation is done (otherwise the next step was submitted).
  bool complete(uint32_t s, uint32_t len) {
    Slot& slot = slots_[s];
    const Step& st = steps_[slot.step];
    const char* reply = slot_host(s) + reply_offset(st);
    const auto out = get<fuse_out_header>(reply);
    const char* body = reply + kReplyHeaderRoom;
    const Kind kind = sh_.load.kind;
    // A miss is the answer a lookup-miss asks for.
    const bool expected_miss = kind == Kind::kLookupMiss && out.error == -ENOENT;
    const bool failed = len < sizeof(out) || (out.error != 0 && !expected_miss);
    if (failed) ++errors_;
    uint32_t next = slot.step + 1;
    if (st.opcode == FUSE_OPEN || st.opcode == FUSE_OPENDIR) {
      slot.fh = get<fuse_open_out>(body).fh;
      slot.offset = 0;
      if (failed) next = static_cast<uint32_t>(steps_.size());
    } else if (st.opcode == FUSE_CREATE) {
      // A failed CREATE wrote no entry: the buffer still holds the last one.
      slot.node = failed ? 0 : get<fuse_entry_out>(body).nodeid;
      slot.fh = get<fuse_open_out>(body + sizeof(fuse_entry_out)).fh;
      if (failed) next = static_cast<uint32_t>(steps_.size());
    } else if (st.opcode == FUSE_READDIRPLUS) {
      const size_t payload = failed ? 0 : len - sizeof(out);
      if (payload > 0) {
        parse_direntplus(slot, body, std::min<size_t>(payload, kReaddirBuffer));
        next = slot.step;  // the next page
      }
    }
    if (next < steps_.size()) {
      slot.step = next;
      submit(s);
      return false;
    }
    if (kind == Kind::kCreate && slot.node != 0) sh_.forgets->forget(slot.node, 1);
    slot.step = 0;
    ++slot.serial;
    return true;
  }

  // Takes the offset of the last entry of a READDIRPLUS page, and forgets
  // every entry the guest would have made an inode of (a nonzero nodeid;
  // "." and ".." are skipped as fuse_direntplus_link skips them).
  void parse_direntplus(Slot& slot, const char* p, size_t n) {
    size_t pos = 0;
    while (pos + sizeof(fuse_entry_out) + FUSE_NAME_OFFSET <= n) {
      const auto e = get<fuse_entry_out>(p + pos);
      const auto de = get<fuse_dirent>(p + pos + sizeof(fuse_entry_out));
      const size_t rec = FUSE_DIRENT_ALIGN(sizeof(fuse_entry_out) + FUSE_NAME_OFFSET + de.namelen);
      if (de.namelen == 0 || pos + rec > n) break;
      const char* name = p + pos + sizeof(fuse_entry_out) + FUSE_NAME_OFFSET;
      const bool dot = (de.namelen == 1 && name[0] == '.') ||
                       (de.namelen == 2 && name[0] == '.' && name[1] == '.');
      if (!dot) {
        ++entries_;
        if (e.nodeid != 0) sh_.forgets->forget(e.nodeid, 1);
      }
      slot.offset = de.off;
      pos += rec;
    }
  }

  // Kicks only when the device asked for it (EVENT_IDX avail_event).
  void kick_if_needed() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t now = q_.avail_idx();
    if (now == kicked_at_) return;
    if (need_event(q_.avail_event(), now, kicked_at_)) kick(kick_);
    kicked_at_ = now;
  }

  // Even (as the guest's), and distinct over the queues.
  uint64_t next_unique() { return (++uniques_ * kMaxQueues + index_) * 2; }

  const Shared& sh_;
  uint32_t index_;
  VirtqDriver& q_;
  int kick_, call_;
  char* ram_;
  uint64_t slots_gpa_;
  size_t stride_;
  std::vector<Step> steps_;
  std::vector<Slot> slots_;
  uint16_t last_used_ = 0, kicked_at_ = 0;
  uint64_t uniques_ = 0, misses_ = 0;
  uint64_t done_ = 0, errors_ = 0, entries_ = 0;
  Histogram latencies_;
  double client_cpu_us_ = 0, client_user_us_ = 0;
};

struct TooFewQueues : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Guest {
 public:
  explicit Guest(const Options& options) {
    sh_.options = options;
    sh_.load = workload_named(options.workload);
    const uint32_t size = sh_.load.size;
    const bool write = sh_.load.kind == Kind::kWrite;
    const uint32_t body =
        std::max<uint32_t>({size, kReaddirBuffer, sizeof(fuse_entry_out) + sizeof(fuse_open_out)});
    stride_ = (kRequestRoom + (write ? size : 0) + kReplyHeaderRoom + body + 4095) & ~size_t{4095};
    const uint32_t nq = options.queues;
    mem_size_ = (1 + nq) * kRingArea + size_t{nq} * options.depth * stride_;
    memfd_.reset(::memfd_create("guest-ram", MFD_CLOEXEC));
    if (!memfd_ || ::ftruncate(memfd_.get(), static_cast<off_t>(mem_size_)) != 0) {
      throw std::runtime_error("memfd");
    }
    void* map = ::mmap(nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (map == MAP_FAILED) throw std::runtime_error("mmap");
    ram_ = static_cast<char*>(map);
    drivers_.push_back(std::make_unique<VirtqDriver>(ram_, kGpaBase, kRingArea, kHiprioSize));
    for (uint32_t q = 1; q <= nq; ++q) {
      drivers_.push_back(std::make_unique<VirtqDriver>(
          ram_ + q * kRingArea, kGpaBase + q * kRingArea, kRingArea, kQueueSize));
    }
    for (uint32_t q = 0; q <= nq; ++q) {
      kick_.push_back(vfsd::test::make_eventfd());
      call_.push_back(vfsd::test::make_eventfd());
    }
    frontend_ = std::make_unique<Frontend>(connect_unix(options.socket));
    handshake();
    forgets_ =
        std::make_unique<ForgetQueue>(*drivers_[0], kick_[0].get(), call_[0].get(), options.poll);
    sh_.forgets = forgets_.get();
    const uint64_t slots_gpa = kGpaBase + (1 + nq) * kRingArea;
    for (uint32_t q = 0; q < nq; ++q) {
      lanes_.push_back(
          std::make_unique<Lane>(sh_, q, *drivers_[q + 1], kick_[q + 1].get(), call_[q + 1].get(),
                                 ram_, slots_gpa + size_t{q} * options.depth * stride_, stride_));
    }
  }
  ~Guest() {
    lanes_.clear();
    frontend_.reset();
    if (ram_ != nullptr) ::munmap(ram_, mem_size_);
  }

  void set_up() {
    Lane& l = *lanes_[0];
    uint64_t unique = 0;
    auto next = [&] { return unique += 2; };
    auto init = l.call(vfsd::test::init_request(next()), sizeof(fuse_out_header) + 256);
    if (!init.ok()) throw std::runtime_error("INIT: error " + std::to_string(init.error()));
    const Kind k = sh_.load.kind;
    auto lookup = [&](const char* name) {
      auto e = l.call(RequestBuilder(FUSE_LOOKUP, kRootNode, next()).add_name(name).finish(),
                      sizeof(fuse_out_header) + sizeof(fuse_entry_out));
      if (!e.ok()) {
        throw std::runtime_error(std::string("LOOKUP ") + name + ": error " +
                                 std::to_string(e.error()));
      }
      return e.as<fuse_entry_out>().nodeid;
    };
    if (k == Kind::kRead || k == Kind::kWrite || k == Kind::kOpen) sh_.file = lookup("f");
    if (k == Kind::kReaddirplus) sh_.dir = lookup("d");
    if (k == Kind::kRead || k == Kind::kWrite) {
      fuse_open_in in{};
      in.flags = O_RDWR;
      auto o = l.call(RequestBuilder(FUSE_OPEN, sh_.file, next()).add(in).finish(),
                      sizeof(fuse_out_header) + sizeof(fuse_open_out));
      if (!o.ok()) throw std::runtime_error("OPEN f: error " + std::to_string(o.error()));
      sh_.fh = o.as<fuse_open_out>().fh;
    }
    for (auto& lane : lanes_) lane->prepare();
  }

  void run() {
    const Options& o = sh_.options;
    const double cpu_before = tree_cpu_us(o.daemon_pid);
    const auto t0 = Clock::now();
    const auto end =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> failures(lanes_.size());
    for (size_t i = 0; i < lanes_.size(); ++i) {
      threads.emplace_back([&, i] {
        try {
          lanes_[i]->run(end);
        } catch (...) {
          failures[i] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& f : failures) {
      if (f) std::rethrow_exception(f);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    forgets_->drain();
    const double cpu_us = tree_cpu_us(o.daemon_pid) - cpu_before;
    Histogram all;
    uint64_t done = 0, errors = 0;
    double client_us = 0, client_user_us = 0;
    for (auto& lane : lanes_) {
      all.merge(lane->latencies());
      done += lane->done();
      errors += lane->errors();
      client_us += lane->client_cpu_us();
      client_user_us += lane->client_user_us();
    }
    std::printf("%s %u %u %s %.2f %.1f %.1f %.2f %llu\n", o.workload.c_str(), o.depth, o.queues,
                o.poll ? "poll" : "block", static_cast<double>(done) / seconds, all.percentile(0.5),
                all.percentile(0.99), done ? cpu_us / static_cast<double>(done) : 0.0,
                static_cast<unsigned long long>(errors));
    if (o.client_cpu && done) {
      uint64_t entries = 0;
      for (auto& lane : lanes_) entries += lane->entries();
      std::fprintf(stderr,
                   "vhost_load: client cpu %.2f us/op (user %.2f), %llu ops, %llu entries, "
                   "%llu forgets\n",
                   client_us / static_cast<double>(done),
                   client_user_us / static_cast<double>(done),
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(entries),
                   static_cast<unsigned long long>(forgets_->sent()));
    }
  }

 private:
  void handshake() {
    using vu::Request;
    Frontend& fe = *frontend_;
    constexpr uint64_t features =
        vu::kFeatureVersion1 | vu::kFeatureEventIdx | vu::kFeatureProtocolFeatures;
    if ((fe.call(Request::kGetFeatures).u64() & features) != features) {
      throw std::runtime_error("GET_FEATURES: no VERSION_1/EVENT_IDX/PROTOCOL_FEATURES");
    }
    const uint64_t offered = fe.call(Request::kGetProtocolFeatures).u64();
    if (!(offered & vu::kProtocolReplyAck)) throw std::runtime_error("no REPLY_ACK");
    // MQ as QEMU takes it: only to learn how many queues the daemon has.
    const uint64_t protocol = offered & (vu::kProtocolReplyAck | vu::kProtocolMq);
    fe.send(Request::kSetProtocolFeatures, vfsd::test::bytes(protocol));
    uint64_t total = 2;  // without MQ: the hiprio queue and one request queue
    const bool mq = (protocol & vu::kProtocolMq) != 0;
    if (mq) total = fe.call(Request::kGetQueueNum).u64();
    const uint32_t nq = sh_.options.queues;
    if (total < 1 + uint64_t{nq}) {
      throw TooFewQueues(
          "daemon offers " + std::to_string(total > 0 ? total - 1 : 0) + " request queues" +
          (mq ? " (GET_QUEUE_NUM " + std::to_string(total) + ")" : " (no MQ protocol feature)") +
          ", --queues asks for " + std::to_string(nq));
    }
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
    for (uint32_t q = 0; q <= nq; ++q) {
      VirtqDriver& d = *drivers_[q];
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
      if (fe.acked(Request::kSetVringKick, vfsd::test::bytes(uint64_t{q}), {kick_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringCall, vfsd::test::bytes(uint64_t{q}), {call_[q].get()}) != 0 ||
          fe.acked(Request::kSetVringEnable, vfsd::test::bytes(vu::VringState{q, 1})) != 0) {
        throw std::runtime_error("SET_VRING_KICK/CALL/ENABLE");
      }
    }
  }
  static uint64_t uva(uint64_t gpa) { return kUvaBase + (gpa - kGpaBase); }

  Shared sh_;
  size_t stride_ = 0;
  size_t mem_size_ = 0;
  UniqueFd memfd_;
  char* ram_ = nullptr;
  std::vector<std::unique_ptr<VirtqDriver>> drivers_;  // [0] hiprio, then the request queues
  std::vector<UniqueFd> kick_, call_;
  std::unique_ptr<Frontend> frontend_;
  std::unique_ptr<ForgetQueue> forgets_;
  std::vector<std::unique_ptr<Lane>> lanes_;
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
    } else if (a == "--queues") {
      o.queues = static_cast<uint32_t>(std::stoul(value()));
    } else if (a == "--seconds") {
      o.seconds = std::stod(value());
    } else if (a == "--daemon-pid") {
      o.daemon_pid = static_cast<pid_t>(std::stol(value()));
    } else if (a == "--wait") {
      const std::string w = value();
      if (w != "block" && w != "poll") throw std::runtime_error("--wait is block or poll");
      o.poll = w == "poll";
    } else if (a == "--client-cpu") {
      o.client_cpu = true;
    } else {
      std::fprintf(stderr,
                   "usage: vhost_load --socket PATH [--workload getattr|lookup|lookup-miss|"
                   "read-4k|read-1m|write-4k|write-1m|open|create|readdirplus] [--depth N] "
                   "[--queues N] [--wait block|poll] [--seconds S] [--daemon-pid PID] "
                   "[--client-cpu]\n");
      return 2;
    }
  }
  if (o.socket.empty() || o.depth == 0 || o.depth > kMaxDepth || o.queues == 0 ||
      o.queues > kMaxQueues) {
    std::fprintf(stderr, "vhost_load: --socket is needed, --depth is 1..%u, --queues 1..%u\n",
                 kMaxDepth, kMaxQueues);
    return 2;
  }
  workload_named(o.workload);
  try {
    Guest guest(o);
    guest.set_up();
    guest.run();
  } catch (const TooFewQueues& e) {
    std::fprintf(stderr, "vhost_load: %s\n", e.what());
    return kExitTooFewQueues;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "vhost_load: %s\n", e.what());
  return 1;
}
