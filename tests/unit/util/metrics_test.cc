// The request metrics on their own: the log2 bucket math, the quantile
// estimate, per-thread shards summed by the reader, and the two renderings
// (the Prometheus text is parsed back line by line).
#include "util/metrics.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace vfsd::metrics {
namespace {

constexpr uint64_t kUs = 1000;  // ns

TEST(MetricsHistogram, BucketsAreLog2OfMicroseconds) {
  EXPECT_EQ(bucket_for(0), 0u);
  EXPECT_EQ(bucket_for(999), 0u);  // < 1 µs
  EXPECT_EQ(bucket_for(1 * kUs), 1u);
  EXPECT_EQ(bucket_for(2 * kUs - 1), 1u);  // < 2 µs
  EXPECT_EQ(bucket_for(2 * kUs), 2u);
  EXPECT_EQ(bucket_for(3 * kUs), 2u);
  EXPECT_EQ(bucket_for(4 * kUs), 3u);
  EXPECT_EQ(bucket_for(1000 * kUs), 10u);  // 1 ms < 1024 µs
  EXPECT_EQ(bucket_for(((uint64_t{1} << 20) - 1) * kUs), 20u);
  EXPECT_EQ(bucket_for((uint64_t{1} << 20) * kUs), kFiniteBuckets);  // +Inf
  EXPECT_EQ(bucket_for(~uint64_t{0}), kFiniteBuckets);
  for (size_t i = 0; i < kFiniteBuckets; ++i) {
    EXPECT_EQ(bucket_for(bucket_upper_us(i) * kUs - 1), i) << i;
    EXPECT_EQ(bucket_for(bucket_upper_us(i) * kUs), i + 1) << i;
  }
}

OpTotals totals_of(const std::vector<std::pair<size_t, uint64_t>>& bucket_counts) {
  OpTotals op;
  for (auto [bucket, n] : bucket_counts) {
    op.buckets[bucket] += n;
    op.count += n;
  }
  return op;
}

TEST(MetricsHistogram, QuantileInterpolatesInsideItsBucket) {
  // 100 requests in [2, 4) µs.
  const OpTotals one_bucket = totals_of({{2, 100}});
  EXPECT_DOUBLE_EQ(estimate_quantile_us(one_bucket, 0.5), 3.0);
  EXPECT_DOUBLE_EQ(estimate_quantile_us(one_bucket, 0.0), 2.0);
  EXPECT_DOUBLE_EQ(estimate_quantile_us(one_bucket, 1.0), 4.0);
  // 90 in [1, 2) µs and 10 in [512, 1024) µs: the median among the fast
  // ones, the 99th percentile nine tenths into the slow bucket.
  const OpTotals two_buckets = totals_of({{1, 90}, {10, 10}});
  EXPECT_DOUBLE_EQ(estimate_quantile_us(two_buckets, 0.5), 1.0 + 50.0 / 90);
  EXPECT_DOUBLE_EQ(estimate_quantile_us(two_buckets, 0.99), 512.0 + 512.0 * 9 / 10);
  // The first bucket starts at 0.
  EXPECT_DOUBLE_EQ(estimate_quantile_us(totals_of({{0, 4}}), 0.5), 0.5);
}

TEST(MetricsHistogram, QuantileAboveTheLastBucketIsItsBound) {
  const OpTotals slow = totals_of({{3, 1}, {kFiniteBuckets, 99}});
  EXPECT_DOUBLE_EQ(estimate_quantile_us(slow, 0.99), static_cast<double>(uint64_t{1} << 20));
  EXPECT_DOUBLE_EQ(estimate_quantile_us(OpTotals{}, 0.5), 0.0);
}

TEST(MetricsRecording, SumsTheShardsOfConcurrentThreads) {
  RequestMetrics m;
  constexpr int kThreads = 4, kEach = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < kEach; ++i) m.record(3, 5 * kUs, i % 10 == 0);
    });
  }
  for (auto& t : threads) t.join();
  const Snapshot s = m.snapshot();
  EXPECT_EQ(s[3].count, uint64_t{kThreads * kEach});
  EXPECT_EQ(s[3].errors, uint64_t{kThreads * kEach / 10});
  EXPECT_EQ(s[3].total_ns, uint64_t{kThreads * kEach} * 5 * kUs);
  EXPECT_EQ(s[3].buckets[bucket_for(5 * kUs)], uint64_t{kThreads * kEach});
  EXPECT_EQ(s[4].count, 0u);
  EXPECT_GE(m.shard_count(), 1u);
  EXPECT_LE(m.shard_count(), size_t{kThreads});
}

