// Cleans up what an earlier, killed test process left behind (a ctest timeout
// SIGKILLs a test before its destructors run).
//
// Only resources named by this suite's fixtures are considered: TempDirs
// directly under /tmp, named "lv<tag>-<test>-<pid>-<n>-XXXXXX" (lvdisk, lvmnt,
// lvlog, ...), whose <pid> is no longer alive. For
// each: mounts below it are lazily detached, loop devices whose backing file
// lies inside it are detached, and the directory is removed.
// Thread-safe; runs at most once per process.
#pragma once

#include <string>
#include <vector>

namespace localvol::testing {

void CleanupLeftoversOfDeadTests();

// The same, every time it is called. Returns the directories it cleaned.
std::vector<std::string> CleanupDeadTestDirsNow();

}  // namespace localvol::testing
