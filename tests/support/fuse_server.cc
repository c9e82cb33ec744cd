#include "tests/support/fuse_server.h"

#include <signal.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "tests/support/mounts.h"
#include "tests/support/sys.h"

namespace localvol::testing {

namespace {
constexpr const char* kFsType = "fuse.localvol";
}

bool FuseServer::Available() { return !BinaryPath().empty(); }

std::string FuseServer::BinaryPath() {
#ifdef LOCALVOL_FUSE_BIN
  return LOCALVOL_FUSE_BIN;
#else
  return "";
#endif
}

std::vector<std::string> FuseServer::CommandLine(const FuseServerOptions& o) {
  std::vector<std::string> argv = {BinaryPath(), o.source, o.mountpoint, "--capacity", o.capacity};
  if (o.inodes) {
    argv.push_back("--inodes");
    argv.push_back(std::to_string(*o.inodes));
  }
  argv.push_back("--foreground");
  for (const auto& a : o.extra_args) argv.push_back(a);
  return argv;
}

Result<std::unique_ptr<FuseServer>> FuseServer::Start(const FuseServerOptions& options) {
  if (!Available()) return Status::Error(ENOENT, "localvol-fuse was not built");
  std::unique_ptr<FuseServer> s(new FuseServer());
  s->owner_ = ::getpid();
  s->options_ = options;
  auto dir = TempDir::Create("lvlog");
  if (!dir.ok()) return dir.status();
  s->log_dir_ = std::move(*dir);
  s->log_path_ = s->log_dir_.Sub("server.log");
  Status st = s->Launch();
  if (!st.ok()) return st;
  return s;
}

Status FuseServer::Launch() {
  if (IsMountPoint(options_.mountpoint)) {
    return Status::Error(EBUSY, options_.mountpoint + " is already a mount point");
  }
  StopWatchdog();
  auto p = Subprocess::Spawn(CommandLine(options_), log_path_);
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  const auto deadline = std::chrono::steady_clock::now() + kMountTimeout;
  for (;;) {
    if (IsMountedAs(options_.mountpoint, kFsType)) {
      StartWatchdog();
      Status st = Probe();
      if (!st.ok()) {
        StopWatchdog();
        process_.Kill();
        (void)LazyUnmountAll(options_.mountpoint);
        return Status::Error(st.err(), st.context() + "; output: " + Log());
      }
      return Status::Ok();
    }
    if (auto ws = process_.TryWait()) {
      (void)LazyUnmountAll(options_.mountpoint);
      return Status::Error(EIO, "localvol-fuse ended before mounting (" + DescribeWaitStatus(*ws) +
                                    "); output: " + Log());
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      process_.Kill();
      (void)LazyUnmountAll(options_.mountpoint);
      return Status::Error(ETIMEDOUT, "localvol-fuse did not mount " + options_.mountpoint +
                                          " within 10 s; output: " + Log());
    }
    std::this_thread::sleep_for(10ms);
  }
}

Status FuseServer::Probe() {
  const std::string mp = options_.mountpoint;
  std::string payload;
  Status st = ForkAndCollect(
      nullptr,
      [&](int wfd) {
        struct statvfs sv {};
        int err = ::statvfs(mp.c_str(), &sv) == 0 ? 0 : errno;
        (void)!::write(wfd, &err, sizeof(err));
      },
      &payload, kMountTimeout);
  if (!st.ok()) {
    return Status::Error(st.err(), "localvol-fuse mounted " + mp +
                                       " but statfs on it did not complete within 10 s (" +
                                       st.context() + ")");
  }
  int err = 0;
  if (payload.size() == sizeof(err)) std::memcpy(&err, payload.data(), sizeof(err));
  if (err != 0) return Status::Error(err, "statfs on the fresh mount " + mp + " failed");
  return Status::Ok();
}

void FuseServer::StartWatchdog() {
  StopWatchdog();
  watchdog_stop_ = false;
  const int pidfd = process_.pidfd();
  const auto limit = options_.watchdog;
  watchdog_ = std::thread([this, pidfd, limit] {
    std::unique_lock lock(watchdog_mu_);
    if (watchdog_cv_.wait_for(lock, limit, [this] { return watchdog_stop_; })) return;
    watchdog_fired_ = true;
    std::cout << "[watchdog] localvol-fuse on " << options_.mountpoint << " still running after "
              << limit.count() << " s; sending SIGKILL" << std::endl;
    if (pidfd >= 0) ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  });
}

void FuseServer::StopWatchdog() {
  if (!watchdog_.joinable()) return;
  {
    std::lock_guard lock(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
  watchdog_.join();
}

Status FuseServer::Stop() {
  StopWatchdog();
  if (!process_.running()) return DetachDeadMount();
  process_.Signal(SIGTERM);
  auto ws = process_.Wait(10s);
  Status st;
  if (!ws) {
    int killed = process_.Kill();
    st = Status::Error(ETIMEDOUT, "localvol-fuse ignored SIGTERM for 10 s; killed (" +
                                      DescribeWaitStatus(killed) + ")");
  } else if (!WIFEXITED(*ws) || WEXITSTATUS(*ws) != 0) {
    st = Status::Error(EIO, "localvol-fuse ended with " + DescribeWaitStatus(*ws) +
                                " after SIGTERM; output: " + Log());
  }
  if (IsMountPoint(options_.mountpoint)) {
    (void)LazyUnmountAll(options_.mountpoint);
    if (st.ok()) st = Status::Error(EBUSY, "localvol-fuse exited but left its mount behind");
  }
  return st;
}

void FuseServer::Kill9() {
  StopWatchdog();
  process_.Kill();
}

Status FuseServer::DetachDeadMount() { return LazyUnmountAll(options_.mountpoint); }

Status FuseServer::Restart() {
  Status st = Stop();
  if (!st.ok()) return st;
  return Launch();
}

std::string FuseServer::Log() const {
  auto text = ReadFile(log_path_);
  if (!text.ok()) return "(no log: " + text.status().ToString() + ")";
  constexpr size_t kMax = 8000;
  if (text->size() > kMax) return "..." + text->substr(text->size() - kMax);
  return *text;
}

FuseServer::~FuseServer() {
  if (owner_ != ::getpid()) return;
  StopWatchdog();
  if (process_.running()) {
    process_.Signal(SIGTERM);
    if (!process_.Wait(10s)) process_.Kill();
  }
  (void)LazyUnmountAll(options_.mountpoint);
}

}  // namespace localvol::testing
