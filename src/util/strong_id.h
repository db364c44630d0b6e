// A number that means one kind of id. Ids of different kinds (a FUSE node id
// and a file handle, say) do not convert into each other, and a plain number
// becomes an id, or an id a number, only where the code says so: InodeId{n},
// id.value().
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>

namespace vfsd {

template <class Tag>
class StrongId {
 public:
  constexpr StrongId() = default;
  constexpr explicit StrongId(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }

  friend constexpr auto operator<=>(StrongId, StrongId) = default;
  friend std::ostream& operator<<(std::ostream& out, StrongId id) { return out << id.value_; }

 private:
  uint64_t value_ = 0;
};

}  // namespace vfsd

template <class Tag>
struct std::hash<vfsd::StrongId<Tag>> {
  size_t operator()(vfsd::StrongId<Tag> id) const noexcept {
    return std::hash<uint64_t>{}(id.value());
  }
};
