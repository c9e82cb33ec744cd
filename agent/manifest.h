// DiskManifest: the truth a localvol disk carries about itself.
//
// Each disk the agent formats holds, at its root:
//   localvol-manifest.yaml   this manifest: the disk's UUID and its volumes
//   volumes/<name>/          one backing directory per volume
//   trash/                   deleted volumes whose data is still being removed
// The manifest is rewritten atomically (temporary file, fsync, rename, fsync
// of the directory), so after a crash it is either the old or the new one.
// The agent's catalogue is rebuilt from these files at every start, so losing
// the state directory loses nothing.
// Value types and pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "iopath/io_limits.h"

namespace localvol::agent {

inline constexpr const char* kManifestFile = "localvol-manifest.yaml";
inline constexpr const char* kVolumesDir = "volumes";
inline constexpr const char* kTrashDir = "trash";
// Filesystem label of every disk the agent formats (XFS allows 12 bytes).
inline constexpr const char* kDiskLabel = "localvol";

struct VolumeRecord {
  std::string name;
  uint64_t capacity_bytes = 0;
  uint64_t inode_limit = 0;
  // True when the inode limit was not chosen by the user: it then follows the
  // capacity (fuse::DefaultInodeLimit) on a resize.
  bool default_inodes = true;
  std::string created;  // UTC, ISO 8601
  // The volume's I/O limits and fair-share weight on this disk. Stored as an
  // `io_limits:` map holding only the settings that differ from unlimited
  // with weight 100 (iopath::IoLimitSettings, keys as in IoLimitKeys()); no
  // map means exactly that default, so manifests written before limits
  // existed read as unlimited.
  iopath::IoLimits io_limits;
  // Set when the volume was created through the CSI driver (agent/csi/): its
  // name is then the PersistentVolume's, and `pvc` the claim it was made for
  // ("namespace/name"; "" when the provisioner did not say). Stored as
  // `csi: true` and `pvc:` only when set.
  bool csi = false;
  std::string pvc;
  // Kernel FUSE passthrough for the volume's read-only opens, where the agent
  // allows it (config read_passthrough) and the kernel offers it. Stored as
  // `read_passthrough: off` only when false.
  bool read_passthrough = true;
};

struct DiskManifest {
  static constexpr int kFormat = 1;
  std::string disk_uuid;   // must match the filesystem UUID
  std::string filesystem;  // xfs or ext4
  std::string created;     // UTC, ISO 8601
  std::string host;        // the node that last wrote it
  std::vector<VolumeRecord> volumes;

  const VolumeRecord* Find(const std::string& name) const;
  VolumeRecord* Find(const std::string& name);
};

// Serialises/parses the YAML form. Parse fails with EINVAL naming the problem
// (for a volume's I/O limits: the volume and the setting).
std::string FormatManifest(const DiskManifest& manifest);
Result<DiskManifest> ParseManifest(const std::string& text, const std::string& source);

// <disk_root>/localvol-manifest.yaml. Read fails with ENOENT when absent.
std::string ManifestPath(const std::string& disk_root);
Result<DiskManifest> ReadManifest(const std::string& disk_root);
Status WriteManifest(const std::string& disk_root, const DiskManifest& manifest);
// Removes the temporary files a crash during WriteManifest left in
// `disk_root`: exactly the names localvol-manifest.yaml.tmp.<pid>, nothing
// else. Returns the names removed; a file that cannot be removed is skipped
// (and named in the log by the caller's next attempt).
std::vector<std::string> RemoveStaleManifestTemps(const std::string& disk_root);

// The current time, UTC, ISO 8601 ("2024-05-01T12:00:00Z").
std::string NowUtc();

}  // namespace localvol::agent
