#include "agent/volume_manager.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "agent/placement.h"
#include "agent/volume_dirs.h"
#include "base/directory.h"
#include "base/logging.h"
#include "base/scope_guard.h"
#include "base/size.h"
#include "base/unique_fd.h"
#include "iopath/engine.h"

namespace localvol::agent {
namespace {

std::shared_ptr<spdlog::logger> Log() { return GetLogger("volume"); }

}  // namespace

Status ValidateVolumeName(const std::string& name) {
  // Messages show bytes outside printable ASCII as \xNN: a name that is not
  // UTF-8 must not end up raw in a terminal, a log or a gRPC status.
  const auto printable = [](std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
      if (c >= 0x20 && c < 0x7f) {
        out += static_cast<char>(c);
      } else {
        out += fmt::format("\\x{:02x}", c);
      }
    }
    return out;
  };
  const auto bad = [&](const std::string& why) {
    return Status::Error(EINVAL, "invalid volume name '" + printable(name) + "': " + why +
                                     " (use 1 to 63 lowercase letters, digits and '-', starting "
                                     "and ending with a letter or digit, e.g. 'db-data-0')");
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > 63) return bad("it is " + std::to_string(name.size()) + " characters long");
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return bad("it contains '" + printable(std::string_view(&c, 1)) + "'");
    }
  }
  if (name.front() == '-' || name.back() == '-') return bad("it starts or ends with '-'");
  return Status::Ok();
}

VolumeManager::VolumeManager(VolumeManagerOptions options, DiskManager* disks)
    : options_(std::move(options)), disks_(disks) {}

VolumeManager::~VolumeManager() { Shutdown(); }

uint64_t VolumeManager::AllocatedLocked(const AttachedDisk* disk) const {
  uint64_t sum = 0;
  for (const auto& v : disk->manifest.volumes) sum += v.capacity_bytes;
  return sum + trash_.PendingBytes(disk);
}

Result<UniqueFd> VolumeManager::PrepareMountpoint(const std::string& name) {
  const std::string path = publish_dir_ + "/" + name;
  for (int i = 0;; ++i) {
    if (i == 32) return Status::Error(EBUSY, path + ": too many stacked mounts");
    auto m = FindMountAt(path);
    if (!m) break;
    if (m->fstype == "fuse.localvol") {
      // statfs always asks the server (stat may be answered from the
      // attribute cache): a dead server's mount fails with ENOTCONN.
      struct statfs sfs;
      if (::statfs(path.c_str(), &sfs) != 0 && (errno == ENOTCONN || errno == ECONNABORTED)) {
        Log()->warn("{}: clearing a stale mount left by a stopped server ({})", path, m->source);
        if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
          return Status::FromErrno("umount stale mount " + path);
        }
        continue;
      }
      return Status::Error(EBUSY, path + " is already served by another process (" + m->source +
                                      "); stop it (e.g. umount " + path + ") and retry");
    }
    return Status::Error(EBUSY, path + " has a " + m->fstype + " filesystem (" + m->source +
                                    ") mounted on it; unmount it and restart localvold");
  }
  return OpenPublishPath(publish_dir_, name);
}

void VolumeManager::CreateEngines() {
  for (const auto& disk : disks_->disks()) {
    auto engine = options_.make_engine ? options_.make_engine(*disk)
                                       : iopath::Engine::Create(options_.engine_options);
    if (engine.ok()) {
      engines_[disk.get()] = std::move(engine).value();
      continue;
    }
    const std::string why =
        "its io_uring engine could not be created: " + engine.status().ToString();
    Log()->error("disk {} ({}) cannot serve volumes: {}", disk->uuid, disk->device, why);
    MutexLock lock(mu_);
    engine_errors_[disk.get()] = why;
  }
}