TEST(MetricsRecording, AThreadThatEndedLeavesItsShardAndCountsToTheNext) {
  RequestMetrics m;
  for (int round = 0; round < 5; ++round) {
    std::thread([&m] { m.record(1, 10 * kUs, false); }).join();
  }
  EXPECT_EQ(m.snapshot()[1].count, 5u);
  EXPECT_EQ(m.shard_count(), 1u) << "each new thread must reuse the ended thread's shard";
}

TEST(MetricsRecording, InstancesOnOneThreadStaySeparate) {
  RequestMetrics a, b;
  for (int i = 0; i < 3; ++i) {
    a.record(1, kUs, false);
    b.record(2, kUs, true);
  }
  EXPECT_EQ(a.snapshot()[1].count, 3u);
  EXPECT_EQ(a.snapshot()[2].count, 0u);
  EXPECT_EQ(b.snapshot()[2].count, 3u);
  EXPECT_EQ(b.snapshot()[2].errors, 3u);
  EXPECT_EQ(b.snapshot()[1].count, 0u);
}

TEST(MetricsRecording, AnOutOfRangeSlotCountsInSlotZero) {
  RequestMetrics m;
  m.record(kOpSlots + 7, kUs, true);
  EXPECT_EQ(m.snapshot()[0].count, 1u);
}

std::array<std::string_view, kOpSlots> test_names() {
  std::array<std::string_view, kOpSlots> names{};
  names.fill("UNKNOWN");
  names[1] = "LOOKUP";
  names[3] = "GETATTR";
  names[15] = "READ";
  return names;
}

// One sample line of the exposition: name, labels, value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text exposition as a scraper would: "# HELP" and "# TYPE"
// comments, samples `name{label="value",...} number`. Fails the test on any
// other line, and on a sample whose family had no # TYPE before it.
std::vector<Sample> parse_exposition(const std::string& text,
                                     std::map<std::string, std::string>& types) {
  std::vector<Sample> samples;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      std::string name, type;
      words >> name >> type;
      types[name] = type;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.empty() || line[0] == '#') {
      ADD_FAILURE() << "neither a sample nor HELP/TYPE: '" << line << "'";
      continue;
    }
    Sample s;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) {
      ADD_FAILURE() << "no value: " << line;
      continue;
    }
    const size_t brace = line.find('{');
    s.name = line.substr(0, std::min(brace, space));
    if (brace != std::string::npos) {
      const size_t close = line.find('}', brace);
      if (close == std::string::npos || close > space) {
        ADD_FAILURE() << "unclosed labels: " << line;
        continue;
      }
      std::string labels = line.substr(brace + 1, close - brace - 1);
      while (!labels.empty()) {
        const size_t eq = labels.find('=');
        const size_t end_quote =
            eq == std::string::npos ? std::string::npos : labels.find('"', eq + 2);
        if (end_quote == std::string::npos || labels[eq + 1] != '"') {
          ADD_FAILURE() << "bad label in " << line;
          break;
        }
        s.labels[labels.substr(0, eq)] = labels.substr(eq + 2, end_quote - eq - 2);
        const bool more = end_quote + 1 < labels.size() && labels[end_quote + 1] == ',';
        labels = more ? labels.substr(end_quote + 2) : "";
      }
    }
    const std::string value = line.substr(space + 1);
    char* end = nullptr;
    s.value = std::strtod(value.c_str(), &end);  // strtod reads "+Inf" too
    EXPECT_TRUE(end != nullptr && *end == '\0' && !value.empty()) << line;
    std::string family = s.name;
    for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
      if (!types.contains(family) && family.ends_with(suffix)) {
        family.resize(family.size() - suffix.size());
      }
    }
    EXPECT_TRUE(types.contains(family)) << "no # TYPE before " << line;
    samples.push_back(std::move(s));
  }
  return samples;
}

