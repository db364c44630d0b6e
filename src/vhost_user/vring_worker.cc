#include "vhost_user/vring_worker.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "util/deferred_reply.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/rate_limit.h"
#include "util/thread_pool.h"

namespace vfsd::vhost_user {

namespace detail {

// What a worker shares with the deferred replies it handed out and with the
// requests it gave to the thread pool.
struct DeferredState {
  std::mutex mu;
  // False once the worker stopped: finish() then drops its chain. Guarded by mu.
  bool alive = true;
  // Finished chains (head, length) waiting for the worker. Guarded by mu.
  std::vector<std::pair<uint16_t, uint32_t>> finished;
  // Handed to the pool and not answered yet. They write their reply straight
  // into the chain, so stop() waits for them (pooled_done). Guarded by mu.
  size_t pooled = 0;
  std::condition_variable pooled_done;
  // Written by finish(), polled by the worker. Owned here (not by the
  // worker) so that a late finish() never writes to a closed fd number.
  UniqueFd event;
  // Whether `finished` is non-empty, readable without mu: what a polling
  // worker looks at.
  std::atomic<bool> has_finished{false};
  // The worker's dirty logging: replies answered elsewhere (pool, deferred)
  // mark what they wrote themselves. Used only while `alive` (or while the
  // worker waits for its pooled chains), when the Backend that owns the
  // logs is there.
  RingLogging logging;

