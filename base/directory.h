// Directory handles and listing.
//
// UniqueDir is the move-only owner of one DIR* stream (closedir on
// destruction). ListDirectory/ListDirectoryAt read a whole directory into a
// vector of names, without "." and "..", in the order readdir returns them
// (no sorting). A readdir failure is an error, never a short list.
// Functions hold no shared state and are thread-safe; a UniqueDir is not
// thread-safe to use from two threads at once.
#pragma once

#include <dirent.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace localvol {

class UniqueDir {
 public:
  UniqueDir() = default;
  explicit UniqueDir(DIR* dir) : dir_(dir) {}
  UniqueDir(UniqueDir&& other) noexcept : dir_(other.Release()) {}
  UniqueDir& operator=(UniqueDir&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueDir(const UniqueDir&) = delete;
  UniqueDir& operator=(const UniqueDir&) = delete;
  ~UniqueDir() { Reset(); }

  DIR* get() const { return dir_; }
  bool valid() const { return dir_ != nullptr; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing.
  DIR* Release() {
    DIR* dir = dir_;
    dir_ = nullptr;
    return dir;
  }
  // Closes the current stream (and its fd), if any, and takes `dir`.
  void Reset(DIR* dir = nullptr);

 private:
  DIR* dir_ = nullptr;
};

// Opens a new stream on the directory `dirfd` refers to (openat "." with
// O_CLOEXEC: its own open file description, not a dup), at its first entry.
// The caller's fd stays open and its offset is neither read nor moved;
// `dirfd` may be an O_PATH fd. Fails with the errno of openat (ENOTDIR when
// `dirfd` is not a directory, EBADF) or fdopendir.
Result<UniqueDir> OpenDirectoryAt(int dirfd);

// The names in the directory at `path`, without "." and "..". Fails with the
// errno of open (ENOENT, EACCES, ENOTDIR...) or of readdir.
Result<std::vector<std::string>> ListDirectory(const std::string& path);

// The same for the open directory `dirfd`, read through OpenDirectoryAt: the
// caller's fd stays open, usable and at its offset. Fails as OpenDirectoryAt
// or readdir.
Result<std::vector<std::string>> ListDirectoryAt(int dirfd);

}  // namespace localvol
