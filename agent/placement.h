// Placement: which disk a new volume goes to.
//
// A pure function of the disks' state and the request, so the rule is
// unit-tested without disks (agent/placement_test.cc). The rule:
//   * a request that names a disk gets that disk (by id, device path, or a
//     unique id prefix) if it can serve volumes and has the room;
//   * otherwise the disk with the most unallocated bytes among those that can
//     serve volumes and have the room; ties go to the first in the list
//     (the order the disks were attached, which is deterministic).
// Only attached disks are candidates: a missing or refused disk is not one,
// and naming it fails like naming an unknown disk.
// Functions only; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace localvol::agent {

// One attached disk as placement sees it.
struct PlacementDisk {
  std::string uuid;    // the disk's id
  std::string device;  // /dev/...
  // Allocatable bytes not yet given to a volume (nor held by the trash).
  uint64_t free_bytes = 0;
  // Non-empty when the disk cannot serve volumes (its I/O engine failed): why.
  std::string unusable;
};

struct PlacementRequest {
  uint64_t capacity_bytes = 0;
  std::string disk;  // "": any disk; else a disk id, unique id prefix or device
};

// The index in `disks` of the disk the volume goes to. Fails, saying what to
// do, with ENOSPC (no disk attached, or none with the room), ENOENT (the
// named disk is not attached), EINVAL (the id prefix is ambiguous) or EBUSY
// (the named disk, or every disk, cannot serve volumes).
Result<size_t> PlaceVolume(const std::vector<PlacementDisk>& disks,
                           const PlacementRequest& request);

}  // namespace localvol::agent