Result<std::unique_ptr<fuse::Volume>> VolumeManager::MountVolume(const Vol& vol,
                                                                 const VolumeRecord& rec) {
  auto engine = engines_.find(vol.disk);
  if (engine == engines_.end()) {
    std::string why;
    {
      MutexLock lock(mu_);
      auto it = engine_errors_.find(vol.disk);
      why = it != engine_errors_.end() ? it->second : "it has no I/O engine";
    }
    return Status::Error(EBUSY, "disk " + vol.disk->uuid + " cannot serve volumes: " + why);
  }
  auto mountpoint = PrepareMountpoint(vol.name);
  if (!mountpoint.ok()) return mountpoint.status();
  fuse::VolumeOptions o;
  o.source_dir = vol.backing_path;
  // The directory opened without following links, named through its fd: the
  // mount lands on that directory, not wherever a path would lead.
  o.mountpoint = "/proc/self/fd/" + std::to_string(mountpoint->get());
  o.name = vol.name;
  o.capacity_bytes = rec.capacity_bytes;
  o.inode_limit = rec.inode_limit;
  o.engine = engine->second.get();
  o.io_limits = rec.io_limits;
  o.max_threads = options_.fuse_threads;
  o.fuse_io_uring = options_.fuse_io_uring;
  o.thread_placement = options_.fuse_thread_placement;
  o.read_passthrough = options_.read_passthrough && rec.read_passthrough;
  auto mounted = fuse::Volume::Mount(o);
  if (mounted.ok() && (*mounted)->mountpoint() != vol.mount_path) {
    // The directory was moved between the open and the mount.
    return Status::Error(EBUSY, "the publish directory of volume " + vol.name + " was moved to " +
                                    (*mounted)->mountpoint() + " while it was mounted; retry");
  }
  return mounted;
}

Status VolumeManager::CommitManifest(AttachedDisk* disk, const DiskManifest& manifest) {
  Status st = WriteManifest(disk->mount_path, manifest);
  if (!st.ok()) {
    return Status::Error(
        st.err(), "could not update the manifest of disk " + disk->uuid + ": " + st.ToString());
  }
  MutexLock lock(mu_);
  disk->manifest = manifest;
  return Status::Ok();
}

void VolumeManager::LoadDisk(AttachedDisk* disk, std::vector<Vol*>* to_mount) {
  // First what a predecessor left in the trash, so nothing is charged twice.
  trash_.Adopt(disk);
  auto names = ListDirectory(disk->VolumesDir());
  if (!names.ok()) {
    Log()->error("disk {}: cannot look for crash leftovers among the volumes: {}", disk->uuid,
                 names.status().ToString());
    names = std::vector<std::string>();
  }
  for (const auto& n : *names) {
    const char* why = nullptr;
    if (IsBuildLeftover(n)) {
      why = "a volume root whose build a crash interrupted";
    } else if (n[0] != '.' && disk->manifest.Find(n) == nullptr) {
      why = "in no manifest (an interrupted delete)";
    }
    if (why == nullptr) continue;
    Log()->warn("disk {}: {} is {}; removing it", disk->uuid, n, why);
    Status s = trash_.MoveMeasured(disk, disk->VolumesDir() + "/" + n);
    if (!s.ok()) Log()->error("disk {}: {}", disk->uuid, s.ToString());
  }
  for (const auto& rec : disk->manifest.volumes) {
    const std::string backing = disk->VolumesDir() + "/" + rec.name;
    struct stat st;
    if (::lstat(backing.c_str(), &st) != 0 && errno == ENOENT) {
      // Listed, but the agent stopped before the root was in place.
      Log()->warn(
          "volume {}: backing directory {} is missing (an interrupted create); creating it "
          "empty",
          rec.name, backing);
      if (Status b = BuildVolumeRoot(disk->VolumesDir(), rec.name); !b.ok()) {
        Log()->error("volume {}: {}", rec.name, b.ToString());
      }
    } else if (auto repaired = RepairNeverServedRoot(backing); !repaired.ok()) {
      Log()->error("volume {}: {}", rec.name, repaired.status().ToString());
    } else if (!repaired->empty()) {
      Log()->warn("volume {}: finished its never-served root {} ({})", rec.name, backing,
                  *repaired);
    }
    MutexLock lock(mu_);
    if (auto it = vols_.find(rec.name); it != vols_.end()) {
      Log()->error(
          "volume {} is on disk {} and on disk {}; serving the first only. Delete or "
          "rename one copy (move one disk away) to resolve",
          rec.name, it->second->disk->uuid, disk->uuid);
      continue;
    }
    auto vol = std::make_unique<Vol>();
    vol->name = rec.name;
    vol->disk = disk;
    vol->mount_path = publish_dir_ + "/" + rec.name;
    vol->backing_path = backing;
    to_mount->push_back(vol.get());
    vols_[rec.name] = std::move(vol);
  }
}

