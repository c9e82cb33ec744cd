// The kernel's mount table as /proc/<pid>/mountinfo gives it.
//
// Reading it never touches the mounts themselves, so a dead FUSE mount (whose
// server is gone) cannot block it. Functions, no shared state; thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace localvol {

// One line of /proc/<pid>/mountinfo.
struct MountInfo {
  dev_t dev = 0;            // st_dev of the mounted filesystem
  std::string root;         // the path inside the filesystem that is mounted
  std::string mount_point;  // unescaped
  std::string fstype;
  std::string source;  // "/dev/loop3", "localvol:<name>"
};

// Undoes the octal escapes procfs uses in paths ("\040" for a space), as in
// mountinfo and /proc/swaps.
std::string UnescapeProcPath(const std::string& s);

// /proc/self/mountinfo, in order; empty if it cannot be read.
std::vector<MountInfo> ReadMountTable();
// The same for another process's mount namespace (/proc/<pid>/mountinfo).
std::vector<MountInfo> ReadMountTableOf(pid_t pid);
// The topmost mount at exactly `path` (which must be canonical), if any.
std::optional<MountInfo> FindMountAt(const std::string& path);

}  // namespace localvol
