// The operations on attributes: getattr, setattr, readlink and statfs.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>

#include "base/scope_guard.h"
#include "fuse/caller_credentials.h"
#include "fuse/filesystem.h"
#include "fuse/handles.h"
#include "fuse/protocol_extensions.h"

namespace localvol::fuse {

// The size change is counted (Inode::size_changes) before the mode is read.
int Filesystem::KeepDenseForTruncate(Inode& inode, fuse_file_info* fi, int path_fd, off_t size) {
  if (fi != nullptr) return KeepDense(*HandleOf<FileHandle>(fi), static_cast<uint64_t>(size));
  if (!passthrough_.InPassthroughMode(reinterpret_cast<uint64_t>(&inode))) return 0;
  // truncate(2) by path: the gap is allocated through an fd of our own.
  auto fd = OpenAt(proc_self_fd_.get(), std::to_string(path_fd), O_WRONLY);
  if (!fd.ok()) return fd.err();
  return space_.AllocateGapTo(inode, fd->get(), static_cast<uint64_t>(size));
}

void Filesystem::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  struct stat st;
  int rc;
  if (fi != nullptr) {
    rc = fstat(HandleOf<FileHandle>(fi)->fd.get(), &st);
  } else {
    auto fd = Pin(GetInode(ino));
    if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
    rc = fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }
  if (rc != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_attr(req, &st, config_.attr_timeout_s);
}

void Filesystem::SetAttr(const Request& request, fuse_req_t req, fuse_ino_t ino, struct stat* attr,
                         int to_set, fuse_file_info* fi) {
  Inode& inode = GetInode(ino);
  const int file_fd = fi != nullptr ? HandleOf<FileHandle>(fi)->fd.get() : -1;
  auto fail = [&](int err) { fuse_reply_err(req, err); };
  auto pinned = Pin(inode);
  if (!pinned.ok()) return fail(pinned.err());
  const int path_fd = pinned->get();
  // A chown drops setuid/setgid first; a mode in the same request is the
  // caller's explicit choice instead. A SETATTR that sets nothing drops them
  // too: the kernel sends it for chown(f, -1, -1), forgetting its kill flags
  // (killpriv v2), and before a buffered write or a fallocate
  // (file_remove_privs). Linux lets only the owner drop them by chown and
  // refuses others with EPERM; the server cannot tell the two apart and drops
  // them for any caller (README, "Ownership"). utimensat() with both times
  // UTIME_OMIT sends no SETATTR at all; the ownership tests check all of it.
  // A truncate the kernel flags runs as the caller below instead, and the
  // backing filesystem drops them by its own rules; not for a root caller,
  // whose credentials the server keeps.
  constexpr int kAnyAttribute = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                                FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                                FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                                FUSE_SET_ATTR_CTIME;
  const bool truncate_as_caller =
      (to_set & FUSE_SET_ATTR_SIZE) && request.kills_suidgid() && fuse_req_ctx(req)->uid != 0;
  if (!(to_set & FUSE_SET_ATTR_MODE) && !truncate_as_caller &&
      (request.kills_suidgid() || (to_set & kAnyAttribute) == 0)) {
    KillSuidSgid(req, inode, path_fd);
  }
  // The kernel has already checked permissions (default_permissions); the
  // server acts as root. Ownership first: chown clears setuid/setgid on
  // files, and a mode sent in the same request must be the final word.
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (fchownat(path_fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return fail(errno);
    }
  }
  if (to_set & FUSE_SET_ATTR_MODE) {
    if (inode.type == S_IFLNK) return fail(EOPNOTSUPP);
    int rc = file_fd >= 0 ? fchmod(file_fd, attr->st_mode & 07777)
                          : fchmodat(AT_FDCWD, ProcPath(path_fd).c_str(), attr->st_mode & 07777, 0);
    if (rc != 0) return fail(errno);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (inode.type != S_IFREG) return fail(inode.type == S_IFDIR ? EISDIR : EINVAL);
    FreeingGuard truncating(inode);
    inode.size_changes.fetch_add(1);
    ScopeGuard size_changed([&inode] { inode.size_changes.fetch_sub(1); });
    if (const int err = KeepDenseForTruncate(inode, fi, path_fd, attr->st_size); err != 0) {
      return fail(err);
    }
    // The way the caller asked: ftruncate with a file handle, truncate(2) by
    // path without, so that the backing filesystem treats it alike (XFS
    // changes nothing, not even setuid/setgid, when an empty file is
    // truncated to 0 by path). As the caller when setuid/setgid may have to
    // go, so that the backing filesystem applies its own rules; the kernel
    // has checked the permission, and the caller's groups let the backing
    // filesystem agree.
    std::optional<CallerCredentials> creds;
    if (truncate_as_caller) {
      creds.emplace(req, /*with_groups=*/true);
      if (!creds->ok()) return fail(creds->err());
    }
    const int rc =
        file_fd >= 0
            ? RetryEintr([&] { return ftruncate(file_fd, attr->st_size); })
            : RetryEintr([&] { return truncate(ProcPath(path_fd).c_str(), attr->st_size); });
    const int err = rc != 0 ? errno : 0;
    creds.reset();  // before anything else can change errno
    if (err != 0) return fail(err);
    // Shrinking frees space; growing leaves a hole and allocates nothing.
    space_.ChargeAllocation(inode, path_fd);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec times[2];
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      times[0].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      times[0] = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      times[1].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      times[1] = attr->st_mtim;
    }
    if (utimensat(path_fd, "", times, AT_EMPTY_PATH) != 0) return fail(errno);
  }
  GetAttr(req, ino, fi);
}

void Filesystem::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  char buf[PATH_MAX + 1];
  auto fd = Pin(GetInode(ino));
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  ssize_t n = readlinkat(fd->get(), "", buf, sizeof buf);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (static_cast<size_t>(n) >= sizeof buf) return (void)fuse_reply_err(req, ENAMETOOLONG);
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

void Filesystem::StatFs(fuse_req_t req, fuse_ino_t ino) {
  const QuotaSnapshot q = quota_->Snapshot();
  // f_blocks * f_frsize must equal the capacity exactly (the local static
  // provisioner reads it as the PV size), so the unit is the largest power of
  // two up to 4 KiB that divides the capacity.
  uint64_t unit = 4096;
  while (unit > 1 && q.capacity_bytes % unit != 0) unit >>= 1;
  const uint64_t used = std::min(q.used_bytes, q.capacity_bytes);
  const uint64_t used_inodes = std::min(q.used_inodes, q.inode_limit);
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = unit;
  st.f_frsize = unit;
  st.f_blocks = q.capacity_bytes / unit;
  st.f_bfree = (q.capacity_bytes - used) / unit;
  st.f_bavail = st.f_bfree;
  st.f_files = q.inode_limit;
  st.f_ffree = q.inode_limit - used_inodes;
  st.f_favail = st.f_ffree;
  st.f_namemax = NAME_MAX;
  fuse_reply_statfs(req, &st);
}

}  // namespace localvol::fuse
