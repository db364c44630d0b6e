#include "util/metrics.h"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>

namespace vfsd::metrics {

// One thread's counters. Only its thread writes them, so a plain load and
// store (no locked read-modify-write) is enough; readers load them relaxed.
struct alignas(64) RequestMetrics::Shard {
  struct Cell {
    std::atomic<uint64_t> errors{0};
    std::atomic<uint64_t> total_ns{0};
    std::array<std::atomic<uint64_t>, kBuckets> buckets{};
  };
  std::array<Cell, kOpSlots> cells{};
};

namespace {

// Seconds as an exact decimal (Prometheus parses it as a float).
std::string seconds_from_us(uint64_t us) {
  char text[48];
  std::snprintf(text, sizeof text, "%" PRIu64 ".%06" PRIu64, us / 1'000'000, us % 1'000'000);
  return text;
}
std::string seconds_from_ns(uint64_t ns) {
  char text[48];
  std::snprintf(text, sizeof text, "%" PRIu64 ".%09" PRIu64, ns / 1'000'000'000,
                ns % 1'000'000'000);
  return text;
}

// A latency for a person: µs below a millisecond, then ms, then s.
std::string human_us(double us) {
  char text[32];
  if (us < 1000) {
    std::snprintf(text, sizeof text, "%.1fus", us);
  } else if (us < 1'000'000) {
    std::snprintf(text, sizeof text, "%.2fms", us / 1000);
  } else {
    std::snprintf(text, sizeof text, "%.2fs", us / 1'000'000);
  }
  return text;
}

// The quantile for the log: past the last finite bucket only a bound is known.
std::string human_quantile(const OpTotals& op, double q) {
  const double us = estimate_quantile_us(op, q);
  const auto top = static_cast<double>(bucket_upper_us(kFiniteBuckets - 1));
  return us >= top ? ">" + human_us(top) : human_us(us);
}

void append_family_header(std::string& out, std::string_view name, std::string_view help,
                          std::string_view type) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

}  // namespace

double estimate_quantile_us(const OpTotals& op, double q) {
  if (op.count == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(op.count);
  uint64_t below = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    const uint64_t n = op.buckets[i];
    if (n > 0 && static_cast<double>(below + n) >= rank) {
      if (i == kFiniteBuckets) return static_cast<double>(bucket_upper_us(kFiniteBuckets - 1));
      const double lower = i == 0 ? 0.0 : static_cast<double>(bucket_upper_us(i - 1));
      const double upper = static_cast<double>(bucket_upper_us(i));
      return lower + (upper - lower) * (rank - static_cast<double>(below)) / static_cast<double>(n);
    }
    below += n;
  }
  return static_cast<double>(bucket_upper_us(kFiniteBuckets - 1));
}

RequestMetrics::RequestMetrics() = default;

RequestMetrics::~RequestMetrics() = default;

void RequestMetrics::record(size_t slot, uint64_t ns, bool failed) {
  Shard::Cell& cell = shards_.local().cells[slot < kOpSlots ? slot : 0];
  bump_owned(cell.buckets[bucket_for(ns)]);
  bump_owned(cell.total_ns, ns);
  if (failed) bump_owned(cell.errors);
}

Snapshot RequestMetrics::snapshot() const {
  Snapshot totals{};
  shards_.for_each([&](const Shard& shard) {
    for (size_t slot = 0; slot < kOpSlots; ++slot) {
      const Shard::Cell& cell = shard.cells[slot];
      OpTotals& op = totals[slot];
      for (size_t b = 0; b < kBuckets; ++b) {
        const uint64_t n = cell.buckets[b].load(std::memory_order_relaxed);
        op.buckets[b] += n;
        op.count += n;
      }
      op.errors += cell.errors.load(std::memory_order_relaxed);
      op.total_ns += cell.total_ns.load(std::memory_order_relaxed);
    }
  });
  // The error of a request may be seen before its bucket.
  for (OpTotals& op : totals) op.errors = std::min(op.errors, op.count);
  return totals;
}

size_t RequestMetrics::shard_count() const {
  return shards_.size();
}

std::string render_prometheus(const Snapshot& snapshot, std::span<const std::string_view> names,
                              std::span<const Gauge> gauges) {
  std::vector<size_t> used;
  for (size_t slot = 0; slot < snapshot.size() && slot < names.size(); ++slot) {
    if (snapshot[slot].count > 0) used.push_back(slot);
  }
  auto label = [&](size_t slot) { return std::string("op=\"").append(names[slot]).append("\""); };
  std::string out;
  append_family_header(out, "virtiofsd_requests_total", "FUSE requests handled, by operation.",
                       "counter");
  for (size_t slot : used) {
    out.append("virtiofsd_requests_total{" + label(slot) + "} " +
               std::to_string(snapshot[slot].count) + "\n");
  }
  append_family_header(out, "virtiofsd_request_errors_total",
                       "FUSE requests answered with an error (or dropped), by operation.",
                       "counter");
  for (size_t slot : used) {
    out.append("virtiofsd_request_errors_total{" + label(slot) + "} " +
               std::to_string(snapshot[slot].errors) + "\n");
  }
  append_family_header(out, "virtiofsd_request_duration_seconds",
                       "Time from a request's arrival at the FUSE server to its reply, by "
                       "operation.",
                       "histogram");
  for (size_t slot : used) {
    const OpTotals& op = snapshot[slot];
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kBuckets; ++b) {
      cumulative += op.buckets[b];
      const std::string le = b < kFiniteBuckets ? seconds_from_us(bucket_upper_us(b)) : "+Inf";
      out.append("virtiofsd_request_duration_seconds_bucket{" + label(slot) + ",le=\"" + le +
                 "\"} " + std::to_string(cumulative) + "\n");
    }
    out.append("virtiofsd_request_duration_seconds_sum{" + label(slot) + "} " +
               seconds_from_ns(op.total_ns) + "\n");
    out.append("virtiofsd_request_duration_seconds_count{" + label(slot) + "} " +
               std::to_string(op.count) + "\n");
  }
  const std::string* family = nullptr;
  for (const Gauge& gauge : gauges) {
    const std::string name = "virtiofsd_" + gauge.name;
    if (family == nullptr || *family != gauge.name)
      append_family_header(out, name, gauge.help, gauge.counter ? "counter" : "gauge");
    family = &gauge.name;
    out.append(name);
    if (!gauge.labels.empty()) out.append("{" + gauge.labels + "}");
    out.append(" " + std::to_string(gauge.value) + "\n");
  }
  return out;
}

std::vector<std::string> summary_lines(const Snapshot& snapshot,
                                       std::span<const std::string_view> names,
                                       std::span<const Gauge> gauges) {
  std::vector<size_t> used;
  for (size_t slot = 0; slot < snapshot.size() && slot < names.size(); ++slot) {
    if (snapshot[slot].count > 0) used.push_back(slot);
  }
  std::stable_sort(used.begin(), used.end(),
                   [&](size_t a, size_t b) { return snapshot[a].count > snapshot[b].count; });
  std::vector<std::string> lines;
  for (size_t slot : used) {
    const OpTotals& op = snapshot[slot];
    const double mean_us =
        static_cast<double>(op.total_ns) / 1000.0 / static_cast<double>(op.count);
    lines.push_back(std::string(names[slot]) + " count=" + std::to_string(op.count) +
                    " errors=" + std::to_string(op.errors) + " mean=" + human_us(mean_us) +
                    " p50=" + human_quantile(op, 0.5) + " p99=" + human_quantile(op, 0.99));
  }
  if (!gauges.empty()) {
    std::string line;
    for (const Gauge& gauge : gauges) {
      if (!line.empty()) line += ' ';
      line += gauge.name;
      if (!gauge.labels.empty()) line += "{" + gauge.labels + "}";
      line += "=" + std::to_string(gauge.value);
    }
    lines.push_back(line);
  }
  return lines;
}

}  // namespace vfsd::metrics
