// LoopDevice: the move-only owner of an open loop device backed by an image
// file. This is how the embedded disk (a sparse file under the state
// directory) becomes a block device.
//
// Attach() reuses the loop device the image is already attached to (after a
// crash the disk may still be mounted from it), or configures a free one with
// LO_FLAGS_AUTOCLEAR. Autoclear means the kernel detaches the device once the
// last user lets go: this owner's fd and, later, the mount. So a clean stop
// (unmount, then destruction of this object) leaves no loop device behind,
// and nothing ever detaches a loop device the agent did not attach.
// Not thread-safe.
#pragma once

#include <string>

#include "base/status.h"
#include "base/unique_fd.h"

namespace localvol::agent {

class LoopDevice {
 public:
  // `image` must exist. Fails with a Status naming the step that failed.
  static Result<LoopDevice> Attach(const std::string& image);
  // The loop device currently backed by `image` ("/dev/loop3"), or "".
  static std::string FindAttached(const std::string& image);

  LoopDevice() = default;
  LoopDevice(LoopDevice&&) = default;
  LoopDevice& operator=(LoopDevice&&) = default;

  const std::string& path() const { return path_; }
  // Closes the device; the kernel detaches it once nothing else uses it.
  void Release() { fd_.Reset(); }

 private:
  std::string path_;
  UniqueFd fd_;  // keeps an autoclear device alive until the disk is mounted
};

// Creates a sparse file of `size` bytes at `path` unless it exists.
Status CreateSparseImage(const std::string& path, uint64_t size);

}  // namespace localvol::agent
