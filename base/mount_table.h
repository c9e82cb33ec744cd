// The kernel's mount table as /proc/<pid>/mountinfo gives it.
//
// Reading it never touches the mounts themselves, so a dead FUSE mount (whose
// server is gone) cannot block it. Functions, no shared state; thread-safe.
#pragma once

#include <sys/types.h>

#include <istream>
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
  std::string source;         // "/dev/loop3", "localvol:<name>"
  std::string mount_options;  // this mount's: "rw,nosuid,nodev,relatime"
  std::string super_options;  // the filesystem's: "rw,user_id=0,default_permissions"
};

// Undoes the octal escapes procfs uses in paths ("\040" for a space, "\134"
// for a backslash), as in mountinfo and /proc/swaps. A backslash not followed
// by three octal digits is kept as it is.
std::string UnescapeProcPath(const std::string& s);

// The lines of a mountinfo file, in order. A line with fewer fields than
// mountinfo has is skipped.
std::vector<MountInfo> ParseMountInfo(std::istream& in);

// /proc/self/mountinfo, in order; empty if it cannot be read.
std::vector<MountInfo> ReadMountTable();
// The same for another process's mount namespace (/proc/<pid>/mountinfo).
std::vector<MountInfo> ReadMountTableOf(pid_t pid);
// The topmost mount at exactly `path` (which must be canonical), if any.
std::optional<MountInfo> FindMountAt(const std::string& path);

}  // namespace localvol
