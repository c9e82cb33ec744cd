// Looking up mounts and unmounting, for tests. The mount table itself is
// read with base/mount_table.h (ReadMountTable), the agent's own parser.
// Thread-safe (reads /proc).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "base/mount_table.h"
#include "base/status.h"

namespace localvol::testing {

// The topmost mount whose mount point is exactly `path` (made absolute and
// canonical as far as possible without touching a dead FUSE mount).
std::optional<MountInfo> FindMount(const std::string& path);
bool IsMountedAs(const std::string& path, const std::string& fstype);
// True if anything is mounted at `path`.
bool IsMountPoint(const std::string& path);

// Waits up to `timeout` until `path` is mounted with `fstype`.
bool WaitForMount(const std::string& path, const std::string& fstype,
                  std::chrono::milliseconds timeout);

// umount2(path, MNT_DETACH) repeated until nothing is mounted at `path`.
// Only ever touches mounts whose mount point is exactly `path`.
Status LazyUnmountAll(const std::string& path);

}  // namespace localvol::testing
