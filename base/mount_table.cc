#include "base/mount_table.h"

#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace localvol {
namespace {

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

}  // namespace

std::string UnescapeProcPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) &&
        IsOctal(s[i + 3])) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<MountInfo> ParseMountInfo(std::istream& in) {
  std::vector<MountInfo> out;
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    std::istringstream f(line);
    std::string id, parent, devno, root, mount_point, field;
    MountInfo m;
    if (!(f >> id >> parent >> devno >> root >> mount_point >> m.mount_options)) continue;
    // Optional fields end with "-", then fstype, source and super options.
    while (f >> field && field != "-") {
    }
    if (!(f >> m.fstype >> m.source)) continue;
    f >> m.super_options;
    unsigned maj = 0, min = 0;
    if (std::sscanf(devno.c_str(), "%u:%u", &maj, &min) == 2) m.dev = makedev(maj, min);
    m.root = UnescapeProcPath(root);
    m.mount_point = UnescapeProcPath(mount_point);
    m.source = UnescapeProcPath(m.source);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<MountInfo> ReadMountTable() {
  std::ifstream in("/proc/self/mountinfo");
  return ParseMountInfo(in);
}

std::vector<MountInfo> ReadMountTableOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/mountinfo");
  return ParseMountInfo(in);
}

std::optional<MountInfo> FindMountAt(const std::string& path) {
  std::optional<MountInfo> found;
  for (auto& m : ReadMountTable()) {
    if (m.mount_point == path) found = std::move(m);
  }
  return found;
}

}  // namespace localvol
