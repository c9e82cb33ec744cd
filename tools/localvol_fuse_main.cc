// localvol-fuse: serves one directory as one localvol volume.
//
//   localvol-fuse SOURCE_DIR MOUNTPOINT --capacity SIZE [--inodes N] [--foreground]
//                 [--name NAME] [--threads N] [--cache-timeout SECONDS] [--log-level LEVEL]
//                 [--io-uring[=DEPTH]] [--no-thread-placement]
//                 [--read-iops N] [--write-bps SIZE] [--read-iops-burst N] ... [--weight W]
//
// The I/O limit flags are the settings of iopath/io_limits.h (IoLimitKeys()).
//
// Without --foreground it detaches once the volume is mounted, and its exit
// status tells whether the mount succeeded. SIGINT/SIGTERM unmount cleanly.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "base/size.h"
#include "fuse/volume.h"
#include "iopath/engine.h"

namespace {

using localvol::Result;
using localvol::Status;

constexpr const char* kUsage =
    "usage: localvol-fuse SOURCE_DIR MOUNTPOINT --capacity SIZE [--inodes N] [--foreground]\n"
    "                     [--name NAME] [--threads N] [--cache-timeout SECONDS]\n"
    "                     [--log-level LEVEL] [--io-uring[=DEPTH]] [--no-thread-placement]\n"
    "                     [--read-passthrough=MODE] [I/O limits]\n"
    "  SIZE: bytes, or with a suffix such as 500M or 10Gi\n"
    "  --threads N: FUSE worker threads (default: 2 per CPU, at least 4)\n"
    "  --io-uring[=DEPTH]: take requests through FUSE over io_uring, DEPTH entries per CPU\n"
    "              (default 32), when the kernel offers it (fuse module parameter enable_uring)\n"
    "  --no-thread-placement: leave the serving threads to the scheduler instead of placing\n"
    "              them on CPUs (a heuristic tuned on a 2-CPU machine)\n"
    "  --read-passthrough=auto|off: auto (default): read-only opens are served by kernel\n"
    "              FUSE passthrough where the kernel offers it, unless a read limit is set\n"
    "              (this server's volume shares its disk with no other);\n"
    "              off: every read goes through this server\n"
    "  I/O limits: --{read,write}-{iops,bps} RATE, --{read,write}-{iops,bps}-burst RATE,\n"
    "              --{read,write}-{iops,bps}-burst-seconds S (1..3600), --weight W (1..10000);\n"
    "              *-bps rates are bytes/s and take size suffixes\n";

struct Args {
  std::string source;
  std::string mountpoint;
  uint64_t capacity = 0;
  uint64_t inodes = 0;
  bool foreground = false;
  std::string name;
  unsigned threads = localvol::fuse::DefaultWorkerThreads();
  unsigned io_uring_depth = 0;  // 0: serve /dev/fuse only
  bool thread_placement = true;
  bool read_passthrough = true;
  double cache_timeout_s = 3600;
  std::string log_level = "info";
  localvol::iopath::IoLimits io_limits;
};

// "--read-iops" -> "read-iops" if it names an I/O limit setting.
std::optional<std::string> IoLimitKey(const std::string& arg) {
  if (arg.rfind("--", 0) != 0) return std::nullopt;
  const std::string key = arg.substr(2);
  const auto& keys = localvol::iopath::IoLimitKeys();
  if (std::find(keys.begin(), keys.end(), key) == keys.end()) return std::nullopt;
  return key;
}

Result<uint64_t> ParseCount(const std::string& flag, const std::string& text) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v == 0) {
    return Status::Error(EINVAL, flag + " takes a positive whole number, not '" + text + "'");
  }
  return v;
}

