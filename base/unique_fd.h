// UniqueFd: the move-only owner of one file descriptor.
//
// Valid when fd >= 0; closes on destruction. Not thread-safe to mutate; the
// fd number itself may be used from any thread while the owner is alive.
#pragma once

#include <string>

#include "base/status.h"

namespace localvol {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the current fd (if any) and takes `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// openat(2) with O_CLOEXEC added and EINTR retried.
Result<UniqueFd> OpenAt(int dirfd, const std::string& path, int flags, unsigned mode = 0);

}  // namespace localvol
