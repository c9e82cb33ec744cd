// Space accounting as the kernel and du(1) see it. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace localvol::testing {

struct SpaceInfo {
  uint64_t frsize = 0;
  uint64_t blocks = 0, bfree = 0, bavail = 0;
  uint64_t files = 0, ffree = 0;
  uint64_t capacity() const { return blocks * frsize; }
  uint64_t used_bytes() const { return (blocks - bfree) * frsize; }
  uint64_t free_bytes() const { return bfree * frsize; }
  uint64_t avail_bytes() const { return bavail * frsize; }
  uint64_t used_inodes() const { return files - ffree; }
  std::string ToString() const;
};

// statvfs(path).
Result<SpaceInfo> StatFs(const std::string& path);

// `du -B1 -s path`: allocated bytes of the tree, hard links counted once.
Result<uint64_t> DuBytes(const std::string& path);

// st_blocks * 512 of one file.
Result<uint64_t> AllocatedBytes(const std::string& path);

// True if a and b agree within 1% of the larger plus 1 MiB.
bool UsageAgrees(uint64_t a, uint64_t b);

inline constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024, kGiB = 1024 * 1024 * 1024;

}  // namespace localvol::testing
