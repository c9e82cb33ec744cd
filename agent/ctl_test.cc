// localvolctl's command line without an agent: the socket names nothing, so
// an invocation that gets past its own checks fails with "cannot reach" (exit
// 3). A usage error (exit 2) therefore proves nothing was sent.
#include "agent/ctl.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "iopath/io_limits.h"

namespace localvol::agent {
namespace {

struct Outcome {
  int code;
  std::string out, err;
};

Outcome Ctl(std::vector<std::string> args) {
  const std::string socket = "/tmp/localvol-ctl-test-" + std::to_string(::getpid()) + ".sock";
  args.insert(args.begin(), {"localvolctl", "--socket", socket, "--timeout", "5"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  const int code = RunCtl(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

std::vector<std::string> Create(std::vector<std::string> flags) {
  std::vector<std::string> args = {"volume", "create", "db", "--size", "1Gi"};
  args.insert(args.end(), flags.begin(), flags.end());
  return args;
}

std::vector<std::string> SetLimits(std::vector<std::string> flags) {
  std::vector<std::string> args = {"volume", "set-limits", "db"};
  args.insert(args.end(), flags.begin(), flags.end());
  return args;
}

TEST(CtlTest, BadIoLimitValuesAreUsageErrorsNamingTheFlag) {
  const struct {
    std::vector<std::string> args;
    std::vector<std::string> mentions;
  } cases[] = {
      {Create({"--read-iops", "lots"}), {"--read-iops", "'lots'", "not a non-negative integer"}},
      {Create({"--write-bps", "12XB"}), {"--write-bps", "12XB"}},
      {Create({"--read-iops", "-1"}), {"--read-iops"}},
      {Create({"--weight", "0"}), {"weight", "1..10000"}},
      {Create({"--weight", "10001"}), {"weight"}},
      {Create({"--write-iops-burst-seconds", "0"}), {"--write-iops-burst-seconds", "1..3600"}},
      // Fine one by one, not together.
      {Create({"--read-iops", "100", "--read-iops-burst", "50"}),
       {"read-iops-burst (50) must be above read-iops (100)"}},
      {Create({"--read-bps-burst", "1Mi"}), {"read-bps-burst is set but read-bps is not"}},
      {SetLimits({"--read-iops", "x"}), {"--read-iops", "'x'"}},
      {SetLimits({"--weight", "0"}), {"weight"}},
      {SetLimits({"--write-bps", "1.5Gi"}), {"--write-bps", "1.5Gi"}},
      {Create({"--read-passthrough", "on"}), {"--read-passthrough", "on"}},
      {Create({"--read-passthrough", "OFF"}), {"--read-passthrough"}},
  };
  for (const auto& c : cases) {
    Outcome r = Ctl(c.args);
    std::string cmd;
    for (const auto& a : c.args) cmd += a + " ";
    EXPECT_EQ(r.code, 2) << cmd << "\n" << r.err;
    for (const auto& m : c.mentions) {
      EXPECT_NE(r.err.find(m), std::string::npos) << cmd << ": '" << m << "' not in: " << r.err;
    }
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << cmd << ": it contacted the agent";
  }
}

TEST(CtlTest, ReadPassthroughModesPassTheirChecks) {
  for (const char* mode : {"auto", "off"}) {
    Outcome r = Ctl(Create({"--read-passthrough", mode}));
    EXPECT_EQ(r.code, 3) << mode << ": " << r.err;
    EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << r.err;
  }
}

TEST(CtlTest, InodesOutOfRangeAreUsageErrors) {
  // CLI11 would take "-1" and 2^64 and more as 2^64 - 1, which df -i shows as "-".
  for (const char* bad : {"-1", "99999999999999999999", "18446744073709551615", "4294967297", "0",
                          "lots", "1e6", "+5", ""}) {
    for (auto args :
         {Create({"--inodes", bad}),
          std::vector<std::string>{"volume", "resize", "db", "--size", "2Gi", "--inodes", bad}}) {
      Outcome r = Ctl(args);
      EXPECT_EQ(r.code, 2) << args[1] << " --inodes '" << bad << "': " << r.err;
      EXPECT_NE(
          r.err.find("localvolctl: --inodes: expected a whole number from 1 to 4294967296, not '" +
                     std::string(bad) + "'"),
          std::string::npos)
          << r.err;
      EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << bad << ": it contacted the agent";
    }
  }
  // The bounds themselves are fine.
  for (const char* good : {"1", "4294967296"}) {
    Outcome r = Ctl(Create({"--inodes", good}));
    EXPECT_EQ(r.code, 3) << good << ": " << r.err;
    EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << r.err;
  }
}

TEST(CtlTest, InvalidNamesAreUsageErrorsForEveryCommand) {
  const std::string not_utf8 = "db\xff\xfe";
  for (const std::string& name : {not_utf8, std::string("Web_1"), std::string("a-")}) {
    for (const auto& args :
         std::vector<std::vector<std::string>>{{"volume", "create", name, "--size", "1Gi"},
                                               {"volume", "inspect", name},
                                               {"volume", "resize", name, "--size", "2Gi"},
                                               {"volume", "set-limits", name, "--weight", "5"},
                                               {"volume", "delete", name}}) {
      Outcome r = Ctl(args);
      EXPECT_EQ(r.code, 2) << args[1] << " " << name << ": " << r.err;
      EXPECT_EQ(r.err.rfind("localvolctl: invalid volume name '", 0), 0u) << r.err;
      EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << r.err;
    }
  }
  // Bytes that are not UTF-8 are shown escaped, never raw.
  Outcome r = Ctl({"volume", "inspect", not_utf8});
  EXPECT_NE(r.err.find("invalid volume name 'db\\xff\\xfe': it contains '\\xff'"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find('\xff'), std::string::npos) << r.err;
}

TEST(CtlTest, UnknownLimitFlagIsAUsageError) {
  Outcome r = Ctl(Create({"--reed-iops", "5"}));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("reed-iops"), std::string::npos) << r.err;
}

TEST(CtlTest, SetLimitsWithoutAnyLimitIsAUsageError) {
  Outcome r = Ctl(SetLimits({}));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("give at least one limit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--unlimited"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--help"), std::string::npos) << r.err;
}

TEST(CtlTest, ValidLimitsReachForTheAgent) {
  for (const auto& args : {Create({"--read-iops", "500", "--read-iops-burst", "2000", "--write-bps",
                                   "100Mi", "--weight", "300"}),
                           SetLimits({"--read-iops", "0"}), SetLimits({"--unlimited"}),
                           SetLimits({"--unlimited", "--weight", "50"}),
                           // Checked as a whole only once merged with the current limits.
                           SetLimits({"--read-iops-burst", "900"})}) {
    Outcome r = Ctl(args);
    EXPECT_EQ(r.code, 3) << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << r.err;
  }
}

TEST(CtlTest, AMissingCommandSaysWhichIsMissing) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{}, "localvolctl: missing command: disk or volume"},
      {{"volume"}, "localvolctl: volume: missing command: create, list, inspect"},
      {{"disk"}, "localvolctl: disk: missing command: list"},
  };
  for (const auto& [args, want] : cases) {
    Outcome r = Ctl(args);
    EXPECT_EQ(r.code, 2) << want;
    EXPECT_EQ(r.err.rfind(want, 0), 0u) << r.err;
  }
}

TEST(CtlTest, EveryCommandWithoutArgumentProblemsReachesForTheAgent) {
  const std::vector<std::vector<std::string>> commands = {
      {"disk", "list"},
      {"volume", "list"},
      {"volume", "inspect", "db"},
      Create({}),
      {"volume", "resize", "db", "--size", "2Gi"},
      {"volume", "delete", "db"}};
  for (const auto& args : commands) {
    Outcome r = Ctl(args);
    EXPECT_EQ(r.code, 3) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find("cannot reach localvold at /tmp/localvol-ctl-test-"), std::string::npos)
        << r.err;
  }
}

TEST(CtlTest, ANonPositiveTimeoutIsAUsageError) {
  std::vector<std::string> args = {"localvolctl", "--timeout", "0", "volume", "list"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  EXPECT_EQ(RunCtl(static_cast<int>(argv.size()), argv.data(), out, err), 2);
  EXPECT_EQ(err.str(), "localvolctl: --timeout must be positive\n");
}

TEST(CtlTest, EveryLimitKeyIsAFlag) {
  for (const char* cmd : {"create", "set-limits"}) {
    Outcome r = Ctl({"volume", cmd, "--help"});
    EXPECT_EQ(r.code, 0) << r.err;
    for (const auto& key : iopath::IoLimitKeys()) {
      EXPECT_NE(r.out.find("--" + key + " "), std::string::npos)
          << cmd << " lacks --" << key << ":\n"
          << r.out;
    }
  }
}

}  // namespace
}  // namespace localvol::agent
