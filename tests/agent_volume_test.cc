// VolumeManager on real loop disks and real FUSE mounts: create (placement,
// idempotency, bad names, no overcommit), live resize, delete (busy, mounted
// elsewhere, background removal), the catalogue rebuilt from the disks after
// the state directory is lost, start-up clean-up of what a crash left, and
// I/O limits (applied at create, changed live, persisted, rolled back) on one
// I/O engine per disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "agent/disk_manager.h"
#include "agent/volume_manager.h"
#include "iopath/engine.h"
#include "tests/agent_fixtures.h"
#include "tests/support/fuse_server.h"
#include "tests/support/fuse_uring_switch.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

using agent::CreateVolumeParams;
using agent::VolumeInfo;

class AgentVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
    auto d = AgentDirs::Create();
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dirs_ = std::move(d).value();
  }
  void TearDown() override {
    Stop();
    dirs_.reset();
    loops_.clear();
  }

  void AddLoop(uint64_t size = RawLoop::kDefaultSize) {
    auto l = RawLoop::Create(size);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    devices_.push_back((*l)->device());
    loops_.push_back(std::move(l).value());
  }

  // Starts disks and volumes as the daemon does.
  void Start() {
    Stop();
    disks_ = std::make_unique<agent::DiskManager>(dirs_->MakeConfig(devices_), &runner_);
    ASSERT_TRUE(disks_->AttachAll().ok());
    ASSERT_EQ(disks_->disks().size(), devices_.size());
    agent::VolumeManagerOptions o;
    o.publish_dir = dirs_->publish();
    o.make_engine = make_engine_;
    o.fuse_io_uring = fuse_io_uring_;
    volumes_ = std::make_unique<agent::VolumeManager>(o, disks_.get());
    Status st = volumes_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void Stop() {
    if (volumes_) volumes_->Shutdown();
    volumes_.reset();
    if (disks_) disks_->DetachAll();
    disks_.reset();
  }

  Result<VolumeInfo> Create(const std::string& name, uint64_t size, const std::string& disk = "",
                            uint64_t inodes = 0,
                            std::optional<iopath::IoLimits> limits = std::nullopt) {
    return volumes_->Create(
        CreateVolumeParams{name, size, inodes, disk, limits, false, "", std::nullopt});
  }

  agent::DiskInfo DiskOf(const std::string& id) {
    for (const auto& d : volumes_->Disks()) {
      if (d.id == id) return d;
    }
    ADD_FAILURE() << "no disk " << id;
    return {};
  }

  void WaitForTrashEmpty() {
    for (int i = 0; i < 300 && volumes_->PendingTrashBytes() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(volumes_->PendingTrashBytes(), 0u);
  }

  std::vector<std::unique_ptr<RawLoop>> loops_;
  std::vector<std::string> devices_;
  std::unique_ptr<AgentDirs> dirs_;
  agent::EngineFactory make_engine_;  // given to the next Start(); empty: the real one
  bool fuse_io_uring_ = false;        // given to the next Start()
  agent::PosixCommandRunner runner_;
  std::unique_ptr<agent::DiskManager> disks_;
  std::unique_ptr<agent::VolumeManager> volumes_;
};

constexpr uint64_t kMi = 1ull << 20;

TEST_F(AgentVolumeTest, CreateListInspect) {
  AddLoop();
  Start();
  auto v = Create("data-0", 64 * kMi);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->state, "ready") << v->message;
  EXPECT_EQ(v->mount_path, dirs_->publish() + "/data-0");
  EXPECT_EQ(v->capacity_bytes, 64 * kMi);
  EXPECT_EQ(v->inode_limit, 4096u);  // one per 16 KiB
  EXPECT_TRUE(IsMountedAs(v->mount_path, "fuse.localvol"));
  auto mnt = FindMount(v->mount_path);
  ASSERT_TRUE(mnt.has_value());
  EXPECT_NE(mnt->super_options.find("allow_other"), std::string::npos) << mnt->super_options;
  EXPECT_NE(mnt->super_options.find("default_permissions"), std::string::npos)
      << mnt->super_options;
  auto space = StatFs(v->mount_path);
  ASSERT_TRUE(space.ok());
  EXPECT_EQ(space->capacity(), 64 * kMi);
  ASSERT_TRUE(WriteFile(v->mount_path + "/f", RandomBytes(1, 3 * kMi)).ok());
  auto got = volumes_->Get("data-0");
  ASSERT_TRUE(got.ok());
  EXPECT_GE(got->used_bytes, 3 * kMi);
  EXPECT_GE(got->inodes_used, 1u);
  EXPECT_EQ(got->disk_id, disks_->disks()[0]->uuid);
  ASSERT_TRUE(Create("data-1", 32 * kMi).ok());
  auto all = volumes_->List();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "data-0");
  EXPECT_EQ(all[1].name, "data-1");
  // The disk's own manifest records both.
  auto manifest = agent::ReadManifest(disks_->disks()[0]->mount_path);
  ASSERT_TRUE(manifest.ok());
  ASSERT_EQ(manifest->volumes.size(), 2u);
  EXPECT_EQ(manifest->Find("data-1")->capacity_bytes, 32 * kMi);
  EXPECT_EQ(volumes_->Get("nope").err(), ENOENT);
  // The volume root is writable by any uid; files belong to the writer.
  struct Out {
    int err;
    uid_t owner;
  };
  const std::string path = v->mount_path + "/by-user";
  Out out = AsUser(kUserA, [&] {
    Out o{0, 0};
    if (!WriteFile(path, "x").ok()) o.err = errno;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) o.owner = st.st_uid;
    return o;
  });
  EXPECT_EQ(out.err, 0);
  EXPECT_EQ(out.owner, kUserA.uid);
}

