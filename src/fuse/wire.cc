#include "fuse/wire.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <limits>

namespace vfsd::fuse::wire {

void split_timeout(std::chrono::nanoseconds timeout, uint64_t& sec, uint32_t& nsec) {
  constexpr int64_t kNsPerSec = 1'000'000'000;
  int64_t ns = std::max<int64_t>(timeout.count(), 0);
  sec = static_cast<uint64_t>(ns / kNsPerSec);
  nsec = static_cast<uint32_t>(ns % kNsPerSec);
}

uint32_t encode_dev(dev_t dev) {
  uint32_t maj = major(dev);
  uint32_t min = minor(dev);
  return (min & 0xffu) | ((maj & 0xfffu) << 8) | ((min & ~0xffu) << 12);
}

dev_t decode_dev(uint32_t dev) {
  uint32_t maj = (dev & 0xfff00u) >> 8;
  uint32_t min = (dev & 0xffu) | ((dev >> 12) & 0xfff00u);
  return makedev(maj, min);
}

fuse_attr to_attr(const struct stat& st, uint32_t attr_flags) {
  fuse_attr a{};
  a.ino = st.st_ino;
  a.size = static_cast<uint64_t>(st.st_size);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  // The guest reads these as signed 64-bit seconds: a pre-1970 time survives
  // the round trip through uint64_t.
  a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink =
      static_cast<uint32_t>(std::min<uint64_t>(st.st_nlink, std::numeric_limits<uint32_t>::max()));
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = encode_dev(st.st_rdev);
  a.blksize = static_cast<uint32_t>(st.st_blksize);
  a.flags = attr_flags;
  return a;
}

fuse_entry_out to_entry_out(const Entry& entry) {
  fuse_entry_out out{};
  out.nodeid = entry.inode.value();
  out.generation = entry.generation;
  split_timeout(entry.entry_timeout, out.entry_valid, out.entry_valid_nsec);
  split_timeout(entry.attr_timeout, out.attr_valid, out.attr_valid_nsec);
  out.attr = to_attr(entry.attr, entry.attr_flags);
  return out;
}

fuse_attr_out to_attr_out(const AttrReply& reply) {
  fuse_attr_out out{};
  split_timeout(reply.timeout, out.attr_valid, out.attr_valid_nsec);
  out.attr = to_attr(reply.attr, 0);
  return out;
}

fuse_kstatfs to_kstatfs(const struct statvfs& st) {
  fuse_kstatfs k{};
  k.blocks = st.f_blocks;
  k.bfree = st.f_bfree;
  k.bavail = st.f_bavail;
  k.files = st.f_files;
  k.ffree = st.f_ffree;
  k.bsize = static_cast<uint32_t>(st.f_bsize);
  k.namelen = static_cast<uint32_t>(st.f_namemax);
  k.frsize = static_cast<uint32_t>(st.f_frsize);
  return k;
}

FileLock from_file_lock(const fuse_file_lock& lk) {
  FileLock lock;
  lock.start = lk.start;
  lock.end = lk.end;
  lock.type = lk.type;
  lock.pid = lk.pid;
  return lock;
}

fuse_file_lock to_file_lock(const FileLock& lock) {
  fuse_file_lock lk{};
  lk.start = lock.start;
  lk.end = lock.end;
  lk.type = lock.type;
  lk.pid = lock.pid;
  return lk;
}

}  // namespace vfsd::fuse::wire
