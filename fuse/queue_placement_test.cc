#include "fuse/queue_placement.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <vector>

namespace localvol::fuse {
namespace {

cpu_set_t Cpus(std::initializer_list<int> cpus) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  for (int c : cpus) CPU_SET(c, &mask);
  return mask;
}

// Records the masks a QueuePlacement applies; fails them while `refuse`.
struct Recorder {
  std::vector<cpu_set_t> applied;
  bool refuse = false;
  QueuePlacement::Apply Fn() {
    return [this](const cpu_set_t& mask) {
      if (refuse) return false;
      applied.push_back(mask);
      return true;
    };
  }
};

// A window of wake-ups taking `per_wake` requests each.
void Feed(QueuePlacement& p, size_t per_wake) {
  for (uint64_t n = 0; n < QueuePlacement::kWindow; n += per_wake) p.Observe(per_wake);
}

TEST(QueuePlacementTest, OneRequestPerWakeUpPinsToTheQueuesCpu) {
  Recorder r;
  QueuePlacement p(1, Cpus({0, 1, 2, 3}), r.Fn());
  for (uint64_t n = 0; n + 1 < QueuePlacement::kWindow; ++n) p.Observe(1);
  EXPECT_TRUE(r.applied.empty()) << "decides only after a whole window";
  p.Observe(1);
  ASSERT_EQ(r.applied.size(), 1u);
  const cpu_set_t one = Cpus({1});
  EXPECT_TRUE(CPU_EQUAL(&r.applied[0], &one)) << "pinned to CPU 1 alone";
  EXPECT_TRUE(p.pinned());
  Feed(p, 1);
  EXPECT_EQ(r.applied.size(), 1u) << "already pinned: nothing to apply";
}

TEST(QueuePlacementTest, BatchesUnpinToEveryAllowedCpu) {
  Recorder r;
  const cpu_set_t allowed = Cpus({0, 2, 3});
  QueuePlacement p(2, allowed, r.Fn());
  Feed(p, 1);
  ASSERT_TRUE(p.pinned());
  Feed(p, 8);
  EXPECT_FALSE(p.pinned());
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_TRUE(CPU_EQUAL(&r.applied[1], &allowed));
}

TEST(QueuePlacementTest, BetweenTheThresholdsNothingChanges) {
  Recorder r;
  QueuePlacement p(0, Cpus({0, 1}), r.Fn());
  Feed(p, 2);  // 2 per wake-up: neither below 1.5 nor above 2.5
  EXPECT_FALSE(p.pinned());
  Feed(p, 1);
  ASSERT_TRUE(p.pinned());
  Feed(p, 2);
  EXPECT_TRUE(p.pinned()) << "stays pinned: no flapping";
  EXPECT_EQ(r.applied.size(), 1u);
}

TEST(QueuePlacementTest, WakeUpsWithoutRequestsDoNotCount) {
  Recorder r;
  QueuePlacement p(0, Cpus({0, 1}), r.Fn());
  // Batches of 4 with a wake-up for something else between each: still 4
  // requests per counted wake-up, so never pinned.
  for (uint64_t n = 0; n < 2 * QueuePlacement::kWindow; n += 4) {
    p.Observe(4);
    p.Observe(0);
  }
  EXPECT_FALSE(p.pinned());
  EXPECT_TRUE(r.applied.empty());
}

TEST(QueuePlacementTest, NeverPinsOutsideItsCpusOrWithOneCpu) {
  Recorder r;
  QueuePlacement not_allowed(3, Cpus({0, 1}), r.Fn());
  Feed(not_allowed, 1);
  QueuePlacement single(0, Cpus({0}), r.Fn());
  Feed(single, 1);
  EXPECT_FALSE(not_allowed.pinned());
  EXPECT_FALSE(single.pinned());
  EXPECT_TRUE(r.applied.empty());
}

TEST(QueuePlacementTest, AFailedApplyKeepsThePlacementAndRetries) {
  Recorder r;
  QueuePlacement p(1, Cpus({0, 1}), r.Fn());
  r.refuse = true;
  Feed(p, 1);
  EXPECT_FALSE(p.pinned());
  r.refuse = false;
  Feed(p, 1);
  EXPECT_TRUE(p.pinned());
  EXPECT_EQ(r.applied.size(), 1u);
}

}  // namespace
}  // namespace localvol::fuse
