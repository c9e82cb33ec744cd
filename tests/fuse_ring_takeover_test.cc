// What happens to a FUSE over io_uring connection (fuse/kernel_ring.h) when
// the process that registered its ring queues dies while another process
// still holds the /dev/fuse file (issue 20). localvol-fuse serves a volume;
// the test takes its /dev/fuse fd, SIGKILLs it, and looks where the next
// request goes.
//
// Found on Linux 6.18: with the ring, nowhere a new process can reach. The
// request waits on the ring queue: neither /dev/fuse reads nor
// FUSE_NOTIFY_RESEND see it. Closing the held fd does not end it, nor does a
// lazy unmount while it waits; only killing the waiting process frees the
// mount. Without the ring (the control) the holder gets every request, and
// without a holder a ring server's crash still gives ENOTCONN. So a volume
// that must survive a restart cannot use the ring as registered today.
//
// Needs root, /dev/fuse, the localvol-fuse binary and the fuse module
// parameter enable_uring; skips otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/fuse_server.h"
#include "tests/support/fuse_uring_switch.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/raw_fuse.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

using namespace std::chrono_literals;

// The fd number of the first /dev/fuse fd open in `pid`, or -1.
int FindFuseFd(pid_t pid) {
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(e.path(), link_ec) == "/dev/fuse") {
      return std::stoi(e.path().filename().string());
    }
  }
  return -1;
}

// Long enough for a request the kernel would route to /dev/fuse to arrive.
constexpr auto kNoRequest = 2s;

// A stat in a forked child, so a stat that never returns can be killed.
// The child writes its errno (0 on success) to the pipe.
struct StatChild {
  pid_t pid = -1;
  UniqueFd result;
  ~StatChild() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// True if the stat child reported its result within `timeout`; the result
// (0 or an errno) goes to *err.
bool Finished(const StatChild& c, std::chrono::milliseconds timeout, int* err) {
  pollfd p{c.result.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  *err = -1;
  (void)!::read(c.result.get(), err, sizeof *err);
  return true;
}

void StartStat(const std::string& path, StatChild* c) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  c->result.Reset(p[0]);
  c->pid = ::fork();
  ASSERT_GE(c->pid, 0);
  if (c->pid == 0) {
    struct stat st;
    const int err = ::stat(path.c_str(), &st) == 0 ? 0 : errno;
    (void)!::write(p[1], &err, sizeof err);
    ::_exit(0);
  }
  ::close(p[1]);
}

class FuseRingTakeoverTest : public ::testing::Test {
 protected:
  // Serves a volume with localvol-fuse (through the ring if `ring`), takes a
  // copy of its /dev/fuse fd (if `take`) and SIGKILLs it.
  void StartTakeOverAndKill(bool ring, bool take = true) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (!FuseServer::Available()) GTEST_SKIP() << "localvol-fuse was not built";
    if (ring) {
      auto uring = FuseUringSwitch::Acquire();
      if (!uring.ok()) GTEST_SKIP() << "no FUSE over io_uring: " << uring.status().ToString();
      uring_ = std::move(*uring);
    }
    auto disk = LoopDisk::Create();
    ASSERT_TRUE(disk.ok()) << disk.status().ToString();
    disk_ = std::move(*disk);
    auto src = disk_->MakeDir("v", 0777);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    auto dir = TempDir::Create("lvringtakeover");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(*dir);
    auto mnt = dir_.MakeSubdir("mnt");
    ASSERT_TRUE(mnt.ok()) << mnt.status().ToString();
    mnt_ = *mnt;
    FuseServerOptions o;
    o.source = *src;
    o.mountpoint = mnt_;
    o.capacity = "64Mi";
    if (ring) o.extra_args = {"--io-uring"};
    auto server = FuseServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    ASSERT_TRUE(WriteFile(mnt_ + "/x", "x").ok());

    const int fuse_fd = FindFuseFd(server_->pid());
    ASSERT_GE(fuse_fd, 0) << "no /dev/fuse fd in the server";
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, server_->pid(), 0)));
    ASSERT_TRUE(pidfd.valid()) << std::strerror(errno);
    if (take) {
      held_.Reset(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fuse_fd, 0)));
      ASSERT_TRUE(held_.valid()) << std::strerror(errno);
    }
    server_->Kill9();
  }

  void TearDown() override {
    held_.Reset();
    if (!mnt_.empty()) {
      EXPECT_TRUE(LazyUnmountAll(mnt_).ok());
    }
  }

  std::unique_ptr<FuseUringSwitch> uring_;
  std::unique_ptr<LoopDisk> disk_;
  TempDir dir_;
  std::string mnt_;
  std::unique_ptr<FuseServer> server_;
  UniqueFd held_;
};

