#include "fuse/thread_placement.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <initializer_list>
#include <thread>
#include <vector>

namespace localvol::fuse {
namespace {

cpu_set_t Cpus(std::initializer_list<int> cpus) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  for (int c : cpus) CPU_SET(c, &mask);
  return mask;
}

// Records the masks a ThreadPlacement applies; fails them while `refuse`.
struct Recorder {
  std::vector<cpu_set_t> applied;
  bool refuse = false;
  ThreadPlacement::Apply Fn() {
    return [this](const cpu_set_t& mask) {
      if (refuse) return false;
      applied.push_back(mask);
      return true;
    };
  }
};

// A window of wake-ups taking `per_wake` requests each, `target` the CPU to
// pin to.
void Feed(ThreadPlacement& p, size_t per_wake, int target) {
  for (uint64_t n = 0; n < ThreadPlacement::kWindow; n += per_wake) {
    p.Observe(per_wake, [target] { return target; });
  }
}

TEST(ThreadPlacementTest, OneRequestPerWakeUpPinsToTheTarget) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1, 2, 3}), ThreadPlacement::kAnyCpu, r.Fn());
  int asked = 0;
  auto target = [&asked] {
    ++asked;
    return 1;
  };
  for (uint64_t n = 0; n + 1 < ThreadPlacement::kWindow; ++n) p.Observe(1, target);
  EXPECT_TRUE(r.applied.empty()) << "decides only after a whole window";
  EXPECT_EQ(asked, 0) << "the target is looked up only when a window decides";
  p.Observe(1, target);
  EXPECT_EQ(asked, 1);
  ASSERT_EQ(r.applied.size(), 1u);
  const cpu_set_t one = Cpus({1});
  EXPECT_TRUE(CPU_EQUAL(&r.applied[0], &one)) << "pinned to CPU 1 alone";
  EXPECT_EQ(p.pinned_cpu(), 1);
  Feed(p, 1, 1);
  EXPECT_EQ(r.applied.size(), 1u) << "already there: nothing to apply";
}

TEST(ThreadPlacementTest, APinnedThreadFollowsItsTarget) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1, 2, 3}), ThreadPlacement::kAnyCpu, r.Fn());
  Feed(p, 1, 1);
  ASSERT_EQ(p.pinned_cpu(), 1);
  Feed(p, 1, 3);  // the caller moved
  EXPECT_EQ(p.pinned_cpu(), 3);
  ASSERT_EQ(r.applied.size(), 2u);
  const cpu_set_t three = Cpus({3});
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &three));
}

TEST(ThreadPlacementTest, BatchesUnpinToEveryAllowedCpu) {
  Recorder r;
  const cpu_set_t allowed = Cpus({0, 2, 3});
  ThreadPlacement p(allowed, ThreadPlacement::kAnyCpu, r.Fn());
  Feed(p, 1, 2);
  ASSERT_TRUE(p.pinned());
  Feed(p, 8, 2);
  EXPECT_FALSE(p.pinned());
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &allowed));
  Feed(p, 8, 2);
  EXPECT_EQ(r.applied.size(), 2u) << "not pinned: nothing to undo";
}

TEST(ThreadPlacementTest, BatchesMoveAThreadWithABatchCpuThereAlone) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 2, 3}), 3, r.Fn());
  EXPECT_FALSE(p.pinned()) << "starts on every allowed CPU";
  Feed(p, 8, 0);
  EXPECT_TRUE(p.batched());
  EXPECT_EQ(p.pinned_cpu(), 3);
  ASSERT_EQ(r.applied.size(), 1u);
  const cpu_set_t three = Cpus({3});
  EXPECT_TRUE(CPU_EQUAL(&r.applied[0], &three));
  Feed(p, 8, 0);
  EXPECT_EQ(r.applied.size(), 1u) << "already there: nothing to apply";

  // One at a time: it follows its target, and goes back to CPU 3 in batches.
  Feed(p, 1, 2);
  EXPECT_FALSE(p.batched());
  EXPECT_EQ(p.pinned_cpu(), 2);
  Feed(p, 8, 2);
  EXPECT_TRUE(p.batched());
  EXPECT_EQ(p.pinned_cpu(), 3);
  EXPECT_EQ(r.applied.size(), 3u);
}

