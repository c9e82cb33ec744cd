#include "agent/volume_dirs.h"

#include <fcntl.h>
#include <limits.h>
#include <spdlog/fmt/fmt.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "agent/system.h"
#include "agent/volume_manager.h"
#include "base/directory.h"
#include "base/logging.h"
#include "base/scope_guard.h"
#include "fuse/usage_store.h"

namespace localvol::agent {
namespace {

// Pods run as any uid: the volume root is writable by all, as on a fresh disk
// handed to a pod; default_permissions enforces modes below it.
constexpr mode_t kRootMode = 0777;

std::string Random16() {
  std::random_device rd;
  const unsigned hi = rd();
  const unsigned lo = rd();
  return fmt::format("{:08x}{:08x}", hi, lo);
}

// Mode, owner and extent-size hint of a volume root open at `fd`.
Status FinishRoot(int fd, const std::string& what) {
  if (::fchown(fd, ::geteuid(), ::getegid()) != 0) return Status::FromErrno("chown " + what);
  if (::fchmod(fd, kRootMode) != 0) return Status::FromErrno("chmod " + what);
  return fuse::DisableSpeculativePreallocation(fd);
}

}  // namespace

bool IsBuildLeftover(const std::string& name) { return name.rfind(kBuildPrefix, 0) == 0; }

Status BuildVolumeRoot(const std::string& volumes_dir, const std::string& name) {
  auto dir = OpenAt(AT_FDCWD, volumes_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dir.ok()) return Status::Error(dir.err(), "open " + volumes_dir);
  struct stat st;
  if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return Status::Error(EEXIST, volumes_dir + "/" + name + " exists");
  }
  const std::string tmp = std::string(kBuildPrefix) + name + "." + Random16();
  const std::string tmp_path = volumes_dir + "/" + tmp;
  // 0700 until finished: nobody can use a half-made root.
  if (::mkdirat(dir->get(), tmp.c_str(), 0700) != 0) return Status::FromErrno("mkdir " + tmp_path);
  ScopeGuard remove_tmp([&] {
    if (::unlinkat(dir->get(), tmp.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      const int err = errno;
      GetLogger("volume")->warn("could not remove {} after the failed build: {}", tmp_path,
                                std::strerror(err));
    }
  });
  CrashPoint("volume-root-after-mkdir");
  auto root = OpenAt(dir->get(), tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!root.ok()) return Status::Error(root.err(), "open " + tmp_path);
  if (Status s = FinishRoot(root->get(), tmp_path); !s.ok()) return s;
  if (::fsync(root->get()) != 0) return Status::FromErrno("fsync " + tmp_path);
  CrashPoint("volume-root-before-rename");
  if (::renameat2(dir->get(), tmp.c_str(), dir->get(), name.c_str(), RENAME_NOREPLACE) != 0) {
    return Status::FromErrno("rename " + tmp_path + " to " + name);
  }
  remove_tmp.Cancel();
  if (::fsync(dir->get()) != 0) return Status::FromErrno("fsync " + volumes_dir);
  return Status::Ok();
}

Result<std::string> RepairNeverServedRoot(const std::string& path) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + path);
  // Any state at all (clean or in use) means a volume was served from it.
  char probe[8];
  if (::fgetxattr(fd->get(), std::string(fuse::kStateXattr).c_str(), probe, 0) >= 0)
    return std::string();
  if (errno != ENODATA)
    return Status::FromErrno("read " + std::string(fuse::kStateXattr) + " of " + path);
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return Status::FromErrno("stat " + path);
  std::string changed;
  if ((st.st_mode & 07777) != kRootMode) {
    changed = fmt::format("mode {:04o} -> 0777", st.st_mode & 07777);
  }
  if (st.st_uid != ::geteuid() || st.st_gid != ::getegid()) {
    changed += std::string(changed.empty() ? "" : ", ") + "owner " + std::to_string(st.st_uid) +
               ":" + std::to_string(st.st_gid) + " -> " + std::to_string(::geteuid()) + ":" +
               std::to_string(::getegid());
  }
  if (Status s = FinishRoot(fd->get(), path); !s.ok()) return s;
  if (!changed.empty() && ::fsync(fd->get()) != 0) return Status::FromErrno("fsync " + path);
  return changed;
}

Result<UniqueFd> OpenPublishPath(const std::string& publish_dir, const std::string& name) {
  auto dir = OpenAt(AT_FDCWD, publish_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW);
  if (!dir.ok()) return Status::Error(dir.err(), "open publish directory " + publish_dir);
  const std::string path = publish_dir + "/" + name;
  if (::mkdirat(dir->get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::FromErrno("mkdir " + path);
  }
  struct stat st;
  if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::FromErrno("stat " + path);
  }
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    const ssize_t n = ::readlinkat(dir->get(), name.c_str(), target, sizeof target - 1);
    return Status::Error(EBUSY,
                         path + " is a symbolic link" +
                             (n > 0 ? " to " + std::string(target, static_cast<size_t>(n)) : "") +
                             ", not a directory localvol made; localvol never mounts a volume "
                             "through a link. Remove it (rm " +
                             path + ") and retry");
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::Error(EBUSY, path + " exists and is not a directory; remove it and retry");
  }
  auto fd = OpenAt(dir->get(), name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + path + " (without following links)");
  if (::fstat(fd->get(), &st) != 0) return Status::FromErrno("stat " + path);
  if (st.st_uid != ::geteuid()) {
    return Status::Error(EBUSY, path + " is a directory owned by uid " + std::to_string(st.st_uid) +
                                    ", not by localvold; remove it and retry");
  }
  return fd;
}

std::vector<std::string> RemoveOrphanPublishDirs(const std::string& publish_dir,
                                                 const std::set<std::string>& catalogue) {
  std::vector<std::string> removed;
  auto dir = OpenAt(AT_FDCWD, publish_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dir.ok()) return removed;
  struct stat parent;
  if (::fstat(dir->get(), &parent) != 0) return removed;
  auto names = ListDirectoryAt(dir->get());
  if (!names.ok()) return removed;
  const auto mounts = ReadMountTable();
  for (const auto& name : *names) {
    if (catalogue.count(name) != 0) continue;
    if (!ValidateVolumeName(name).ok()) continue;  // not a volume's name
    const std::string path = publish_dir + "/" + name;
    bool mounted = false;
    for (const auto& m : mounts) mounted |= m.mount_point == path;
    struct stat st;
    if (mounted || ::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(st.st_mode) || st.st_dev != parent.st_dev || st.st_uid != ::geteuid()) {
      continue;
    }
    // rmdir itself refuses a directory that is not empty or is a mount point.
    if (::unlinkat(dir->get(), name.c_str(), AT_REMOVEDIR) == 0) removed.push_back(name);
  }
  return removed;
}

}  // namespace localvol::agent
