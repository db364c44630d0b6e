#include "fusedev/session.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <sstream>

#include "util/deferred_reply.h"
#include "util/log.h"

namespace vfsd::fusedev {

class Channel {
 public:
  explicit Channel(UniqueFd fd) : fd_(std::move(fd)) {}

  /// The /dev/fuse fd; valid until close(). Readers use it without the lock
  /// because the session joins them before it closes the channel.
  int fd() const { return fd_.get(); }

  /// Writes one reply with one write(), as the kernel requires. Nothing
  /// happens once the channel is closed.
  void send(const void* data, size_t len) {
    std::shared_lock lock(mutex_);
    if (!fd_) return;
    ssize_t n = ::write(fd_.get(), data, len);
    // ENOENT: the request was interrupted and the kernel forgot it already.
    if (n < 0 && errno != ENOENT) {
      log::warn("fusedev: writing a reply of {} bytes: {}", len, errno_name(errno));
    } else if (n >= 0 && static_cast<size_t>(n) != len) {
      log::warn("fusedev: short reply write ({} of {} bytes)", n, len);
    }
  }

  void close() {
    std::unique_lock lock(mutex_);
    fd_.reset();
  }

 private:
  // Shared by every reply write, exclusive for close(), so that a deferred
  // reply finishing late never writes to a closed (or reused) fd number.
  std::shared_mutex mutex_;
  UniqueFd fd_;
};

namespace {

// A deferred request's reply owns its buffer: the reader that carried the
// request reuses its own for the next one. Deferred requests (SETLKW) answer
// with a bare header, so a page is plenty; a larger reply fails in the
// server with EIO rather than overflowing.
constexpr size_t kDeferredReplySize = 4096;

class DeferredFuseReply final : public DeferredReply {
 public:
  explicit DeferredFuseReply(std::shared_ptr<Channel> channel)
      : channel_(std::move(channel)),
        buffer_(std::make_unique<std::byte[]>(kDeferredReplySize)),
        writer_(IovecList{iovec{buffer_.get(), kDeferredReplySize}}) {}

  IovecWriter& writer() override { return writer_; }
  void finish(size_t bytes) override {
    if (bytes > 0) channel_->send(buffer_.get(), std::min(bytes, kDeferredReplySize));
  }

 private:
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<std::byte[]> buffer_;
  IovecWriter writer_;
};

class FuseDeferrer final : public ReplyDeferrer {
 public:
  explicit FuseDeferrer(std::shared_ptr<Channel> channel) : channel_(std::move(channel)) {}
  std::unique_ptr<DeferredReply> defer() override {
    return std::make_unique<DeferredFuseReply>(channel_);
  }

