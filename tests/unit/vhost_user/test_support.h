// Test helpers of the vhost_user tests: the fake front-end of
// tests/support (a Backend served on a thread), guest RAM in a memfd, and a
// RequestHandler that upper-cases each request into its reply.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>

#include "support/host_files.h"
#include "support/vhost_user_frontend.h"
#include "util/unique_fd.h"
#include "vhost_user/message.h"
#include "virtio/queue.h"

namespace vfsd::vhost_user::test {

using ::vfsd::test::bytes;
using ::vfsd::test::count_open_fds;
using ::vfsd::test::drain_eventfd;
using ::vfsd::test::FakeFrontend;
using ::vfsd::test::make_eventfd;
using ::vfsd::test::wait_until;
using Reply = ::vfsd::test::Frontend::Reply;

/// Upper-cases the request into the reply; can be made to block inside
/// handle() to keep a request "in flight".
class UpperHandler : public virtio::RequestHandler {
 public:
  uint32_t handle(uint32_t queue_index, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* /*deferrer*/) override {
    {
      std::unique_lock lock(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !blocked_; });
    }
    std::string in(request.remaining(), '\0');
    request.read(in.data(), in.size());
    // A handler that fails by throwing (the worker must survive it).
    if (in == "throw") throw std::runtime_error("test handler throws");
    for (char& c : in) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    size_t n = std::min(in.size(), reply.remaining());
    reply.write(in.data(), n);
    last_queue_ = queue_index;
    calls_.fetch_add(1);
    return static_cast<uint32_t>(n);
  }
  void block() {
    std::lock_guard lock(mu_);
    blocked_ = true;
  }
  void release() {
    std::lock_guard lock(mu_);
    blocked_ = false;
    cv_.notify_all();
  }
  int entered() {
    std::lock_guard lock(mu_);
    return entered_;
  }
  int calls() const { return calls_.load(); }
  uint32_t last_queue() const { return last_queue_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  int entered_ = 0;
  std::atomic<int> calls_{0};
  std::atomic<uint32_t> last_queue_{~0u};
};

/// Guest RAM: a memfd mapped here too, seen by the back-end at `gpa` and by
/// the "front-end" at user address `uva`.
struct GuestRam {
  static constexpr uint64_t kGpa = 0x100000;
  static constexpr uint64_t kUva = 0x7f1234500000;
  explicit GuestRam(size_t size = 1 << 20) : size(size) {
    fd.reset(memfd_create("guest-ram", MFD_CLOEXEC));
    if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      throw std::runtime_error("memfd");
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    host = static_cast<char*>(p);
  }
  ~GuestRam() { munmap(host, size); }
  uint64_t uva_of(uint64_t gpa) const { return kUva + (gpa - kGpa); }
  MemoryRegion region() const { return MemoryRegion{kGpa, size, kUva, 0}; }

  size_t size;
  UniqueFd fd;
  char* host = nullptr;
};

}  // namespace vfsd::vhost_user::test