TEST_F(AgentVolumeTest, CreateIsIdempotentOnlyForTheSameSize) {
  AddLoop();
  Start();
  auto first = Create("web", 16 * kMi);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(WriteFile(first->mount_path + "/keep", "data").ok());
  auto again = Create("web", 16 * kMi);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->disk_id, first->disk_id);
  EXPECT_EQ(ReadFile(first->mount_path + "/keep").value(), "data");
  auto other = Create("web", 32 * kMi);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.err(), EEXIST);
  EXPECT_NE(other.status().context().find("already exists with size 16Mi"), std::string::npos)
      << other.status().context();
  EXPECT_EQ(Create("web", 16 * kMi, "", 99).err(), EEXIST);
  EXPECT_EQ(Create("web", 16 * kMi, "not-this-disk").err(), EEXIST);
  EXPECT_EQ(volumes_->List().size(), 1u);
}

TEST_F(AgentVolumeTest, BadArgumentsAreRejected) {
  AddLoop();
  Start();
  for (const char* name : {"", "Upper", "under_score", "-lead", "trail-", "dot.ted", "../x",
                           "x234567890123456789012345678901234567890123456789012345678901234"}) {
    auto r = Create(name, 16 * kMi);
    EXPECT_EQ(r.err(), EINVAL) << name;
    EXPECT_NE(r.status().context().find("invalid volume name"), std::string::npos);
  }
  EXPECT_EQ(Create("tiny", 4096).err(), EINVAL);
  EXPECT_EQ(Create("nodisk", 16 * kMi, "ffffffff").err(), ENOENT);
  EXPECT_TRUE(volumes_->List().empty());
  CommandResult ls = RunCommand({"ls", "-A", dirs_->publish()});
  EXPECT_EQ(ls.out, "");
}

TEST_F(AgentVolumeTest, NoOvercommit) {
  AddLoop();
  Start();
  const agent::DiskInfo disk = DiskOf(disks_->disks()[0]->uuid);
  EXPECT_EQ(disk.free_bytes, disk.size_bytes - disk.reserve_bytes);
  auto too_big = Create("big", disk.free_bytes + kMi);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.err(), ENOSPC);
  EXPECT_NE(too_big.status().context().find("no disk has"), std::string::npos)
      << too_big.status().context();
  // Exactly what is left fits; then nothing more.
  ASSERT_TRUE(Create("half", disk.free_bytes / 2).ok());
  const uint64_t rest = DiskOf(disk.id).free_bytes;
  ASSERT_TRUE(Create("rest", rest).ok());
  EXPECT_EQ(DiskOf(disk.id).free_bytes, 0u);
  EXPECT_EQ(DiskOf(disk.id).allocated_bytes, disk.size_bytes - disk.reserve_bytes);
  EXPECT_EQ(Create("one-more", kMi).err(), ENOSPC);
  EXPECT_EQ(Create("one-more", kMi, disk.id.substr(0, 8)).err(), ENOSPC);
}

