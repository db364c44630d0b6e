#include "app/metrics_service.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <system_error>

#include "util/log.h"

namespace vfsd::app {

namespace {

// Set by the SIGUSR1 handler, taken by the metrics thread. Lock-free, so
// async-signal-safe.
std::atomic<bool> g_summary_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void note_summary_request(int) {
  g_summary_requested.store(true, std::memory_order_relaxed);
}

// Waits until `fd` has `events` or `deadline` passes; false on the deadline
// or an error.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

void prepare_metrics_signal() {
  struct sigaction sa {};
  sa.sa_handler = note_summary_request;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &sa, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
}

MetricsService::MetricsService(const metrics::RequestMetrics& metrics,
                               std::span<const std::string_view> names, UniqueFd listener,
                               GaugeSource gauges)
    : metrics_(metrics),
      names_(names),
      listener_(std::move(listener)),
      gauges_(std::move(gauges)) {}

MetricsService::~MetricsService() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
}

VoidResult MetricsService::start() {
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_) return fail_errno();
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error& e) {
    return fail(e.code().value());
  }
  return ok();
}

std::string MetricsService::http_response() const {
  const std::vector<metrics::Gauge> gauges = gauges_ ? gauges_() : std::vector<metrics::Gauge>{};
  const std::string body = metrics::render_prometheus(metrics_.snapshot(), names_, gauges);
  return "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::vector<std::string> MetricsService::summary() const {
  const std::vector<metrics::Gauge> gauges = gauges_ ? gauges_() : std::vector<metrics::Gauge>{};
  return metrics::summary_lines(metrics_.snapshot(), names_, gauges);
}

void MetricsService::run() {
  // SIGUSR1 is blocked here as everywhere; ppoll lets it in while waiting.
  sigset_t waiting_mask;
  ::pthread_sigmask(SIG_BLOCK, nullptr, &waiting_mask);
  sigdelset(&waiting_mask, SIGUSR1);
  for (;;) {
    std::array<pollfd, 2> fds{pollfd{stop_.get(), POLLIN, 0}, pollfd{listener_.get(), POLLIN, 0}};
    const int n = ::ppoll(fds.data(), fds.size(), nullptr, &waiting_mask);
    const int poll_errno = errno;
    if (g_summary_requested.exchange(false, std::memory_order_relaxed)) {
      const std::vector<std::string> lines = summary();
      log::info("metrics: SIGUSR1 summary, {} line(s)", lines.size());
      for (const std::string& line : lines) log::info("metrics: {}", line);
    }
    if (n < 0) {
      if (poll_errno == EINTR) continue;
      log::error("metrics: ppoll: {}", errno_name(poll_errno));
      return;
    }
    if (fds[0].revents != 0) return;
    if (fds[1].revents & (POLLERR | POLLNVAL)) {
      log::warn("metrics: the metrics socket failed; no longer serving it");
      listener_.reset();
      continue;
    }
    if (fds[1].revents & POLLIN) {
      UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (client) serve_connection(client.get());
    }
  }
}

void MetricsService::serve_connection(int fd) const {
  const auto deadline = std::chrono::steady_clock::now() + kConnectionTimeout;
  // The answer does not depend on the request (any path, any method), so it
  // goes out at once: `socat - UNIX-CONNECT:PATH` sends nothing at all.
  const std::string response = http_response();
  size_t sent = 0;
  while (sent < response.size()) {
    const ssize_t n = ::write(fd, response.data() + sent, response.size() - sent);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      if (!wait_for(fd, POLLOUT, deadline)) return;
    } else {
      return;  // the client went away (EPIPE: SIGPIPE is ignored)
    }
  }
  // Read what the client sent, up to the end of an HTTP request header, its
  // EOF or the deadline: closing with its request unread would reset the
  // connection under it before it read the answer.
  std::string request;
  char buf[1024];
  while (request.size() < 16 * 1024) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    // EOF, an error, or nothing more within the deadline.
    if (n == 0 || (n < 0 && (errno != EAGAIN || !wait_for(fd, POLLIN, deadline)))) return;
    if (n < 0) continue;  // readable now
    request.append(buf, static_cast<size_t>(n));
    if (request.find("\r\n\r\n") != std::string::npos ||
        request.find("\n\n") != std::string::npos) {
      return;
    }
  }
}

}  // namespace vfsd::app
