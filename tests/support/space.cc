#include "tests/support/space.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdlib>

#include "tests/support/process.h"

namespace localvol::testing {

std::string SpaceInfo::ToString() const {
  return "frsize=" + std::to_string(frsize) + " blocks=" + std::to_string(blocks) +
         " bfree=" + std::to_string(bfree) + " bavail=" + std::to_string(bavail) +
         " files=" + std::to_string(files) + " ffree=" + std::to_string(ffree) + " (capacity " +
         std::to_string(capacity()) + ", used " + std::to_string(used_bytes()) + ")";
}

Result<SpaceInfo> StatFs(const std::string& path) {
  struct statvfs sv {};
  if (::statvfs(path.c_str(), &sv) != 0) return Status::FromErrno("statvfs " + path);
  SpaceInfo s;
  s.frsize = sv.f_frsize;
  s.blocks = sv.f_blocks;
  s.bfree = sv.f_bfree;
  s.bavail = sv.f_bavail;
  s.files = sv.f_files;
  s.ffree = sv.f_ffree;
  return s;
}

Result<uint64_t> DuBytes(const std::string& path) {
  CommandResult r = RunCommand({"du", "-B1", "-s", path}, 60s);
  if (!r.ok()) return Status::Error(EIO, "du -B1 -s " + path + ": " + r.Summary());
  return std::strtoull(r.out.c_str(), nullptr, 10);
}

Result<uint64_t> AllocatedBytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

bool UsageAgrees(uint64_t a, uint64_t b) {
  uint64_t hi = std::max(a, b), lo = std::min(a, b);
  return hi - lo <= hi / 100 + kMiB;
}

}  // namespace localvol::testing
