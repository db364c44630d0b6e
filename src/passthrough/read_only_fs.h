// ReadOnlyFs (--readonly): a decorator in front of another filesystem that
// refuses every operation that could modify the shared directory and passes
// every read through, as the Rust virtiofsd's PassthroughFsRo does.
//
// Beyond that reference: a create() whose open is refused gives back the
// lookup reference it took, writeback caching is never negotiated, and the
// modifying ioctls answer EROFS. Opening files with O_NOATIME is the inner
// PassthroughFs's job (PassthroughConfig::readonly), not this decorator's.
#pragma once

#include "fuse/filesystem.h"

namespace vfsd::passthrough {

class ReadOnlyFs final : public fuse::FileSystem {
 public:
  /// `inner` must outlive this object.
  explicit ReadOnlyFs(fuse::FileSystem& inner) : inner_(inner) {}

  /// Forwards, with FUSE_WRITEBACK_CACHE masked out of what the inner fs wants.
  Result<fuse::InitReply> init(const fuse::InitRequest&) override;
  void destroy() override;

  Result<fuse::Entry> lookup(const fuse::Context&, fuse::InodeId parent,
                             const fuse::Name& name) override;
  void forget(fuse::InodeId, uint64_t count) override;
  void batch_forget(std::span<const std::pair<fuse::InodeId, uint64_t>> items) override;

  Result<fuse::AttrReply> getattr(const fuse::Context&, fuse::InodeId,
                                  std::optional<fuse::HandleId>) override;
  /// EROFS, like every operation below that would modify the share.
  Result<fuse::AttrReply> setattr(const fuse::Context&, fuse::InodeId,
                                  const fuse::SetattrRequest&) override;
  Result<std::string> readlink(const fuse::Context&, fuse::InodeId) override;
  Result<fuse::Entry> symlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                              std::string_view target) override;
  Result<fuse::Entry> mknod(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, dev_t rdev, mode_t umask) override;
  Result<fuse::Entry> mkdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, mode_t umask) override;
  VoidResult unlink(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rmdir(const fuse::Context&, fuse::InodeId parent, const fuse::Name& name) override;
  VoidResult rename(const fuse::Context&, fuse::InodeId old_parent, const fuse::Name& old_name,
                    fuse::InodeId new_parent, const fuse::Name& new_name, uint32_t flags) override;
  Result<fuse::Entry> link(const fuse::Context&, fuse::InodeId inode, fuse::InodeId new_parent,
                           const fuse::Name& name) override;

  /// O_PATH passes unchanged; a write access mode or O_EXCL is EROFS;
  /// O_TMPFILE or O_TRUNC is EINVAL; O_CREAT is dropped, and a file that
  /// then does not exist is EROFS.
  Result<fuse::OpenReply> open(const fuse::Context&, fuse::InodeId, uint32_t flags) override;
  /// Opens an existing `name` under the open() rules (EROFS if it does not
  /// exist); never creates. A refused open drops the lookup reference again.
  Result<std::pair<fuse::Entry, fuse::OpenReply>> create(const fuse::Context&, fuse::InodeId parent,
                                                         const fuse::Name& name, mode_t mode,
                                                         uint32_t flags, mode_t umask) override;
  Result<size_t> read(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecWriter& out,
                      uint32_t size, uint64_t offset) override;
  Result<size_t> write(const fuse::Context&, fuse::InodeId, fuse::HandleId, IovecReader& in,
                       uint32_t size, uint64_t offset, uint32_t write_flags) override;
  VoidResult flush(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                   uint64_t lock_owner) override;
  VoidResult fsync(const fuse::Context&, fuse::InodeId, fuse::HandleId, bool datasync) override;
  VoidResult release(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t flags) override;
  Result<struct statvfs> statfs(const fuse::Context&, fuse::InodeId) override;
  /// EROFS when the mask asks for W_OK; forwarded otherwise.
  VoidResult access(const fuse::Context&, fuse::InodeId, uint32_t mask) override;
  Result<uint64_t> lseek(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t offset,
                         uint32_t whence) override;
  VoidResult fallocate(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint32_t mode,
                       uint64_t offset, uint64_t length) override;
  VoidResult syncfs(const fuse::Context&, fuse::InodeId) override;

  /// Under the open() rules.
  Result<fuse::OpenReply> opendir(const fuse::Context&, fuse::InodeId, uint32_t flags) override;
  VoidResult readdir(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t offset,
                     bool plus, fuse::DirSink& sink) override;
  VoidResult fsyncdir(const fuse::Context&, fuse::InodeId, fuse::HandleId, bool datasync) override;
  VoidResult releasedir(const fuse::Context&, fuse::InodeId, fuse::HandleId) override;

  Result<fuse::XattrReply> getxattr(const fuse::Context&, fuse::InodeId, std::string_view name,
                                    uint32_t size) override;
  VoidResult setxattr(const fuse::Context&, fuse::InodeId, std::string_view name,
                      std::string_view value, uint32_t flags, uint32_t setxattr_flags) override;
  Result<fuse::XattrReply> listxattr(const fuse::Context&, fuse::InodeId, uint32_t size) override;
  VoidResult removexattr(const fuse::Context&, fuse::InodeId, std::string_view name) override;

  Result<size_t> copy_file_range(const fuse::Context&, fuse::InodeId in, fuse::HandleId in_handle,
                                 uint64_t in_offset, fuse::InodeId out, fuse::HandleId out_handle,
                                 uint64_t out_offset, uint64_t length, uint64_t flags) override;
  Result<std::pair<fuse::Entry, fuse::OpenReply>> tmpfile(const fuse::Context&,
                                                          fuse::InodeId parent, mode_t mode,
                                                          uint32_t flags, mode_t umask) override;
  /// FS_IOC_SETFLAGS (both widths) and FS_IOC_FSSETXATTR are EROFS; the
  /// reading ioctls are forwarded.
  Result<fuse::IoctlReply> ioctl(const fuse::Context&, fuse::InodeId, fuse::HandleId,
                                 uint32_t ioctl_flags, uint32_t cmd, std::string_view in,
                                 uint32_t out_size) override;

  // Locks change no data: a read-only share still lets guests coordinate.
  Result<fuse::FileLock> getlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
                               const fuse::FileLock&, uint32_t lock_flags) override;
  VoidResult setlk(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
                   const fuse::FileLock&, uint32_t lock_flags) override;
  void setlkw(const fuse::Context&, fuse::InodeId, fuse::HandleId, uint64_t owner,
              const fuse::FileLock&, uint32_t lock_flags, uint64_t unique,
              std::function<void(VoidResult)> done) override;
  void interrupt(uint64_t unique) override;

 private:
  fuse::FileSystem& inner_;
};

}  // namespace vfsd::passthrough
