// localvold after crashes at chosen steps and against hostile or damaged
// state, driven through the real binaries as an operator would: a volume is
// complete or absent after a crash at any step of its creation; the trash
// counts as allocated across kill -9; crash leftovers (temporary manifests,
// empty publish directories) are removed; a symlink at a publish path is
// refused; a delete is refused while a process in any mount namespace uses
// the volume; a missing disk is reported and never replaced.
//
// Crashes at a chosen step use the agent's crash points (CrashPoint in
// agent/system.h): the daemon kills itself with SIGKILL there.
#include <fcntl.h>
#include <glob.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "agent/manifest.h"
#include "tests/agent_daemon.h"
#include "tests/agent_fixtures.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

constexpr uint64_t kMi = 1ull << 20;

std::vector<std::string> Glob(const std::string& pattern) {
  glob_t g{};
  std::vector<std::string> out;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  return out;
}

class AgentRecoveryTest : public DaemonTest {
 protected:
  std::string Loop() {
    auto devices = Loops(1);
    return devices.empty() ? "" : devices[0];
  }

  // The mount path of the only attached disk.
  std::string DiskRoot() const {
    auto roots = Glob(dirs_->state() + "/disks/*");
    return roots.size() == 1 ? roots[0] : "";
  }

  // Runs a command that must kill the daemon at `step`; asserts it did.
  ::testing::AssertionResult CrashesAt(const std::string& step,
                                       const std::vector<std::string>& ctl) {
    if (auto started = daemon_->Start({}, step); !started) return started;
    CommandResult r = daemon_->Ctl(ctl);
    auto status = daemon_->WaitExit(std::chrono::seconds(30));
    if (!status || !WIFSIGNALED(*status) || WTERMSIG(*status) != SIGKILL) {
      daemon_->Kill9();
      return ::testing::AssertionFailure()
             << "localvold did not stop at crash point " << step << " ("
             << (status ? DescribeWaitStatus(*status) : "still running") << "); the command gave "
             << r.Summary();
    }
    return ::testing::AssertionSuccess();
  }

  // Sum of the disks' allocated bytes, from `disk list -o json`.
  uint64_t Allocated() const {
    CommandResult r = daemon_->Ctl({"-o", "json", "disk", "list"});
    EXPECT_TRUE(r.ok()) << r.Summary();
    uint64_t sum = 0;
    const std::string key = "\"allocated_bytes\": \"";
    for (size_t at = r.out.find(key); at != std::string::npos; at = r.out.find(key, at + 1)) {
      sum += std::stoull(r.out.substr(at + key.size()));
    }
    return sum;
  }

  // Asserts that volume `name` is complete: its root has mode 0777 and
  // belongs to root, and another user can write in it.
  void ExpectComplete(const std::string& name) {
    const std::string backing = DiskRoot() + "/volumes/" + name;
    struct stat st;
    ASSERT_EQ(::stat(backing.c_str(), &st), 0) << backing;
    EXPECT_EQ(st.st_mode & 07777, 0777u) << backing;
    EXPECT_EQ(st.st_uid, 0u);
    const std::string file = dirs_->publish() + "/" + name + "/by-a-user";
    const int err = AsUser(kUserA, [&] {
      const int fd = ::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) return errno;
      ::close(fd);
      return 0;
    });
    EXPECT_EQ(err, 0) << "a non-root pod cannot write in volume " << name << ": "
                      << std::strerror(err);
  }
};

// Items 1 and 3: a crash at each step of a create, then a restart and the
// client's retry: the volume is complete, and nothing half-made is left.
TEST_F(AgentRecoveryTest, CrashAtEachStepOfCreateThenRetry) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());  // formats the disk
  ASSERT_EQ(daemon_->Stop(), 0);
  const std::vector<std::string> steps = {
      "localvol-manifest.yaml:before-rename", "volume-create-after-manifest",
      "volume-root-after-mkdir", "volume-root-before-rename", "volume-create-before-mount"};
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(steps[i]);
    const std::string name = "v" + std::to_string(i);
    ASSERT_TRUE(CrashesAt(steps[i], {"volume", "create", name, "--size", "16Mi"}));
    ASSERT_TRUE(daemon_->Start());
    CommandResult r = daemon_->Ctl({"volume", "create", name, "--size", "16Mi"});
    ASSERT_TRUE(r.ok()) << r.Summary();
    ExpectComplete(name);
    const std::string root = DiskRoot();
    EXPECT_TRUE(Glob(root + "/" + agent::kManifestFile + ".tmp.*").empty())
        << "a temporary manifest survived the restart";
    EXPECT_TRUE(Glob(root + "/volumes/.new-*").empty()) << "a half-built volume root survived";
    for (int w = 0; w < 100 && !Glob(root + "/trash/*").empty(); ++w) ::usleep(50000);
    EXPECT_TRUE(Glob(root + "/trash/*").empty());
    EXPECT_EQ(Allocated(), (i + 1) * 16 * kMi);
    ASSERT_EQ(daemon_->Stop(), 0);
  }
}

