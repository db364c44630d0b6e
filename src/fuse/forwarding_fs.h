// A FileSystem that passes every call on to another one: the base of a
// decorator that changes a few operations (ReadOnlyFs refuses the modifying
// ones) and leaves the rest alone. A method added to FileSystem must be
// added here too, or the decorators answer it ENOSYS.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "fuse/filesystem.h"

namespace vfsd::fuse {

class ForwardingFs : public FileSystem {
 public:
  /// `inner` must outlive this object.
  explicit ForwardingFs(FileSystem& inner) : inner_(inner) {}

  Result<InitReply> init(const InitRequest& request) override { return inner_.init(request); }
  void destroy() override { inner_.destroy(); }

  Result<Entry> lookup(const Context& ctx, InodeId parent, const Name& name) override {
    return inner_.lookup(ctx, parent, name);
  }
  void forget(InodeId inode, uint64_t count) override { inner_.forget(inode, count); }
  void batch_forget(std::span<const std::pair<InodeId, uint64_t>> items) override {
    inner_.batch_forget(items);
  }

  Result<AttrReply> getattr(const Context& ctx, InodeId inode,
                            std::optional<HandleId> handle) override {
    return inner_.getattr(ctx, inode, handle);
  }
  Result<AttrReply> setattr(const Context& ctx, InodeId inode,
                            const SetattrRequest& request) override {
    return inner_.setattr(ctx, inode, request);
  }
  Result<std::string> readlink(const Context& ctx, InodeId inode) override {
    return inner_.readlink(ctx, inode);
  }
  Result<Entry> symlink(const Context& ctx, InodeId parent, const Name& name,
                        std::string_view target, const Extensions& ext) override {
    return inner_.symlink(ctx, parent, name, target, ext);
  }
  Result<Entry> mknod(const Context& ctx, InodeId parent, const Name& name, mode_t mode, dev_t rdev,
                      mode_t umask, const Extensions& ext) override {
    return inner_.mknod(ctx, parent, name, mode, rdev, umask, ext);
  }
  Result<Entry> mkdir(const Context& ctx, InodeId parent, const Name& name, mode_t mode,
                      mode_t umask, const Extensions& ext) override {
    return inner_.mkdir(ctx, parent, name, mode, umask, ext);
  }
  VoidResult unlink(const Context& ctx, InodeId parent, const Name& name) override {
    return inner_.unlink(ctx, parent, name);
  }
  VoidResult rmdir(const Context& ctx, InodeId parent, const Name& name) override {
    return inner_.rmdir(ctx, parent, name);
  }
  VoidResult rename(const Context& ctx, InodeId old_parent, const Name& old_name,
                    InodeId new_parent, const Name& new_name, uint32_t flags) override {
    return inner_.rename(ctx, old_parent, old_name, new_parent, new_name, flags);
  }
  Result<Entry> link(const Context& ctx, InodeId inode, InodeId new_parent,
                     const Name& name) override {
    return inner_.link(ctx, inode, new_parent, name);
  }

  Result<OpenReply> open(const Context& ctx, InodeId inode, uint32_t flags,
                         bool kill_suidgid) override {
    return inner_.open(ctx, inode, flags, kill_suidgid);
  }
  Result<std::pair<Entry, OpenReply>> create(const Context& ctx, InodeId parent, const Name& name,
                                             mode_t mode, uint32_t flags, mode_t umask,
                                             bool kill_suidgid, const Extensions& ext) override {
    return inner_.create(ctx, parent, name, mode, flags, umask, kill_suidgid, ext);
  }
  Result<size_t> read(const Context& ctx, InodeId inode, HandleId handle, IovecWriter& out,
                      uint32_t size, uint64_t offset) override {
    return inner_.read(ctx, inode, handle, out, size, offset);
  }
  Result<size_t> write(const Context& ctx, InodeId inode, HandleId handle, IovecReader& in,
                       uint32_t size, uint64_t offset, uint32_t write_flags,
                       std::optional<uint32_t> file_flags) override {
    return inner_.write(ctx, inode, handle, in, size, offset, write_flags, file_flags);
  }
  VoidResult flush(const Context& ctx, InodeId inode, HandleId handle,
                   uint64_t lock_owner) override {
    return inner_.flush(ctx, inode, handle, lock_owner);
  }
  VoidResult fsync(const Context& ctx, InodeId inode, HandleId handle, bool datasync) override {
    return inner_.fsync(ctx, inode, handle, datasync);
  }
  VoidResult release(const Context& ctx, InodeId inode, HandleId handle, uint32_t flags) override {
    return inner_.release(ctx, inode, handle, flags);
  }
  Result<struct statvfs> statfs(const Context& ctx, InodeId inode) override {
    return inner_.statfs(ctx, inode);
  }
  VoidResult access(const Context& ctx, InodeId inode, uint32_t mask) override {
    return inner_.access(ctx, inode, mask);
  }
  Result<uint64_t> lseek(const Context& ctx, InodeId inode, HandleId handle, uint64_t offset,
                         uint32_t whence) override {
    return inner_.lseek(ctx, inode, handle, offset, whence);
  }
  VoidResult fallocate(const Context& ctx, InodeId inode, HandleId handle, uint32_t mode,
                       uint64_t offset, uint64_t length) override {
    return inner_.fallocate(ctx, inode, handle, mode, offset, length);
  }
  VoidResult syncfs(const Context& ctx, InodeId inode) override {
    return inner_.syncfs(ctx, inode);
  }

