// Scheduler unit tests: flows that are always backlogged (or not), a
// ManualClock and an instant "device"; no I/O.
#include "iopath/scheduler.h"

#include <gtest/gtest.h>

#include <map>

#include "iopath/clock.h"

namespace localvol::iopath {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint64_t kOpCost = kDefaultOpCostBytes;

// A flow that always has another request of the same shape.
struct Source {
  Flow flow{this};
  Demand demand;
  uint64_t picks = 0;
  uint64_t cost = 0;  // bytes + op cost of what was picked
  bool active = true;
};

class Harness {
 public:
  explicit Harness(ManualClock* clock) : clock_(clock) {}

  void Add(Source& s, const IoLimits& limits = {}) {
    scheduler_.Configure(s.flow, limits, clock_->NowNs());
    if (s.active) Requeue(s);
  }
  void Requeue(Source& s) {
    s.demand.enqueue_ns = clock_->NowNs();
    scheduler_.Enqueue(s.flow, s.demand);
  }

  // Dispatches `n` requests; when every flow is throttled, the clock jumps to
  // the wake-up time. Returns how many times nothing was eligible.
  uint64_t Run(uint64_t n) {
    uint64_t stalls = 0;
    for (uint64_t i = 0; i < n;) {
      uint64_t wake = 0;
      const Scheduler::Pick pick = scheduler_.PickNext(clock_->NowNs(), &wake);
      if (!pick.flow) {
        ++stalls;
        if (wake == 0) return stalls;  // nothing backlogged
        clock_->Set(wake);
        continue;
      }
      auto* s = static_cast<Source*>(pick.flow->owner());
      ++s->picks;
      s->cost += s->demand.bytes + kOpCost;
      Requeue(*s);
      ++i;
    }
    return stalls;
  }
  // Dispatches until `until_ns` on the clock, advancing it `per_pick_ns` per
  // dispatch: a device that serves one request per per_pick_ns.
  void RunFor(uint64_t until_ns, uint64_t per_pick_ns) {
    while (clock_->NowNs() < until_ns) {
      uint64_t wake = 0;
      const Scheduler::Pick pick = scheduler_.PickNext(clock_->NowNs(), &wake);
      if (!pick.flow) {
        clock_->Set(wake != 0 ? std::min(wake, until_ns) : until_ns);
        continue;
      }
      auto* s = static_cast<Source*>(pick.flow->owner());
      ++s->picks;
      s->cost += s->demand.bytes + kOpCost;
      Requeue(*s);
      clock_->Advance(per_pick_ns);
    }
  }

  Scheduler scheduler_;

