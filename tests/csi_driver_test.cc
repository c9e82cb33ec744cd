// The CSI driver (agent/csi/) over its real socket, against a real localvold
// on loop disks, with a gRPC client generated from agent/csi/csi.proto: every
// RPC it serves, success and idempotent repeats, every error code it
// documents, bad input that changes nothing, and concurrent calls for one
// volume. The sidecar/kubelet replay is in csi_e2e_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/csi_fixture.h"
#include "tests/support/mounts.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

constexpr int64_t kMi = 1ll << 20;
using Code = grpc::StatusCode;
using Mode = csipb::VolumeCapability::AccessMode;

class CsiDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
    // Two disks of different sizes: the largest volume is the larger one's.
    ASSERT_TRUE(agent_.Start({2048ull << 20, 1024ull << 20}));
  }

  grpc::Status Create(const csipb::CreateVolumeRequest& req,
                      csipb::CreateVolumeResponse* out = nullptr) {
    grpc::ClientContext ctx;
    csipb::CreateVolumeResponse r;
    return agent_.controller().CreateVolume(&ctx, req, out != nullptr ? out : &r);
  }
  grpc::Status Delete(const std::string& id) {
    grpc::ClientContext ctx;
    csipb::DeleteVolumeRequest req;
    req.set_volume_id(id);
    csipb::DeleteVolumeResponse r;
    return agent_.controller().DeleteVolume(&ctx, req, &r);
  }
  grpc::Status Publish(const csipb::NodePublishVolumeRequest& req) {
    grpc::ClientContext ctx;
    csipb::NodePublishVolumeResponse r;
    return agent_.node().NodePublishVolume(&ctx, req, &r);
  }
  grpc::Status Unpublish(const std::string& id, const std::string& target) {
    grpc::ClientContext ctx;
    csipb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target);
    csipb::NodeUnpublishVolumeResponse r;
    return agent_.node().NodeUnpublishVolume(&ctx, req, &r);
  }
  csipb::GetCapacityResponse Capacity(const std::string& node = kCsiNode) {
    grpc::ClientContext ctx;
    csipb::GetCapacityRequest req;
    (*req.mutable_accessible_topology()->mutable_segments())[kCsiTopologyKey] = node;
    *req.add_volume_capabilities() = MountCapability();
    csipb::GetCapacityResponse r;
    EXPECT_GRPC_OK(agent_.controller().GetCapacity(&ctx, req, &r));
    return r;
  }
  std::vector<std::string> VolumeIds() {
    grpc::ClientContext ctx;
    csipb::ListVolumesResponse r;
    EXPECT_GRPC_OK(agent_.controller().ListVolumes(&ctx, csipb::ListVolumesRequest(), &r));
    std::vector<std::string> ids;
    for (const auto& e : r.entries()) ids.push_back(e.volume().volume_id());
    return ids;
  }
  std::string Inspect(const std::string& name, bool json = false) {
    CommandResult r = json ? agent_.Ctl({"-o", "json", "volume", "inspect", name})
                           : agent_.Ctl({"volume", "inspect", name});
    EXPECT_TRUE(r.ok()) << r.Summary();
    return r.out;
  }
  std::string Target(const std::string& name) {
    return agent_.dirs().Sub("pods/" + name + "/mount");
  }

  CsiAgent agent_;
};

