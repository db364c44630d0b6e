// Host file handles (name_to_handle_at) and the per-mount fds needed to open
// them again, for --inode-file-handles.
//
// An inode referenced by a handle holds no fd between requests: each request
// opens it again with open_by_handle_at (one syscall and one close per
// request), so the number of host fds stays bounded however many inodes the
// guest has looked up. Opening a handle needs CAP_DAC_READ_SEARCH and an fd on
// the mount the handle came from. Handles only ever come from our own
// name_to_handle_at calls, never from the guest: open_by_handle_at can reach
// any inode of the filesystem, also outside the shared directory.
// Pinned by: file_handle_test.cc(FileHandleTest.*, ManyFilesTest.*),
// fd_budget_test.cc(FdBudgetTest.FileHandleInodesStopAtTheirCap)
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "passthrough/budget.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::passthrough {

/// An fd on one host mount: what open_by_handle_at needs to open the
/// handles of that mount, and what syncfs reaches a (sub)mount through.
/// Shared by every inode on the mount, so it closes (and the host may unmount)
/// once the guest has forgotten all of them.
struct MountFd {
  uint64_t mnt_id = 0;
  /// A directory of the mount opened O_RDONLY: open_by_handle_at and syncfs
  /// both refuse O_PATH fds (EBADF). When the mount was first met at a
  /// non-directory (a bind-mounted file), an O_PATH fd of that file.
  UniqueFd fd;
  mode_t type = 0;  // S_IFMT bits of that inode
  /// `fd` counted in the guest's fd budget (none for the shared root's mount,
  /// which the daemon holds anyway).
  Budget::Charge charge;
  /// Whether `fd` can open the mount's handles (and be synced as it is).
  bool opens_handles() const { return S_ISDIR(type); }
};

/// A host file handle: (type, opaque bytes), plus the mount id it belongs to.
/// Unlike (dev, ino), a handle also tells a deleted inode from a new one that
/// got its inode number (the filesystem puts a generation number in it).
class FileHandle {
 public:
  /// The largest handle we store (the kernel's MAX_HANDLE_SZ); a filesystem
  /// that needs more answers EOVERFLOW, like one without handles EOPNOTSUPP.
  static constexpr size_t kMaxBytes = 128;

  /// The handle of the inode `fd` refers to (O_PATH fds included; symlinks
  /// are not followed). EOPNOTSUPP or EOVERFLOW when its filesystem cannot
  /// give one; other errors are the syscall's.
  static Result<FileHandle> from_fd(int fd);
  /// The handle of what `name` (one component, not followed if a symlink)
  /// names in the directory `dir_fd`, without opening it.
  static Result<FileHandle> from_name(int dir_fd, const char* name);

  /// Opens the handle with open_by_handle_at. `mount_fd` is any fd on the
  /// handle's mount, not O_PATH (the kernel refuses those with EBADF). ESTALE when the inode no
  /// longer exists (deleted on the host); EPERM without CAP_DAC_READ_SEARCH.
  Result<UniqueFd> open(int mount_fd, int flags) const;

  /// A handle another process made (a migration's source): `bytes` are its
  /// f_handle (1 to kMaxBytes of them, else EINVAL), `mount_id` the mount
  /// it is to be opened on.
  static Result<FileHandle> from_bytes(int type, std::span<const uint8_t> bytes, uint64_t mount_id);

  /// The mount id name_to_handle_at reported.
  uint64_t mount_id() const { return mount_id_; }
  /// handle_type and the f_handle bytes, for a migration's state.
  int type() const { return type_; }
  std::span<const unsigned char> bytes() const { return {bytes_.data(), size_}; }

  /// Same handle type and bytes (the mount id is not compared).
  bool same_object(const FileHandle& other) const;
  /// Whether `name` in the directory `dir_fd` (one component, not followed)
  /// is the object of this handle: one name_to_handle_at into a buffer of
  /// this handle's size, nothing stored. Any failure (no such name, a
  /// handle of another size) answers false.
  bool names_same_object(int dir_fd, const char* name) const;

 private:
  static Result<FileHandle> handle_at(int dir_fd, const char* path, int flags);

  uint64_t mount_id_ = 0;
  int type_ = 0;
  uint32_t size_ = 0;
  std::array<unsigned char, kMaxBytes> bytes_{};
};

/// Whether an EOPNOTSUPP/EOVERFLOW from FileHandle::from_fd: the filesystem
/// has no (small enough) handles, which is permanent for that filesystem.
inline bool handles_unsupported(Errno e) {
  return e.value == EOPNOTSUPP || e.value == EOVERFLOW;
}

/// Start-up check of --inode-file-handles on the shared directory `root_fd`:
/// makes a handle of it and opens that handle again. Returns whether handles
/// are to be used. `mandatory`: any failure is an error (logged, naming the
/// step). Otherwise (prefer), as the Rust virtiofsd 1.13.3's: a shared
/// directory whose filesystem has no handles (EOPNOTSUPP, EOVERFLOW), or a
/// handle that cannot be opened (EPERM: no CAP_DAC_READ_SEARCH, e.g.
/// unprivileged) turns handles off altogether with a warning; other
/// name_to_handle_at errors fail. With handles on, a submount without them
/// falls back on its own (per mount, at lookup).
/// Pinned by: file_handle_test.cc(
///   FileHandleTest.MandatoryRefusesASharedDirWithoutHandlesAndPreferFallsBack,
///   FileHandleTest.PreferWithoutDacReadSearchServesWithFdsAndMandatoryRefuses)
Result<bool> check_file_handles(int root_fd, bool mandatory);

}  // namespace vfsd::passthrough
