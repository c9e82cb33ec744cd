// localvold and localvolctl as an operator runs them: the real binaries, the
// real Unix socket, loop disks the test creates. Covers the CLI end to end
// (tables, JSON, exit codes, every error class), SIGTERM, kill -9 in the
// middle of writes with the data verified after the restart, config errors,
// the embedded disk, metrics, and a second instance.
// gRPC first, without abseil's lock-annotation macros (agent/grpcpp.h).
#include "tests/agent_daemon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "agent/grpcpp.h"
#include "agent/loop_device.h"
#include "agent/proto/localvol.grpc.pb.h"
#include "fuse/volume.h"
#include "tests/agent_fixtures.h"
#include "tests/support/fuse_uring_switch.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

constexpr uint64_t kMi = 1ull << 20;

class AgentDaemonTest : public DaemonTest {
 protected:
  // Asserts the command failed with `exit_code` and `text` in its stderr.
  static void ExpectFails(const CommandResult& r, int exit_code, const std::string& text) {
    EXPECT_EQ(r.exit_code, exit_code) << r.Summary();
    EXPECT_NE(r.err.find(text), std::string::npos) << r.Summary();
  }

  bool NothingMountedBelow(std::string* what) const {
    for (const auto& e : ReadMountTable()) {
      if (e.mount_point.rfind(dirs_->root() + "/", 0) == 0) {
        *what += e.mount_point + " ";
      }
    }
    return what->empty();
  }
};

