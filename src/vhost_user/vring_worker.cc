#include "vhost_user/vring_worker.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "util/log.h"

namespace vfsd::vhost_user {

void CallFd::replace(UniqueFd fd) {
  std::lock_guard lock(mu_);
  fd_ = std::move(fd);  // closes the old one while no worker can be writing to it
}

void CallFd::signal() {
  std::lock_guard lock(mu_);
  if (!fd_.valid()) return;
  const uint64_t one = 1;
  // EAGAIN (counter saturated) still leaves the eventfd readable: the
  // front-end will see the notification.
  while (::write(fd_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
}

bool CallFd::valid() const {
  std::lock_guard lock(mu_);
  return fd_.valid();
}

std::shared_ptr<const virtio::GuestMemory> MemorySnapshot::get() const {
  std::lock_guard lock(mu_);
  return memory_;
}

void MemorySnapshot::set(std::shared_ptr<const virtio::GuestMemory> memory) {
  std::lock_guard lock(mu_);
  memory_ = std::move(memory);
}

VringWorker::VringWorker(uint32_t queue_index, virtio::SplitQueue queue, int kick_fd,
                         UniqueFd stop_fd, const MemorySnapshot& memory, CallFd& call,
                         virtio::RequestHandler& handler)
    : index_(queue_index),
      queue_(std::move(queue)),
      kick_fd_(kick_fd),
      stop_fd_(std::move(stop_fd)),
      memory_(memory),
      call_(call),
      handler_(handler) {}

Result<std::unique_ptr<VringWorker>> VringWorker::start(uint32_t queue_index,
                                                        virtio::SplitQueue queue, int kick_fd,
                                                        const MemorySnapshot& memory, CallFd& call,
                                                        virtio::RequestHandler& handler) {
  UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd) return fail_errno();
  std::unique_ptr<VringWorker> w(new VringWorker(queue_index, std::move(queue), kick_fd,
                                                 std::move(stop_fd), memory, call, handler));
  try {
    w->thread_ = std::thread([p = w.get()] { p->run(); });
  } catch (const std::system_error&) {
    // Out of threads: refuse to start this ring rather than die.
    return fail(EAGAIN);
  }
  return w;
}

VringWorker::~VringWorker() {
  stop();
}

uint16_t VringWorker::stop() {
  if (thread_.joinable()) {
    stopping_.store(true, std::memory_order_relaxed);
    const uint64_t one = 1;
    while (::write(stop_fd_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  // Joined: the queue is ours alone again.
  return queue_.next_avail();
}

void VringWorker::run() {
  log::debug("vring {}: worker started at avail index {}", index_, queue_.next_avail());
  // Buffers may have been published while the ring was stopped (the kick
  // then went to an fd we no longer have): serve them first.
  process();
  while (!stopping_.load(std::memory_order_relaxed)) {
    pollfd fds[2] = {{kick_fd_, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::error("vring {}: poll: {}; worker stops", index_, errno_name(errno));
      break;
    }
    if (fds[1].revents != 0) break;
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      // Not a working eventfd: waiting again would spin.
      log::warn("vring {}: kick fd reported an error; worker stops", index_);
      break;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      ssize_t r = ::read(kick_fd_, &count, sizeof count);
      if (r == 0) {
        log::warn("vring {}: kick fd at EOF; worker stops", index_);
        break;
      }
      // r < 0 (EAGAIN: someone else drained it) is harmless: process anyway.
    }
    process();
  }
  log::debug("vring {}: worker stopped at avail index {}", index_, queue_.next_avail());
}

void VringWorker::process() {
  // One memory snapshot per batch: a table change applies from the next one.
  std::shared_ptr<const virtio::GuestMemory> memory = memory_.get();
  if (!memory) return;
  bool added = false;
  int empty_rounds = 0;
  for (;;) {
    queue_.disable_notification();
    int popped = 0;
    while (auto p = queue_.pop(*memory)) {
      ++popped;
      if (!p->head_valid) {
        log::warn("vring {}: invalid head {} skipped", index_, p->head);
      } else if (!p->chain) {
        log::warn("vring {}: malformed chain at head {}: {}", index_, p->head,
                  p->error ? virtio::to_string(*p->error) : "?");
        queue_.add_used(p->head, 0);
        added = true;
      } else {
        IovecReader request(std::move(p->chain->readable));
        IovecWriter reply(std::move(p->chain->writable));
        const size_t room = reply.remaining();
        uint32_t len = handler_.handle(index_, request, reply);
        // Never report more than the chain can hold.
        len = static_cast<uint32_t>(std::min<size_t>(len, room));
        queue_.add_used(p->head, len);
        added = true;
      }
      served_.fetch_add(1, std::memory_order_relaxed);
      // stop(): finish the chain in hand, leave the rest for the next start.
      if (stopping_.load(std::memory_order_relaxed)) break;
    }
    if (stopping_.load(std::memory_order_relaxed)) break;
    if (!queue_.enable_notification()) break;
    // More is announced but nothing could be popped twice in a row: the
    // driver's avail index is broken (pop() refuses it). Wait for a kick
    // instead of spinning.
    empty_rounds = popped == 0 ? empty_rounds + 1 : 0;
    if (empty_rounds >= 2) break;
  }
  if (added && queue_.should_notify()) call_.signal();
}

}  // namespace vfsd::vhost_user