TEST_F(AgentVolumeTest, PlacementPicksMostUnallocatedSpace) {
  AddLoop(512 * kMi);
  AddLoop(1024 * kMi);
  Start();
  const std::string small_id = disks_->disks()[0]->uuid, big_id = disks_->disks()[1]->uuid;
  auto a = Create("a", 300 * kMi);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->disk_id, big_id);
  // big: ~650Mi free, small: ~425Mi free -> b goes to big again.
  auto b = Create("b", 300 * kMi);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->disk_id, big_id);
  // Now small has more free.
  auto c = Create("c", 100 * kMi);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->disk_id, small_id);
  // Explicit disk, by id prefix and by device.
  auto d = Create("d", 10 * kMi, big_id.substr(0, 6));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->disk_id, big_id);
  auto e = Create("e", 10 * kMi, devices_[0]);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->disk_id, small_id);
  // A size only the small disk could hold is placed there.
  const uint64_t small_free = DiskOf(small_id).free_bytes;
  ASSERT_GT(small_free, DiskOf(big_id).free_bytes);
  auto f = Create("f", small_free);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->disk_id, small_id);
}

TEST_F(AgentVolumeTest, ResizeWhileInUse) {
  AddLoop();
  Start();
  auto v = Create("grow", 32 * kMi);
  ASSERT_TRUE(v.ok());
  const std::string file = v->mount_path + "/data";
  int fd = ::open(file.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  const std::string chunk = RandomBytes(7, 20 * kMi);
  EXPECT_EQ(PwriteAll(fd, chunk, 0).err, 0);
  // Full before the resize...
  SysResult full = PwriteAll(fd, RandomBytes(8, 20 * kMi), 20 * kMi);
  EXPECT_EQ(full.err, ENOSPC);
  // ... grown live, with the file still open.
  auto grown = volumes_->Resize("grow", 64 * kMi, 0);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->capacity_bytes, 64 * kMi);
  EXPECT_EQ(grown->inode_limit, 4096u);  // a default limit follows the capacity
  EXPECT_EQ(StatFs(v->mount_path)->capacity(), 64 * kMi);
  EXPECT_EQ(PwriteAll(fd, RandomBytes(8, 20 * kMi), 20 * kMi).err, 0);
  // Shrinking below what it holds is refused and changes nothing.
  auto below = volumes_->Resize("grow", 16 * kMi, 0);
  ASSERT_FALSE(below.ok());
  EXPECT_EQ(below.err(), EBUSY);
  EXPECT_NE(below.status().context().find("cannot shrink"), std::string::npos)
      << below.status().context();
  EXPECT_EQ(StatFs(v->mount_path)->capacity(), 64 * kMi);
  // Shrinking above usage works.
  auto shrunk = volumes_->Resize("grow", 48 * kMi, 0);
  ASSERT_TRUE(shrunk.ok()) << shrunk.status().ToString();
  EXPECT_EQ(StatFs(v->mount_path)->capacity(), 48 * kMi);
  ::close(fd);
  // Growing past the disk's free space is refused.
  const uint64_t free = DiskOf(v->disk_id).free_bytes;
  EXPECT_EQ(volumes_->Resize("grow", 48 * kMi + free + kMi, 0).err(), ENOSPC);
  EXPECT_TRUE(volumes_->Resize("grow", 48 * kMi + free, 0).ok());
  EXPECT_EQ(volumes_->Resize("missing", 48 * kMi, 0).err(), ENOENT);
  // An explicit inode limit sticks.
  auto inodes = volumes_->Resize("grow", 64 * kMi, 5000);
  ASSERT_TRUE(inodes.ok());
  EXPECT_EQ(inodes->inode_limit, 5000u);
  EXPECT_EQ(volumes_->Resize("grow", 96 * kMi, 0)->inode_limit, 5000u);
  auto manifest = agent::ReadManifest(disks_->disks()[0]->mount_path);
  EXPECT_EQ(manifest->Find("grow")->capacity_bytes, 96 * kMi);
  EXPECT_EQ(manifest->Find("grow")->inode_limit, 5000u);
  // Survives a restart.
  Stop();
  Start();
  auto after = volumes_->Get("grow");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->capacity_bytes, 96 * kMi);
  EXPECT_EQ(ReadFile(file)->substr(0, chunk.size()), chunk);
}

