// localvol-fuse's command line: every bad invocation exits non-zero, says on
// stderr what is wrong (naming the bad value or path), and leaves nothing
// mounted; good invocations mount, and SIGINT/SIGTERM unmount cleanly.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/directory.h"
#include "tests/support/fuse_server.h"
#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// True if `text` mentions any of `words` (case-insensitive).
bool MentionsAny(const std::string& text, const std::vector<std::string>& words) {
  const std::string lower = Lower(text);
  for (const auto& w : words) {
    if (lower.find(Lower(w)) != std::string::npos) return true;
  }
  return false;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CleanupLeftoversOfDeadTests();
    if (!FuseServer::Available()) {
      GTEST_SKIP() << "localvol-fuse was not built (no localvol-fuse CMake target)";
    }
    auto dir = TempDir::Create("lvtmp");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(*dir);
    auto src = dir_.MakeSubdir("src", 0755);
    auto mnt = dir_.MakeSubdir("mnt", 0755);
    ASSERT_TRUE(src.ok() && mnt.ok());
    src_ = *src;
    mnt_ = *mnt;
  }

  void TearDown() override {
    if (!mnt_.empty()) (void)LazyUnmountAll(mnt_);
  }

  // Runs localvol-fuse with `args` (in the foreground, so a wrongly accepted
  // invocation mounts and keeps running until the timeout kills it).
  CommandResult Run(std::vector<std::string> args, bool foreground = true) {
    args.insert(args.begin(), FuseServer::BinaryPath());
    if (foreground) args.push_back("--foreground");
    CommandResult r = RunCommand(args, 15s);
    left_mount_ = IsMountPoint(mnt_);
    if (left_mount_) (void)LazyUnmountAll(mnt_);
    return r;
  }

  // The common expectations for a refused invocation.
  void ExpectRefused(const CommandResult& r, const std::vector<std::string>& mentions) {
    EXPECT_FALSE(r.timed_out) << "localvol-fuse accepted the invocation and kept running";
    EXPECT_NE(r.exit_code, 0) << r.Summary();
    EXPECT_EQ(r.term_signal, 0) << r.Summary();
    EXPECT_FALSE(r.err.empty()) << "nothing on stderr; " << r.Summary();
    EXPECT_TRUE(MentionsAny(r.err, mentions))
        << "stderr should mention one of {" << ::testing::PrintToString(mentions) << "}: " << r.err;
    EXPECT_FALSE(left_mount_) << "left a mount at " << mnt_;
  }

  TempDir dir_;
  std::string src_, mnt_;
  bool left_mount_ = false;
};

TEST_F(CliTest, NoArguments) { ExpectRefused(Run({}, false), {"usage"}); }

TEST_F(CliTest, OnlyTheSource) {
  ExpectRefused(Run({src_, "--capacity", "10Mi"}), {"mountpoint", "usage"});
}

TEST_F(CliTest, MissingCapacity) { ExpectRefused(Run({src_, mnt_}), {"capacity"}); }

TEST_F(CliTest, CapacityFlagWithoutValue) {
  ExpectRefused(Run({src_, mnt_, "--capacity"}, false), {"capacity"});
}

TEST_F(CliTest, MalformedSizes) {
  for (const std::string bad : {"10Q", "-5", "abc", "1.5.3Gi", "10 Gi", "99999999999999999999"}) {
    SCOPED_TRACE("--capacity '" + bad + "'");
    ExpectRefused(Run({src_, mnt_, "--capacity", bad}), {bad});
  }
}

TEST_F(CliTest, ZeroCapacity) { ExpectRefused(Run({src_, mnt_, "--capacity", "0"}), {"capacity"}); }

TEST_F(CliTest, MalformedInodeCount) {
  for (const std::string bad : {"many", "-1", "12k34", "99999999999999999999", "4294967297"}) {
    SCOPED_TRACE("--inodes '" + bad + "'");
    ExpectRefused(Run({src_, mnt_, "--capacity", "10Mi", "--inodes", bad}), {bad});
  }
}

TEST_F(CliTest, BadIoUringDepth) {
  for (const std::string bad :
       {"--io-uring=0", "--io-uring=2000", "--io-uring=deep", "--io-uring="}) {
    SCOPED_TRACE(bad);
    ExpectRefused(Run({src_, mnt_, "--capacity", "10Mi", bad}), {"--io-uring"});
  }
}