// Item 1: the state an earlier agent left when it crashed between the mkdir
// and the chmod (root at 0755, never served) is finished at the next start,
// and the client's retry then gets a volume pods can write to.
TEST_F(AgentRecoveryTest, RootLeftHalfMadeIsFinishedAtStart) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "kept", "--size", "16Mi"}).ok());
  ASSERT_EQ(::chmod((dirs_->publish() + "/kept").c_str(), 0750), 0);  // a user's choice: kept
  ASSERT_EQ(daemon_->Stop(), 0);
  const std::string m = dirs_->Sub("m");
  ASSERT_EQ(::mkdir(m.c_str(), 0755), 0);
  ASSERT_EQ(RunCommand({"mount", dev, m}).exit_code, 0);
  auto manifest = agent::ReadManifest(m);
  ASSERT_TRUE(manifest.ok());
  agent::VolumeRecord half;
  half.name = "half";
  half.capacity_bytes = 16 * kMi;
  half.inode_limit = 1024;
  manifest->volumes.push_back(half);
  ASSERT_TRUE(agent::WriteManifest(m, *manifest).ok());
  ASSERT_EQ(::mkdir((m + "/volumes/half").c_str(), 0755), 0);
  ASSERT_EQ(RunCommand({"umount", m}).exit_code, 0);
  ASSERT_TRUE(daemon_->Start());
  CommandResult r = daemon_->Ctl({"volume", "create", "half", "--size", "16Mi"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  ExpectComplete("half");
  struct stat st;
  ASSERT_EQ(::stat((DiskRoot() + "/volumes/kept").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u) << "the root of a served volume was changed";
}

// Item 4: a delete killed between dropping the volume from the manifest and
// removing its publish directory leaves nothing after the restart. Empty
// directories of no volume go; what is not certainly ours stays.
TEST_F(AgentRecoveryTest, CrashInDeleteLeavesNoOrphanPublishDirectory) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "gone", "--size", "16Mi"}).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/gone/f", "data").ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_TRUE(CrashesAt("volume-delete-after-manifest", {"volume", "delete", "gone"}));
  const std::string pub = dirs_->publish();
  ASSERT_TRUE(Exists(pub + "/gone"));
  ASSERT_EQ(::mkdir((pub + "/not-empty").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(pub + "/not-empty/keep", "x").ok());
  ASSERT_EQ(::mkdir((pub + "/Not_A_Volume").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((pub + "/not-ours").c_str(), 0755), 0);
  ASSERT_EQ(::chown((pub + "/not-ours").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::symlink(dirs_->Sub("state").c_str(), (pub + "/a-link").c_str()), 0);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_FALSE(Exists(pub + "/gone")) << "the interrupted delete's directory survived the restart";
  EXPECT_TRUE(Exists(pub + "/not-empty/keep"));
  EXPECT_TRUE(Exists(pub + "/Not_A_Volume"));
  EXPECT_TRUE(Exists(pub + "/not-ours"));
  EXPECT_TRUE(Exists(pub + "/a-link"));
  CommandResult r = daemon_->Ctl({"volume", "list"});
  EXPECT_EQ(r.out.find("gone"), std::string::npos) << r.out;
  for (int w = 0; w < 100 && !Glob(DiskRoot() + "/trash/*").empty(); ++w) ::usleep(50000);
  EXPECT_TRUE(Glob(DiskRoot() + "/trash/*").empty());
  EXPECT_EQ(Allocated(), 0u);
}

// Item 2: deleted data the trash could not remove yet counts as allocated,
// before and after a kill -9, until it is actually gone.
TEST_F(AgentRecoveryTest, TrashCountsAsAllocatedUntilRemovedAcrossKill9) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "doomed", "--size", "200Mi"}).ok());
  const std::string vol = dirs_->publish() + "/doomed";
  ASSERT_EQ(::mkdir((vol + "/sub").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(vol + "/sub/data", RandomBytes(7, 48 * kMi)).ok());
  ASSERT_TRUE(WriteFile(vol + "/loose", RandomBytes(8, 8 * kMi)).ok());
  // An immutable directory holds the trash in place, as a slow removal would.
  const std::string sub = DiskRoot() + "/volumes/doomed/sub";
  if (RunCommand({"chattr", "+i", sub}).exit_code != 0)
    GTEST_SKIP() << "chattr +i is not supported here";
  ASSERT_TRUE(daemon_->Ctl({"volume", "delete", "doomed"}).ok());
  // The removal got what it could (the loose file) and failed on the rest.
  for (int w = 0; w < 100 && daemon_->Log().find("stay counted as allocated") == std::string::npos;
       ++w) {
    ::usleep(50000);
  }
  const uint64_t held = Allocated();
  EXPECT_GE(held, 48 * kMi) << "deleted data still on the disk is no longer counted";
  EXPECT_LT(held, 56 * kMi) << "the removed file is still counted";
  daemon_->Kill9();
  ASSERT_TRUE(daemon_->Start());
  EXPECT_GE(Allocated(), 48 * kMi) << "the restart forgot the trash";
  auto stuck = Glob(DiskRoot() + "/trash/doomed.*/sub");
  ASSERT_EQ(stuck.size(), 1u);
  ASSERT_EQ(RunCommand({"chattr", "-i", stuck[0]}).exit_code, 0);
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_TRUE(daemon_->Start());
  for (int w = 0; w < 200 && Allocated() != 0; ++w) ::usleep(50000);
  EXPECT_EQ(Allocated(), 0u);
  EXPECT_TRUE(Glob(DiskRoot() + "/trash/*").empty());
}