TEST_F(AgentVolumeTest, DeleteRefusesBusyVolume) {
  AddLoop();
  Start();
  auto v = Create("busy", 64 * kMi);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(WriteFile(v->mount_path + "/data", RandomBytes(3, 8 * kMi)).ok());
  const uint64_t free_before = DiskOf(v->disk_id).free_bytes;
  int fd = ::open((v->mount_path + "/data").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  Status st = volumes_->Delete("busy");
  EXPECT_EQ(st.err(), EBUSY);
  EXPECT_NE(st.context().find("is in use"), std::string::npos) << st.context();
  // Untouched: still served, data readable through the open fd.
  EXPECT_EQ(volumes_->Get("busy")->state, "ready");
  char buf[16];
  EXPECT_EQ(::pread(fd, buf, sizeof buf, 0), 16);
  ::close(fd);
  st = volumes_->Delete("busy");
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(IsMountPoint(v->mount_path));
  EXPECT_FALSE(Exists(v->mount_path));
  EXPECT_EQ(volumes_->Get("busy").err(), ENOENT);
  EXPECT_EQ(agent::ReadManifest(disks_->disks()[0]->mount_path)->Find("busy"), nullptr);
  WaitForTrashEmpty();
  EXPECT_FALSE(Exists(v->backing_path));
  EXPECT_EQ(RunCommand({"ls", "-A", disks_->disks()[0]->TrashDir()}).out, "");
  EXPECT_EQ(DiskOf(v->disk_id).free_bytes, free_before + 64 * kMi);
  EXPECT_EQ(volumes_->Delete("busy").err(), ENOENT);
  // The name is free again, and the new volume starts empty.
  auto again = Create("busy", 16 * kMi);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(Exists(again->mount_path + "/data"));
}

TEST_F(AgentVolumeTest, DeleteRefusesVolumeMountedElsewhere) {
  AddLoop();
  Start();
  auto v = Create("shared", 16 * kMi);
  ASSERT_TRUE(v.ok());
  const std::string pod = dirs_->Sub("pod-mount");
  ASSERT_EQ(::mkdir(pod.c_str(), 0755), 0);
  ASSERT_EQ(::mount(v->mount_path.c_str(), pod.c_str(), nullptr, MS_BIND, nullptr), 0);
  Status st = volumes_->Delete("shared");
  EXPECT_EQ(st.err(), EBUSY);
  EXPECT_NE(st.context().find(pod), std::string::npos) << st.context();
  EXPECT_EQ(volumes_->Get("shared")->state, "ready");
  struct statvfs sv;
  EXPECT_EQ(::statvfs(pod.c_str(), &sv), 0) << "the pod's mount was torn away";
  ASSERT_EQ(::umount2(pod.c_str(), 0), 0);
  EXPECT_TRUE(volumes_->Delete("shared").ok());
}

TEST_F(AgentVolumeTest, DeleteOfLargeVolumeDoesNotStall) {
  AddLoop();
  Start();
  auto v = Create("many-files", 128 * kMi);
  ASSERT_TRUE(v.ok());
  // Many files: their removal happens after Delete returned.
  for (int d = 0; d < 20; ++d) {
    const std::string dir = v->mount_path + "/d" + std::to_string(d);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    for (int f = 0; f < 100; ++f) ASSERT_TRUE(WriteFile(dir + "/f" + std::to_string(f), "x").ok());
  }
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(volumes_->Delete("many-files").ok());
  // Meanwhile the API answers.
  EXPECT_TRUE(volumes_->List().empty());
  ASSERT_TRUE(Create("next", 16 * kMi).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  WaitForTrashEmpty();
  EXPECT_EQ(RunCommand({"ls", "-A", disks_->disks()[0]->TrashDir()}).out, "");
}

TEST_F(AgentVolumeTest, CatalogueRebuiltAfterStateDirectoryIsLost) {
  AddLoop();
  AddLoop();
  Start();
  const std::string data = RandomBytes(11, 5 * kMi);
  ASSERT_TRUE(Create("alpha", 32 * kMi, devices_[0]).ok());
  ASSERT_TRUE(Create("beta", 48 * kMi, devices_[1], 2000).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/alpha/f", data).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/beta/g", data).ok());
  const uint64_t used_alpha = volumes_->Get("alpha")->used_bytes;
  Stop();
  ASSERT_EQ(RunCommand({"rm", "-rf", "--one-file-system", dirs_->state()}).exit_code, 0);
  ASSERT_FALSE(Exists(dirs_->state()));
  Start();
  auto all = volumes_->List();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "alpha");
  EXPECT_EQ(all[0].capacity_bytes, 32 * kMi);
  EXPECT_EQ(all[0].used_bytes, used_alpha);
  EXPECT_EQ(all[0].state, "ready");
  EXPECT_EQ(all[1].name, "beta");
  EXPECT_EQ(all[1].inode_limit, 2000u);
  EXPECT_EQ(ReadFile(dirs_->publish() + "/alpha/f").value(), data);
  EXPECT_EQ(ReadFile(dirs_->publish() + "/beta/g").value(), data);
}

