#include "base/directory.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.h"

namespace localvol {
namespace {

// A stream owning `fd` (a directory open for reading), or fdopendir's errno.
Result<UniqueDir> StreamOf(UniqueFd fd, const std::string& what) {
  DIR* dir = ::fdopendir(fd.get());
  if (dir == nullptr) return Status::FromErrno("fdopendir " + what);
  fd.Release();  // the stream owns it now
  return UniqueDir(dir);
}

// Every name `dir` yields, without "." and "..". readdir returns NULL both at
// the end and on failure; only errno tells them apart.
Result<std::vector<std::string>> ReadNames(DIR* dir, const std::string& what) {
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) return Status::FromErrno("readdir " + what);
      return names;
    }
    if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
    names.emplace_back(entry->d_name);
  }
}

std::string FdName(int dirfd) { return "directory fd " + std::to_string(dirfd); }

}  // namespace

void UniqueDir::Reset(DIR* dir) {
  // closedir closes the stream's fd; like close(2), it is not retried.
  if (dir_ != nullptr) ::closedir(dir_);
  dir_ = dir;
}

Result<UniqueDir> OpenDirectoryAt(int dirfd) {
  auto fd = OpenAt(dirfd, ".", O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + FdName(dirfd));
  return StreamOf(std::move(fd).value(), FdName(dirfd));
}

Result<std::vector<std::string>> ListDirectory(const std::string& path) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return Status::Error(fd.err(), "open directory " + path);
  auto dir = StreamOf(std::move(fd).value(), path);
  if (!dir.ok()) return dir.status();
  return ReadNames(dir->get(), path);
}

Result<std::vector<std::string>> ListDirectoryAt(int dirfd) {
  auto dir = OpenDirectoryAt(dirfd);
  if (!dir.ok()) return dir.status();
  return ReadNames(dir->get(), FdName(dirfd));
}

}  // namespace localvol
