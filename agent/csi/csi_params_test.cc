#include "agent/csi/csi_params.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

namespace localvol::agent::csi {
namespace {

TEST(CsiParamsTest, ReadsEveryKeyAndIgnoresTheProvisionersOwn) {
  auto p = ParseVolumeParameters({{"inodes", "5000"},
                                  {"disk", "abcd"},
                                  {"readIOPS", "500"},
                                  {"readIOPSBurst", "2000"},
                                  {"readIOPSBurstSeconds", "10"},
                                  {"writeBPS", "100Mi"},
                                  {"writeBPSBurst", "200Mi"},
                                  {"writeBPSBurstSeconds", "5"},
                                  {"readBPS", "1G"},
                                  {"writeIOPS", "300"},
                                  {"weight", "300"},
                                  {"csi.storage.k8s.io/pvc/name", "data"},
                                  {"csi.storage.k8s.io/pvc/namespace", "shop"},
                                  {"csi.storage.k8s.io/pv/name", "pvc-1"}},
                                 {});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->inode_limit, 5000u);
  EXPECT_EQ(p->disk, "abcd");
  EXPECT_EQ(p->pvc, "shop/data");
  ASSERT_TRUE(p->io_limits.has_value());
  EXPECT_EQ(p->io_limits->read_iops, (iopath::RateLimit{500, 2000, 10}));
  EXPECT_EQ(p->io_limits->write_bps, (iopath::RateLimit{100ull << 20, 200ull << 20, 5}));
  EXPECT_EQ(p->io_limits->read_bps.rate, 1000000000u);
  EXPECT_EQ(p->io_limits->write_iops.rate, 300u);
  EXPECT_EQ(p->io_limits->weight, 300u);
}

TEST(CsiParamsTest, ReadPassthroughIsAutoOrOffAndFixedAtCreation) {
  auto none = ParseVolumeParameters({}, {});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->read_passthrough.has_value()) << "not given: the agent's default";
  auto off = ParseVolumeParameters({{"readPassthrough", "off"}}, {});
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(off->read_passthrough, std::optional<bool>(false));
  auto on = ParseVolumeParameters({{"readPassthrough", "auto"}}, {});
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_EQ(on->read_passthrough, std::optional<bool>(true));
  for (const char* bad : {"", "on", "true", "Off"}) {
    auto p = ParseVolumeParameters({{"readPassthrough", bad}}, {});
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.err(), EINVAL);
    EXPECT_NE(p.status().context().find("readPassthrough='" + std::string(bad) + "'"),
              std::string::npos)
        << p.status().context();
  }
  auto mut = ParseVolumeParameters({}, {{"readPassthrough", "off"}});
  ASSERT_FALSE(mut.ok());
  EXPECT_NE(mut.status().context().find("cannot change on a live volume"), std::string::npos)
      << mut.status().context();
}

TEST(CsiParamsTest, NoIoKeyMeansNoLimitsGiven) {
  auto p = ParseVolumeParameters({{"csi.storage.k8s.io/pvc/name", "x"}}, {});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->io_limits.has_value());
  EXPECT_EQ(p->pvc, "") << "a name without namespace names no claim";
  EXPECT_EQ(p->inode_limit, 0u);
}

TEST(CsiParamsTest, MutableParametersTakePrecedence) {
  auto p = ParseVolumeParameters({{"readIOPS", "100"}, {"weight", "50"}}, {{"readIOPS", "700"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->io_limits->read_iops.rate, 700u);
  EXPECT_EQ(p->io_limits->weight, 50u);
}

// Every refusal is EINVAL and names the key the user wrote.
TEST(CsiParamsTest, BadInputNamesTheKey) {
  struct Case {
    ParameterMap params, mutable_params;
    std::string want;
  };
  const Case cases[] = {
      {{{"fsType", "ext4"}}, {}, "unknown parameter 'fsType'"},
      {{}, {{"color", "red"}}, "unknown mutable parameter 'color'"},
      {{{"inodes", "many"}}, {}, "parameter inodes='many'"},
      {{{"inodes", "0"}}, {}, "parameter inodes='0'"},
      {{{"inodes", "-5"}}, {}, "parameter inodes='-5'"},
      {{{"readIOPS", "fast"}}, {}, "parameter readIOPS='fast'"},
      {{{"writeBPS", "12XB"}}, {}, "parameter writeBPS='12XB'"},
      {{{"weight", "0"}}, {}, "weight"},
      {{{"weight", "10001"}}, {}, "weight"},
      {{{"readIOPSBurstSeconds", "99999"}}, {}, "readIOPSBurstSeconds"},
      {{{"readIOPS", "500"}, {"readIOPSBurst", "100"}}, {}, "readIOPSBurst"},
      {{{"disk", ""}}, {}, "parameter disk=''"},
      {{}, {{"inodes", "100"}}, "mutable parameter 'inodes' cannot change"},
      {{}, {{"disk", "x"}}, "mutable parameter 'disk' cannot change"},
  };
  for (const auto& c : cases) {
    auto p = ParseVolumeParameters(c.params, c.mutable_params);
    ASSERT_FALSE(p.ok()) << c.want;
    EXPECT_EQ(p.err(), EINVAL);
    EXPECT_NE(p.status().context().find(c.want), std::string::npos) << p.status().context();
    EXPECT_EQ(p.status().context().find("read-iops"), std::string::npos)
        << "messages use the StorageClass spelling: " << p.status().context();
  }
}

TEST(CsiParamsTest, ApplyMutableChangesOnlyTheKeysGivenOrNothing) {
  iopath::IoLimits limits;
  limits.read_iops.rate = 100;
  limits.weight = 200;
  ASSERT_TRUE(ApplyMutableParameters({{"writeIOPS", "50"}}, &limits).ok());
  EXPECT_EQ(limits.read_iops.rate, 100u);
  EXPECT_EQ(limits.write_iops.rate, 50u);
  EXPECT_EQ(limits.weight, 200u);
  const iopath::IoLimits before = limits;
  Status st = ApplyMutableParameters({{"writeIOPS", "70"}, {"weight", "0"}}, &limits);
  EXPECT_EQ(st.err(), EINVAL);
  EXPECT_EQ(limits, before) << "a refused change changes nothing";
  EXPECT_EQ(ApplyMutableParameters({{"inodes", "7"}}, &limits).err(), EINVAL);
  EXPECT_EQ(ApplyMutableParameters({{"nope", "7"}}, &limits).err(), EINVAL);
  EXPECT_EQ(limits, before);
}

TEST(CsiParamsTest, BindRemountFlags) {
  auto f = BindRemountFlags({}, false, MS_NOSUID | MS_NODEV);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, static_cast<unsigned long>(MS_NOSUID | MS_NODEV));
  f = BindRemountFlags({"noexec", "noatime"}, true, MS_NOSUID | MS_RELATIME);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, static_cast<unsigned long>(MS_NOSUID | MS_NOEXEC | MS_NOATIME | MS_RDONLY));
  f = BindRemountFlags({"ro", "rw"}, false, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, 0u) << "the last word wins";
  f = BindRemountFlags({"bind", "defaults", "suid"}, false, MS_NOSUID);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, 0u);
  for (const char* bad : {"uid=1000", "context=x", "sync", "discard"}) {
    f = BindRemountFlags({"ro", bad}, false, 0);
    ASSERT_FALSE(f.ok()) << bad;
    EXPECT_NE(f.status().context().find(std::string("'") + bad + "'"), std::string::npos)
        << f.status().context();
  }
}

}  // namespace
}  // namespace localvol::agent::csi
