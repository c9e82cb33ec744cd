// TempDir: a uniquely named directory, removed with everything below it on
// destruction. Removal never crosses into another filesystem, so a mount left
// below it is never walked into (a stale FUSE mount is detached instead).
// Move-only; not thread-safe.
#pragma once

#include <string>

#include "base/status.h"

namespace localvol::testing {

class TempDir {
 public:
  // Creates <base>/<UniqueName(tag)>-XXXXXX with mode 0755 (so the unprivileged
  // test users can traverse it). `base` is /tmp by default.
  static Result<TempDir> Create(const std::string& tag, const std::string& base = "/tmp");

  TempDir() = default;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }
  // Creates path()/name with `mode` (chmod'ed, so umask does not apply).
  Result<std::string> MakeSubdir(const std::string& name, unsigned mode = 0755) const;

 private:
  std::string path_;
  int owner_ = -1;  // pid that created it; only that process removes it
};

// Removes `path` and everything below it that lives on the same filesystem.
// Anything mounted below it is lazily detached first. Best effort; returns the
// first error.
Status RemoveTree(const std::string& path);

}  // namespace localvol::testing
