#include "tests/support/janitor.h"

#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "base/directory.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

bool AllDigits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// The owner pid encoded in a TempDir name ("lv<tag>-<test>-<pid>-<n>-XXXXXX"),
// or 0 if `name` is not one.
pid_t OwnerPid(const std::string& name) {
  if (name.rfind("lv", 0) != 0) return 0;
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '-') {
      parts.push_back(name.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() < 5 || parts.back().size() != 6) return 0;
  const std::string& pid = parts[parts.size() - 3];
  if (!AllDigits(pid) || !AllDigits(parts[parts.size() - 2])) return 0;
  return static_cast<pid_t>(std::strtol(pid.c_str(), nullptr, 10));
}

// True unless `pid` is gone or a zombie (killed, not yet reaped).
bool Alive(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  size_t paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') return false;
  return true;
}

void CleanOne(const std::string& dir) {
  // Mounts below it, deepest first.
  std::vector<std::string> mounts;
  for (const auto& e : ReadMountTable()) {
    if (e.mount_point.rfind(dir + "/", 0) == 0) mounts.push_back(e.mount_point);
  }
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) (void)LazyUnmountAll(*it);
  // Loop devices backed by an image inside it.
  if (auto names = ListDirectory("/sys/block"); names.ok()) {
    for (const auto& name : *names) {
      if (name.rfind("loop", 0) != 0) continue;
      std::ifstream in("/sys/block/" + name + "/loop/backing_file");
      std::string backing;
      if (!std::getline(in, backing)) continue;
      if (backing.rfind(dir + "/", 0) == 0)
        (void)RunCommand({"losetup", "-d", "/dev/" + name}, 30s);
    }
  }
  (void)RemoveTree(dir);
}

}  // namespace

std::vector<std::string> CleanupDeadTestDirsNow() {
  std::vector<std::string> stale;
  auto names = ListDirectory("/tmp");
  if (!names.ok()) return stale;
  for (const auto& name : *names) {
    pid_t pid = OwnerPid(name);
    if (pid <= 0 || Alive(pid)) continue;
    stale.push_back("/tmp/" + name);
  }
  for (const auto& dir : stale) CleanOne(dir);
  return stale;
}

void CleanupLeftoversOfDeadTests() {
  static std::once_flag once;
  std::call_once(once, [] { (void)CleanupDeadTestDirsNow(); });
}

}  // namespace localvol::testing
