// The systemd unit and the example config that `cmake --install` ships.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "agent/config.h"
#include "tests/agent_fixtures.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool HaveSystemdAnalyze() {
  return RunCommand({"systemd-analyze", "--version"}, std::chrono::seconds(30)).ok();
}

class AgentSystemdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("lvtmp");
    ASSERT_TRUE(d.ok());
    dir_ = std::move(d).value();
    unit_ = Slurp(LOCALVOL_UNIT_FILE);
    ASSERT_FALSE(unit_.empty()) << LOCALVOL_UNIT_FILE;
  }
  // The installed unit, pointed at the binary of this build (verify checks
  // that ExecStart exists), with `edit` applied.
  std::string WriteUnit(const std::string& from = "", const std::string& to = "") {
    std::string text = unit_;
    const size_t at = text.find("ExecStart=");
    const size_t end = text.find(' ', at);
    text.replace(at, end - at, std::string("ExecStart=") + LOCALVOLD_BIN);
    if (!from.empty()) text.replace(text.find(from), from.size(), to);
    const std::string path = dir_.Sub("localvol.service");
    std::ofstream(path) << text;
    return path;
  }

  TempDir dir_;
  std::string unit_;
};

TEST_F(AgentSystemdTest, UnitFileVerifies) {
  if (!HaveSystemdAnalyze()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";
  CommandResult r =
      RunCommand({"systemd-analyze", "verify", WriteUnit()}, std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.Summary();
  EXPECT_EQ(r.err, "") << "systemd-analyze verify complained:\n" << r.err;
}

TEST_F(AgentSystemdTest, VerifyCatchesABrokenUnit) {
  // The check above would notice a mistake: a typo is reported.
  if (!HaveSystemdAnalyze()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";
  CommandResult r =
      RunCommand({"systemd-analyze", "verify", WriteUnit("WatchdogSec=", "WatchdogSecs=")},
                 std::chrono::seconds(60));
  EXPECT_NE(r.err.find("WatchdogSecs"), std::string::npos) << r.Summary();
}

TEST_F(AgentSystemdTest, UnitHasWhatTheAgentNeeds) {
  for (const char* line :
       {"Type=notify", "WatchdogSec=", "Restart=on-failure", "RuntimeDirectory=localvol",
        "StateDirectory=localvol", "NoNewPrivileges=yes", "CAP_SYS_ADMIN",
        "--config /etc/localvol/config.yaml"}) {
    EXPECT_NE(unit_.find(line), std::string::npos) << line;
  }
  // Any of these would give the agent a private mount namespace: its mounts
  // would then be invisible to the kubelet.
  for (const char* option :
       {"PrivateTmp=", "ProtectSystem=", "ProtectHome=", "PrivateDevices=", "ReadWritePaths=",
        "ReadOnlyPaths=", "InaccessiblePaths=", "ProtectKernelModules=", "ProtectKernelTunables=",
        "ProtectKernelLogs=", "ProtectControlGroups=", "TemporaryFileSystem=", "BindPaths=",
        "PrivateMounts=", "MountFlags="}) {
    std::istringstream lines(unit_);
    std::string l;
    while (std::getline(lines, l)) {
      if (!l.empty() && l[0] != '#') {
        EXPECT_NE(l.rfind(option, 0), 0u) << l;
      }
    }
  }
}

TEST(AgentExampleConfigTest, ParsesToTheDefaults) {
  auto c = agent::LoadConfig(LOCALVOL_EXAMPLE_CONFIG);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const agent::Config defaults;
  EXPECT_TRUE(c->disks.empty());
  EXPECT_EQ(c->filesystem, defaults.filesystem);
  EXPECT_EQ(c->publish_dir, defaults.publish_dir);
  EXPECT_EQ(c->state_dir, defaults.state_dir);
  EXPECT_EQ(c->socket, defaults.socket);
  EXPECT_EQ(c->metrics_port, defaults.metrics_port);
  EXPECT_EQ(c->embedded_disk_size, defaults.embedded_disk_size);
  EXPECT_EQ(c->reserve.ToString(), defaults.reserve.ToString());
  EXPECT_EQ(c->csi_socket, defaults.csi_socket);
  EXPECT_EQ(c->node_name, defaults.node_name);
}

}  // namespace
}  // namespace localvol::testing