TEST_F(CsiDriverTest, IdentityCapabilitiesAndNodeInfo) {
  struct stat st;
  ASSERT_EQ(::lstat(agent_.csi_socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the CSI socket is root's alone";

  grpc::ClientContext c1;
  csipb::GetPluginInfoResponse info;
  ASSERT_GRPC_OK(agent_.identity().GetPluginInfo(&c1, csipb::GetPluginInfoRequest(), &info));
  EXPECT_EQ(info.name(), "localvol.io");
  EXPECT_FALSE(info.vendor_version().empty());

  grpc::ClientContext c2;
  csipb::GetPluginCapabilitiesResponse caps;
  ASSERT_GRPC_OK(
      agent_.identity().GetPluginCapabilities(&c2, csipb::GetPluginCapabilitiesRequest(), &caps));
  std::set<int> services;
  int expansion = -1;
  for (const auto& c : caps.capabilities()) {
    if (c.has_service()) services.insert(c.service().type());
    if (c.has_volume_expansion()) expansion = c.volume_expansion().type();
  }
  EXPECT_EQ(services,
            (std::set<int>{csipb::PluginCapability::Service::CONTROLLER_SERVICE,
                           csipb::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS}));
  EXPECT_EQ(expansion, csipb::PluginCapability::VolumeExpansion::ONLINE);

  grpc::ClientContext c3;
  csipb::ProbeResponse probe;
  ASSERT_GRPC_OK(agent_.identity().Probe(&c3, csipb::ProbeRequest(), &probe));
  EXPECT_TRUE(probe.has_ready() && probe.ready().value());

  grpc::ClientContext c4;
  csipb::ControllerGetCapabilitiesResponse ccaps;
  ASSERT_GRPC_OK(agent_.controller().ControllerGetCapabilities(
      &c4, csipb::ControllerGetCapabilitiesRequest(), &ccaps));
  std::set<int> rpcs;
  for (const auto& c : ccaps.capabilities()) rpcs.insert(c.rpc().type());
  using CRpc = csipb::ControllerServiceCapability::RPC;
  EXPECT_EQ(rpcs, (std::set<int>{CRpc::CREATE_DELETE_VOLUME, CRpc::GET_CAPACITY, CRpc::LIST_VOLUMES,
                                 CRpc::MODIFY_VOLUME}));

  grpc::ClientContext c5;
  csipb::NodeGetCapabilitiesResponse ncaps;
  ASSERT_GRPC_OK(
      agent_.node().NodeGetCapabilities(&c5, csipb::NodeGetCapabilitiesRequest(), &ncaps));
  rpcs.clear();
  for (const auto& c : ncaps.capabilities()) rpcs.insert(c.rpc().type());
  using NRpc = csipb::NodeServiceCapability::RPC;
  EXPECT_EQ(rpcs, (std::set<int>{NRpc::GET_VOLUME_STATS, NRpc::EXPAND_VOLUME,
                                 NRpc::VOLUME_CONDITION, NRpc::SINGLE_NODE_MULTI_WRITER}));

  grpc::ClientContext c6;
  csipb::NodeGetInfoResponse node;
  ASSERT_GRPC_OK(agent_.node().NodeGetInfo(&c6, csipb::NodeGetInfoRequest(), &node));
  EXPECT_EQ(node.node_id(), kCsiNode);
  EXPECT_EQ(node.accessible_topology().segments().at(kCsiTopologyKey), kCsiNode);

  // What the driver does not serve answers UNIMPLEMENTED.
  grpc::ClientContext c7;
  csipb::CreateSnapshotResponse snap;
  EXPECT_EQ(
      agent_.controller().CreateSnapshot(&c7, csipb::CreateSnapshotRequest(), &snap).error_code(),
      Code::UNIMPLEMENTED);
  grpc::ClientContext c8;
  csipb::NodeStageVolumeResponse stage;
  EXPECT_EQ(
      agent_.node().NodeStageVolume(&c8, csipb::NodeStageVolumeRequest(), &stage).error_code(),
      Code::UNIMPLEMENTED);
}

TEST_F(CsiDriverTest, CreateVolumeSizesTopologyAndIdempotency) {
  csipb::CreateVolumeResponse r;
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-a", 64 * kMi), &r));
  EXPECT_EQ(r.volume().volume_id(), "pvc-a");
  EXPECT_EQ(r.volume().capacity_bytes(), 64 * kMi);
  ASSERT_EQ(r.volume().accessible_topology_size(), 1);
  EXPECT_EQ(r.volume().accessible_topology(0).segments().at(kCsiTopologyKey), kCsiNode);
  EXPECT_TRUE(IsMountedAs(agent_.dirs().publish() + "/pvc-a", "fuse.localvol"));

  // Same name, compatible: the existing volume, unchanged.
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-a", 64 * kMi), &r));
  EXPECT_EQ(r.volume().capacity_bytes(), 64 * kMi);
  auto range = CreateRequest("pvc-a", 32 * kMi);
  range.mutable_capacity_range()->set_limit_bytes(128 * kMi);
  ASSERT_GRPC_OK(Create(range, &r));
  EXPECT_EQ(r.volume().capacity_bytes(), 64 * kMi);
  // Incompatible: ALREADY_EXISTS, nothing changes.
  EXPECT_GRPC_CODE(Create(CreateRequest("pvc-a", 65 * kMi)), Code::ALREADY_EXISTS,
                   "already exists with 64Mi");
  auto other = CreateRequest("pvc-a", 64 * kMi);
  (*other.mutable_parameters())["readIOPS"] = "100";
  EXPECT_GRPC_CODE(Create(other), Code::ALREADY_EXISTS, "pvc-a");

  // Only limit_bytes: the default 1Gi, capped at the limit.
  auto capped = CreateRequest("pvc-capped", 0);
  capped.mutable_capacity_range()->set_limit_bytes(16 * kMi);
  ASSERT_GRPC_OK(Create(capped, &r));
  EXPECT_EQ(r.volume().capacity_bytes(), 16 * kMi);
  // No capacity_range: 1Gi (it fits on the 2Gi disk only).
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-default", 0), &r));
  EXPECT_EQ(r.volume().capacity_bytes(), 1ll << 30);

  // inspect shows the CSI state.
  const std::string text = Inspect("pvc-a");
  EXPECT_NE(text.find("CSI:        PV pvc-a"), std::string::npos) << text;
  EXPECT_NE(text.find("Published:  nowhere else"), std::string::npos) << text;
}

// Every refusal of CreateVolume, each changing nothing: no volume, no space.
TEST_F(CsiDriverTest, CreateVolumeBadInputChangesNothing) {
  const auto before = Capacity();
  auto with = [](csipb::CreateVolumeRequest r, auto edit) {
    edit(r);
    return r;
  };
  EXPECT_GRPC_CODE(Create(CreateRequest("", 64 * kMi)), Code::INVALID_ARGUMENT, "name is missing");
  for (const char* bad : {"Bad_Name", "-x", "pvc.dots",
                          "a-name-that-is-much-longer-than-sixty-three-characters-long-indeed"}) {
    EXPECT_GRPC_CODE(Create(CreateRequest(bad, 64 * kMi)), Code::INVALID_ARGUMENT,
                     "invalid volume name");
  }
  EXPECT_GRPC_CODE(
      Create(with(CreateRequest("v1", 64 * kMi), [](auto& r) { r.clear_volume_capabilities(); })),
      Code::INVALID_ARGUMENT, "volume_capabilities is missing");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { r.mutable_volume_capabilities(0)->mutable_block(); })),
                   Code::INVALID_ARGUMENT, "localvol serves filesystems only");
  for (auto mode : {Mode::MULTI_NODE_READER_ONLY, Mode::MULTI_NODE_SINGLE_WRITER,
                    Mode::MULTI_NODE_MULTI_WRITER}) {
    EXPECT_GRPC_CODE(
        Create(with(CreateRequest("v1", 64 * kMi),
                    [&](auto& r) { *r.add_volume_capabilities() = MountCapability(mode); })),
        Code::INVALID_ARGUMENT, "is not supported");
  }
  EXPECT_GRPC_CODE(
      Create(with(
          CreateRequest("v1", 64 * kMi),
          [](auto& r) { r.mutable_volume_capabilities(0)->mutable_mount()->set_fs_type("ext4"); })),
      Code::INVALID_ARGUMENT, "fs_type 'ext4'");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { (*r.mutable_parameters())["fsType"] = "x"; })),
                   Code::INVALID_ARGUMENT, "unknown parameter 'fsType'");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { (*r.mutable_parameters())["readIOPS"] = "lots"; })),
                   Code::INVALID_ARGUMENT, "readIOPS='lots'");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { (*r.mutable_mutable_parameters())["inodes"] = "5"; })),
                   Code::INVALID_ARGUMENT, "inodes");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { (*r.mutable_parameters())["disk"] = "nosuch"; })),
                   Code::INVALID_ARGUMENT, "parameter disk");
  EXPECT_GRPC_CODE(
      Create(with(CreateRequest("v1", 0), [](auto& r) { r.mutable_capacity_range(); })),
      Code::INVALID_ARGUMENT, "neither required_bytes nor limit_bytes");
  EXPECT_GRPC_CODE(
      Create(with(CreateRequest("v1", -5),
                  [](auto& r) { r.mutable_capacity_range()->set_required_bytes(-5); })),
      Code::INVALID_ARGUMENT, "negative");
  EXPECT_GRPC_CODE(Create(with(CreateRequest("v1", 64 * kMi),
                               [](auto& r) { r.mutable_capacity_range()->set_limit_bytes(kMi); })),
                   Code::INVALID_ARGUMENT, "above limit_bytes");
  EXPECT_GRPC_CODE(Create(CreateRequest("v1", 4096)), Code::OUT_OF_RANGE, "at least 1Mi");
  EXPECT_GRPC_CODE(Create(CreateRequest("v1", 100ll << 30)), Code::RESOURCE_EXHAUSTED,
                   "no disk has 100Gi");
  EXPECT_GRPC_CODE(
      Create(with(CreateRequest("v1", 64 * kMi),
                  [](auto& r) {
                    r.mutable_volume_content_source()->mutable_volume()->set_volume_id("x");
                  })),
      Code::INVALID_ARGUMENT, "not supported");
  auto elsewhere = CreateRequest("v1", 64 * kMi);
  elsewhere.mutable_accessibility_requirements()->clear_preferred();
  (*elsewhere.mutable_accessibility_requirements()
        ->mutable_requisite(0)
        ->mutable_segments())[kCsiTopologyKey] = "node-b";
  EXPECT_GRPC_CODE(Create(elsewhere), Code::RESOURCE_EXHAUSTED, "does not include this node");

  EXPECT_TRUE(VolumeIds().empty());
  EXPECT_EQ(agent_.Ctl({"volume", "list"}).out.find("v1"), std::string::npos);
  EXPECT_FALSE(Exists(agent_.dirs().publish() + "/v1"));
  EXPECT_EQ(Capacity().available_capacity(), before.available_capacity());
}

