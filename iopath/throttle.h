// Throttle: one RateLimit (iopath/io_limits.h) enforced with token buckets.
//
// Model
//   Credit, in the limit's units (ops or bytes), accrues at `rate` up to a cap
//   and each admitted request spends its cost. A request is admitted when the
//   credit is not negative, and its whole cost is taken even if that drives
//   the credit below zero: the next request then waits until the debt is paid.
//   A request larger than the cap is therefore admitted (late), never refused,
//   and over any window delivery is `rate` times its length plus at most one
//   cap and one request.
//   * sustained bucket: rate `rate`; cap (burst_rate - rate) * burst_seconds
//     with a burst (so running at burst_rate empties it in exactly
//     burst_seconds), otherwise rate / 10 (a tenth of a second's worth).
//   * peak bucket (only with a burst): rate `burst_rate`, cap burst_rate / 50,
//     so a burst runs at burst_rate, not unbounded.
//   Both start full: a new or idle volume has its burst available.
//
// Units: times in ns from a Clock; credit in the limit's units (double: the
// caps are far below 2^53 and fractions of an op matter at low rates).
//
// Thread-safety: none; the owner serialises calls (the engine mutex).
#pragma once

#include <cstdint>

#include "iopath/io_limits.h"

namespace localvol::iopath {

class Throttle {
 public:
  // Unlimited until Configure() is called with a limited RateLimit.
  Throttle() = default;

  // Applies `limit` from `now_ns`. Credit already accrued is kept, clipped to
  // the new caps; a throttle that was unlimited starts full. `limit` must have
  // passed ValidateIoLimits().
  void Configure(const RateLimit& limit, uint64_t now_ns);

  bool limited() const { return rate_ > 0; }

  // Nanoseconds from now_ns until a request may be admitted; 0 if it may now.
  uint64_t WaitNs(uint64_t now_ns);

  // Spends `units` of credit at now_ns (on admission).
  void Charge(uint64_t units, uint64_t now_ns);

 private:
  struct Bucket {
    double rate = 0;    // units per second
    double cap = 0;     // units
    double credit = 0;  // units, may be negative (debt)
  };
  void Refill(uint64_t now_ns);
  static uint64_t BucketWaitNs(const Bucket& b);

  double rate_ = 0;  // 0: unlimited
  Bucket sustained_;
  Bucket peak_;  // rate 0: no burst
  uint64_t last_ns_ = 0;
};

}  // namespace localvol::iopath