Status VolumeManager::Start() {
  MutexLock ops(ops_mu_);
  if (started_) return Status::Ok();
  Status st = MakeDirs(options_.publish_dir, 0755);
  if (!st.ok()) return Status::Error(st.err(), "publish directory: " + st.ToString());
  auto canonical = CanonicalPath(options_.publish_dir);
  if (!canonical.ok()) return canonical.status();
  publish_dir_ = *canonical;
  trash_.Start();
  started_ = true;
  CreateEngines();

  std::vector<Vol*> to_mount;
  for (const auto& disk : disks_->disks()) LoadDisk(disk.get(), &to_mount);
  std::set<std::string> catalogue;
  {
    MutexLock lock(mu_);
    for (const auto& [name, vol] : vols_) catalogue.insert(name);
  }
  for (const auto& name : RemoveOrphanPublishDirs(publish_dir_, catalogue)) {
    Log()->warn("removed the empty publish directory {}/{} of no volume (an interrupted delete)",
                publish_dir_, name);
  }
  for (Vol* vol : to_mount) {
    const VolumeRecord* rec = vol->disk->manifest.Find(vol->name);
    auto mounted = MountVolume(*vol, *rec);
    MutexLock lock(mu_);
    if (mounted.ok()) {
      vol->fs = std::move(mounted).value();
    } else {
      Log()->error("volume {}: not served: {}", vol->name, mounted.status().ToString());
      vol->error = mounted.status().ToString();
    }
  }
  Log()->info(
      "{} volume(s) in the catalogue, {} served", to_mount.size(),
      std::count_if(to_mount.begin(), to_mount.end(), [](Vol* v) { return v->fs != nullptr; }));
  return Status::Ok();
}

const std::string* VolumeManager::EngineErrorLocked(const AttachedDisk* disk) const {
  auto it = engine_errors_.find(disk);
  return it == engine_errors_.end() ? nullptr : &it->second;
}

uint64_t VolumeManager::UnallocatedLocked(const AttachedDisk* disk) const {
  const uint64_t alloc = AllocatedLocked(disk);
  return disk->Allocatable() > alloc ? disk->Allocatable() - alloc : 0;
}

Result<AttachedDisk*> VolumeManager::PickDisk(const CreateVolumeParams& p) const {
  const auto& disks = disks_->disks();
  std::vector<PlacementDisk> candidates;
  for (const auto& d : disks) {
    const std::string* why = EngineErrorLocked(d.get());
    candidates.push_back(
        PlacementDisk{d->uuid, d->device, UnallocatedLocked(d.get()), why ? *why : ""});
  }
  auto picked = PlaceVolume(candidates, PlacementRequest{p.capacity_bytes, p.disk});
  if (!picked.ok()) return picked.status();
  return disks[*picked].get();
}