TEST_F(CsiDriverTest, GetCapacityPerNodeAndLargestDisk) {
  const auto empty = Capacity();
  EXPECT_GT(empty.available_capacity(), empty.maximum_volume_size().value()) << "two disks";
  EXPECT_GT(empty.maximum_volume_size().value(), 1ll << 30)
      << "the 2Gi disk has more than 1Gi free";
  EXPECT_LT(empty.maximum_volume_size().value(), 2ll << 30);
  const auto other = Capacity("node-b");
  EXPECT_EQ(other.available_capacity(), 0) << "another node's segment";
  EXPECT_EQ(other.maximum_volume_size().value(), 0);

  ASSERT_GRPC_OK(Create(CreateRequest("big", 1ll << 30)));
  const auto after = Capacity();
  EXPECT_EQ(after.available_capacity(), empty.available_capacity() - (1ll << 30));
  EXPECT_LT(after.maximum_volume_size().value(), empty.maximum_volume_size().value());
  // What GetCapacity promises, CreateVolume delivers; one byte more does not fit.
  EXPECT_GRPC_CODE(Create(CreateRequest("over", after.maximum_volume_size().value() + 1)),
                   Code::RESOURCE_EXHAUSTED, "no disk has");
  ASSERT_GRPC_OK(Create(CreateRequest("exact", after.maximum_volume_size().value())));

  grpc::ClientContext ctx;
  csipb::GetCapacityRequest bad;
  (*bad.mutable_parameters())["weight"] = "heavy";
  csipb::GetCapacityResponse r;
  EXPECT_GRPC_CODE(agent_.controller().GetCapacity(&ctx, bad, &r), Code::INVALID_ARGUMENT,
                   "weight");
}

