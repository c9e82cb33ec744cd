// InProcessVolume: a localvol volume served from inside the test process
// (iopath::Engine + fuse::Volume::Mount), for tests that need SetLimits(),
// Usage() or restart semantics without a subprocess.
//
// Only available when the localvol_fuse library was built
// (LOCALVOL_HAVE_VOLUME_LIB); otherwise Available() is false and Mount fails.
// The destructor unmounts (lazily if needed). Not thread-safe itself; the
// Volume it owns is.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "tests/support/loop_disk.h"

#if LOCALVOL_HAVE_VOLUME_LIB
#include "fuse/volume.h"
#include "iopath/engine.h"
#endif

namespace localvol::testing {

struct InProcessVolumeOptions {
  std::string source;
  std::string mountpoint;
  uint64_t capacity_bytes = 0;
  uint64_t inode_limit = 0;    // 0: the library's default
  bool fuse_io_uring = false;  // fuse::VolumeOptions::fuse_io_uring
  // fuse::VolumeOptions::fuse_io_uring_idle_release; unset: the library's default.
  std::optional<std::chrono::milliseconds> fuse_io_uring_idle_release;
  bool thread_placement = true;  // fuse::VolumeOptions::thread_placement
  bool read_passthrough = true;  // fuse::VolumeOptions::read_passthrough
};

class InProcessVolume {
 public:
  static bool Available();
  // Creates an engine and mounts. On failure nothing stays mounted; the
  // Status carries the Volume::Mount error (errno preserved).
  static Result<std::unique_ptr<InProcessVolume>> Mount(const InProcessVolumeOptions& options);
  ~InProcessVolume();
  InProcessVolume(const InProcessVolume&) = delete;
  InProcessVolume& operator=(const InProcessVolume&) = delete;

  // Clean unmount (persists usage).
  Status Unmount();
  // Unmount() and mount again with the current options.
  Status Remount();

  const std::string& mountpoint() const { return options_.mountpoint; }
  InProcessVolumeOptions& options() { return options_; }

#if LOCALVOL_HAVE_VOLUME_LIB
  fuse::Volume& volume() { return *volume_; }
  iopath::Engine& engine() { return *engine_; }
#endif

 private:
  InProcessVolume() = default;
  Status DoMount();

  InProcessVolumeOptions options_;
#if LOCALVOL_HAVE_VOLUME_LIB
  std::unique_ptr<iopath::Engine> engine_;
  std::unique_ptr<fuse::Volume> volume_;  // destroyed before engine_
#endif
  int owner_ = -1;
};

// A test fixture serving one in-process volume over MakeVolumeDirs(): the
// disk, its "vol" backing directory and the mount. Skips when the library
// was not built. Members are torn down volume first, disk last.
class InProcessVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // The options SetUp mounts with: the fields below over dirs_.
  InProcessVolumeOptions Options() const;
  // Capacity and inode limit of the volume SetUp mounts; set them in the
  // derived SetUp before calling this one.
  uint64_t capacity_bytes_ = 256ull << 20;
  uint64_t inode_limit_ = 0;
  bool fuse_io_uring_ = false;
  std::optional<std::chrono::milliseconds> fuse_io_uring_idle_release_;
  bool thread_placement_ = true;
  bool read_passthrough_ = true;

  VolumeDirs dirs_;
  std::unique_ptr<InProcessVolume> volume_;
};

}  // namespace localvol::testing
