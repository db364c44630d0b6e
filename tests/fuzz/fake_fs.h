// A filesystem that answers every operation without touching the host, so
// that the FUSE server's handlers run to their end. Its answers are
// plausible (entries, handles, data, directory listings, xattrs, locks) and
// steered by the node id the request names, so the fuzzer reaches error and
// hostile-filesystem paths too:
//
//   nodeid % 16 == 13  fails, with errno nodeid >> 4 (0 and > 4095 included:
//                      the server must still send a real errno)
//   nodeid % 16 == 14  throws (std::runtime_error, or std::bad_alloc when
//                      bit 4 is set): the request must cost only itself
//   nodeid % 16 == 15  misbehaves: more data than asked for (READ, WRITE,
//                      READLINK, xattrs, IOCTL), READDIR entries that
//                      ignore fits()
//   otherwise          answers normally (the root, 1, among them)
//
// It also checks what the server promises a filesystem: names that parse,
// no "." or ".." where an entry is made or removed, xattr names and values,
// symlink targets, ioctl and read sizes within bounds, lock ranges the host
// can represent, WRITE readers holding exactly the data. A broken promise
// is a finding (abort).
//
// SETLKW: completed at once when the pid is odd (or without a deferrer),
// otherwise parked until INTERRUPT, destroy() or finish_parked().
#pragma once

#include <fcntl.h>
#include <linux/limits.h>
#include <sys/stat.h>

#include <climits>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "fuse/abi_ext.h"
#include "fuse/filesystem.h"
#include "fuzz_common.h"

namespace vfsd::fuzz {

class FakeFs final : public fuse::FileSystem {
 public:
  struct Options {
    uint64_t wanted_flags = ~uint64_t{0};
    uint64_t required_flags = 0;
    bool park_setlkw = true;  // false without a deferrer: a parked wait would hang
    uint32_t max_write = 1u << 20;
  };
  explicit FakeFs(Options options) : options_(options) {}
  ~FakeFs() override { finish_parked(); }

  /// Ends every parked SETLKW with EINTR.
  void finish_parked() {
    std::map<uint64_t, std::function<void(VoidResult)>> parked;
    {
      std::lock_guard lock(mu_);
      parked.swap(parked_);
    }
    for (auto& [unique, done] : parked) done(fail(EINTR));
  }

  Result<fuse::InitReply> init(const fuse::InitRequest& request) override {
    (void)request;
    fuse::InitReply reply;
    reply.wanted_flags = options_.wanted_flags;
    reply.required_flags = options_.required_flags;
    return reply;
  }
  void destroy() override { finish_parked(); }

  Result<fuse::Entry> lookup(const fuse::Context& ctx, fuse::InodeId parent,
                             const fuse::Name& name) override {
    check_ctx(ctx);
    check_name(name, /*dots_ok=*/true);
    VFSD_TRY(behave(parent));
    return entry(parent, name.view(), S_IFREG | 0644);
  }
  void forget(fuse::InodeId, uint64_t) override {}
  void batch_forget(std::span<const std::pair<fuse::InodeId, uint64_t>> items) override {
    VFSD_FUZZ_CHECK(!items.empty() && items.size() <= 64);
  }

