#include "base/mount_table.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <sstream>

namespace localvol {
namespace {

TEST(MountTable, UnescapesThreeOctalDigits) {
  EXPECT_EQ(UnescapeProcPath("/mnt/a\\040b"), "/mnt/a b");
  EXPECT_EQ(UnescapeProcPath("/mnt/tab\\011x\\012"), "/mnt/tab\tx\n");
  EXPECT_EQ(UnescapeProcPath("/mnt/back\\134slash"), "/mnt/back\\slash");
  EXPECT_EQ(UnescapeProcPath("/plain"), "/plain");
}

TEST(MountTable, KeepsABackslashWithoutThreeOctalDigits) {
  // sscanf("%3o") would take "\01x" as one byte and drop the 'x'.
  EXPECT_EQ(UnescapeProcPath("a\\01x"), "a\\01x");
  EXPECT_EQ(UnescapeProcPath("a\\8"), "a\\8");
  EXPECT_EQ(UnescapeProcPath("a\\ 12"), "a\\ 12");
  EXPECT_EQ(UnescapeProcPath("end\\04"), "end\\04");
  EXPECT_EQ(UnescapeProcPath("end\\"), "end\\");
}

TEST(MountTable, ParsesEveryFieldWithAndWithoutOptionalFields) {
  std::istringstream in(
      "36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 shared:7 - ext3 /dev/root "
      "rw,errors=continue\n"
      "50 36 0:45 / /mnt/disks/db rw,nosuid,nodev,relatime - fuse.localvol localvol:db "
      "rw,user_id=0,group_id=0,default_permissions,allow_other\n");
  const auto table = ParseMountInfo(in);
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[0].dev, makedev(98, 0));
  EXPECT_EQ(table[0].root, "/mnt1");
  EXPECT_EQ(table[0].mount_point, "/mnt/parent dir");
  EXPECT_EQ(table[0].mount_options, "rw,noatime");
  EXPECT_EQ(table[0].fstype, "ext3");
  EXPECT_EQ(table[0].source, "/dev/root");
  EXPECT_EQ(table[0].super_options, "rw,errors=continue");
  EXPECT_EQ(table[1].dev, makedev(0, 45));
  EXPECT_EQ(table[1].mount_point, "/mnt/disks/db");
  EXPECT_EQ(table[1].mount_options, "rw,nosuid,nodev,relatime");
  EXPECT_EQ(table[1].fstype, "fuse.localvol");
  EXPECT_EQ(table[1].source, "localvol:db");
  EXPECT_EQ(table[1].super_options, "rw,user_id=0,group_id=0,default_permissions,allow_other");
}

TEST(MountTable, SkipsATruncatedLine) {
  std::istringstream in("36 35 98:0 / /a\n37 35 98:1 / /b rw - xfs /dev/vdb rw\n");
  const auto table = ParseMountInfo(in);
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0].mount_point, "/b");
}

TEST(MountTable, OurOwnTableHasTheRootMount) {
  const auto root = FindMountAt("/");
  ASSERT_TRUE(root.has_value());
  EXPECT_FALSE(root->fstype.empty());
  EXPECT_FALSE(root->mount_options.empty());
}

}  // namespace
}  // namespace localvol
