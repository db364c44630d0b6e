// A slot of T per thread, for an owner object whose hot counters every
// request moves: each thread writes only its own slot, so a counter there
// moves with a plain load and store instead of a locked read-modify-write.
// (On x86 a locked instruction also waits until the core's pending stores,
// the reply just written to guest memory among them, have left its store
// buffer; measured at 7-9% of a request's CPU time.) Readers visit every
// slot under the registry's lock.
//
// A thread takes its slot on first use and hands it back when it ends, so a
// later thread (a worker of the next frontend, say) reuses it: the slots stay
// as many as the threads that ran at the same time, and what a slot counted
// is never lost. A thread that uses a second owner of the same T (tests make
// several) gives its slot of the first back first.
// Pinned by: thread_slots_test.cc(ThreadSlots.*)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace vfsd {

template <typename T>
class ThreadSlots {
 public:
  ThreadSlots() : registry_(std::make_shared<Registry>()), id_(next_id_.fetch_add(1)) {}
  ThreadSlots(const ThreadSlots&) = delete;
  ThreadSlots& operator=(const ThreadSlots&) = delete;

  /// The calling thread's slot, which only this thread writes.
  T& local() { return t_cache.owner == id_ ? *t_cache.slot : attach_this_thread(); }

  /// Calls fn(const T&) for every slot made so far, under the lock that
  /// attaching a thread takes.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    std::lock_guard lock(registry_->mutex);
    for (const auto& slot : registry_->slots) fn(static_cast<const T&>(*slot));
  }

  /// Slots made so far. For tests.
  size_t size() const {
    std::lock_guard lock(registry_->mutex);
    return registry_->slots.size();
  }

 private:
  struct Registry {
    std::mutex mutex;
    std::vector<std::unique_ptr<T>> slots;  // every slot made; only grows
    std::vector<T*> free;                   // slots whose thread ended
  };

  // Looked up on every local(): trivially destructible and constant
  // initialised, so reading it costs no TLS initialisation check.
  struct Cache {
    uint64_t owner = 0;  // id_ of the ThreadSlots the slot belongs to; 0: none
    T* slot = nullptr;
  };

  // Hands the slot back when the thread ends, if its owner still exists.
  struct Return {
    std::weak_ptr<Registry> registry;
    void give_back() {
      if (t_cache.slot == nullptr) return;
      if (auto r = registry.lock()) {
        std::lock_guard lock(r->mutex);
        r->free.push_back(t_cache.slot);
      }
      t_cache = {};
      registry.reset();
    }
    ~Return() { give_back(); }
  };

  T& attach_this_thread() {
    t_return.give_back();
    T* slot = nullptr;
    {
      std::lock_guard lock(registry_->mutex);
      if (!registry_->free.empty()) {
        slot = registry_->free.back();
        registry_->free.pop_back();
      } else {
        registry_->slots.push_back(std::make_unique<T>());
        slot = registry_->slots.back().get();
      }
    }
    t_cache = {id_, slot};
    t_return.registry = registry_;
    return *slot;
  }

  static constinit inline thread_local Cache t_cache{};
  static inline thread_local Return t_return{};
  static inline std::atomic<uint64_t> next_id_{1};

  // Shared with the threads holding a slot: one that ends after this object
  // gives its slot back only if the registry still exists.
  std::shared_ptr<Registry> registry_;
  const uint64_t id_;  // never reused, unlike an address
};

/// Adds to a counter that only the calling thread writes: a plain load and
/// a release store, no locked instruction. Readers load it with acquire (or
/// relaxed where order does not matter).
inline void bump_owned(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_release);
}

}  // namespace vfsd
