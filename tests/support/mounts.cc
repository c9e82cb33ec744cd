#include "tests/support/mounts.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>

#include <thread>

namespace localvol::testing {
namespace {

// Canonical form of `path` without resolving its last component, which may be
// a dead FUSE mount (ENOTCONN).
std::string Canonical(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  char buf[PATH_MAX];
  if (::realpath(dir.c_str(), buf) == nullptr) return p;
  std::string d = buf;
  return d == "/" ? "/" + base : d + "/" + base;
}

}  // namespace

std::optional<MountInfo> FindMount(const std::string& path) { return FindMountAt(Canonical(path)); }

bool IsMountedAs(const std::string& path, const std::string& fstype) {
  auto e = FindMount(path);
  return e && e->fstype == fstype;
}

bool IsMountPoint(const std::string& path) { return FindMount(path).has_value(); }

bool WaitForMount(const std::string& path, const std::string& fstype,
                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (IsMountedAs(path, fstype)) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status LazyUnmountAll(const std::string& path) {
  const std::string p = Canonical(path);
  for (int i = 0; i < 16 && IsMountPoint(p); ++i) {
    if (::umount2(p.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      return Status::FromErrno("umount2 MNT_DETACH " + p);
    }
  }
  if (IsMountPoint(p)) return Status::Error(EBUSY, "still mounted: " + p);
  return Status::Ok();
}

}  // namespace localvol::testing
