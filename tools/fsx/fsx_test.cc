#include "tools/fsx/fsx.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "base/unique_fd.h"

namespace localvol::fsx {
namespace {

// A fresh directory under /tmp, removed with everything in it on destruction,
// also when an assertion bails out of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/fsx_test.XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  bool empty() const { return std::filesystem::is_empty(path_); }

 private:
  std::string path_;
};

class FsxTest : public ::testing::Test {
 protected:
  FsxTest()
      : sink_(std::make_shared<spdlog::sinks::ostream_sink_st>(log_text_)),
        log_("fsx_test", sink_) {
    log_.set_level(spdlog::level::info);
  }

  void SetUp() override { ASSERT_FALSE(dir_.path().empty()) << "mkdtemp under /tmp failed"; }

  // Small files so that operations overlap a lot and a run stays fast.
  Options Base(uint64_t seed) const {
    Options o;
    o.dir = dir_.path();
    o.seed = seed;
    o.file_size = 4 << 20;
    return o;
  }

  Report MustRun(const Options& o) {
    auto report = fsx::Run(o, log_);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return Report{};
    return std::move(*report);
  }

  TempDir dir_;
  std::ostringstream log_text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_st> sink_;
  spdlog::logger log_;
};

// Flips the byte at `at` in `path` through an fd of its own, as a buggy
// filesystem (or a torn write) would.
void FlipByte(const std::string& path, uint64_t at) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDWR);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  uint8_t b = 0;
  ASSERT_EQ(::pread(fd->get(), &b, 1, at), 1);
  b = static_cast<uint8_t>(~b);
  ASSERT_EQ(::pwrite(fd->get(), &b, 1, at), 1);
}

// A fixed op count, not a time budget: on a loaded machine a second may hold
// few operations, and the coverage below must not depend on speed.
TEST_F(FsxTest, FixedSeedsPassAndCoverEveryOperation) {
  for (uint64_t seed : {1, 20240601}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Options o = Base(seed);
    o.max_ops = 400;
    o.seconds = 0;
    Report r = MustRun(o);
    ASSERT_TRUE(r.ok) << r.failure;
    EXPECT_EQ(r.seed, seed);
    EXPECT_EQ(r.ops, 400u);
    EXPECT_GT(r.bytes_verified, 1u << 20);
    // A run that skipped the interesting operations would prove little.
    for (const char* op : {"read", "write", "mapread", "mapwrite", "truncate", "fallocate",
                           "copy_range", "seek_data", "reopen"}) {
      EXPECT_GT(r.op_counts[op], 0u) << op;
    }
    EXPECT_TRUE(r.failure.empty());
    EXPECT_TRUE(r.files_left.empty());
    EXPECT_TRUE(dir_.empty()) << "files were not removed after a passing run";
  }
}

TEST_F(FsxTest, TimeBudgetEndsTheRun) {
  Options o = Base(7);
  o.max_ops = 0;
  o.seconds = 0.5;
  Report r = MustRun(o);
  ASSERT_TRUE(r.ok) << r.failure;
  EXPECT_GT(r.ops, 0u);
}

TEST_F(FsxTest, DirectIoRunPasses) {
  Options o = Base(7);
  o.direct = true;
  o.max_ops = 0;
  o.seconds = 0.5;
  Report r = MustRun(o);
  ASSERT_TRUE(r.ok) << r.failure;
  for (const std::string& d : r.disabled) {
    if (d.rfind("O_DIRECT", 0) == 0) GTEST_SKIP() << "/tmp does not support O_DIRECT: " << d;
  }
  EXPECT_GT(r.op_counts["direct_read"], 0u);
  EXPECT_GT(r.op_counts["direct_write"], 0u);
}

TEST_F(FsxTest, OneFileCopiesWithinItself) {
  Options o = Base(3);
  o.files = 1;
  o.max_ops = 3000;
  Report r = MustRun(o);
  ASSERT_TRUE(r.ok) << r.failure;
  EXPECT_EQ(r.ops, 3000u);
  // A fixed op count, so the rare operations are certain to be in it too.
  for (const char* op : {"copy_range", "fsync", "fdatasync", "reopen", "verify"}) {
    EXPECT_GT(r.op_counts[op], 0u) << op;
  }
}