// The value of the one sample named `name` with label op=`op` (and `le`).
double sample(const std::vector<Sample>& samples, const std::string& name, const std::string& op,
              const std::string& le = "") {
  const Sample* found = nullptr;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    auto it = s.labels.find("op");
    if ((op.empty() ? it != s.labels.end() : (it == s.labels.end() || it->second != op))) continue;
    if (!le.empty() && (!s.labels.contains("le") || s.labels.at("le") != le)) continue;
    EXPECT_EQ(found, nullptr) << "two samples " << name << " op=" << op << " le=" << le;
    found = &s;
  }
  EXPECT_NE(found, nullptr) << "no sample " << name << " op=" << op << " le=" << le;
  return found ? found->value : -1;
}

TEST(MetricsText, PrometheusExpositionParsesBack) {
  RequestMetrics m;
  m.record(1, 3 * kUs, false);    // LOOKUP in [2, 4) µs
  m.record(1, 3 * kUs, true);     // an ENOENT
  m.record(1, 700 * kUs, false);  // one slow one, [512, 1024) µs
  m.record(3, 500, false);        // GETATTR, below 1 µs
  const auto names = test_names();
  const std::vector<Gauge> gauges{{"inodes", "Inodes held.", 42}};
  const std::string text = render_prometheus(m.snapshot(), names, gauges);

  std::map<std::string, std::string> types;
  const std::vector<Sample> samples = parse_exposition(text, types);
  EXPECT_EQ(types["virtiofsd_requests_total"], "counter");
  EXPECT_EQ(types["virtiofsd_request_errors_total"], "counter");
  EXPECT_EQ(types["virtiofsd_request_duration_seconds"], "histogram");
  EXPECT_EQ(types["virtiofsd_inodes"], "gauge");

  EXPECT_EQ(sample(samples, "virtiofsd_requests_total", "LOOKUP"), 3);
  EXPECT_EQ(sample(samples, "virtiofsd_request_errors_total", "LOOKUP"), 1);
  EXPECT_EQ(sample(samples, "virtiofsd_requests_total", "GETATTR"), 1);
  EXPECT_EQ(sample(samples, "virtiofsd_request_errors_total", "GETATTR"), 0);
  const std::string bucket = "virtiofsd_request_duration_seconds_bucket";
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "0.000002"), 0);
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "0.000004"), 2);
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "0.000512"), 2);
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "0.001024"), 3);
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "1.048576"), 3);
  EXPECT_EQ(sample(samples, bucket, "LOOKUP", "+Inf"), 3);
  EXPECT_EQ(sample(samples, bucket, "GETATTR", "0.000001"), 1);
  EXPECT_DOUBLE_EQ(sample(samples, "virtiofsd_request_duration_seconds_sum", "LOOKUP"), 706e-6);
  EXPECT_EQ(sample(samples, "virtiofsd_request_duration_seconds_count", "LOOKUP"), 3);
  EXPECT_EQ(sample(samples, "virtiofsd_inodes", ""), 42);

  // Buckets are cumulative, in increasing le, ending with +Inf = _count.
  for (const char* op : {"LOOKUP", "GETATTR"}) {
    double last_le = -1, last_count = -1;
    size_t buckets = 0;
    for (const Sample& s : samples) {
      if (s.name != bucket || s.labels.at("op") != op) continue;
      const double le = std::strtod(s.labels.at("le").c_str(), nullptr);
      EXPECT_GT(le, last_le) << op;
      EXPECT_GE(s.value, last_count) << op;
      last_le = le;
      last_count = s.value;
      ++buckets;
    }
    EXPECT_EQ(buckets, kBuckets) << op;
    EXPECT_EQ(last_le, HUGE_VAL) << op << ": the last bucket must be +Inf";
  }
  // Operations without requests are left out.
  EXPECT_EQ(text.find("op=\"READ\""), std::string::npos);
  EXPECT_EQ(text.find("op=\"UNKNOWN\""), std::string::npos);
}

