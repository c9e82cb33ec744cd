// What a CSI caller may ask of a localvol volume, parsed and checked before
// anything changes: the StorageClass `parameters`, the VolumeAttributesClass
// `mutable_parameters`, and the mount flags of NodePublishVolume.
//
// Parameter keys (one spelling in `parameters` and `mutable_parameters`):
//   inodes                          inode limit, a positive count   (parameters only)
//   disk                            disk id, unique id prefix or device (parameters only)
//   readIOPS writeIOPS              request rate limits, per second (0: none)
//   readBPS writeBPS                byte rate limits, per second; sizes allowed ("100Mi")
//   <limit>Burst                    the burst rate above that limit (e.g. readIOPSBurst)
//   <limit>BurstSeconds             how long the burst lasts, 1..3600 (e.g. writeBPSBurstSeconds)
//   weight                          share of the disk under contention, 1..10000
//   readPassthrough                 auto (default) or off: whether read-only opens may be
//                                   served by kernel FUSE passthrough (parameters only;
//                                   docs/volumes.md, "Read passthrough")
//   csi.storage.k8s.io/*            the external-provisioner's own keys: accepted and
//                                   ignored, except pvc/namespace and pvc/name, which
//                                   name the claim
// Meanings are those of iopath/io_limits.h. A key in both maps takes the value
// of `mutable_parameters`, as the CSI specification asks.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "iopath/io_limits.h"

namespace localvol::agent::csi {

using ParameterMap = std::map<std::string, std::string>;

struct VolumeParameters {
  uint64_t inode_limit = 0;  // 0: the default for the capacity
  std::string disk;          // "": placement by free space
  // Set when any I/O key was given: the limits on top of unlimited, weight 100.
  std::optional<iopath::IoLimits> io_limits;
  std::string pvc;  // "namespace/name" when the provisioner passed both
  // readPassthrough when given: true for auto, false for off.
  std::optional<bool> read_passthrough;
};

// Parses CreateVolume's (or GetCapacity's) maps. Fails with EINVAL naming the
// key and saying what it takes: an unknown key, a malformed or out-of-range
// value, limits that contradict each other, or `inodes`/`disk`/
// `readPassthrough` among the mutable parameters.
Result<VolumeParameters> ParseVolumeParameters(const ParameterMap& parameters,
                                               const ParameterMap& mutable_parameters);

// Applies ControllerModifyVolume's `mutable_parameters` to `*limits`: only the
// keys given change. Fails with EINVAL as above, leaving `*limits` unchanged.
Status ApplyMutableParameters(const ParameterMap& mutable_parameters, iopath::IoLimits* limits);

// The mount(2) flags of a read-only-capable bind remount for
// NodePublishVolume's `volume_capability.mount.mount_flags`: the flags that
// make sense on a bind (ro, rw, nosuid, suid, nodev, dev, noexec, exec,
// noatime, atime, nodiratime, diratime, relatime, norelatime, strictatime,
// and "bind"/"defaults", which change nothing), on top of `base` (the flags
// of the volume's own mount, MS_* values), plus MS_RDONLY when `readonly`.
// Anything else (a filesystem option such as uid=, an unknown word) fails
// with EINVAL naming it.
Result<unsigned long> BindRemountFlags(const std::vector<std::string>& mount_flags, bool readonly,
                                       unsigned long base);

}  // namespace localvol::agent::csi
