// The two directories of a volume, made so that a crash or a hostile path
// cannot leave them wrong:
//
//  * Its backing root <disk>/volumes/<name>. BuildVolumeRoot() makes it
//    complete under a temporary name (".new-<name>.<random>": mode 0777, owned
//    by the agent, the XFS extent-size hint set, fsynced) and renames it into
//    place, so at its real name it is either complete or absent. A crash
//    leaves at most a temporary directory, which IsBuildLeftover() names for
//    the start-up clean-up.
//  * Its publish path <publish_dir>/<name>. OpenPublishPath() makes or opens
//    it without following symlinks, from an fd of the publish directory, and
//    accepts only a plain directory owned by the agent, so a symlink planted
//    there cannot point the mount elsewhere.
//
// Plain functions; thread-safe.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"

namespace localvol::agent {

// Prefix of the temporary names BuildVolumeRoot() uses in a volumes directory.
inline constexpr const char* kBuildPrefix = ".new-";

// Builds the backing root `volumes_dir`/`name` as described above. EEXIST if
// it exists already; on any other failure nothing is left behind (a crash
// leaves only a temporary directory). Crash points: "volume-root-after-mkdir",
// "volume-root-before-rename".
Status BuildVolumeRoot(const std::string& volumes_dir, const std::string& name);

// True for a name BuildVolumeRoot() uses before the rename.
bool IsBuildLeftover(const std::string& name);

// Finishes the backing root at `path` if it was never served (no volume has
// stored its usage state there yet, so nobody can have chosen its mode or
// owner): mode 0777, owned by the agent. A root that was served is left as
// its users made it. Returns what it changed ("" if nothing).
Result<std::string> RepairNeverServedRoot(const std::string& path);

// Makes (mode 0755) or opens <publish_dir>/<name> without following a
// symlink at any step; `publish_dir` must be canonical. Returns an O_PATH fd
// of it. Fails with EBUSY, saying what is there, when it is not a directory
// owned by the agent (a symlink, a file, someone else's directory).
Result<UniqueFd> OpenPublishPath(const std::string& publish_dir, const std::string& name);

// Removes the empty directories in `publish_dir` that a delete interrupted
// between its unmount and its rmdir left: only entries named like a volume,
// not in `catalogue`, that are plain directories owned by the agent, on the
// publish directory's own filesystem (not a mount) and empty. Returns their
// names.
std::vector<std::string> RemoveOrphanPublishDirs(const std::string& publish_dir,
                                                 const std::set<std::string>& catalogue);

}  // namespace localvol::agent