TEST(MetricsText, SummaryHasOneLinePerUsedOperationBusiestFirst) {
  RequestMetrics m;
  m.record(3, 3 * kUs, false);
  for (int i = 0; i < 3; ++i) m.record(1, 3 * kUs, i == 0);
  const auto names = test_names();
  const std::vector<Gauge> gauges{{"inodes", "Inodes held.", 7}, {"open_handles", "", 2}};
  const std::vector<std::string> lines = summary_lines(m.snapshot(), names, gauges);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "LOOKUP count=3 errors=1 mean=3.0us p50=3.0us p99=4.0us");
  EXPECT_EQ(lines[1].rfind("GETATTR count=1 errors=0 ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2], "inodes=7 open_handles=2");
}

TEST(MetricsText, SummaryNamesTheBoundAboveTheLastBucket) {
  RequestMetrics m;
  m.record(15, 3'000'000 * kUs, false);  // a READ of 3 s
  const auto names = test_names();
  const std::vector<std::string> lines = summary_lines(m.snapshot(), names, {});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "READ count=1 errors=0 mean=3.00s p50=>1.05s p99=>1.05s");
}

TEST(MetricsText, LabelledCountersShareOneFamilyHeader) {
  const std::vector<Gauge> gauges{
      {"queue_requests_total", "Chains popped, by queue.", 5, "queue=\"1\"", true},
      {"queue_requests_total", "Chains popped, by queue.", 7, "queue=\"2\"", true},
      {"inodes", "Inodes held.", 3},
  };
  const std::string text = render_prometheus(RequestMetrics().snapshot(), test_names(), gauges);
  std::map<std::string, std::string> types;
  const std::vector<Sample> samples = parse_exposition(text, types);
  EXPECT_EQ(types["virtiofsd_queue_requests_total"], "counter");
  EXPECT_EQ(types["virtiofsd_inodes"], "gauge");
  size_t headers = 0;
  for (size_t at = text.find("# TYPE virtiofsd_queue_requests_total"); at != std::string::npos;
       at = text.find("# TYPE virtiofsd_queue_requests_total", at + 1))
    ++headers;
  EXPECT_EQ(headers, 1u) << text;
  std::map<std::string, double> by_queue;
  for (const Sample& s : samples) {
    if (s.name == "virtiofsd_queue_requests_total") by_queue[s.labels.at("queue")] = s.value;
  }
  EXPECT_EQ(by_queue, (std::map<std::string, double>{{"1", 5}, {"2", 7}}));

  const std::vector<std::string> lines =
      summary_lines(RequestMetrics().snapshot(), test_names(), gauges);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0],
            "queue_requests_total{queue=\"1\"}=5 queue_requests_total{queue=\"2\"}=7 inodes=3");
}

TEST(QueueCounters, EachQueueCountsOnItsOwnAndPastTheLastIsRefused) {
  QueueCounters counters(3);
  ASSERT_NE(counters.of(2), nullptr);
  EXPECT_EQ(counters.of(3), nullptr);
  QueueCounters::add(*counters.of(1), 4);
  QueueCounters::add(*counters.of(1), 2);
  QueueCounters::add(*counters.of(2), 1);
  EXPECT_EQ(counters.get(0), 0u);
  EXPECT_EQ(counters.get(1), 6u);
  EXPECT_EQ(counters.get(2), 1u);
  EXPECT_EQ(counters.get(3), 0u);
  // One cache line each: two workers never write the same line.
  const auto line = [&](size_t q) { return reinterpret_cast<uintptr_t>(counters.of(q)) / 64; };
  EXPECT_NE(line(0), line(1));
  EXPECT_NE(line(1), line(2));
}

}  // namespace
}  // namespace vfsd::metrics
