// DiskManager: finds the dedicated disks the configuration names, decides
// which ones are safe to use, formats blank ones, and mounts them at
// <state_dir>/disks/<uuid>.
//
// Safety rules (each refusal is logged at warn with its reason and listed by
// `localvolctl disk list`). The agent never formats, mounts or wipes
//   * a device the configuration does not name (only its entries are looked
//     at; a pattern is expanded with glob(3));
//   * a device that is not a block device, or is read-only;
//   * the device behind /, /boot or any mounted filesystem, an active swap
//     device, or a device the kernel holds (device-mapper, RAID: an O_EXCL
//     open fails), including in other mount namespaces;
//   * a device with any existing signature (filesystem, partition table,
//     LVM/RAID member, swap...), or without one but with non-zero data in
//     the sampled regions (see FindDataInSampledRegions), unless its own
//     entry says `wipe: true`.
// A disk the agent formatted is recognised as its own, on any node, by its
// filesystem label "localvol" and a manifest (see manifest.h) whose UUID
// matches the filesystem's, read first from a read-only mount that writes
// nothing; it is then mounted as it is, never reformatted.
// Formatting runs mkfs by argument vector. If formatting, mounting or writing
// the first manifest fails, the device is wiped back to blank and the mount
// point removed: no half-made disk is left.
//
// When the configuration names no disk, a sparse file-backed loop disk of
// `embedded_disk_size` at <state_dir>/embedded/disk.img is used like a real one.
//
// Missing disks: <state_dir>/known-disks records, for every disk attached, its
// UUID and the config entry it came from. A known disk whose entry is still
// configured but which is not found at the next start is reported missing
// (an error in the log, state "missing" in `disk list`), and the agent never
// formats a replacement for it: not a new embedded image when disk.img is
// gone, not a blank device found at a plain (non-pattern) entry that held it.
// The other disks are served. To give up a disk for good, remove its line
// from known-disks (or the entry from the config).
//
// Threading: AttachAll() and DetachAll() run on the daemon's main thread at
// start and stop. In between, disks() and refusals() do not change and may be
// read from any thread; an AttachedDisk's manifest is guarded by the
// VolumeManager, which is the only code that changes it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/loop_device.h"
#include "agent/manifest.h"
#include "agent/system.h"
#include "base/status.h"

namespace localvol::agent {

struct AttachedDisk {
  std::string uuid;           // filesystem UUID: the disk's id
  std::string device;         // /dev/...
  std::string configured_as;  // the config entry, or "embedded"
  std::string filesystem;     // xfs or ext4
  std::string mount_path;     // <state_dir>/disks/<uuid>
  uint64_t size_bytes = 0;    // the mounted filesystem's size (statfs)
  uint64_t reserve_bytes = 0;
  bool embedded = false;
  bool formatted_now = false;  // formatted during this start
  DiskManifest manifest;       // as read (or written) at attach; VolumeManager owns changes

  std::string VolumesDir() const { return mount_path + "/" + kVolumesDir; }
  std::string TrashDir() const { return mount_path + "/" + kTrashDir; }
  // Bytes volumes may be given in total: size - reserve.
  uint64_t Allocatable() const {
    return size_bytes > reserve_bytes ? size_bytes - reserve_bytes : 0;
  }
};

struct DiskRefusal {
  std::string configured_as;  // the config entry
  std::string device;         // the device it resolved to, if any
  std::string reason;
};

// A disk the agent knew (known-disks) that is not there.
struct MissingDisk {
  std::string uuid;
  std::string configured_as;  // the config entry it came from
  std::string device;         // the image or device path looked at
  std::string reason;         // what is missing and what to do
};

class DiskManager {
 public:
  // `runner` is borrowed and must outlive the manager.
  DiskManager(Config config, CommandRunner* runner);
  // Does not unmount: call DetachAll() for that.
  ~DiskManager();
  DiskManager(const DiskManager&) = delete;
  DiskManager& operator=(const DiskManager&) = delete;

  // Attaches every configured disk, or the embedded one. A device that is
  // refused or fails is recorded in refusals() and does not stop the others.
  // Fails only when the state directory or the embedded disk cannot be set up.
  Status AttachAll();

  // Unmounts every attached disk (the volumes must be unmounted first). A busy
  // disk is detached lazily. The embedded loop device goes away with it.
  void DetachAll();

  const std::vector<std::unique_ptr<AttachedDisk>>& disks() const { return disks_; }
  const std::vector<DiskRefusal>& refusals() const { return refusals_; }
  const std::vector<MissingDisk>& missing() const { return missing_; }
  const Config& config() const { return config_; }

 private:
  // Attaches one device; returns the reason on refusal or failure.
  Status AttachDevice(const std::string& configured_as, const std::string& path, bool wipe,
                      const Reserve& reserve, bool embedded);
  Status AttachEmbedded();
  // Reports the known disks of still-configured entries that were not
  // attached, then records the attached ones (and those still missing).
  void ReconcileKnownDisks();
  void ReportMissing(const std::string& uuid, const std::string& configured_as,
                     const std::string& device, const std::string& reason);
  // The UUID known-disks records for a plain entry, "" if none or several.
  std::string KnownUuidOf(const std::string& configured_as) const;
  Result<std::unique_ptr<AttachedDisk>> Adopt(const std::string& device, const std::string& uuid,
                                              const std::string& fstype, bool already_mounted);
  Result<std::unique_ptr<AttachedDisk>> Format(const std::string& device, bool wipe_first);
  Status MountAt(const std::string& device, const std::string& fstype, const std::string& target,
                 bool read_only_probe);
  Result<DiskManifest> ReadManifestOf(const std::string& device, const std::string& uuid,
                                      const std::string& fstype);
  void Refuse(const std::string& configured_as, const std::string& device,
              const std::string& reason);

  const Config config_;
  CommandRunner* const runner_;
  std::vector<std::unique_ptr<AttachedDisk>> disks_;
  std::vector<DiskRefusal> refusals_;
  std::vector<MissingDisk> missing_;
  // From <state_dir>/known-disks: config entry -> disk UUID.
  std::vector<std::pair<std::string, std::string>> known_;
  bool known_file_found_ = false;
  LoopDevice embedded_loop_;
};

// <state_dir>/known-disks: one "<uuid> <config entry>" line per known disk.
std::string KnownDisksPath(const Config& config);

// The state_dir/disks/<uuid> mount path for a disk.
std::string DiskMountPath(const Config& config, const std::string& uuid);

}  // namespace localvol::agent
