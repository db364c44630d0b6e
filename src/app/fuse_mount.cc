#include "app/fuse_mount.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "fusedev/session.h"
#include "sandbox/sandbox.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace vfsd::app {
namespace {

// Blocks SIGTERM and SIGINT for the calling thread (and the threads it
// starts) and hands them out through a signalfd instead, so that a stop
// request is an event of the main loop, never a thread killed mid-request.
// The previous mask comes back on destruction, after the signals that
// arrived meanwhile were consumed.
class SignalGuard {
 public:
  SignalGuard() {
    sigemptyset(&mask_);
    sigaddset(&mask_, SIGTERM);
    sigaddset(&mask_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask_, &old_mask_);
    fd_.reset(::signalfd(-1, &mask_, SFD_CLOEXEC | SFD_NONBLOCK));
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  ~SignalGuard() {
    if (fd_) {
      signalfd_siginfo info{};
      while (::read(fd_.get(), &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }

  int fd() const { return fd_.get(); }

 private:
  sigset_t mask_{};
  sigset_t old_mask_{};
  UniqueFd fd_;
};

}  // namespace

namespace {

// Serves `session` with `fs` until a stop signal or the end of the
// connection; returns when the readers are stopped.
void serve_until_stopped(fusedev::Session& session, fuse::FileSystem& fs,
                         const fuse::ServerOptions& options, int signal_fd, bool unmount) {
  fuse::Server server(fs, options);
  if (auto started = session.start(server); !started) {
    log::error("starting FUSE readers: {}", errno_name(started.error().value));
    return;
  }
  log::info("serving over /dev/fuse on {}", session.mountpoint());
  for (;;) {
    std::array<pollfd, 2> fds{pollfd{signal_fd, POLLIN, 0}, pollfd{session.ended_fd(), POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      log::error("poll: {}", errno_name(errno));
      break;
    }
    if (fds[0].revents != 0) {
      signalfd_siginfo info{};
      if (::read(signal_fd, &info, sizeof(info)) != static_cast<ssize_t>(sizeof(info))) continue;
      log::info("received {}, {}", strsignal(static_cast<int>(info.ssi_signo)),
                unmount ? "unmounting" : "stopping");
      break;
    }
    if (fds[1].revents != 0) {
      log::info("{} was unmounted, exiting", session.mountpoint());
      break;
    }
  }
  // Detached before the readers stop, so that nothing new arrives; in a
  // sandboxed child the supervisor unmounts instead (the mount is not in the
  // child's namespace).
  if (unmount) {
    if (auto unmounted = session.unmount(); !unmounted) {
      log::error("unmounting {}: {}", session.mountpoint(), errno_name(unmounted.error().value));
    }
  }
  session.stop();
  // The kernel sends no DESTROY over /dev/fuse (only fuseblk gets one): end
  // the session here, which drops every inode and handle and ends lock waits.
  if (server.initialized()) fs.destroy();
}

}  // namespace

int run_fuse_mount(const FuseMountOptions& options, const PrepareServing& prepare) {
  // Before any reader thread exists, so that they all inherit the mask.
  SignalGuard signals;
  if (signals.fd() < 0) {
    log::error("signalfd: {}", errno_name(errno));
    return 1;
  }
  fusedev::SessionOptions session_options;
  session_options.mountpoint = options.mountpoint;
  session_options.threads = options.threads;
  session_options.max_write = options.server.max_write;
  session_options.max_pages = options.server.max_pages;
  auto session = fusedev::Session::mount(session_options);
  if (!session) {
    log::error("mounting FUSE on {}: {}", options.mountpoint, errno_name(session.error().value));
    return 1;
  }

  if (!options.supervise) {
    int exit_code = 1;
    fuse::FileSystem* fs = prepare(exit_code);
    if (fs == nullptr) return exit_code;
    serve_until_stopped(**session, *fs, options.server, signals.fd(), /*unmount=*/true);
    return (*session)->mounted() ? 1 : 0;
  }

  const pid_t child = ::fork();
  if (child < 0) {
    log::error("fork: {}", errno_name(errno));
    return 1;
  }
  if (child == 0) {
    // The serving child; it ends with its supervisor.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    int exit_code = 1;
    fuse::FileSystem* fs = prepare(exit_code);
    if (fs == nullptr) ::_exit(exit_code);
    serve_until_stopped(**session, *fs, options.server, signals.fd(), /*unmount=*/false);
    ::_exit(0);
  }
  // The supervisor: it keeps the mount's namespace and the privilege to
  // unmount, and serves nothing.
  const int child_exit = sandbox::wait_for_child(child, /*keep_unmount=*/true);
  int exit_code = child_exit;
  if (auto unmounted = (*session)->unmount(); !unmounted) {
    log::error("unmounting {}: {}", (*session)->mountpoint(), errno_name(unmounted.error().value));
    exit_code = 1;
  }
  (*session)->stop();
  return exit_code;
}

}  // namespace vfsd::app