  Result<OpenReply> opendir(const Context& ctx, InodeId inode, uint32_t flags) override {
    return inner_.opendir(ctx, inode, flags);
  }
  VoidResult readdir(const Context& ctx, InodeId inode, HandleId handle, uint64_t offset, bool plus,
                     DirSink& sink) override {
    return inner_.readdir(ctx, inode, handle, offset, plus, sink);
  }
  VoidResult fsyncdir(const Context& ctx, InodeId inode, HandleId handle, bool datasync) override {
    return inner_.fsyncdir(ctx, inode, handle, datasync);
  }
  VoidResult releasedir(const Context& ctx, InodeId inode, HandleId handle) override {
    return inner_.releasedir(ctx, inode, handle);
  }

  Result<XattrReply> getxattr(const Context& ctx, InodeId inode, std::string_view name,
                              uint32_t size) override {
    return inner_.getxattr(ctx, inode, name, size);
  }
  VoidResult setxattr(const Context& ctx, InodeId inode, std::string_view name,
                      std::string_view value, uint32_t flags, uint32_t setxattr_flags) override {
    return inner_.setxattr(ctx, inode, name, value, flags, setxattr_flags);
  }
  Result<XattrReply> listxattr(const Context& ctx, InodeId inode, uint32_t size) override {
    return inner_.listxattr(ctx, inode, size);
  }
  VoidResult removexattr(const Context& ctx, InodeId inode, std::string_view name) override {
    return inner_.removexattr(ctx, inode, name);
  }

  Result<size_t> copy_file_range(const Context& ctx, InodeId in, HandleId in_handle,
                                 uint64_t in_offset, InodeId out, HandleId out_handle,
                                 uint64_t out_offset, uint64_t length, uint64_t flags) override {
    return inner_.copy_file_range(ctx, in, in_handle, in_offset, out, out_handle, out_offset,
                                  length, flags);
  }
  Result<std::pair<Entry, OpenReply>> tmpfile(const Context& ctx, InodeId parent, mode_t mode,
                                              uint32_t flags, mode_t umask,
                                              const Extensions& ext) override {
    return inner_.tmpfile(ctx, parent, mode, flags, umask, ext);
  }
  Result<IoctlReply> ioctl(const Context& ctx, InodeId inode, HandleId handle, uint32_t ioctl_flags,
                           uint32_t cmd, std::string_view in, uint32_t out_size) override {
    return inner_.ioctl(ctx, inode, handle, ioctl_flags, cmd, in, out_size);
  }

  Result<FileLock> getlk(const Context& ctx, InodeId inode, HandleId handle, uint64_t owner,
                         const FileLock& lock, uint32_t lock_flags) override {
    return inner_.getlk(ctx, inode, handle, owner, lock, lock_flags);
  }
  VoidResult setlk(const Context& ctx, InodeId inode, HandleId handle, uint64_t owner,
                   const FileLock& lock, uint32_t lock_flags) override {
    return inner_.setlk(ctx, inode, handle, owner, lock, lock_flags);
  }
  void setlkw(const Context& ctx, InodeId inode, HandleId handle, uint64_t owner,
              const FileLock& lock, uint32_t lock_flags, uint64_t unique,
              std::function<void(VoidResult)> done) override {
    inner_.setlkw(ctx, inode, handle, owner, lock, lock_flags, unique, std::move(done));
  }
  void interrupt(uint64_t unique) override { inner_.interrupt(unique); }

 protected:
  FileSystem& inner() { return inner_; }

 private:
  FileSystem& inner_;
};

}  // namespace vfsd::fuse
