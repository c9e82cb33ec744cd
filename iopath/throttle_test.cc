// Throttle unit tests: a ManualClock and a greedy client, no I/O.
#include "iopath/throttle.h"

#include <gtest/gtest.h>

#include <vector>

#include "iopath/clock.h"

namespace localvol::iopath {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

// Admits `units`-sized requests as fast as `throttle` allows until `until_ns`;
// returns the admission times.
std::vector<uint64_t> RunGreedy(Throttle& throttle, ManualClock& clock, uint64_t units,
                                uint64_t until_ns) {
  std::vector<uint64_t> admitted;
  while (clock.NowNs() < until_ns) {
    const uint64_t wait = throttle.WaitNs(clock.NowNs());
    if (wait > 0) {
      clock.Advance(wait);
      continue;
    }
    throttle.Charge(units, clock.NowNs());
    admitted.push_back(clock.NowNs());
  }
  return admitted;
}

size_t CountIn(const std::vector<uint64_t>& times, uint64_t from, uint64_t to) {
  size_t n = 0;
  for (uint64_t t : times) n += (t >= from && t < to);
  return n;
}

// When the burst ended: ns after `start` of the first 100 ms window with fewer
// than `below` admissions (the run's end if none).
uint64_t BurstEndNs(const std::vector<uint64_t>& times, uint64_t start, uint64_t end,
                    size_t below) {
  for (uint64_t from = start; from < end; from += kSecond / 10) {
    if (CountIn(times, from, from + kSecond / 10) < below) return from - start;
  }
  return end - start;
}

TEST(ThrottleTest, UnlimitedNeverWaits) {
  Throttle t;
  EXPECT_FALSE(t.limited());
  t.Charge(1'000'000, 0);
  EXPECT_EQ(t.WaitNs(0), 0u);
}

struct RateCase {
  uint64_t rate;
  uint64_t request_units;
};

class ThrottleRateTest : public ::testing::TestWithParam<RateCase> {};

// Delivered units over a 10 s window are within 2% of rate * 10 s, for op
// limits and for byte limits with small and large requests.
TEST_P(ThrottleRateTest, DeliversTheRateWithinTwoPercent) {
  const RateCase c = GetParam();
  ManualClock clock;
  Throttle t;
  t.Configure(RateLimit{c.rate, 0, 1}, clock.NowNs());
  const uint64_t start = clock.NowNs();
  auto admitted = RunGreedy(t, clock, c.request_units, start + 12 * kSecond);
  // Skip the first second: the initial tenth-of-a-second credit is not the rate.
  const double delivered =
      static_cast<double>(CountIn(admitted, start + 1 * kSecond, start + 11 * kSecond)) *
      static_cast<double>(c.request_units);
  const double expected = static_cast<double>(c.rate) * 10;
  EXPECT_NEAR(delivered / expected, 1.0, 0.02) << "delivered " << delivered;
  // Each second on its own is within 2% as well: no bunching.
  for (uint64_t s = 1; s < 11; ++s) {
    const double in_second =
        static_cast<double>(CountIn(admitted, start + s * kSecond, start + (s + 1) * kSecond)) *
        static_cast<double>(c.request_units);
    EXPECT_NEAR(in_second / static_cast<double>(c.rate), 1.0, 0.02) << "second " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Rates, ThrottleRateTest,
                         ::testing::Values(RateCase{1000, 1},               // 1000 IOPS
                                           RateCase{7, 1},                  // a very low IOPS limit
                                           RateCase{100 << 20, 4096},       // 100 MiB/s in 4 KiB
                                           RateCase{100 << 20, 1 << 20}));  // ... in 1 MiB

// A fresh limit has a tenth of a second of credit, then the rate.
TEST(ThrottleTest, WithoutBurstAllowsATenthOfASecondAhead) {
  ManualClock clock;
  Throttle t;
  t.Configure(RateLimit{1000, 0, 1}, clock.NowNs());
  const uint64_t start = clock.NowNs();
  auto admitted = RunGreedy(t, clock, 1, start + kSecond);
  EXPECT_NEAR(static_cast<double>(CountIn(admitted, start, start + 1)), 101, 1);
  EXPECT_NEAR(static_cast<double>(admitted.size()), 1100, 2);
}

// Burst of 1000 IOPS for 5 s over a 100 IOPS limit: runs at the burst rate for
// 5 s (the drain time), then at the limit.
TEST(ThrottleTest, BurstRunsAtBurstRateForBurstSecondsThenFallsToTheRate) {
  ManualClock clock;
  Throttle t;
  t.Configure(RateLimit{100, 1000, 5}, clock.NowNs());
  const uint64_t start = clock.NowNs();
  auto admitted = RunGreedy(t, clock, 1, start + 20 * kSecond);
  for (uint64_t s = 0; s < 4; ++s) {
    const double n =
        static_cast<double>(CountIn(admitted, start + s * kSecond, start + (s + 1) * kSecond));
    EXPECT_NEAR(n / 1000.0, 1.0, 0.03) << "burst second " << s;  // the first has 20 ms extra
  }
  for (uint64_t s = 6; s < 20; ++s) {
    const double n =
        static_cast<double>(CountIn(admitted, start + s * kSecond, start + (s + 1) * kSecond));
    EXPECT_NEAR(n / 100.0, 1.0, 0.02) << "second " << s;
  }
  // Drain time: the first 100 ms window below twice the limit.
  const uint64_t drained_at = BurstEndNs(admitted, start, start + 20 * kSecond, 20);
  EXPECT_NEAR(static_cast<double>(drained_at) / kSecond, 5.0, 0.15);
}

// Idle time refills the burst at the sustained rate: (1000-100)*5/100 = 45 s
// from empty to full. Half of that gives half the burst.
TEST(ThrottleTest, BurstRefillsAtTheRateWhileIdle) {
  for (const double fraction : {0.5, 1.0}) {
    ManualClock clock;
    Throttle t;
    t.Configure(RateLimit{100, 1000, 5}, clock.NowNs());
    RunGreedy(t, clock, 1, clock.NowNs() + 10 * kSecond);  // burst spent
    clock.Advance(static_cast<uint64_t>(45 * fraction * kSecond));
    const uint64_t start = clock.NowNs();
    auto admitted = RunGreedy(t, clock, 1, start + 10 * kSecond);
    const uint64_t burst_ns = BurstEndNs(admitted, start, start + 10 * kSecond, 20);
    EXPECT_NEAR(static_cast<double>(burst_ns) / kSecond, 5.0 * fraction, 0.15)
        << "after idling for " << fraction << " of the refill time";
  }
}

// A request larger than every bucket is admitted, and the debt delays the next.
TEST(ThrottleTest, RequestLargerThanTheBucketIsAdmittedAndPaidFor) {
  ManualClock clock;
  Throttle t;
  t.Configure(RateLimit{1 << 20, 0, 1}, clock.NowNs());  // 1 MiB/s, 100 KiB cap
  EXPECT_EQ(t.WaitNs(clock.NowNs()), 0u);
  t.Charge(4 << 20, clock.NowNs());
  const double wait_s = static_cast<double>(t.WaitNs(clock.NowNs())) / kSecond;
  EXPECT_NEAR(wait_s, 4.0 - 0.1, 0.01);
}

// Admits one-unit requests at `now_ns` until the throttle says wait.
size_t AdmitAtOnce(Throttle& t, uint64_t now_ns) {
  size_t n = 0;
  while (t.WaitNs(now_ns) == 0 && n < 1'000'000) {
    t.Charge(1, now_ns);
    ++n;
  }
  return n;
}

TEST(ThrottleTest, ReconfigureKeepsCreditClippedAndEnablingStartsFull) {
  ManualClock clock;
  Throttle t;
  t.Configure(RateLimit{100, 1000, 5}, clock.NowNs());
  // Lowering the limit clips the 4500-unit burst to the new 10-unit cap.
  t.Configure(RateLimit{100, 0, 1}, clock.NowNs());
  EXPECT_EQ(AdmitAtOnce(t, clock.NowNs()), 11u);  // 10 of credit, the 11th goes into debt
  // Raising it does not mint credit the volume did not earn.
  t.Configure(RateLimit{100, 1000, 5}, clock.NowNs());
  EXPECT_EQ(AdmitAtOnce(t, clock.NowNs()), 0u);
  // Off, then on again: starts full.
  t.Configure(RateLimit{}, clock.NowNs());
  EXPECT_EQ(t.WaitNs(clock.NowNs()), 0u);
  t.Configure(RateLimit{100, 0, 1}, clock.NowNs());
  EXPECT_EQ(AdmitAtOnce(t, clock.NowNs()), 11u);
}

}  // namespace
}  // namespace localvol::iopath