TEST_F(CliTest, BadReadPassthroughMode) {
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"--read-passthrough=on"},
                                              {"--read-passthrough="},
                                              {"--read-passthrough", "yes"},
                                              {"--read-passthrough=AUTO"}}) {
    SCOPED_TRACE(bad.front());
    std::vector<std::string> args = {src_, mnt_, "--capacity", "10Mi"};
    args.insert(args.end(), bad.begin(), bad.end());
    ExpectRefused(Run(args), {"--read-passthrough"});
  }
  ExpectRefused(Run({src_, mnt_, "--capacity", "10Mi", "--read-passthrough"}, false),
                {"--read-passthrough"});
}

TEST_F(CliTest, UnknownFlag) {
  ExpectRefused(Run({src_, mnt_, "--capacity", "10Mi", "--bogus-flag"}), {"--bogus-flag", "bogus"});
}

TEST_F(CliTest, MissingSource) {
  std::string missing = dir_.Sub("does-not-exist");
  ExpectRefused(Run({missing, mnt_, "--capacity", "10Mi"}), {missing});
}

TEST_F(CliTest, SourceIsAFile) {
  std::string file = dir_.Sub("a-file");
  ASSERT_TRUE(WriteFile(file, "x").ok());
  ExpectRefused(Run({file, mnt_, "--capacity", "10Mi"}), {file});
}

TEST_F(CliTest, MissingMountpoint) {
  std::string missing = dir_.Sub("no-mountpoint");
  ExpectRefused(Run({src_, missing, "--capacity", "10Mi"}), {missing});
}

TEST_F(CliTest, MountpointIsAFile) {
  std::string file = dir_.Sub("mp-file");
  ASSERT_TRUE(WriteFile(file, "x").ok());
  ExpectRefused(Run({src_, file, "--capacity", "10Mi"}), {file});
}

TEST_F(CliTest, MountpointIsAlreadyAMountpoint) {
  ASSERT_SYS_OK(::mount("lvtest", mnt_.c_str(), "tmpfs", 0, "size=1m"));
  CommandResult r =
      RunCommand({FuseServer::BinaryPath(), src_, mnt_, "--capacity", "10Mi", "--foreground"}, 15s);
  auto top = FindMount(mnt_);
  // Undo whatever the server mounted on top, then our tmpfs.
  bool stacked = top && top->fstype != "tmpfs";
  (void)LazyUnmountAll(mnt_);
  EXPECT_FALSE(r.timed_out) << "localvol-fuse mounted over an existing mount";
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_FALSE(stacked) << "localvol-fuse left a mount stacked over the tmpfs";
  EXPECT_TRUE(MentionsAny(r.err, {mnt_})) << "stderr should name the mountpoint: " << r.err;
  EXPECT_TRUE(MentionsAny(r.err, {"mount", "busy", "in use"})) << r.err;
}

TEST_F(CliTest, MountpointServedByAnotherVolume) {
  auto disk = LoopDisk::Create();
  ASSERT_TRUE(disk.ok()) << disk.status().ToString();
  auto a = (*disk)->MakeDir("a", 0777);
  auto b = (*disk)->MakeDir("b", 0777);
  ASSERT_TRUE(a.ok() && b.ok());
  FuseServerOptions o;
  o.source = *a;
  o.mountpoint = mnt_;
  o.capacity = "64Mi";
  auto first = FuseServer::Start(o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(WriteFile(mnt_ + "/from-a", "a").ok());
  CommandResult r =
      RunCommand({FuseServer::BinaryPath(), *b, mnt_, "--capacity", "10Mi", "--foreground"}, 15s);
  EXPECT_FALSE(r.timed_out) << "a second volume mounted over the first";
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_TRUE(MentionsAny(r.err, {mnt_})) << r.err;
  // The first volume is untouched and still served.
  EXPECT_TRUE(IsMountedAs(mnt_, "fuse.localvol"));
  auto text = ReadFile(mnt_ + "/from-a");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "a");
  EXPECT_TRUE((*first)->running());
  Status st = (*first)->Stop();
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(CliTest, CapacitySmallerThanSourceUsage) {
  auto disk = LoopDisk::Create();
  ASSERT_TRUE(disk.ok()) << disk.status().ToString();
  auto src = (*disk)->MakeDir("full", 0777);
  ASSERT_TRUE(src.ok());
  ASSERT_TRUE(WriteFile(*src + "/data", RandomBytes(1, 12 * kMiB)).ok());
  ExpectRefused(Run({*src, mnt_, "--capacity", "8Mi"}),
                {"capacity", "usage", "use", "8Mi", "8388608"});
  auto back = ReadFile(*src + "/data");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size(), 12 * kMiB) << "the source must be left unchanged";
}