 private:
  std::shared_ptr<Channel> channel_;
};

void signal_eventfd(int fd) {
  uint64_t one = 1;
  // An eventfd write of 1 only fails if the counter would overflow.
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof(one));
}

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string digits = field.substr(i + 1, 3);
      if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out.push_back(static_cast<char>(std::strtol(digits.c_str(), nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace

std::optional<MountEntry> find_mount(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::optional<MountEntry> found;
  std::string line;
  // Later lines are mounted on top of earlier ones: the last match is the
  // mount a path lookup sees.
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (!(fields >> id >> parent >> dev >> root >> point)) continue;
    if (unescape_mountinfo(point) != mountpoint) continue;
    // Optional fields end with a lone "-", then type and source.
    std::string word;
    while (fields >> word && word != "-") {
    }
    MountEntry entry;
    entry.device = dev;
    fields >> entry.fstype >> entry.source;
    entry.source = unescape_mountinfo(entry.source);
    found = std::move(entry);
  }
  return found;
}

Result<std::unique_ptr<Session>> Session::mount(SessionOptions options) {
  options.threads = std::max(options.threads, 1u);
  // The mount table names the canonical path; keep it to recognise our
  // mount later.
  char resolved[PATH_MAX];
  if (!::realpath(options.mountpoint.c_str(), resolved)) return fail_errno();
  options.mountpoint = resolved;
  struct stat st {};
  if (::stat(options.mountpoint.c_str(), &st) < 0) return fail_errno();
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR);

  // Non-blocking, so that a reader woken together with others for one
  // request goes back to poll() instead of sleeping in read().
  UniqueFd dev(::open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!dev) return fail_errno();
  UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  UniqueFd ended_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd || !ended_fd) return fail_errno();

  const std::string data =
      "fd=" + std::to_string(dev.get()) + ",rootmode=40000,user_id=" + std::to_string(::geteuid()) +
      ",group_id=" + std::to_string(::getegid()) + ",default_permissions,allow_other";
  const std::string typed = "fuse." + options.subtype;
  int rc = ::mount(options.source.c_str(), options.mountpoint.c_str(), typed.c_str(),
                   MS_NOSUID | MS_NODEV, data.c_str());
  if (rc < 0 && (errno == ENODEV || errno == EINVAL)) {
    // A kernel without FUSE subtypes knows the plain type only.
    rc = ::mount(options.source.c_str(), options.mountpoint.c_str(), "fuse", MS_NOSUID | MS_NODEV,
                 data.c_str());
  }
  if (rc < 0) return fail_errno();
  // Recorded now, from the mount table (a stat() of the root would need the
  // readers that are not started yet), so that unmount() never takes down a
  // mount that replaced ours.
  auto mounted = find_mount(options.mountpoint);
  auto channel = std::make_shared<Channel>(std::move(dev));
  std::unique_ptr<Session> session(
      new Session(std::move(options), std::move(channel), std::move(stop_fd), std::move(ended_fd)));
  if (mounted) session->device_ = mounted->device;
  log::info("fusedev: mounted on {}", session->options_.mountpoint);
  return session;
}

Session::Session(SessionOptions options, std::shared_ptr<Channel> channel, UniqueFd stop_fd,
                 UniqueFd ended_fd)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stop_fd_(std::move(stop_fd)),
      ended_fd_(std::move(ended_fd)) {}

Session::~Session() {
  (void)unmount();
  stop();
}

VoidResult Session::start(fuse::Server& server) {
  if (stopped_ || !readers_.empty()) return fail(EINVAL);
  server_ = &server;
  for (unsigned i = 0; i < options_.threads; ++i) readers_.emplace_back([this] { reader_loop(); });
  return ok();
}

void Session::mark_ended() {
  if (!ended_.exchange(true, std::memory_order_acq_rel)) signal_eventfd(ended_fd_.get());
}

void Session::reader_loop() {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // The kernel refuses a read into less than max_write plus the WRITE
  // headers (and less than FUSE_MIN_READ_BUFFER); one page covers the
  // headers.
  std::vector<std::byte> request(
      std::max<size_t>(FUSE_MIN_READ_BUFFER, size_t{options_.max_write} + page));
  // The largest reply is a READ of max_pages pages after its header.
  std::vector<std::byte> reply(size_t{options_.max_pages} * page + page);
  FuseDeferrer deferrer(channel_);
  const int dev = channel_->fd();

  for (;;) {
    std::array<pollfd, 2> fds{pollfd{dev, POLLIN, 0}, pollfd{stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      log::error("fusedev: poll: {}", errno_name(errno));
      mark_ended();
      return;
    }
    if (fds[1].revents != 0) return;
    ssize_t n = ::read(dev, request.data(), request.size());
    if (n < 0) {
      // EAGAIN: another reader took the request; ENOENT: it was
      // interrupted before anyone read it.
      if (errno == EAGAIN || errno == EINTR || errno == ENOENT) continue;
      // ENODEV: unmounted or aborted, the connection is gone.
      if (errno != ENODEV) log::error("fusedev: reading /dev/fuse: {}", errno_name(errno));
      mark_ended();
      return;
    }
    IovecReader in(IovecList{iovec{request.data(), static_cast<size_t>(n)}});
    IovecWriter out(IovecList{iovec{reply.data(), reply.size()}});
    const size_t len = server_->handle(in, out, &deferrer);
    if (len > 0) channel_->send(reply.data(), len);
  }
}

VoidResult Session::unmount() {
  if (!mounted_) return ok();
  // Only our own mount: after an external umount something else may sit on
  // the mountpoint now.
  auto current = find_mount(options_.mountpoint);
  const bool ours = current && (device_.empty() ? current->fstype.starts_with("fuse")
                                                : current->device == device_);
  if (!ours) {
    mounted_ = false;
    return ok();
  }
  if (::umount2(options_.mountpoint.c_str(), 0) < 0) {
    if (errno != EBUSY) return fail_errno();
    // Busy: detach it from the tree now; the files still open on it keep
    // working until stop() closes the connection.
    log::info("fusedev: {} is busy, detaching it", options_.mountpoint);
    if (::umount2(options_.mountpoint.c_str(), MNT_DETACH) < 0) return fail_errno();
  }
  mounted_ = false;
  log::info("fusedev: unmounted {}", options_.mountpoint);
  return ok();
}

void Session::stop() {
  if (stopped_) return;
  stopped_ = true;
  signal_eventfd(stop_fd_.get());
  for (auto& reader : readers_) reader.join();
  readers_.clear();
  // Closing /dev/fuse aborts the connection: anything still waiting on a
  // lazily detached mount gets ENOTCONN instead of hanging.
  channel_->close();
}

}  // namespace vfsd::fusedev
