// FsUnderTest: the filesystem a POSIX test runs against, in one of two modes,
// so the same test body runs on the kernel's own XFS and through localvol:
//
//   kRaw       a directory on a fresh XFS loop disk (the kernel's answer)
//   kLocalvol  a localvol-fuse mount over another directory on such a disk
//   kLocalvolRing  the same, taking requests through FUSE over io_uring
//              (localvol-fuse --io-uring; fuse/kernel_ring.h)
//
// A test's expectations are first validated in kRaw mode; a kLocalvol failure
// then means localvol differs from the kernel. FsTest is the parameterized
// GoogleTest fixture; instantiate a suite with LOCALVOL_INSTANTIATE_FS_MODES.
// Not thread-safe; owned by one test.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "tests/support/fuse_server.h"
#include "tests/support/fuse_uring_switch.h"
#include "tests/support/loop_disk.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {

enum class FsMode { kRaw, kLocalvol, kLocalvolRing };
std::string FsModeName(FsMode mode);
std::string FsModeParamName(const ::testing::TestParamInfo<FsMode>& info);
// GoogleTest prints parameters with this (and so names them in ctest).
void PrintTo(FsMode mode, std::ostream* os);

struct FsConfig {
  uint64_t disk_size = LoopDisk::kDefaultSize;
  std::string capacity = "512Mi";  // kLocalvol only
  std::optional<uint64_t> inodes;  // kLocalvol only
};

class FsUnderTest {
 public:
  // Builds the disk (and, for kLocalvol, the mount). The test root is mode
  // 0777 and owned by root.
  static Result<std::unique_ptr<FsUnderTest>> Create(FsMode mode, const FsConfig& config = {});
  ~FsUnderTest();

  FsMode mode() const { return mode_; }
  // The directory the test works in.
  const std::string& root() const { return root_; }
  // The directory on XFS holding the data (== root() for kRaw).
  const std::string& backing() const { return backing_; }
  LoopDisk& disk() { return *disk_; }
  FuseServer* server() { return server_.get(); }  // kLocalvol* only

  // Drops every cache between the test and the disk: kRaw remounts the XFS;
  // kLocalvol stops the server, remounts the XFS, and starts it again.
  Status Remount();

  // A directory on a *different* volume of the same kind: kRaw, another XFS
  // loop disk; kLocalvol, a second localvol mount over the same disk.
  Result<std::string> SecondVolumeRoot();
  // A directory on the filesystem holding /tmp (neither XFS disk nor localvol).
  Result<std::string> OtherFsDir();

 private:
  FsUnderTest() = default;

  // The server options of this mode, for a volume over `source` at `mountpoint`.
  FuseServerOptions ServerOptions(const std::string& source, const std::string& mountpoint,
                                  const std::string& capacity) const;

  FsMode mode_ = FsMode::kRaw;
  FsConfig config_;
  // Declaration order is teardown order reversed: servers go before disks.
  std::unique_ptr<LoopDisk> disk_;
  std::unique_ptr<LoopDisk> second_disk_;
  std::unique_ptr<FuseUringSwitch> uring_switch_;  // kLocalvolRing only
  TempDir mounts_;                                 // parent of the mount points
  TempDir other_fs_;
  std::unique_ptr<FuseServer> server_;
  std::unique_ptr<FuseServer> second_server_;
  std::string root_, backing_, second_root_;
};

// Parameterized fixture: fs() is ready in the test body; kLocalvol is skipped
// with a reason when the binary was not built. Sets umask 022.
class FsTest : public ::testing::TestWithParam<FsMode> {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Override to size the disk or the volume.
  virtual FsConfig Config() const { return {}; }

  FsUnderTest& fs() { return *fs_; }
  bool raw() const { return GetParam() == FsMode::kRaw; }
  // root() + "/" + rel.
  std::string P(const std::string& rel) const { return fs_->root() + "/" + rel; }

 private:
  std::unique_ptr<FsUnderTest> fs_;
};

#define LOCALVOL_INSTANTIATE_FS_MODES(Suite)                                                       \
  INSTANTIATE_TEST_SUITE_P(                                                                        \
      Modes, Suite,                                                                                \
      ::testing::Values(::localvol::testing::FsMode::kRaw, ::localvol::testing::FsMode::kLocalvol, \
                        ::localvol::testing::FsMode::kLocalvolRing),                               \
      ::localvol::testing::FsModeParamName)

}  // namespace localvol::testing