// Item 5: a symlink at the publish path is not followed: the create is
// refused, and nothing is mounted where the link points.
TEST_F(AgentRecoveryTest, SymlinkAtThePublishPathIsRefused) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  const std::string elsewhere = dirs_->Sub("elsewhere");
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), (dirs_->publish() + "/evil").c_str()), 0);
  CommandResult r = daemon_->Ctl({"volume", "create", "evil", "--size", "16Mi"});
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_NE(r.err.find("is a symbolic link to " + elsewhere), std::string::npos) << r.Summary();
  EXPECT_FALSE(IsMountPoint(elsewhere)) << "the volume was mounted outside the publish directory";
  r = daemon_->Ctl({"volume", "list"});
  EXPECT_EQ(r.out.find("evil"), std::string::npos) << r.out;
  EXPECT_TRUE(Glob(DiskRoot() + "/volumes/evil").empty());
  // Once the link is gone the name works.
  ASSERT_EQ(::unlink((dirs_->publish() + "/evil").c_str()), 0);
  r = daemon_->Ctl({"volume", "create", "evil", "--size", "16Mi"});
  EXPECT_TRUE(r.ok()) << r.Summary();
  EXPECT_TRUE(IsMountPoint(dirs_->publish() + "/evil"));
}

// Item 6: a process in another mount namespace with its working directory in
// the volume blocks the delete, which names it; it keeps working.
TEST_F(AgentRecoveryTest, DeleteRefusedWhileAProcessInAnotherMountNamespaceUsesTheVolume) {
  const std::string dev = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "shared", "--size", "16Mi"}).ok());
  const std::string vol = dirs_->publish() + "/shared";
  // In a namespace with a private copy of the mount (which our unmount does
  // not reach), with a slave copy (which it reaches where the mount is
  // shared), and in our own namespace.
  const std::string loop =
      "cd " + vol + " && while :; do echo beat >> beat || exit 3; sleep 0.1; done";
  for (const char* propagation : {"private", "slave", ""}) {
    SCOPED_TRACE(propagation);
    std::vector<std::string> argv = {"sh", "-c", loop};
    if (*propagation != '\0')
      argv.insert(argv.begin(), {"unshare", "-m", "--propagation", propagation});
    const std::string beat = "beat";
    auto user = Subprocess::Spawn(argv, dirs_->Sub(std::string("user-") + propagation + ".log"));
    ASSERT_TRUE(user.ok()) << user.status().ToString();
    for (int w = 0; w < 100 && !Exists(vol + "/" + beat); ++w) ::usleep(50000);
    ASSERT_TRUE(Exists(vol + "/" + beat));
    CommandResult r = daemon_->Ctl({"volume", "delete", "shared"});
    EXPECT_NE(r.exit_code, 0) << r.Summary();
    EXPECT_NE(r.err.find("FailedPrecondition"), std::string::npos) << r.Summary();
    EXPECT_NE(r.err.find("pid " + std::to_string(user->pid())), std::string::npos) << r.Summary();
    // Still served, and the user still works in it.
    const size_t before = ReadOr(vol + "/" + beat).size();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_TRUE(user->running() && !user->TryWait()) << "the process died";
    EXPECT_GT(ReadOr(vol + "/" + beat).size(), before) << "the process stopped writing";
    r = daemon_->Ctl({"volume", "inspect", "shared"});
    EXPECT_NE(r.out.find("ready"), std::string::npos) << r.out;
    user->Kill();
    ASSERT_EQ(::unlink((vol + "/" + beat).c_str()), 0);
  }
  // Once they are gone (the last `sleep` child a moment later), it goes.
  CommandResult r;
  for (int w = 0; w < 50; ++w) {
    r = daemon_->Ctl({"volume", "delete", "shared"});
    if (r.ok()) break;
    ::usleep(100000);
  }
  EXPECT_TRUE(r.ok()) << r.Summary();
}

