#include "passthrough/file_handle.h"

#include <fcntl.h>
#include <time.h>

#include <cstring>

#include "passthrough/safe_open.h"
#include "util/log.h"

namespace vfsd::passthrough {

namespace {

// struct file_handle ends in a flexible array: keep it in a buffer with room
// for the largest handle we accept.
struct HandleBuffer {
  alignas(struct file_handle) unsigned char raw[sizeof(struct file_handle) + FileHandle::kMaxBytes];
  struct file_handle* get() {
    return reinterpret_cast<struct file_handle*>(raw);
  }
};

}  // namespace

Result<FileHandle> FileHandle::from_fd(int fd) {
  return handle_at(fd, "", AT_EMPTY_PATH);
}

Result<FileHandle> FileHandle::from_name(int dir_fd, const char* name) {
  return handle_at(dir_fd, name, 0);
}

Result<FileHandle> FileHandle::handle_at(int dir_fd, const char* path, int flags) {
  HandleBuffer buffer{};
  buffer.get()->handle_bytes = kMaxBytes;
  int mount_id = 0;
  if (::name_to_handle_at(dir_fd, path, buffer.get(), &mount_id, flags) != 0) {
    return fail_errno();
  }
  FileHandle handle;
  handle.size_ = buffer.get()->handle_bytes;
  if (handle.size_ > kMaxBytes) return fail(EOVERFLOW);  // the kernel never does this
  handle.type_ = buffer.get()->handle_type;
  handle.mount_id_ = static_cast<uint64_t>(static_cast<unsigned>(mount_id));
  std::memcpy(handle.bytes_.data(), buffer.raw + sizeof(struct file_handle), handle.size_);
  return handle;
}

Result<UniqueFd> FileHandle::open(int mount_fd, int flags) const {
  HandleBuffer buffer{};
  buffer.get()->handle_bytes = size_;
  buffer.get()->handle_type = type_;
  std::memcpy(buffer.raw + sizeof(struct file_handle), bytes_.data(), size_);
  // A handle whose inode number the host is reusing for a file it is
  // creating right now fails with ENOMEM: the kernel's inode lookup finds
  // the new inode half-built (I_CREATING) and reports that as an allocation
  // failure. The race ends within the creation, after which the answer is
  // the true one (ESTALE, or the file), so ENOMEM is retried briefly and
  // only passed on if it persists.
  constexpr int kAttempts = 20;
  constexpr timespec kPause{0, 100'000};
  for (int attempt = 1;; ++attempt) {
    UniqueFd fd(::open_by_handle_at(mount_fd, buffer.get(), flags | O_CLOEXEC));
    if (fd) return fd;
    if (errno != ENOMEM || attempt == kAttempts) return fail_errno();
    ::nanosleep(&kPause, nullptr);
  }
}

Result<FileHandle> FileHandle::from_bytes(int type, std::span<const uint8_t> bytes,
                                          uint64_t mount_id) {
  if (bytes.empty() || bytes.size() > kMaxBytes) return fail(EINVAL);
  FileHandle handle;
  handle.type_ = type;
  handle.size_ = static_cast<uint32_t>(bytes.size());
  handle.mount_id_ = mount_id;
  std::memcpy(handle.bytes_.data(), bytes.data(), bytes.size());
  return handle;
}

bool FileHandle::same_object(const FileHandle& other) const {
  return type_ == other.type_ && size_ == other.size_ &&
         std::memcmp(bytes_.data(), other.bytes_.data(), size_) == 0;
}

bool FileHandle::names_same_object(int dir_fd, const char* name) const {
  // Sized to this handle: a handle of another size is another object, and the
  // kernel says so (EOVERFLOW) without copying it. Not zeroed: on success
  // the kernel has written every byte compared below.
  HandleBuffer buffer;
  buffer.get()->handle_bytes = size_;
  int mount_id = 0;
  if (::name_to_handle_at(dir_fd, name, buffer.get(), &mount_id, 0) != 0) return false;
  return buffer.get()->handle_type == type_ && buffer.get()->handle_bytes == size_ &&
         std::memcmp(buffer.raw + sizeof(struct file_handle), bytes_.data(), size_) == 0;
}

Result<bool> check_file_handles(int root_fd, bool mandatory) {
  const char* mode = mandatory ? "mandatory" : "prefer";
  auto handle = FileHandle::from_fd(root_fd);
  if (!handle) {
    // As the Rust virtiofsd's prefer: a shared directory without handles
    // (EOPNOTSUPP, or too big: EOVERFLOW) turns them off altogether; any
    // other failure is a failed start in either mode.
    if (!mandatory && handles_unsupported(handle.error())) {
      log::warn(
          "--inode-file-handles=prefer: the shared directory's filesystem has no file handles "
          "({}); file handles turned off, inodes hold O_PATH fds",
          errno_name(handle.error().value));
      return false;
    }
    log::error("--inode-file-handles={}: name_to_handle_at on the shared directory: {}", mode,
               errno_name(handle.error().value));
    return tl::unexpected(handle.error());
  }
  // open_by_handle_at refuses an O_PATH mount fd: use a real one.
  auto mount_fd = open_beneath(root_fd, ".", O_RDONLY | O_DIRECTORY);
  if (!mount_fd) {
    log::error("--inode-file-handles={}: opening the shared directory: {}", mode,
               errno_name(mount_fd.error().value));
    return tl::unexpected(mount_fd.error());
  }
  auto reopened = handle->open(mount_fd->get(), O_PATH);
  if (!reopened) {
    if (mandatory) {
      log::error(
          "--inode-file-handles=mandatory: open_by_handle_at on the shared directory: {} (needs "
          "CAP_DAC_READ_SEARCH)",
          errno_name(reopened.error().value));
      return tl::unexpected(reopened.error());
    }
    log::warn(
        "--inode-file-handles=prefer: open_by_handle_at on the shared directory: {}; file "
        "handles turned off",
        errno_name(reopened.error().value));
    return false;
  }
  return true;
}

}  // namespace vfsd::passthrough
