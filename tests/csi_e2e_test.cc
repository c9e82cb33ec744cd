// The CSI driver driven as Kubernetes drives it: the external-provisioner's
// GetCapacity and CreateVolume (WaitForFirstConsumer: requisite topology of
// the chosen node, --extra-create-metadata parameters), kubelet's
// NodeGetInfo, NodePublishVolume into a pod directory, its fsGroup ownership
// change, a non-root pod writing until ENOSPC, NodeGetVolumeStats, a PVC
// expansion (NodeExpandVolume), and the teardown; the cycle must leave no
// mount, volume or allocated space behind. Also: a volume whose FUSE server
// is gone is reported abnormal.
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <thread>

#include "base/scope_guard.h"
#include "tests/csi_fixture.h"
#include "tests/support/mounts.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

constexpr int64_t kMi = 1ll << 20;
constexpr gid_t kFsGroup = 2000;

std::map<std::string, std::string> StorageClassParameters() {
  return {{"readIOPS", "20000"}, {"weight", "200"}};
}

csipb::GetCapacityResponse GetCapacity(CsiAgent& agent) {
  grpc::ClientContext ctx;
  csipb::GetCapacityRequest req;
  *req.add_volume_capabilities() = MountCapability();
  for (const auto& [k, v] : StorageClassParameters()) (*req.mutable_parameters())[k] = v;
  (*req.mutable_accessible_topology()->mutable_segments())[kCsiTopologyKey] = kCsiNode;
  csipb::GetCapacityResponse r;
  EXPECT_GRPC_OK(agent.controller().GetCapacity(&ctx, req, &r));
  return r;
}

// kubelet's SetVolumeOwnership for fsGroupPolicy File: every entry gets group
// fsGroup and group rw (directories also x and setgid).
int KubeletChown(const char* path, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_SL) return 0;
  if (::lchown(path, static_cast<uid_t>(-1), kFsGroup) != 0) return errno;
  mode_t mode = (st->st_mode & 07777) | 0660;
  if (type == FTW_D || type == FTW_DP) mode |= S_ISGID | 0110;
  return ::chmod(path, mode) == 0 ? 0 : errno;
}

struct WriteResult {
  int64_t written = 0;
  int err = 0;  // of the write that stopped it; 0 if it wrote all it was asked
  gid_t file_gid = 0;
};

// As uid 1000 with supplementary group fsGroup (a pod's identity): appends
// `limit` bytes (0: until an error) to `path` in 1 MiB writes.
WriteResult PodWrites(const std::string& path, int64_t limit) {
  const Creds pod{1000, 1000, {1000, kFsGroup}};
  return AsUser(
      pod,
      [&] {
        WriteResult r;
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
          r.err = errno;
          return r;
        }
        std::string chunk(1 << 20, 'x');
        while (limit == 0 || r.written < limit) {
          ssize_t n = ::write(fd, chunk.data(), chunk.size());
          if (n < 0) {
            r.err = errno;
            break;
          }
          r.written += n;
        }
        struct stat st;
        if (::fstat(fd, &st) == 0) r.file_gid = st.st_gid;
        ::close(fd);
        return r;
      },
      std::chrono::seconds(120));
}

