#include "agent/placement.h"

#include <algorithm>

#include "base/size.h"

namespace localvol::agent {
namespace {

// The disk `request.disk` names: an exact id or device, else the one disk
// whose id starts with it.
Result<size_t> FindNamedDisk(const std::vector<PlacementDisk>& disks, const std::string& name) {
  size_t match = 0;
  int matches = 0;
  for (size_t i = 0; i < disks.size(); ++i) {
    if (disks[i].uuid == name || disks[i].device == name) return i;
    if (disks[i].uuid.rfind(name, 0) == 0) {
      match = i;
      ++matches;
    }
  }
  if (matches == 0) {
    return Status::Error(ENOENT, "no ready disk '" + name + "'; see 'localvolctl disk list'");
  }
  if (matches > 1) {
    return Status::Error(
        EINVAL, "disk id prefix '" + name + "' matches several disks; give more of the id");
  }
  return match;
}

Result<size_t> PlaceOnNamedDisk(const std::vector<PlacementDisk>& disks,
                                const PlacementRequest& request) {
  auto found = FindNamedDisk(disks, request.disk);
  if (!found.ok()) return found;
  const PlacementDisk& d = disks[*found];
  if (!d.unusable.empty()) {
    return Status::Error(
        EBUSY, "disk " + d.uuid + " cannot serve volumes: " + d.unusable + "; choose another disk");
  }
  if (request.capacity_bytes > d.free_bytes) {
    return Status::Error(ENOSPC, "disk " + d.uuid + " has " + FormatSize(d.free_bytes) +
                                     " unallocated, less than the " +
                                     FormatSize(request.capacity_bytes) +
                                     " asked for; choose a smaller size or another disk");
  }
  return found;
}

Result<size_t> PlaceOnAnyDisk(const std::vector<PlacementDisk>& disks,
                              const PlacementRequest& request) {
  bool found = false;
  size_t best = 0;
  uint64_t largest_free = 0;
  size_t unusable_count = 0;
  const std::string* unusable = nullptr;
  for (size_t i = 0; i < disks.size(); ++i) {
    const PlacementDisk& d = disks[i];
    if (!d.unusable.empty()) {
      ++unusable_count;
      unusable = &d.unusable;
      continue;
    }
    largest_free = std::max(largest_free, d.free_bytes);
    // Strictly more: of equals, the first stays.
    if (d.free_bytes >= request.capacity_bytes &&
        (!found || d.free_bytes > disks[best].free_bytes)) {
      best = i;
      found = true;
    }
  }
  if (found) return best;
  if (unusable_count == disks.size()) {
    return Status::Error(EBUSY,
                         "no disk can serve volumes: " + *unusable + "; see the localvold log");
  }
  return Status::Error(ENOSPC, "no disk has " + FormatSize(request.capacity_bytes) +
                                   " unallocated (the most any disk has is " +
                                   FormatSize(largest_free) +
                                   "); choose a smaller size, delete volumes or add a disk");
}

}  // namespace

Result<size_t> PlaceVolume(const std::vector<PlacementDisk>& disks,
                           const PlacementRequest& request) {
  if (disks.empty()) {
    return Status::Error(ENOSPC,
                         "no disk is ready; check 'localvolctl disk list' for refused "
                         "devices and the 'disks' list of the configuration");
  }
  return request.disk.empty() ? PlaceOnAnyDisk(disks, request) : PlaceOnNamedDisk(disks, request);
}

}  // namespace localvol::agent
