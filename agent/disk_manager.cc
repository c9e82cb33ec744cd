#include "agent/disk_manager.h"

#include <glob.h>
#include <spdlog/fmt/fmt.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>

#include "agent/blkid_probe.h"
#include "base/directory.h"
#include "base/logging.h"
#include "base/scope_guard.h"
#include "base/size.h"

namespace localvol::agent {
namespace {

// The manifest of the disk mounted at `mount_path`, which must name `uuid`
// (the filesystem's own UUID) as its disk.
Result<DiskManifest> ReadManifestOfDisk(const std::string& mount_path, const std::string& uuid) {
  auto manifest = ReadManifest(mount_path);
  if (!manifest.ok()) {
    if (manifest.err() == ENOENT)
      return Status::Error(ENOENT, "it has no " + std::string(kManifestFile));
    return manifest.status();
  }
  if (manifest->disk_uuid != uuid) {
    return Status::Error(EINVAL, "its manifest names disk " + manifest->disk_uuid +
                                     ", but the filesystem UUID is " + uuid);
  }
  return manifest;
}

using namespace std::chrono_literals;

constexpr auto kMkfsTimeout = std::chrono::seconds(600);
constexpr auto kWipeTimeout = std::chrono::seconds(120);
// The backing filesystem is only ever reached through the FUSE server, so
// nothing on it needs to be executable, set-id or a device node.
constexpr unsigned long kDiskMountFlags = MS_NOSUID | MS_NODEV | MS_NOEXEC;

std::shared_ptr<spdlog::logger> Log() { return GetLogger("disk"); }

Result<std::vector<std::string>> Glob(const std::string& pattern) {
  glob_t g;
  std::memset(&g, 0, sizeof g);
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  if (rc != 0 && rc != GLOB_NOMATCH) return Status::Error(EIO, "glob " + pattern + " failed");
  return out;
}

std::string JoinMounts(const std::vector<FsMount>& mounts) {
  std::string s;
  for (const auto& m : mounts) s += (s.empty() ? "" : ", ") + m.Describe();
  return s;
}

bool Supported(const std::string& fstype) { return fstype == "xfs" || fstype == "ext4"; }

}  // namespace

std::string KnownDisksPath(const Config& config) { return config.state_dir + "/known-disks"; }

std::string DiskMountPath(const Config& config, const std::string& uuid) {
  return config.state_dir + "/disks/" + uuid;
}

DiskManager::DiskManager(Config config, CommandRunner* runner)
    : config_(std::move(config)), runner_(runner) {}

DiskManager::~DiskManager() = default;

void DiskManager::Refuse(const std::string& configured_as, const std::string& device,
                         const std::string& reason) {
  Log()->warn("refusing {}{}: {}", configured_as,
              device.empty() || device == configured_as ? "" : " (" + device + ")", reason);
  refusals_.push_back(DiskRefusal{configured_as, device, reason});
}

void DiskManager::ReportMissing(const std::string& uuid, const std::string& configured_as,
                                const std::string& device, const std::string& reason) {
  for (const auto& m : missing_) {
    if (m.uuid == uuid) return;
  }
  Log()->error("disk {} is missing: {}", uuid, reason);
  missing_.push_back(MissingDisk{uuid, configured_as, device, reason});
}

std::string DiskManager::KnownUuidOf(const std::string& configured_as) const {
  std::string uuid;
  for (const auto& [entry, known] : known_) {
    if (entry != configured_as) continue;
    if (!uuid.empty()) return "";  // a pattern's disks: no one device stands for one disk
    uuid = known;
  }
  return uuid;
}

Status DiskManager::AttachEmbedded() {
  // The embedded disk: a sparse image on a loop device, used like a real one.
  const std::string dir = config_.state_dir + "/embedded";
  const std::string image = dir + "/disk.img";
  const std::string configured_as = "embedded:" + image;
  std::string known = KnownUuidOf(configured_as);
  if (known.empty() && !known_file_found_) {
    // State written before known-disks existed: the embedded directory and a
    // disk's mount point under state_dir/disks say the image was made.
    struct stat st;
    // A state_dir/disks that cannot be read holds no such mount point.
    auto names = ListDirectory(config_.state_dir + "/disks");
    if (::stat(dir.c_str(), &st) == 0 && names.ok()) {
      for (const auto& name : *names) {
        if (name[0] != '.') known = name;
      }
    }
  }
  struct stat st;
  if (!known.empty() && ::stat(image.c_str(), &st) != 0 && errno == ENOENT) {
    ReportMissing(known, configured_as, image,
                  "the embedded disk image " + image +
                      " is gone; localvol does not make an "
                      "empty one in its place. Put the image back and restart localvold; if its "
                      "volumes are lost for good, remove the line of " +
                      known + " from " + KnownDisksPath(config_) + " (or that file) and restart");
    return Status::Ok();
  }
  Status st_dir = MakeDirs(dir, 0700);
  if (!st_dir.ok()) return st_dir;
  Status made = CreateSparseImage(image, config_.embedded_disk_size);
  if (!made.ok()) return made;
  auto loop = LoopDevice::Attach(image);
  if (!loop.ok()) return Status::Error(loop.err(), "embedded disk: " + loop.status().context());
  embedded_loop_ = std::move(loop).value();
  Log()->info("no disk configured: using the embedded disk {} ({}) on {}", image,
              FormatSize(config_.embedded_disk_size), embedded_loop_.path());
  Status attached = AttachDevice(configured_as, embedded_loop_.path(), /*wipe=*/false,
                                 config_.reserve, /*embedded=*/true);
  if (!attached.ok()) {
    embedded_loop_.Release();
    return Status::Error(attached.err(), "embedded disk " + image + ": " + attached.context());
  }
  return Status::Ok();
}

void DiskManager::ReconcileKnownDisks() {
  std::set<std::string> configured;
  if (config_.disks.empty())
    configured.insert("embedded:" + config_.state_dir + "/embedded/disk.img");
  for (const auto& entry : config_.disks) configured.insert(entry.device);
  std::vector<std::pair<std::string, std::string>> record;
  for (const auto& d : disks_) record.emplace_back(d->configured_as, d->uuid);
  for (const auto& [entry, uuid] : known_) {
    if (configured.count(entry) == 0) continue;  // its entry was removed: forgotten
    bool attached = false;
    for (const auto& d : disks_) attached |= d->uuid == uuid;
    if (attached) continue;
    ReportMissing(
        uuid, entry, "",
        "disk " + uuid + " (from the entry '" + entry +
            "') was not found. Its volumes "
            "are not served. Attach it again and restart localvold; if it is gone for good, "
            "remove its line from " +
            KnownDisksPath(config_) + " and restart");
    record.emplace_back(entry, uuid);
  }
  std::string text;
  for (const auto& [entry, uuid] : record) text += uuid + " " + entry + "\n";
  Status st = WriteFileAtomic(KnownDisksPath(config_), text, 0644);
  if (!st.ok()) Log()->error("could not record the known disks: {}", st.ToString());
}

Status DiskManager::AttachAll() {
  Status st = MakeDirs(config_.state_dir + "/disks", 0755);
  if (!st.ok()) return Status::Error(st.err(), "state directory: " + st.ToString());
  auto known = ReadWholeFile(KnownDisksPath(config_));
  known_file_found_ = known.ok();
  known_.clear();
  if (known.ok()) {
    std::istringstream in(*known);
    std::string uuid, entry;
    while (in >> uuid && std::getline(in >> std::ws, entry)) known_.emplace_back(entry, uuid);
  }
  if (config_.disks.empty()) {
    st = AttachEmbedded();
    if (!st.ok()) return st;
    ReconcileKnownDisks();
    return Status::Ok();
  }
  std::set<dev_t> seen;
  for (const auto& entry : config_.disks) {
    std::vector<std::string> paths;
    if (entry.IsPattern()) {
      auto matched = Glob(entry.device);
      if (!matched.ok()) {
        Refuse(entry.device, "", matched.status().context());
        continue;
      }
      if (matched->empty()) {
        Refuse(entry.device, "", "no device matches this pattern");
        continue;
      }
      paths = std::move(matched).value();
    } else {
      paths.push_back(entry.device);
    }
    const std::string known = entry.IsPattern() ? "" : KnownUuidOf(entry.device);
    for (const auto& path : paths) {
      auto bd = DescribeBlockDevice(path);
      if (bd.ok() && !seen.insert(bd->dev).second) {
        Log()->info("{} is {}, already handled through another entry", path, bd->path);
        continue;
      }
      if (!known.empty() && bd.ok()) {
        // The entry held a known disk; a blank device there now is another
        // device (or the disk wiped), never to be formatted in its place.
        auto sigs = ProbeSignatures(bd->path);
        if (sigs.ok() && sigs->blank()) {
          ReportMissing(known, entry.device, bd->path,
                        bd->path + " (entry '" + entry.device + "') held disk " + known +
                            " and is now blank; localvol does not format a replacement. Attach "
                            "the disk again and restart localvold; if it is gone for good, "
                            "remove its line from " +
                            KnownDisksPath(config_) + " and restart");
          continue;
        }
      }
      const Reserve reserve = entry.reserve.value_or(config_.reserve);
      Status s = AttachDevice(entry.device, path, entry.wipe, reserve, /*embedded=*/false);
      if (!s.ok()) Refuse(entry.device, bd.ok() ? bd->path : path, s.context());
    }
  }
  ReconcileKnownDisks();
  Log()->info("{} disk(s) ready, {} refused, {} missing", disks_.size(), refusals_.size(),
              missing_.size());
  return Status::Ok();
}

Status DiskManager::AttachDevice(const std::string& configured_as, const std::string& path,
                                 bool wipe, const Reserve& reserve, bool embedded) {
  auto bd = DescribeBlockDevice(path);
  if (!bd.ok()) {
    if (bd.err() == ENOENT) return Status::Error(ENOENT, path + " does not exist");
    return bd.status();
  }
  const std::string& dev = bd->path;
  if (bd->read_only) return Status::Error(EROFS, dev + " is read-only");
  if (bd->size_bytes < (300ull << 20)) {
    return Status::Error(EINVAL, dev + " is too small (" + FormatSize(bd->size_bytes) +
                                     "); a disk needs at least 300 MB");
  }
  auto sigs = ProbeSignatures(dev);
  if (!sigs.ok()) return sigs.status();
  const auto mounts = MountsOfFilesystem(bd->dev);
  const std::set<dev_t> in_use = BlockDevicesInUse();

  std::unique_ptr<AttachedDisk> disk;
  const bool labelled_ours =
      sigs->label == kDiskLabel && Supported(sigs->type) && !sigs->uuid.empty();
  if (labelled_ours) {
    for (const auto& d : disks_) {
      if (d->uuid == sigs->uuid) {
        return Status::Error(EEXIST, dev + " has the same filesystem UUID " + sigs->uuid + " as " +
                                         d->device +
                                         " (a cloned disk?); give it a new UUID or remove it");
      }
    }
    const std::string target = DiskMountPath(config_, sigs->uuid);
    bool already_mounted = false;
    if (!mounts.empty()) {
      // After a crash the disk is still mounted where we left it: adopt that.
      for (const auto& m : mounts) {
        if (m.mount_point != target) {
          return Status::Error(EBUSY, dev + " is mounted at " + JoinMounts(mounts) +
                                          "; localvol only uses a disk nothing else has mounted");
        }
      }
      already_mounted = FindMountAt(target).has_value();
      if (!already_mounted) {
        return Status::Error(EBUSY, dev + " is mounted at " + JoinMounts(mounts) +
                                        " in another mount namespace only; unmount it there");
      }
    } else if (in_use.count(bd->dev) != 0) {
      return Status::Error(EBUSY, dev + " is in use (behind a mounted filesystem or swap)");
    } else if (Status s = CheckNotClaimed(dev); !s.ok()) {
      return s;
    }
    auto adopted = Adopt(dev, sigs->uuid, sigs->type, already_mounted);
    if (adopted.ok()) {
      disk = std::move(adopted).value();
    } else if (!wipe) {
      return Status::Error(
          adopted.err(), dev + " is labelled '" + std::string(kDiskLabel) +
                             "' but is not a usable localvol disk: " + adopted.status().context() +
                             ". If it may be erased (for example an interrupted format), set "
                             "'wipe: true' for it");
    } else {
      Log()->warn("{}: labelled '{}' but not usable ({}); wipe: true is set, reformatting", dev,
                  kDiskLabel, adopted.status().context());
    }
  }
  if (!disk) {
    // Everything below writes to the device: check every rule first.
    if (!mounts.empty()) {
      return Status::Error(EBUSY, dev + " holds a mounted filesystem (" + JoinMounts(mounts) + ")");
    }
    if (in_use.count(bd->dev) != 0) {
      return Status::Error(EBUSY, dev +
                                      " is in use: it is, contains or lies under a mounted "
                                      "filesystem (such as / or /boot) or an active swap device");
    }
    if (!bd->holders.empty()) {
      std::string h;
      for (const auto& x : bd->holders) h += (h.empty() ? "" : ", ") + x;
      return Status::Error(EBUSY, dev + " is held by " + h + " (device-mapper or RAID)");
    }
    if (Status s = CheckNotClaimed(dev); !s.ok()) return s;
    if (!sigs->blank() && !wipe) {
      return Status::Error(EEXIST, dev + " already holds data: " + sigs->Describe() +
                                       ". localvol never formats a device with an existing "
                                       "signature; if this device may be erased, list it on its "
                                       "own with 'wipe: true'");
    }
    if (sigs->blank() && !wipe) {
      auto data = FindDataInSampledRegions(dev);
      if (!data.ok()) return data.status();
      if (data->has_value()) {
        const std::string at = fmt::format("0x{:x}", **data);
        return Status::Error(
            EEXIST, dev + " has no known signature but is not empty (non-zero data at offset " +
                        at +
                        "). localvol only formats an empty device; if this "
                        "one may be erased, list it on its own with 'wipe: true'");
      }
    }
    if (!sigs->blank())
      Log()->warn("{}: wiping {} (wipe: true is set for it)", dev, sigs->Describe());
    auto formatted = Format(dev, /*wipe_first=*/!sigs->blank());
    if (!formatted.ok()) return formatted.status();
    disk = std::move(formatted).value();
  }
  disk->configured_as = configured_as;
  disk->embedded = embedded;
  disk->reserve_bytes = reserve.For(disk->size_bytes);
  Log()->info("disk {} ({}): {} {} at {}, size {}, reserve {}, {} volume(s)", disk->uuid, dev,
              disk->formatted_now ? "formatted" : "recognised", disk->filesystem, disk->mount_path,
              FormatSize(disk->size_bytes), FormatSize(disk->reserve_bytes),
              disk->manifest.volumes.size());
  disks_.push_back(std::move(disk));
  return Status::Ok();
}

Status DiskManager::MountAt(const std::string& device, const std::string& fstype,
                            const std::string& target, bool read_only_probe) {
  Status st = MakeDirs(target, 0755);
  if (!st.ok()) return st;
  unsigned long flags = kDiskMountFlags;
  const char* data = nullptr;
  if (read_only_probe) {
    // Look without writing: no log replay, no journal load.
    flags |= MS_RDONLY;
    data = fstype == "xfs" ? "norecovery" : "noload";
  }
  if (::mount(device.c_str(), target.c_str(), fstype.c_str(), flags, data) != 0) {
    const int err = errno;
    if (Status rm = RemoveDirectory(target); !rm.ok()) {
      Log()->warn("{}: could not remove the mount point of the failed mount: {}", device,
                  rm.ToString());
    }
    return Status::Error(err, "mount " + device + " (" + fstype + ") at " + target +
                                  " failed: " + std::strerror(err) + " (see dmesg)");
  }
  return Status::Ok();
}

Result<DiskManifest> DiskManager::ReadManifestOf(const std::string& device, const std::string& uuid,
                                                 const std::string& fstype) {
  // A read-only look first, so a disk that turns out not to be ours is not
  // changed by the mount.
  const std::string probe = config_.state_dir + "/disks/.probe-" + uuid;
  if (Status st = MountAt(device, fstype, probe, /*read_only_probe=*/true); !st.ok()) return st;
  auto manifest = ReadManifestOfDisk(probe, uuid);
  if (Status undo = UnmountAndRemove(probe, /*detach_on_failure=*/true); !undo.ok()) {
    Log()->warn("{}: could not undo the read-only look at its manifest: {}", device,
                undo.ToString());
  }
  return manifest;
}

Result<std::unique_ptr<AttachedDisk>> DiskManager::Adopt(const std::string& device,
                                                         const std::string& uuid,
                                                         const std::string& fstype,
                                                         bool already_mounted) {
  auto disk = std::make_unique<AttachedDisk>();
  disk->uuid = uuid;
  disk->device = device;
  disk->filesystem = fstype;
  disk->mount_path = DiskMountPath(config_, uuid);
  if (!already_mounted) {
    auto checked = ReadManifestOf(device, uuid, fstype);
    if (!checked.ok()) return checked.status();
    Status st = MountAt(device, fstype, disk->mount_path, /*read_only_probe=*/false);
    if (!st.ok()) return st;
  } else {
    Log()->info("{}: already mounted at {} (left by an earlier run); using it", device,
                disk->mount_path);
  }
  ScopeGuard unmount([&] {
    if (already_mounted) return;
    if (Status undo = UnmountAndRemove(disk->mount_path, /*detach_on_failure=*/false); !undo.ok()) {
      Log()->error("{}: could not undo its mount after the failed adoption: {}", device,
                   undo.ToString());
    }
  });
  // The authoritative read, from the read-write mount (after log replay).
  auto manifest = ReadManifestOfDisk(disk->mount_path, uuid);
  if (!manifest.ok()) return manifest.status();
  for (const auto& name : RemoveStaleManifestTemps(disk->mount_path)) {
    Log()->warn("disk {}: removed {}, left by a crash while the manifest was written", uuid, name);
  }
  for (const char* sub : {kVolumesDir, kTrashDir}) {
    Status st = MakeDirs(disk->mount_path + "/" + sub, std::string(sub) == kTrashDir ? 0700 : 0755);
    if (!st.ok()) return st;
  }
  struct statvfs sv;
  if (::statvfs(disk->mount_path.c_str(), &sv) != 0)
    return Status::FromErrno("statfs " + disk->mount_path);
  disk->size_bytes = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
  disk->manifest = std::move(manifest).value();
  unmount.Cancel();
  return disk;
}

Result<std::unique_ptr<AttachedDisk>> DiskManager::Format(const std::string& device,
                                                          bool wipe_first) {
  // From the first write on, any failure wipes the device back to blank.
  std::string mounted_at;
  ScopeGuard undo([&] {
    if (!mounted_at.empty()) {
      if (Status undo = UnmountAndRemove(mounted_at, /*detach_on_failure=*/true); !undo.ok()) {
        Log()->error("{}: could not undo the mount of the half-made filesystem: {}", device,
                     undo.ToString());
      }
    }
    Status s = runner_->RunChecked({"wipefs", "--all", "--quiet", device}, kWipeTimeout);
    if (s.ok()) s = ZeroSampledRegions(device);
    if (!s.ok()) {
      Log()->error("{}: could not wipe the half-made filesystem: {}", device, s.ToString());
    } else {
      Log()->info("{}: wiped back to empty after the failed format", device);
    }
  });
  if (wipe_first) {
    Status s = runner_->RunChecked({"wipefs", "--all", "--quiet", device}, kWipeTimeout);
    if (!s.ok()) return s;
  }
  std::vector<std::string> mkfs;
  const std::string fstype = FsTypeName(config_.filesystem);
  if (config_.filesystem == FsType::kXfs) {
    // No -f: mkfs.xfs itself refuses a device that still holds a signature.
    mkfs = {"mkfs.xfs", "-q", "-L", kDiskLabel, device};
  } else {
    // No quota features: this kernel cannot mount an ext4 that has them, and
    // volume quotas are enforced by the FUSE layer. No reserved blocks: the
    // agent keeps its own reserve.
    mkfs = {"mkfs.ext4", "-q", "-L", kDiskLabel, "-m", "0", "-O", "^quota,^project", device};
  }
  Log()->info("{}: formatting {} ({})", device, fstype, JoinArgv(mkfs));
  if (Status s = runner_->RunChecked(mkfs, kMkfsTimeout); !s.ok()) return s;
  auto sigs = ProbeSignatures(device);
  if (!sigs.ok()) return sigs.status();
  if (sigs->type != fstype || sigs->uuid.empty() || sigs->label != kDiskLabel) {
    return Status::Error(EIO, "after mkfs, " + device + " shows " + sigs->Describe() +
                                  " instead of a labelled " + fstype + " filesystem");
  }
  auto disk = std::make_unique<AttachedDisk>();
  disk->uuid = sigs->uuid;
  disk->device = device;
  disk->filesystem = fstype;
  disk->mount_path = DiskMountPath(config_, disk->uuid);
  disk->formatted_now = true;
  if (Status s = MountAt(device, fstype, disk->mount_path, false); !s.ok()) return s;
  mounted_at = disk->mount_path;
  for (const char* sub : {kVolumesDir, kTrashDir}) {
    const std::string p = disk->mount_path + "/" + sub;
    if (::mkdir(p.c_str(), std::string(sub) == kTrashDir ? 0700 : 0755) != 0) {
      return Status::FromErrno("mkdir " + p);
    }
  }
  disk->manifest.disk_uuid = disk->uuid;
  disk->manifest.filesystem = fstype;
  disk->manifest.created = NowUtc();
  if (Status s = WriteManifest(disk->mount_path, disk->manifest); !s.ok()) return s;
  struct statvfs sv;
  if (::statvfs(disk->mount_path.c_str(), &sv) != 0)
    return Status::FromErrno("statfs " + disk->mount_path);
  disk->size_bytes = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
  undo.Cancel();
  return disk;
}

void DiskManager::DetachAll() {
  for (auto& disk : disks_) {
    const char* path = disk->mount_path.c_str();
    // The kernel lets go of files it used for the volumes asynchronously (an
    // io_uring ring's teardown runs in a worker after the engine closed it),
    // so an unmount right after the volumes stopped can briefly see EBUSY.
    int err = ::umount2(path, 0) == 0 ? 0 : errno;
    for (int i = 0; err == EBUSY && i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      err = ::umount2(path, 0) == 0 ? 0 : errno;
    }
    if (err != 0) {
      if (err == EBUSY) {
        Log()->warn("disk {}: {} is busy; detaching it lazily", disk->uuid, disk->mount_path);
        if (::umount2(path, MNT_DETACH) != 0) {
          const int detach_err = errno;
          Log()->error("disk {}: could not detach {} lazily: {}; it stays mounted", disk->uuid,
                       disk->mount_path, std::strerror(detach_err));
        }
      } else if (err != EINVAL) {
        Log()->error("disk {}: umount {}: {}", disk->uuid, disk->mount_path, std::strerror(err));
      }
    } else {
      Log()->info("disk {} ({}): unmounted", disk->uuid, disk->device);
    }
  }
  disks_.clear();
  embedded_loop_.Release();
}

}  // namespace localvol::agent
