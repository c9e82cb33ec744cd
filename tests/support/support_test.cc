// Self-tests of the integration fixtures: if these fail, every other
// integration result is suspect.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

TEST(SupportTest, RunCommandCapturesOutputAndExitCode) {
  CommandResult ok = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(ok.exit_code, 3);
  EXPECT_EQ(ok.out, "out\n");
  EXPECT_EQ(ok.err, "err\n");
  CommandResult missing = RunCommand({"/nonexistent/binary"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.err.find("exec failed"), std::string::npos);
}

TEST(SupportTest, RunCommandKillsOnTimeout) {
  auto start = std::chrono::steady_clock::now();
  CommandResult r = RunCommand({"sleep", "30"}, 200ms);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(SupportTest, AsUserDropsPrivilegesAndReturnsErrno) {
  struct Ids {
    uid_t uid, euid;
    gid_t gid;
    int ngroups;
  };
  Ids ids = AsUser(kUserB, [] {
    return Ids{getuid(), geteuid(), getgid(), getgroups(0, nullptr)};
  });
  EXPECT_EQ(ids.uid, 1001u);
  EXPECT_EQ(ids.euid, 1001u);
  EXPECT_EQ(ids.gid, 1001u);
  EXPECT_EQ(ids.ngroups, 1);
  SysResult r = AsUser(kUserA, [] { return Sys(open("/etc/shadow", O_RDONLY)); });
  EXPECT_RESULT_ERRNO(r, EACCES);
  SysResult root = RunInChild([] { return Sys(access("/etc/shadow", R_OK)); });
  EXPECT_RESULT_OK(root);
}

TEST(SupportTest, TempDirIsRemovedWithContents) {
  std::string path;
  {
    auto dir = TempDir::Create("selftest");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    path = dir->path();
    ASSERT_TRUE(dir->MakeSubdir("a/", 0700).ok());
    ASSERT_TRUE(WriteFile(dir->Sub("a/f"), "x").ok());
    ASSERT_EQ(::symlink("/etc", dir->Sub("link").c_str()), 0);
  }
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(Exists("/etc/passwd"));  // the symlink was not followed
}

TEST(SupportTest, LoopDiskLifecycle) {
  std::string device, mp, image;
  {
    auto disk = LoopDisk::Create();
    ASSERT_TRUE(disk.ok()) << disk.status().ToString();
    device = (*disk)->device();
    mp = (*disk)->mount_point();
    image = (*disk)->image();
    EXPECT_TRUE(IsMountedAs(mp, "xfs"));
    auto space = StatFs(mp);
    ASSERT_TRUE(space.ok());
    EXPECT_GT(space->capacity(), 900 * kMiB);
    ASSERT_TRUE(WriteFile((*disk)->Path("f"), "persist").ok());
    ASSERT_TRUE((*disk)->Remount().ok());
    auto text = ReadFile((*disk)->Path("f"));
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, "persist");
  }
  EXPECT_FALSE(IsMountPoint(mp));
  EXPECT_FALSE(Exists(image));
  CommandResult r = RunCommand({"losetup", "-j", image});
  EXPECT_EQ(r.out, "") << device << " still attached";
}

// A test process killed by a timeout leaves its disk mounted and attached;
// the next test process cleans it up.
TEST(SupportTest, JanitorCleansUpAfterADeadTestProcess) {
  struct Left {
    char disk_dir[256];
    char device[64];
  };
  Left left = RunInChild([] {
    Left out{};
    auto disk = LoopDisk::Create();
    if (!disk.ok()) return out;
    std::string dir = (*disk)->image().substr(0, (*disk)->image().rfind('/'));
    // Both fit: /tmp/lv... paths and /dev/loopN; an empty field fails the test.
    if (dir.size() < sizeof(out.disk_dir)) dir.copy(out.disk_dir, sizeof(out.disk_dir) - 1);
    const std::string device = (*disk)->device();
    if (device.size() < sizeof(out.device)) device.copy(out.device, sizeof(out.device) - 1);
    (void)disk->release();  // leak it, as a SIGKILL would
    return out;
  });
  std::string dir = left.disk_dir;
  ASSERT_FALSE(dir.empty());
  ASSERT_TRUE(IsMountPoint(dir + "/mnt"));
  auto cleaned = CleanupDeadTestDirsNow();
  EXPECT_NE(std::find(cleaned.begin(), cleaned.end(), dir), cleaned.end());
  EXPECT_FALSE(IsMountPoint(dir + "/mnt"));
  EXPECT_FALSE(Exists(dir));
  CommandResult r = RunCommand({"losetup", "-j", dir + "/disk.img"});
  EXPECT_EQ(r.out, "") << left.device << " still attached";
}

TEST(SupportTest, ParsesMountInfo) {
  auto root = FindMount("/");
  ASSERT_TRUE(root.has_value());
  EXPECT_FALSE(root->fstype.empty());
  EXPECT_TRUE(IsMountPoint("/proc"));
  EXPECT_FALSE(IsMountPoint("/etc"));
}

TEST(SupportTest, UniqueNamesDiffer) {
  EXPECT_NE(UniqueName("x"), UniqueName("x"));
  EXPECT_EQ(RandomBytes(7, 100), RandomBytes(7, 100));
  EXPECT_NE(RandomBytes(7, 100), RandomBytes(8, 100));
}

}  // namespace
}  // namespace localvol::testing
