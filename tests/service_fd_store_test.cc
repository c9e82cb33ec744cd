// The fd store round trip a restart takeover needs (issue 20), end to end:
// a service stores named fds with the agent's library (agent/service/), the
// FakeServiceManager keeps them as systemd 252 does, and the next start takes
// them back through LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES. The service is the
// small service_fd_store_helper binary.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "agent/service/fd_store.h"
#include "tests/support/fake_service_manager.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

#ifndef LOCALVOL_FDSTORE_HELPER_BIN
#error "LOCALVOL_FDSTORE_HELPER_BIN must name the service_fd_store_helper binary"
#endif

namespace localvol::testing {
namespace {

using namespace std::chrono_literals;

class ServiceFdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("lvfdstore");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(*dir);
  }

  void MakeManager(size_t max) {
    auto m = FakeServiceManager::Create(max);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    manager_ = std::move(*m);
  }

  // Starts the helper with `args` under the manager, waits for READY=1 and
  // its exit 0; returns its output.
  std::string Run(std::vector<std::string> args) {
    args.insert(args.begin(), LOCALVOL_FDSTORE_HELPER_BIN);
    const std::string log = dir_.Sub("run" + std::to_string(runs_++) + ".log");
    auto child = manager_.Start(args, log);
    EXPECT_TRUE(child.ok()) << child.status().ToString();
    if (!child.ok()) return "";
    Status ready = manager_.WaitFor("READY=1", 10s);
    const auto status = child->Wait(10s);
    auto out = ReadFile(log);
    EXPECT_TRUE(ready.ok()) << ready.ToString() << "; output: " << (out.ok() ? *out : "");
    EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << (status ? DescribeWaitStatus(*status) : "still running")
        << "; output: " << (out.ok() ? *out : "");
    return out.ok() ? *out : "";
  }

  TempDir dir_;
  FakeServiceManager manager_;
  int runs_ = 0;
};

TEST_F(ServiceFdStoreTest, NamedFdsSurviveARestart) {
  MakeManager(8);
  Run({"store", "vol-a=alpha", "vol-b=beta", "gone=x", "--remove", "gone"});
  // Newest first, as systemd 252 keeps its store; "gone" was removed.
  EXPECT_EQ(manager_.StoreNames(), "vol-b:vol-a");

  const std::string out = Run({"receive"});
  EXPECT_NE(out.find("fd 3 vol-b=beta cloexec=1"), std::string::npos) << out;
  EXPECT_NE(out.find("fd 4 vol-a=alpha cloexec=1"), std::string::npos) << out;
  EXPECT_NE(out.find("listen_env=unset"), std::string::npos) << out;
  EXPECT_EQ(manager_.status(), "received");
  // The store keeps its fds for the start after that one, too.
  EXPECT_EQ(manager_.StoreNames(), "vol-b:vol-a");
}

TEST_F(ServiceFdStoreTest, PlainStartPassesNoFds) {
  MakeManager(8);
  const std::string out = Run({"receive"});
  EXPECT_EQ(out.find("fd "), std::string::npos) << out;
  EXPECT_NE(out.find("listen_env=unset"), std::string::npos) << out;
}

TEST_F(ServiceFdStoreTest, FullStoreRejectsFurtherFds) {
  MakeManager(1);
  Run({"store", "first=1", "second=2"});
  EXPECT_EQ(manager_.StoreNames(), "first");
  EXPECT_EQ(manager_.rejected(), 1u);
}

TEST_F(ServiceFdStoreTest, TheSameOpenFileIsStoredOnce) {
  MakeManager(8);
  Run({"store", "orig=1", "--dup", "copy"});
  EXPECT_EQ(manager_.StoreNames(), "orig") << "systemd keeps one entry per open file";
}

TEST_F(ServiceFdStoreTest, AHungUpFdIsDroppedUnlessFdpollIsOff) {
  MakeManager(8);
  Run({"store", "--pipe", "polled", "--pipe-nopoll", "kept"});
  // The helper has exited, so both stored pipe ends report POLLHUP.
  ASSERT_TRUE(manager_.Drain().ok());
  EXPECT_EQ(manager_.StoreNames(), "kept");
}

TEST_F(ServiceFdStoreTest, OnlyTheMainProcessIsHeard) {
  MakeManager(8);
  // This test process is not the service's main process (NotifyAccess=main).
  ASSERT_EQ(::setenv("NOTIFY_SOCKET", manager_.notify_socket().c_str(), 1), 0);
  const int fds[] = {0};
  Status st = service::StoreFds("intruder", fds, true);
  ::unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(manager_.Drain().ok());
  ASSERT_EQ(manager_.messages().size(), 1u);
  EXPECT_EQ(manager_.messages()[0].sender, ::getpid());
  EXPECT_FALSE(manager_.messages()[0].accepted);
  EXPECT_EQ(manager_.StoreNames(), "");
}

TEST_F(ServiceFdStoreTest, WithoutAServiceManagerStoringFailsClearly) {
  CommandResult r = RunCommand(
      {"env", "-u", "NOTIFY_SOCKET", LOCALVOL_FDSTORE_HELPER_BIN, "store", "vol-a=alpha"});
  EXPECT_EQ(r.exit_code, 1) << r.Summary();
  EXPECT_NE(r.err.find("NOTIFY_SOCKET is not set"), std::string::npos) << r.Summary();
}

}  // namespace
}  // namespace localvol::testing