Result<Args> ParseArgs(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  bool have_capacity = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= argc) return Status::Error(EINVAL, arg + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "--capacity") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto size = localvol::ParseSize(*v);
      if (!size.ok()) return Status::Error(size.err(), "--capacity: " + size.status().context());
      if (*size == 0) return Status::Error(EINVAL, "--capacity must be greater than zero");
      args.capacity = *size;
      have_capacity = true;
    } else if (arg == "--inodes") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto n = ParseCount(arg, *v);
      if (!n.ok()) return n.status();
      if (*n > localvol::fuse::kMaxInodeLimit) {
        return Status::Error(EINVAL, "--inodes takes at most " +
                                         std::to_string(localvol::fuse::kMaxInodeLimit) +
                                         ", not '" + *v + "'");
      }
      args.inodes = *n;
    } else if (arg == "--threads") {
      auto v = value();
      if (!v.ok()) return v.status();
      auto n = ParseCount(arg, *v);
      if (!n.ok()) return n.status();
      if (*n > 256) return Status::Error(EINVAL, "--threads must be at most 256");
      args.threads = static_cast<unsigned>(*n);
    } else if (arg == "--io-uring" || arg.rfind("--io-uring=", 0) == 0) {
      args.io_uring_depth = localvol::fuse::VolumeOptions().fuse_io_uring_depth;
      if (arg.size() > std::string("--io-uring").size()) {
        auto n = ParseCount("--io-uring", arg.substr(std::string("--io-uring=").size()));
        if (!n.ok()) return n.status();
        if (*n < 1 || *n > 1024) return Status::Error(EINVAL, "--io-uring depth must be 1..1024");
        args.io_uring_depth = static_cast<unsigned>(*n);
      }
    } else if (arg == "--no-thread-placement") {
      args.thread_placement = false;
    } else if (arg == "--read-passthrough" || arg.rfind("--read-passthrough=", 0) == 0) {
      std::string mode;
      if (arg == "--read-passthrough") {
        auto v = value();
        if (!v.ok()) return v.status();
        mode = *v;
      } else {
        mode = arg.substr(std::string("--read-passthrough=").size());
      }
      if (mode != "auto" && mode != "off") {
        return Status::Error(EINVAL, "--read-passthrough takes auto or off, not '" + mode + "'");
      }
      args.read_passthrough = mode == "auto";
    } else if (arg == "--cache-timeout") {
      auto v = value();
      if (!v.ok()) return v.status();
      double seconds = -1;
      auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), seconds);
      if (ec != std::errc() || end != v->data() + v->size() || seconds < 0) {
        return Status::Error(EINVAL, "--cache-timeout takes seconds (0 or more), not '" + *v + "'");
      }
      args.cache_timeout_s = seconds;
    } else if (arg == "--name") {
      auto v = value();
      if (!v.ok()) return v.status();
      args.name = *v;
    } else if (arg == "--log-level") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (spdlog::level::from_str(*v) == spdlog::level::off && *v != "off") {
        return Status::Error(EINVAL, "--log-level: unknown level '" + *v +
                                         "' (trace, debug, info, warn, error, off)");
      }
      args.log_level = *v;
    } else if (auto key = IoLimitKey(arg)) {
      auto v = value();
      if (!v.ok()) return v.status();
      Status set = localvol::iopath::SetIoLimit(&args.io_limits, *key, *v);
      if (!set.ok()) return Status::Error(EINVAL, "--" + set.context());
    } else if (arg == "--foreground" || arg == "-f") {
      args.foreground = true;
    } else if (arg == "--help" || arg == "-h") {
      return Status::Error(0, "help");
    } else if (arg.size() > 1 && arg[0] == '-') {
      return Status::Error(EINVAL, "unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    return Status::Error(EINVAL, "expected SOURCE_DIR and MOUNTPOINT, got " +
                                     std::to_string(positional.size()) + " arguments");
  }
  if (!have_capacity) return Status::Error(EINVAL, "--capacity is required");
  if (Status s = localvol::iopath::ValidateIoLimits(args.io_limits); !s.ok()) {
    return Status::Error(EINVAL, "I/O limits: --" + s.context());
  }
  args.source = positional[0];
  args.mountpoint = positional[1];
  return args;
}

