#include "agent/placement.h"

#include <gtest/gtest.h>

#include <vector>

namespace localvol::agent {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

PlacementDisk Disk(const std::string& uuid, uint64_t free_gib, const std::string& unusable = "") {
  return PlacementDisk{uuid, "/dev/" + uuid.substr(0, 4), free_gib * kGiB, unusable};
}

PlacementRequest Ask(uint64_t gib, const std::string& disk = "") {
  return PlacementRequest{gib * kGiB, disk};
}

TEST(Placement, PicksTheDiskWithTheMostUnallocatedBytes) {
  const std::vector<PlacementDisk> disks = {Disk("aaaa-1", 5), Disk("bbbb-2", 9),
                                            Disk("cccc-3", 7)};
  auto picked = PlaceVolume(disks, Ask(1));
  ASSERT_TRUE(picked.ok()) << picked.status().ToString();
  EXPECT_EQ(*picked, 1u);
}

TEST(Placement, ADiskThatFitsExactlyIsTaken) {
  auto picked = PlaceVolume({Disk("aaaa-1", 2), Disk("bbbb-2", 4)}, Ask(4));
  ASSERT_TRUE(picked.ok()) << picked.status().ToString();
  EXPECT_EQ(*picked, 1u);
}

TEST(Placement, TiesGoToTheFirstDiskWhateverTheOrderOfCalls) {
  const std::vector<PlacementDisk> disks = {Disk("aaaa-1", 3), Disk("bbbb-2", 8), Disk("cccc-3", 8),
                                            Disk("dddd-4", 8)};
  for (int i = 0; i < 3; ++i) {
    auto picked = PlaceVolume(disks, Ask(1));
    ASSERT_TRUE(picked.ok()) << picked.status().ToString();
    EXPECT_EQ(*picked, 1u);
  }
}

TEST(Placement, SkipsADiskThatCannotServeVolumesEvenWithTheMostRoom) {
  const std::vector<PlacementDisk> disks = {Disk("aaaa-1", 100, "io_uring setup failed"),
                                            Disk("bbbb-2", 3)};
  auto picked = PlaceVolume(disks, Ask(1));
  ASSERT_TRUE(picked.ok()) << picked.status().ToString();
  EXPECT_EQ(*picked, 1u);
}

TEST(Placement, NoDiskAttachedIsNoSpaceSayingWhereToLook) {
  auto picked = PlaceVolume({}, Ask(1));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), ENOSPC);
  EXPECT_NE(picked.status().context().find("no disk is ready"), std::string::npos)
      << picked.status().ToString();
}

TEST(Placement, NoDiskFitsNamesTheLargestRoomLeft) {
  auto picked = PlaceVolume({Disk("aaaa-1", 2), Disk("bbbb-2", 3)}, Ask(4));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), ENOSPC);
  EXPECT_EQ(picked.status().context(),
            "no disk has 4Gi unallocated (the most any disk has is 3Gi); choose a smaller "
            "size, delete volumes or add a disk");
}

TEST(Placement, ARoomyDiskThatCannotServeDoesNotCountAsRoom) {
  auto picked = PlaceVolume({Disk("aaaa-1", 100, "broken"), Disk("bbbb-2", 3)}, Ask(4));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), ENOSPC);
  EXPECT_NE(picked.status().context().find("the most any disk has is 3Gi"), std::string::npos)
      << picked.status().ToString();
}

TEST(Placement, EveryDiskUnableToServeIsBusyWithTheReason) {
  auto picked =
      PlaceVolume({Disk("aaaa-1", 9, "no io_uring"), Disk("bbbb-2", 9, "no io_uring")}, Ask(1));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), EBUSY);
  EXPECT_NE(picked.status().context().find("no io_uring"), std::string::npos)
      << picked.status().ToString();
}

TEST(Placement, ANamedDiskIsTakenByIdDeviceOrUniquePrefix) {
  const std::vector<PlacementDisk> disks = {Disk("aaaa-1", 9), Disk("bbbb-2", 1)};
  for (const std::string name : {"bbbb-2", "/dev/bbbb", "bb"}) {
    auto picked = PlaceVolume(disks, Ask(1, name));
    ASSERT_TRUE(picked.ok()) << name << ": " << picked.status().ToString();
    EXPECT_EQ(*picked, 1u) << name;
  }
}

TEST(Placement, AnExactIdWinsOverAnotherDisksPrefix) {
  // "ab" is a whole id and a prefix of "abc".
  auto picked = PlaceVolume({Disk("abc", 9), Disk("ab", 1)}, Ask(1, "ab"));
  ASSERT_TRUE(picked.ok()) << picked.status().ToString();
  EXPECT_EQ(*picked, 1u);
}

TEST(Placement, AnAmbiguousPrefixIsInvalid) {
  auto picked = PlaceVolume({Disk("abc-1", 9), Disk("abd-2", 9)}, Ask(1, "ab"));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), EINVAL);
}

TEST(Placement, ANamedDiskThatIsNotAttachedIsNotFound) {
  // A missing disk is not among the candidates: naming it finds nothing.
  auto picked = PlaceVolume({Disk("aaaa-1", 9)}, Ask(1, "ffff-9"));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), ENOENT);
  EXPECT_NE(picked.status().context().find("ffff-9"), std::string::npos);
}

TEST(Placement, ANamedDiskThatCannotServeIsBusyAndNotReplaced) {
  auto picked =
      PlaceVolume({Disk("aaaa-1", 9, "engine failed"), Disk("bbbb-2", 9)}, Ask(1, "aaaa-1"));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), EBUSY);
  EXPECT_NE(picked.status().context().find("engine failed"), std::string::npos);
}

TEST(Placement, ANamedDiskWithoutTheRoomIsNoSpaceAndNotReplaced) {
  auto picked = PlaceVolume({Disk("aaaa-1", 2), Disk("bbbb-2", 9)}, Ask(3, "aaaa-1"));
  ASSERT_FALSE(picked.ok());
  EXPECT_EQ(picked.err(), ENOSPC);
  EXPECT_NE(picked.status().context().find("has 2Gi unallocated"), std::string::npos)
      << picked.status().ToString();
}

}  // namespace
}  // namespace localvol::agent
