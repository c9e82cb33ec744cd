// FuseServer: one localvol-fuse process serving a volume, as it runs in
// production (`localvol-fuse SOURCE MOUNTPOINT --capacity SIZE --foreground`).
//
// Start() returns once /proc/self/mountinfo shows MOUNTPOINT as fuse.localvol
// (10 s at most). The destructor stops the server (SIGTERM, then SIGKILL) and
// lazily unmounts whatever is left, so a failing test never leaks a mount.
// Kill9() simulates a crash and leaves the dead (ENOTCONN) mount in place
// until Restart(), DetachDeadMount() or the destructor.
//
// Start() also checks the server answers: a statfs on the mount from a child
// process must return within 10 s. A watchdog thread kills a server that runs
// past FuseServerOptions::watchdog.
// Not thread-safe; owned by one test.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {

struct FuseServerOptions {
  std::string source;      // backing directory
  std::string mountpoint;  // must exist and not be a mount point
  std::string capacity;    // as given on the command line, e.g. "512Mi"
  std::optional<uint64_t> inodes;
  std::vector<std::string> extra_args;
  // If the server is still running this long after it started, the watchdog
  // SIGKILLs it: a hung server then turns into ENOTCONN failures instead of a
  // test stuck forever in a syscall on the mount.
  std::chrono::seconds watchdog{120};
};

class FuseServer {
 public:
  static constexpr std::chrono::milliseconds kMountTimeout{10000};

  // True if the localvol-fuse binary was built (LOCALVOL_FUSE_BIN).
  static bool Available();
  // Path of the binary, or "" when it was not built.
  static std::string BinaryPath();
  // The argument vector Start() runs.
  static std::vector<std::string> CommandLine(const FuseServerOptions& options);

  // Spawns the server and waits for the mount. On failure nothing is left
  // running or mounted, and the Status carries the server's output.
  static Result<std::unique_ptr<FuseServer>> Start(const FuseServerOptions& options);
  ~FuseServer();
  FuseServer(const FuseServer&) = delete;
  FuseServer& operator=(const FuseServer&) = delete;

  // SIGTERM and wait (10 s). Fails if the server exits non-zero, must be
  // killed, or leaves the mount behind (which is then detached).
  Status Stop();
  // SIGKILL and reap: a crash. The mount stays, dead, until detached.
  void Kill9();
  // Lazily unmounts a dead mount left by Kill9().
  Status DetachDeadMount();
  // Stop() (or detach after Kill9) and start again with the same options.
  Status Restart();

  bool running() const { return process_.running(); }
  // True if the watchdog had to kill the server.
  bool watchdog_fired() const { return watchdog_fired_; }
  pid_t pid() const { return process_.pid(); }
  const std::string& mountpoint() const { return options_.mountpoint; }
  const FuseServerOptions& options() const { return options_; }
  // Everything the server printed so far (all runs).
  std::string Log() const;
  const std::string& log_path() const { return log_path_; }

 private:
  FuseServer() = default;
  Status Launch();
  Status Probe();
  void StartWatchdog();
  void StopWatchdog();

  FuseServerOptions options_;
  TempDir log_dir_;
  std::string log_path_;
  Subprocess process_;
  int owner_ = -1;
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;  // guarded by watchdog_mu_
  std::atomic<bool> watchdog_fired_{false};
};

}  // namespace localvol::testing
