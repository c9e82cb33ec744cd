#include "iopath/io_stats.h"

#include <algorithm>

namespace localvol::iopath {

size_t LatencyBucket(uint64_t latency_ns) {
  const uint64_t us = (latency_ns + 999) / 1000;  // a bucket's bound is inclusive
  return static_cast<size_t>(
      std::lower_bound(kLatencyBucketsUs.begin(), kLatencyBucketsUs.end(), us) -
      kLatencyBucketsUs.begin());
}

IoStatsSnapshot IoQueueStats::Snapshot() const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  IoStatsSnapshot s;
  s.read_ops = read_ops.load(kRelaxed);
  s.read_bytes = read_bytes.load(kRelaxed);
  s.write_ops = write_ops.load(kRelaxed);
  s.write_bytes = write_bytes.load(kRelaxed);
  s.other_ops = other_ops.load(kRelaxed);
  s.errors = errors.load(kRelaxed);
  s.timed_out = timed_out.load(kRelaxed);
  s.throttled_ns = throttled_ns.load(kRelaxed);
  s.queued = queued.load(kRelaxed);
  s.in_flight = in_flight.load(kRelaxed);
  for (size_t i = 0; i < kLatencyBuckets; ++i) s.latency_count[i] = latency_count[i].load(kRelaxed);
  s.latency_sum_ns = latency_sum_ns.load(kRelaxed);
  return s;
}

}  // namespace localvol::iopath