  Result<fuse::AttrReply> getattr(const fuse::Context& ctx, fuse::InodeId ino,
                                  std::optional<fuse::HandleId>) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    return fuse::AttrReply{stat_of(ino, S_IFREG | 0644), std::chrono::seconds(1)};
  }
  Result<fuse::AttrReply> setattr(const fuse::Context& ctx, fuse::InodeId ino,
                                  const fuse::SetattrRequest& s) override {
    check_ctx(ctx);
    check_time(s.atime);
    check_time(s.mtime);
    VFSD_TRY(behave(ino));
    struct stat st = stat_of(ino, S_IFREG | (s.mode & 07777));
    st.st_size = static_cast<off_t>(s.size & 0xffffffff);
    return fuse::AttrReply{st, std::chrono::seconds(1)};
  }
  Result<std::string> readlink(const fuse::Context& ctx, fuse::InodeId ino) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    if (misbehaves(ino)) return std::string(2 * PATH_MAX, 'x');
    return std::string("target/of/") + std::to_string(ino.value());
  }
  Result<fuse::Entry> symlink(const fuse::Context& ctx, fuse::InodeId parent,
                              const fuse::Name& name, std::string_view target,
                              const fuse::Extensions& ext) override {
    check_ctx(ctx);
    check_ext(ext);
    check_name(name, false);
    VFSD_FUZZ_CHECK(!target.empty() && target.size() < PATH_MAX &&
                    target.find('\0') == std::string_view::npos);
    VFSD_TRY(behave(parent));
    return entry(parent, name.view(), S_IFLNK | 0777);
  }
  Result<fuse::Entry> mknod(const fuse::Context& ctx, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, dev_t, mode_t, const fuse::Extensions& ext) override {
    check_ctx(ctx);
    check_ext(ext);
    check_name(name, false);
    VFSD_TRY(behave(parent));
    return entry(parent, name.view(), mode);
  }
  Result<fuse::Entry> mkdir(const fuse::Context& ctx, fuse::InodeId parent, const fuse::Name& name,
                            mode_t mode, mode_t, const fuse::Extensions& ext) override {
    check_ctx(ctx);
    check_ext(ext);
    check_name(name, false);
    VFSD_TRY(behave(parent));
    return entry(parent, name.view(), S_IFDIR | (mode & 07777));
  }
  VoidResult unlink(const fuse::Context& ctx, fuse::InodeId parent,
                    const fuse::Name& name) override {
    check_ctx(ctx);
    check_name(name, false);
    return behave(parent);
  }
  VoidResult rmdir(const fuse::Context& ctx, fuse::InodeId parent,
                   const fuse::Name& name) override {
    check_ctx(ctx);
    check_name(name, false);
    return behave(parent);
  }
  VoidResult rename(const fuse::Context& ctx, fuse::InodeId old_parent, const fuse::Name& old_name,
                    fuse::InodeId new_parent, const fuse::Name& new_name, uint32_t) override {
    check_ctx(ctx);
    check_name(old_name, false);
    check_name(new_name, false);
    VFSD_TRY(behave(old_parent));
    return behave(new_parent);
  }
  Result<fuse::Entry> link(const fuse::Context& ctx, fuse::InodeId ino, fuse::InodeId new_parent,
                           const fuse::Name& name) override {
    check_ctx(ctx);
    check_name(name, false);
    VFSD_TRY(behave(ino));
    return entry(new_parent, name.view(), S_IFREG | 0644);
  }

  Result<fuse::OpenReply> open(const fuse::Context& ctx, fuse::InodeId ino, uint32_t flags,
                               bool) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    return fuse::OpenReply{fuse::HandleId{ino.value() * 7 + flags}, 0};
  }
  Result<std::pair<fuse::Entry, fuse::OpenReply>> create(const fuse::Context& ctx,
                                                         fuse::InodeId parent,
                                                         const fuse::Name& name, mode_t mode,
                                                         uint32_t flags, mode_t, bool,
                                                         const fuse::Extensions& ext) override {
    check_ctx(ctx);
    check_ext(ext);
    check_name(name, false);
    VFSD_TRY(behave(parent));
    auto e = entry(parent, name.view(), S_IFREG | (mode & 07777));
    return std::make_pair(e, fuse::OpenReply{fuse::HandleId{e.inode.value() + flags}, 0});
  }
  Result<size_t> read(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, IovecWriter& out,
                      uint32_t size, uint64_t offset) override {
    check_ctx(ctx);
    VFSD_FUZZ_CHECK(size <= out.remaining());
    VFSD_TRY(behave(ino));
    // Short reads past "end of file", like a real file of 64 KiB.
    size_t n = offset >= 65536 ? 0 : std::min<uint64_t>(size, 65536 - offset);
    write_pattern(out, n, static_cast<uint8_t>(offset));
    if (misbehaves(ino)) return n + 4096;
    return n;
  }
  Result<size_t> write(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, IovecReader& in,
                       uint32_t size, uint64_t, uint32_t, std::optional<uint32_t>) override {
    check_ctx(ctx);
    VFSD_FUZZ_CHECK(in.remaining() == size);
    VFSD_FUZZ_CHECK(size <= options_.max_write);
    VFSD_TRY(behave(ino));
    // Reads the data as pwritev would, in pieces.
    uint8_t sink[4096];
    size_t left = size;
    while (left > 0) {
      size_t k = std::min(left, sizeof(sink));
      VFSD_FUZZ_CHECK(in.read(sink, k));
      left -= k;
    }
    if (misbehaves(ino)) return size_t{size} + 1;
    return size;
  }
  VoidResult flush(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, uint64_t) override {
    check_ctx(ctx);
    return behave(ino);
  }
  VoidResult fsync(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, bool) override {
    check_ctx(ctx);
    return behave(ino);
  }
  VoidResult release(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId,
                     uint32_t) override {
    check_ctx(ctx);
    return behave(ino);
  }
  Result<struct statvfs> statfs(const fuse::Context& ctx, fuse::InodeId ino) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    struct statvfs st {};
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = ino.value();
    st.f_bfree = ino.value() / 2;
    st.f_namemax = 255;
    return st;
  }
  VoidResult access(const fuse::Context& ctx, fuse::InodeId ino, uint32_t) override {
    check_ctx(ctx);
    return behave(ino);
  }
  Result<uint64_t> lseek(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId,
                         uint64_t offset, uint32_t) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    return offset + 1;
  }
  VoidResult fallocate(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, uint32_t,
                       uint64_t, uint64_t) override {
    check_ctx(ctx);
    return behave(ino);
  }
  VoidResult syncfs(const fuse::Context& ctx, fuse::InodeId ino) override {
    check_ctx(ctx);
    return behave(ino);
  }

  Result<fuse::OpenReply> opendir(const fuse::Context& ctx, fuse::InodeId ino, uint32_t) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    return fuse::OpenReply{fuse::HandleId{ino.value() + 1000}, 0};
  }
  VoidResult readdir(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, uint64_t offset,
                     bool plus, fuse::DirSink& sink) override {
    check_ctx(ctx);
    VFSD_TRY(behave(ino));
    // A directory of 100 entries: ".", "..", then names of growing length
    // (up to NAME_MAX, and one longer that must never fit).
    for (uint64_t i = offset; i < 100; ++i) {
      std::string name = i == 0   ? "."
                         : i == 1 ? ".."
                                  : std::string(i == 99 ? 300 : (i * 7) % 256 + 1, 'a' + i % 26);
      if (!misbehaves(ino) && !sink.fits(name.size())) break;
      fuse::DirEntry d{ino.value() * 100 + i, i + 1, DT_REG, name};
      if (plus && i >= 2) {
        fuse::Entry e = entry(ino, name, S_IFREG | 0644);
        sink.add(d, &e);
      } else {
        sink.add(d, nullptr);
      }
      // Past a few failures the listing ends in an error after entries.
      if (i == 50 && ino.value() % 3 == 0) return fail(EIO);
    }
    return ok();
  }
  VoidResult fsyncdir(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, bool) override {
    check_ctx(ctx);
    return behave(ino);
  }
  VoidResult releasedir(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId) override {
    check_ctx(ctx);
    return behave(ino);
  }

  Result<fuse::XattrReply> getxattr(const fuse::Context& ctx, fuse::InodeId ino,
                                    std::string_view name, uint32_t size) override {
    check_ctx(ctx);
    check_xattr_name(name);
    VFSD_FUZZ_CHECK(size <= 65536);
    VFSD_TRY(behave(ino));
    return xattr_reply(ino, size, std::string(name) + "=value");
  }
  VoidResult setxattr(const fuse::Context& ctx, fuse::InodeId ino, std::string_view name,
                      std::string_view value, uint32_t, uint32_t) override {
    check_ctx(ctx);
    check_xattr_name(name);
    VFSD_FUZZ_CHECK(value.size() <= 65536);
    return behave(ino);
  }
  Result<fuse::XattrReply> listxattr(const fuse::Context& ctx, fuse::InodeId ino,
                                     uint32_t size) override {
    check_ctx(ctx);
    VFSD_FUZZ_CHECK(size <= 65536);
    VFSD_TRY(behave(ino));
    return xattr_reply(ino, size, std::string("user.a\0trusted.b\0security.c\0", 28));
  }
  VoidResult removexattr(const fuse::Context& ctx, fuse::InodeId ino,
                         std::string_view name) override {
    check_ctx(ctx);
    check_xattr_name(name);
    return behave(ino);
  }

  Result<size_t> copy_file_range(const fuse::Context& ctx, fuse::InodeId in, fuse::HandleId,
                                 uint64_t, fuse::InodeId out, fuse::HandleId, uint64_t,
                                 uint64_t length, uint64_t) override {
    check_ctx(ctx);
    VFSD_FUZZ_CHECK(length <= UINT32_MAX);
    VFSD_TRY(behave(in));
    VFSD_TRY(behave(out));
    if (misbehaves(in)) return size_t{UINT32_MAX} + 5;
    return length / 2;
  }
  Result<std::pair<fuse::Entry, fuse::OpenReply>> tmpfile(const fuse::Context& ctx,
                                                          fuse::InodeId parent, mode_t mode,
                                                          uint32_t flags, mode_t,
                                                          const fuse::Extensions& ext) override {
    check_ctx(ctx);
    check_ext(ext);
    VFSD_TRY(behave(parent));
    auto e = entry(parent, "tmpfile", S_IFREG | (mode & 07777));
    return std::make_pair(e, fuse::OpenReply{fuse::HandleId{e.inode.value() + flags}, 0});
  }
  Result<fuse::IoctlReply> ioctl(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId,
                                 uint32_t, uint32_t cmd, std::string_view in,
                                 uint32_t out_size) override {
    check_ctx(ctx);
    VFSD_FUZZ_CHECK(in.size() <= 16383 && out_size <= 16383);
    VFSD_TRY(behave(ino));
    fuse::IoctlReply reply;
    reply.result = static_cast<int32_t>(cmd & 0xff);
    reply.out.assign(misbehaves(ino) ? out_size + 1 : std::min<uint32_t>(out_size, 24), 'i');
    return reply;
  }

  Result<fuse::FileLock> getlk(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId,
                               uint64_t, const fuse::FileLock& lock, uint32_t) override {
    check_ctx(ctx);
    check_lock(lock);
    VFSD_TRY(behave(ino));
    fuse::FileLock out = lock;
    out.type = F_UNLCK;
    return out;
  }
  VoidResult setlk(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, uint64_t,
                   const fuse::FileLock& lock, uint32_t) override {
    check_ctx(ctx);
    check_lock(lock);
    return behave(ino);
  }
  void setlkw(const fuse::Context& ctx, fuse::InodeId ino, fuse::HandleId, uint64_t,
              const fuse::FileLock& lock, uint32_t, uint64_t unique,
              std::function<void(VoidResult)> done) override {
    check_ctx(ctx);
    check_lock(lock);
    VoidResult now = ino.value() % 16 == 14 ? fail(EIO) : behave_noexcept(ino);
    if (!now || !options_.park_setlkw || (ctx.pid & 1) != 0) {
      done(now);
      return;
    }
    std::unique_lock held(mu_);
    if (parked_.size() >= 64 || parked_.count(unique) != 0) {
      held.unlock();
      done(fail(ENOLCK));
      return;
    }
    parked_.emplace(unique, std::move(done));
  }
  void interrupt(uint64_t unique) override {
    std::function<void(VoidResult)> done;
    {
      std::lock_guard lock(mu_);
      auto it = parked_.find(unique);
      if (it == parked_.end()) return;
      done = std::move(it->second);
      parked_.erase(it);
    }
    done(fail(EINTR));
  }

 private:
  static bool misbehaves(fuse::InodeId ino) { return ino.value() % 16 == 15; }

  // The behaviour picked by the node id (see the header comment).
  static VoidResult behave(fuse::InodeId id) {
    const uint64_t ino = id.value();
    if (ino % 16 == 14) {
      if (ino & 16) throw std::bad_alloc();
      throw std::runtime_error("fake filesystem failure");
    }
    return behave_noexcept(id);
  }
  static VoidResult behave_noexcept(fuse::InodeId id) {
    const uint64_t ino = id.value();
    if (ino % 16 == 13) return fail(static_cast<int>(ino >> 4));
    return ok();
  }

  static void check_ctx(const fuse::Context& ctx) { (void)ctx; }
  // What a creating request's extensions may carry (extensions.cc's limits).
  static void check_ext(const fuse::Extensions& ext) {
    VFSD_FUZZ_CHECK(ext.supplementary_groups.size() <= 65536);
    if (ext.security_context) {
      check_xattr_name(ext.security_context->name);
      VFSD_FUZZ_CHECK(!ext.security_context->value.empty() &&
                      ext.security_context->value.size() <= 65536);
    }
  }
  static void check_name(const fuse::Name& name, bool dots_ok) {
    std::string_view v = name.view();
    VFSD_FUZZ_CHECK(!v.empty() && v.size() <= NAME_MAX);
    VFSD_FUZZ_CHECK(v.find('/') == std::string_view::npos &&
                    v.find('\0') == std::string_view::npos);
    if (!dots_ok) VFSD_FUZZ_CHECK(!name.is_dot_or_dotdot());
  }
  static void check_xattr_name(std::string_view name) {
    VFSD_FUZZ_CHECK(!name.empty() && name.size() <= 255 &&
                    name.find('\0') == std::string_view::npos);
  }
  static void check_time(const timespec& t) {
    VFSD_FUZZ_CHECK(t.tv_nsec == UTIME_NOW || (t.tv_nsec >= 0 && t.tv_nsec <= 999'999'999));
  }
  static void check_lock(const fuse::FileLock& lock) {
    VFSD_FUZZ_CHECK(lock.type == F_RDLCK || lock.type == F_WRLCK || lock.type == F_UNLCK);
    VFSD_FUZZ_CHECK(lock.start <= lock.end && lock.end <= uint64_t{INT64_MAX});
  }

  static struct stat stat_of(fuse::InodeId id, mode_t mode) {
    const uint64_t ino = id.value();
    struct stat st {};
    st.st_ino = ino;
    st.st_mode = mode;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(ino % 100000);
    st.st_blksize = 4096;
    st.st_mtim.tv_sec = static_cast<time_t>(ino);
    return st;
  }
  static fuse::Entry entry(fuse::InodeId parent, std::string_view name, mode_t mode) {
    fuse::Entry e;
    uint64_t h = parent.value() * 1000003;
    for (char c : name) h = h * 131 + static_cast<uint8_t>(c);
    // Mostly well-behaved ids for the next requests to use.
    e.inode = fuse::InodeId{(h % 16 >= 13) ? h - 4 : h};
    if (e.inode == fuse::InodeId{0}) e.inode = fuse::InodeId{3};
    e.generation = h >> 7;
    e.attr = stat_of(e.inode, mode);
    e.entry_timeout = std::chrono::seconds(1);
    e.attr_timeout = std::chrono::nanoseconds(static_cast<int64_t>(h % 3) - 1);
    return e;
  }
  static void write_pattern(IovecWriter& out, size_t n, uint8_t seed) {
    uint8_t buf[4096];
    for (size_t i = 0; i < sizeof(buf); ++i) buf[i] = static_cast<uint8_t>(seed + i);
    while (n > 0) {
      size_t k = std::min(n, sizeof(buf));
      VFSD_FUZZ_CHECK(out.write(buf, k));
      n -= k;
    }
  }
  static Result<fuse::XattrReply> xattr_reply(fuse::InodeId ino, uint32_t size, std::string data) {
    fuse::XattrReply reply;
    reply.size = data.size();
    if (size == 0) return reply;
    if (misbehaves(ino)) {
      reply.data = std::string(size + 10, 'v');
      return reply;
    }
    if (data.size() > size) return fail(ERANGE);
    reply.data = std::move(data);
    return reply;
  }

  const Options options_;
  std::mutex mu_;
  std::map<uint64_t, std::function<void(VoidResult)>> parked_;
};

}  // namespace vfsd::fuzz
