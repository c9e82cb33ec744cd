// FuseUringSwitch: keeps the fuse module parameter enable_uring on while any
// test holds one, and puts back what it found when the last holder, in any
// test process, lets go.
//
// FUSE over io_uring is off by default in Linux 6.14-6.18; tests of
// fuse/kernel_ring.h need it on. The holders of all processes (ctest -j runs
// tests in parallel processes) are counted in a file under /run, updated
// under an exclusive flock. A holder that crashes leaves the count high, and
// the parameter on until the next boot clears /run: it lets FUSE servers ask
// for io_uring, and changes nothing for those that do not.
#pragma once

#include <memory>

#include "base/status.h"

namespace localvol::testing {

class FuseUringSwitch {
 public:
  static constexpr const char* kParameter = "/sys/module/fuse/parameters/enable_uring";

  // Fails if the kernel has no such parameter (no FUSE over io_uring) or it
  // cannot be set.
  static Result<std::unique_ptr<FuseUringSwitch>> Acquire();
  ~FuseUringSwitch();
  FuseUringSwitch(const FuseUringSwitch&) = delete;
  FuseUringSwitch& operator=(const FuseUringSwitch&) = delete;

 private:
  FuseUringSwitch() = default;
};

}  // namespace localvol::testing