TEST_F(AgentVolumeTest, StartClearsStaleMountAndRemounts) {
  if (!FuseServer::Available()) GTEST_SKIP() << "localvol-fuse was not built";
  AddLoop();
  Start();
  auto v = Create("crashy", 32 * kMi);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(WriteFile(v->mount_path + "/f", "before the crash").ok());
  Stop();
  // A crashed server leaves a dead FUSE mount (ENOTCONN) at the publish path.
  auto scratch = dirs_->Sub("scratch");
  ASSERT_EQ(::mkdir(scratch.c_str(), 0755), 0);
  FuseServerOptions fo;
  fo.source = scratch;
  fo.mountpoint = v->mount_path;
  fo.capacity = "16Mi";
  auto server = FuseServer::Start(fo);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  (*server)->Kill9();
  struct stat st;
  ASSERT_NE(::stat(v->mount_path.c_str(), &st), 0);
  ASSERT_EQ(errno, ENOTCONN);
  Start();
  auto after = volumes_->Get("crashy");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, "ready") << after->message;
  EXPECT_EQ(ReadFile(v->mount_path + "/f").value(), "before the crash");
  int count = 0;
  for (const auto& e : ReadMountTable()) count += e.mount_point == v->mount_path;
  EXPECT_EQ(count, 1) << "the stale mount is still stacked below";
  server->reset();
}

TEST_F(AgentVolumeTest, StartRepairsInterruptedCreateAndDelete) {
  AddLoop();
  Start();
  ASSERT_TRUE(Create("kept", 16 * kMi).ok());
  const agent::AttachedDisk& disk = *disks_->disks()[0];
  const std::string volumes_dir = disk.VolumesDir(), mount_path = disk.mount_path;
  Stop();
  // A delete interrupted after the manifest dropped the volume: a directory
  // no manifest knows. And a create interrupted before its directory existed.
  ASSERT_EQ(::mkdir(dirs_->Sub("m").c_str(), 0755), 0);
  ASSERT_EQ(RunCommand({"mount", devices_[0], dirs_->Sub("m")}).exit_code, 0);
  ASSERT_EQ(::mkdir(dirs_->Sub("m/volumes/orphan").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(dirs_->Sub("m/volumes/orphan/f"), "old").ok());
  auto manifest = agent::ReadManifest(dirs_->Sub("m"));
  ASSERT_TRUE(manifest.ok());
  manifest->volumes.push_back(
      agent::VolumeRecord{"half-made", 8 * kMi, 1024, true, "", {}, false, "", true});
  ASSERT_TRUE(agent::WriteManifest(dirs_->Sub("m"), *manifest).ok());
  ASSERT_EQ(RunCommand({"umount", dirs_->Sub("m")}).exit_code, 0);
  Start();
  auto half = volumes_->Get("half-made");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->state, "ready") << half->message;
  EXPECT_EQ(volumes_->Get("kept")->state, "ready");
  EXPECT_EQ(volumes_->Get("orphan").err(), ENOENT);
  for (int i = 0; i < 100 && Exists(volumes_dir + "/orphan"); ++i) ::usleep(50000);
  EXPECT_FALSE(Exists(volumes_dir + "/orphan"));
  for (int i = 0; i < 100 && RunCommand({"ls", "-A", mount_path + "/trash"}).out != ""; ++i)
    ::usleep(50000);
  EXPECT_EQ(RunCommand({"ls", "-A", mount_path + "/trash"}).out, "");
}

