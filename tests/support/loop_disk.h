// LoopDisk: a sparse image file attached to a loop device, formatted XFS and
// mounted on a unique directory. The disk a volume's backing directory lives on.
//
// Teardown (also on test failure): unmount (lazily if busy), detach the loop
// device, delete the image. It only ever detaches the loop device it attached,
// and checks the device's backing file before doing so.
// Not thread-safe; owned by one test.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {

class LoopDisk {
 public:
  // XFS needs at least 300 MB.
  static constexpr uint64_t kDefaultSize = 1ull << 30;

  // Creates, formats (mkfs.xfs -q) and mounts a disk of `size_bytes`.
  // Everything done so far is rolled back on failure.
  static Result<std::unique_ptr<LoopDisk>> Create(uint64_t size_bytes = kDefaultSize);
  ~LoopDisk();
  LoopDisk(const LoopDisk&) = delete;
  LoopDisk& operator=(const LoopDisk&) = delete;

  const std::string& device() const { return device_; }  // /dev/loopN
  const std::string& image() const { return image_; }
  const std::string& mount_point() const { return mount_point_; }
  // mount_point() + "/" + name.
  std::string Path(const std::string& name) const { return mount_point_ + "/" + name; }
  // Creates mount_point()/name with exactly `mode`.
  Result<std::string> MakeDir(const std::string& name, unsigned mode = 0755) const;

  Status Unmount();
  Status Mount();
  // Unmount and mount again: drops every cached page and inode of the disk.
  Status Remount();

 private:
  LoopDisk() = default;
  Status Detach();

  TempDir dir_;  // holds the image and the mount point; destroyed last
  std::string image_;
  std::string device_;
  std::string mount_point_;
  bool mounted_ = false;
  int owner_ = -1;
};

// The directories a volume test needs: a fresh XFS loop disk, the backing
// directory "<disk>/vol" (mode 0777, so test users may create in it) and an
// empty mountpoint under its own temporary directory.
struct VolumeDirs {
  std::unique_ptr<LoopDisk> disk;
  TempDir mounts;          // holds `mountpoint`
  std::string backing;     // disk->Path("vol")
  std::string mountpoint;  // mounts.Sub("mnt")
};

// Creates them; a gtest fatal failure if it cannot (use ASSERT_NO_FATAL_FAILURE).
void MakeVolumeDirs(VolumeDirs* out);

}  // namespace localvol::testing