TEST_F(AgentDaemonTest, CliEndToEnd) {
  auto devices = Loops(2);
  ASSERT_EQ(devices.size(), 2u);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());

  // The socket is root's alone.
  struct stat st;
  ASSERT_EQ(::lstat(dirs_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);

  CommandResult r = daemon_->Ctl({"disk", "list"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(r.out.rfind("ID ", 0), 0u) << r.out;
  for (const auto& d : devices) EXPECT_NE(r.out.find(d), std::string::npos) << r.out;
  r = daemon_->Ctl({"-o", "json", "disk", "list"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"disks\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"state\": \"ready\""), std::string::npos) << r.out;

  r = daemon_->Ctl({"volume", "create", "web", "--size", "64Mi"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("ready"), std::string::npos) << r.out;
  const std::string mount = dirs_->publish() + "/web";
  EXPECT_TRUE(IsMountedAs(mount, "fuse.localvol"));
  EXPECT_EQ(StatFs(mount)->capacity(), 64 * kMi);
  CommandResult df = RunCommand({"df", "-B1", "--output=size", mount});
  EXPECT_NE(df.out.find(std::to_string(64 * kMi)), std::string::npos) << df.Summary();

  // Idempotent create; conflicting create; every error class.
  EXPECT_TRUE(daemon_->Ctl({"volume", "create", "web", "--size", "64Mi"}).ok());
  ExpectFails(daemon_->Ctl({"volume", "create", "web", "--size", "65Mi"}), 1,
              "AlreadyExists: volume web already exists");
  ExpectFails(daemon_->Ctl({"volume", "create", "Web_1", "--size", "1Gi"}), 2,
              "invalid volume name 'Web_1'");
  ExpectFails(daemon_->Ctl({"volume", "create", "huge", "--size", "100Gi"}), 1,
              "ResourceExhausted: no disk has 100Gi");
  ExpectFails(daemon_->Ctl({"volume", "create", "x", "--size", "1Mi", "--disk", "nosuchdisk"}), 1,
              "NotFound");
  ExpectFails(daemon_->Ctl({"volume", "inspect", "nope"}), 1, "NotFound: no volume named nope");
  ExpectFails(daemon_->Ctl({"volume", "resize", "nope", "--size", "1Gi"}), 1, "NotFound");
  ExpectFails(daemon_->Ctl({"volume", "delete", "nope"}), 1, "NotFound");
  // Usage errors exit 2 and never reach the agent.
  ExpectFails(daemon_->Ctl({"volume", "create", "x"}), 2, "--size");
  ExpectFails(daemon_->Ctl({"volume", "create", "x", "--size", "12XB"}), 2, "invalid size '12XB'");
  ExpectFails(daemon_->Ctl({"volume", "create", "x", "--size", "0"}), 2, "greater than zero");
  ExpectFails(daemon_->Ctl({"volume", "explode"}), 2, "explode");
  ExpectFails(daemon_->Ctl({"volume"}), 2, "volume: missing command");
  ExpectFails(daemon_->Ctl({"-o", "yaml", "volume", "list"}), 2, "yaml");
  EXPECT_EQ(daemon_->Ctl({}).exit_code, 2);
  // An agent that is not there.
  CommandResult gone =
      RunCommand({LOCALVOLCTL_BIN, "--socket", dirs_->Sub("nope.sock"), "volume", "list"});
  ExpectFails(gone, 3, "cannot reach localvold");

  r = daemon_->Ctl({"volume", "list"});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.out.find("web"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(mount), std::string::npos) << r.out;
  r = daemon_->Ctl({"volume", "list", "-o", "json"});  // flags after the subcommand work too
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"name\": \"web\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"capacity_bytes\": \"67108864\""), std::string::npos) << r.out;

  // Live resize, shrink refused below usage.
  ASSERT_TRUE(WriteFile(mount + "/data", RandomBytes(5, 10 * kMi)).ok());
  r = daemon_->Ctl({"volume", "resize", "web", "--size", "128Mi"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(StatFs(mount)->capacity(), 128 * kMi);
  ExpectFails(daemon_->Ctl({"volume", "resize", "web", "--size", "4Mi"}), 1,
              "FailedPrecondition: volume web: cannot shrink capacity");
  r = daemon_->Ctl({"volume", "inspect", "web"});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.out.find("128Mi"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FUSE ring:  not used"), std::string::npos) << r.out;

  // Delete: refused while busy, then done.
  int fd = ::open((mount + "/data").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ExpectFails(daemon_->Ctl({"volume", "delete", "web"}), 1,
              "FailedPrecondition: volume web is in use");
  ::close(fd);
  r = daemon_->Ctl({"volume", "delete", "web"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_FALSE(IsMountPoint(mount));
  r = daemon_->Ctl({"volume", "list"});
  EXPECT_NE(r.out.find("No volumes"), std::string::npos) << r.out;

  // SIGTERM: exit 0, nothing left mounted, socket gone.
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "left", "--size", "16Mi"}).ok());
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  std::string mounted;
  EXPECT_TRUE(NothingMountedBelow(&mounted)) << mounted;
  EXPECT_FALSE(Exists(dirs_->socket()));
}

TEST_F(AgentDaemonTest, CliIoLimits) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());
  auto limits_of = [&](const std::string& name) {
    CommandResult r = daemon_->Ctl({"volume", "inspect", name});
    EXPECT_TRUE(r.ok()) << r.Summary();
    const size_t at = r.out.find("I/O limits: ");
    if (at == std::string::npos) return "(no I/O limits line in:\n" + r.out + ")";
    return r.out.substr(at + 12, r.out.find('\n', at) - at - 12);
  };

  CommandResult r = daemon_->Ctl({"volume", "create", "db", "--size", "32Mi", "--read-iops", "500",
                                  "--write-bps", "100Mi", "--weight", "200"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("read-iops=500 write-bps=100Mi weight=200"), std::string::npos) << r.out;
  EXPECT_EQ(limits_of("db"), "read-iops=500 write-bps=100Mi weight=200");
  r = daemon_->Ctl({"-o", "json", "volume", "inspect", "db"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  for (const char* field :
       {"\"io_limits\"", "\"read_iops\"", "\"rate\": \"500\"", "\"rate\": \"104857600\"",
        "\"weight\": 200", "\"io_stats\"", "\"throttled_seconds\"", "\"queued\""}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field << " not in\n" << r.out;
  }
  // Create again: with other limits it is a conflict; without, a no-op.
  ExpectFails(daemon_->Ctl({"volume", "create", "db", "--size", "32Mi", "--read-iops", "1"}), 1,
              "AlreadyExists: volume db already exists with I/O limits");
  EXPECT_TRUE(daemon_->Ctl({"volume", "create", "db", "--size", "32Mi"}).ok());

  // set-limits merges into what is there; 0 removes one limit.
  ASSERT_TRUE(daemon_->Ctl({"volume", "set-limits", "db", "--write-iops", "100"}).ok());
  EXPECT_EQ(limits_of("db"), "read-iops=500 write-iops=100 write-bps=100Mi weight=200");
  ASSERT_TRUE(daemon_->Ctl({"volume", "set-limits", "db", "--read-iops", "0"}).ok());
  EXPECT_EQ(limits_of("db"), "write-iops=100 write-bps=100Mi weight=200");

  // Bad values and bad combinations: exit 2, nothing changed.
  ExpectFails(
      daemon_->Ctl({"volume", "set-limits", "db", "--write-iops-burst", "50"}), 2,
      "invalid I/O limits for volume db: write-iops-burst (50) must be above write-iops (100)");
  ExpectFails(daemon_->Ctl({"volume", "set-limits", "db", "--weight", "heavy"}), 2,
              "--weight: 'heavy'");
  ExpectFails(daemon_->Ctl({"volume", "set-limits", "db", "--write-bps", "fast"}), 2,
              "--write-bps");
  ExpectFails(daemon_->Ctl({"volume", "set-limits", "db"}), 2, "give at least one limit");
  ExpectFails(daemon_->Ctl({"volume", "create", "x", "--size", "8Mi", "--read-iops-burst", "9"}), 2,
              "invalid I/O limits: read-iops-burst is set but read-iops is not");
  EXPECT_EQ(limits_of("db"), "write-iops=100 write-bps=100Mi weight=200");
  ExpectFails(daemon_->Ctl({"volume", "inspect", "x"}), 1, "NotFound");
  ExpectFails(daemon_->Ctl({"volume", "set-limits", "nope", "--read-iops", "5"}), 1,
              "NotFound: no volume named nope");

  // --unlimited drops every rate limit, keeps the weight; flags given with it apply.
  r = daemon_->Ctl({"volume", "set-limits", "db", "--unlimited", "--read-bps", "20Mi",
                    "--read-bps-burst", "40Mi"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("read-bps=20Mi read-bps-burst=40Mi weight=200"), std::string::npos) << r.out;

  // The limits survive a restart of the agent.
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(limits_of("db"), "read-bps=20Mi read-bps-burst=40Mi weight=200");
  r = daemon_->Ctl({"volume", "set-limits", "db", "--unlimited", "--weight", "100"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(limits_of("db"), "unlimited weight=100");
}

TEST_F(AgentDaemonTest, Kill9InTheMiddleOfWritesThenRestart) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "db", "--size", "200Mi"}).ok());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "logs", "--size", "50Mi"}).ok());
  const std::string db = dirs_->publish() + "/db";
  // Durable data: written and fsynced before the crash.
  std::map<std::string, std::string> files;
  for (int i = 0; i < 8; ++i) {
    const std::string path = db + "/file-" + std::to_string(i);
    files[path] = RandomBytes(100 + i, (1 + i) * kMi);
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(PwriteAll(fd, files[path], 0).err, 0);
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  // A writer that is still busy when the agent dies.
  Subprocess writer = std::move(Subprocess::Spawn({"dd", "if=/dev/zero", "of=" + db + "/in-flight",
                                                   "bs=1M", "count=100000", "oflag=sync"},
                                                  dirs_->Sub("dd.log"))
                                    .value());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  daemon_->Kill9();
  // The writer fails (ENOTCONN) rather than hanging.
  auto wstatus = writer.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(wstatus.has_value()) << "a writer hung on the dead volume";
  struct statfs sfs;
  EXPECT_NE(::statfs(db.c_str(), &sfs), 0);
  EXPECT_EQ(errno, ENOTCONN);

  ASSERT_TRUE(daemon_->Start());
  CommandResult r = daemon_->Ctl({"-o", "json", "volume", "list"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"name\": \"db\""), std::string::npos);
  EXPECT_NE(r.out.find("\"name\": \"logs\""), std::string::npos);
  r = daemon_->Ctl({"volume", "inspect", "db"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("ready"), std::string::npos) << r.out;
  for (const auto& [path, data] : files) {
    auto got = ReadFile(path);
    ASSERT_TRUE(got.ok()) << path << ": " << got.status().ToString();
    EXPECT_TRUE(*got == data) << path << " differs after kill -9 and restart";
  }
  // Usage was rebuilt from the tree: it matches du of the backing directory.
  auto space = StatFs(db);
  ASSERT_TRUE(space.ok());
  EXPECT_EQ(space->capacity(), 200 * kMi);
  glob_t g{};
  ASSERT_EQ(::glob((dirs_->state() + "/disks/*/volumes/db").c_str(), 0, nullptr, &g), 0);
  const std::string backing_dir = g.gl_pathv[0];
  globfree(&g);
  auto du = DuBytes(backing_dir);
  ASSERT_TRUE(du.ok()) << backing_dir;
  EXPECT_TRUE(UsageAgrees(space->used_bytes(), *du)) << space->used_bytes() << " vs du " << *du;
  int count = 0;
  for (const auto& e : ReadMountTable()) count += e.mount_point == db;
  EXPECT_EQ(count, 1) << "the dead mount is still stacked";
  // The interrupted file is there, with what reached the disk; the volume
  // keeps working: remove it, write, SIGTERM, restart, read.
  EXPECT_TRUE(Exists(db + "/in-flight"));
  ASSERT_EQ(::unlink((db + "/in-flight").c_str()), 0);
  ASSERT_TRUE(WriteFile(db + "/after", "after the crash").ok());
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(ReadOr(db + "/after"), "after the crash");
}

TEST_F(AgentDaemonTest, Kill9DuringCreatesAndDeletesThenClientsRetry) {
  auto devices = Loops(2);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(
        daemon_->Ctl({"volume", "create", "old-" + std::to_string(i), "--size", "8Mi"}).ok());
  }
  // Clients create and delete while the agent is killed.
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([this, i] {
      (void)daemon_->Ctl(
          {"--timeout", "10", "volume", "create", "new-" + std::to_string(i), "--size", "8Mi"});
      (void)daemon_->Ctl({"--timeout", "10", "volume", "delete", "old-" + std::to_string(i)});
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  daemon_->Kill9();
  for (auto& t : clients) t.join();
  ASSERT_TRUE(daemon_->Start());
  // Every volume the agent knows is served; clients retrying get what they asked.
  for (int i = 0; i < 4; ++i) {
    CommandResult r =
        daemon_->Ctl({"volume", "create", "new-" + std::to_string(i), "--size", "8Mi"});
    EXPECT_TRUE(r.ok()) << r.Summary();
    r = daemon_->Ctl({"volume", "delete", "old-" + std::to_string(i)});
    EXPECT_TRUE(r.ok() || r.err.find("NotFound") != std::string::npos) << r.Summary();
  }
  CommandResult r = daemon_->Ctl({"volume", "list"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.out.find("old-"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(IsMountedAs(dirs_->publish() + "/new-" + std::to_string(i), "fuse.localvol"));
    EXPECT_FALSE(IsMountPoint(dirs_->publish() + "/old-" + std::to_string(i)));
  }
  // Allocation adds up: 4 volumes of 8Mi.
  r = daemon_->Ctl({"-o", "json", "disk", "list"});
  uint64_t allocated = 0;
  for (size_t at = r.out.find("\"allocated_bytes\": \""); at != std::string::npos;
       at = r.out.find("\"allocated_bytes\": \"", at + 1)) {
    allocated += std::stoull(r.out.substr(at + 20));
  }
  EXPECT_EQ(allocated, 4 * 8 * kMi) << r.out;
}

TEST_F(AgentDaemonTest, ConfigErrorsStopStartupNamingTheKey) {
  ASSERT_TRUE(dirs_->WriteConfig({}, "disk_size: 10Gi\n").ok());
  CommandResult r =
      RunCommand({LOCALVOLD_BIN, "--config", dirs_->config_path()}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  EXPECT_NE(r.err.find("disk_size: unknown key"), std::string::npos) << r.Summary();
  ASSERT_TRUE(dirs_->WriteConfig({}, "filesystem: btrfs\n").ok());
  r = RunCommand({LOCALVOLD_BIN, "--config", dirs_->config_path()}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  EXPECT_NE(r.err.find("filesystem: expected xfs or ext4, not 'btrfs'"), std::string::npos)
      << r.Summary();
  r = RunCommand({LOCALVOLD_BIN, "--config", dirs_->Sub("missing.yaml")}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  EXPECT_NE(r.err.find("missing.yaml"), std::string::npos) << r.Summary();
  r = RunCommand({LOCALVOLD_BIN, "--no-such-flag"}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  r = RunCommand({LOCALVOLD_BIN, "--config", dirs_->config_path(), "--log-level", "loud"},
                 std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  std::string mounted;
  EXPECT_TRUE(NothingMountedBelow(&mounted)) << mounted;
  EXPECT_FALSE(Exists(dirs_->state() + "/disks"));
}

TEST_F(AgentDaemonTest, ConfigThatIsNoFileOrHasADuplicateKeyStopsStartup) {
  // An ifstream opens a directory (or /dev/null) and reads nothing: the agent
  // used to start on the built-in defaults, with an embedded disk in
  // /var/lib/localvol. Run as nobody, so that if that ever comes back the
  // agent stops at its root check (exit 1) instead of touching the node.
  for (const auto& [path, what] : std::vector<std::pair<std::string, std::string>>{
           {"/tmp", "the configuration /tmp is a directory; name a YAML file"},
           {"/dev/null", "the configuration /dev/null is not a regular file"}}) {
    CommandResult r = RunCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  LOCALVOLD_BIN, "--config", path},
                                 std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << r.Summary();
    EXPECT_NE(r.err.find(what), std::string::npos) << r.Summary();
  }
  // The first value would win without a word.
  ASSERT_TRUE(dirs_->WriteConfig({}, "metrics_port: abc\n").ok());
  CommandResult r =
      RunCommand({LOCALVOLD_BIN, "--config", dirs_->config_path()}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 2) << r.Summary();
  EXPECT_NE(r.err.find("metrics_port: given twice, on lines "), std::string::npos) << r.Summary();
  std::string mounted;
  EXPECT_TRUE(NothingMountedBelow(&mounted)) << mounted;
  EXPECT_FALSE(Exists(dirs_->state() + "/disks"));
}

TEST_F(AgentDaemonTest, BadInodeLimitsAndNamesAreRefusedByTheCliAndTheApi) {
  namespace pb = ::localvol::v1;
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());

  // localvolctl: usage errors, nothing sent. A name that is not UTF-8 used to
  // come back as a libprotobuf error and "Internal:" with exit 1.
  for (const char* bad : {"-1", "99999999999999999999"}) {
    ExpectFails(daemon_->Ctl({"volume", "create", "many", "--size", "16Mi", "--inodes", bad}), 2,
                "localvolctl: --inodes: expected a whole number from 1 to 4294967296, not '" +
                    std::string(bad) + "'");
  }
  CommandResult r = daemon_->Ctl({"volume", "create", "db\xff", "--size", "16Mi"});
  ExpectFails(r, 2, "localvolctl: invalid volume name 'db\\xff': it contains '\\xff'");
  EXPECT_EQ(r.err.find("libprotobuf"), std::string::npos) << r.Summary();
  EXPECT_NE(daemon_->Ctl({"volume", "list"}).out.find("No volumes"), std::string::npos);

  // The API checks the same bound itself.
  auto stub = pb::LocalVol::NewStub(
      grpc::CreateChannel("unix:" + dirs_->socket(), grpc::InsecureChannelCredentials()));
  auto create = [&](uint64_t inodes, pb::Volume* v) {
    pb::CreateVolumeRequest req;
    req.set_name("many");
    req.set_capacity_bytes(16 * kMi);
    req.set_inode_limit(inodes);
    grpc::ClientContext ctx;
    return stub->CreateVolume(&ctx, req, v);
  };
  auto resize = [&](uint64_t inodes) {
    pb::ResizeVolumeRequest req;
    req.set_name("many");
    req.set_capacity_bytes(32 * kMi);
    req.set_inode_limit(inodes);
    grpc::ClientContext ctx;
    pb::Volume v;
    return stub->ResizeVolume(&ctx, req, &v);
  };
  const std::string mount = dirs_->publish() + "/many";
  for (uint64_t absurd : {~uint64_t{0}, fuse::kMaxInodeLimit + 1}) {
    pb::Volume v;
    grpc::Status st = create(absurd, &v);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(
        st.error_message().find("inode_limit " + std::to_string(absurd) +
                                " is out of range: give 1 to 4294967296, or 0 for the default"),
        std::string::npos)
        << st.error_message();
    EXPECT_FALSE(IsMountPoint(mount));
  }
  // The bound itself is served, and statfs (df -i) shows it as a number.
  pb::Volume v;
  grpc::Status st = create(fuse::kMaxInodeLimit, &v);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(v.inode_limit(), fuse::kMaxInodeLimit);
  EXPECT_EQ(StatFs(mount)->files, fuse::kMaxInodeLimit);
  CommandResult df = RunCommand({"df", "--output=itotal", mount});
  EXPECT_NE(df.out.find("4294967296"), std::string::npos) << df.Summary();
  // A resize with an absurd count changes nothing, not even the size.
  for (uint64_t absurd : {~uint64_t{0}, fuse::kMaxInodeLimit + 1}) {
    st = resize(absurd);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  EXPECT_EQ(StatFs(mount)->files, fuse::kMaxInodeLimit);
  EXPECT_EQ(StatFs(mount)->capacity(), 16 * kMi);
  ExpectFails(daemon_->Ctl({"volume", "resize", "many", "--size", "32Mi", "--inodes", "-1"}), 2,
              "--inodes");
  EXPECT_EQ(StatFs(mount)->files, fuse::kMaxInodeLimit);
}

TEST_F(AgentDaemonTest, Usr1Usr2AndPipeDoNotStopTheAgent) {
  // Their default action ends the process, and every volume with it.
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "calm", "--size", "16Mi"}).ok());
  const std::string file = dirs_->publish() + "/calm/f";
  ASSERT_TRUE(WriteFile(file, "still here").ok());
  for (int sig : {SIGUSR1, SIGUSR2, SIGPIPE}) daemon_->Signal(sig);
  bool logged = false;
  for (int i = 0; i < 100 && !logged; ++i) {
    const std::string log = daemon_->Log();
    logged = log.find("SIGUSR1: ignoring it") != std::string::npos &&
             log.find("SIGUSR2: ignoring it") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(logged) << daemon_->Log();
  ASSERT_TRUE(daemon_->running());
  CommandResult r = daemon_->Ctl({"volume", "list"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("calm"), std::string::npos) << r.out;
  EXPECT_EQ(ReadOr(file), "still here");
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
}

TEST_F(AgentDaemonTest, EmbeddedDiskWhenNoDiskIsConfigured) {
  ASSERT_TRUE(dirs_->WriteConfig({}, "embedded_disk_size: 600Mi\n").ok());
  ASSERT_TRUE(daemon_->Start());
  CommandResult r = daemon_->Ctl({"disk", "list"});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.out.find("(embedded)"), std::string::npos) << r.out;
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "demo", "--size", "100Mi"}).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/demo/hello", "world").ok());
  const std::string image = dirs_->state() + "/embedded/disk.img";
  EXPECT_NE(agent::LoopDevice::FindAttached(image), "");
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  for (int i = 0; i < 50 && !agent::LoopDevice::FindAttached(image).empty(); ++i) ::usleep(100000);
  EXPECT_EQ(agent::LoopDevice::FindAttached(image), "")
      << "the embedded loop device outlived the agent";
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(ReadOr(dirs_->publish() + "/demo/hello"), "world");
}

TEST_F(AgentDaemonTest, InspectShowsTheFuseRing) {
  // With fuse_io_uring in the configuration, inspect reports the requests
  // the volume took through the ring and the ring's resident memory.
  auto on = FuseUringSwitch::Acquire();
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices, "fuse_io_uring: true\n").ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "ring", "--size", "64Mi"}).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/ring/f", std::string(1 << 20, 'r')).ok());
  CommandResult r = daemon_->Ctl({"volume", "inspect", "ring"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  const size_t at = r.out.find("FUSE ring:  ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_GT(std::strtoull(r.out.c_str() + at + 12, nullptr, 10), 0u) << r.out;
  EXPECT_NE(r.out.find(" of buffers resident", at), std::string::npos) << r.out;
  r = daemon_->Ctl({"-o", "json", "volume", "inspect", "ring"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"fuse_ring_requests\": \""), std::string::npos) << r.out;
}

TEST_F(AgentDaemonTest, InspectCountsFilesOpenWithPassthrough) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());  // read_passthrough: auto by default
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "pt", "--size", "64Mi"}).ok());
  const std::string file = dirs_->publish() + "/pt/f";
  ASSERT_TRUE(WriteFile(file, std::string(1 << 20, 'p')).ok());
  auto read_path = [&] {
    CommandResult r = daemon_->Ctl({"volume", "inspect", "pt"});
    EXPECT_TRUE(r.ok()) << r.Summary();
    const size_t at = r.out.find("Read path:  ");
    if (at == std::string::npos) return "(no Read path line in:\n" + r.out + ")";
    return r.out.substr(at + 12, r.out.find('\n', at) - at - 12);
  };
  if (read_path().rfind("every read through localvold", 0) == 0) {
    ASSERT_FALSE(KernelHasFusePassthrough())
        << "this kernel has FUSE passthrough, but the volume did not get it";
    GTEST_SKIP() << "the kernel has no FUSE passthrough: " << read_path();
  }
  // The RELEASE of the write may still be on its way: until it is handled
  // the file stays on the server path, so open until one is passthrough.
  std::vector<int> fds;
  for (int i = 0; i < 200 && read_path().rfind("0 files", 0) == 0; ++i) {
    for (int fd : fds) ::close(fd);
    fds.clear();
    for (int k = 0; k < 3; ++k) fds.push_back(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    ::usleep(10000);
  }
  EXPECT_EQ(read_path().substr(0, 32), "3 files open with passthrough; 3") << read_path();
  CommandResult r = daemon_->Ctl({"-o", "json", "volume", "inspect", "pt"});
  EXPECT_NE(r.out.find("\"passthrough_open_files\": \"3\""), std::string::npos) << r.out;
  for (int fd : fds) ::close(fd);
  for (int i = 0; i < 200 && read_path().rfind("0 files", 0) != 0; ++i) ::usleep(10000);
  EXPECT_EQ(read_path().substr(0, 7), "0 files") << read_path();
}

TEST_F(AgentDaemonTest, InspectShowsReadPassthroughOff) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices, "read_passthrough: off\n").ok());
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "nopt", "--size", "64Mi"}).ok());
  const std::string file = dirs_->publish() + "/nopt/f";
  ASSERT_TRUE(WriteFile(file, "data").ok());
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  CommandResult r = daemon_->Ctl({"volume", "inspect", "nopt"});
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("Read path:  every read through localvold"), std::string::npos) << r.out;
}

