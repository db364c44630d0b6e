// Conversions between the domain types of filesystem.h and the FUSE wire
// structs. Pure functions, so the encoding is testable on its own.
#pragma once

#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>

#include "fuse/filesystem.h"

namespace vfsd::fuse::wire {

/// Splits a cache timeout into the seconds + nanoseconds pair FUSE uses.
/// Negative timeouts become zero (never cache).
void split_timeout(std::chrono::nanoseconds timeout, uint64_t& sec, uint32_t& nsec);

/// Encodes a host dev_t the way the Linux kernel's new_encode_dev does
/// (fuse_attr.rdev is decoded with new_decode_dev in the guest).
uint32_t encode_dev(dev_t dev);
/// Decodes a guest (new_encode_dev) device number into a host dev_t.
dev_t decode_dev(uint32_t dev);

fuse_attr to_attr(const struct stat& st, uint32_t attr_flags);
fuse_entry_out to_entry_out(const Entry& entry);
fuse_attr_out to_attr_out(const AttrReply& reply);
fuse_kstatfs to_kstatfs(const struct statvfs& st);

/// A POSIX lock between the wire (fuse_file_lock) and the domain type.
FileLock from_file_lock(const fuse_file_lock& lk);
fuse_file_lock to_file_lock(const FileLock& lock);

}  // namespace vfsd::fuse::wire
