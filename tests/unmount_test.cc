// Unmount() of a volume that a process still uses: the mount is detached at
// once, the user gets a grace period, and then the FUSE connection is aborted
// so that Unmount() always returns and the volume's usage is stored.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "base/mount_table.h"
#include "tests/support/in_process_volume.h"

namespace localvol::testing {
namespace {

using UnmountTest = InProcessVolumeTest;

// Descriptors of this process open on something under `dir`.
int FdsUnder(const std::string& dir) {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) {
    char target[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t len = readlink(link.c_str(), target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = '\0';
    n += std::strncmp(target, dir.c_str(), dir.size()) == 0;
  }
  return n;
}

TEST_F(UnmountTest, BusyVolumeIsAbortedAfterTheGracePeriod) {
  const std::string path = volume_->mountpoint() + "/held";
  int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(write(fd, "x", 1), 1);
  const bool control_mounted_before = FindMountAt("/sys/fs/fuse/connections").has_value();

  const auto start = std::chrono::steady_clock::now();
  Status s = volume_->volume().Unmount();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(secs, 9.0) << "the user should get the grace period";
  EXPECT_LT(secs, 30.0) << "Unmount must not wait for the user forever";
  EXPECT_FALSE(FindMountAt(volume_->mountpoint()).has_value());
  // The connection is gone: the held file answers ENOTCONN instead of hanging.
  char c;
  EXPECT_EQ(pread(fd, &c, 1, 0), -1);
  EXPECT_EQ(errno, ENOTCONN);
  // The aborted connection never releases the held file; the server closed
  // its backing file anyway, or it would keep the disk busy.
  EXPECT_EQ(FdsUnder(dirs_.backing + "/"), 0);
  close(fd);
  // Aborting mounts the FUSE control filesystem if it must, and leaves the
  // system as it found it.
  EXPECT_EQ(FindMountAt("/sys/fs/fuse/connections").has_value(), control_mounted_before);
}

}  // namespace
}  // namespace localvol::testing