TEST_F(AgentDaemonTest, VolumeOwnReadPassthroughOffIsKeptAndShown) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());  // the agent allows it
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(
      daemon_->Ctl({"volume", "create", "own", "--size", "64Mi", "--read-passthrough", "off"})
          .ok());
  const std::string file = dirs_->publish() + "/own/f";
  ASSERT_TRUE(WriteFile(file, "data").ok());
  ::usleep(100000);  // the write's RELEASE
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  CommandResult r = daemon_->Ctl({"volume", "inspect", "own"});
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("Read path:  every read through localvold (read passthrough off for this "
                       "volume)"),
            std::string::npos)
      << r.out;
  ExpectFails(
      daemon_->Ctl({"volume", "create", "own", "--size", "64Mi", "--read-passthrough", "auto"}), 1,
      "AlreadyExists: volume own already exists with read passthrough off, not auto");
  EXPECT_TRUE(daemon_->Ctl({"volume", "create", "own", "--size", "64Mi"}).ok());
  // Kept across a restart (the disk manifest).
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_TRUE(daemon_->Start());
  r = daemon_->Ctl({"-o", "json", "volume", "inspect", "own"});
  EXPECT_NE(r.out.find("\"read_passthrough_setting\": \"off\""), std::string::npos) << r.out;
}

