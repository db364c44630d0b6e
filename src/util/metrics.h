// Per-operation request counters and latency histograms (issue 10): what an
// operator looks at when a share is slow, readable while the daemon runs
// (SIGUSR1 summary in the log, --metrics-socket in Prometheus text format).
//
// The request path pays two clock reads (CLOCK_MONOTONIC, a vDSO call) and a
// few plain stores: every thread that records writes only its own shard (a
// 64-byte aligned block, taken on the thread's first request and handed back
// when the thread ends, so a later thread reuses it and no count is lost), so
// no lock is taken and no cache line is written by two threads. A reader sums
// the shards with relaxed loads; a snapshot taken while requests run may be a
// few requests behind, never torn.
//
// Slots are indexes chosen by the caller (the FUSE server uses the opcode);
// names are given only when rendering, so this layer knows nothing of FUSE.
// Pinned by: metrics_test.cc(MetricsHistogram.*, MetricsRecording.*, MetricsText.*),
// fuse_metrics_test.cc(FuseMetrics.*), daemon_metrics_test.cc(DaemonMetrics.*)
#pragma once

#include <time.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/thread_slots.h"

namespace vfsd::metrics {

/// Operation slots; the FUSE server's op table has as many rows.
inline constexpr size_t kOpSlots = 64;
/// Finite histogram buckets: bucket i counts latencies below 2^i µs
/// (1 µs, 2 µs, 4 µs ... 2^20 µs = 1.048576 s); one more counts the rest.
inline constexpr size_t kFiniteBuckets = 21;
inline constexpr size_t kBuckets = kFiniteBuckets + 1;

/// The bucket of a latency of `ns` nanoseconds: the smallest i with
/// ns < 2^i µs, or kFiniteBuckets (+Inf) when none is.
constexpr size_t bucket_for(uint64_t ns) {
  const uint64_t us = ns / 1000;
  size_t width = 0;  // std::bit_width(us), spelled out for constexpr use on any libstdc++
  for (uint64_t v = us; v != 0; v >>= 1) ++width;
  return width < kFiniteBuckets ? width : kFiniteBuckets;
}
/// The upper bound of finite bucket `i`, in µs.
constexpr uint64_t bucket_upper_us(size_t i) {
  return uint64_t{1} << i;
}

/// CLOCK_MONOTONIC in nanoseconds.
inline uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

/// One slot's totals, summed over every shard.
struct OpTotals {
  uint64_t count = 0;     // the sum of `buckets`, so the histogram is self-consistent
  uint64_t errors = 0;    // at most count
  uint64_t total_ns = 0;  // sum of the latencies
  std::array<uint64_t, kBuckets> buckets{};  // not cumulative
};
using Snapshot = std::array<OpTotals, kOpSlots>;

/// The latency below which a fraction `q` (0..1) of the requests of `op`
/// fell, in µs, interpolated linearly inside the bucket that holds it (the
/// first bucket from 0 µs). In the +Inf bucket it is that bucket's lower
/// bound, 2^20 µs: the histogram knows nothing above. 0 without requests.
double estimate_quantile_us(const OpTotals& op, double q);

/// A value worth an operator's look besides the requests (inodes held,
/// handles open, ...), read when the metrics are rendered.
/// Consecutive gauges with the same name are one family (one HELP/TYPE),
/// told apart by their labels.
struct Gauge {
  std::string name;  // a Prometheus metric name without the "virtiofsd_" prefix
  std::string help;
  uint64_t value = 0;
  std::string labels;    // e.g. queue="1"; empty: none
  bool counter = false;  // only ever grows (TYPE counter, not gauge)
};

/// Chains popped per virtqueue, kept across connections: whether the guest
/// spreads its requests over the request queues (num-request-queues). Each
/// queue has its own cache line and one writer, its worker thread.
/// Pinned by: metrics_test.cc(QueueCounters.*), run_multiqueue_test.sh
class QueueCounters {
 public:
  explicit QueueCounters(size_t queues) : cells_(new Cell[queues]), size_(queues) {}
  size_t size() const { return size_; }
  /// The counter of queue `index`, or null past the last queue.
  std::atomic<uint64_t>* of(size_t index) {
    return index < size_ ? &cells_[index].chains : nullptr;
  }
  uint64_t get(size_t index) const {
    return index < size_ ? cells_[index].chains.load(std::memory_order_relaxed) : 0;
  }
  /// Adds `n` to a counter only its caller writes (no read-modify-write).
  static void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Cell {
    std::atomic<uint64_t> chains{0};
  };
  std::unique_ptr<Cell[]> cells_;
  size_t size_;
};

/// The Prometheus text exposition (format 0.0.4) of `snapshot` and `gauges`:
/// virtiofsd_requests_total, virtiofsd_request_errors_total and the
/// virtiofsd_request_duration_seconds histogram, labelled op="<name>" for
/// every slot with requests; `names[slot]` names a slot.
std::string render_prometheus(const Snapshot& snapshot, std::span<const std::string_view> names,
                              std::span<const Gauge> gauges);

/// One line per slot with requests, busiest first: "LOOKUP count=12
/// errors=3 mean=41us p50=24us p99=118us"; then one line of the gauges.
std::vector<std::string> summary_lines(const Snapshot& snapshot,
                                       std::span<const std::string_view> names,
                                       std::span<const Gauge> gauges);

class RequestMetrics {
 public:
  RequestMetrics();
  ~RequestMetrics();
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  /// One request of `slot` (< kOpSlots) that took `ns` and failed or not.
  /// Called concurrently from any number of threads; lock-free after a
  /// thread's first call.
  void record(size_t slot, uint64_t ns, bool failed);

  /// The totals so far, summed over the shards.
  Snapshot snapshot() const;

  /// Shards made so far (one per thread that recorded at the same time;
  /// reused after a thread ends). For tests.
  size_t shard_count() const;

  struct Shard;

 private:
  ThreadSlots<Shard> shards_;
};

}  // namespace vfsd::metrics
