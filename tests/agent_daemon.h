// One localvold process, and the fixture, for the tests that drive the real
// binaries (agent_daemon_test, agent_recovery_test). The including test target defines
// LOCALVOLD_BIN and LOCALVOLCTL_BIN. Not thread-safe, except Ctl(), which
// several client threads may call at once.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/agent_fixtures.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"

#if !defined(LOCALVOLD_BIN) || !defined(LOCALVOLCTL_BIN)
#error "define LOCALVOLD_BIN and LOCALVOLCTL_BIN for this test target"
#endif

namespace localvol::testing {

// The file's contents, or `fallback` when it cannot be read.
inline std::string ReadOr(const std::string& path, const std::string& fallback = "") {
  auto r = ReadFile(path);
  return r.ok() ? *r : fallback;
}

// One localvold process. The destructor SIGKILLs it if it still runs (the
// AgentDirs fixture then detaches what it left mounted).
class Daemon {
 public:
  explicit Daemon(const AgentDirs& dirs) : dirs_(dirs) {}

  // Starts it and waits until the API answers (or it exits). `crash_at`
  // names a crash point (agent/system.h) where it is to kill itself.
  ::testing::AssertionResult Start(const std::vector<std::string>& extra_args = {},
                                   const std::string& crash_at = "") {
    std::vector<std::string> argv = {LOCALVOLD_BIN, "--config", dirs_.config_path(), "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    if (!crash_at.empty()) ::setenv("LOCALVOL_CRASH_AT", crash_at.c_str(), 1);
    auto p = Subprocess::Spawn(argv, dirs_.Sub("localvold.log"));
    ::unsetenv("LOCALVOL_CRASH_AT");
    if (!p.ok()) return ::testing::AssertionFailure() << p.status().ToString();
    process_ = std::move(p).value();
    for (int i = 0; i < 300; ++i) {
      if (auto st = process_.TryWait()) {
        return ::testing::AssertionFailure()
               << "localvold exited: " << DescribeWaitStatus(*st) << "\n"
               << Log();
      }
      if (Ctl({"disk", "list"}).ok()) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return ::testing::AssertionFailure() << "localvold did not answer within 30 s\n" << Log();
  }

  // SIGTERM; returns the wait status (or -1 on timeout).
  int Stop() {
    process_.Signal(SIGTERM);
    auto st = process_.Wait(std::chrono::seconds(60));
    return st ? *st : -1;
  }
  void Kill9() { process_.Kill(); }
  void Signal(int sig) { process_.Signal(sig); }
  // Waits for it to exit by itself; its wait status, or nullopt on timeout.
  std::optional<int> WaitExit(std::chrono::milliseconds timeout) { return process_.Wait(timeout); }
  bool running() { return process_.running() && !process_.TryWait(); }

  CommandResult Ctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {LOCALVOLCTL_BIN, "--socket", dirs_.socket()});
    return RunCommand(args, std::chrono::seconds(120));
  }

  std::string Log() const { return ReadOr(dirs_.Sub("localvold.log"), "(no log)"); }

 private:
  const AgentDirs& dirs_;
  Subprocess process_;
};

// The fixture of the daemon tests: root only, fresh AgentDirs, one Daemon
// (stopped at the end, its log printed when the test failed) and loop disks.
class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
    auto d = AgentDirs::Create();
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dirs_ = std::move(d).value();
    daemon_ = std::make_unique<Daemon>(*dirs_);
  }
  void TearDown() override {
    if (daemon_ && daemon_->running()) daemon_->Stop();
    if (HasFailure() && daemon_) std::cerr << "localvold log:\n" << daemon_->Log();
    daemon_.reset();
    dirs_.reset();
    loops_.clear();
  }

  // `n` fresh blank loop devices.
  std::vector<std::string> Loops(int n, uint64_t size = RawLoop::kDefaultSize) {
    std::vector<std::string> devices;
    for (int i = 0; i < n; ++i) {
      auto l = RawLoop::Create(size);
      EXPECT_TRUE(l.ok()) << l.status().ToString();
      if (!l.ok()) return devices;
      devices.push_back((*l)->device());
      loops_.push_back(std::move(l).value());
    }
    return devices;
  }

  std::vector<std::unique_ptr<RawLoop>> loops_;
  std::unique_ptr<AgentDirs> dirs_;
  std::unique_ptr<Daemon> daemon_;
};

}  // namespace localvol::testing