// A free TCP port on 127.0.0.1 (bound and released).
uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string HttpGet(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST_F(AgentDaemonTest, PrometheusMetrics) {
  auto devices = Loops(1);
  const uint16_t port = FreePort();
  ASSERT_TRUE(dirs_->WriteConfig(devices, "").ok());
  {
    // WriteConfig turns metrics off; turn them on at a free port.
    std::string text = ReadFile(dirs_->config_path()).value();
    text.replace(text.find("metrics_port: 0"), 15, "metrics_port: " + std::to_string(port));
    ASSERT_TRUE(WriteFile(dirs_->config_path(), text, O_TRUNC).ok());
  }
  ASSERT_TRUE(daemon_->Start());
  ASSERT_TRUE(daemon_->Ctl({"volume", "create", "metered", "--size", "32Mi"}).ok());
  ASSERT_TRUE(WriteFile(dirs_->publish() + "/metered/f", RandomBytes(1, 2 * kMi)).ok());
  std::string body = HttpGet(port, "/metrics");
  ASSERT_EQ(body.rfind("HTTP/1.1 200", 0), 0u) << body;
  EXPECT_NE(body.find("localvol_volume_capacity_bytes{volume=\"metered\""), std::string::npos)
      << body;
  EXPECT_NE(body.find("} 33554432\n"), std::string::npos) << body;
  EXPECT_NE(body.find("localvol_volume_inodes_limit{volume=\"metered\""), std::string::npos);
  EXPECT_NE(body.find("localvol_disk_size_bytes{disk="), std::string::npos);
  EXPECT_NE(body.find("localvol_disk_allocated_bytes{disk="), std::string::npos);
  // The data path counted the write.
  auto value_of = [&](const std::string& prefix, const std::string& with) -> double {
    std::istringstream in(body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(prefix, 0) == 0 && line.find(with) != std::string::npos) {
        return std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    ADD_FAILURE() << "no " << prefix << "..." << with << " in\n" << body;
    return -1;
  };
  EXPECT_GE(value_of("localvol_volume_io_bytes_total{volume=\"metered\"", "direction=\"write\"}"),
            2.0 * kMi);
  EXPECT_GE(value_of("localvol_volume_io_ops_total{volume=\"metered\"", "direction=\"write\"}"), 1);
  EXPECT_GE(value_of("localvol_volume_io_latency_seconds_count{volume=\"metered\"", "}"), 1);
  EXPECT_GE(
      value_of("localvol_volume_io_latency_seconds_bucket{volume=\"metered\"", "le=\"+Inf\"}"), 1);
  EXPECT_EQ(value_of("localvol_volume_io_weight{volume=\"metered\"", "}"), 100);
  // Limits set live show at the next scrape.
  ASSERT_TRUE(
      daemon_->Ctl({"volume", "set-limits", "metered", "--read-bps", "10Mi", "--weight", "40"})
          .ok());
  body = HttpGet(port, "/metrics");
  EXPECT_EQ(value_of("localvol_volume_io_limit{volume=\"metered\"", "kind=\"read_bps\"}"),
            10.0 * kMi);
  EXPECT_EQ(value_of("localvol_volume_io_weight{volume=\"metered\"", "}"), 40);
  EXPECT_EQ(HttpGet(port, "/nope").rfind("HTTP/1.1 404", 0), 0u);
}

// Reads sd_notify datagrams until one contains `want` (or `timeout`).
bool WaitForNotify(int fd, const std::string& want, std::chrono::seconds timeout,
                   std::string* all) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) continue;
    const std::string msg(buf, static_cast<size_t>(n));
    *all += msg + "\n";
    if (msg.find(want) != std::string::npos) return true;
  }
  return false;
}

