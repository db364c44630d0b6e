// ReadOnlyFs (--readonly): a decorator in front of another filesystem that
// refuses every operation that could modify the shared directory and passes
// every read through, as the Rust virtiofsd's PassthroughFsRo does.
//
// Beyond that reference: a create() whose open is refused gives back the
// lookup reference it took, writeback caching is never negotiated, and the
// modifying ioctls answer EROFS. Opening files with O_NOATIME is the inner
// PassthroughFs's job (PassthroughConfig::readonly), not this decorator's.
// Pinned by: read_only_fs_test.cc(ReadOnlyFsTest.*, ReadOnlyOpenTest.*),
//   readonly_hostile_test.cc(ReadOnlyHostileTest.*, ReadOnlyShareTest.*),
//   session_test.cc(SessionTest.ReadOnlyFsRefusesModificationsThroughTheMount)
#pragma once

#include "fuse/forwarding_fs.h"

namespace vfsd::passthrough {

// Every operation not named here is forwarded (fuse::ForwardingFs): it reads.
// One that can modify the share must be named here: ReadOnlyFsTest checks that
// no modifying call is forwarded, and ReadOnlyHostileTest / ReadOnlyShareTest
// send every modifying request through a real read-only stack and check the
// host is unchanged.
class ReadOnlyFs final : public fuse::ForwardingFs {
 public:
  /// `inner` must outlive this object.
  explicit ReadOnlyFs(fuse::FileSystem& inner) : ForwardingFs(inner) {}

  /// Forwards, with FUSE_WRITEBACK_CACHE masked out of what the inner fs wants.
  Result<fuse::InitReply> init(const fuse::InitRequest&) override;

  /// EROFS, like every operation below that would modify the share.
  Result<fuse::AttrReply> setattr(const fuse::Context&, fuse::InodeId,
                                  const fuse::SetattrRequest&) override;
  Result<fuse::Entry> symlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                              std::string_view target, const fuse::Extensions&) override;
  Result<fuse::Entry> mknod(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, dev_t rdev, mode_t umask,
                            const fuse::Extensions&) override;
  Result<fuse::Entry> mkdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, mode_t umask, const fuse::Extensions&) override;
  VoidResult unlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rmdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rename(const fuse::Context&, fuse::InodeId old_parent, const fuse::Name& old_name,
                    fuse::InodeId new_parent, const fuse::Name& new_name, uint32_t flags) override;
  Result<fuse::Entry> link(const fuse::Context&, fuse::InodeId inode, fuse::InodeId new_parent,
                           const fuse::Name& name) override;

  /// O_PATH passes unchanged; a write access mode or O_EXCL is EROFS;
  /// O_TMPFILE or O_TRUNC is EINVAL; O_CREAT is dropped, and a file that
  /// then does not exist is EROFS.
  Result<fuse::OpenReply> open(const fuse::Context&, fuse::InodeId, uint32_t flags,
                               bool kill_suidgid) override;
  /// Opens an existing `name` under the open() rules (EROFS if it does not
  /// exist); never creates. A refused open drops the lookup reference again.
  Result<std::pair<fuse::Entry, fuse::OpenReply>> create(const fuse::Context&, fuse::InodeId parent,
                                                         const fuse::Name& name, mode_t mode,
                                                         uint32_t flags, mode_t umask,
                                                         bool kill_suidgid,
                                                         const fuse::Extensions&) override;
  Result<size_t> write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader& in,
                       uint32_t size, uint64_t offset, uint32_t write_flags,
                       std::optional<uint32_t> file_flags) override;
  /// EROFS when the mask asks for W_OK; forwarded otherwise.
  VoidResult access(const fuse::Context&, fuse::InodeId, uint32_t mask) override;
  VoidResult fallocate(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t mode,
                       uint64_t offset, uint64_t length) override;

  /// Under the open() rules.
  Result<fuse::OpenReply> opendir(const fuse::Context&, fuse::InodeId, uint32_t flags) override;

  VoidResult setxattr(const fuse::Context&, fuse::InodeId, std::string_view name,
                      std::string_view value, uint32_t flags, uint32_t setxattr_flags) override;
  VoidResult removexattr(const fuse::Context&, fuse::InodeId, std::string_view name) override;

  Result<size_t> copy_file_range(const fuse::Context&, fuse::InodeId in, fuse::HandleId in_handle,
                                 uint64_t in_offset, fuse::InodeId out, fuse::HandleId out_handle,
                                 uint64_t out_offset, uint64_t length, uint64_t flags) override;
  Result<std::pair<fuse::Entry, fuse::OpenReply>> tmpfile(const fuse::Context&,
                                                          fuse::InodeId parent, mode_t mode,
                                                          uint32_t flags, mode_t umask,
                                                          const fuse::Extensions&) override;
  /// FS_IOC_SETFLAGS (both widths) and FS_IOC_FSSETXATTR are EROFS; the
  /// reading ioctls are forwarded.
  Result<fuse::IoctlReply> ioctl(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                                 uint32_t ioctl_flags, uint32_t cmd, std::string_view in,
                                 uint32_t out_size) override;
  // Locks change no data (forwarded): a read-only share still lets guests
  // coordinate.
};

}  // namespace vfsd::passthrough
