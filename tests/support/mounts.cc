#include "tests/support/mounts.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace localvol::testing {
namespace {

std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool octal = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') octal = false;
        v = v * 8 + (c - '0');
      }
      if (octal) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

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

std::vector<MountEntry> ReadMountInfo() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    std::istringstream ls(line);
    std::string id, parent, dev, root, mp, opts, tok;
    ls >> id >> parent >> dev >> root >> mp >> opts;
    while (ls >> tok && tok != "-") {
    }
    MountEntry e;
    std::string super;
    ls >> e.fstype >> e.source >> super;
    e.mount_point = Unescape(mp);
    e.source = Unescape(e.source);
    e.options = opts + "," + super;
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<MountEntry> FindMount(const std::string& path) {
  const std::string want = Canonical(path);
  std::optional<MountEntry> found;
  for (auto& e : ReadMountInfo()) {
    if (e.mount_point == want) found = e;  // later entries are mounted on top
  }
  return found;
}

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