TEST(ThreadPlacementTest, ATargetOnTheBatchCpuIsFollowedWithoutANewMask) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), 1, r.Fn());
  Feed(p, 8, 0);
  ASSERT_EQ(p.pinned_cpu(), 1);
  Feed(p, 1, 1);
  EXPECT_FALSE(p.batched()) << "now it follows its target, which happens to be CPU 1";
  EXPECT_EQ(r.applied.size(), 1u);
  Feed(p, 1, 0);
  EXPECT_EQ(p.pinned_cpu(), 0) << "and the target moved";
}

TEST(ThreadPlacementTest, ABatchCpuOutsideItsCpusMeansEveryAllowedCpu) {
  Recorder r;
  const cpu_set_t allowed = Cpus({0, 1});
  ThreadPlacement p(allowed, 5, r.Fn());
  EXPECT_TRUE(p.batched()) << "every allowed CPU is where it starts";
  Feed(p, 1, 1);
  Feed(p, 8, 1);
  EXPECT_FALSE(p.pinned());
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &allowed));
  ThreadPlacement single(Cpus({2}), 2, r.Fn());
  Feed(single, 8, 2);
  EXPECT_FALSE(single.pinned()) << "one CPU: nothing to choose";
  EXPECT_EQ(r.applied.size(), 2u);
}

TEST(ThreadPlacementTest, UnpinLeavesTheBatchCpuToo) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), 0, r.Fn());
  Feed(p, 8, 1);
  ASSERT_EQ(p.pinned_cpu(), 0);
  p.Unpin();
  EXPECT_FALSE(p.pinned());
  Feed(p, 8, 1);
  EXPECT_EQ(p.pinned_cpu(), 0) << "the next batched window places it again";
}

// A window of batches of 8, `unspread` of them observed with `spread` false.
void FeedBatches(ThreadPlacement& p, int unspread) {
  for (int n = 0; n < static_cast<int>(ThreadPlacement::kWindow / 8); ++n) {
    p.Observe(
        8, [] { return 0; }, n >= unspread);
  }
}

TEST(ThreadPlacementTest, BatchesMostlyNotToSpreadGoToEveryAllowedCpu) {
  Recorder r;
  const cpu_set_t allowed = Cpus({0, 1});
  ThreadPlacement p(allowed, 1, r.Fn());
  FeedBatches(p, 0);
  ASSERT_EQ(p.pinned_cpu(), 1);
  FeedBatches(p, 63);  // of the window's 128 wake-ups: most still spread
  EXPECT_EQ(p.pinned_cpu(), 1);
  EXPECT_EQ(r.applied.size(), 1u);
  FeedBatches(p, 64);  // half: not most
  EXPECT_FALSE(p.pinned());
  EXPECT_TRUE(p.batched());
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &allowed));
  FeedBatches(p, 128);
  EXPECT_EQ(r.applied.size(), 2u) << "already on every CPU";
  FeedBatches(p, 0);
  EXPECT_EQ(p.pinned_cpu(), 1) << "small batches again: back to its batch CPU";
}

TEST(SpreadCpuTest, TakesTheAllowedCpusInTurn) {
  const cpu_set_t allowed = Cpus({1, 4, 6});
  std::vector<int> got;
  for (uint64_t n = 0; n < 7; ++n) got.push_back(SpreadCpu(allowed, n));
  EXPECT_EQ(got, (std::vector<int>{1, 4, 6, 1, 4, 6, 1}));
  cpu_set_t none;
  CPU_ZERO(&none);
  EXPECT_EQ(SpreadCpu(none, 0), -1);
}

