#include "iopath/throttle.h"

#include <algorithm>
#include <cmath>

namespace localvol::iopath {
namespace {
constexpr double kNsPerSecond = 1e9;
// Without a burst, a volume may run ahead of its rate by this much of a second,
// so that a short stall of the application is not lost to it.
constexpr double kSmoothingSeconds = 0.1;
// During a burst, the peak bucket lets it run ahead of burst_rate by this much;
// small, because the burst itself is the allowance.
constexpr double kPeakSmoothingSeconds = 0.02;
}  // namespace

void Throttle::Configure(const RateLimit& limit, uint64_t now_ns) {
  const bool was_limited = limited();
  if (was_limited) Refill(now_ns);
  last_ns_ = now_ns;
  rate_ = static_cast<double>(limit.rate);
  if (!limit.limited()) {
    sustained_ = Bucket{};
    peak_ = Bucket{};
    return;
  }
  const auto burst = static_cast<double>(limit.burst_rate);
  sustained_.rate = rate_;
  if (burst > rate_) {
    sustained_.cap = (burst - rate_) * limit.burst_seconds;
    peak_.rate = burst;
    peak_.cap = std::max(1.0, burst * kPeakSmoothingSeconds);
  } else {
    sustained_.cap = rate_ * kSmoothingSeconds;
    peak_ = Bucket{};
  }
  if (!was_limited) {
    sustained_.credit = sustained_.cap;
    peak_.credit = peak_.cap;
  } else {
    sustained_.credit = std::min(sustained_.credit, sustained_.cap);
    peak_.credit = std::min(peak_.credit, peak_.cap);
  }
}

void Throttle::Refill(uint64_t now_ns) {
  if (now_ns <= last_ns_) return;
  const double elapsed_s = static_cast<double>(now_ns - last_ns_) / kNsPerSecond;
  last_ns_ = now_ns;
  for (Bucket* b : {&sustained_, &peak_}) {
    if (b->rate > 0) b->credit = std::min(b->cap, b->credit + b->rate * elapsed_s);
  }
}

uint64_t Throttle::BucketWaitNs(const Bucket& b) {
  if (b.rate <= 0 || b.credit >= 0) return 0;
  const double wait_ns = -b.credit / b.rate * kNsPerSecond;
  // Under half a nanosecond is float residue of an exact wait, not debt. Round
  // the rest up: waking early would find the credit still negative.
  if (wait_ns < 0.5) return 0;
  return static_cast<uint64_t>(std::ceil(wait_ns));
}

uint64_t Throttle::WaitNs(uint64_t now_ns) {
  if (!limited()) return 0;
  Refill(now_ns);
  return std::max(BucketWaitNs(sustained_), BucketWaitNs(peak_));
}

void Throttle::Charge(uint64_t units, uint64_t now_ns) {
  if (!limited()) return;
  Refill(now_ns);
  sustained_.credit -= static_cast<double>(units);
  if (peak_.rate > 0) peak_.credit -= static_cast<double>(units);
}

}  // namespace localvol::iopath