Result<VolumeInfo> VolumeManager::Create(const CreateVolumeParams& p) {
  if (Status s = ValidateVolumeName(p.name); !s.ok()) return s;
  if (p.capacity_bytes < kMinVolumeCapacity) {
    return Status::Error(EINVAL, "size " + std::to_string(p.capacity_bytes) +
                                     " is too small; a volume needs at least 1Mi");
  }
  if (p.io_limits) {
    if (Status s = iopath::ValidateIoLimits(*p.io_limits); !s.ok()) {
      return Status::Error(EINVAL, "invalid I/O limits for volume " + p.name + ": " + s.context());
    }
  }
  MutexLock ops(ops_mu_);
  if (shut_down_ || !started_)
    return Status::Error(ESHUTDOWN, "localvold is stopping; retry once it runs again");
  AttachedDisk* disk = nullptr;
  const uint64_t inodes =
      p.inode_limit != 0 ? p.inode_limit : fuse::DefaultInodeLimit(p.capacity_bytes);
  {
    MutexLock lock(mu_);
    if (auto it = vols_.find(p.name); it != vols_.end()) {
      const Vol& v = *it->second;
      const VolumeRecord* rec = v.disk->manifest.Find(v.name);
      if (rec->capacity_bytes != p.capacity_bytes) {
        return Status::Error(EEXIST,
                             "volume " + p.name + " already exists with size " +
                                 FormatSize(rec->capacity_bytes) + " (" +
                                 std::to_string(rec->capacity_bytes) + " bytes), not " +
                                 FormatSize(p.capacity_bytes) +
                                 "; use 'volume resize' to change its size, or another name");
      }
      if (p.inode_limit != 0 && p.inode_limit != rec->inode_limit) {
        return Status::Error(EEXIST, "volume " + p.name +
                                         " already exists with an inode limit of " +
                                         std::to_string(rec->inode_limit) + ", not " +
                                         std::to_string(p.inode_limit));
      }
      if (!p.disk.empty() && v.disk->uuid != p.disk && v.disk->device != p.disk &&
          v.disk->uuid.rfind(p.disk, 0) != 0) {
        return Status::Error(EEXIST, "volume " + p.name + " already exists on disk " +
                                         v.disk->uuid + ", not on " + p.disk);
      }
      if (p.io_limits && *p.io_limits != rec->io_limits) {
        return Status::Error(EEXIST, "volume " + p.name + " already exists with I/O limits " +
                                         iopath::FormatIoLimits(rec->io_limits) + ", not " +
                                         iopath::FormatIoLimits(*p.io_limits) +
                                         "; use 'volume set-limits' to change them");
      }
      if (p.read_passthrough && *p.read_passthrough != rec->read_passthrough) {
        return Status::Error(EEXIST, std::string("volume ") + p.name +
                                         " already exists with read passthrough " +
                                         (rec->read_passthrough ? "auto" : "off") + ", not " +
                                         (*p.read_passthrough ? "auto" : "off"));
      }
      return Describe(v, ReadMountTable());
    }
    auto picked = PickDisk(p);
    if (!picked.ok()) return picked.status();
    disk = *picked;
  }
  auto vol = std::make_unique<Vol>();
  vol->name = p.name;
  vol->disk = disk;
  vol->mount_path = publish_dir_ + "/" + p.name;
  vol->backing_path = disk->VolumesDir() + "/" + p.name;

  // The manifest first: a crash after it leaves a volume the next start
  // serves (empty), never data no manifest knows.
  DiskManifest old_manifest;
  {
    MutexLock lock(mu_);
    old_manifest = disk->manifest;
  }
  DiskManifest manifest = old_manifest;
  VolumeRecord record;
  record.name = p.name;
  record.capacity_bytes = p.capacity_bytes;
  record.inode_limit = inodes;
  record.default_inodes = p.inode_limit == 0;
  record.created = NowUtc();
  record.io_limits = p.io_limits.value_or(iopath::IoLimits{});
  record.csi = p.csi;
  record.pvc = p.pvc;
  record.read_passthrough = p.read_passthrough.value_or(true);
  manifest.volumes.push_back(record);
  if (Status s = CommitManifest(disk, manifest); !s.ok()) return s;
  // Runs before Create returns, so with ops_mu_ held; the analysis cannot
  // follow the lambda into ScopeGuard.
  ScopeGuard restore_manifest([&]() NO_THREAD_SAFETY_ANALYSIS {
    Status s = CommitManifest(disk, old_manifest);
    if (!s.ok()) Log()->error("volume {}: rolling back the manifest: {}", p.name, s.ToString());
  });
  CrashPoint("volume-create-after-manifest");
  struct stat st;
  if (::lstat(vol->backing_path.c_str(), &st) == 0) {
    // A directory no manifest knew: never hand old data to a new volume.
    Status s = trash_.MoveMeasured(disk, vol->backing_path);
    if (!s.ok()) return s;
  }
  if (Status s = BuildVolumeRoot(disk->VolumesDir(), p.name); !s.ok()) {
    return Status::Error(
        s.err(), "could not make the backing directory of volume " + p.name + ": " + s.ToString());
  }
  ScopeGuard remove_backing([&] {
    if (Status rm = RemoveDirectory(vol->backing_path); !rm.ok()) {
      Log()->error("volume {}: undoing the failed create: {}", p.name, rm.ToString());
    }
  });
  CrashPoint("volume-create-before-mount");
  auto mounted = MountVolume(*vol, record);
  if (!mounted.ok()) {
    if (::rmdir(vol->mount_path.c_str()) != 0) {
      const int err = errno;
      if (err != ENOENT && err != ENOTDIR) {
        Log()->warn("volume {}: removing {}: {}", p.name, vol->mount_path, std::strerror(err));
      }
    }
    return Status::Error(mounted.err(),
                         "could not mount volume " + p.name + ": " + mounted.status().ToString());
  }
  vol->fs = std::move(mounted).value();
  remove_backing.Cancel();
  restore_manifest.Cancel();
  Log()->info("volume {}: created on disk {} ({}), {} and {} inodes, I/O limits {}, at {}", p.name,
              disk->uuid, disk->device, FormatSize(p.capacity_bytes), inodes,
              iopath::FormatIoLimits(record.io_limits), vol->mount_path);
  MutexLock lock(mu_);
  Vol* raw = vol.get();
  vols_[p.name] = std::move(vol);
  return Describe(*raw, ReadMountTable());
}

