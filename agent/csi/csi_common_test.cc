#include "agent/csi/csi_common.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "agent/csi/csi_server.h"

namespace localvol::agent::csi {
namespace {

TEST(CsiCommonTest, NodeNameFromConfigThenEnvironmentThenHostName) {
  ::setenv("NODE_NAME", "from-env", 1);
  EXPECT_EQ(*ResolveNodeName("from-config"), "from-config");
  EXPECT_EQ(*ResolveNodeName(""), "from-env");
  ::setenv("NODE_NAME", "Bad Name!", 1);
  auto bad = ResolveNodeName("");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.err(), EINVAL);
  EXPECT_NE(bad.status().context().find("NODE_NAME"), std::string::npos) << bad.status().context();
  ::unsetenv("NODE_NAME");
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  auto h = ResolveNodeName("");
  if (h.ok()) {
    EXPECT_EQ(*h, host);
  }
}

TEST(CsiCommonTest, VolumeLocksHoldOneOperationPerName) {
  VolumeLocks locks;
  auto a = locks.TryLock("pvc-1");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(locks.TryLock("pvc-1"), nullptr) << "a second operation on the name is refused";
  EXPECT_NE(locks.TryLock("pvc-2"), nullptr) << "other names are free";
  a.reset();
  EXPECT_NE(locks.TryLock("pvc-1"), nullptr) << "released with its holder";
}

TEST(CsiCommonTest, TopologyNamesThisNodeOnly) {
  pb::Topology t;
  SetTopology("node-a", &t);
  EXPECT_TRUE(IsThisNode(t, "node-a"));
  EXPECT_FALSE(IsThisNode(t, "node-b"));
  pb::Topology other;
  (*other.mutable_segments())["kubernetes.io/hostname"] = "node-a";
  EXPECT_FALSE(IsThisNode(other, "node-a"));
}

}  // namespace
}  // namespace localvol::agent::csi
