// The fsx exerciser (localvol-fsx) inside a volume: a seeded random sequence of
// pwrite/pread/truncate/fallocate/mmap/copy_file_range/SEEK_HOLE/O_DIRECT,
// each checked against an in-memory model. Runs on the kernel's XFS (Raw, to
// validate fsx itself) and through localvol. One fixed seed, one random seed
// (printed; LOCALVOL_TEST_SEED replays it), and one run that hits the quota.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/fs_under_test.h"
#include "tests/support/process.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

std::string FsxBinary() {
#ifdef LOCALVOL_FSX_BIN
  return LOCALVOL_FSX_BIN;
#else
  return "";
#endif
}

// Runs localvol-fsx in `dir` and checks it passed.
void RunFsx(const std::string& dir, uint64_t seed, const std::vector<std::string>& extra,
            FuseServer* server) {
  std::vector<std::string> argv = {FsxBinary(), dir, "--seed", std::to_string(seed)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string cmd;
  for (const auto& a : argv) cmd += a + " ";
  std::cout << "running: " << cmd << std::endl;
  CommandResult r = RunCommand(argv, 120s);
  EXPECT_FALSE(r.timed_out) << "fsx ran over 120 s";
  EXPECT_EQ(r.exit_code, 0) << "replay with: " << cmd << "\n" << r.Summary().substr(0, 6000);
  if (r.exit_code != 0 && server != nullptr) {
    std::cout << "--- localvol-fuse output ---\n" << server->Log() << "\n---\n";
  }
}

class FsxTest : public FsTest {
 protected:
  void SetUp() override {
    if (FsxBinary().empty()) GTEST_SKIP() << "localvol-fsx was not built (no localvol-fsx target)";
    FsTest::SetUp();
  }
};
LOCALVOL_INSTANTIATE_FS_MODES(FsxTest);

// A fixed op count, not a time budget, so the run is the same every time.
TEST_P(FsxTest, FixedSeed) {
  RunFsx(fs().root(), 20240611, {"--ops", "4000", "--direct"}, fs().server());
}

// Random seeds run without --direct: mixing O_DIRECT writes with buffered and
// mmap I/O on one file makes XFS itself fail later I/O with EIO ("Direct I/O
// collision with buffered writes!" in the kernel log) on some sequences, raw
// XFS included. That is the kernel's documented limit, not a localvol bug,
// and a random test must not trip over it. Direct I/O keeps its coverage in
// FixedSeed and in direct_io_test.
TEST_P(FsxTest, RandomSeed) {
  const uint64_t seed = RandomSeed();
  std::cout << "fsx seed " << seed << " (LOCALVOL_TEST_SEED=" << seed << " replays)" << std::endl;
  RunFsx(fs().root(), seed, {"--seconds", "10", "--files", "4"}, fs().server());
}

// A volume smaller than what fsx wants: writes hit ENOSPC, and the data that
// was accepted must still match the model exactly.
class FsxQuotaTest : public FsxTest {
 protected:
  FsConfig Config() const override {
    FsConfig c;
    c.capacity = "12Mi";
    return c;
  }
};
LOCALVOL_INSTANTIATE_FS_MODES(FsxQuotaTest);

TEST_P(FsxQuotaTest, NearTheQuota) {
  if (raw()) GTEST_SKIP() << "the raw XFS disk has no quota to hit";
  RunFsx(fs().root(), 777,
         {"--seconds", "8", "--allow-enospc", "--file-size", "16Mi", "--files", "2"},
         fs().server());
}

}  // namespace
}  // namespace localvol::testing