Result<VolumeInfo> VolumeManager::Resize(const std::string& name, uint64_t capacity,
                                         uint64_t inode_limit) {
  if (Status s = ValidateVolumeName(name); !s.ok()) return s;
  if (capacity < kMinVolumeCapacity) {
    return Status::Error(
        EINVAL, "size " + std::to_string(capacity) + " is too small; a volume needs at least 1Mi");
  }
  MutexLock ops(ops_mu_);
  DiskManifest manifest;
  auto found = FindForChange(name, &manifest);
  if (!found.ok()) return found.status();
  Vol* vol = *found;
  const VolumeRecord old_rec = *manifest.Find(name);
  uint64_t free = 0;
  {
    MutexLock lock(mu_);
    free = UnallocatedLocked(vol->disk);
  }
  if (!vol->fs) {
    return Status::Error(EBUSY, "volume " + name + " is not served (" + vol->error +
                                    "); fix that and restart localvold before resizing");
  }
  uint64_t inodes = inode_limit;
  bool default_inodes = old_rec.default_inodes;
  if (inode_limit == 0) {
    inodes = old_rec.default_inodes ? fuse::DefaultInodeLimit(capacity) : old_rec.inode_limit;
  } else {
    default_inodes = false;
  }
  if (capacity > old_rec.capacity_bytes && capacity - old_rec.capacity_bytes > free) {
    return Status::Error(ENOSPC, "disk " + vol->disk->uuid + " has " + FormatSize(free) +
                                     " unallocated, not enough to grow volume " + name + " by " +
                                     FormatSize(capacity - old_rec.capacity_bytes));
  }
  if (Status s = vol->fs->SetLimits(capacity, inodes); !s.ok()) {
    if (s.err() == ENOSPC) {
      return Status::Error(EBUSY, "volume " + name + ": " + s.context());
    }
    return s;
  }
  VolumeRecord* rec = manifest.Find(name);
  rec->capacity_bytes = capacity;
  rec->inode_limit = inodes;
  rec->default_inodes = default_inodes;
  if (Status s = CommitManifest(vol->disk, manifest); !s.ok()) {
    if (Status back = vol->fs->SetLimits(old_rec.capacity_bytes, old_rec.inode_limit); !back.ok()) {
      Log()->error("volume {}: putting back the limits {} and {} inodes: {}", name,
                   FormatSize(old_rec.capacity_bytes), old_rec.inode_limit, back.ToString());
    }
    return s;
  }
  Log()->info("volume {}: resized from {} to {} ({} inodes)", name,
              FormatSize(old_rec.capacity_bytes), FormatSize(capacity), inodes);
  MutexLock lock(mu_);
  return Describe(*vol, ReadMountTable());
}