// readPassthrough is the volume's own setting, fixed at creation: a retry
// with another value is ALREADY_EXISTS, and a VolumeAttributesClass cannot set it.
TEST_F(CsiDriverTest, ReadPassthroughParameterIsTheVolumesOwnSetting) {
  auto req = CreateRequest("pvc-nopt", 64 * kMi);
  (*req.mutable_parameters())["readPassthrough"] = "off";
  ASSERT_GRPC_OK(Create(req));
  const std::string text = Inspect("pvc-nopt");
  EXPECT_NE(text.find("read passthrough off for this volume"), std::string::npos) << text;
  (*req.mutable_parameters())["readPassthrough"] = "auto";
  EXPECT_GRPC_CODE(Create(req), Code::ALREADY_EXISTS, "read passthrough off");
  auto again = CreateRequest("pvc-nopt2", 64 * kMi);
  (*again.mutable_mutable_parameters())["readPassthrough"] = "off";
  EXPECT_GRPC_CODE(Create(again), Code::INVALID_ARGUMENT, "readPassthrough");
}

TEST_F(CsiDriverTest, ParametersSetLimitsAndModifyVolumeChangesThemLive) {
  auto req = CreateRequest("pvc-lim", 64 * kMi);
  (*req.mutable_parameters())["readIOPS"] = "500";
  (*req.mutable_parameters())["readIOPSBurst"] = "2000";
  (*req.mutable_parameters())["readIOPSBurstSeconds"] = "10";
  (*req.mutable_parameters())["writeBPS"] = "100Mi";
  (*req.mutable_parameters())["inodes"] = "5000";
  (*req.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "data";
  (*req.mutable_parameters())["csi.storage.k8s.io/pvc/namespace"] = "shop";
  (*req.mutable_parameters())["csi.storage.k8s.io/pv/name"] = "pvc-lim";
  (*req.mutable_mutable_parameters())["weight"] = "300";
  ASSERT_GRPC_OK(Create(req));
  std::string text = Inspect("pvc-lim");
  EXPECT_NE(text.find("read-iops=500 read-iops-burst=2000 read-iops-burst-seconds=10"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("write-bps=100Mi"), std::string::npos) << text;
  EXPECT_NE(text.find("weight=300"), std::string::npos) << text;
  EXPECT_NE(text.find("/ 5000"), std::string::npos) << text;
  EXPECT_NE(text.find("PV pvc-lim, for PVC shop/data"), std::string::npos) << text;
  const std::string json = Inspect("pvc-lim", true);
  EXPECT_NE(json.find("\"csi\": true"), std::string::npos) << json;
  EXPECT_NE(json.find("\"pvc\": \"shop/data\""), std::string::npos) << json;

  auto modify = [&](std::map<std::string, std::string> params, const std::string& id = "pvc-lim") {
    grpc::ClientContext ctx;
    csipb::ControllerModifyVolumeRequest m;
    m.set_volume_id(id);
    for (const auto& [k, v] : params) (*m.mutable_mutable_parameters())[k] = v;
    csipb::ControllerModifyVolumeResponse r;
    return agent_.controller().ControllerModifyVolume(&ctx, m, &r);
  };
  ASSERT_GRPC_OK(modify({{"writeIOPS", "50"}, {"weight", "700"}}));
  text = Inspect("pvc-lim");
  EXPECT_NE(text.find("read-iops=500 read-iops-burst=2000"), std::string::npos)
      << "keys not given stay:\n"
      << text;
  EXPECT_NE(text.find("write-iops=50"), std::string::npos) << text;
  EXPECT_NE(text.find("weight=700"), std::string::npos) << text;
  // Refusals change nothing.
  EXPECT_GRPC_CODE(modify({{"writeIOPS", "60"}, {"weight", "0"}}), Code::INVALID_ARGUMENT,
                   "weight");
  EXPECT_GRPC_CODE(modify({{"inodes", "10"}}), Code::INVALID_ARGUMENT, "inodes");
  EXPECT_GRPC_CODE(modify({{"speed", "10"}}), Code::INVALID_ARGUMENT,
                   "unknown mutable parameter 'speed'");
  EXPECT_GRPC_CODE(modify({{"weight", "10"}}, "nosuch"), Code::NOT_FOUND, "no volume nosuch");
  EXPECT_GRPC_CODE(modify({{"weight", "10"}}, ""), Code::INVALID_ARGUMENT, "volume_id is missing");
  EXPECT_EQ(Inspect("pvc-lim"), text);
}

TEST_F(CsiDriverTest, ListVolumesPagesAndValidateVolumeCapabilities) {
  for (const char* n : {"pvc-1", "pvc-2", "pvc-3", "pvc-4", "pvc-5"})
    ASSERT_GRPC_OK(Create(CreateRequest(n, 8 * kMi)));
  // A volume made with localvolctl is not the driver's.
  ASSERT_TRUE(agent_.Ctl({"volume", "create", "manual", "--size", "8Mi"}).ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    csipb::ListVolumesRequest req;
    req.set_max_entries(2);
    req.set_starting_token(token);
    csipb::ListVolumesResponse r;
    ASSERT_GRPC_OK(agent_.controller().ListVolumes(&ctx, req, &r));
    EXPECT_LE(r.entries_size(), 2);
    for (const auto& e : r.entries()) {
      seen.push_back(e.volume().volume_id());
      EXPECT_EQ(e.volume().capacity_bytes(), 8 * kMi);
    }
    token = r.next_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"pvc-1", "pvc-2", "pvc-3", "pvc-4", "pvc-5"}));
  {
    grpc::ClientContext ctx;
    csipb::ListVolumesRequest req;
    req.set_starting_token("Not/A*Token");
    csipb::ListVolumesResponse r;
    EXPECT_GRPC_CODE(agent_.controller().ListVolumes(&ctx, req, &r), Code::ABORTED,
                     "starting_token");
  }
  {
    grpc::ClientContext ctx;
    csipb::ListVolumesRequest req;
    req.set_max_entries(-1);
    csipb::ListVolumesResponse r;
    EXPECT_GRPC_CODE(agent_.controller().ListVolumes(&ctx, req, &r), Code::INVALID_ARGUMENT,
                     "max_entries");
  }

  auto validate = [&](const std::string& id, const csipb::VolumeCapability& cap,
                      csipb::ValidateVolumeCapabilitiesResponse* r) {
    grpc::ClientContext ctx;
    csipb::ValidateVolumeCapabilitiesRequest req;
    req.set_volume_id(id);
    *req.add_volume_capabilities() = cap;
    return agent_.controller().ValidateVolumeCapabilities(&ctx, req, r);
  };
  csipb::ValidateVolumeCapabilitiesResponse r;
  ASSERT_GRPC_OK(validate("pvc-1", MountCapability(Mode::SINGLE_NODE_MULTI_WRITER), &r));
  EXPECT_TRUE(r.has_confirmed());
  EXPECT_EQ(r.confirmed().volume_capabilities_size(), 1);
  r.Clear();
  ASSERT_GRPC_OK(validate("pvc-1", MountCapability(Mode::MULTI_NODE_MULTI_WRITER), &r));
  EXPECT_FALSE(r.has_confirmed());
  EXPECT_NE(r.message().find("MULTI_NODE_MULTI_WRITER"), std::string::npos) << r.message();
  EXPECT_GRPC_CODE(validate("nosuch", MountCapability(), &r), Code::NOT_FOUND, "no volume nosuch");
}

