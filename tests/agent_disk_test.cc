// DiskManager on real loop devices the tests create: discovery of the
// configured devices only, the safety refusals (a foreign signature stays
// byte-for-byte untouched), format + mount + manifest, recognition after a
// restart or a crash, mkfs failure, ext4, and the embedded disk.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "agent/blkid_probe.h"
#include "agent/disk_manager.h"
#include "agent/manifest.h"
#include "tests/agent_fixtures.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

using agent::Config;
using agent::DiskManager;
using agent::PosixCommandRunner;

class AgentDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mkfs, mount)";
    auto d = AgentDirs::Create();
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dirs_ = std::move(d).value();
  }
  void TearDown() override {
    if (manager_) manager_->DetachAll();
    manager_.reset();
    dirs_.reset();
    loops_.clear();  // detached after everything is unmounted
  }

  RawLoop& NewLoop(uint64_t size = RawLoop::kDefaultSize,
                   const std::vector<std::string>& prepare = {}) {
    auto l = RawLoop::Create(size, prepare);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    if (!l.ok()) throw std::runtime_error("loop");
    loops_.push_back(std::move(l).value());
    return *loops_.back();
  }

  DiskManager& Attach(const Config& config) {
    if (manager_) manager_->DetachAll();
    manager_ = std::make_unique<DiskManager>(config, &runner_);
    Status st = manager_->AttachAll();
    EXPECT_TRUE(st.ok()) << st.ToString();
    return *manager_;
  }

  std::string RefusalReason(const std::string& device) {
    for (const auto& r : manager_->refusals()) {
      if (r.device == device || r.configured_as == device) return r.reason;
    }
    return "";
  }

  // Declaration order matters: loops outlive dirs, which outlive the manager.
  std::vector<std::unique_ptr<RawLoop>> loops_;
  std::unique_ptr<AgentDirs> dirs_;
  PosixCommandRunner runner_;
  std::unique_ptr<DiskManager> manager_;
};

TEST_F(AgentDiskTest, OnlyConfiguredDevicesAreTouched) {
  RawLoop& a = NewLoop();
  RawLoop& b = NewLoop();
  DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
  ASSERT_EQ(m.disks().size(), 1u);
  EXPECT_EQ(m.disks()[0]->device, a.device());
  EXPECT_TRUE(m.refusals().empty());
  EXPECT_TRUE(DeviceIsBlank(b.device())) << b.device() << " was not named but was changed";
  EXPECT_FALSE(DeviceIsBlank(a.device()));
}

TEST_F(AgentDiskTest, FormatsMountsAndWritesManifest) {
  RawLoop& a = NewLoop();
  DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
  ASSERT_EQ(m.disks().size(), 1u);
  const agent::AttachedDisk& d = *m.disks()[0];
  EXPECT_TRUE(d.formatted_now);
  EXPECT_EQ(d.filesystem, "xfs");
  EXPECT_EQ(d.mount_path, dirs_->state() + "/disks/" + d.uuid);
  auto mnt = FindMount(d.mount_path);
  ASSERT_TRUE(mnt.has_value());
  EXPECT_EQ(mnt->fstype, "xfs");
  EXPECT_EQ(mnt->source, a.device());
  auto sigs = agent::ProbeSignatures(a.device());
  ASSERT_TRUE(sigs.ok());
  EXPECT_EQ(sigs->label, "localvol");
  EXPECT_EQ(sigs->uuid, d.uuid);
  auto manifest = agent::ReadManifest(d.mount_path);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ(manifest->disk_uuid, d.uuid);
  EXPECT_TRUE(manifest->volumes.empty());
  struct stat st;
  EXPECT_EQ(::stat((d.mount_path + "/volumes").c_str(), &st), 0);
  EXPECT_EQ(::stat((d.mount_path + "/trash").c_str(), &st), 0);
  // No temporary file is left next to the manifest.
  CommandResult ls = RunCommand({"ls", "-A", d.mount_path});
  EXPECT_EQ(ls.out, "localvol-manifest.yaml\ntrash\nvolumes\n");
  // size - reserve(5%) is what volumes may get.
  EXPECT_GT(d.size_bytes, 400ull << 20);
  EXPECT_EQ(d.reserve_bytes, (d.size_bytes * 5 + 99) / 100);
}