  // Queues an answered chain for the worker and wakes it. Needs mu held.
  void push_finished(uint16_t head, uint32_t len) {
    finished.emplace_back(head, len);
    has_finished.store(true, std::memory_order_release);
    const uint64_t one = 1;
    while (::write(event.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
};

}  // namespace detail

namespace {

// Marks the first `len` bytes written into `writable` in the dirty log, if
// logging is on.
void log_reply(const RingLogging& logging, const virtio::GuestMemory& memory,
               const IovecList& writable, size_t len) {
  if (logging.log == nullptr || len == 0) return;
  if (auto log = logging.log->get()) log->mark_written(memory, writable, len);
}

// A deferred reply is written into a private buffer first and copied into
// the chain by finish(), under the state's lock: after the ring stopped (and
// perhaps the guest reset and reused those pages) nothing reaches guest
// memory. Deferred requests answer with a header and little more; a larger
// reply is cut at this size (the guest then sees a short reply).
constexpr size_t kMaxDeferredReply = 64 * 1024;

class ChainReply final : public DeferredReply {
 public:
  ChainReply(std::shared_ptr<detail::DeferredState> state,
             std::shared_ptr<const virtio::GuestMemory> memory, uint16_t head, IovecList writable,
             size_t room)
      : state_(std::move(state)),
        memory_(std::move(memory)),
        head_(head),
        writable_(std::move(writable)),
        buffer_(std::min(room, kMaxDeferredReply)),
        writer_(IovecList{iovec{buffer_.data(), buffer_.size()}}) {}

  ~ChainReply() override {
    if (!finished_) {
      // A lost reply would keep the descriptors from the guest for good;
      // returning the chain empty at least frees them.
      log::warn("deferred reply for chain {} dropped without finish()", head_);
      finish(0);
    }
  }

  IovecWriter& writer() override { return writer_; }

  void finish(size_t bytes) override {
    if (finished_) return;
    finished_ = true;
    const size_t len = std::min(bytes, buffer_.size());
    std::lock_guard lock(state_->mu);
    if (!state_->alive) return;
    // The ring still runs, so the chain is still the device's to write: copy
    // the reply into it (the segments were checked when the chain was popped
    // and stay mapped through memory_).
    IovecWriter out(writable_);
    out.write(buffer_.data(), len);
    log_reply(state_->logging, *memory_, writable_, len);
    state_->push_finished(head_, static_cast<uint32_t>(len));
  }

 private:
  std::shared_ptr<detail::DeferredState> state_;
  std::shared_ptr<const virtio::GuestMemory> memory_;  // keeps writable_ mapped
  const uint16_t head_;
  IovecList writable_;
  std::vector<unsigned char> buffer_;
  IovecWriter writer_;
  bool finished_ = false;
};

// Offered to the handler with one chain.
class ChainDeferrer final : public ReplyDeferrer {
 public:
  ChainDeferrer(const std::shared_ptr<detail::DeferredState>& state,
                const std::shared_ptr<const virtio::GuestMemory>& memory, uint16_t head,
                const IovecList& writable, size_t room)
      : state_(state), memory_(memory), head_(head), writable_(writable), room_(room) {}

  std::unique_ptr<DeferredReply> defer() override {
    if (deferred_) return nullptr;  // at most once per request
    deferred_ = true;
    return std::make_unique<ChainReply>(state_, memory_, head_, writable_, room_);
  }

  bool deferred() const { return deferred_; }

 private:
  const std::shared_ptr<detail::DeferredState>& state_;
  const std::shared_ptr<const virtio::GuestMemory>& memory_;
  const uint16_t head_;
  const IovecList& writable_;
  const size_t room_;
  bool deferred_ = false;
};

// Runs one request through the handler, writing the reply straight into the
// chain. Returns the reply length (never more than the chain holds), or
// nullopt when the handler deferred the chain.
std::optional<uint32_t> serve_chain(virtio::RequestHandler& handler, uint32_t queue_index,
                                    uint16_t head, IovecList readable, const IovecList& writable,
                                    const std::shared_ptr<detail::DeferredState>& state,
                                    const std::shared_ptr<const virtio::GuestMemory>& memory) {
  IovecReader request(std::move(readable));
  IovecWriter reply(writable);
  const size_t room = reply.remaining();
  ChainDeferrer deferrer(state, memory, head, writable, room);
  uint32_t len = 0;
  try {
    len = handler.handle(queue_index, request, reply, &deferrer);
  } catch (...) {
    // The handler answers errors itself; this is the last line: the chain
    // goes back empty and the queue serves on.
    log::guest_fault(log::GuestFault::kRequestFailed,
                     "vring {}: request at head {} threw; returned empty", queue_index, head);
    len = 0;
  }
  if (deferrer.deferred()) return std::nullopt;
  return static_cast<uint32_t>(std::min<size_t>(len, room));
}

}  // namespace

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
                         virtio::RequestHandler& handler, ThreadPool* pool,
                         std::shared_ptr<detail::DeferredState> deferred,
                         AdaptivePoll::Duration max_poll, std::atomic<uint64_t>* chains_popped,
                         KickBatching batching)
    : index_(queue_index),
      queue_(std::move(queue)),
      kick_fd_(kick_fd),
      stop_fd_(std::move(stop_fd)),
      memory_(memory),
      call_(call),
      handler_(handler),
      pool_(pool),
      poll_(max_poll),
      batching_(batching),
      chains_popped_(chains_popped),
      deferred_(std::move(deferred)) {}

Result<std::unique_ptr<VringWorker>> VringWorker::start(
    uint32_t queue_index, virtio::SplitQueue queue, int kick_fd, const MemorySnapshot& memory,
    CallFd& call, virtio::RequestHandler& handler, ThreadPool* pool,
    AdaptivePoll::Duration max_poll, std::atomic<uint64_t>* chains_popped, RingLogging logging,
    KickBatching batching) {
  UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd) return fail_errno();
  auto deferred = std::make_shared<detail::DeferredState>();
  deferred->logging = logging;
  deferred->event.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!deferred->event) return fail_errno();
  std::unique_ptr<VringWorker> w(
      new VringWorker(queue_index, std::move(queue), kick_fd, std::move(stop_fd), memory, call,
                      handler, pool, std::move(deferred), max_poll, chains_popped, batching));
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
  // Joined: nothing is popped any more. The pool's chains write into guest
  // memory directly, so the ring stays the device's until they are answered
  // (each is one request's syscalls: a lock wait is deferred, not pooled).
  // Then the queue is ours alone again; from here on finish() drops its
  // chain, and what finished before still goes on the used ring.
  {
    std::unique_lock lock(deferred_->mu);
    deferred_->pooled_done.wait(lock, [this] { return deferred_->pooled == 0; });
    deferred_->alive = false;
  }
  if (add_finished() && queue_.should_notify()) call_.signal();
  // The front-end copies guest RAM once more after the rings stopped: every
  // used-ring write since the last batch (flags, avail_event) goes with it.
  log_used_ring();
  return queue_.next_avail();
}

void VringWorker::log_used_ring() const {
  const RingLogging& logging = deferred_->logging;
  if (logging.log == nullptr || logging.used == nullptr ||
      !logging.used->enabled.load(std::memory_order_acquire))
    return;
  if (auto log = logging.log->get()) {
    log->mark(logging.used->guest_addr.load(std::memory_order_acquire),
              virtio::SplitQueue::used_ring_bytes(queue_.size()));
  }
}

size_t VringWorker::pooled_count() const {
  std::lock_guard lock(deferred_->mu);
  return deferred_->pooled;
}

void VringWorker::dispatch_to_pool(virtio::DescriptorChain chain,
                                   const std::shared_ptr<const virtio::GuestMemory>& memory) {
  {
    std::lock_guard lock(deferred_->mu);
    ++deferred_->pooled;
  }
  pool_->submit([state = deferred_, memory, head = chain.head, index = index_, &handler = handler_,
                 readable = std::move(chain.readable),
                 writable = std::move(chain.writable)]() mutable {
    auto len = serve_chain(handler, index, head, std::move(readable), writable, state, memory);
    if (len) log_reply(state->logging, *memory, writable, *len);
    std::lock_guard lock(state->mu);
    if (len) state->push_finished(head, *len);
    --state->pooled;
    state->pooled_done.notify_all();
  });
}

bool VringWorker::add_finished() {
  std::vector<std::pair<uint16_t, uint32_t>> finished;
  {
    std::lock_guard lock(deferred_->mu);
    finished.swap(deferred_->finished);
    deferred_->has_finished.store(false, std::memory_order_relaxed);
  }
  for (const auto& [head, len] : finished) queue_.add_used(head, len);
  if (finished.empty()) return false;
  queue_.publish_used();  // before the dirty log marks the ring
  log_used_ring();
  return true;
}

void VringWorker::run() {
  log::debug("vring {}: worker started at avail index {}", index_, queue_.next_avail());
  // Buffers may have been published while the ring was stopped (the kick
  // then went to an fd we no longer have): serve them first.
  process_and_rearm();
  while (!stopping_.load(std::memory_order_relaxed)) {
    // A lingering queue waits for its batch's kick instead of polling.
    if (!lingering_ && poll_for_work()) {
      if (add_finished() && queue_.should_notify()) call_.signal();
      pool_was_full_ = false;  // process() finds out again
      process_and_rearm();
      continue;
    }
    if (!wait_and_serve()) break;
  }
  log::debug("vring {}: worker stopped at avail index {}", index_, queue_.next_avail());
  // After a guest hangs, this tells a kick that never woke us (chains left
  // on the ring) from an interrupt the guest never took (none left).
  if (const uint32_t left = queue_.available_count(); left != 0)
    log::info("vring {}: stopped with {} published chain(s) not taken, at avail index {}", index_,
              left, queue_.next_avail());
}

namespace {

std::chrono::nanoseconds monotonic_now() {
  return std::chrono::steady_clock::now().time_since_epoch();
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

bool VringWorker::poll_for_work() {
  const AdaptivePoll::Duration window = poll_.window();
  if (window.count() == 0) return false;
  // While we poll the driver need not kick: that saves it a syscall and us
  // a wake-up. A full pool is resumed by its answers, so poll those too.
  if (!pool_was_full_) queue_.suppress_notification();
  const auto deadline = monotonic_now() + window;
  do {
    if ((!pool_was_full_ && queue_.has_available()) ||
        deferred_->has_finished.load(std::memory_order_acquire)) {
      poll_.found_work();
      return true;
    }
    if (stopping_.load(std::memory_order_relaxed)) return false;
    cpu_relax();
  } while (monotonic_now() < deadline);
  // Nothing came: ask for kicks again; what raced in is served now.
  if (!pool_was_full_ && queue_.enable_notification()) {
    poll_.found_work();
    return true;
  }
  return false;
}

bool VringWorker::wait_and_serve() {
  pollfd fds[3] = {
      {kick_fd_, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}, {deferred_->event.get(), POLLIN, 0}};
  const auto slept_from = poll_.max().count() != 0 ? monotonic_now() : AdaptivePoll::Duration{};
  timespec linger{};
  if (lingering_) {
    const auto ns = batching_.linger.count();
    linger = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  }
  int n = ::ppoll(fds, 3, lingering_ ? &linger : nullptr, nullptr);
  if (n < 0) {
    if (errno == EINTR) return true;
    log::error("vring {}: poll: {}; worker stops", index_, errno_name(errno));
    return false;
  }
  if (n == 0) {
    // The batch did not fill up within the linger: serve what came. If
    // nothing did, process() left a kick per chain asked for, and the next
    // wait has no timeout.
    process_and_rearm(/*linger_ran_out=*/true);
    return true;
  }
  if (fds[1].revents != 0) return false;
  if (poll_.max().count() != 0) poll_.slept(monotonic_now() - slept_from);
  bool serve = false;
  if (fds[2].revents & POLLIN) {
    uint64_t count;
    // Drained before the list is taken: a finish() after this read writes
    // the eventfd again, so nothing it queues is left unseen.
    (void)!::read(deferred_->event.get(), &count, sizeof count);
    if (add_finished() && queue_.should_notify()) call_.signal();
    // A full pool has room again: go on popping without a kick (the
    // driver was told not to send one).
    serve = std::exchange(pool_was_full_, false);
  }
  if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
    // Not a working eventfd: waiting again would spin.
    log::warn("vring {}: kick fd reported an error; worker stops", index_);
    return false;
  }
  if (fds[0].revents & POLLIN) {
    uint64_t count;
    ssize_t r = ::read(kick_fd_, &count, sizeof count);
    if (r == 0) {
      log::warn("vring {}: kick fd at EOF; worker stops", index_);
      return false;
    }
    // r < 0 (EAGAIN: someone else drained it) is harmless: process anyway.
    serve = true;
  }
  if (serve) process_and_rearm();
  return true;
}

bool VringWorker::give_back_refused(uint16_t head, virtio::ChainError error) {
  if (error == virtio::ChainError::kHeadOutOfRange) {
    log::guest_fault(log::GuestFault::kInvalidHead, "vring {}: invalid head {} skipped", index_,
                     head);
    return false;
  }
  log::guest_fault(log::GuestFault::kMalformedChain, "vring {}: malformed chain at head {}: {}",
                   index_, head, virtio::to_string(error));
  queue_.add_used(head, 0);
  return true;
}

bool VringWorker::serve_here(virtio::DescriptorChain chain,
                             const std::shared_ptr<const virtio::GuestMemory>& memory) {
  auto len = serve_chain(handler_, index_, chain.head, std::move(chain.readable), chain.writable,
                         deferred_, memory);
  if (!len) return false;
  log_reply(deferred_->logging, *memory, chain.writable, *len);
  queue_.add_used(chain.head, *len);
  return true;
}

void VringWorker::process_and_rearm(bool linger_ran_out) {
  const bool batching = batching_.chains > 1 && queue_.event_idx();
  for (;;) {
    const size_t popped = process();
    if (!batching || stopping_.load(std::memory_order_relaxed) || pool_was_full_) return;
    // Nothing came within a linger (or nothing was batching): process() asked
    // for a kick per chain, and the next wait has no timeout. A kick that
    // finds nothing (the one for a chain served already) changes nothing.
    if (popped == 0 && (!lingering_ || linger_ran_out)) {
      lingering_ = false;
      return;
    }
    lingering_ = true;
    // A batch already there may have been published before the driver saw
    // the new avail_event, so without a kick: serve it now.
    if (queue_.request_kick_after(batching_.chains) < batching_.chains) return;
    linger_ran_out = false;
  }
}

size_t VringWorker::process() {
  // One memory snapshot per batch: a table change applies from the next one.
  std::shared_ptr<const virtio::GuestMemory> memory = memory_.get();
  if (!memory) return 0;
  bool added = false;
  size_t popped_total = 0;
  int empty_rounds = 0;
  for (;;) {
    queue_.disable_notification();
    int popped_count = 0;
    for (;;) {
      // A pool holds at most a queue's worth of chains: a driver that
      // republishes heads cannot make us queue without bound.
      const size_t pooled = pool_ != nullptr ? pooled_count() : 0;
      if (pool_ != nullptr && pooled >= queue_.size()) {
        pool_was_full_ = true;
        break;
      }
      auto popped = queue_.pop(*memory);
      if (!popped) break;
      ++popped_count;
      if (!popped->chain) {
        added |= give_back_refused(popped->head, popped->chain.error());
      } else if (pool_ != nullptr && pooled + queue_.available_count() + 1 >= kPoolFromPending) {
        dispatch_to_pool(std::move(*popped->chain), memory);
      } else {
        added |= serve_here(std::move(*popped->chain), memory);
      }
      // stop(): finish the chain in hand, leave the rest for the next start.
      if (stopping_.load(std::memory_order_relaxed)) break;
    }
    popped_total += static_cast<size_t>(popped_count);
    if (chains_popped_ != nullptr && popped_count > 0)
      metrics::QueueCounters::add(*chains_popped_, static_cast<uint64_t>(popped_count));
    // Stopping, or the pool is full: its next answer resumes us.
    if (stopping_.load(std::memory_order_relaxed) || pool_was_full_) break;
    if (!queue_.enable_notification()) break;
    // More is announced but nothing could be popped twice in a row: the
    // driver's avail index is broken (pop() refuses it). Wait for a kick
    // instead of spinning.
    empty_rounds = popped_count == 0 ? empty_rounds + 1 : 0;
    if (empty_rounds >= 2) break;
  }
  if (added) {
    queue_.publish_used();  // before the dirty log marks the ring
    log_used_ring();
  }
  if (added && queue_.should_notify()) call_.signal();
  return popped_total;
}

}  // namespace vfsd::vhost_user