TEST_F(CsiDriverTest, DeleteVolumeIdempotentAndRefusedWhilePublished) {
  EXPECT_GRPC_OK(Delete("never-was"));
  EXPECT_GRPC_OK(Delete("Not_A_Name"));
  EXPECT_GRPC_CODE(Delete(""), Code::INVALID_ARGUMENT, "volume_id is missing");
  ASSERT_TRUE(agent_.Ctl({"volume", "create", "manual", "--size", "8Mi"}).ok());
  EXPECT_GRPC_CODE(Delete("manual"), Code::FAILED_PRECONDITION, "not created through CSI");
  EXPECT_GRPC_CODE(Create(CreateRequest("manual", 8 * kMi)), Code::ALREADY_EXISTS,
                   "made with localvolctl");
  EXPECT_TRUE(IsMountedAs(agent_.dirs().publish() + "/manual", "fuse.localvol"));

  ASSERT_GRPC_OK(Create(CreateRequest("pvc-del", 16 * kMi)));
  const auto with_volume = Capacity();
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-del", Target("p1"))));
  EXPECT_GRPC_CODE(Delete("pvc-del"), Code::FAILED_PRECONDITION,
                   "still published at " + Target("p1"));
  EXPECT_TRUE(IsMountedAs(Target("p1"), "fuse.localvol"));
  ASSERT_GRPC_OK(Unpublish("pvc-del", Target("p1")));
  ASSERT_GRPC_OK(Delete("pvc-del"));
  EXPECT_FALSE(Exists(agent_.dirs().publish() + "/pvc-del"));
  EXPECT_GRPC_OK(Delete("pvc-del"));
  EXPECT_EQ(Capacity().available_capacity(), with_volume.available_capacity() + 16 * kMi);
}