TEST_F(CliTest, InodeLimitSmallerThanSourceInodes) {
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(WriteFile(src_ + "/f" + std::to_string(i), "").ok());
  ExpectRefused(Run({src_, mnt_, "--capacity", "10Mi", "--inodes", "10"}), {"inode"});
}

// Runs the server in the foreground, stops it with `sig`, and expects a clean exit.
void ExpectSignalUnmountsCleanly(const std::string& src, const std::string& mnt, int sig) {
  FuseServerOptions o;
  o.source = src;
  o.mountpoint = mnt;
  o.capacity = "64Mi";
  auto log = TempDir::Create("lvlog");
  ASSERT_TRUE(log.ok());
  auto p = Subprocess::Spawn(FuseServer::CommandLine(o), log->Sub("log"));
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(WaitForMount(mnt, "fuse.localvol", 10s)) << ReadFile(log->Sub("log")).value();
  ASSERT_TRUE(WriteFile(mnt + "/f", "data").ok());
  p->Signal(sig);
  auto ws = p->Wait(10s);
  ASSERT_TRUE(ws.has_value()) << "did not exit within 10 s of signal " << sig;
  EXPECT_TRUE(WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << DescribeWaitStatus(*ws);
  EXPECT_FALSE(IsMountPoint(mnt));
  (void)LazyUnmountAll(mnt);
  auto data = ReadFile(src + "/f");
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(*data, "data");
}

TEST_F(CliTest, SigtermUnmountsCleanly) { ExpectSignalUnmountsCleanly(src_, mnt_, SIGTERM); }

TEST_F(CliTest, SigintUnmountsCleanly) { ExpectSignalUnmountsCleanly(src_, mnt_, SIGINT); }

// The pid of the process whose command line contains `needle` (unique to this
// test), or -1.
pid_t FindProcessByArg(const std::string& needle) {
  auto names = ListDirectory("/proc");
  if (!names.ok()) return -1;
  pid_t found = -1;
  for (const auto& name : *names) {
    if (!std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in("/proc/" + name + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(needle) != std::string::npos && cmd.find("localvol-fuse") != std::string::npos) {
      found = std::atoi(name.c_str());
    }
  }
  return found;
}

TEST_F(CliTest, BackgroundModeReportsSuccessAndServesUntilUnmounted) {
  CommandResult r = RunCommand({FuseServer::BinaryPath(), src_, mnt_, "--capacity", "64Mi"}, 15s);
  EXPECT_TRUE(r.ok()) << r.Summary();
  bool mounted = IsMountedAs(mnt_, "fuse.localvol");
  EXPECT_TRUE(mounted) << "exit 0 but nothing mounted";
  pid_t daemon = FindProcessByArg(mnt_);
  if (mounted) {
    EXPECT_TRUE(WriteFile(mnt_ + "/f", "bg").ok());
    EXPECT_SYS_OK(::umount2(mnt_.c_str(), 0));
  }
  // The daemon ends by itself once its filesystem is unmounted.
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = daemon <= 0 || ::kill(daemon, 0) != 0;
    if (!gone) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(gone) << "localvol-fuse daemon " << daemon << " still running after unmount";
  if (!gone) ::kill(daemon, SIGKILL);
  (void)LazyUnmountAll(mnt_);
  auto data = ReadFile(src_ + "/f");
  EXPECT_TRUE(data.ok() && *data == "bg");
}

TEST_F(CliTest, BackgroundModeReportsFailure) {
  CommandResult r =
      RunCommand({FuseServer::BinaryPath(), dir_.Sub("nope"), mnt_, "--capacity", "64Mi"}, 15s);
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_FALSE(r.err.empty());
  EXPECT_FALSE(IsMountPoint(mnt_));
}

}  // namespace
}  // namespace localvol::testing