TEST_F(AgentDaemonTest, NotifiesSystemdAndPingsTheWatchdog) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  // Play systemd: a notify socket and a 1 s watchdog.
  const std::string path = dirs_->Sub("notify.sock");
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "1000000", 1);
  const bool started = daemon_->Start();
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started);
  std::string seen;
  EXPECT_TRUE(WaitForNotify(fd, "READY=1", std::chrono::seconds(10), &seen)) << seen;
  EXPECT_NE(seen.find("STATUS=serving 0 of 0 volumes on 1 disk"), std::string::npos) << seen;
  EXPECT_TRUE(WaitForNotify(fd, "WATCHDOG=1", std::chrono::seconds(5), &seen)) << seen;
  seen.clear();
  EXPECT_TRUE(WaitForNotify(fd, "WATCHDOG=1", std::chrono::seconds(5), &seen)) << "only one ping";
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_TRUE(WaitForNotify(fd, "STOPPING=1", std::chrono::seconds(5), &seen)) << seen;
  ::close(fd);
}

TEST_F(AgentDaemonTest, SecondInstanceIsRefused) {
  auto devices = Loops(1);
  ASSERT_TRUE(dirs_->WriteConfig(devices).ok());
  ASSERT_TRUE(daemon_->Start());
  CommandResult r =
      RunCommand({LOCALVOLD_BIN, "--config", dirs_->config_path()}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.Summary();
  EXPECT_NE(r.err.find("another localvold is running"), std::string::npos) << r.Summary();
  // Another state directory but the same socket: refused before any disk is touched.
  auto other = RawLoop::Create();
  ASSERT_TRUE(other.ok());
  const std::string other_config = dirs_->Sub("other.yaml");
  ASSERT_TRUE(WriteFile(other_config, "disks: [" + (*other)->device() +
                                          "]\nstate_dir: " + dirs_->Sub("state2") +
                                          "\npublish_dir: " + dirs_->Sub("publish2") +
                                          "\nsocket: " + dirs_->socket() + "\nmetrics_port: 0\n")
                  .ok());
  r = RunCommand({LOCALVOLD_BIN, "--config", other_config}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.Summary();
  EXPECT_NE(r.err.find("serves " + dirs_->socket()), std::string::npos) << r.Summary();
  EXPECT_TRUE(DeviceIsBlank((*other)->device()));
  EXPECT_TRUE(daemon_->Ctl({"disk", "list"}).ok());
}

TEST_F(AgentDaemonTest, RefusedDevicesAreListedWithTheReason) {
  auto blank = Loops(1);
  auto foreign = RawLoop::Create(RawLoop::kDefaultSize, {"mkfs.ext4", "-q"});
  ASSERT_TRUE(foreign.ok());
  const std::string foreign_dev = (*foreign)->device();
  auto before = ImageHash((*foreign)->image());
  loops_.push_back(std::move(foreign).value());
  ASSERT_TRUE(dirs_->WriteConfig({blank[0], foreign_dev}).ok());
  ASSERT_TRUE(daemon_->Start());
  CommandResult r = daemon_->Ctl({"disk", "list"});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.out.find("Refused devices"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(foreign_dev + ": " + foreign_dev + " already holds data: ext4"),
            std::string::npos)
      << r.out;
  // Volumes go to the usable disk only.
  r = daemon_->Ctl({"-o", "json", "volume", "create", "v", "--size", "10Mi"});
  ASSERT_TRUE(r.ok()) << r.Summary();
  EXPECT_NE(r.out.find("\"device\": \"" + blank[0] + "\""), std::string::npos) << r.out;
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_EQ(*ImageHash(loops_.back()->image()), *before);
}

}  // namespace
}  // namespace localvol::testing