// Item 7: a missing embedded image is reported, not replaced; put back, its
// volumes are served again.
TEST_F(AgentRecoveryTest, MissingEmbeddedImageIsNotReplaced) {
  ASSERT_TRUE(dirs_->WriteConfig({}, "embedded_disk_size: 600Mi\n").ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "demo", "--size", "100Mi"}).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/demo/hello", "world").ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  const std::string image = dirs_->state() + "/embedded/disk.img";
  const std::string moved = dirs_->Sub("disk.img.moved");
  ASSERT_EQ(::rename(image.c_str(), moved.c_str()), 0);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_FALSE(Exists(image)) << "a new embedded image replaced the missing one";
  CommandResult r = daemon_->Ctl({"-o", "json", "disk", "list"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"state\": \"missing\""), std::string::npos) << r.out;
  r = daemon_->Ctl({"disk", "list"});
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(image + " is gone"), std::string::npos) << r.out;
  EXPECT_NE(daemon_->Log().find("[error]"), std::string::npos);
  EXPECT_FALSE(daemon_->Ctl({"volume", "create", "other", "--size", "10Mi"}).ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_EQ(::rename(moved.c_str(), image.c_str()), 0);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(ReadOr(dirs_->publish() + "/demo/hello"), "world");
  r = daemon_->Ctl({"disk", "list"});
  EXPECT_EQ(r.out.find("missing"), std::string::npos) << r.out;
}

// Item 7, configured disks: a device whose disk the agent knew and that is
// now blank is reported missing and not formatted.
TEST_F(AgentRecoveryTest, KnownDiskFoundBlankIsReportedMissingNotFormatted) {
  const std::string dev = Loop();
  const std::string other = Loop();
  ASSERT_TRUE(dirs_->WriteConfig({dev, other}).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(
      daemon_->Ctl({"volume", "create", "on-other", "--size", "16Mi", "--disk", other}).ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  CommandResult wiped = RunCommand({"blkdiscard", "-f", dev});
  if (!wiped.ok()) GTEST_SKIP() << "blkdiscard: " << wiped.Summary();
  ASSERT_TRUE(DeviceIsBlank(dev));
  ASSERT_TRUE(daemon_->Start());
  EXPECT_TRUE(DeviceIsBlank(dev)) << "a blank device replaced a known disk";
  CommandResult r = daemon_->Ctl({"disk", "list"});
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(dev + " (entry '" + dev + "') held disk"), std::string::npos) << r.out;
  // The other disk is served.
  r = daemon_->Ctl({"volume", "inspect", "on-other"});
  EXPECT_NE(r.out.find("ready"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace localvol::testing