TEST_F(CsiDriverTest, PublishAndUnpublish) {
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-pub", 16 * kMi)));
  const std::string t1 = Target("rw"), t2 = Target("ro");
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-pub", t1)));
  EXPECT_TRUE(IsMountedAs(t1, "fuse.localvol"));
  ASSERT_TRUE(WriteFile(t1 + "/hello", "world").ok());
  EXPECT_EQ(*ReadFile(agent_.dirs().publish() + "/pvc-pub/hello"), "world")
      << "the bind shows the volume";
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-pub", t1))) << "idempotent";
  EXPECT_GRPC_CODE(Publish(PublishRequest("pvc-pub", t1, true)), Code::ALREADY_EXISTS,
                   "read-write");

  // Read-only, with flags that make sense for a bind.
  auto ro = PublishRequest("pvc-pub", t2, true);
  ro.mutable_volume_capability()->mutable_mount()->add_mount_flags("noexec");
  ASSERT_GRPC_OK(Publish(ro));
  EXPECT_EQ(*ReadFile(t2 + "/hello"), "world");
  EXPECT_SYS_ERRNO(::open((t2 + "/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644), EROFS);
  struct statvfs sv;
  ASSERT_EQ(::statvfs(t2.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_NOEXEC);
  ASSERT_EQ(::statvfs(t1.c_str(), &sv), 0);
  EXPECT_FALSE(sv.f_flag & ST_RDONLY) << "the read-only remount touches its own bind only";
  EXPECT_GRPC_OK(Publish(ro)) << "idempotent";

  const std::string json = Inspect("pvc-pub", true);
  EXPECT_NE(json.find(t1), std::string::npos) << json;
  EXPECT_NE(json.find(t2), std::string::npos) << json;
  const std::string text = Inspect("pvc-pub");
  EXPECT_NE(text.find("Published:  " + t1), std::string::npos) << text;

  ASSERT_GRPC_OK(Unpublish("pvc-pub", t2));
  EXPECT_FALSE(Exists(t2)) << "unpublish removes the target";
  EXPECT_GRPC_OK(Unpublish("pvc-pub", t2)) << "idempotent";
  ASSERT_GRPC_OK(Unpublish("pvc-pub", t1));
  EXPECT_FALSE(Exists(t1));
  EXPECT_EQ(Inspect("pvc-pub", true).find(t1), std::string::npos);
}

// What the agent knows of publications comes from the mount table, so it
// survives a restart: the pod's bind, dead once the agent stopped, still
// counts as published, and publishing again replaces it.
TEST_F(CsiDriverTest, PublicationsSurviveAnAgentRestart) {
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-keep", 16 * kMi)));
  const std::string t = Target("keep");
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-keep", t)));
  ASSERT_TRUE(WriteFile(t + "/data", "kept").ok());
  ASSERT_TRUE(agent_.Restart());
  EXPECT_NE(Inspect("pvc-keep").find("Published:  " + t), std::string::npos) << Inspect("pvc-keep");
  EXPECT_GRPC_CODE(Delete("pvc-keep"), Code::FAILED_PRECONDITION, "still published at " + t);
  grpc::ClientContext ctx;
  csipb::NodeGetVolumeStatsRequest req;
  req.set_volume_id("pvc-keep");
  req.set_volume_path(t);
  csipb::NodeGetVolumeStatsResponse stats;
  ASSERT_GRPC_OK(agent_.node().NodeGetVolumeStats(&ctx, req, &stats));
  EXPECT_TRUE(stats.volume_condition().abnormal()) << "the old bind's server is gone";
  // kubelet publishes again (a new pod): the stale bind is replaced.
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-keep", t)));
  EXPECT_EQ(*ReadFile(t + "/data"), "kept");
  ASSERT_GRPC_OK(Unpublish("pvc-keep", t));
  ASSERT_GRPC_OK(Delete("pvc-keep"));
}

TEST_F(CsiDriverTest, PublishBadInputChangesNothing) {
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-bad", 16 * kMi)));
  EXPECT_GRPC_CODE(Publish(PublishRequest("pvc-bad", "relative/path")), Code::INVALID_ARGUMENT,
                   "absolute path");
  EXPECT_GRPC_CODE(Publish(PublishRequest("pvc-bad", agent_.dirs().Sub("a/../b"))),
                   Code::INVALID_ARGUMENT, "absolute path");
  EXPECT_FALSE(Exists(agent_.dirs().Sub("b")));
  EXPECT_GRPC_CODE(Publish(PublishRequest("pvc-bad", "")), Code::INVALID_ARGUMENT, "target_path");
  EXPECT_GRPC_CODE(Publish(PublishRequest("", Target("x"))), Code::INVALID_ARGUMENT,
                   "volume_id is missing");
  EXPECT_GRPC_CODE(Publish(PublishRequest("nosuch", Target("x"))), Code::NOT_FOUND,
                   "no volume nosuch");
  EXPECT_FALSE(Exists(Target("x"))) << "nothing made for a missing volume";
  auto block = PublishRequest("pvc-bad", Target("x"));
  block.mutable_volume_capability()->mutable_block();
  EXPECT_GRPC_CODE(Publish(block), Code::INVALID_ARGUMENT, "filesystems only");
  auto flags = PublishRequest("pvc-bad", Target("x"));
  flags.mutable_volume_capability()->mutable_mount()->add_mount_flags("uid=1000");
  EXPECT_GRPC_CODE(Publish(flags), Code::INVALID_ARGUMENT, "'uid=1000'");
  auto multi = PublishRequest("pvc-bad", Target("x"));
  multi.mutable_volume_capability()->mutable_access_mode()->set_mode(Mode::MULTI_NODE_MULTI_WRITER);
  EXPECT_GRPC_CODE(Publish(multi), Code::INVALID_ARGUMENT, "MULTI_NODE_MULTI_WRITER");
  EXPECT_FALSE(Exists(Target("x")));

  // A target that is already another mount is refused and left alone.
  const std::string other = Target("tmpfs");
  ASSERT_TRUE(RunCommand({"mkdir", "-p", other}).ok());
  ASSERT_SYS_OK(::mount("tmpfs", other.c_str(), "tmpfs", 0, "size=1m"));
  ASSERT_TRUE(WriteFile(other + "/mine", "x").ok());
  EXPECT_GRPC_CODE(Publish(PublishRequest("pvc-bad", other)), Code::FAILED_PRECONDITION,
                   "already has a tmpfs mount");
  EXPECT_GRPC_CODE(Unpublish("pvc-bad", other), Code::FAILED_PRECONDITION, "not this volume");
  EXPECT_TRUE(IsMountedAs(other, "tmpfs"));
  EXPECT_TRUE(Exists(other + "/mine"));
  EXPECT_SYS_OK(::umount(other.c_str()));

  // A single-writer volume published once is refused a second target.
  auto single = PublishRequest("pvc-bad", Target("s1"));
  single.mutable_volume_capability()->mutable_access_mode()->set_mode(
      Mode::SINGLE_NODE_SINGLE_WRITER);
  ASSERT_GRPC_OK(Publish(single));
  single.set_target_path(Target("s2"));
  EXPECT_GRPC_CODE(Publish(single), Code::FAILED_PRECONDITION, "single-writer");
  EXPECT_FALSE(IsMountPoint(Target("s2")));
  ASSERT_GRPC_OK(Unpublish("pvc-bad", Target("s1")));
}

TEST_F(CsiDriverTest, NodeExpandVolumeGrowsLiveAndRefusesAShrink) {
  ASSERT_GRPC_OK(Create(CreateRequest("pvc-grow", 16 * kMi)));
  ASSERT_GRPC_OK(Publish(PublishRequest("pvc-grow", Target("g"))));
  auto expand = [&](const std::string& id, int64_t bytes, csipb::NodeExpandVolumeResponse* r) {
    grpc::ClientContext ctx;
    csipb::NodeExpandVolumeRequest req;
    req.set_volume_id(id);
    req.set_volume_path(Target("g"));
    if (bytes != 0) req.mutable_capacity_range()->set_required_bytes(bytes);
    return agent_.node().NodeExpandVolume(&ctx, req, r);
  };
  csipb::NodeExpandVolumeResponse r;
  ASSERT_GRPC_OK(expand("pvc-grow", 48 * kMi, &r));
  EXPECT_EQ(r.capacity_bytes(), 48 * kMi);
  struct statvfs sv;
  ASSERT_EQ(::statvfs(Target("g").c_str(), &sv), 0);
  EXPECT_EQ(static_cast<int64_t>(sv.f_blocks * sv.f_frsize), 48 * kMi)
      << "df in the pod shows the new size";
  EXPECT_GRPC_OK(expand("pvc-grow", 48 * kMi, &r)) << "idempotent";
  EXPECT_GRPC_CODE(expand("pvc-grow", 32 * kMi, &r), Code::INVALID_ARGUMENT, "cannot shrink");
  EXPECT_GRPC_CODE(expand("pvc-grow", 0, &r), Code::INVALID_ARGUMENT, "capacity_range");
  EXPECT_GRPC_CODE(expand("pvc-grow", 100ll << 30, &r), Code::OUT_OF_RANGE, "pvc-grow");
  EXPECT_GRPC_CODE(expand("nosuch", 64 * kMi, &r), Code::NOT_FOUND, "no volume nosuch");
  ASSERT_EQ(::statvfs(Target("g").c_str(), &sv), 0);
  EXPECT_EQ(static_cast<int64_t>(sv.f_blocks * sv.f_frsize), 48 * kMi) << "refusals change nothing";
  ASSERT_GRPC_OK(Unpublish("pvc-grow", Target("g")));
}

// Concurrent calls for one name: each either acts, succeeds idempotently or
// is ABORTED; never do two act.
TEST_F(CsiDriverTest, ConcurrentCallsForOneVolume) {
  const auto before = Capacity();
  constexpr int kThreads = 8;
  std::atomic<int> ok{0}, aborted{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      grpc::Status s = Create(CreateRequest("pvc-race", 32 * kMi));
      (s.ok() ? ok : s.error_code() == Code::ABORTED ? aborted : other)++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(ok.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok + aborted, kThreads);
  EXPECT_EQ(VolumeIds(), std::vector<std::string>{"pvc-race"});
  EXPECT_EQ(Capacity().available_capacity(), before.available_capacity() - 32 * kMi)
      << "allocated once";

  // Publish and delete racing: never a deleted volume left mounted at the
  // target, never a published volume deleted.
  for (int round = 0; round < 5; ++round) {
    const std::string target = Target("race" + std::to_string(round));
    grpc::Status pub, del;
    std::thread a([&] { pub = Publish(PublishRequest("pvc-race", target)); });
    std::thread b([&] { del = Delete("pvc-race"); });
    a.join();
    b.join();
    const bool mounted = IsMountPoint(target);
    const bool exists = IsMountedAs(agent_.dirs().publish() + "/pvc-race", "fuse.localvol");
    EXPECT_FALSE(mounted && !exists)
        << "round " << round << ": publish " << Describe(pub) << ", delete " << Describe(del);
    EXPECT_FALSE(pub.ok() && del.ok() && exists) << "both acted";
    if (mounted) {
      ASSERT_GRPC_OK(Unpublish("pvc-race", target));
    }
    if (!exists) break;
  }
}

TEST(CsiControllerOnlyTest, ServesIdentityAndControllerCapabilitiesOnly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the default socket directory)";
  auto dir = TempDir::Create("lvcsi");
  ASSERT_TRUE(dir.ok());
  const std::string socket = dir->Sub("resizer/csi.sock");
  auto p = Subprocess::Spawn({LOCALVOLD_BIN, "--csi-controller-only", "--csi-socket", socket},
                             dir->Sub("log"));
  ASSERT_TRUE(p.ok());
  auto channel = CsiChannel(socket);
  auto identity = csipb::Identity::NewStub(channel);
  auto controller = csipb::Controller::NewStub(channel);
  auto node = csipb::Node::NewStub(channel);
  csipb::GetPluginInfoResponse info;
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    grpc::ClientContext ctx;
    up = identity->GetPluginInfo(&ctx, csipb::GetPluginInfoRequest(), &info).ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << *ReadFile(dir->Sub("log"));
  EXPECT_EQ(info.name(), "localvol.io");
  grpc::ClientContext c1;
  csipb::ProbeResponse probe;
  ASSERT_GRPC_OK(identity->Probe(&c1, csipb::ProbeRequest(), &probe));
  EXPECT_TRUE(probe.ready().value());
  grpc::ClientContext c2;
  csipb::ControllerGetCapabilitiesResponse caps;
  ASSERT_GRPC_OK(
      controller->ControllerGetCapabilities(&c2, csipb::ControllerGetCapabilitiesRequest(), &caps));
  EXPECT_EQ(caps.capabilities_size(), 0)
      << "no EXPAND_VOLUME, no MODIFY_VOLUME: the resizer's trivial mode";
  grpc::ClientContext c3;
  csipb::CreateVolumeResponse cr;
  EXPECT_EQ(controller->CreateVolume(&c3, CreateRequest("x", kMi), &cr).error_code(),
            Code::UNIMPLEMENTED);
  // What the csi-resizer asks before choosing its node-only (trivial) mode.
  grpc::ClientContext c5;
  csipb::GetPluginCapabilitiesResponse plugin_caps;
  ASSERT_GRPC_OK(
      identity->GetPluginCapabilities(&c5, csipb::GetPluginCapabilitiesRequest(), &plugin_caps));
  bool controller_service = false;
  for (const auto& c : plugin_caps.capabilities()) {
    controller_service |=
        c.service().type() == csipb::PluginCapability::Service::CONTROLLER_SERVICE;
  }
  EXPECT_TRUE(controller_service);
  grpc::ClientContext c6;
  csipb::NodeGetCapabilitiesResponse node_caps;
  ASSERT_GRPC_OK(node->NodeGetCapabilities(&c6, csipb::NodeGetCapabilitiesRequest(), &node_caps));
  bool expand = false;
  for (const auto& c : node_caps.capabilities()) {
    expand |= c.rpc().type() == csipb::NodeServiceCapability::RPC::EXPAND_VOLUME;
  }
  EXPECT_TRUE(expand) << "the resizer refuses an endpoint without node EXPAND_VOLUME";
  grpc::ClientContext c4;
  csipb::NodeGetInfoResponse ni;
  EXPECT_EQ(node->NodeGetInfo(&c4, csipb::NodeGetInfoRequest(), &ni).error_code(),
            Code::UNIMPLEMENTED);
  p->Signal(SIGTERM);
  auto st = p->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeWaitStatus(*st);
  EXPECT_FALSE(Exists(socket)) << "the socket goes with the server";
}

}  // namespace
}  // namespace localvol::testing