TEST_F(AgentDiskTest, RecognisesItsOwnDiskAfterRestart) {
  RawLoop& a = NewLoop();
  std::string uuid, mount_path;
  {
    DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
    ASSERT_EQ(m.disks().size(), 1u);
    uuid = m.disks()[0]->uuid;
    mount_path = m.disks()[0]->mount_path;
    std::ofstream(mount_path + "/volumes/marker") << "still here";
    m.DetachAll();
    EXPECT_FALSE(IsMountPoint(mount_path));
  }
  // Losing the state directory loses nothing: the disk carries its own truth.
  ASSERT_EQ(RunCommand({"rm", "-rf", "--one-file-system", dirs_->state()}).exit_code, 0);
  DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
  ASSERT_EQ(m.disks().size(), 1u);
  EXPECT_FALSE(m.disks()[0]->formatted_now);
  EXPECT_EQ(m.disks()[0]->uuid, uuid);
  std::ifstream in(mount_path + "/volumes/marker");
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "still here");
}

TEST_F(AgentDiskTest, AdoptsDiskStillMountedAfterCrash) {
  RawLoop& a = NewLoop();
  std::string mount_path;
  {
    DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
    ASSERT_EQ(m.disks().size(), 1u);
    mount_path = m.disks()[0]->mount_path;
    manager_.reset();  // a crash: no DetachAll, the disk stays mounted
  }
  ASSERT_TRUE(IsMountPoint(mount_path));
  DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
  ASSERT_EQ(m.disks().size(), 1u) << RefusalReason(a.device());
  EXPECT_FALSE(m.disks()[0]->formatted_now);
  EXPECT_EQ(m.disks()[0]->mount_path, mount_path);
  // Mounted once, not stacked.
  int count = 0;
  for (const auto& e : ReadMountTable()) count += e.mount_point == mount_path;
  EXPECT_EQ(count, 1);
}

TEST_F(AgentDiskTest, RefusesExistingFilesystemAndLeavesItByteForByteUntouched) {
  // A device holding someone's data: ext4 with a file in it.
  auto content = TempDir::Create("lvtmp");
  ASSERT_TRUE(content.ok());
  std::ofstream(content->Sub("precious.txt")) << "do not touch";
  RawLoop& foreign = NewLoop(RawLoop::kDefaultSize, {"mkfs.ext4", "-q", "-d", content->path()});
  auto before = ImageHash(foreign.image());
  ASSERT_TRUE(before.ok());
  DiskManager& m = Attach(dirs_->MakeConfig({foreign.device()}));
  EXPECT_TRUE(m.disks().empty());
  const std::string reason = RefusalReason(foreign.device());
  EXPECT_NE(reason.find("ext4"), std::string::npos) << reason;
  EXPECT_NE(reason.find("wipe: true"), std::string::npos) << reason;
  for (const auto& e : ReadMountTable()) EXPECT_NE(e.source, foreign.device()) << e.mount_point;
  m.DetachAll();
  // Restart again: still refused, still untouched.
  Attach(dirs_->MakeConfig({foreign.device()}));
  EXPECT_TRUE(manager_->disks().empty());
  auto after = ImageHash(foreign.image());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*before, *after) << "the refused device was modified";
}

