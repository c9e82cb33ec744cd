// Per-volume data-path counters: what the agent exports as Prometheus metrics.
//
// IoQueueStats is updated by the engine with relaxed atomics (any thread may
// read it; readers get recent, not mutually consistent, values).
// IoStatsSnapshot is a plain copy of it for callers.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace localvol::iopath {

// Upper bounds, in microseconds, of the request latency histogram buckets
// (from Submit() until Complete() is called: queueing, throttling and the
// device). A last, implicit bucket holds everything slower (+Inf).
inline constexpr std::array<uint64_t, 16> kLatencyBucketsUs = {
    50,     100,    250,     500,     1'000,   2'500,     5'000,     10'000,
    25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};
inline constexpr size_t kLatencyBuckets = kLatencyBucketsUs.size() + 1;

// Index of the bucket a latency falls into (the first whose bound >= it).
size_t LatencyBucket(uint64_t latency_ns);

struct IoStatsSnapshot {
  uint64_t read_ops = 0;
  uint64_t read_bytes = 0;
  uint64_t write_ops = 0;  // writes only
  uint64_t write_bytes = 0;
  uint64_t other_ops = 0;     // fsync, fdatasync, fallocate (counted as write ops by limits)
  uint64_t errors = 0;        // requests completed with an error, timeouts included
  uint64_t timed_out = 0;     // requests failed because they waited longer than the bound
  uint64_t throttled_ns = 0;  // time the volume's oldest request was held back by its limits
  uint64_t queued = 0;        // requests waiting for dispatch now
  uint64_t in_flight = 0;     // requests dispatched and not yet completed now
  // Non-cumulative counts per bucket (kLatencyBucketsUs, then +Inf), and the
  // sum of all latencies.
  std::array<uint64_t, kLatencyBuckets> latency_count{};
  uint64_t latency_sum_ns = 0;
};

struct IoQueueStats {
  std::atomic<uint64_t> read_ops{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> write_ops{0};
  std::atomic<uint64_t> write_bytes{0};
  std::atomic<uint64_t> other_ops{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> timed_out{0};
  std::atomic<uint64_t> throttled_ns{0};
  // queued and in_flight are written under the engine mutex only.
  std::atomic<uint64_t> queued{0};
  std::atomic<uint64_t> in_flight{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> latency_count{};
  std::atomic<uint64_t> latency_sum_ns{0};

  IoStatsSnapshot Snapshot() const;
};

}  // namespace localvol::iopath
