#include "tests/support/temp_dir.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/mounts.h"
#include "tests/support/sys.h"

namespace localvol::testing {

Result<TempDir> TempDir::Create(const std::string& tag, const std::string& base) {
  std::string templ = base + "/" + UniqueName(tag) + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return Status::FromErrno("mkdtemp " + templ);
  TempDir d;
  d.path_ = buf.data();
  d.owner_ = ::getpid();
  if (::chmod(d.path_.c_str(), 0755) != 0) return Status::FromErrno("chmod " + d.path_);
  return d;
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)), owner_(other.owner_) {
  other.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty() && owner_ == ::getpid()) (void)RemoveTree(path_);
    path_ = std::move(other.path_);
    owner_ = other.owner_;
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() {
  if (!path_.empty() && owner_ == ::getpid()) (void)RemoveTree(path_);
}

Result<std::string> TempDir::MakeSubdir(const std::string& name, unsigned mode) const {
  std::string p = Sub(name);
  if (::mkdir(p.c_str(), mode) != 0) return Status::FromErrno("mkdir " + p);
  if (::chmod(p.c_str(), mode) != 0) return Status::FromErrno("chmod " + p);
  return p;
}

namespace {
thread_local int g_first_err = 0;
int RemoveOne(const char* path, const struct stat* sb, int type, struct FTW*) {
  int r = (type == FTW_DP || type == FTW_D) ? ::rmdir(path) : ::unlink(path);
  if (r != 0 && g_first_err == 0) g_first_err = errno;
  return 0;
}
}  // namespace

Status RemoveTree(const std::string& path) {
  if (path.empty() || path == "/")
    return Status::Error(EINVAL, "refusing to remove '" + path + "'");
  // Detach anything still mounted below `path` (deepest first).
  std::vector<std::string> below;
  for (const auto& e : ReadMountTable()) {
    if (e.mount_point.rfind(path + "/", 0) == 0) below.push_back(e.mount_point);
  }
  for (auto it = below.rbegin(); it != below.rend(); ++it) (void)LazyUnmountAll(*it);
  g_first_err = 0;
  // FTW_MOUNT: stay on this filesystem; FTW_PHYS: never follow symlinks.
  ::nftw(path.c_str(), RemoveOne, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (g_first_err != 0) return Status::Error(g_first_err, "remove tree " + path);
  return Status::Ok();
}

}  // namespace localvol::testing