TEST_F(FsxTest, DetectsDataCorruptedBehindItsBack) {
  Options o = Base(777);
  o.max_ops = 20000;
  uint64_t first_flip = 0;
  int flips = 0;
  o.before_op = [&](const HookContext& ctx) {
    if (ctx.op < 300 || ctx.op % 7 != 0 || ctx.sizes[0] == 0) return;
    if (flips++ == 0) first_flip = ctx.op;
    FlipByte(ctx.paths[0], ctx.op * 7919 % ctx.sizes[0]);
  };
  Report r = MustRun(o);
  ASSERT_GT(flips, 0);
  ASSERT_FALSE(r.ok) << "a flipped byte went unnoticed for " << r.ops << " operations";
  EXPECT_GT(r.ops, first_flip) << "failed before anything was corrupted";
  EXPECT_LT(r.ops, o.max_ops) << "noticed only at the final check";
  EXPECT_NE(r.failure.find("seed 777"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("data mismatch"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("expected:"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("oldest first"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("--seed 777 --ops " + std::to_string(r.ops)), std::string::npos)
      << r.failure;
  // The evidence stays on disk.
  ASSERT_EQ(r.files_left.size(), 2u);
  for (const std::string& path : r.files_left) {
    EXPECT_TRUE(std::filesystem::exists(path)) << path;
    EXPECT_NE(r.failure.find(path), std::string::npos) << r.failure;
  }
}

TEST_F(FsxTest, DetectsSizeChangedBehindItsBack) {
  Options o = Base(4242);
  o.max_ops = 5000;
  bool done = false;
  o.before_op = [&](const HookContext& ctx) {
    if (done || ctx.op < 200) return;
    ASSERT_EQ(::truncate(ctx.paths[1].c_str(), static_cast<off_t>(ctx.sizes[1] + 1)), 0);
    done = true;
  };
  Report r = MustRun(o);
  ASSERT_TRUE(done);
  ASSERT_FALSE(r.ok);
  EXPECT_NE(r.failure.find("seed 4242"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("f1"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("size"), std::string::npos) << r.failure;
}

TEST_F(FsxTest, SameSeedSameSequence) {
  auto sequence = [&](uint64_t seed) {
    std::vector<std::string> ops;
    Options o = Base(seed);
    o.max_ops = 1500;
    o.on_op = [&](uint64_t op, const std::string& text) {
      ops.push_back(std::to_string(op) + " " + text);
    };
    Report r = MustRun(o);
    EXPECT_TRUE(r.ok) << r.failure;
    return ops;
  };
  std::vector<std::string> first = sequence(99);
  std::vector<std::string> again = sequence(99);
  std::vector<std::string> other = sequence(100);
  ASSERT_EQ(first.size(), 1500u);
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other);
}

TEST_F(FsxTest, RejectsUnusableOptions) {
  Options o = Base(1);
  o.dir = dir_.path() + "/missing";
  EXPECT_EQ(fsx::Run(o, log_).err(), ENOENT);

  o = Base(1);
  o.file_size = 4096;
  EXPECT_EQ(fsx::Run(o, log_).err(), EINVAL);

  o = Base(1);
  o.files = 0;
  EXPECT_EQ(fsx::Run(o, log_).err(), EINVAL);

  o = Base(1);
  o.max_ops = 0;
  o.seconds = 0;
  EXPECT_EQ(fsx::Run(o, log_).err(), EINVAL);
  EXPECT_TRUE(dir_.empty());
}

// The mmap checks depend on this: a fault must come back as `false`.
TEST_F(FsxTest, GuardedCopyTurnsSigbusIntoFalse) {
  const long page = ::sysconf(_SC_PAGESIZE);
  auto fd = OpenAt(AT_FDCWD, dir_.path() + "/one_page", O_RDWR | O_CREAT, 0644);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ASSERT_EQ(::ftruncate(fd->get(), page), 0);
  // Two pages over a one-page file: touching the second raises SIGBUS.
  void* addr = ::mmap(nullptr, 2 * page, PROT_READ, MAP_SHARED, fd->get(), 0);
  ASSERT_NE(addr, MAP_FAILED);
  const uint8_t* p = static_cast<const uint8_t*>(addr);
  std::vector<uint8_t> out(page);
  {
    SigbusTrap trap;
    EXPECT_TRUE(GuardedCopy(out.data(), p, page));
    EXPECT_FALSE(GuardedCopy(out.data(), p + page, page));
    EXPECT_TRUE(GuardedCopy(out.data(), p, page));  // and it still works afterwards
  }
  ::munmap(addr, 2 * page);
}

TEST(ReplayCommandTest, CarriesEveryChoice) {
  Options o;
  o.dir = "/mnt/vol one";
  o.seed = 5;
  o.file_size = 1 << 20;
  o.files = 3;
  o.mmap = false;
  o.direct = true;
  EXPECT_EQ(ReplayCommand(o, 17),
            "localvol-fsx '/mnt/vol one' --seed 5 --ops 17 --file-size 1048576 --files 3 "
            "--no-mmap --direct");
}

}  // namespace
}  // namespace localvol::fsx
