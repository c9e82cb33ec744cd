#include "agent/manifest.h"

#include <gtest/gtest.h>

namespace localvol::agent {
namespace {

TEST(ManifestTest, RoundTrip) {
  DiskManifest m;
  m.disk_uuid = "0b7c1d2e-0000-4000-8000-000000000001";
  m.filesystem = "xfs";
  m.created = "2024-01-01T00:00:00Z";
  m.volumes.push_back(VolumeRecord{"db-0", 10ull << 30, 655360, true, "2024-01-02T00:00:00Z"});
  m.volumes.push_back(VolumeRecord{"logs", 1ull << 20, 5000, false, ""});
  auto back = ParseManifest(FormatManifest(m), "m.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->disk_uuid, m.disk_uuid);
  EXPECT_EQ(back->filesystem, "xfs");
  ASSERT_EQ(back->volumes.size(), 2u);
  EXPECT_EQ(back->volumes[0].name, "db-0");
  EXPECT_EQ(back->volumes[0].capacity_bytes, 10ull << 30);
  EXPECT_EQ(back->volumes[0].inode_limit, 655360u);
  EXPECT_TRUE(back->volumes[0].default_inodes);
  EXPECT_FALSE(back->volumes[1].default_inodes);
  EXPECT_EQ(back->Find("logs")->inode_limit, 5000u);
  EXPECT_EQ(back->Find("nope"), nullptr);
}

TEST(ManifestTest, RejectsWhatItCannotTrust) {
  const struct {
    const char* text;
    const char* error;
  } cases[] = {
      {"format: 2\ndisk_uuid: x\n", "format 2 is not supported"},
      {"disk_uuid: x\n", "format: missing"},
      {"format: 1\n", "disk_uuid: missing"},
      {"format: 1\ndisk_uuid: x\nvolumes:\n  - name: a\n    capacity_bytes: 1\n    inode_limit: 1\n"
       "  - name: a\n    capacity_bytes: 1\n    inode_limit: 1\n",
       "listed twice"},
      {"format: 1\ndisk_uuid: x\nvolumes:\n  - name: a\n    capacity_bytes: -1\n    inode_limit: 1\n",
       "not a number"},
      {"format: 1\ndisk_uuid: x\nvolumes: [\n", "not valid YAML"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifest(c.text, "m.yaml");
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_EQ(m.err(), EINVAL);
    EXPECT_NE(m.status().context().find(c.error), std::string::npos) << m.status().context();
  }
}

}  // namespace
}  // namespace localvol::agent
