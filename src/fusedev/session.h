// A host FUSE mount: the kernel's own FUSE driver (/dev/fuse) as a second
// transport for fuse::Server, beside virtio. The kernel is the peer here and
// is trusted to frame requests; the server still checks them as it does a
// guest's.
//
// Threads: `threads` readers, each with its own request and reply buffers,
// read one request, let the server answer it and write the reply with one
// write(). A request the server defers (SETLKW) gets its own small reply
// buffer and is answered by whichever thread finishes it.
// Pinned by: session_test.cc(SessionTest.*), run_fuse_mount_test.cc(RunFuseMountTest.*)
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fuse/server.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::fusedev {

struct SessionOptions {
  std::string mountpoint;
  /// Reader threads (at least one).
  unsigned threads = 1;
  /// The server's max_write: sizes the request buffers, which the kernel
  /// requires to hold a whole WRITE (FUSE_MIN_READ_BUFFER and more).
  uint32_t max_write = 1u << 20;
  /// The server's max_pages: sizes the reply buffers (a READ reply).
  uint32_t max_pages = 256;
  /// Shown as the mount's source in /proc/self/mountinfo.
  std::string source = "virtiofsd-cpp";
  /// Mount type "fuse.<subtype>"; plain "fuse" if the kernel refuses it.
  std::string subtype = "virtiofsd-cpp";
};

/// One line of /proc/self/mountinfo.
struct MountEntry {
  std::string device;  // "major:minor" of the mounted filesystem
  std::string fstype;  // e.g. "fuse.virtiofsd-cpp"
  std::string source;
};

/// The mount a lookup of `mountpoint` (a canonical absolute path) lands on,
/// from /proc/self/mountinfo; nullopt if nothing is mounted exactly there.
std::optional<MountEntry> find_mount(const std::string& mountpoint);

/// The shared end of /dev/fuse; deferred replies hold it so that they can be
/// written after the reader that took the request moved on, and become
/// no-ops once the session closed it.
class Channel;

/// start(), unmount(), stop() and the destructor are called from one
/// controlling thread; the readers are the session's own.
class Session {
 public:
  /// Opens /dev/fuse and mounts it on `options.mountpoint` (needs root).
  /// Nothing is served until start(). The mount and the server are apart so
  /// that a supervisor can mount in the host's mount namespace and a
  /// sandboxed child (which inherits the session) can serve it.
  static Result<std::unique_ptr<Session>> mount(SessionOptions options);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  /// Stops and joins the readers, unmounts if still mounted, closes /dev/fuse.
  ~Session();

  /// Starts the reader threads, which hand each request to `server` (it
  /// must outlive the session's stop()).
  VoidResult start(fuse::Server& server);
  /// Readable (an eventfd) once the kernel ended the connection, e.g. after
  /// an external umount: the caller's cue to call stop().
  int ended_fd() const { return ended_fd_.get(); }
  /// Whether the kernel ended the connection.
  bool ended() const { return ended_.load(std::memory_order_acquire); }
  /// Detaches the mount: umount2(), and MNT_DETACH if it is busy. Files
  /// still open on a lazily detached mount keep being served until stop().
  /// Idempotent.
  VoidResult unmount();
  /// Lets every reader finish the request it is handling, then joins them
  /// and closes /dev/fuse (which aborts what is left of the connection).
  /// Later deferred replies are dropped. Idempotent.
  void stop();

  const std::string& mountpoint() const { return options_.mountpoint; }
  /// Whether the mount is still ours to unmount (unmount() not done yet).
  bool mounted() const { return mounted_; }

 private:
  Session(SessionOptions options, std::shared_ptr<Channel> channel, UniqueFd stop_fd,
          UniqueFd ended_fd);
  void reader_loop();
  void mark_ended();

  fuse::Server* server_ = nullptr;  // set by start()
  const SessionOptions options_;
  std::shared_ptr<Channel> channel_;
  UniqueFd stop_fd_;   // eventfd: readers leave their loop once it is readable
  UniqueFd ended_fd_;  // eventfd: written once the connection ended
  std::atomic<bool> ended_{false};
  std::string device_;  // our mount's "major:minor", from the mount table
  bool mounted_ = true;
  bool stopped_ = false;
  std::vector<std::thread> readers_;
};

}  // namespace vfsd::fusedev
