// The operations on open directories: opendir, readdir(plus), releasedir
// and fsyncdir.
#include <dirent.h>
#include <fcntl.h>

#include <cstring>
#include <memory>
#include <vector>

#include "fuse/filesystem.h"
#include "fuse/handles.h"

namespace localvol::fuse {

void Filesystem::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto path_fd = Pin(GetInode(ino));
  if (!path_fd.ok()) return (void)fuse_reply_err(req, path_fd.err());
  auto fd = OpenAt(path_fd->get(), ".", O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  auto handle = std::make_unique<DirHandle>(&GetInode(ino));
  handle->dir = fdopendir(fd->get());
  if (handle->dir == nullptr) return (void)fuse_reply_err(req, errno);
  fd->Release();  // owned by the DIR now
  fi->fh = reinterpret_cast<uint64_t>(handle.get());
  // The kernel may cache listings: it invalidates them itself on every change
  // made through this mount, and nothing else changes the backing directory.
  fi->cache_readdir = config_.cache_listings;
  fi->keep_cache = config_.cache_listings;
  DirHandle* raw = handle.release();
  AddHandle(raw);
  if (fuse_reply_open(req, fi) != 0) DropHandle(raw);
}

void Filesystem::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                         bool plus) {
  auto* d = HandleOf<DirHandle>(fi);
  Inode& dir = GetInode(ino);
  std::vector<char> buf(size);
  size_t used = 0;
  if (off != d->offset) {
    seekdir(d->dir, off);
    d->entry = nullptr;
    d->offset = off;
  }
  int err = 0;
  while (true) {
    if (d->entry == nullptr) {
      errno = 0;
      d->entry = readdir(d->dir);
      if (d->entry == nullptr) {
        err = errno;
        break;
      }
    }
    const char* name = d->entry->d_name;
    const off_t next = d->entry->d_off;
    size_t entsize;
    if (plus) {
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      const bool dot = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
      Inode* child = nullptr;
      if (dot) {
        e.attr.st_ino = d->entry->d_ino;
        e.attr.st_mode = d->entry->d_type << 12;
      } else {
        int lerr = LookupChild(dir, name, &e, &child);
        if (lerr == ENOENT) {  // vanished between readdir and lookup
          d->entry = nullptr;
          d->offset = next;
          continue;
        }
        if (lerr != 0) {
          err = lerr;
          break;
        }
      }
      entsize = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (entsize > size - used) {
        if (child != nullptr) inodes_.Forget(child, 1);  // the kernel never saw it
        break;
      }
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = d->entry->d_ino;
      st.st_mode = d->entry->d_type << 12;
      entsize = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
      if (entsize > size - used) break;
    }
    used += entsize;
    d->entry = nullptr;
    d->offset = next;
  }
  // An error after some entries is reported on the next call instead.
  if (err != 0 && used == 0) return (void)fuse_reply_err(req, err);
  fuse_reply_buf(req, buf.data(), used);
}

void Filesystem::ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  DropHandle(HandleOf<DirHandle>(fi));
  fuse_reply_err(req, 0);
}

void Filesystem::FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  SubmitSync(req, dirfd(HandleOf<DirHandle>(fi)->dir), datasync);
}

}  // namespace localvol::fuse
