// IoLimits: the I/O limits and fair-share weight of one volume, as value types.
//
// Units
//   *_iops limits count requests per second; *_bps limits count bytes per
//   second. A read is one read op plus its length in bytes; a write, fsync,
//   fdatasync or fallocate is one write op, and a write also counts its length.
//
// Burst semantics (modelled on QEMU throttle groups: iops-max and
// iops-max-length)
//   A limit has a sustained `rate` and, optionally, a `burst_rate` above it that
//   the volume may use for up to `burst_seconds` after it has been idle (or
//   below `rate`) long enough. Running flat out, the burst lasts exactly
//   burst_seconds; then delivery falls to `rate`. Unused capacity refills the
//   burst at `rate` (from empty to full in (burst_rate - rate) * burst_seconds /
//   rate seconds). With no burst_rate the volume may still get ahead of `rate`
//   by a tenth of a second's worth, so that small stalls are not lost.
//
// Weight: the volume's share of its disk when volumes contend (see
// iopath/scheduler.h). Alone, a volume gets the whole disk whatever its weight.
//
// Value types and pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace localvol::iopath {

struct RateLimit {
  uint64_t rate = 0;           // units per second; 0: no limit
  uint64_t burst_rate = 0;     // units per second during a burst; 0: no burst
  uint32_t burst_seconds = 1;  // how long burst_rate lasts from a full bucket

  bool limited() const { return rate > 0; }
  bool operator==(const RateLimit&) const = default;
};

inline constexpr uint32_t kDefaultWeight = 100;
inline constexpr uint32_t kMaxWeight = 10000;
inline constexpr uint32_t kMaxBurstSeconds = 3600;

struct IoLimits {
  RateLimit read_iops;
  RateLimit write_iops;
  RateLimit read_bps;
  RateLimit write_bps;
  uint32_t weight = kDefaultWeight;  // 1..kMaxWeight

  bool operator==(const IoLimits&) const = default;
};

// OK, or EINVAL naming the field: a burst_rate that is not above its rate, a
// burst without a rate, burst_seconds outside 1..kMaxBurstSeconds, or a weight
// outside 1..kMaxWeight.
Status ValidateIoLimits(const IoLimits& limits);

// "read-iops=500 read-iops-burst=2000 read-iops-burst-seconds=10
// write-bps=100Mi weight=100", or "unlimited weight=100": the non-default
// settings, for logs and CLI output.
std::string FormatIoLimits(const IoLimits& limits);

// Every limit as a named setting, one spelling for CLI flags (--read-iops), the
// disk manifest and the API:
//   {read,write}-{iops,bps}                  the rate (0: no limit)
//   {read,write}-{iops,bps}-burst            the burst rate (0: no burst)
//   {read,write}-{iops,bps}-burst-seconds    the burst length, 1..3600
//   weight                                   1..10000
// Counts are plain integers; *-bps values also take size suffixes ("100Mi",
// "1G"), read as bytes per second.
const std::vector<std::string>& IoLimitKeys();

// Sets one setting from its text. Fails with EINVAL naming the key and the
// value (an unknown key, a malformed or out-of-range number), leaving *limits
// unchanged. Does not check the settings against each other: call
// ValidateIoLimits() once all are set.
Status SetIoLimit(IoLimits* limits, std::string_view key, std::string_view value);

// The settings that differ from an unlimited IoLimits{}, as (key, text) pairs
// in IoLimitKeys() order; SetIoLimit() reads the text back.
std::vector<std::pair<std::string, std::string>> IoLimitSettings(const IoLimits& limits);

}  // namespace localvol::iopath
