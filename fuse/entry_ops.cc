// The operations on names: lookup, forget, mknod, mkdir, symlink, create,
// link, unlink, rmdir and rename.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "base/logging.h"
#include "fuse/caller_credentials.h"
#include "fuse/filesystem.h"
#include "fuse/handles.h"

namespace localvol::fuse {

namespace {

// Names come from the kernel as single components; "." and ".." would walk
// out of the tree relative to the volume root, so refuse them outright.
bool IsUnsafeName(const char* name) {
  return std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0 ||
         std::strchr(name, '/') != nullptr;
}

}  // namespace

int Filesystem::LookupChild(Inode& parent, const char* name, fuse_entry_param* entry, Inode** out) {
  if (IsUnsafeName(name)) return EINVAL;
  auto parent_fd = Pin(parent);
  if (!parent_fd.ok()) return parent_fd.err();
  auto fd = OpenAt(parent_fd->get(), name, O_PATH | O_NOFOLLOW);
  if (!fd.ok()) return fd.err();
  struct stat st;
  if (fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  Inode* inode = inodes_.Add(std::move(fd).value(), st);
  std::memset(entry, 0, sizeof *entry);
  entry->ino = reinterpret_cast<fuse_ino_t>(inode);
  entry->attr = st;
  entry->attr_timeout = config_.attr_timeout_s;
  entry->entry_timeout = config_.entry_timeout_s;
  if (out != nullptr) *out = inode;
  return 0;
}

void Filesystem::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  int err = LookupChild(GetInode(parent), name, &e, nullptr);
  if (err == ENOENT) {
    // Negative entries may be cached as long as positive ones: nothing but
    // this server changes the backing directory.
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = config_.entry_timeout_s;
    fuse_reply_entry(req, &e);
  } else if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    ReplyEntry(req, e);
  }
}

void Filesystem::ReplyEntry(fuse_req_t req, const fuse_entry_param& e) {
  // An interrupted request is gone: the kernel never counts this lookup.
  if (fuse_reply_entry(req, &e) != 0) inodes_.Forget(reinterpret_cast<Inode*>(e.ino), 1);
}

void Filesystem::Forget(fuse_ino_t ino, uint64_t nlookup) {
  inodes_.Forget(&GetInode(ino), nlookup);
}

template <typename MakeFn>
int Filesystem::CreateAsCaller(fuse_req_t req, Inode& parent, const char* name, mode_t mode,
                               MakeFn make, fuse_entry_param* entry, Reservation* reservation) {
  if (IsUnsafeName(name)) return EINVAL;
  auto dir_fd = Pin(parent);
  if (!dir_fd.ok()) return dir_fd.err();
  // One inode, and one block for the directory entry should the directory grow.
  if (!quota_->TryReserve(config_.block_size, 1, reservation)) return ENOSPC;
  int result;
  int err = 0;
  {
    // Supplementary groups cost a read of /proc/<pid>/status, so first try
    // without; they matter only for group permission on the parent and for
    // keeping a requested setgid bit.
    const bool groups_needed = (mode & S_ISGID) != 0;
    CallerCredentials creds(req, groups_needed);
    if (!creds.ok()) return creds.err();
    result = make(dir_fd->get());
    err = result < 0 ? errno : 0;
    if ((err == EACCES || err == EPERM) && !groups_needed) {
      CallerCredentials with_groups(req, true);
      if (!with_groups.ok()) return with_groups.err();
      result = make(dir_fd->get());
      err = result < 0 ? errno : 0;
    }
  }
  if (err != 0) return err;
  Inode* child = nullptr;
  err = LookupChild(parent, name, entry, &child);
  if (err != 0) return err;
  int64_t delta = space_.TakeAllocationDelta(parent);
  {
    MutexLock lock(child->alloc_mu);
    delta += static_cast<int64_t>(child->charged_bytes);
  }
  quota_->Settle(*reservation, delta, 1);
  return 0;
}