// Reads the first 4 KiB of `path` `n` times with O_DIRECT (so each read
// reaches the volume's queue); returns the seconds it took, or -1.
double TimedDirectReads(const std::string& path, int n) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return -1;
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, 4096) != 0) {
    ::close(fd);
    return -1;
  }
  const auto start = std::chrono::steady_clock::now();
  bool ok = true;
  for (int i = 0; i < n && ok; ++i) ok = ::pread(fd, buf, 4096, 0) == 4096;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::free(buf);
  ::close(fd);
  return ok ? secs : -1;
}

iopath::IoLimits Limits(std::initializer_list<std::pair<const char*, const char*>> settings) {
  iopath::IoLimits l;
  for (const auto& [key, value] : settings) {
    Status s = iopath::SetIoLimit(&l, key, value);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_TRUE(iopath::ValidateIoLimits(l).ok());
  return l;
}

TEST_F(AgentVolumeTest, IoLimitsAtCreateLiveChangePersistAndRestart) {
  AddLoop();
  Start();
  const iopath::IoLimits first = Limits({{"read-iops", "500"},
                                         {"read-iops-burst", "2000"},
                                         {"read-iops-burst-seconds", "10"},
                                         {"write-bps", "100Mi"},
                                         {"weight", "300"}});
  auto v = Create("limited", 32 * kMi, "", 0, first);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->state, "ready") << v->message;
  EXPECT_EQ(v->io_limits, first);
  EXPECT_EQ(volumes_->Get("limited")->io_limits, first);
  const std::string disk_root = disks_->disks()[0]->mount_path;
  EXPECT_EQ(agent::ReadManifest(disk_root)->Find("limited")->io_limits, first);
  const std::string manifest_text = ReadFile(agent::ManifestPath(disk_root)).value();
  EXPECT_NE(manifest_text.find("read-iops: 500"), std::string::npos) << manifest_text;
  EXPECT_NE(manifest_text.find("write-bps: 100Mi"), std::string::npos) << manifest_text;
  // A volume without limits is unlimited, weight 100.
  auto plain = Create("plain", 16 * kMi);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->io_limits, iopath::IoLimits{});

  // The data path counts what goes through the volume.
  ASSERT_TRUE(WriteFile(v->mount_path + "/data", RandomBytes(5, kMi)).ok());
  auto counted = volumes_->Get("limited");
  EXPECT_GE(counted->io.write_bytes, kMi);
  EXPECT_GE(counted->io.write_ops, 1u);

  // Create again: the same limits, or none given, change nothing; others are refused.
  EXPECT_TRUE(Create("limited", 32 * kMi, "", 0, first).ok());
  EXPECT_TRUE(Create("limited", 32 * kMi).ok());
  auto other = Create("limited", 32 * kMi, "", 0, iopath::IoLimits{});
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.err(), EEXIST);
  EXPECT_NE(other.status().context().find("set-limits"), std::string::npos)
      << other.status().context();

  // Changed live: a file open across the change keeps working (no remount).
  int fd = ::open((v->mount_path + "/data").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const iopath::IoLimits second =
      Limits({{"read-iops", "20"}, {"write-iops", "50"}, {"weight", "50"}});
  auto changed = volumes_->SetIoLimits("limited", second);
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_EQ(changed->io_limits, second);
  EXPECT_EQ(volumes_->Get("limited")->io_limits, second);
  EXPECT_EQ(agent::ReadManifest(disk_root)->Find("limited")->io_limits, second);
  EXPECT_EQ(PwriteAll(fd, "still served", 0).err, 0);
  ::close(fd);
  EXPECT_EQ(volumes_->Get("plain")->io_limits, iopath::IoLimits{}) << "another volume changed";

  // And in force: 30 direct reads at 20 per second take over a second, and
  // the time shows as throttled.
  const double secs = TimedDirectReads(v->mount_path + "/data", 30);
  ASSERT_GE(secs, 0) << strerror(errno);
  EXPECT_GT(secs, 0.8);
  EXPECT_GT(volumes_->Get("limited")->io.throttled_ns, 0u);

  // Invalid limits change nothing, live or on disk.
  const std::string before = ReadFile(agent::ManifestPath(disk_root)).value();
  iopath::IoLimits bad = second;
  bad.read_iops.burst_rate = 10;  // below the rate
  auto refused = volumes_->SetIoLimits("limited", bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err(), EINVAL);
  EXPECT_NE(refused.status().context().find(iopath::ValidateIoLimits(bad).context()),
            std::string::npos)
      << refused.status().context();
  bad = second;
  bad.weight = 0;
  EXPECT_EQ(volumes_->SetIoLimits("limited", bad).err(), EINVAL);
  EXPECT_EQ(volumes_->Get("limited")->io_limits, second);
  EXPECT_EQ(ReadFile(agent::ManifestPath(disk_root)).value(), before);
  EXPECT_EQ(volumes_->SetIoLimits("missing", second).err(), ENOENT);
  auto bad_create = Create("bad-limits", 16 * kMi, "", 0, bad);
  EXPECT_EQ(bad_create.err(), EINVAL);
  EXPECT_EQ(volumes_->Get("bad-limits").err(), ENOENT);
  EXPECT_FALSE(Exists(dirs_->publish() + "/bad-limits"));

  // A restart mounts the volume with the limits its manifest records.
  Stop();
  Start();
  auto after = volumes_->Get("limited");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, "ready") << after->message;
  EXPECT_EQ(after->io_limits, second);
  EXPECT_EQ(volumes_->Get("plain")->io_limits, iopath::IoLimits{});
  EXPECT_EQ(ReadFile(after->mount_path + "/data")->substr(0, 12), "still served");

  // Removing every limit.
  auto unlimited = volumes_->SetIoLimits("limited", iopath::IoLimits{});
  ASSERT_TRUE(unlimited.ok()) << unlimited.status().ToString();
  EXPECT_EQ(unlimited->io_limits, iopath::IoLimits{});
  EXPECT_EQ(ReadFile(agent::ManifestPath(disk_root))->find("io_limits"), std::string::npos);
}