// Serves until a signal or an external unmount. Returns the exit status.
int Serve(const Args& args, int ready_fd) {
  auto log = localvol::GetLogger("localvol-fuse");
  // Signals are taken synchronously by this thread; every thread created from
  // here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    log->critical("cannot ignore SIGPIPE: {}", std::strerror(errno));
    return 1;
  }

  auto report = [&](char status) {
    if (ready_fd >= 0) {
      (void)!write(ready_fd, &status, 1);
      close(ready_fd);
      ready_fd = -1;
    }
  };
  auto engine = localvol::iopath::Engine::Create();
  if (!engine.ok()) {
    log->error("{}", engine.status().ToString());
    report(1);
    return 1;
  }
  localvol::fuse::VolumeOptions options;
  options.source_dir = args.source;
  options.mountpoint = args.mountpoint;
  options.name = args.name;
  options.capacity_bytes = args.capacity;
  options.inode_limit = args.inodes;
  options.engine = engine->get();
  options.max_threads = args.threads;
  options.cache_timeout_s = args.cache_timeout_s;
  options.io_limits = args.io_limits;
  options.fuse_io_uring = args.io_uring_depth > 0;
  options.thread_placement = args.thread_placement;
  if (options.fuse_io_uring) options.fuse_io_uring_depth = args.io_uring_depth;
  options.read_passthrough = args.read_passthrough;
  auto volume = localvol::fuse::Volume::Mount(options);
  if (!volume.ok()) {
    log->error("{}", volume.status().ToString());
    report(1);
    return 1;
  }
  const bool detached = ready_fd >= 0;
  report(0);
  if (detached) {
    // Whoever started us may be waiting for our stderr to close (a pipe).
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd >= 0) dup2(null_fd, STDERR_FILENO);
  }

  // An unmount from outside (umount, fusermount -u) ends the session; wake
  // the signal wait so the volume is torn down the same way.
  std::thread watcher([v = volume->get()] {
    v->WaitUntilUnmounted();
    kill(getpid(), SIGHUP);
  });
  int sig = 0;
  sigwait(&signals, &sig);
  log->info("{}; unmounting {}", sig == SIGHUP ? "volume unmounted" : strsignal(sig),
            (*volume)->mountpoint());
  Status s = (*volume)->Unmount();
  watcher.join();
  volume->reset();
  if (!s.ok()) {
    log->error("{}", s.ToString());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = localvol::GetLogger("localvol-fuse");
  auto args = ParseArgs(argc, argv);
  if (!args.ok()) {
    if (args.err() == 0) {
      log->info("{}", kUsage);
      return 0;
    }
    log->error("{}\n{}", args.status().context(), kUsage);
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(args->log_level));
  log->set_level(spdlog::get_level());
  if (geteuid() != 0) {
    log->error(
        "localvol-fuse must run as root (it mounts with allow_other and creates files "
        "as the calling users)");
    return 1;
  }
  // Detaching changes the working directory; relative paths must not change meaning.
  for (std::string* path : {&args->source, &args->mountpoint}) {
    if (!path->empty() && (*path)[0] != '/') {
      char cwd[PATH_MAX];
      if (getcwd(cwd, sizeof cwd) != nullptr) *path = std::string(cwd) + "/" + *path;
    }
  }
  if (args->foreground) return Serve(*args, -1);

  // Detach only once the mount is up, so the exit status reports the mount.
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    log->error("pipe: {}", std::strerror(errno));
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    log->error("fork: {}", std::strerror(errno));
    return 1;
  }
  if (pid > 0) {
    close(pipe_fds[1]);
    char status = 1;
    if (read(pipe_fds[0], &status, 1) != 1) status = 1;
    return status;
  }
  close(pipe_fds[0]);
  setsid();
  if (chdir("/") != 0) return 1;
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
  }
  return Serve(*args, pipe_fds[1]);
}
