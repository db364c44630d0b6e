// How an operator reads the request metrics while the daemon runs (issue
// 10): SIGUSR1 logs a summary at info level, and --metrics-socket=PATH
// answers every connection with the Prometheus text exposition over
// HTTP/1.0 (`curl --unix-socket PATH http://localhost/metrics`, or
// `socat - UNIX-CONNECT:PATH`).
//
// Both are served by one thread started after the seccomp filter is loaded
// (so it inherits it; it needs only ppoll, accept4, read, write and close).
// SIGUSR1 is blocked in every thread and taken only inside that thread's
// ppoll, so no worker's system call is ever interrupted by it. A client gets
// at most kConnectionTimeout of the thread, so a stuck reader cannot hold it.
// Pinned by: daemon_metrics_test.cc(DaemonMetrics.*)
#pragma once

#include <chrono>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/metrics.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace vfsd::app {

/// Installs SIGUSR1's handler (it only notes the request) and blocks SIGUSR1
/// in the calling thread. Call it in the main thread before any other thread
/// or process is started, so that all of them inherit the mask (a namespace
/// sandbox's pid-1 child also needs the handler: init ignores a signal that
/// has none).
void prepare_metrics_signal();

class MetricsService {
 public:
  using GaugeSource = std::function<std::vector<metrics::Gauge>()>;
  static constexpr std::chrono::milliseconds kConnectionTimeout{2000};

  /// `names`: the slot names (fuse::op_names()); `listener`: the listening
  /// --metrics-socket, or empty for the signal alone; `gauges`: read at each
  /// summary and scrape (may be empty).
  MetricsService(const metrics::RequestMetrics& metrics, std::span<const std::string_view> names,
                 UniqueFd listener, GaugeSource gauges);
  /// Stops the thread and waits for it.
  ~MetricsService();
  MetricsService(const MetricsService&) = delete;
  MetricsService& operator=(const MetricsService&) = delete;

  /// Starts the thread.
  VoidResult start();

  /// What a connection gets: the HTTP/1.0 response with the exposition.
  std::string http_response() const;
  /// What SIGUSR1 logs, one line each.
  std::vector<std::string> summary() const;

 private:
  void run();
  void serve_connection(int fd) const;

  const metrics::RequestMetrics& metrics_;
  const std::span<const std::string_view> names_;
  UniqueFd listener_;
  GaugeSource gauges_;
  UniqueFd stop_;  // eventfd; readable when the thread must end
  std::thread thread_;
};

}  // namespace vfsd::app