TEST_F(AgentVolumeTest, SetIoLimitsRollsBackWhenTheManifestCannotBeWritten) {
  AddLoop();
  Start();
  const iopath::IoLimits first = Limits({{"write-iops", "100"}});
  ASSERT_TRUE(Create("rollback", 16 * kMi, "", 0, first).ok());
  const std::string manifest = agent::ManifestPath(disks_->disks()[0]->mount_path);
  const std::string before = ReadFile(manifest).value();
  // The manifest's temporary file cannot be created: a directory is in its way.
  const std::string blocker = manifest + ".tmp." + std::to_string(::getpid());
  ASSERT_EQ(::mkdir(blocker.c_str(), 0755), 0);
  auto r = volumes_->SetIoLimits("rollback", Limits({{"write-iops", "5"}, {"weight", "10"}}));
  ::rmdir(blocker.c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().context().find("manifest"), std::string::npos) << r.status().context();
  EXPECT_EQ(volumes_->Get("rollback")->io_limits, first) << "the live limits were not put back";
  EXPECT_EQ(ReadFile(manifest).value(), before);
  // Once the manifest can be written again, the change goes through.
  EXPECT_TRUE(volumes_->SetIoLimits("rollback", Limits({{"write-iops", "5"}})).ok());
}

TEST_F(AgentVolumeTest, OneEnginePerDiskAndADiskWithoutOneServesNothing) {
  AddLoop();
  AddLoop();
  std::vector<std::string> engines_for;  // the devices engines were made for
  make_engine_ = [&](const agent::AttachedDisk& disk) -> Result<std::unique_ptr<iopath::Engine>> {
    engines_for.push_back(disk.device);
    return iopath::Engine::Create();
  };
  Start();
  ASSERT_TRUE(Create("a1", 16 * kMi, devices_[0]).ok());
  ASSERT_TRUE(Create("a2", 16 * kMi, devices_[0]).ok());
  ASSERT_TRUE(Create("b1", 16 * kMi, devices_[1]).ok());
  // One engine per disk, however many volumes it holds.
  EXPECT_EQ(engines_for, devices_);
  Stop();

  // The second disk's engine cannot be created.
  engines_for.clear();
  make_engine_ = [&](const agent::AttachedDisk& disk) -> Result<std::unique_ptr<iopath::Engine>> {
    engines_for.push_back(disk.device);
    if (disk.device == devices_[1]) return Status::Error(ENOMEM, "io_uring_queue_init (injected)");
    return iopath::Engine::Create();
  };
  Start();
  EXPECT_EQ(engines_for.size(), 2u);
  EXPECT_EQ(volumes_->Get("a1")->state, "ready");
  EXPECT_EQ(volumes_->Get("a2")->state, "ready");
  auto b1 = volumes_->Get("b1");
  ASSERT_TRUE(b1.ok());
  EXPECT_EQ(b1->state, "error");
  EXPECT_NE(b1->message.find("cannot serve volumes"), std::string::npos) << b1->message;
  EXPECT_NE(b1->message.find("injected"), std::string::npos) << b1->message;
  EXPECT_FALSE(IsMountPoint(b1->mount_path));
  const std::string broken_id = disks_->disks()[1]->uuid;
  const agent::DiskInfo broken = DiskOf(broken_id);
  EXPECT_EQ(broken.state, "error");
  EXPECT_NE(broken.reason.find("injected"), std::string::npos) << broken.reason;
  EXPECT_EQ(DiskOf(disks_->disks()[0]->uuid).state, "ready");
  // New volumes avoid it, even though it has more room; asked for by name, it refuses.
  ASSERT_GT(broken.free_bytes, DiskOf(disks_->disks()[0]->uuid).free_bytes);
  auto placed = Create("c1", 16 * kMi);
  ASSERT_TRUE(placed.ok()) << placed.status().ToString();
  EXPECT_EQ(placed->disk_id, disks_->disks()[0]->uuid);
  auto refused = Create("c2", 16 * kMi, broken_id);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err(), EBUSY);
  EXPECT_NE(refused.status().context().find("cannot serve volumes"), std::string::npos);
  EXPECT_EQ(volumes_->SetIoLimits("b1", iopath::IoLimits{}).err(), EBUSY);
}

