#include "vhost_user/state_transfer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace vfsd::vhost_user {

StateTransfer::StateTransfer() = default;

Result<std::unique_ptr<StateTransfer>> StateTransfer::save(UniqueFd fd,
                                                           std::vector<uint8_t> state) {
  std::unique_ptr<StateTransfer> t(new StateTransfer());
  t->cancel_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!t->cancel_fd_) return fail_errno();
  // Non-blocking: the thread waits in poll(), where cancel() reaches it.
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) return fail_errno();
  t->bytes_ = std::move(state);
  try {
    t->thread_ =
        std::thread([p = t.get(), fd = std::move(fd)]() mutable { p->run_save(std::move(fd)); });
  } catch (const std::system_error&) {
    return fail(EAGAIN);
  }
  return t;
}

Result<std::unique_ptr<StateTransfer>> StateTransfer::load(UniqueFd fd, size_t limit) {
  std::unique_ptr<StateTransfer> t(new StateTransfer());
  t->cancel_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!t->cancel_fd_) return fail_errno();
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) return fail_errno();
  try {
    t->thread_ = std::thread(
        [p = t.get(), fd = std::move(fd), limit]() mutable { p->run_load(std::move(fd), limit); });
  } catch (const std::system_error&) {
    return fail(EAGAIN);
  }
  return t;
}

StateTransfer::~StateTransfer() {
  cancel();
  if (thread_.joinable()) thread_.join();
}

void StateTransfer::cancel() {
  const uint64_t one = 1;
  if (cancel_fd_) {
    while (::write(cancel_fd_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
}

Result<std::vector<uint8_t>> StateTransfer::finish() {
  if (thread_.joinable()) thread_.join();
  if (error_ != 0) return fail(error_);
  return std::move(bytes_);
}

bool StateTransfer::wait_for(int fd, short events) const {
  for (;;) {
    pollfd fds[2] = {{fd, events, 0}, {cancel_fd_.get(), POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (fds[1].revents != 0) return false;
    return true;  // ready, or an error/hang-up the next syscall reports
  }
}

void StateTransfer::run_save(UniqueFd fd) {
  size_t done = 0;
  while (done < bytes_.size()) {
    const ssize_t n = ::write(fd.get(), bytes_.data() + done, bytes_.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      error_ = errno;
      return;
    }
    if (!wait_for(fd.get(), POLLOUT)) {
      error_ = ECANCELED;
      return;
    }
  }
  // Closing our end is the end-of-state mark.
  bytes_.clear();
}

void StateTransfer::run_load(UniqueFd fd, size_t limit) {
  std::vector<uint8_t> chunk(64 * 1024);
  for (;;) {
    const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n > 0) {
      if (static_cast<size_t>(n) > limit - std::min(limit, bytes_.size())) {
        error_ = EFBIG;
        return;
      }
      bytes_.insert(bytes_.end(), chunk.begin(), chunk.begin() + n);
      continue;
    }
    if (n == 0) return;  // EOF: the front-end wrote everything
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      error_ = errno;
      return;
    }
    if (!wait_for(fd.get(), POLLIN)) {
      error_ = ECANCELED;
      return;
    }
  }
}

}  // namespace vfsd::vhost_user