TEST(ThreadPlacementTest, BetweenTheThresholdsNothingChanges) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), ThreadPlacement::kAnyCpu, r.Fn());
  Feed(p, 2, 0);  // 2 per wake-up: neither below 1.5 nor above 2.5
  EXPECT_FALSE(p.pinned());
  Feed(p, 1, 0);
  ASSERT_TRUE(p.pinned());
  Feed(p, 2, 1);
  EXPECT_EQ(p.pinned_cpu(), 0) << "stays where it is: no flapping, no move";
  EXPECT_EQ(r.applied.size(), 1u);
}

TEST(ThreadPlacementTest, WakeUpsWithoutRequestsDoNotCount) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), ThreadPlacement::kAnyCpu, r.Fn());
  // Batches of 4 with a wake-up for something else between each: still 4
  // requests per counted wake-up, so never pinned.
  for (uint64_t n = 0; n < 2 * ThreadPlacement::kWindow; n += 4) {
    p.Observe(4, [] { return 0; });
    p.Observe(0, [] { return 0; });
  }
  EXPECT_FALSE(p.pinned());
  EXPECT_TRUE(r.applied.empty());
}

TEST(ThreadPlacementTest, NeverPinsOutsideItsCpusWithOneCpuOrWithoutATarget) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), ThreadPlacement::kAnyCpu, r.Fn());
  Feed(p, 1, 3);
  Feed(p, 1, -1);
  Feed(p, 1, CPU_SETSIZE);
  ThreadPlacement single(Cpus({0}), ThreadPlacement::kAnyCpu, r.Fn());
  Feed(single, 1, 0);
  EXPECT_FALSE(p.pinned());
  EXPECT_FALSE(single.pinned());
  EXPECT_TRUE(r.applied.empty());
}

TEST(ThreadPlacementTest, AFailedApplyKeepsThePlacementAndRetries) {
  Recorder r;
  ThreadPlacement p(Cpus({0, 1}), ThreadPlacement::kAnyCpu, r.Fn());
  r.refuse = true;
  Feed(p, 1, 1);
  EXPECT_FALSE(p.pinned());
  r.refuse = false;
  Feed(p, 1, 1);
  EXPECT_TRUE(p.pinned());
  EXPECT_EQ(r.applied.size(), 1u);
}

TEST(ThreadPlacementTest, UnpinReturnsToEveryAllowedCpuAtOnce) {
  Recorder r;
  const cpu_set_t allowed = Cpus({0, 1});
  ThreadPlacement p(allowed, ThreadPlacement::kAnyCpu, r.Fn());
  Feed(p, 1, 1);
  ASSERT_TRUE(p.pinned());
  p.Unpin();
  EXPECT_FALSE(p.pinned());
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &allowed));
}

TEST(LastCpuOfTest, ReadsTheCpuAThreadRunsOn) {
  const cpu_set_t allowed = ThreadPlacement::CurrentAffinity();
  int checked = 0;
  // A thread pinned to each allowed CPU in turn reports that CPU.
  for (int cpu = 0; cpu < CPU_SETSIZE && checked < 4; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    int seen = -2;
    std::thread t([cpu, &seen] {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (sched_setaffinity(0, sizeof one, &one) != 0) return;
      seen = LastCpuOf(static_cast<pid_t>(syscall(SYS_gettid)));
    });
    t.join();
    EXPECT_EQ(seen, cpu);
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST(LastCpuOfTest, UnknownThreadsHaveNoCpu) {
  EXPECT_EQ(LastCpuOf(0), -1);
  EXPECT_EQ(LastCpuOf(-5), -1);
  // Above the kernel's pid limit (4,194,304 at most): no such thread.
  EXPECT_EQ(LastCpuOf(1 << 23), -1);
}

}  // namespace
}  // namespace localvol::fuse