void Filesystem::MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                       dev_t rdev) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, mode, [&](int dir_fd) { return mknodat(dir_fd, name, mode, rdev); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, mode, [&](int dir_fd) { return mkdirat(dir_fd, name, mode); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, 0, [&](int dir_fd) { return symlinkat(target, dir_fd, name); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::Create(Request& request, fuse_req_t req, fuse_ino_t parent, const char* name,
                        mode_t mode, fuse_file_info* fi) {
  Inode& dir = GetInode(parent);
  const int flags = (fi->flags & ~(O_NOCTTY | O_CREAT | O_EXCL)) | O_NOFOLLOW | O_CLOEXEC;
  fuse_entry_param e;
  Reservation r;
  UniqueFd file_fd;
  int err = CreateAsCaller(
      req, dir, name, mode,
      [&](int dir_fd) {
        // O_EXCL even when the caller did not ask: the inode must be new for
        // the quota to count it once. The kernel sends CREATE only for names
        // it believes absent.
        file_fd = UniqueFd(openat(dir_fd, name, flags | O_CREAT | O_EXCL, mode));
        return file_fd.valid() ? 0 : -1;
      },
      &e, &r);
  if (err == EEXIST && !(fi->flags & O_EXCL)) {
    // Lost a race with another creator in the backing directory: open it.
    fuse_entry_param existing;
    Inode* inode = nullptr;
    err = LookupChild(dir, name, &existing, &inode);
    if (err == 0) {
      auto fd = Reopen(request, req, *inode, flags & ~O_NOFOLLOW);
      if (!fd.ok()) {
        inodes_.Forget(inode, 1);
        return (void)fuse_reply_err(req, fd.err());
      }
      file_fd = std::move(fd).value();
      e = existing;
    }
  }
  if (err != 0) return (void)fuse_reply_err(req, err);
  auto* handle = new FileHandle{std::move(file_fd), reinterpret_cast<Inode*>(e.ino)};
  SetOpenReply(request, fi, handle, flags);
  if (fuse_reply_create(req, &e, fi) != 0) {
    // The kernel gave up on the request (interrupted); nobody will release it.
    DropFileHandle(handle);
    inodes_.Forget(reinterpret_cast<Inode*>(e.ino), 1);
  }
}

void Filesystem::Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  Inode& inode = GetInode(ino);
  Inode& dir = GetInode(parent);
  if (IsUnsafeName(name)) return (void)fuse_reply_err(req, EINVAL);
  auto inode_fd = Pin(inode);
  if (!inode_fd.ok()) return (void)fuse_reply_err(req, inode_fd.err());
  auto dir_fd = Pin(dir);
  if (!dir_fd.ok()) return (void)fuse_reply_err(req, dir_fd.err());
  Reservation r;
  if (!quota_->TryReserve(config_.block_size, 0, &r)) return (void)fuse_reply_err(req, ENOSPC);
  if (linkat(inode_fd->get(), "", dir_fd->get(), name, AT_EMPTY_PATH) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  fuse_entry_param e;
  int err = LookupChild(dir, name, &e, nullptr);
  quota_->Settle(r, space_.TakeAllocationDelta(dir, dir_fd->get()), 0);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::RemoveEntry(fuse_req_t req, fuse_ino_t parent, const char* name, int flags) {
  Inode& dir = GetInode(parent);
  if (IsUnsafeName(name)) return (void)fuse_reply_err(req, EINVAL);
  auto dir_fd = Pin(dir);
  if (!dir_fd.ok()) return (void)fuse_reply_err(req, dir_fd.err());
  struct stat victim;
  if (fstatat(dir_fd->get(), name, &victim, AT_SYMLINK_NOFOLLOW) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  inodes_.KeepOpenUntilForgotten(victim);
  if (unlinkat(dir_fd->get(), name, flags) != 0) return (void)fuse_reply_err(req, errno);
  inodes_.ReleaseVictim(victim);
  space_.ChargeAllocation(dir, dir_fd->get());
  fuse_reply_err(req, 0);
}

void Filesystem::Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, 0);
}

void Filesystem::RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, AT_REMOVEDIR);
}

void Filesystem::Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                        const char* newname, unsigned flags) {
  Inode& from = GetInode(parent);
  Inode& to = GetInode(newparent);
  if (IsUnsafeName(name) || IsUnsafeName(newname)) return (void)fuse_reply_err(req, EINVAL);
  auto from_fd = Pin(from);
  if (!from_fd.ok()) return (void)fuse_reply_err(req, from_fd.err());
  auto to_fd = Pin(to);
  if (!to_fd.ok()) return (void)fuse_reply_err(req, to_fd.err());
  struct stat victim;
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  const bool replaces =
      !exchange && fstatat(to_fd->get(), newname, &victim, AT_SYMLINK_NOFOLLOW) == 0;
  // Admission (README, "Quotas"). Replacing or exchanging rewrites entries
  // that exist, in place: nothing grows and nothing new is made, so nothing
  // is reserved and a full volume renames as XFS does. A whiteout is a new
  // inode and may grow the source directory. A new name may grow the target
  // directory by a block: reserved when it fits, and otherwise tried the way
  // XFS renames without a reservation (RenameWithoutGrowing).
  Reservation r;
  if (flags & RENAME_WHITEOUT) {
    if (!quota_->TryReserve(config_.block_size, 1, &r)) return (void)fuse_reply_err(req, ENOSPC);
  } else if (!replaces && !exchange && !quota_->TryReserve(config_.block_size, 0, &r)) {
    const int err =
        RenameWithoutGrowing(from, from_fd->get(), name, to, to_fd->get(), newname, flags);
    return (void)fuse_reply_err(req, err);
  }
  if (replaces) inodes_.KeepOpenUntilForgotten(victim);
  if (renameat2(from_fd->get(), name, to_fd->get(), newname, flags) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  if (replaces) inodes_.ReleaseVictim(victim);
  int64_t delta = space_.TakeAllocationDelta(from, from_fd->get());
  if (&to != &from) delta += space_.TakeAllocationDelta(to, to_fd->get());
  quota_->Settle(r, delta, (flags & RENAME_WHITEOUT) ? 1 : 0);
  fuse_reply_err(req, 0);
}

int Filesystem::RenameWithoutGrowing(Inode& from, int from_fd, const char* name, Inode& to,
                                     int to_fd, const char* newname, unsigned flags) {
  // Charge any change not yet seen, so that what follows measures this rename alone.
  int64_t delta = space_.TakeAllocationDelta(to, to_fd);
  // NOREPLACE keeps the name new, as the admission assumed.
  if (renameat2(from_fd, name, to_fd, newname, flags | RENAME_NOREPLACE) != 0) {
    const int err = errno;
    quota_->Adjust(delta, 0);
    return err;
  }
  const int64_t grown = space_.TakeAllocationDelta(to, to_fd);
  delta += grown;
  int err = 0;
  if (grown > 0) {
    // The entry did not fit in the blocks the directory had: put the name
    // back, which gives the block back. The kernel holds both directories
    // locked for the whole request, so no caller sees the name come and go.
    if (renameat2(to_fd, newname, from_fd, name, RENAME_NOREPLACE) == 0) {
      err = ENOSPC;
      delta += space_.TakeAllocationDelta(to, to_fd);
    } else {
      const int undo_err = errno;
      GetLogger("fuse")->error(
          "rename at a full volume grew a directory by {} bytes and could not be undone: {}", grown,
          std::strerror(undo_err));
    }
  }
  if (&to != &from) delta += space_.TakeAllocationDelta(from, from_fd);
  quota_->Adjust(delta, 0);
  return err;
}

}  // namespace localvol::fuse