// Threads of this process whose name starts with `prefix`.
int ThreadsNamed(const std::string& prefix) {
  int n = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name.rfind(prefix, 0) == 0) ++n;
  }
  return n;
}

TEST_F(AgentVolumeTest, FuseIoUringOptionReachesTheVolumes) {
  // fuse_io_uring in the agent's configuration: every volume the manager
  // serves takes its requests through FUSE over io_uring (fuse/kernel_ring.h),
  // whose queue threads are named fuse-ring-<queue>.
  auto on = FuseUringSwitch::Acquire();
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  const int before = ThreadsNamed("fuse-ring-");
  AddLoop();
  fuse_io_uring_ = true;
  Start();
  auto v = Create("ring-0", 64 * kMi);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  ASSERT_TRUE(WriteFile(v->mount_path + "/f", RandomBytes(7, kMi)).ok());
  auto back = ReadFile(v->mount_path + "/f");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, RandomBytes(7, kMi));
  EXPECT_GT(ThreadsNamed("fuse-ring-"), before);
  auto info = volumes_->Get("ring-0");
  ASSERT_TRUE(info.ok());
  EXPECT_GT(info->fuse_ring_requests, 0u) << "no request came through the ring";
  // Without the option the same volume serves /dev/fuse only.
  fuse_io_uring_ = false;
  Start();
  EXPECT_EQ(ThreadsNamed("fuse-ring-"), before);
  back = ReadFile(v->mount_path + "/f");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, RandomBytes(7, kMi));
}

}  // namespace
}  // namespace localvol::testing
