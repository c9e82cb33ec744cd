#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

namespace localvol {

void UniqueFd::Reset(int fd) {
  // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> OpenAt(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd = RetryEintr([&] { return ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return Status::FromErrno("openat " + path);
  return UniqueFd(fd);
}

}  // namespace localvol
