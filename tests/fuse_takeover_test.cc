// The kernel facts a takeover after a restart (issue 20) rests on, checked on
// the running kernel with a raw FUSE server (tests/support/raw_fuse.h):
//  * a connection stays alive while its /dev/fuse file is open anywhere: the
//    server's death alone does not make the mount return ENOTCONN, requests
//    wait, and whoever holds the fd can answer them;
//  * the kernel sends FUSE_INIT once per connection, never to a new reader;
//  * FUSE_NOTIFY_RESEND puts back in the queue a request the dead server had
//    read but not answered, its unique marked with FUSE_UNIQUE_RESEND;
//  * a held /dev/fuse fd reports POLLERR once the mount is gone.
// Each test kills the server and plays the next one itself. Needs root and
// /dev/fuse; skips otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/mounts.h"
#include "tests/support/raw_fuse.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

using namespace std::chrono_literals;

// Long enough that a request the kernel would fail at once has failed; a
// blocked request stays blocked however long we wait.
constexpr auto kStillBlocked = 500ms;
constexpr auto kArrives = 10s;

struct StatOutcome {
  SysResult r;
  struct stat st {};
};

class FuseTakeoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount FUSE";
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    auto dir = TempDir::Create("lvtakeover");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(*dir);
    auto mnt = dir_.MakeSubdir("mnt");
    ASSERT_TRUE(mnt.ok()) << mnt.status().ToString();
    mnt_ = *mnt;
    auto server = RawFuseServer::Start(mnt_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    mounted_ = true;
    // Served by the first server: the connection is initialised.
    StatOutcome first = Stat("f");
    ASSERT_TRUE(first.r.ok()) << Describe(first.r);
    ASSERT_EQ(first.st.st_size, static_cast<off_t>(kRawFileSize));
  }

  void TearDown() override {
    // Closing the last holder of the /dev/fuse file aborts the connection,
    // which fails every blocked syscall, so the pending futures finish.
    held_.Reset();
    server_.Kill();
    if (mounted_) {
      EXPECT_TRUE(LazyUnmountAll(mnt_).ok());
    }
    pending_.clear();
  }

  StatOutcome Stat(const std::string& name) const {
    StatOutcome o;
    o.r = Sys(::stat((mnt_ + "/" + name).c_str(), &o.st));
    return o;
  }

  // Starts a stat in another thread; it blocks while no server answers.
  std::shared_future<StatOutcome> StatInBackground(const std::string& name) {
    auto f = std::async(std::launch::async, [this, name] { return Stat(name); }).share();
    pending_.push_back(f);
    return f;
  }

  // Plays the server on the held fd until `pending` completes: a LOOKUP of
  // `name` gets an entry for `node` of `size` bytes, a GETATTR of `node` its
  // attributes, anything else ENOSYS.
  // More than one request may come: entries expire at once, so a path walk the
  // kernel retries revalidates the new entry with another LOOKUP, and the
  // kernel may also refresh the attributes with a GETATTR.
  void ServeUntilDone(const std::shared_future<StatOutcome>& pending, const std::string& name,
                      uint64_t node, uint64_t size) {
    const auto deadline = std::chrono::steady_clock::now() + kArrives;
    while (pending.wait_for(0ms) != std::future_status::ready) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the stat never completed";
      auto req = ReadRequest(held_.get(), 100ms);
      if (req.err() == ETIMEDOUT) continue;
      ASSERT_TRUE(req.ok()) << req.status().ToString();
      if (req->header.opcode == FUSE_LOOKUP && req->name == name) {
        ASSERT_TRUE(ReplyEntry(held_.get(), req->header.unique, node, size).ok());
      } else if (req->header.opcode == FUSE_GETATTR && req->header.nodeid == node) {
        ASSERT_TRUE(ReplyAttr(held_.get(), req->header.unique, node, size).ok());
      } else if (req->header.opcode != FUSE_INTERRUPT) {
        ASSERT_TRUE(ReplyError(held_.get(), req->header.unique, ENOSYS).ok());
      }
    }
  }

  // Expects no request (FORGETs aside: the kernel sends them whenever it
  // drops an inode) to arrive on the held fd for kStillBlocked.
  void ExpectNoRequest(const char* when) {
    auto req = ReadRequest(held_.get(), kStillBlocked);
    EXPECT_EQ(req.err(), ETIMEDOUT)
        << when << ": got opcode " << (req.ok() ? req->header.opcode : 0) << " unique 0x"
        << std::hex << (req.ok() ? req->header.unique : 0) << " " << req.status().ToString();
  }

  // Takes the server's fd and kills the server, as the fd store and a crash do.
  void TakeOverAndKill() {
    auto fd = server_.TakeFd();
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    held_ = std::move(*fd);
    server_.Kill();
  }

  TempDir dir_;
  std::string mnt_;
  bool mounted_ = false;
  RawFuseServer server_;
  UniqueFd held_;
  std::vector<std::shared_future<StatOutcome>> pending_;
};

