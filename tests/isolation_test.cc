// I/O limits and fair sharing, end to end: fio inside volumes mounted in this
// process, two of them on one iopath engine (one disk). Runs are a few seconds
// and the assertions tolerant (this machine's timings are noisy): they check
// that limits and weights take effect through FUSE, not their precision, which
// iopath/scheduler_test.cc and throttle_test.cc check with a manual clock.
// tools/bench/isolation.sh measures the precision on a real device.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

#if LOCALVOL_HAVE_VOLUME_LIB
#include "fuse/volume.h"
#include "iopath/engine.h"
#endif

namespace localvol::testing {
namespace {

#if LOCALVOL_HAVE_VOLUME_LIB

// fio's per-job results, by job name: IOPS of the direction that ran.
struct FioJobResult {
  double read_iops = 0;
  double write_iops = 0;
};

std::map<std::string, FioJobResult> ParseFioJson(const std::string& json) {
  std::map<std::string, FioJobResult> out;
  const std::regex job(R"x("jobname"\s*:\s*"([^"]+)")x");
  const std::regex iops(R"x("iops"\s*:\s*([0-9.]+))x");
  auto it = std::sregex_iterator(json.begin(), json.end(), job);
  std::vector<std::pair<std::string, size_t>> starts;
  for (; it != std::sregex_iterator(); ++it) starts.emplace_back((*it)[1].str(), it->position());
  for (size_t i = 0; i < starts.size(); ++i) {
    const size_t end = i + 1 < starts.size() ? starts[i + 1].second : json.size();
    const std::string body = json.substr(starts[i].second, end - starts[i].second);
    std::vector<double> values;
    for (auto m = std::sregex_iterator(body.begin(), body.end(), iops); m != std::sregex_iterator();
         ++m) {
      values.push_back(std::stod((*m)[1].str()));
    }
    // fio lists "read", then "write", then "trim", each with its "iops".
    if (values.size() >= 2) out[starts[i].first] = FioJobResult{values[0], values[1]};
  }
  return out;
}

struct FioJob {
  std::string name;
  std::string directory;
  std::string rw;  // randread, randwrite, write
  std::string bs = "4k";
  int iodepth = 16;
};

class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CleanupLeftoversOfDeadTests();
    CommandResult version = RunCommand({"fio", "--version"}, 10s);
    if (!version.ok()) GTEST_SKIP() << "fio is not installed: " << version.Summary();
    auto disk = LoopDisk::Create(2ull << 30);
    ASSERT_TRUE(disk.ok()) << disk.status().ToString();
    disk_ = std::move(*disk);
    auto mounts = TempDir::Create("isolation");
    ASSERT_TRUE(mounts.ok()) << mounts.status().ToString();
    mounts_ = std::move(*mounts);
  }

  // One engine for every volume of the test: they share its ring, like the
  // volumes of one disk in the agent.
  void StartEngine(unsigned max_in_flight,
                   uint64_t contended_in_flight_cost = iopath::kDefaultContendedInFlightCost) {
    auto engine = iopath::Engine::Create(
        iopath::EngineOptions{.ring_entries = 64,
                              .max_in_flight = max_in_flight,
                              .contended_in_flight_cost = contended_in_flight_cost});
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(*engine);
  }

  // `read_passthrough`: fuse::VolumeOptions::read_passthrough.
  fuse::Volume* MountVolume(const std::string& name, const iopath::IoLimits& limits,
                            bool read_passthrough = true) {
    auto backing = disk_->MakeDir(name, 0777);
    EXPECT_TRUE(backing.ok()) << backing.status().ToString();
    auto mountpoint = mounts_.MakeSubdir(name);
    EXPECT_TRUE(mountpoint.ok()) << mountpoint.status().ToString();
    if (!backing.ok() || !mountpoint.ok()) return nullptr;
    fuse::VolumeOptions o;
    o.source_dir = *backing;
    o.mountpoint = *mountpoint;
    o.name = name;
    o.capacity_bytes = 512ull << 20;
    o.engine = engine_.get();
    o.io_limits = limits;
    o.read_passthrough = read_passthrough;
    auto volume = fuse::Volume::Mount(o);
    EXPECT_TRUE(volume.ok()) << volume.status().ToString();
    if (!volume.ok()) return nullptr;
    volumes_.push_back(std::move(*volume));
    return volumes_.back().get();
  }

  // Runs the jobs concurrently for `seconds` (after a 1 s ramp) on 64 MiB
  // files, direct I/O through io_uring; returns their results by name.
  std::map<std::string, FioJobResult> RunFio(const std::vector<FioJob>& jobs, int seconds) {
    std::vector<std::string> argv = {"fio",           "--output-format=json",
                                     "--time_based",  "--runtime=" + std::to_string(seconds),
                                     "--ramp_time=1", "--ioengine=io_uring",
                                     "--direct=1",    "--size=64m",
                                     "--randrepeat=0"};
    for (const FioJob& j : jobs) {
      argv.insert(argv.end(), {"--name=" + j.name, "--directory=" + j.directory, "--rw=" + j.rw,
                               "--bs=" + j.bs, "--iodepth=" + std::to_string(j.iodepth)});
    }
    CommandResult r = RunCommand(argv, std::chrono::seconds(seconds + 90));
    EXPECT_TRUE(r.ok()) << r.Summary();
    auto results = ParseFioJson(r.out);
    EXPECT_EQ(results.size(), jobs.size()) << r.out.substr(0, 2000);
    for (const auto& [name, result] : results) {
      std::cout << "fio job " << name << ": read " << result.read_iops << " IOPS, write "
                << result.write_iops << " IOPS" << std::endl;
    }
    return results;
  }

  void TearDown() override {
    for (auto& v : volumes_) {
      Status s = v->Unmount();
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    volumes_.clear();
    engine_.reset();
  }

  // Destroyed in reverse: volumes, engine, mountpoints, disk.
  std::unique_ptr<LoopDisk> disk_;
  TempDir mounts_;
  std::unique_ptr<iopath::Engine> engine_;
  std::vector<std::unique_ptr<fuse::Volume>> volumes_;
};

iopath::IoLimits Limits(const std::string& key, const std::string& value) {
  iopath::IoLimits l;
  EXPECT_TRUE(iopath::SetIoLimit(&l, key, value).ok()) << key;
  return l;
}

TEST_F(IsolationTest, ReadIopsLimitHoldsUnderFio) {
  ASSERT_NO_FATAL_FAILURE(StartEngine(64));
  fuse::Volume* v = MountVolume("limited", Limits("read-iops", "300"));
  ASSERT_NE(v, nullptr);
  auto r = RunFio({{"reader", v->mountpoint(), "randread"}}, 3);
  ASSERT_EQ(r.count("reader"), 1u);
  EXPECT_NEAR(r["reader"].read_iops / 300.0, 1.0, 0.2) << r["reader"].read_iops;
  const auto stats = v->IoStats();
  EXPECT_GT(stats.throttled_ns, 1'000'000'000u) << "the queue was not held back";
}

TEST_F(IsolationTest, WriteBandwidthLimitHoldsUnderFio) {
  ASSERT_NO_FATAL_FAILURE(StartEngine(64));
  fuse::Volume* v = MountVolume("limited", Limits("write-bps", "8Mi"));
  ASSERT_NE(v, nullptr);
  auto r = RunFio({{"writer", v->mountpoint(), "write", "128k", 8}}, 3);
  ASSERT_EQ(r.count("writer"), 1u);
  const double mib_s = r["writer"].write_iops * 128 / 1024;
  EXPECT_NEAR(mib_s / 8.0, 1.0, 0.2) << mib_s << " MiB/s";
}

TEST_F(IsolationTest, SetIoLimitsTakesEffectOnAMountedVolume) {
  ASSERT_NO_FATAL_FAILURE(StartEngine(64));
  fuse::Volume* v = MountVolume("live", iopath::IoLimits{});
  ASSERT_NE(v, nullptr);
  ASSERT_TRUE(v->SetIoLimits(Limits("write-iops", "200")).ok());
  EXPECT_EQ(v->IoLimits().write_iops.rate, 200u);
  auto r = RunFio({{"writer", v->mountpoint(), "randwrite"}}, 2);
  EXPECT_NEAR(r["writer"].write_iops / 200.0, 1.0, 0.2) << r["writer"].write_iops;
  // An invalid change is refused and the limit stays.
  iopath::IoLimits bad = Limits("write-iops", "200");
  bad.write_iops.burst_rate = 100;
  EXPECT_EQ(v->SetIoLimits(bad).err(), EINVAL);
  EXPECT_EQ(v->IoLimits().write_iops.rate, 200u);
}

TEST_F(IsolationTest, ContendingVolumesShareByWeight) {
  // One request in the ring at a time, so that the scheduler alone decides
  // who goes next even when this machine is busy with other tests and fio
  // cannot keep a deeper ring full (the benchmark measures the agent's
  // settings on a real device).
  ASSERT_NO_FATAL_FAILURE(StartEngine(1, 0));
  // Weights share what goes through the scheduler. The heavy volume's reads
  // do (a weight other than the default keeps them off passthrough); the
  // light one, with the default weight, would read past it by passthrough,
  // so it is mounted with passthrough off (docs/volumes.md, "Read
  // passthrough").
  fuse::Volume* heavy = MountVolume("heavy", Limits("weight", "200"));
  fuse::Volume* light = MountVolume("light", Limits("weight", "100"), /*read_passthrough=*/false);
  ASSERT_NE(heavy, nullptr);
  ASSERT_NE(light, nullptr);
  auto r = RunFio(
      {{"heavy", heavy->mountpoint(), "randread"}, {"light", light->mountpoint(), "randread"}}, 3);
  ASSERT_GT(r["light"].read_iops, 0);
  // 2.0 when both queues always have a request waiting; a little less when
  // this busy machine leaves the heavy one briefly empty (the scheduler then
  // serves the light one: work conservation). Without weights it is 1.0.
  const double ratio = r["heavy"].read_iops / r["light"].read_iops;
  EXPECT_GT(ratio, 1.5) << r["heavy"].read_iops << " vs " << r["light"].read_iops;
  EXPECT_LT(ratio, 2.3) << r["heavy"].read_iops << " vs " << r["light"].read_iops;
}

TEST_F(IsolationTest, ThrottledNeighbourDoesNotSlowAnUnlimitedVolume) {
  ASSERT_NO_FATAL_FAILURE(StartEngine(64));
  fuse::Volume* slow = MountVolume("slow", Limits("write-iops", "50"));
  fuse::Volume* fast = MountVolume("fast", iopath::IoLimits{});
  ASSERT_NE(slow, nullptr);
  ASSERT_NE(fast, nullptr);
  auto r = RunFio(
      {{"slow", slow->mountpoint(), "randwrite"}, {"fast", fast->mountpoint(), "randread"}}, 3);
  EXPECT_NEAR(r["slow"].write_iops / 50.0, 1.0, 0.3) << r["slow"].write_iops;
  // Work conservation: the unlimited volume is not held to the limited one's pace.
  EXPECT_GT(r["fast"].read_iops, 1000) << r["fast"].read_iops;
}

#else
TEST(IsolationTest, NeedsTheVolumeLibrary) { GTEST_SKIP() << "localvol_fuse was not built"; }
#endif

}  // namespace
}  // namespace localvol::testing
