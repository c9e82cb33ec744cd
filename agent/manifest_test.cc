#include "agent/manifest.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace localvol::agent {
namespace {

TEST(ManifestTest, RoundTrip) {
  DiskManifest m;
  m.disk_uuid = "0b7c1d2e-0000-4000-8000-000000000001";
  m.filesystem = "xfs";
  m.created = "2024-01-01T00:00:00Z";
  m.volumes.push_back(
      VolumeRecord{"db-0", 10ull << 30, 655360, true, "2024-01-02T00:00:00Z", {}, false, "", true});
  m.volumes.push_back(
      VolumeRecord{"logs", 1ull << 20, 5000, false, "", {}, true, "shop/logs", false});
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
  // The CSI origin and claim survive; a volume not made through CSI has none.
  EXPECT_FALSE(back->Find("db-0")->csi);
  EXPECT_TRUE(back->Find("logs")->csi);
  EXPECT_EQ(back->Find("logs")->pvc, "shop/logs");
  EXPECT_EQ(FormatManifest(m).find("csi:"), FormatManifest(m).rfind("csi:"))
      << "only the CSI volume says so";
  // Read passthrough is written only when off.
  EXPECT_TRUE(back->Find("db-0")->read_passthrough);
  EXPECT_FALSE(back->Find("logs")->read_passthrough);
  EXPECT_EQ(FormatManifest(m).find("read_passthrough:"),
            FormatManifest(m).rfind("read_passthrough: off"));
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
      {"format: 1\ndisk_uuid: x\nvolumes:\n  - name: a\n    capacity_bytes: -1\n    inode_limit: "
       "1\n",
       "not a number"},
      {"format: 1\ndisk_uuid: x\nvolumes: [\n", "not valid YAML"},
      {"format: 1\ndisk_uuid: x\nvolumes:\n  - name: a\n    capacity_bytes: 1\n    inode_limit: 1\n"
       "    read_passthrough: maybe\n",
       "volumes[0].read_passthrough: expected auto or off, not 'maybe'"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifest(c.text, "m.yaml");
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_EQ(m.err(), EINVAL);
    EXPECT_NE(m.status().context().find(c.error), std::string::npos) << m.status().context();
  }
}

TEST(ManifestTest, IoLimitsRoundTripWithOnlyNonDefaultSettings) {
  DiskManifest m;
  m.disk_uuid = "u";
  VolumeRecord limited{"db", 1ull << 30, 65536, true, "", {}, false, "", true};
  limited.io_limits.read_iops = {500, 2000, 10};
  limited.io_limits.write_bps.rate = 100ull << 20;
  limited.io_limits.weight = 300;
  m.volumes.push_back(limited);
  m.volumes.push_back(VolumeRecord{"plain", 1ull << 20, 1024, true, "", {}, false, "", true});
  const std::string text = FormatManifest(m);
  // The keys are the CLI's; defaults are not written at all.
  EXPECT_NE(text.find("io_limits:"), std::string::npos) << text;
  EXPECT_NE(text.find("read-iops: 500"), std::string::npos) << text;
  EXPECT_NE(text.find("read-iops-burst: 2000"), std::string::npos) << text;
  EXPECT_NE(text.find("read-iops-burst-seconds: 10"), std::string::npos) << text;
  EXPECT_NE(text.find("write-bps: 100Mi"), std::string::npos) << text;
  EXPECT_NE(text.find("weight: 300"), std::string::npos) << text;
  EXPECT_EQ(text.find("write-iops"), std::string::npos) << text;
  EXPECT_EQ(text.find("io_limits"), text.rfind("io_limits"))
      << "only the limited volume has a map:\n"
      << text;
  auto back = ParseManifest(text, "m.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->Find("db")->io_limits, limited.io_limits);
  EXPECT_EQ(back->Find("plain")->io_limits, iopath::IoLimits{});
}

TEST(ManifestTest, ManifestWithoutIoLimitsReadsAsUnlimited) {
  // Written before I/O limits existed.
  auto m = ParseManifest(
      "format: 1\ndisk_uuid: x\nvolumes:\n  - name: old\n    capacity_bytes: 1048576\n"
      "    inode_limit: 1024\n    default_inodes: true\n",
      "m.yaml");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->Find("old")->io_limits, iopath::IoLimits{});
  EXPECT_EQ(m->Find("old")->io_limits.weight, 100u);
  EXPECT_FALSE(m->Find("old")->io_limits.read_iops.limited());
}

TEST(ManifestTest, RejectsMalformedIoLimitsNamingVolumeAndKey) {
  const std::string head =
      "format: 1\ndisk_uuid: x\nvolumes:\n  - name: ok\n    capacity_bytes: 1\n    inode_limit: 1\n"
      "  - name: bad-vol\n    capacity_bytes: 1\n    inode_limit: 1\n    io_limits:";
  const struct {
    const char* limits;
    std::vector<const char*> mentions;
  } cases[] = {
      {"\n      read-iops: lots\n", {"bad-vol", "read-iops", "'lots'"}},
      {"\n      write-bps: 12XB\n", {"bad-vol", "write-bps", "12XB"}},
      {"\n      read-iops: -5\n", {"bad-vol", "read-iops"}},
      {"\n      reed-iops: 5\n", {"bad-vol", "reed-iops", "unknown I/O limit"}},
      {"\n      weight: 0\n", {"bad-vol", "weight"}},
      {"\n      read-iops-burst-seconds: 0\n", {"bad-vol", "read-iops-burst-seconds"}},
      // Each setting is fine alone, the combination is not.
      {"\n      write-iops: 100\n      write-iops-burst: 50\n",
       {"bad-vol", "write-iops-burst", "above"}},
      {"\n      read-bps-burst: 1Mi\n", {"bad-vol", "read-bps-burst", "read-bps"}},
      {"\n      read-iops: [1, 2]\n", {"bad-vol", "read-iops", "single value"}},
      {"\n      read-iops: 1\n      read-iops: 2\n", {"bad-vol", "read-iops", "twice"}},
      {" 500\n", {"bad-vol", "io_limits", "not a map"}},
  };
  for (const auto& c : cases) {
    auto m = ParseManifest(head + c.limits, "m.yaml");
    ASSERT_FALSE(m.ok()) << c.limits;
    EXPECT_EQ(m.err(), EINVAL);
    for (const char* word : c.mentions) {
      EXPECT_NE(m.status().context().find(word), std::string::npos)
          << "'" << word << "' not in: " << m.status().context();
    }
  }
}

// A crash at the rename of WriteManifest leaves its temporary file; only
// exactly those names are removed, whatever else lies there.
TEST(ManifestTest, RemovesOnlyStaleManifestTemporaries) {
  char tmpl[] = "/tmp/lvmanifest-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  for (const char* name :
       {"localvol-manifest.yaml.tmp.123", "localvol-manifest.yaml.tmp.9",
        "localvol-manifest.yaml.tmp.abc", "localvol-manifest.yaml.tmp.",
        "localvol-manifest.yaml.tmp.12x", "other.yaml.tmp.5", "localvol-manifest.yaml"}) {
    std::ofstream(dir + "/" + name) << "x";
  }
  ASSERT_EQ(::mkdir((dir + "/localvol-manifest.yaml.tmp.77").c_str(), 0755), 0);
  auto removed = RemoveStaleManifestTemps(dir);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{"localvol-manifest.yaml.tmp.123",
                                               "localvol-manifest.yaml.tmp.9"}));
  for (const char* kept : {"localvol-manifest.yaml.tmp.abc", "localvol-manifest.yaml.tmp.",
                           "localvol-manifest.yaml.tmp.12x", "other.yaml.tmp.5",
                           "localvol-manifest.yaml", "localvol-manifest.yaml.tmp.77"}) {
    EXPECT_EQ(::access((dir + "/" + kept).c_str(), F_OK), 0) << kept;
  }
  EXPECT_NE(::access((dir + "/localvol-manifest.yaml.tmp.123").c_str(), F_OK), 0);
  ASSERT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

}  // namespace
}  // namespace localvol::agent
