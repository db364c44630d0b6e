// A lookup reference that gives itself back: owned by the code that took it
// until the guest is given the entry it belongs to.
#pragma once

#include <cstdint>
#include <utility>

#include "fuse/filesystem.h"

namespace vfsd::passthrough {

/// Owns one lookup reference on `id` in `Owner` (an InodeStore, or the
/// fuse::FileSystem a decorator forwards to: anything with
/// forget(InodeId, uint64_t)). Destroyed while it still owns it, it forgets
/// it again: an error path after the reference was taken cannot leak it.
/// release_to_guest() hands it to the guest, whose FORGET then drops it.
/// Pinned by: read_only_fs_test.cc(ReadOnlyFsTest.CreateWhoseOpenFailsGivesTheLookupReferenceBack),
/// fd_budget_test.cc(FdBudgetTest.CreatingPastTheBudgetCreatesNothing)
template <class Owner>
class LookupRef {
 public:
  LookupRef() = default;
  /// Takes over one reference already taken on `id` (by a lookup).
  LookupRef(Owner& owner, fuse::InodeId id) : owner_(&owner), id_(id) {}
  LookupRef(LookupRef&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)), id_(other.id_) {}
  LookupRef& operator=(LookupRef&& other) noexcept {
    if (this != &other) {
      reset();
      owner_ = std::exchange(other.owner_, nullptr);
      id_ = other.id_;
    }
    return *this;
  }
  LookupRef(const LookupRef&) = delete;
  LookupRef& operator=(const LookupRef&) = delete;
  ~LookupRef() { reset(); }

  fuse::InodeId id() const { return id_; }

  /// The guest holds the reference from now on (it is being sent the entry).
  fuse::InodeId release_to_guest() {
    owner_ = nullptr;
    return id_;
  }

 private:
  void reset() {
    if (owner_ != nullptr) std::exchange(owner_, nullptr)->forget(id_, 1);
  }

  Owner* owner_ = nullptr;
  fuse::InodeId id_{};
};

}  // namespace vfsd::passthrough
