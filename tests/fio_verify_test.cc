// fio with crc32c verification inside a mounted volume: every block fio wrote
// must read back intact, through buffered and O_DIRECT paths, with the psync
// and io_uring engines. The random seed is printed; LOCALVOL_TEST_SEED replays.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "tests/support/fuse_server.h"
#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

struct FioCase {
  std::string engine;
  bool direct;
  std::string rw;
};

void PrintTo(const FioCase& c, std::ostream* os) {
  *os << c.engine << (c.direct ? " direct " : " buffered ") << c.rw;
}

std::string CaseName(const ::testing::TestParamInfo<FioCase>& info) {
  return info.param.engine + (info.param.direct ? "_direct_" : "_buffered_") + info.param.rw;
}

class FioVerifyTest : public ::testing::TestWithParam<FioCase> {
 protected:
  void SetUp() override {
    CleanupLeftoversOfDeadTests();
    CommandResult version = RunCommand({"fio", "--version"}, 10s);
    if (!version.ok()) GTEST_SKIP() << "fio is not installed: " << version.Summary();
    // `fio --enghelp` lists the engines built in, one per line after a tab.
    CommandResult eng = RunCommand({"fio", "--enghelp"}, 10s);
    if (eng.out.find("\t" + GetParam().engine + "\n") == std::string::npos) {
      GTEST_SKIP() << "this fio has no " << GetParam().engine << " engine: " << eng.Summary();
    }
    if (!FuseServer::Available()) {
      GTEST_SKIP() << "localvol-fuse was not built (no localvol-fuse CMake target)";
    }
    VolumeDirs dirs;
    ASSERT_NO_FATAL_FAILURE(MakeVolumeDirs(&dirs));
    disk_ = std::move(dirs.disk);
    mounts_ = std::move(dirs.mounts);
    FuseServerOptions o;
    o.source = dirs.backing;
    o.mountpoint = dirs.mountpoint;
    o.capacity = "512Mi";
    o.watchdog = std::chrono::seconds(240);
    auto server = FuseServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
  }

  void TearDown() override {
    if (server_ && HasFailure())
      std::cout << "--- localvol-fuse output ---\n" << server_->Log() << "\n---\n";
    if (server_) {
      Status st = server_->Stop();
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    server_.reset();
  }

  std::unique_ptr<LoopDisk> disk_;
  TempDir mounts_;
  std::unique_ptr<FuseServer> server_;
};

TEST_P(FioVerifyTest, WrittenDataVerifies) {
  const FioCase& c = GetParam();
  const uint64_t seed = RandomSeed() % 1000000007;
  std::cout << "fio randseed " << seed << " (LOCALVOL_TEST_SEED=" << seed << " replays)"
            << std::endl;
  std::vector<std::string> argv = {
      "fio",
      "--name=lvverify",
      "--directory=" + server_->mountpoint(),
      "--size=64M",
      "--rw=" + c.rw,
      "--bsrange=4k-128k",
      "--ioengine=" + c.engine,
      "--iodepth=" + std::string(c.engine == "psync" ? "1" : "16"),
      "--direct=" + std::string(c.direct ? "1" : "0"),
      "--verify=crc32c",
      "--verify_fatal=1",
      "--do_verify=1",
      "--numjobs=2",
      "--randseed=" + std::to_string(seed),
      "--output-format=json",
  };
  if (c.rw == "randrw") argv.push_back("--verify_backlog=256");
  CommandResult r = RunCommand(argv, 180s);
  EXPECT_FALSE(r.timed_out) << "fio ran over 180 s";
  EXPECT_EQ(r.exit_code, 0) << r.Summary().substr(0, 4000);
  // Every job reports "error" : 0 and no verify complaint reached stderr.
  std::regex err_re("\"error\"\\s*:\\s*([0-9]+)");
  int jobs = 0;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), err_re);
       it != std::sregex_iterator(); ++it) {
    ++jobs;
    EXPECT_EQ((*it)[1].str(), "0") << "a fio job reported an error";
  }
  EXPECT_GE(jobs, 2) << "no per-job results in fio's output: " << r.out.substr(0, 2000);
  EXPECT_EQ(r.err.find("verify"), std::string::npos) << r.err.substr(0, 4000);
}

INSTANTIATE_TEST_SUITE_P(Engines, FioVerifyTest,
                         ::testing::Values(FioCase{"psync", false, "randwrite"},
                                           FioCase{"psync", true, "randwrite"},
                                           FioCase{"io_uring", false, "randwrite"},
                                           FioCase{"io_uring", true, "randwrite"},
                                           FioCase{"io_uring", false, "randrw"},
                                           FioCase{"psync", true, "randrw"}),
                         CaseName);

}  // namespace
}  // namespace localvol::testing
