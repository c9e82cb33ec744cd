// Usage persistence and recovery for a volume's backing directory.
//
// A volume's usage lives in memory while it is mounted. So that a clean
// restart is exact without a rescan, Unmount stores it in the extended
// attribute `trusted.localvol.state` of the backing root ("clean"). Mount
// marks the state "in use" (durably, before any write is admitted); finding
// it "in use" at the next mount means the server died, and the usage is then
// rebuilt by walking the tree. trusted.* attributes are visible only to
// CAP_SYS_ADMIN, and the FUSE layer hides this one from the volume's users.
//
// Functions, no shared state; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "base/status.h"

namespace localvol::fuse {

inline constexpr std::string_view kStateXattr = "trusted.localvol.state";
// Every xattr under this prefix belongs to localvol, not to the volume's users.
inline constexpr std::string_view kReservedXattrPrefix = "trusted.localvol.";

struct UsageFigures {
  uint64_t used_bytes = 0;   // allocated bytes, root directory included
  uint64_t used_inodes = 0;  // inodes below the root
  bool operator==(const UsageFigures&) const = default;
};

// The usage a clean unmount stored, or nullopt when there is none or the last
// server did not shut down cleanly. `dir_fd` is the backing root opened O_RDONLY.
Result<std::optional<UsageFigures>> ReadCleanUsage(int dir_fd);

// Durably marks the state "in use": a crash from now on forces a rescan.
Status MarkInUse(int dir_fd);

// Durably stores `usage` as the clean state.
Status StoreCleanUsage(int dir_fd, const UsageFigures& usage);

// Walks the tree below `dir_fd` without following symlinks and sums allocated
// bytes (st_blocks * 512, each inode once however many links it has) and
// inodes. Fails on the first unreadable entry, naming it.
Result<UsageFigures> ScanUsage(int dir_fd);

// On XFS, sets an inherited one-block extent size hint on the backing root.
// That turns off delayed allocation and speculative EOF preallocation for
// everything created below it, so a file's allocation never runs ahead of
// what quota admitted (a growing file would otherwise show preallocation
// beyond EOF; docs/volumes.md). A no-op on other filesystems.
Status DisableSpeculativePreallocation(int dir_fd);

}  // namespace localvol::fuse