Result<VolumeInfo> VolumeManager::SetIoLimits(const std::string& name,
                                              const iopath::IoLimits& limits) {
  if (Status s = ValidateVolumeName(name); !s.ok()) return s;
  if (Status s = iopath::ValidateIoLimits(limits); !s.ok()) {
    return Status::Error(EINVAL, "invalid I/O limits for volume " + name + ": " + s.context());
  }
  MutexLock ops(ops_mu_);
  DiskManifest manifest;
  auto found = FindForChange(name, &manifest);
  if (!found.ok()) return found.status();
  Vol* vol = *found;
  if (!vol->fs) {
    return Status::Error(EBUSY, "volume " + name + " is not served (" + vol->error +
                                    "); fix that and restart localvold before changing its limits");
  }
  VolumeRecord* rec = manifest.Find(name);
  const iopath::IoLimits old = rec->io_limits;
  if (limits != old) {
    if (Status s = vol->fs->SetIoLimits(limits); !s.ok()) {
      return Status::Error(s.err() == EINVAL ? EINVAL : EBUSY,
                           "volume " + name + ": " + s.context());
    }
    rec->io_limits = limits;
    if (Status s = CommitManifest(vol->disk, manifest); !s.ok()) {
      if (Status back = vol->fs->SetIoLimits(old); !back.ok()) {
        Log()->error("volume {}: putting back the I/O limits {}: {}", name,
                     iopath::FormatIoLimits(old), back.ToString());
      }
      return s;
    }
    Log()->info("volume {}: I/O limits set to {} (were {})", name, iopath::FormatIoLimits(limits),
                iopath::FormatIoLimits(old));
  }
  MutexLock lock(mu_);
  return Describe(*vol, ReadMountTable());
}

Status VolumeManager::Delete(const std::string& name) {
  if (Status s = ValidateVolumeName(name); !s.ok()) return s;
  MutexLock ops(ops_mu_);
  DiskManifest manifest;
  auto found = FindForChange(name, &manifest);
  if (!found.ok()) return found.status();
  Vol* vol = *found;
  uint64_t used = 0;
  if (vol->fs) {
    used = vol->fs->Usage().used_bytes;
    if (auto m = FindMountAt(vol->mount_path)) {
      if (Status busy = CheckNotInUse(*vol, *m); !busy.ok()) return busy;
      // A plain unmount fails with EBUSY while a process in a namespace it
      // propagates to has a file, a directory or its cwd in the volume (and
      // closes the window between the check above and here).
      if (::umount2(vol->mount_path.c_str(), UMOUNT_NOFOLLOW) != 0) {
        const int err = errno;
        if (err == EBUSY) {
          return Status::Error(EBUSY, "volume " + name +
                                          " is in use: a process has files open or "
                                          "its working directory in " +
                                          vol->mount_path + " (see 'fuser -vm " + vol->mount_path +
                                          "'); stop it and retry");
        }
        if (err != EINVAL) return Status::Error(err, "umount " + vol->mount_path);
      }
    }
    Status s = vol->fs->Unmount();
    if (!s.ok()) Log()->warn("volume {}: {}", name, s.ToString());
  }
  // The manifest first: after a crash, a directory without an entry is
  // trash; an entry without its directory would come back as a new volume.
  manifest.volumes.erase(std::remove_if(manifest.volumes.begin(), manifest.volumes.end(),
                                        [&](const VolumeRecord& r) { return r.name == name; }),
                         manifest.volumes.end());
  if (Status s = CommitManifest(vol->disk, manifest); !s.ok()) {
    // Still in the manifest: serve it again rather than lose track of it.
    const VolumeRecord* rec = vol->disk->manifest.Find(name);
    if (vol->fs && rec != nullptr) {
      std::unique_ptr<fuse::Volume> old;
      {
        MutexLock lock(mu_);
        old = std::move(vol->fs);
      }
      old.reset();
      auto again = MountVolume(*vol, *rec);
      MutexLock lock(mu_);
      if (again.ok()) {
        vol->fs = std::move(again).value();
      } else {
        vol->error = again.status().ToString();
      }
    }
    return s;
  }
  CrashPoint("volume-delete-after-manifest");
  Status trashed = trash_.Move(vol->disk, vol->backing_path, used);
  if (!trashed.ok())
    Log()->error("volume {}: {}; it is removed at the next start", name, trashed.ToString());
  if (Status rm = RemoveDirectory(vol->mount_path); !rm.ok()) {
    Log()->warn("volume {}: {}; it is removed at the next start", name, rm.ToString());
  }
  Log()->info("volume {}: deleted from disk {}; its {} are removed in the background", name,
              vol->disk->uuid, FormatSize(used));
  std::unique_ptr<Vol> gone;
  {
    MutexLock lock(mu_);
    auto it = vols_.find(name);
    gone = std::move(it->second);
    vols_.erase(it);
  }
  return Status::Ok();
}

