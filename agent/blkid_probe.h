// Reading what a block device already holds, with libblkid.
//
// Probing only reads the device; it is safe on a mounted device. Every
// signature is reported, not only the first: a filesystem, a partition table
// (also a protective MBR), an LVM physical volume, a RAID member, swap, and
// signatures with bad checksums. Thread-safe (each call owns its probe).
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace localvol::agent {

struct DeviceSignatures {
  // One entry per signature found, e.g. "ext4 at offset 0x438",
  // "partition table gpt at offset 0x200". Empty for a blank device.
  std::vector<std::string> found;
  // The primary filesystem, when blkid can name exactly one.
  std::string type;  // "xfs", "ext4", "LVM2_member", ... or ""
  std::string label;
  std::string uuid;
  bool blank() const { return found.empty(); }
  // "ext4 at offset 0x438, partition table dos at offset 0x1fe".
  std::string Describe() const;
};

// Probes `device`. Fails when it cannot be opened or read.
Result<DeviceSignatures> ProbeSignatures(const std::string& device);

}  // namespace localvol::agent