TEST(CsiEndToEndTest, SidecarsAndKubeletDriveAWholeCycle) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts, other uids)";
  CsiAgent agent;
  ASSERT_TRUE(agent.Start({1024ull << 20}));
  const std::string pv = "pvc-3f1c2d9e-5a7b-4c1d-9e2f-0a1b2c3d4e5f";

  // The provisioner's capacity tracking for the StorageClass on this node.
  const auto start = GetCapacity(agent);
  ASSERT_GT(start.available_capacity(), 64 * kMi);

  // Its CreateVolume once the scheduler picked this node.
  auto create = CreateRequest(pv, 64 * kMi);
  for (const auto& [k, v] : StorageClassParameters()) (*create.mutable_parameters())[k] = v;
  (*create.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "data";
  (*create.mutable_parameters())["csi.storage.k8s.io/pvc/namespace"] = "shop";
  (*create.mutable_parameters())["csi.storage.k8s.io/pv/name"] = pv;
  csipb::CreateVolumeResponse created;
  {
    grpc::ClientContext ctx;
    ASSERT_GRPC_OK(agent.controller().CreateVolume(&ctx, create, &created));
  }
  EXPECT_EQ(created.volume().volume_id(), pv);
  EXPECT_EQ(created.volume().capacity_bytes(), 64 * kMi);
  EXPECT_EQ(GetCapacity(agent).available_capacity(), start.available_capacity() - 64 * kMi);

  // kubelet: the node's identity matches the volume's topology.
  csipb::NodeGetInfoResponse info;
  {
    grpc::ClientContext ctx;
    ASSERT_GRPC_OK(agent.node().NodeGetInfo(&ctx, csipb::NodeGetInfoRequest(), &info));
  }
  EXPECT_EQ(info.accessible_topology().segments().at(kCsiTopologyKey),
            created.volume().accessible_topology(0).segments().at(kCsiTopologyKey));

  // kubelet makes the volume's directory, then asks for the mount in it.
  const std::string pod_dir =
      agent.dirs().Sub("var/lib/kubelet/pods/0d6c4b1e-pod/volumes/kubernetes.io~csi/" + pv);
  ASSERT_TRUE(RunCommand({"mkdir", "-p", pod_dir}).ok());
  const std::string target = pod_dir + "/mount";
  {
    grpc::ClientContext ctx;
    csipb::NodePublishVolumeResponse r;
    ASSERT_GRPC_OK(agent.node().NodePublishVolume(&ctx, PublishRequest(pv, target), &r));
  }
  ASSERT_TRUE(IsMountedAs(target, "fuse.localvol"));

  // fsGroup: a volume root only root may write, then kubelet's recursive
  // chown/chmod through the mount gives the pod's group access.
  ASSERT_SYS_OK(::chmod(target.c_str(), 0770));
  ASSERT_SYS_OK(::mkdir((target + "/sub").c_str(), 0700));
  const Creds stranger{1001, 1001, {1001}};
  EXPECT_RESULT_ERRNO(
      AsUser(stranger,
             [&] {
               return Sys(::open((target + "/x").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
             }),
      EACCES);
  ASSERT_EQ(::nftw(target.c_str(), KubeletChown, 16, FTW_PHYS | FTW_MOUNT), 0);
  struct stat root_st;
  ASSERT_SYS_OK(::stat(target.c_str(), &root_st));
  EXPECT_EQ(root_st.st_gid, kFsGroup);
  EXPECT_EQ(root_st.st_mode & 07777, static_cast<mode_t>(02770));
  ASSERT_SYS_OK(::stat((target + "/sub").c_str(), &root_st));
  EXPECT_EQ(root_st.st_gid, kFsGroup);
  EXPECT_EQ(root_st.st_mode & 07777, static_cast<mode_t>(02770));

  // The pod (uid 1000, fsGroup as a supplementary group) writes until ENOSPC;
  // df at the target shows the PVC's size, not the disk's.
  struct statvfs sv;
  ASSERT_SYS_OK(::statvfs(target.c_str(), &sv));
  EXPECT_EQ(static_cast<int64_t>(sv.f_blocks * sv.f_frsize), 64 * kMi);
  CommandResult df = RunCommand({"df", "-B1", "--output=size", target});
  EXPECT_NE(df.out.find(std::to_string(64 * kMi)), std::string::npos) << df.Summary();
  const WriteResult full = PodWrites(target + "/data", 0);
  EXPECT_EQ(full.err, ENOSPC) << ErrnoName(full.err);
  EXPECT_LE(full.written, 64 * kMi);
  EXPECT_GT(full.written, 60 * kMi);
  EXPECT_EQ(full.file_gid, kFsGroup) << "the setgid root hands new files the fsGroup";

  // kubelet's volume stats: the quota, as df shows it, and a healthy volume.
  csipb::NodeGetVolumeStatsResponse stats;
  {
    grpc::ClientContext ctx;
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(pv);
    req.set_volume_path(target);
    ASSERT_GRPC_OK(agent.node().NodeGetVolumeStats(&ctx, req, &stats));
  }
  ASSERT_SYS_OK(::statvfs(target.c_str(), &sv));
  ASSERT_EQ(stats.usage_size(), 2);
  for (const auto& u : stats.usage()) {
    if (u.unit() == csipb::VolumeUsage::BYTES) {
      EXPECT_EQ(u.total(), 64 * kMi);
      EXPECT_EQ(u.available(), static_cast<int64_t>(sv.f_bavail * sv.f_frsize));
      EXPECT_EQ(u.used(), static_cast<int64_t>((sv.f_blocks - sv.f_bfree) * sv.f_frsize));
      EXPECT_GE(u.used(), full.written);
    } else {
      EXPECT_EQ(u.unit(), csipb::VolumeUsage::INODES);
      EXPECT_EQ(u.total(), static_cast<int64_t>(sv.f_files));
      EXPECT_EQ(u.used(), static_cast<int64_t>(sv.f_files - sv.f_ffree));
      EXPECT_GE(u.used(), 2);
    }
  }
  EXPECT_FALSE(stats.volume_condition().abnormal()) << stats.volume_condition().message();

  // The PVC grows: the trivial resizer updates the PV, kubelet calls
  // NodeExpandVolume on this node, and the writer can continue.
  {
    grpc::ClientContext ctx;
    csipb::NodeExpandVolumeRequest req;
    req.set_volume_id(pv);
    req.set_volume_path(target);
    req.mutable_capacity_range()->set_required_bytes(96 * kMi);
    *req.mutable_volume_capability() = MountCapability();
    csipb::NodeExpandVolumeResponse r;
    ASSERT_GRPC_OK(agent.node().NodeExpandVolume(&ctx, req, &r));
    EXPECT_EQ(r.capacity_bytes(), 96 * kMi);
  }
  ASSERT_SYS_OK(::statvfs(target.c_str(), &sv));
  EXPECT_EQ(static_cast<int64_t>(sv.f_blocks * sv.f_frsize), 96 * kMi);
  const WriteResult more = PodWrites(target + "/data", 16 * kMi);
  EXPECT_EQ(more.err, 0) << ErrnoName(more.err);
  EXPECT_EQ(more.written, 16 * kMi);
  EXPECT_EQ(GetCapacity(agent).available_capacity(), start.available_capacity() - 96 * kMi);

  // The pod goes: unpublish; the PVC goes: delete.
  {
    grpc::ClientContext ctx;
    csipb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(pv);
    req.set_target_path(target);
    csipb::NodeUnpublishVolumeResponse r;
    ASSERT_GRPC_OK(agent.node().NodeUnpublishVolume(&ctx, req, &r));
  }
  EXPECT_FALSE(Exists(target));
  {
    grpc::ClientContext ctx;
    csipb::DeleteVolumeRequest req;
    req.set_volume_id(pv);
    csipb::DeleteVolumeResponse r;
    ASSERT_GRPC_OK(agent.controller().DeleteVolume(&ctx, req, &r));
  }
  // The data is removed in the background; its space counts until then.
  int64_t now = 0;
  for (int i = 0; i < 300; ++i) {
    now = GetCapacity(agent).available_capacity();
    if (now == start.available_capacity()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(now, start.available_capacity()) << "all the space came back";
  // (Other tests' agents may run in parallel: only this one's mounts count.)
  for (const auto& m : ReadMountTable()) {
    const bool ours =
        m.source == "localvol:" + pv || m.mount_point.rfind(agent.dirs().root() + "/", 0) == 0;
    EXPECT_FALSE(ours && m.fstype == "fuse.localvol") << "left mounted: " << m.mount_point;
  }
  CommandResult list = agent.Ctl({"volume", "list"});
  EXPECT_NE(list.out.find("No volumes"), std::string::npos) << list.Summary();
  CommandResult disks = agent.Ctl({"-o", "json", "disk", "list"});
  EXPECT_NE(disks.out.find("\"volume_count\": 0"), std::string::npos) << disks.out;
}

TEST(CsiEndToEndTest, VolumeWhoseServerIsGoneIsReportedAbnormal) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
  if (!Exists("/sys/fs/fuse/connections"))
    GTEST_SKIP() << "no /sys/fs/fuse/connections (FUSE control filesystem)";
  CsiAgent agent;
  ASSERT_TRUE(agent.Start({512ull << 20}));
  {
    grpc::ClientContext ctx;
    csipb::CreateVolumeResponse r;
    ASSERT_GRPC_OK(agent.controller().CreateVolume(&ctx, CreateRequest("pvc-dead", 16 * kMi), &r));
  }
  const std::string target = agent.dirs().Sub("pods/dead/mount");
  {
    grpc::ClientContext ctx;
    csipb::NodePublishVolumeResponse r;
    ASSERT_GRPC_OK(agent.node().NodePublishVolume(&ctx, PublishRequest("pvc-dead", target), &r));
  }
  auto stats = [&](csipb::NodeGetVolumeStatsResponse* r) {
    grpc::ClientContext ctx;
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id("pvc-dead");
    req.set_volume_path(target);
    return agent.node().NodeGetVolumeStats(&ctx, req, r);
  };
  csipb::NodeGetVolumeStatsResponse r;
  ASSERT_GRPC_OK(stats(&r));
  EXPECT_FALSE(r.volume_condition().abnormal());

  // Kill the volume's server: abort its FUSE connection.
  struct stat st;
  ASSERT_SYS_OK(::stat(target.c_str(), &st));
  const std::string abort =
      "/sys/fs/fuse/connections/" + std::to_string(minor(st.st_dev)) + "/abort";
  // The FUSE control filesystem, mounted for this if it is not (and then
  // unmounted again).
  const bool control_mounted = IsMountPoint("/sys/fs/fuse/connections");
  if (!control_mounted)
    ASSERT_SYS_OK(::mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr));
  ScopeGuard unmount_control([&] {
    if (!control_mounted) ::umount2("/sys/fs/fuse/connections", MNT_DETACH);
  });
  {
    const int fd = ::open(abort.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << abort << ": " << ErrnoName(errno);
    EXPECT_EQ(::write(fd, "1", 1), 1) << ErrnoName(errno);
    ::close(fd);
  }
  r.Clear();
  ASSERT_GRPC_OK(stats(&r));
  EXPECT_TRUE(r.volume_condition().abnormal());
  EXPECT_NE(r.volume_condition().message().find("ENOTCONN"), std::string::npos)
      << r.volume_condition().message();
  // The numbers are still the volume's.
  ASSERT_GE(r.usage_size(), 1);
  EXPECT_EQ(r.usage(0).total(), 16 * kMi);
  // A path where the volume is not published is NOT_FOUND.
  csipb::NodeGetVolumeStatsResponse r2;
  grpc::ClientContext ctx;
  csipb::NodeGetVolumeStatsRequest req;
  req.set_volume_id("pvc-dead");
  req.set_volume_path(agent.dirs().root());
  EXPECT_GRPC_CODE(agent.node().NodeGetVolumeStats(&ctx, req, &r2), grpc::StatusCode::NOT_FOUND,
                   "not published");

  // The dead bind can still be unpublished.
  grpc::ClientContext c2;
  csipb::NodeUnpublishVolumeRequest un;
  un.set_volume_id("pvc-dead");
  un.set_target_path(target);
  csipb::NodeUnpublishVolumeResponse ur;
  EXPECT_GRPC_OK(agent.node().NodeUnpublishVolume(&c2, un, &ur));
  EXPECT_FALSE(Exists(target));
}

}  // namespace
}  // namespace localvol::testing
