#include "base/mount_table.h"

#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace localvol {
std::string UnescapeProcPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      if (std::sscanf(s.c_str() + i + 1, "%3o", &v) == 1) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

namespace {

std::vector<MountInfo> ParseMountInfo(std::istream& in) {
  std::vector<MountInfo> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, mount_point, opts, field;
    f >> id >> parent >> devno >> root >> mount_point >> opts;
    // Optional fields end with "-", then fstype and source.
    while (f >> field && field != "-") {
    }
    MountInfo m;
    f >> m.fstype >> m.source;
    unsigned maj = 0, min = 0;
    if (std::sscanf(devno.c_str(), "%u:%u", &maj, &min) == 2) m.dev = makedev(maj, min);
    m.root = UnescapeProcPath(root);
    m.mount_point = UnescapeProcPath(mount_point);
    m.source = UnescapeProcPath(m.source);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

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