TEST_F(AgentDiskTest, RefusesDataWithoutSignature) {
  // Raw data no blkid probe recognises: still someone's data.
  RawLoop& raw = NewLoop();
  {
    std::ofstream out(raw.image(), std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(3 << 20);
    const std::string data = RandomBytes(42, 1 << 20);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  ASSERT_TRUE(DeviceIsBlank(raw.device())) << "the test data looks like a signature to blkid";
  auto before = ImageHash(raw.image());
  Config c = dirs_->MakeConfig({raw.device()});
  DiskManager& m = Attach(c);
  EXPECT_TRUE(m.disks().empty());
  EXPECT_NE(RefusalReason(raw.device()).find("is not empty (non-zero data at offset 0x300000)"),
            std::string::npos)
      << RefusalReason(raw.device());
  EXPECT_EQ(*ImageHash(raw.image()), *before);
  // With wipe: true it is formatted.
  c.disks[0].wipe = true;
  DiskManager& wiped = Attach(c);
  EXPECT_EQ(wiped.disks().size(), 1u) << RefusalReason(raw.device());
}

TEST_F(AgentDiskTest, RefusesPartitionTableAndSwap) {
  RawLoop& parted = NewLoop();
  {
    // A DOS partition table: one Linux partition from sector 2048.
    unsigned char mbr[512] = {};
    unsigned char* e = mbr + 446;
    e[4] = 0x83;
    const uint32_t start = 2048, count = 100000;
    std::memcpy(e + 8, &start, 4);
    std::memcpy(e + 12, &count, 4);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    std::ofstream out(parted.image(), std::ios::in | std::ios::out | std::ios::binary);
    out.write(reinterpret_cast<char*>(mbr), sizeof mbr);
  }
  RawLoop& swap = NewLoop(RawLoop::kDefaultSize, {"mkswap", "-q"});
  auto parted_before = ImageHash(parted.image());
  auto swap_before = ImageHash(swap.image());
  DiskManager& m = Attach(dirs_->MakeConfig({parted.device(), swap.device()}));
  EXPECT_TRUE(m.disks().empty());
  EXPECT_NE(RefusalReason(parted.device()).find("partition table dos"), std::string::npos)
      << RefusalReason(parted.device());
  EXPECT_NE(RefusalReason(swap.device()).find("swap"), std::string::npos)
      << RefusalReason(swap.device());
  EXPECT_EQ(*ImageHash(parted.image()), *parted_before);
  EXPECT_EQ(*ImageHash(swap.image()), *swap_before);
}

TEST_F(AgentDiskTest, RefusesMountedDeviceEvenWithWipe) {
  RawLoop& a = NewLoop(RawLoop::kDefaultSize, {"mkfs.xfs", "-q"});
  auto mnt = dirs_->Sub("someone-elses-mount");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  ASSERT_EQ(RunCommand({"mount", a.device(), mnt}).exit_code, 0);
  Config c = dirs_->MakeConfig({a.device()});
  c.disks[0].wipe = true;
  DiskManager& m = Attach(c);
  EXPECT_TRUE(m.disks().empty());
  const std::string reason = RefusalReason(a.device());
  EXPECT_NE(reason.find("mounted"), std::string::npos) << reason;
  EXPECT_NE(reason.find(mnt), std::string::npos) << reason;
  EXPECT_TRUE(IsMountedAs(mnt, "xfs"));
  EXPECT_EQ(RunCommand({"umount", mnt}).exit_code, 0);
}

TEST_F(AgentDiskTest, TheRootDeviceIsInUse) {
  // Never hand the root device to the agent, even in a test: only check that
  // the safety set contains it.
  struct stat st;
  ASSERT_EQ(::stat("/", &st), 0);
  if (major(st.st_dev) == 0) GTEST_SKIP() << "/ is not on a block device here";
  auto in_use = agent::BlockDevicesInUse();
  EXPECT_TRUE(in_use.count(st.st_dev)) << "the device behind / is not in BlockDevicesInUse()";
}

TEST_F(AgentDiskTest, WipeTrueFormatsForeignDevice) {
  RawLoop& a = NewLoop(RawLoop::kDefaultSize, {"mkfs.ext4", "-q"});
  Config c = dirs_->MakeConfig({a.device()});
  c.disks[0].wipe = true;
  DiskManager& m = Attach(c);
  ASSERT_EQ(m.disks().size(), 1u) << RefusalReason(a.device());
  EXPECT_TRUE(m.disks()[0]->formatted_now);
  auto sigs = agent::ProbeSignatures(a.device());
  ASSERT_TRUE(sigs.ok());
  EXPECT_EQ(sigs->type, "xfs");
  EXPECT_EQ(sigs->found.size(), 1u) << sigs->Describe();
  // With wipe: true still set, its own disk is recognised, not wiped again.
  std::ofstream(m.disks()[0]->mount_path + "/volumes/marker") << "x";
  const std::string uuid = m.disks()[0]->uuid;
  Attach(c);
  ASSERT_EQ(manager_->disks().size(), 1u);
  EXPECT_EQ(manager_->disks()[0]->uuid, uuid);
  EXPECT_FALSE(manager_->disks()[0]->formatted_now);
}

TEST_F(AgentDiskTest, LabelWithoutManifestIsNotOurs) {
  // Labelled like ours, but no manifest: an interrupted format, or not ours.
  RawLoop& a = NewLoop(RawLoop::kDefaultSize, {"mkfs.xfs", "-q", "-L", "localvol"});
  auto before = ImageHash(a.image());
  DiskManager& m = Attach(dirs_->MakeConfig({a.device()}));
  EXPECT_TRUE(m.disks().empty());
  EXPECT_NE(RefusalReason(a.device()).find("no localvol-manifest.yaml"), std::string::npos)
      << RefusalReason(a.device());
  for (const auto& e : ReadMountTable()) EXPECT_NE(e.source, a.device()) << e.mount_point;
  // Mounting to look for the manifest may replay the XFS log, but a clean
  // filesystem is left as it was.
  EXPECT_EQ(*ImageHash(a.image()), *before);
}

TEST_F(AgentDiskTest, Ext4WithoutQuotaFeatures) {
  RawLoop& a = NewLoop();
  Config c = dirs_->MakeConfig({a.device()});
  c.filesystem = agent::FsType::kExt4;
  DiskManager& m = Attach(c);
  ASSERT_EQ(m.disks().size(), 1u) << RefusalReason(a.device());
  EXPECT_EQ(m.disks()[0]->filesystem, "ext4");
  EXPECT_TRUE(IsMountedAs(m.disks()[0]->mount_path, "ext4"));
  CommandResult r = RunCommand({"dumpe2fs", "-h", a.device()});
  ASSERT_TRUE(r.ok()) << r.Summary();
  const auto features = r.out.substr(r.out.find("Filesystem features:"));
  EXPECT_EQ(features.substr(0, features.find('\n')).find("quota"), std::string::npos) << features;
}

// A runner that lets mkfs write to the device, then reports a failure: the
// worst case, a half-made filesystem.
class FailingMkfsRunner : public agent::CommandRunner {
 public:
  Result<agent::CommandOutput> Run(const std::vector<std::string>& argv,
                                   std::chrono::seconds timeout) override {
    auto r = real_.Run(argv, timeout);
    if (argv[0].rfind("mkfs", 0) == 0 && r.ok()) {
      r->exit_code = 1;
      r->output += "injected failure";
    }
    return r;
  }
  agent::PosixCommandRunner real_;
};

TEST_F(AgentDiskTest, MkfsFailureLeavesNothingHalfMade) {
  RawLoop& a = NewLoop();
  FailingMkfsRunner failing;
  DiskManager m(dirs_->MakeConfig({a.device()}), &failing);
  ASSERT_TRUE(m.AttachAll().ok());
  EXPECT_TRUE(m.disks().empty());
  ASSERT_EQ(m.refusals().size(), 1u);
  EXPECT_NE(m.refusals()[0].reason.find("injected failure"), std::string::npos)
      << m.refusals()[0].reason;
  EXPECT_TRUE(DeviceIsBlank(a.device())) << "a half-made filesystem was left on the device";
  for (const auto& e : ReadMountTable()) EXPECT_NE(e.source, a.device()) << e.mount_point;
  CommandResult ls = RunCommand({"ls", "-A", dirs_->state() + "/disks"});
  EXPECT_EQ(ls.out, "");
  // With a working mkfs the same device is then formatted normally.
  DiskManager& ok = Attach(dirs_->MakeConfig({a.device()}));
  EXPECT_EQ(ok.disks().size(), 1u);
}

TEST_F(AgentDiskTest, PatternMatchesOnlyItsDevices) {
  RawLoop& a = NewLoop();
  RawLoop& b = NewLoop();
  RawLoop& c = NewLoop();
  const std::string by_id = dirs_->Sub("by-id");
  ASSERT_EQ(::mkdir(by_id.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(a.device().c_str(), (by_id + "/fast-disk-1").c_str()), 0);
  ASSERT_EQ(::symlink(b.device().c_str(), (by_id + "/fast-disk-2").c_str()), 0);
  ASSERT_EQ(::symlink(c.device().c_str(), (by_id + "/slow-disk-1").c_str()), 0);
  Config cfg =
      dirs_->MakeConfig({by_id + "/fast-disk-*", by_id + "/fast-disk-1", by_id + "/none-*"});
  DiskManager& m = Attach(cfg);
  ASSERT_EQ(m.disks().size(), 2u);
  EXPECT_TRUE(DeviceIsBlank(c.device()));
  EXPECT_NE(RefusalReason(by_id + "/none-*").find("no device matches"), std::string::npos);
}

TEST_F(AgentDiskTest, RefusesWhatIsNotABlockDevice) {
  const std::string file = dirs_->Sub("plain-file");
  std::ofstream(file) << "x";
  DiskManager& m = Attach(dirs_->MakeConfig({file, dirs_->Sub("missing")}));
  EXPECT_TRUE(m.disks().empty());
  EXPECT_NE(RefusalReason(file).find("not a block device"), std::string::npos)
      << RefusalReason(file);
  EXPECT_NE(RefusalReason(dirs_->Sub("missing")).find("does not exist"), std::string::npos);
  CommandResult r = RunCommand({"cat", file});
  EXPECT_EQ(r.out, "x");
}

TEST_F(AgentDiskTest, EmbeddedDiskWhenNoneConfigured) {
  Config c = dirs_->MakeConfig({});
  c.embedded_disk_size = 600ull << 20;
  const std::string image = c.state_dir + "/embedded/disk.img";
  {
    DiskManager& m = Attach(c);
    ASSERT_EQ(m.disks().size(), 1u);
    EXPECT_TRUE(m.disks()[0]->embedded);
    EXPECT_EQ(agent::LoopDevice::FindAttached(image), m.disks()[0]->device);
    struct stat st;
    ASSERT_EQ(::stat(image.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 600ull << 20);
    EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 100ull << 20) << "the image is not sparse";
    std::ofstream(m.disks()[0]->mount_path + "/volumes/marker") << "x";
    m.DetachAll();
  }
  // A clean stop leaves no loop device behind (autoclear).
  for (int i = 0; i < 50 && !agent::LoopDevice::FindAttached(image).empty(); ++i) ::usleep(100000);
  EXPECT_EQ(agent::LoopDevice::FindAttached(image), "");
  DiskManager& m = Attach(c);
  ASSERT_EQ(m.disks().size(), 1u);
  EXPECT_FALSE(m.disks()[0]->formatted_now);
  struct stat st;
  EXPECT_EQ(::stat((m.disks()[0]->mount_path + "/volumes/marker").c_str(), &st), 0);
}

}  // namespace
}  // namespace localvol::testing