Status VolumeManager::CheckNotInUse(const Vol& vol, const MountInfo& ours) const {
  // By the connection's device number, in every mount namespace. Another
  // mount of it (a bind mount into a pod) would outlive ours and be cut off
  // under its users. A copy at the same path in another namespace goes with
  // ours, or is cut off after the unmount's grace period; what matters there
  // is whether a process uses it, which the scan below finds.
  std::string list;
  for (const auto& m : MountsOfFilesystem(ours.dev)) {
    if (m.mount_point != vol.mount_path) list += (list.empty() ? "" : ", ") + m.Describe();
  }
  if (!list.empty()) {
    return Status::Error(EBUSY, "volume " + vol.name + " is also mounted at " + list +
                                    "; unmount it there (stop the pods using it) and retry");
  }
  std::string users;
  for (const auto& use : ProcessesUsingFilesystem(ours.dev)) {
    users += (users.empty() ? "" : "; ") + use.Describe();
  }
  if (!users.empty()) {
    return Status::Error(EBUSY, "volume " + vol.name + " is in use by " + users +
                                    " (in any mount namespace); stop those processes and retry");
  }
  return Status::Ok();
}

VolumeInfo VolumeManager::Describe(const Vol& v, const std::vector<MountInfo>& mounts) const {
  VolumeInfo info;
  info.name = v.name;
  info.disk_id = v.disk->uuid;
  info.device = v.disk->device;
  info.mount_path = v.mount_path;
  info.backing_path = v.backing_path;
  if (const VolumeRecord* rec = v.disk->manifest.Find(v.name)) {
    info.capacity_bytes = rec->capacity_bytes;
    info.inode_limit = rec->inode_limit;
    info.io_limits = rec->io_limits;
    info.csi = rec->csi;
    info.pvc = rec->pvc;
    info.read_passthrough_setting = rec->read_passthrough;
  }
  const std::string source = "localvol:" + v.name;
  for (const auto& m : mounts) {
    if (m.source == source && m.fstype == "fuse.localvol" && m.mount_point != v.mount_path) {
      info.publish_targets.push_back(m.mount_point);
    }
  }
  if (v.fs) {
    const fuse::VolumeUsage u = v.fs->Usage();
    info.used_bytes = u.used_bytes;
    info.inodes_used = u.used_inodes;
    info.io = v.fs->IoStats();
    info.fuse_ring_requests = v.fs->KernelRingRequests();
    info.fuse_ring_resident_bytes = v.fs->KernelRingResidentBytes();
    info.read_passthrough = v.fs->ReadPassthrough();
    info.passthrough_open_files = v.fs->PassthroughOpenFiles();
    info.passthrough_opens_total = v.fs->PassthroughOpensTotal();
    info.io_limits = v.fs->IoLimits();  // what is in force (SetIoLimits keeps it = the manifest's)
    bool mounted = false;
    for (const auto& m : mounts) {
      if (m.mount_point == v.mount_path && m.fstype == "fuse.localvol") mounted = true;
    }
    if (mounted) {
      info.state = "ready";
    } else {
      info.state = "not-mounted";
      info.message = "unmounted from outside localvold; restart localvold to mount it again";
    }
  } else {
    info.state = "error";
    info.message = v.error;
  }
  return info;
}

Result<VolumeInfo> VolumeManager::Get(const std::string& name) const {
  if (Status s = ValidateVolumeName(name); !s.ok()) return s;
  const auto mounts = ReadMountTable();
  MutexLock lock(mu_);
  auto found = FindLocked(name);
  if (!found.ok()) return found.status();
  return Describe(**found, mounts);
}

