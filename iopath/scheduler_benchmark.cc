// Cost of the admission decision: one Scheduler::PickNext() plus the Enqueue()
// of the flow's next request, as the engine does it per dispatched request,
// with 1 to 256 backlogged volumes, unlimited or with limits configured that
// never bind. Run: build/iopath/iopath_scheduler_benchmark
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "iopath/clock.h"
#include "iopath/scheduler.h"

namespace localvol::iopath {
namespace {

void BM_Admission(benchmark::State& state) {
  const auto flows = static_cast<size_t>(state.range(0));
  const bool limited = state.range(1) != 0;
  Scheduler scheduler;
  std::vector<std::unique_ptr<Flow>> all;
  IoLimits limits;
  if (limited) {
    // Far above what the benchmark dispatches: configured, never binding.
    limits.read_iops = RateLimit{1'000'000'000, 0, 1};
    limits.read_bps = RateLimit{uint64_t{1} << 50, 0, 1};
    limits.write_iops = RateLimit{1'000'000'000, 2'000'000'000, 1};
  }
  for (size_t i = 0; i < flows; ++i) {
    all.push_back(std::make_unique<Flow>());
    limits.weight = static_cast<uint32_t>(100 + i);
    scheduler.Configure(*all.back(), limits, SteadyClock().NowNs());
    scheduler.Enqueue(*all.back(), Demand{IoDirection::kRead, 4096, 0});
  }
  uint64_t now = SteadyClock().NowNs();
  uint64_t wake = 0;
  for (auto _ : state) {
    now += 100;  // 10M requests/s of simulated time
    const Scheduler::Pick pick = scheduler.PickNext(now, &wake);
    benchmark::DoNotOptimize(pick.flow);
    scheduler.Enqueue(*pick.flow, Demand{IoDirection::kRead, 4096, now});
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Admission)->ArgNames({"volumes", "limited"})->ArgsProduct({{1, 8, 64, 256}, {0, 1}});

// One Throttle check and charge: the per-limit part of admission.
void BM_ThrottleCheckAndCharge(benchmark::State& state) {
  Throttle throttle;
  throttle.Configure(RateLimit{1'000'000'000, 2'000'000'000, 1}, 0);
  uint64_t now = 0;
  for (auto _ : state) {
    now += 100;
    benchmark::DoNotOptimize(throttle.WaitNs(now));
    throttle.Charge(1, now);
  }
}
BENCHMARK(BM_ThrottleCheckAndCharge);

}  // namespace
}  // namespace localvol::iopath

BENCHMARK_MAIN();