 private:
  ManualClock* clock_;
};

Demand Read(uint64_t bytes) { return Demand{IoDirection::kRead, bytes, 0}; }
Demand Write(uint64_t bytes) { return Demand{IoDirection::kWrite, bytes, 0}; }

IoLimits Weight(uint32_t w) {
  IoLimits l;
  l.weight = w;
  return l;
}

TEST(SchedulerTest, WeightsTwoToOneSplitServiceTwoToOne) {
  ManualClock clock;
  Harness h(&clock);
  Source heavy, light;
  heavy.demand = light.demand = Read(4096);
  h.Add(heavy, Weight(200));
  h.Add(light, Weight(100));
  EXPECT_EQ(h.Run(30'000), 0u);
  EXPECT_NEAR(static_cast<double>(heavy.cost) / static_cast<double>(light.cost), 2.0, 0.1);
}

// Many flows of different weights and request sizes: each gets its weight's
// share of the cost, within 2%.
TEST(SchedulerTest, ManyFlowsShareInProportionToTheirWeights) {
  ManualClock clock;
  Harness h(&clock);
  constexpr int kFlows = 50;
  std::vector<Source> sources(kFlows);
  uint64_t weight_sum = 0;
  for (int i = 0; i < kFlows; ++i) {
    sources[i].demand = (i % 3 == 0) ? Write(128 * 1024) : Read(4096 * (1 + i % 4));
    h.Add(sources[i], Weight(static_cast<uint32_t>(10 * (i + 1))));
    weight_sum += 10 * (i + 1);
  }
  h.Run(500'000);
  uint64_t cost_sum = 0;
  for (const Source& src : sources) cost_sum += src.cost;
  for (int i = 0; i < kFlows; ++i) {
    const double share = static_cast<double>(sources[i].cost) / static_cast<double>(cost_sum);
    const double expected = 10.0 * (i + 1) / static_cast<double>(weight_sum);
    EXPECT_NEAR(share / expected, 1.0, 0.02) << "flow " << i;
  }
}

TEST(SchedulerTest, FifoPolicyServesInArrivalOrderIgnoringWeights) {
  ManualClock clock;
  Scheduler s(SchedulerOptions{kDefaultOpCostBytes, IoPolicy::kFifo});
  Source heavy, light;
  s.Configure(heavy.flow, Weight(kMaxWeight), clock.NowNs());
  s.Configure(light.flow, Weight(1), clock.NowNs());
  s.Enqueue(light.flow, Demand{IoDirection::kRead, 4096, 100});
  s.Enqueue(heavy.flow, Demand{IoDirection::kRead, 4096, 200});
  uint64_t wake = 0;
  EXPECT_EQ(s.PickNext(clock.NowNs(), &wake).flow, &light.flow);  // it came first
  EXPECT_EQ(s.PickNext(clock.NowNs(), &wake).flow, &heavy.flow);
}

// Equal weights, 4 KiB against 128 KiB requests: the cost model gives each the
// same share of cost, not of requests.
TEST(SchedulerTest, SmallAndLargeRequestsShareByCost) {
  ManualClock clock;
  Harness h(&clock);
  Source small, large;
  small.demand = Read(4096);
  large.demand = Write(128 * 1024);
  h.Add(small);
  h.Add(large);
  h.Run(50'000);
  EXPECT_NEAR(static_cast<double>(small.cost) / static_cast<double>(large.cost), 1.0, 0.02);
  // ... which is (128+32)/(4+32) = 4.4 small requests per large one.
  EXPECT_NEAR(static_cast<double>(small.picks) / static_cast<double>(large.picks), 160.0 / 36.0,
              0.1);
}

TEST(SchedulerTest, AFlowAloneGetsEveryDispatchWhateverItsWeight) {
  ManualClock clock;
  Harness h(&clock);
  Source alone, idle;
  alone.demand = Read(4096);
  idle.active = false;
  h.Add(alone, Weight(1));
  h.Add(idle, Weight(kMaxWeight));
  EXPECT_EQ(h.Run(10'000), 0u);  // never "nothing eligible"
  EXPECT_EQ(alone.picks, 10'000u);
}

// Work conservation under limits: the throttled flow's unused share goes to
// the other flow, and the throttled one gets its limit, within 2%.
TEST(SchedulerTest, ThrottledFlowGetsItsLimitAndTheOtherTheRest) {
  ManualClock clock;
  Harness h(&clock);
  Source limited, free;
  limited.demand = Read(4096);
  free.demand = Read(4096);
  IoLimits l;
  l.read_iops.rate = 500;
  h.Add(limited, l);
  h.Add(free);
  const uint64_t start = clock.NowNs();
  // A device doing 10,000 requests/s: the fair share would be 5,000 each.
  h.RunFor(start + 1 * kSecond, 100'000);
  const uint64_t limited_warm = limited.picks;
  h.RunFor(start + 11 * kSecond, 100'000);
  EXPECT_NEAR(static_cast<double>(limited.picks - limited_warm) / 5000.0, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(limited.picks + free.picks) / 110'000.0, 1.0, 0.001);
}

TEST(SchedulerTest, ByteLimitDeliversWithinTwoPercent) {
  ManualClock clock;
  Harness h(&clock);
  Source writer;
  writer.demand = Write(1 << 20);
  IoLimits l;
  l.write_bps.rate = 50 << 20;
  h.Add(writer, l);
  const uint64_t start = clock.NowNs();
  h.RunFor(start + 1 * kSecond, 1000);
  const uint64_t warm = writer.picks;
  h.RunFor(start + 11 * kSecond, 1000);
  EXPECT_NEAR(static_cast<double>(writer.picks - warm) / 500.0, 1.0, 0.02);
}

// Read limits do not hold back writes, and the other way round.
TEST(SchedulerTest, LimitsApplyPerDirection) {
  ManualClock clock;
  Harness h(&clock);
  Source reader, writer;
  reader.demand = Read(4096);
  writer.demand = Write(4096);
  IoLimits l;
  l.read_iops.rate = 100;
  h.Add(reader, l);
  h.Add(writer, l);  // same limits: only read_iops is set
  const uint64_t start = clock.NowNs();
  h.RunFor(start + 2 * kSecond, 100'000);                  // device: 10,000/s
  EXPECT_NEAR(static_cast<double>(reader.picks), 210, 3);  // 100/s + the 10-op initial credit
  EXPECT_GT(writer.picks, 19'000u);
}

// A flow that was idle rejoins at the current virtual time: it gets its share
// from then on, not a catch-up for the time it did not use.
TEST(SchedulerTest, ReturningFlowGetsNoCreditForIdleTime) {
  ManualClock clock;
  Harness h(&clock);
  Source busy, late;
  busy.demand = late.demand = Read(4096);
  late.active = false;
  h.Add(busy);
  h.Add(late);
  h.Run(10'000);
  late.active = true;
  h.Requeue(late);
  const uint64_t busy_before = busy.picks;
  h.Run(1000);
  EXPECT_NEAR(static_cast<double>(late.picks), 500, 2);
  EXPECT_NEAR(static_cast<double>(busy.picks - busy_before), 500, 2);
}

TEST(SchedulerTest, ReportsWhenAThrottledFlowBecomesEligibleAndHowLongItWaited) {
  ManualClock clock;
  Scheduler s;
  Source src;
  IoLimits l;
  l.write_iops.rate = 10;  // cap: one op ahead
  s.Configure(src.flow, l, clock.NowNs());
  uint64_t wake = 0;
  s.Enqueue(src.flow, Write(0));
  EXPECT_NE(s.PickNext(clock.NowNs(), &wake).flow, nullptr);
  s.Enqueue(src.flow, Write(0));
  EXPECT_NE(s.PickNext(clock.NowNs(), &wake).flow, nullptr);  // the credit of 1
  s.Enqueue(src.flow, Write(0));
  Scheduler::Pick pick = s.PickNext(clock.NowNs(), &wake);
  EXPECT_EQ(pick.flow, nullptr);
  EXPECT_EQ(wake, clock.NowNs() + kSecond / 10);  // one op at 10/s
  clock.Set(wake - 1000);
  EXPECT_EQ(s.PickNext(clock.NowNs(), &wake).flow, nullptr);
  clock.Set(wake);
  pick = s.PickNext(clock.NowNs(), &wake);
  EXPECT_EQ(pick.flow, &src.flow);
  EXPECT_EQ(pick.throttled_ns, kSecond / 10);
  EXPECT_EQ(s.backlogged(), 0u);
}

TEST(SchedulerTest, TakeOverdueReturnsFlowsWhoseHeadWaitedTooLong) {
  ManualClock clock;
  Scheduler s;
  Source old_src, young_src;
  s.Configure(old_src.flow, IoLimits{}, clock.NowNs());
  s.Configure(young_src.flow, IoLimits{}, clock.NowNs());
  s.Enqueue(old_src.flow, Demand{IoDirection::kRead, 4096, clock.NowNs()});
  clock.Advance(20 * kSecond);
  s.Enqueue(young_src.flow, Demand{IoDirection::kRead, 4096, clock.NowNs()});
  clock.Advance(15 * kSecond);
  const uint64_t deadline = clock.NowNs() - 30 * kSecond;
  uint64_t throttled = 0;
  EXPECT_EQ(s.TakeOverdue(deadline, clock.NowNs(), &throttled), &old_src.flow);
  EXPECT_EQ(s.TakeOverdue(deadline, clock.NowNs(), &throttled), nullptr);
  EXPECT_FALSE(old_src.flow.backlogged());
  EXPECT_TRUE(young_src.flow.backlogged());
}

TEST(SchedulerTest, RemoveTakesAFlowOffTheBacklog) {
  ManualClock clock;
  Scheduler s;
  Source a, b, c;
  for (Source* src : {&a, &b, &c}) {
    s.Configure(src->flow, IoLimits{}, clock.NowNs());
    s.Enqueue(src->flow, Read(0));
  }
  s.Remove(a.flow);
  s.Remove(a.flow);  // idempotent
  EXPECT_EQ(s.backlogged(), 2u);
  uint64_t wake = 0;
  std::map<Flow*, int> seen;
  for (int i = 0; i < 2; ++i) ++seen[s.PickNext(clock.NowNs(), &wake).flow];
  EXPECT_EQ(seen.count(&a.flow), 0u);
  EXPECT_EQ(seen[&b.flow], 1);
  EXPECT_EQ(seen[&c.flow], 1);
}

}  // namespace
}  // namespace localvol::iopath