Result<VolumeManager::Vol*> VolumeManager::FindForChange(const std::string& name,
                                                         DiskManifest* manifest) {
  if (shut_down_ || !started_)
    return Status::Error(ESHUTDOWN, "localvold is stopping; retry once it runs again");
  MutexLock lock(mu_);
  auto found = FindLocked(name);
  if (!found.ok()) return found.status();
  *manifest = (*found)->disk->manifest;
  return found;
}

Result<VolumeManager::Vol*> VolumeManager::FindLocked(const std::string& name) const {
  auto it = vols_.find(name);
  if (it == vols_.end()) {
    return Status::Error(ENOENT, "no volume named " + name + "; see 'localvolctl volume list'");
  }
  return it->second.get();
}

std::vector<VolumeInfo> VolumeManager::List() const {
  const auto mounts = ReadMountTable();
  MutexLock lock(mu_);
  std::vector<VolumeInfo> out;
  for (const auto& [name, vol] : vols_) out.push_back(Describe(*vol, mounts));
  return out;
}

std::vector<DiskInfo> VolumeManager::Disks() const {
  std::vector<DiskInfo> out;
  {
    MutexLock lock(mu_);
    for (const auto& d : disks_->disks()) {
      DiskInfo i;
      i.id = d->uuid;
      i.device = d->device;
      i.configured_as = d->configured_as;
      i.state = "ready";
      if (auto it = engine_errors_.find(d.get()); it != engine_errors_.end()) {
        i.state = "error";
        i.reason = "cannot serve volumes: " + it->second;
      }
      i.filesystem = d->filesystem;
      i.mount_path = d->mount_path;
      i.size_bytes = d->size_bytes;
      i.reserve_bytes = d->reserve_bytes;
      i.allocated_bytes = AllocatedLocked(d.get());
      i.free_bytes =
          d->Allocatable() > i.allocated_bytes ? d->Allocatable() - i.allocated_bytes : 0;
      i.volume_count = static_cast<uint32_t>(d->manifest.volumes.size());
      i.embedded = d->embedded;
      out.push_back(std::move(i));
    }
  }
  for (const auto& m : disks_->missing()) {
    DiskInfo i;
    i.id = m.uuid;
    i.device = m.device;
    i.configured_as = m.configured_as;
    i.state = "missing";
    i.reason = m.reason;
    out.push_back(std::move(i));
  }
  for (const auto& r : disks_->refusals()) {
    DiskInfo i;
    i.device = r.device;
    i.configured_as = r.configured_as;
    i.state = "refused";
    i.reason = r.reason;
    out.push_back(std::move(i));
  }
  return out;
}

uint64_t VolumeManager::PendingTrashBytes() const { return trash_.PendingBytes(); }

void VolumeManager::Ping() const {
  MutexLock ops(ops_mu_);
  MutexLock lock(mu_);
}

void VolumeManager::Shutdown() {
  MutexLock ops(ops_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  std::vector<Vol*> served;
  {
    MutexLock lock(mu_);
    for (auto& [name, vol] : vols_) {
      if (vol->fs) served.push_back(vol.get());
    }
  }
  // In parallel: a busy volume may take the fuse layer's grace period.
  std::vector<std::thread> threads;
  for (Vol* vol : served) {
    threads.emplace_back([vol] {
      Status s = vol->fs->Unmount();
      if (!s.ok()) Log()->error("volume {}: {}", vol->name, s.ToString());
    });
  }
  for (auto& t : threads) t.join();
  {
    std::vector<std::unique_ptr<fuse::Volume>> unmounted;
    MutexLock lock(mu_);
    for (Vol* vol : served) {
      unmounted.push_back(std::move(vol->fs));
      vol->error = "localvold stopped";
    }
  }
  // Every volume (and with it its queue) is gone: the engines may stop.
  engines_.clear();
  trash_.Stop();
  if (!served.empty()) Log()->info("{} volume(s) unmounted", served.size());
}

}  // namespace localvol::agent
