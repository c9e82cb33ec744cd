// What fi->fh points at: an open file or directory of the backing tree
// (private to fuse/). Filesystem registers every one it hands the kernel.
#pragma once

#include <dirent.h>
#include <fuse_lowlevel.h>

#include "base/unique_fd.h"
#include "fuse/inode_table.h"
#include "fuse/passthrough.h"

namespace localvol::fuse {

struct OpenHandle {
  explicit OpenHandle(Inode* i) : inode(i) {}
  virtual ~OpenHandle() = default;
  Inode* inode;
};

struct FileHandle : OpenHandle {
  FileHandle(UniqueFd f, Inode* i) : OpenHandle(i), fd(std::move(f)) {}
  UniqueFd fd;
  // How the open was answered (Filesystem::SetOpenReply); what its release
  // gives back to the volume's PassthroughTable.
  passthrough::OpenMode passthrough = passthrough::OpenMode::kServer;
};

struct DirHandle : OpenHandle {
  explicit DirHandle(Inode* i) : OpenHandle(i) {}
  ~DirHandle() override {
    if (dir != nullptr) closedir(dir);
  }
  DIR* dir = nullptr;
  off_t offset = 0;
  struct dirent* entry = nullptr;  // read but not yet returned to the kernel
};

template <typename Handle>
Handle* HandleOf(const fuse_file_info* fi) {
  return reinterpret_cast<Handle*>(fi->fh);
}

}  // namespace localvol::fuse
