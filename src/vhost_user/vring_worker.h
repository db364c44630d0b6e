// One thread per started virtqueue: wait for a kick, pop every available
// chain, hand each to the RequestHandler, put it on the used ring, and
// signal the call eventfd when the driver asked for it.
//
// Deferred chains. The handler may defer a chain (a SETLKW that waits for a
// lock): the worker then leaves it off the used ring and goes on with the
// next one. The DeferredReply it hands out keeps the chain's writable
// segments and the memory snapshot they point into; its finish(), from any
// thread, copies the reply into the chain and queues (head, length) to the
// worker through a mutex-guarded list and an eventfd that the worker polls
// beside the kick fd. The worker puts finished chains on the used ring in the
// order they finished, which need not be the order they were popped.
//
// next_avail with deferred chains outstanding: a deferred chain counts as
// consumed (it was popped), so the index stop() returns is past it. stop()
// (GET_VRING_BASE, reset, disconnect) does not wait for deferred chains,
// only for the chain in hand; the worker's shared state is marked dead under
// its mutex, and a finish() after that neither writes guest memory nor
// touches the ring: the chain is dropped, as a device reset drops every
// request in flight. A finish() that returned before stop() is honoured (its
// chain goes on the used ring during stop()). Each worker has its own shared
// state, so a ring that is stopped and started again never sees completions
// of chains popped by an earlier worker (the "generation" is the state).
//
// Pooled chains (--thread-pool-size). With a ThreadPool the worker only pops:
// each chain goes to a pool thread that runs the handler and writes the reply
// straight into the chain (no copy), then queues (head, length) the same way
// a finished deferred reply does. Because those writes reach guest memory,
// stop() waits until every pooled chain is answered before the ring is
// handed back; a pooled request that must wait for a lock defers itself as
// above, so stop() never waits on a guest's lock. At most a queue's worth of
// chains is in the pool at a time; beyond that the worker waits for answers
// before it pops more. While few requests are pending (this one, the ones
// still on the ring and the ones in the pool: fewer than kPoolFromPending)
// the worker serves the chain itself: a hand-off to another thread and back
// costs two wake-ups, which is most of a request at depth 1.
//
// Kick batching (the hiprio queue). FORGETs need no answer and come one per
// evicted inode: a kick and a wake-up for each costs more than serving it.
// With EVENT_IDX and KickBatching{chains > 1}, after serving a batch the
// worker asks the driver to kick only at the chains-th next chain and waits
// at most `linger` for that kick; when the linger runs out it serves what
// came and, if nothing did, asks for a kick per chain again and sleeps
// without a timeout: an idle queue does no timed waits, and no chain waits
// longer than about `linger`. (Polling is not used on a batching queue.)
// Pinned by: deferred_test.cc(Deferred.*, Pool.*),
// datapath_test.cc(DataPath.*, HiprioBatching.*),
// stack_test.cc(StackTest.GetVringBaseReturnsTheNextIndexAndStopsTheRing)
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "util/result.h"
#include "util/unique_fd.h"
#include "vhost_user/adaptive_poll.h"
#include "vhost_user/dirty_log.h"
#include "virtio/guest_memory.h"
#include "virtio/queue.h"

namespace vfsd {
class ThreadPool;
}

namespace vfsd::vhost_user {

/// With a pool, a chain goes to it only when at least this many requests are
/// pending on its queue (see "Pooled chains" above).
inline constexpr size_t kPoolFromPending = 3;

/// See "Kick batching" above; the default (one chain) kicks for every chain.
struct KickBatching {
  uint32_t chains = 1;
  std::chrono::nanoseconds linger{0};
};

namespace detail {
struct DeferredState;  // defined in vring_worker.cc
}

/// The call eventfd of one vring. The front-end replaces it while the ring
/// runs (QEMU does, while the guest runs): signalling and replacing hold the
/// same lock, so a worker never writes to an fd that was closed (and whose
/// number may already belong to something else).
/// Pinned by: stack_test.cc(StackTest.CallFdReplacedWhileTheRingRunsIsTheOneSignalled),
/// datapath_test.cc(DataPath.ReplacedCallFdIsSignalledAndTheOldOneNot)
class CallFd {
 public:
  /// Closes the previous fd; an invalid `fd` means "no notifications".
  void replace(UniqueFd fd);
  /// Adds 1 to the eventfd, if there is one.
  void signal();

