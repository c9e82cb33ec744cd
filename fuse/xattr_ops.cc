// The operations on extended attributes. Names under the reserved prefix
// (the volume's own state) are hidden and refused.
#include <sys/xattr.h>

#include <cstring>
#include <string>
#include <vector>

#include "fuse/filesystem.h"
#include "fuse/usage_store.h"

namespace localvol::fuse {

namespace {

bool IsReservedXattr(const char* name) {
  return std::strncmp(name, kReservedXattrPrefix.data(), kReservedXattrPrefix.size()) == 0;
}

}  // namespace

void Filesystem::SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                          size_t size, int flags) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, EPERM);
  Inode& inode = GetInode(ino);
  // Large values spill into attribute blocks, which count as allocation.
  Reservation r;
  if (!quota_->TryReserve(
          (size + config_.block_size - 1) / config_.block_size * config_.block_size +
              config_.block_size,
          0, &r)) {
    return (void)fuse_reply_err(req, ENOSPC);
  }
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  if (setxattr(ProcPath(fd->get()).c_str(), name, value, size, flags) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  space_.SettleAllocation(inode, fd->get(), r);
  fuse_reply_err(req, 0);
}

void Filesystem::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, ENODATA);
  Inode& inode = GetInode(ino);
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  std::vector<char> value(size);
  ssize_t n = getxattr(ProcPath(fd->get()).c_str(), name, size ? value.data() : nullptr, size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (size == 0) return (void)fuse_reply_xattr(req, n);
  fuse_reply_buf(req, value.data(), n);
}

void Filesystem::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Inode& inode = GetInode(ino);
  // Read the whole list to filter our own names out, then answer as asked.
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  const std::string path = ProcPath(fd->get());
  std::vector<char> names;
  ssize_t n;
  do {
    n = listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    names.resize(n);
    n = n == 0 ? 0 : listxattr(path.c_str(), names.data(), names.size());
  } while (n < 0 && errno == ERANGE);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  std::string visible;
  for (ssize_t i = 0; i < n;) {
    const char* entry = names.data() + i;
    const size_t len = std::strlen(entry);
    if (!IsReservedXattr(entry)) visible.append(entry, len + 1);
    i += static_cast<ssize_t>(len) + 1;
  }
  if (size == 0) return (void)fuse_reply_xattr(req, visible.size());
  if (visible.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, visible.data(), visible.size());
}

void Filesystem::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, ENODATA);
  Inode& inode = GetInode(ino);
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  if (removexattr(ProcPath(fd->get()).c_str(), name) != 0) return (void)fuse_reply_err(req, errno);
  space_.ChargeAllocation(inode, fd->get());
  fuse_reply_err(req, 0);
}

}  // namespace localvol::fuse
