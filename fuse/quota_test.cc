#include "fuse/quota.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace localvol::fuse {
namespace {

TEST(Quota, ReservesUpToExactlyTheCapacity) {
  Quota q(/*capacity_bytes=*/8192, /*inode_limit=*/10, /*used_bytes=*/4096, /*used_inodes=*/0);
  Reservation r;
  EXPECT_FALSE(q.TryReserve(4097, 0, &r));
  EXPECT_EQ(r.bytes(), 0u);
  ASSERT_TRUE(q.TryReserve(4096, 0, &r));
  Reservation r2;
  EXPECT_FALSE(q.TryReserve(1, 0, &r2)) << "reserved bytes must count against the capacity";
  r.Release();
  EXPECT_TRUE(q.TryReserve(1, 0, &r2));
}

TEST(Quota, SettleReplacesReservationByObservedDelta) {
  Quota q(1 << 20, 10, 0, 0);
  Reservation r;
  ASSERT_TRUE(q.TryReserve(65536, 1, &r));
  q.Settle(r, 4096, 1);
  auto s = q.Snapshot();
  EXPECT_EQ(s.used_bytes, 4096u);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.used_inodes, 1u);
  EXPECT_EQ(s.reserved_inodes, 0u);
  // A settled reservation releases nothing more when destroyed.
  r.Release();
  EXPECT_EQ(q.Snapshot().used_bytes, 4096u);
}

TEST(Quota, DestroyedReservationIsReturned) {
  Quota q(4096, 1, 0, 0);
  {
    Reservation r;
    ASSERT_TRUE(q.TryReserve(4096, 1, &r));
  }
  auto s = q.Snapshot();
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.reserved_inodes, 0u);
}

TEST(Quota, InodeLimit) {
  Quota q(1 << 20, 2, 0, 1);
  Reservation a, b;
  ASSERT_TRUE(q.TryReserve(0, 1, &a));
  EXPECT_FALSE(q.TryReserve(0, 1, &b));
  q.Settle(a, 0, 1);
  EXPECT_FALSE(q.TryReserve(0, 1, &b));
  q.Adjust(0, -1);
  EXPECT_TRUE(q.TryReserve(0, 1, &b));
}

TEST(Quota, NegativeAdjustClampsAtZero) {
  Quota q(100, 10, 50, 1);
  q.Adjust(-80, -5);
  auto s = q.Snapshot();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.used_inodes, 0u);
}

TEST(Quota, HugeRequestDoesNotOverflow) {
  Quota q(1 << 20, 10, 4096, 0);
  Reservation r;
  EXPECT_FALSE(q.TryReserve(UINT64_MAX - 100, 0, &r));
  EXPECT_FALSE(q.TryReserve(0, UINT64_MAX, &r));
}

TEST(Quota, GrowAlwaysShrinkBelowUsageRefused) {
  Quota q(8192, 4, 6000, 3);
  EXPECT_TRUE(q.SetLimits(1 << 30, 100).ok());
  Status s = q.SetLimits(4096, 100);
  EXPECT_EQ(s.err(), ENOSPC);
  EXPECT_NE(s.context().find("6000"), std::string::npos) << s.context();
  EXPECT_EQ(q.SetLimits(8192, 2).err(), ENOSPC);
  auto snap = q.Snapshot();
  EXPECT_EQ(snap.capacity_bytes, 1u << 30) << "a refused shrink changes nothing";
  EXPECT_EQ(snap.inode_limit, 100u);
  EXPECT_TRUE(q.SetLimits(6000, 3).ok()) << "shrinking to exactly the usage is allowed";
}

TEST(Quota, ConcurrentReservationsNeverExceedCapacity) {
  constexpr uint64_t kCapacity = 1 << 20;
  Quota q(kCapacity, 1000000, 0, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        Reservation r;
        if (q.TryReserve(4096, 0, &r)) {
          auto s = q.Snapshot();
          EXPECT_LE(s.used_bytes + s.reserved_bytes, kCapacity);
          q.Settle(r, 4096, 0);
        }
        if (i % 3 == 0) q.Adjust(-4096, 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  auto s = q.Snapshot();
  EXPECT_LE(s.used_bytes, kCapacity);
  EXPECT_EQ(s.reserved_bytes, 0u);
}

}  // namespace
}  // namespace localvol::fuse
