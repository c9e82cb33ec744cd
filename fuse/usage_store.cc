#include "fuse/usage_store.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "base/directory.h"
#include "base/unique_fd.h"

namespace localvol::fuse {
namespace {

constexpr int kStateVersion = 1;

Status WriteState(int dir_fd, bool clean, const UsageFigures& usage) {
  char value[128];
  int n =
      std::snprintf(value, sizeof value, "version=%d clean=%d used_bytes=%llu used_inodes=%llu",
                    kStateVersion, clean ? 1 : 0, static_cast<unsigned long long>(usage.used_bytes),
                    static_cast<unsigned long long>(usage.used_inodes));
  if (fsetxattr(dir_fd, std::string(kStateXattr).c_str(), value, n, 0) != 0) {
    return Status::FromErrno("store volume state in xattr " + std::string(kStateXattr));
  }
  // The xattr lives in the root inode; fsync makes it durable.
  if (RetryEintr([&] { return fsync(dir_fd); }) != 0) {
    return Status::FromErrno("fsync volume root after storing state");
  }
  return Status::Ok();
}

class Scanner {
 public:
  Status ScanDir(int dir_fd, const std::string& path) {
    auto names = ListDirectoryAt(dir_fd);
    if (!names.ok()) return Status::Error(names.err(), "list " + path);
    Status status;
    for (const auto& name : *names) {
      const std::string child_path = path + "/" + name;
      struct stat st;
      if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        status = Status::FromErrno("stat " + child_path);
        break;
      }
      if (st.st_nlink > 1 && !S_ISDIR(st.st_mode)) {
        if (!seen_links_.emplace(st.st_dev, st.st_ino).second) continue;  // counted already
      }
      usage_.used_bytes += static_cast<uint64_t>(st.st_blocks) * 512;
      usage_.used_inodes += 1;
      if (S_ISDIR(st.st_mode)) {
        auto child = OpenAt(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (!child.ok()) {
          status = Status::Error(child.err(), "open directory " + child_path);
          break;
        }
        status = ScanDir(child->get(), child_path);
        if (!status.ok()) break;
      }
    }
    return status;
  }

  UsageFigures usage_;
  std::set<std::pair<dev_t, ino_t>> seen_links_;
};

}  // namespace

Result<std::optional<UsageFigures>> ReadCleanUsage(int dir_fd) {
  char value[256];
  ssize_t n = fgetxattr(dir_fd, std::string(kStateXattr).c_str(), value, sizeof value - 1);
  if (n < 0) {
    if (errno == ENODATA) return std::optional<UsageFigures>();
    return Status::FromErrno("read volume state xattr " + std::string(kStateXattr));
  }
  value[n] = '\0';
  int version = 0, clean = 0;
  unsigned long long bytes = 0, inodes = 0;
  if (std::sscanf(value, "version=%d clean=%d used_bytes=%llu used_inodes=%llu", &version, &clean,
                  &bytes, &inodes) != 4 ||
      version != kStateVersion) {
    // Unknown or damaged: the rescan is always correct, so fall back to it.
    return std::optional<UsageFigures>();
  }
  if (clean != 1) return std::optional<UsageFigures>();
  return std::optional<UsageFigures>(UsageFigures{bytes, inodes});
}

Status MarkInUse(int dir_fd) { return WriteState(dir_fd, /*clean=*/false, UsageFigures{}); }

Status StoreCleanUsage(int dir_fd, const UsageFigures& usage) {
  return WriteState(dir_fd, /*clean=*/true, usage);
}

Result<UsageFigures> ScanUsage(int dir_fd) {
  struct stat root;
  if (fstat(dir_fd, &root) != 0) return Status::FromErrno("stat volume root");
  Scanner scanner;
  scanner.usage_.used_bytes = static_cast<uint64_t>(root.st_blocks) * 512;
  Status s = scanner.ScanDir(dir_fd, ".");
  if (!s.ok()) return s;
  return scanner.usage_;
}

Status DisableSpeculativePreallocation(int dir_fd) {
  struct statfs fs;
  if (fstatfs(dir_fd, &fs) != 0) return Status::FromErrno("statfs volume root");
  if (fs.f_type != XFS_SUPER_MAGIC) return Status::Ok();
  struct fsxattr attr;
  if (ioctl(dir_fd, FS_IOC_FSGETXATTR, &attr) != 0) {
    return Status::FromErrno("FS_IOC_FSGETXATTR on volume root");
  }
  const uint32_t block = static_cast<uint32_t>(fs.f_bsize);
  if ((attr.fsx_xflags & FS_XFLAG_EXTSZINHERIT) && attr.fsx_extsize == block) return Status::Ok();
  attr.fsx_xflags |= FS_XFLAG_EXTSZINHERIT;
  attr.fsx_extsize = block;
  if (ioctl(dir_fd, FS_IOC_FSSETXATTR, &attr) != 0) {
    return Status::FromErrno("set XFS extent size hint on volume root");
  }
  return Status::Ok();
}

}  // namespace localvol::fuse