TEST_F(FuseTakeoverTest, ConnectionOutlivesItsServerWhileTheFdIsHeld) {
  TakeOverAndKill();
  auto pending = StatInBackground("g");
  ASSERT_EQ(pending.wait_for(kStillBlocked), std::future_status::timeout)
      << "stat returned " << Describe(pending.get().r) << " with the fd still held";

  auto req = ReadRequest(held_.get(), kArrives);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  ASSERT_EQ(req->header.opcode, static_cast<uint32_t>(FUSE_LOOKUP));
  EXPECT_EQ(req->header.nodeid, static_cast<uint64_t>(FUSE_ROOT_ID));
  EXPECT_EQ(req->name, "g");
  constexpr uint64_t kNode = 77, kSize = 12345;
  ASSERT_TRUE(ReplyEntry(held_.get(), req->header.unique, kNode, kSize).ok());
  ServeUntilDone(pending, "g", kNode, kSize);
  const StatOutcome done = pending.get();
  ASSERT_TRUE(done.r.ok()) << Describe(done.r);
  EXPECT_EQ(done.st.st_ino, kNode) << "answered by someone else";
  EXPECT_EQ(done.st.st_size, static_cast<off_t>(kSize));

  // The last holder closes: now the connection is gone.
  held_.Reset();
  EXPECT_EQ(ErrnoName(Stat("f").r.err), ErrnoName(ENOTCONN));
}

TEST_F(FuseTakeoverTest, NewHolderOfTheFdGetsNoSecondInit) {
  TakeOverAndKill();
  // INIT is queued at mount and answered by the first server; a new reader of
  // the same file finds nothing waiting.
  ExpectNoRequest("before any file access");
  auto pending = StatInBackground("h");
  auto req = ReadRequest(held_.get(), kArrives);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_NE(req->header.opcode, static_cast<uint32_t>(FUSE_INIT));
  EXPECT_EQ(req->header.opcode, static_cast<uint32_t>(FUSE_LOOKUP));
  ASSERT_TRUE(ReplyError(held_.get(), req->header.unique, ENOENT).ok());
  ASSERT_EQ(pending.wait_for(kArrives), std::future_status::ready);
  EXPECT_EQ(ErrnoName(pending.get().r.err), ErrnoName(ENOENT));
}

TEST_F(FuseTakeoverTest, ResendRequeuesARequestTheDeadServerHadRead) {
  auto pending = StatInBackground("stall");
  auto unique = server_.WaitStalled(kArrives);
  ASSERT_TRUE(unique.ok()) << unique.status().ToString();
  ASSERT_EQ(*unique & FUSE_UNIQUE_RESEND, 0u);
  TakeOverAndKill();

  // The dead server had read it: it is on the file's processing list, not in
  // the input queue, so a new reader does not see it by itself.
  ExpectNoRequest("before RESEND");
  EXPECT_EQ(pending.wait_for(0ms), std::future_status::timeout) << "the stalled stat returned";

  Status resend = NotifyResend(held_.get());
  if (resend.err() == EINVAL) GTEST_SKIP() << "kernel without FUSE_NOTIFY_RESEND (Linux < 6.9)";
  ASSERT_TRUE(resend.ok()) << resend.ToString();

  auto req = ReadRequest(held_.get(), kArrives);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_EQ(req->header.opcode, static_cast<uint32_t>(FUSE_LOOKUP));
  EXPECT_EQ(req->name, "stall");
  EXPECT_EQ(req->header.unique, *unique | FUSE_UNIQUE_RESEND)
      << std::hex << "first 0x" << *unique << ", resent 0x" << req->header.unique;

  // The kernel now knows the request only by its new unique.
  EXPECT_EQ(ErrnoName(ReplyEntry(held_.get(), *unique, 5, 1).err()), ErrnoName(ENOENT));
  ASSERT_TRUE(ReplyEntry(held_.get(), req->header.unique, 5, 99).ok());
  ServeUntilDone(pending, "stall", 5, 99);
  const StatOutcome done = pending.get();
  ASSERT_TRUE(done.r.ok()) << Describe(done.r);
  EXPECT_EQ(done.st.st_size, 99);

  // Answered requests are gone from the processing list: a second RESEND
  // brings back nothing.
  ASSERT_TRUE(NotifyResend(held_.get()).ok());
  ExpectNoRequest("after a second RESEND");
}

// The fd store drops a stored fd that reports POLLERR/POLLHUP (unless stored
// with FDPOLL=0). A held /dev/fuse fd reports POLLERR once its mount is gone,
// so the store forgets an unmounted volume's fd by itself.
TEST_F(FuseTakeoverTest, HeldFdReportsPollErrOnceUnmounted) {
  TakeOverAndKill();
  pollfd p{held_.get(), 0, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 0) << "revents 0x" << std::hex << p.revents << " while mounted";
  ASSERT_TRUE(LazyUnmountAll(mnt_).ok());
  mounted_ = false;
  p.revents = 0;
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_NE(p.revents & POLLERR, 0) << "revents 0x" << std::hex << p.revents;
}

}  // namespace
}  // namespace localvol::testing