// The control: without the ring, the next requests wait for a /dev/fuse
// reader, and the holder of the fd answers them.
TEST_F(FuseRingTakeoverTest, WithoutTheRingTheHolderGetsTheRequest) {
  StartTakeOverAndKill(false);
  if (IsSkipped() || HasFatalFailure()) return;
  StatChild stat;
  StartStat(mnt_ + "/after-the-kill", &stat);
  // Every request the stat causes (a GETATTR of the root, a LOOKUP) reaches
  // the holder; answering each with ENOENT ends the stat with ENOENT.
  int requests = 0, err = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!Finished(stat, 0ms, &err)) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the stat never completed";
    auto req = ReadRequest(held_.get(), 100ms);
    if (req.err() == ETIMEDOUT) continue;
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    ++requests;
    if (req->header.opcode == FUSE_INTERRUPT) continue;
    ASSERT_TRUE(ReplyError(held_.get(), req->header.unique, ENOENT).ok());
  }
  EXPECT_GT(requests, 0);
  EXPECT_EQ(ErrnoName(err), ErrnoName(ENOENT));
}

TEST_F(FuseRingTakeoverTest, WithTheRingRequestsWaitWhereNoNewProcessCanReach) {
  StartTakeOverAndKill(true);
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_NE(server_->Log().find("FUSE over io_uring:"), std::string::npos)
      << "the server did not take requests through the ring: " << server_->Log();

  // A request after the ring owner's death is neither queued for /dev/fuse
  // reads nor brought there by FUSE_NOTIFY_RESEND: it waits on the ring
  // queue, which nobody serves.
  StatChild stat;
  StartStat(mnt_ + "/after-the-kill", &stat);
  auto req = ReadRequest(held_.get(), kNoRequest);
  EXPECT_EQ(req.err(), ETIMEDOUT) << "a request came through /dev/fuse: opcode "
                                  << (req.ok() ? req->header.opcode : 0);
  Status resend = NotifyResend(held_.get());
  EXPECT_TRUE(resend.ok()) << resend.ToString();
  req = ReadRequest(held_.get(), kNoRequest);
  EXPECT_EQ(req.err(), ETIMEDOUT) << "RESEND brought a request to /dev/fuse: opcode "
                                  << (req.ok() ? req->header.opcode : 0);
  int err = 0;
  EXPECT_FALSE(Finished(stat, 0ms, &err)) << "the stat returned " << ErrnoName(err);

  // Closing the last fd we hold does not end the stat either (see
  // docs/recovery.md for the likely cause in fs/fuse/dev_uring.c).
  held_.Reset();
  EXPECT_FALSE(Finished(stat, kNoRequest, &err))
      << "closing the held fd ended the stat: " << ErrnoName(err);

  // A lazy unmount does not end it either: the waiting stat keeps the mount
  // busy. Its wait is killable; once it is gone the mount can go.
  EXPECT_TRUE(LazyUnmountAll(mnt_).ok());
  EXPECT_FALSE(Finished(stat, 1s, &err)) << "the lazy unmount ended the stat: " << ErrnoName(err);
  ASSERT_EQ(::kill(stat.pid, SIGKILL), 0);
  bool reaped = false;
  for (int i = 0; i < 100 && !reaped; ++i) {
    reaped = ::waitpid(stat.pid, nullptr, WNOHANG) == stat.pid;
    if (!reaped) ::usleep(100 * 1000);
  }
  EXPECT_TRUE(reaped) << "the stat did not die of SIGKILL";
  if (reaped) stat.pid = -1;
}

// Without a holder, the crash of a ring server ends the connection as it
// always did: the next syscall fails with ENOTCONN, nothing hangs.
TEST_F(FuseRingTakeoverTest, WithTheRingAndNoHolderACrashStillGivesEnotconn) {
  StartTakeOverAndKill(true, /*take=*/false);
  if (IsSkipped() || HasFatalFailure()) return;
  StatChild stat;
  StartStat(mnt_ + "/after-the-kill", &stat);
  int err = 0;
  ASSERT_TRUE(Finished(stat, 10s, &err)) << "the stat hangs after a crash";
  // ECONNABORTED when the request was already queued as the kernel aborted.
  EXPECT_TRUE(err == ENOTCONN || err == ECONNABORTED) << ErrnoName(err);
}

}  // namespace
}  // namespace localvol::testing