 private:
  std::mutex mu_;
  UniqueFd fd_;
};

/// The current memory-table snapshot. The serve thread publishes a new one
/// on every table change; workers copy the pointer once per batch, which
/// keeps the mappings they use alive even if the regions are removed.
class MemorySnapshot {
 public:
  std::shared_ptr<const virtio::GuestMemory> get() const;
  void set(std::shared_ptr<const virtio::GuestMemory> memory);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const virtio::GuestMemory> memory_;
};

class VringWorker {
 public:
  /// Starts the thread. `kick_fd`, `memory`, `call` and `handler` must
  /// outlive the worker (the Backend owns them and stops the worker first).
  /// The worker serves what is already available before waiting for a kick.
  /// With a `pool` (which must outlive the worker too), the chains are served
  /// by its threads. After the ring runs dry the worker polls it for up to
  /// `max_poll` (adaptively, see adaptive_poll.h) before it sleeps. Every
  /// chain popped is added to `chains_popped` (if given; it must outlive the
  /// worker, and only this worker may write it). While `logging.log` has a
  /// log, every reply's bytes and (with `logging.used` on) the used ring are
  /// marked in it; both must outlive the worker. `batching` spaces the
  /// driver's kicks (see "Kick batching" above).
  static Result<std::unique_ptr<VringWorker>> start(
      uint32_t queue_index, virtio::SplitQueue queue, int kick_fd, const MemorySnapshot& memory,
      CallFd& call, virtio::RequestHandler& handler, ThreadPool* pool = nullptr,
      AdaptivePoll::Duration max_poll = AdaptivePoll::Duration::zero(),
      std::atomic<uint64_t>* chains_popped = nullptr, RingLogging logging = {},
      KickBatching batching = {});
  ~VringWorker();
  VringWorker(const VringWorker&) = delete;
  VringWorker& operator=(const VringWorker&) = delete;

  /// Lets the chain being served finish, stops the thread and joins it.
  /// Returns the index of the next chain to pop (GET_VRING_BASE's answer).
  /// Idempotent.
  uint16_t stop();

 private:
  VringWorker(uint32_t queue_index, virtio::SplitQueue queue, int kick_fd, UniqueFd stop_fd,
              const MemorySnapshot& memory, CallFd& call, virtio::RequestHandler& handler,
              ThreadPool* pool, std::shared_ptr<detail::DeferredState> deferred,
              AdaptivePoll::Duration max_poll, std::atomic<uint64_t>* chains_popped,
              KickBatching batching);
  void run();
  // Marks the whole used ring in the dirty log, if logging is on for it
  // (every used-ring write is inside it: elements, index, flags, avail_event).
  void log_used_ring() const;
  // Polls the avail ring for the adaptive window; true if work (chains, or
  // answers from the pool or a deferred reply) arrived. Leaves kicks enabled
  // when it returns false.
  bool poll_for_work();
  // Waits for a kick, a stop or an answer; false when the worker must stop.
  bool wait_and_serve();
  // Serves everything available, until stopping is requested or the pool
  // is full; returns how many chains it popped.
  size_t process();
  // process(), then, on a batching queue that found work, asks for the next
  // kick only after a batch and lingers (serving at once what already makes
  // a batch); after a linger that ran out with nothing, a kick per chain.
  void process_and_rearm(bool linger_ran_out = false);
  // Logs a chain pop() refused and gives it back empty where the used ring
  // can take it; true if it went on the used ring.
  bool give_back_refused(uint16_t head, virtio::ChainError error);
  // Serves a chain on this thread; true if it went on the used ring (false:
  // the handler deferred it).
  bool serve_here(virtio::DescriptorChain chain,
                  const std::shared_ptr<const virtio::GuestMemory>& memory);
  // Puts the chains whose deferred reply finished on the used ring; true if
  // any was added.
  bool add_finished();
  // This worker's chains in the pool, not answered yet.
  size_t pooled_count() const;
  void dispatch_to_pool(virtio::DescriptorChain chain,
                        const std::shared_ptr<const virtio::GuestMemory>& memory);

  const uint32_t index_;
  virtio::SplitQueue queue_;
  const int kick_fd_;  // borrowed: owned by the Backend's vring
  UniqueFd stop_fd_;   // eventfd that wakes the thread for stop()
  const MemorySnapshot& memory_;
  CallFd& call_;
  virtio::RequestHandler& handler_;
  ThreadPool* const pool_;  // null: chains are served on this thread
  // process() stopped popping because the pool was full; the next answer
  // resumes it. Worker thread only.
  bool pool_was_full_ = false;
  AdaptivePoll poll_;  // worker thread only
  const KickBatching batching_;
  // The driver was asked to kick only after a batch: the next wait ends
  // after batching_.linger at the latest. Worker thread only.
  bool lingering_ = false;
  std::atomic<uint64_t>* const chains_popped_;  // null: not counted
  std::atomic<bool> stopping_{false};
  // Shared with the DeferredReply objects this worker handed out; outlives
  // the worker while any of them does.
  std::shared_ptr<detail::DeferredState> deferred_;
  std::thread thread_;
};

}  // namespace vfsd::vhost_user
