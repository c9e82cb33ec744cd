#include "agent/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <sys/file.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "agent/api_server.h"
#include "agent/config.h"
#include "agent/csi/csi_server.h"
#include "agent/disk_manager.h"
#include "agent/metrics.h"
#include "agent/system.h"
#include "agent/volume_manager.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "iopath/engine.h"

namespace localvol::agent {
namespace {

// "<3>" style prefixes: journald reads the priority from them (sd-daemon(3)).
class SdPriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static const char* kPrefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = kPrefix[static_cast<int>(msg.level)];
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return spdlog::details::make_unique<SdPriorityFlag>();
  }
};

void SetUpLogging(const std::string& level) {
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    // Under systemd: journald adds the time; give it the priority instead.
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<SdPriorityFlag>('*').set_pattern("%*[%n] %v");
    spdlog::set_formatter(std::move(f));
  } else {
    spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %v");
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

void Notify(const std::string& state) { sd_notify(0, state.c_str()); }

std::string Plural(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

// The command line.
struct DaemonArgs {
  std::string config_path = kDefaultConfigPath;
  bool config_given = false;
  std::string log_level;  // "": the configuration's
  std::string csi_socket;
  bool csi_socket_given = false;
  bool csi_controller_only = false;
};

// Parses the command line into `args`; returns an exit status when the
// process must stop now (--help: 0, bad arguments: 2).
std::optional<int> ParseArgs(int argc, char** argv, DaemonArgs* args) {
  CLI::App app{"localvold: the localvol node agent"};
  auto* config_opt =
      app.add_option("--config", args->config_path, "YAML configuration")->capture_default_str();
  app.add_option("--log-level", args->log_level,
                 "trace, debug, info, warn, error, critical or off (overrides the config)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto* csi_socket_opt =
      app.add_option("--csi-socket", args->csi_socket, "the CSI socket (overrides csi_socket)");
  app.add_flag("--csi-controller-only", args->csi_controller_only,
               "serve only CSI Identity, ControllerGetCapabilities and NodeGetCapabilities on "
               "--csi-socket, for the central csi-resizer; touches no disk");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  args->config_given = config_opt->count() > 0;
  args->csi_socket_given = csi_socket_opt->count() > 0;
  return std::nullopt;
}

// Signals go to the main thread only: blocks them before any thread starts.
// SIGUSR1 and SIGUSR2 would end the agent, and every volume with it, by
// default: they are taken here too, logged and ignored. SIGPIPE is ignored
// outright: a write to a closed socket fails with EPIPE where it happens.
// Fills `signals` with the set the main loop waits for.
Status BlockSignals(sigset_t* signals) {
  sigemptyset(signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(signals, s);
  pthread_sigmask(SIG_BLOCK, signals, nullptr);
  if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR) return Status::FromErrno("cannot ignore SIGPIPE");
  return Status::Ok();
}

// The configuration, with the command line's overrides, and logging set up
// by it; or its failure, already logged and told to systemd (the caller
// exits 2).
Result<Config> LoadDaemonConfig(const DaemonArgs& args) {
  Config config;
  auto loaded = LoadConfig(args.config_path);
  if (loaded.ok()) {
    config = std::move(loaded).value();
  } else if (loaded.err() == ENOENT && !args.config_given) {
    config.source = "(built-in defaults: " + args.config_path + " does not exist)";
  } else {
    SetUpLogging("info");
    GetLogger("agent")->critical("{}", loaded.status().err() == EINVAL
                                           ? loaded.status().context()
                                           : loaded.status().ToString());
    Notify("STATUS=bad configuration: " + loaded.status().context());
    return loaded.status();
  }
  if (!args.log_level.empty()) config.log_level = args.log_level;
  if (args.csi_socket_given) config.csi_socket = args.csi_socket;
  SetUpLogging(config.log_level);
  return config;
}

// Takes the state directory's lock (one agent per state directory), held
// while `lock` stays open. Returns false after logging why not.
bool LockStateDir(const Config& config, UniqueFd* lock, spdlog::logger& log) {
  if (Status st = MakeDirs(config.state_dir, 0755); !st.ok()) {
    log.critical("state directory: {}", st.ToString());
    return false;
  }
  const std::string lock_path = config.state_dir + "/localvold.lock";
  auto fd = OpenAt(AT_FDCWD, lock_path, O_RDWR | O_CREAT, 0600);
  if (!fd.ok()) {
    log.critical("open {}: {}", lock_path, fd.status().ToString());
    return false;
  }
  if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
    log.critical("another localvold is running with the state directory {} (it holds {})",
                 config.state_dir, lock_path);
    return false;
  }
  *lock = std::move(fd).value();
  return true;
}

// Everything checked before any disk is touched: the sockets are free, the
// CSI node name resolves (into `node_name`), and this kernel can run an
// io_uring engine at all. Returns the exit status to stop with, if any.
std::optional<int> Preflight(const Config& config, std::string* node_name, spdlog::logger& log) {
  if (Status st = ApiServer::CheckSocketFree(config.socket); !st.ok()) {
    log.critical("API: {}", st.context());
    return 1;
  }
  if (!config.csi_socket.empty()) {
    auto node = csi::ResolveNodeName(config.node_name);
    if (!node.ok()) {
      log.critical("CSI: {}", node.status().context());
      return 2;
    }
    *node_name = *node;
    if (Status st = ApiServer::CheckSocketFree(config.csi_socket); !st.ok()) {
      log.critical("CSI: {}", st.context());
      return 1;
    }
  }
  // Every disk gets its own engine once attached (VolumeManager::Start); check
  // here, before any disk is touched, that this kernel can run one at all.
  if (auto probe = iopath::Engine::Create(); !probe.ok()) {
    log.critical("io_uring data path: {}", probe.status().ToString());
    return 1;
  }
  return std::nullopt;
}

// "serving 2 of 3 volumes on 1 disk (1 refused)", for systemd's STATUS=.
std::string StatusLine(const VolumeManager& volumes, const DiskManager& disks) {
  const auto list = volumes.List();
  size_t ready = 0;
  for (const auto& v : list) ready += v.state == "ready";
  return "serving " + std::to_string(ready) + " of " + Plural(list.size(), "volume") + " on " +
         Plural(disks.disks().size(), "disk") +
         (disks.refusals().empty() ? ""
                                   : " (" + std::to_string(disks.refusals().size()) + " refused)");
}

// The servers that answer callers, started once the volumes are mounted.
struct Frontends {
  std::unique_ptr<ApiServer> api;
  std::unique_ptr<csi::CsiServer> csi;     // null without a CSI socket
  std::unique_ptr<MetricsServer> metrics;  // null without metrics
  void Stop() {
    if (api) api->Shutdown();
    if (csi) csi->Shutdown();
    if (metrics) metrics->Stop();
  }
};

// Starts the API, the CSI driver and metrics over `volumes`. Fails (after
// stopping what it started) when the API or the CSI driver cannot serve;
// metrics that cannot start are logged and left out.
Result<Frontends> StartFrontends(const Config& config, const std::string& node_name,
                                 VolumeManager* volumes, spdlog::logger& log) {
  Frontends f;
  auto api = ApiServer::Start(config.socket, volumes);
  if (!api.ok()) return Status::Error(api.err(), "API: " + api.status().ToString());
  f.api = std::move(api).value();
  if (!config.csi_socket.empty()) {
    auto c = csi::CsiServer::Start(config.csi_socket, volumes, node_name);
    if (!c.ok()) {
      f.Stop();
      return Status::Error(c.err(), "CSI: " + c.status().ToString());
    }
    f.csi = std::move(c).value();
  }
  if (config.metrics_port != 0) {
    auto m = MetricsServer::Start(config.metrics_port, volumes);
    if (m.ok()) {
      f.metrics = std::move(m).value();
    } else {
      // Storage keeps working without metrics; say so loudly.
      log.error("{}; running without metrics", m.status().ToString());
    }
  }
  return f;
}

// Waits for SIGTERM or SIGINT; in between, pings the systemd watchdog (after
// checking that the volumes' locks can be taken) and refreshes STATUS=.
void WaitForStop(const sigset_t& signals, const VolumeManager& volumes, const DiskManager& disks,
                 spdlog::logger& log) {
  uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  const auto tick = watchdog ? std::chrono::microseconds(watchdog_usec / 2)
                             : std::chrono::microseconds(10'000'000);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(tick);
  const timespec ts{
      static_cast<time_t>(secs.count()),
      static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(tick - secs).count())};
  auto last_status = std::chrono::steady_clock::now();
  for (;;) {
    siginfo_t info;
    const int sig = sigtimedwait(&signals, &info, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      log.info("{}: stopping", strsignal(sig));
      return;
    }
    if (sig == SIGHUP) {
      log.warn(
          "SIGHUP: reloading the configuration is not supported; restart localvold to apply "
          "changes");
      continue;
    }
    if (sig == SIGUSR1 || sig == SIGUSR2) {
      log.warn("{}: ignoring it (localvold stops on SIGTERM or SIGINT)",
               sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
      continue;
    }
    if (watchdog) {
      volumes.Ping();  // blocks if the agent is deadlocked: then no ping
      Notify("WATCHDOG=1");
    }
    if (std::chrono::steady_clock::now() - last_status > std::chrono::seconds(30)) {
      Notify("STATUS=" + StatusLine(volumes, disks));
      last_status = std::chrono::steady_clock::now();
    }
  }
}

// Attaches the disks, mounts the volumes, serves them until SIGTERM or
// SIGINT, then stops everything in reverse. Returns the exit status.
int Serve(const Config& config, const std::string& node_name, const sigset_t& signals,
          spdlog::logger& log) {
  PosixCommandRunner runner;
  DiskManager disks(config, &runner);
  Notify("STATUS=attaching disks");
  if (Status st = disks.AttachAll(); !st.ok()) {
    log.critical("{}", st.ToString());
    return 1;
  }
  VolumeManagerOptions vo;
  vo.publish_dir = config.publish_dir;
  vo.engine_options.policy = config.io_scheduler;
  vo.engine_options.contended_in_flight_cost = config.io_contended_in_flight;
  vo.fuse_io_uring = config.fuse_io_uring;
  vo.fuse_thread_placement = config.fuse_thread_placement;
  vo.read_passthrough = config.read_passthrough;
  VolumeManager volumes(vo, &disks);
  Notify("STATUS=mounting volumes");
  const auto fail = [&](const std::string& why) {
    log.critical("{}", why);
    volumes.Shutdown();
    disks.DetachAll();
    return 1;
  };
  if (Status st = volumes.Start(); !st.ok()) return fail(st.ToString());
  auto frontends = StartFrontends(config, node_name, &volumes, log);
  if (!frontends.ok()) return fail(frontends.status().context());
  const std::string status = StatusLine(volumes, disks);
  Notify("READY=1\nSTATUS=" + status);
  log.info("ready: {}", status);

  WaitForStop(signals, volumes, disks, log);

  Notify("STOPPING=1\nSTATUS=unmounting volumes");
  frontends->Stop();
  volumes.Shutdown();
  disks.DetachAll();
  log.info("stopped");
  return 0;
}

}  // namespace

int RunDaemon(int argc, char** argv) {
  DaemonArgs args;
  if (auto exit = ParseArgs(argc, argv, &args)) return *exit;
  sigset_t signals;
  if (Status st = BlockSignals(&signals); !st.ok()) {
    GetLogger("localvold")->critical("{}", st.ToString());
    return 1;
  }
  if (args.csi_controller_only) {
    SetUpLogging(args.log_level.empty() ? "info" : args.log_level);
    return csi::RunControllerOnly(args.csi_socket.empty() ? kDefaultCsiSocketPath
                                                          : args.csi_socket);
  }
  auto config = LoadDaemonConfig(args);
  if (!config.ok()) return 2;
  auto log = GetLogger("agent");
  log->info("localvold starting; configuration {}", config->source);
  if (::geteuid() != 0) {
    log->critical(
        "localvold must run as root: it formats and mounts disks and serves FUSE volumes");
    return 1;
  }
  UniqueFd lock;
  if (!LockStateDir(*config, &lock, *log)) return 1;
  std::string node_name;
  if (auto exit = Preflight(*config, &node_name, *log)) return *exit;
  return Serve(*config, node_name, signals, *log);
}

}  // namespace localvol::agent
