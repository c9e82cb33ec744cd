// Space without a mount: admission and settling against a real Quota, over
// files of a scratch directory.
#include "fuse/space.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

#include "base/status.h"
#include "fuse/inode_table_fixture.h"

namespace localvol::fuse {
namespace {

constexpr uint64_t kBlock = 4096;

// Some usage from elsewhere, so that a limit of exactly the usage is valid.
constexpr uint64_t kUsedElsewhere = 1 << 20;

class SpaceTest : public InodeTableFixture {
 protected:
  SpaceTest() : InodeTableFixture(kUsedElsewhere) {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(InodeTableFixture::SetUp());
    space_.emplace(&*table_, &quota_, kBlock);
    // A file whose first 16 blocks are allocated, then a 16-block hole.
    file_ = UniqueFd(open(dir_.Sub("f").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    ASSERT_TRUE(file_.valid()) << std::strerror(errno);
    const std::string data(16 * kBlock, 'x');
    ASSERT_EQ(pwrite(file_.get(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(ftruncate(file_.get(), 32 * kBlock), 0);
    ASSERT_EQ(fsync(file_.get()), 0);
    auto exact = UnallocatedBytesInRange(file_.get(), 0, 32 * kBlock, kBlock);
    if (!exact.ok()) GTEST_SKIP() << "no FIEMAP here: " << exact.status().ToString();
    ASSERT_EQ(*exact, 16 * kBlock);
  }

  // Limits the quota to what is used plus `free_bytes`.
  void LeaveFree(uint64_t free_bytes) {
    const QuotaSnapshot q = quota_.Snapshot();
    ASSERT_TRUE(quota_.SetLimits(q.used_bytes + q.reserved_bytes + free_bytes, 1000).ok());
  }

  std::optional<Space> space_;
  UniqueFd file_;
};

TEST_F(SpaceTest, UnallocatedBytesCountHolesAndThePastEnd) {
  EXPECT_EQ(*UnallocatedBytesInRange(file_.get(), 0, 16 * kBlock, kBlock), 0u);
  EXPECT_EQ(*UnallocatedBytesInRange(file_.get(), 16 * kBlock, kBlock, kBlock), kBlock);
  // Unaligned: the blocks the range touches.
  EXPECT_EQ(*UnallocatedBytesInRange(file_.get(), 16 * kBlock - 1, 2, kBlock), kBlock);
  EXPECT_EQ(*UnallocatedBytesInRange(file_.get(), 100 * kBlock, 10, kBlock), kBlock);
}

TEST_F(SpaceTest, WriteReservesItsWorstCaseWhileThereIsRoom) {
  Reservation r;
  EXPECT_EQ(space_->AdmitWrite(file_.get(), 10, 2 * kBlock, &r), 2 * kBlock);
  EXPECT_EQ(r.bytes(), 3 * kBlock) << "three blocks are touched";
}

TEST_F(SpaceTest, FullVolumeAdmitsOverwritesOfAllocatedBlocksOnly) {
  ASSERT_NO_FATAL_FAILURE(LeaveFree(0));
  Reservation r;
  EXPECT_EQ(space_->AdmitWrite(file_.get(), 0, 16 * kBlock, &r), 16 * kBlock);
  EXPECT_EQ(r.bytes(), 0u);
  Reservation hole;
  EXPECT_EQ(space_->AdmitWrite(file_.get(), 16 * kBlock, 1, &hole), 0u) << "ENOSPC";
  Reservation alloc;
  EXPECT_TRUE(space_->AdmitAllocation(file_.get(), 0, 16 * kBlock, &alloc));
  EXPECT_FALSE(space_->AdmitAllocation(file_.get(), 0, 17 * kBlock, &alloc));
}

TEST_F(SpaceTest, NearlyFullVolumeAdmitsThePrefixThatFits) {
  ASSERT_NO_FATAL_FAILURE(LeaveFree(2 * kBlock));
  Reservation r;
  EXPECT_EQ(space_->AdmitWrite(file_.get(), 16 * kBlock, 4 * kBlock, &r), 2 * kBlock);
  EXPECT_EQ(r.bytes(), 2 * kBlock);
  Reservation none;
  EXPECT_EQ(space_->AdmitWrite(file_.get(), 20 * kBlock, 1, &none), 0u)
      << "the reservation above holds the rest";
  // fallocate is all or nothing.
  r.Release();
  Reservation alloc;
  EXPECT_FALSE(space_->AdmitAllocation(file_.get(), 16 * kBlock, 3 * kBlock, &alloc));
  EXPECT_EQ(alloc.bytes(), 0u);
}

TEST_F(SpaceTest, SettlingChargesTheObservedAllocationOnce) {
  struct stat st;
  Inode* inode = Lookup("f", &st);
  ASSERT_NE(inode, nullptr);
  const uint64_t known = static_cast<uint64_t>(st.st_blocks) * 512;  // charged by the rescan
  Reservation r;
  ASSERT_EQ(space_->AdmitWrite(file_.get(), 16 * kBlock, kBlock, &r), kBlock);
  const std::string block(kBlock, 'y');
  ASSERT_EQ(pwrite(file_.get(), block.data(), block.size(), 16 * kBlock),
            static_cast<ssize_t>(kBlock));
  ASSERT_EQ(fsync(file_.get()), 0);
  space_->SettleAllocation(*inode, file_.get(), r);
  const QuotaSnapshot q = quota_.Snapshot();
  EXPECT_EQ(q.reserved_bytes, 0u);
  EXPECT_EQ(q.used_bytes, kUsedElsewhere + kBlock);
  EXPECT_EQ(space_->TakeAllocationDelta(*inode, file_.get()), 0) << "nothing changed since";
  // Freeing is charged without a reservation.
  ASSERT_EQ(ftruncate(file_.get(), 0), 0);
  space_->ChargeAllocation(*inode);
  EXPECT_EQ(quota_.Snapshot().used_bytes, kUsedElsewhere - known);
  table_->Forget(inode, 1);
}

TEST_F(SpaceTest, OverwritesNeedTheProbedPrefixAndStopWhileFreeing) {
  struct stat st;
  Inode* inode = Lookup("f", &st);
  ASSERT_NE(inode, nullptr);
  EXPECT_FALSE(space_->BeginOverwrite(*inode, 1)) << "nothing probed yet";
  space_->CountSettledWrite(*inode, file_.get());  // the first settled write probes
  EXPECT_EQ(inode->dense_end.load(), 16 * kBlock);
  ASSERT_TRUE(space_->BeginOverwrite(*inode, 16 * kBlock));
  space_->EndOverwrite(*inode);
  EXPECT_FALSE(space_->BeginOverwrite(*inode, 16 * kBlock + 1));
  EXPECT_EQ(space_->overwrites(), 1u);
  {
    FreeingGuard freeing(*inode);
    EXPECT_FALSE(space_->BeginOverwrite(*inode, 1)) << "blocks may be going";
    for (uint32_t i = 0; i < Space::kProbeEvery; ++i)
      space_->CountSettledWrite(*inode, file_.get());
    EXPECT_EQ(inode->dense_end.load(), 0u) << "no probe while freeing";
  }
  table_->Forget(inode, 1);
}

}  // namespace
}  // namespace localvol::fuse
