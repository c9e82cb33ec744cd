// Byte and inode quotas of a localvol volume, checked from the outside:
// write(2)/fallocate(2)/create errnos, statfs(2), and du(1) of the backing
// directory on the real XFS disk. Most tests run the localvol-fuse binary; the
// SetLimits tests mount in-process through fuse::Volume.
//
// Invariants checked throughout:
//   * statfs: f_blocks * f_frsize == capacity exactly; f_files == inode limit.
//   * No byte is ever stored over quota: du -B1 -s BACKING <= capacity.
//   * After files are closed, statfs usage == du within 1% + 1 MiB.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "fuse/volume.h"
#include "tests/support/fuse_server.h"
#include "tests/support/in_process_volume.h"
#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

// The outcome of writing until the first error.
struct FillResult {
  uint64_t bytes = 0;  // written successfully
  int err = 0;         // the error that stopped it (0 if `limit` was reached)
};

// Appends `chunk`-sized writes to `fd` until an error or `limit` bytes.
// Short writes count; the write after a short one reports the error.
FillResult FillFd(int fd, size_t chunk, uint64_t limit = UINT64_MAX, uint64_t seed = 1) {
  const std::string data = RandomBytes(seed, chunk);
  FillResult r;
  while (r.bytes < limit) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, limit - r.bytes));
    ssize_t w = ::write(fd, data.data(), n);
    if (w < 0) {
      if (errno == EINTR) continue;
      r.err = errno;
      return r;
    }
    r.bytes += w;
  }
  return r;
}

FillResult FillPath(const std::string& path, size_t chunk, uint64_t limit = UINT64_MAX) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd.valid()) return FillResult{0, errno};
  return FillFd(fd.get(), chunk, limit);
}

class QuotaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CleanupLeftoversOfDeadTests();
    ::umask(022);
    if (!FuseServer::Available()) {
      GTEST_SKIP() << "localvol-fuse was not built (no localvol-fuse CMake target)";
    }
    VolumeDirs dirs;
    ASSERT_NO_FATAL_FAILURE(MakeVolumeDirs(&dirs));
    disk_ = std::move(dirs.disk);
    mounts_ = std::move(dirs.mounts);
    backing_ = dirs.backing;
    mnt_ = dirs.mountpoint;
  }

  void TearDown() override {
    if (server_ && server_->watchdog_fired())
      ADD_FAILURE() << "localvol-fuse hung; watchdog killed it";
    if (server_ && HasFailure())
      std::cout << "--- localvol-fuse output ---\n" << server_->Log() << "\n---\n";
    server_.reset();
  }

  void Start(const std::string& capacity, std::optional<uint64_t> inodes = std::nullopt) {
    FuseServerOptions o;
    o.source = backing_;
    o.mountpoint = mnt_;
    o.capacity = capacity;
    o.inodes = inodes;
    auto s = FuseServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }

  // Polls statfs until at least `want` bytes are free or `timeout` passes.
  // Returns the last free byte count.
  uint64_t WaitForFreeBytes(uint64_t want, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    uint64_t free_bytes = Space().free_bytes();
    while (free_bytes < want && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
      free_bytes = Space().free_bytes();
    }
    return free_bytes;
  }

  // Polls statfs until at most `want` inodes are used or `timeout` passes: a
  // removed inode is freed when the kernel forgets it, which it sends on its
  // own after the unlink or rename has returned. Returns the last count.
  uint64_t WaitForUsedInodes(uint64_t want, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    uint64_t used = Space().used_inodes();
    while (used > want && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
      used = Space().used_inodes();
    }
    return used;
  }

  std::string M(const std::string& rel) const { return mnt_ + "/" + rel; }
  std::string B(const std::string& rel) const { return backing_ + "/" + rel; }

  SpaceInfo Space() {
    auto s = StatFs(mnt_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : SpaceInfo{};
  }
  uint64_t Du() {
    auto d = DuBytes(backing_);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? *d : 0;
  }
  // statfs usage agrees with du of the backing directory.
  void ExpectUsageMatchesDu(const std::string& when) {
    uint64_t du = Du();
    SpaceInfo s = Space();
    EXPECT_TRUE(UsageAgrees(s.used_bytes(), du)) << when << ": statfs used " << s.used_bytes()
                                                 << " vs du " << du << " (" << s.ToString() << ")";
  }

  std::unique_ptr<LoopDisk> disk_;
  TempDir mounts_;
  std::string backing_, mnt_;
  std::unique_ptr<FuseServer> server_;
};

// ---------------------------------------------------------------------------
// statfs

TEST_F(QuotaTest, StatfsReportsExactCapacityAndInodeLimit) {
  struct Case {
    std::string arg;
    uint64_t bytes;
  };
  for (const Case& c : {Case{"64Mi", 64 * kMiB}, Case{"500M", 500000000}, Case{"1Gi", kGiB},
                        Case{"40960000", 40960000}}) {
    SCOPED_TRACE("--capacity " + c.arg);
    ASSERT_NO_FATAL_FAILURE(Start(c.arg, 5000));
    SpaceInfo s = Space();
    EXPECT_EQ(s.blocks * s.frsize, c.bytes) << s.ToString();
    EXPECT_EQ(s.files, 5000u) << s.ToString();
    EXPECT_EQ(s.ffree, 5000u) << s.ToString();
    EXPECT_LE(s.used_bytes(), 64 * kKiB)
        << "an empty volume uses (almost) nothing: " << s.ToString();
    EXPECT_EQ(s.bavail, s.bfree);
    ASSERT_TRUE(server_->Stop().ok());
    server_.reset();
  }
}

TEST_F(QuotaTest, DefaultInodeLimitIsOnePer16KiB) {
  ASSERT_NO_FATAL_FAILURE(Start("1Gi"));
  EXPECT_EQ(Space().files, kGiB / (16 * kKiB));
  ASSERT_TRUE(server_->Stop().ok());
  server_.reset();
  ASSERT_NO_FATAL_FAILURE(Start("4Mi"));
  EXPECT_EQ(Space().files, 1024u);  // the floor
  // The ceiling, from 64 TiB of capacity on: an explicit limit may not exceed it either.
  EXPECT_EQ(fuse::DefaultInodeLimit(uint64_t{64} << 40), fuse::kMaxInodeLimit);
  EXPECT_EQ(fuse::DefaultInodeLimit(uint64_t{1} << 60), fuse::kMaxInodeLimit);
}

TEST_F(QuotaTest, StatfsTracksUsage) {
  ASSERT_NO_FATAL_FAILURE(Start("64Mi", 1000));
  SpaceInfo empty = Space();
  ASSERT_TRUE(WriteFile(M("f"), RandomBytes(1, 8 * kMiB)).ok());
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  SpaceInfo s = Space();
  EXPECT_GE(s.used_bytes(), empty.used_bytes() + 8 * kMiB) << s.ToString();
  EXPECT_LE(s.used_bytes(), empty.used_bytes() + 9 * kMiB) << s.ToString();
  EXPECT_EQ(s.used_inodes(), empty.used_inodes() + 2) << s.ToString();
  EXPECT_EQ(s.blocks * s.frsize, 64 * kMiB);
  ExpectUsageMatchesDu("after 8 MiB");
}

// ---------------------------------------------------------------------------
// byte quota

TEST_F(QuotaTest, FillToExactlyCapacityThenEnospc) {
  constexpr uint64_t kCap = 64 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("64Mi"));
  UniqueFd fd(::open(M("big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  // Up to one byte short of the capacity, in 1 MiB writes...
  FillResult r = FillFd(fd.get(), kMiB, kCap - 1);
  EXPECT_EQ(r.err, 0) << ErrnoName(r.err) << " after " << r.bytes << " bytes";
  ASSERT_EQ(r.bytes, kCap - 1);
  // ...the last byte lands in an already allocated block...
  EXPECT_SYS_OK(::write(fd.get(), "z", 1));
  // ...and the next byte needs a block over the quota.
  EXPECT_SYS_ERRNO(::write(fd.get(), "z", 1), ENOSPC);
  EXPECT_SYS_ERRNO(::pwrite(fd.get(), "z", 1, kCap + 10 * kMiB), ENOSPC);
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kCap);
  EXPECT_EQ(Space().bfree, 0u) << Space().ToString();
  fd.Reset();
  EXPECT_LE(Du(), kCap);
  // A second file cannot get a single block either.
  FillResult more = FillPath(M("more"), 4096, 4096);
  EXPECT_EQ(ErrnoName(more.err), "ENOSPC");
  EXPECT_EQ(more.bytes, 0u);
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("when full");
}

TEST_F(QuotaTest, OneByteOverIsRefusedAndNothingIsStoredOverQuota) {
  constexpr uint64_t kCap = 16 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  UniqueFd fd(::open(M("f").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  FillResult r = FillFd(fd.get(), 256 * kKiB, kCap - 4096);
  ASSERT_EQ(r.bytes, kCap - 4096) << ErrnoName(r.err);
  // 4097 bytes need two blocks; only one is left. Either a short write of at
  // most the block that fits, or ENOSPC; never more.
  const std::string over(4097, 'o');
  ssize_t w = ::write(fd.get(), over.data(), over.size());
  if (w < 0) {
    EXPECT_EQ(ErrnoName(errno), "ENOSPC");
  } else {
    EXPECT_LE(w, 4096) << "stored past the quota";
    EXPECT_SYS_ERRNO(::write(fd.get(), over.data(), over.size()), ENOSPC);
  }
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_LE(static_cast<uint64_t>(st.st_size), kCap);
  fd.Reset();
  EXPECT_LE(Du(), kCap);
  auto alloc = AllocatedBytes(B("f"));
  ASSERT_TRUE(alloc.ok());
  EXPECT_LE(*alloc, kCap);
}

TEST_F(QuotaTest, OverwritingInPlaceWorksWhenFull) {
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  FillResult r = FillPath(M("f"), kMiB);
  ASSERT_EQ(ErrnoName(r.err), "ENOSPC");
  UniqueFd fd(::open(M("f").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  const std::string data = RandomBytes(77, kMiB);
  EXPECT_EQ(PwriteAll(fd.get(), data, 0), Ok(kMiB))
      << "overwriting allocated blocks needs no quota";
  fd.Reset();
  auto back = ReadFile(M("f"));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->substr(0, kMiB) == data);
}

TEST_F(QuotaTest, FallocateOverQuotaFailsAndAllocatesNothing) {
  constexpr uint64_t kCap = 32 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  uint64_t used_before = Space().used_bytes();
  UniqueFd fd(::open(M("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  EXPECT_SYS_ERRNO(::fallocate(fd.get(), 0, 0, 64 * kMiB), ENOSPC);
  EXPECT_SYS_ERRNO(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, kCap + 4096), ENOSPC);
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(st.st_blocks, 0);
  EXPECT_EQ(Space().used_bytes(), used_before);
  EXPECT_LE(Du(), kCap);
  // Within the quota it works; the rest of the way it does not.
  EXPECT_SYS_OK(::fallocate(fd.get(), 0, 0, 16 * kMiB));
  EXPECT_SYS_ERRNO(::fallocate(fd.get(), 0, 16 * kMiB, 17 * kMiB), ENOSPC);
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, static_cast<off_t>(16 * kMiB));
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 16 * kMiB + 64 * kKiB);
  EXPECT_EQ(ErrnoName(::posix_fallocate(fd.get(), 16 * kMiB, 17 * kMiB)), "ENOSPC");
  fd.Reset();
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("after refused fallocate");
}

TEST_F(QuotaTest, TruncatePunchHoleAndUnlinkGiveSpaceBack) {
  constexpr uint64_t kCap = 32 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  ASSERT_EQ(ErrnoName(FillPath(M("a"), kMiB).err), "ENOSPC");
  EXPECT_EQ(Space().bfree, 0u);
  // truncate
  ASSERT_SYS_OK(::truncate(M("a").c_str(), 16 * kMiB));
  EXPECT_GE(Space().free_bytes(), 15 * kMiB) << Space().ToString();
  FillResult b = FillPath(M("b"), kMiB, 8 * kMiB);
  EXPECT_EQ(b.err, 0) << ErrnoName(b.err) << " after " << b.bytes;
  // fill again, then punch a hole
  ASSERT_EQ(ErrnoName(FillPath(M("b"), kMiB).err), "ENOSPC");
  {
    UniqueFd fd(::open(M("a").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_SYS_OK(
        ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * kMiB, 8 * kMiB));
  }
  EXPECT_GE(Space().free_bytes(), 7 * kMiB) << Space().ToString();
  FillResult c = FillPath(M("c"), kMiB, 4 * kMiB);
  EXPECT_EQ(c.err, 0) << ErrnoName(c.err) << " after " << c.bytes;
  // unlink
  ASSERT_EQ(ErrnoName(FillPath(M("c"), kMiB).err), "ENOSPC");
  ASSERT_SYS_OK(::unlink(M("b").c_str()));
  // The kernel sends FUSE_RELEASE for the closed file asynchronously, so the
  // server may still hold it open for a moment when the unlink arrives.
  EXPECT_GE(WaitForFreeBytes(7 * kMiB, 2s), 7 * kMiB) << Space().ToString();
  FillResult d = FillPath(M("d"), kMiB, 4 * kMiB);
  EXPECT_EQ(d.err, 0) << ErrnoName(d.err) << " after " << d.bytes;
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("after giving space back");
}

// Space given back must be visible at once: to statfs and to the next write.
TEST_F(QuotaTest, FreedSpaceIsVisibleImmediately) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_EQ(ErrnoName(FillPath(M("a"), kMiB).err), "ENOSPC");
    ASSERT_SYS_OK(::truncate(M("a").c_str(), 0));
    SpaceInfo s = Space();
    EXPECT_GE(s.free_bytes(), 31 * kMiB) << "statfs right after truncate: " << s.ToString();
    ASSERT_EQ(ErrnoName(FillPath(M("a"), kMiB).err), "ENOSPC");
    ASSERT_SYS_OK(::truncate(M("a").c_str(), 0));
    FillResult r = FillPath(M("b"), kMiB, 16 * kMiB);
    EXPECT_EQ(r.err, 0) << "write right after truncate: " << ErrnoName(r.err) << " after "
                        << r.bytes;
    ASSERT_SYS_OK(::unlink(M("b").c_str()));
  }
}

TEST_F(QuotaTest, UnlinkedButOpenFileKeepsItsSpaceUntilClosed) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  UniqueFd fd(::open(M("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(FillFd(fd.get(), kMiB, 20 * kMiB).bytes, 20 * kMiB);
  ASSERT_SYS_OK(::unlink(M("f").c_str()));
  // The blocks are still allocated: another 20 MiB must not fit.
  FillResult g = FillPath(M("g"), kMiB, 20 * kMiB);
  EXPECT_EQ(ErrnoName(g.err), "ENOSPC");
  EXPECT_LE(Du(), 32 * kMiB);
  ASSERT_SYS_OK(::unlink(M("g").c_str()));
  fd.Reset();
  // Closing releases them (the kernel sends FUSE_RELEASE asynchronously).
  EXPECT_GE(WaitForFreeBytes(30 * kMiB, 5s), 30 * kMiB) << Space().ToString();
}

TEST_F(QuotaTest, UsageMatchesDuForAMixedTree) {
  ASSERT_NO_FATAL_FAILURE(Start("256Mi"));
  std::mt19937_64 rng(SeedFromEnvOr(99));
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  ASSERT_SYS_OK(::mkdir(M("d/e").c_str(), 0755));
  for (int i = 0; i < 200; ++i) {
    std::string p = M((i % 3 == 0 ? "d/e/f" : i % 3 == 1 ? "d/f" : "f") + std::to_string(i));
    ASSERT_TRUE(WriteFile(p, RandomBytes(i, 1 + rng() % (64 * kKiB))).ok());
  }
  for (int i = 0; i < 5; ++i) {  // sparse
    UniqueFd fd(
        ::open(M("sparse" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(PwriteAll(fd.get(), RandomBytes(i, 100000), 0).ok());
    ASSERT_TRUE(PwriteAll(fd.get(), RandomBytes(i, 100000), 10 * kMiB).ok());
  }
  ASSERT_TRUE(WriteFile(M("linked"), RandomBytes(5, 3 * kMiB)).ok());
  ASSERT_SYS_OK(::link(M("linked").c_str(), M("d/hardlink").c_str()));
  {
    UniqueFd fd(::open(M("prealloc").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_SYS_OK(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 5 * kMiB));
  }
  ASSERT_TRUE(WriteFile(M("shrunk"), RandomBytes(6, 6 * kMiB)).ok());
  ASSERT_SYS_OK(::truncate(M("shrunk").c_str(), kMiB));
  ASSERT_SYS_OK(::symlink("linked", M("sym").c_str()));
  ASSERT_SYS_OK(
      ::setxattr(M("linked").c_str(), "user.big", RandomBytes(1, 30000).data(), 30000, 0));
  ExpectUsageMatchesDu("mixed tree");
  SpaceInfo s = Space();
  // 200 files + 5 sparse + linked + prealloc + shrunk + sym + 2 dirs
  EXPECT_EQ(s.used_inodes(), 200u + 5 + 1 + 1 + 1 + 1 + 2) << s.ToString();
}

// ---------------------------------------------------------------------------
// inode quota

TEST_F(QuotaTest, InodeLimitRefusesEveryKindOfNewInode) {
  ASSERT_NO_FATAL_FAILURE(Start("64Mi", 64));
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  for (int i = 0; i < 63; ++i) {
    std::string p = M("d/f" + std::to_string(i));
    int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << "file " << i << ": " << std::strerror(errno);
    ::close(fd);
  }
  SpaceInfo s = Space();
  EXPECT_EQ(s.files, 64u);
  EXPECT_EQ(s.ffree, 0u) << s.ToString();
  EXPECT_SYS_ERRNO(::open(M("x").c_str(), O_CREAT | O_WRONLY, 0644), ENOSPC);
  EXPECT_SYS_ERRNO(::mkdir(M("xd").c_str(), 0755), ENOSPC);
  EXPECT_SYS_ERRNO(::mknod(M("xp").c_str(), S_IFIFO | 0644, 0), ENOSPC);
  EXPECT_SYS_ERRNO(::mknod(M("xs").c_str(), S_IFSOCK | 0644, 0), ENOSPC);
  EXPECT_SYS_ERRNO(::symlink("d", M("xl").c_str()), ENOSPC);
  EXPECT_FALSE(Exists(M("x")));
  EXPECT_FALSE(Exists(B("x")));
  EXPECT_FALSE(Exists(B("xd")));
  // A hard link or a rename makes no new inode.
  EXPECT_SYS_OK(::link(M("d/f0").c_str(), M("hardlink").c_str()));
  EXPECT_SYS_OK(::rename(M("d/f1").c_str(), M("renamed").c_str()));
  // Freeing one inode admits exactly one more.
  ASSERT_SYS_OK(::unlink(M("d/f2").c_str()));
  EXPECT_SYS_OK(::mkdir(M("newdir").c_str(), 0755));
  EXPECT_SYS_ERRNO(::mkdir(M("newdir2").c_str(), 0755), ENOSPC);
  ASSERT_SYS_OK(::rmdir(M("newdir").c_str()));
  int fd = ::open(M("newfile").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0) << std::strerror(errno);
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(Space().ffree, 0u);
}

TEST_F(QuotaTest, InodeLimitSurvivesRestart) {
  ASSERT_NO_FATAL_FAILURE(Start("64Mi", 32));
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(WriteFile(M("f" + std::to_string(i)), "x").ok());
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_EQ(Space().ffree, 0u);
  EXPECT_SYS_ERRNO(::mkdir(M("d").c_str(), 0755), ENOSPC);
  server_->Kill9();
  ASSERT_TRUE(server_->Restart().ok()) << server_->Log();
  EXPECT_EQ(Space().ffree, 0u);
  EXPECT_SYS_ERRNO(::mkdir(M("d").c_str(), 0755), ENOSPC);
}

// ---------------------------------------------------------------------------
// restarts and crashes

TEST_F(QuotaTest, UsageSurvivesACleanRestartExactly) {
  ASSERT_NO_FATAL_FAILURE(Start("128Mi"));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(WriteFile(M("f" + std::to_string(i)), RandomBytes(i, (i + 1) * 100000)).ok());
  }
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  ASSERT_SYS_OK(::truncate(M("f3").c_str(), 10));
  SpaceInfo before = Space();
  Status st = server_->Stop();
  ASSERT_TRUE(st.ok()) << st.ToString();
  uint64_t du_offline = Du();
  ASSERT_TRUE(server_->Restart().ok());
  SpaceInfo after = Space();
  EXPECT_EQ(after.bfree, before.bfree)
      << "before " << before.ToString() << " after " << after.ToString();
  EXPECT_EQ(after.ffree, before.ffree);
  EXPECT_EQ(after.blocks, before.blocks);
  EXPECT_TRUE(UsageAgrees(after.used_bytes(), du_offline));
}

TEST_F(QuotaTest, UsageIsRecoveredAfterKill9) {
  constexpr uint64_t kCap = 96 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("96Mi"));
  ASSERT_TRUE(WriteFile(M("first"), RandomBytes(1, 10 * kMiB)).ok());
  ASSERT_TRUE(WriteFile(M("doomed"), RandomBytes(2, 5 * kMiB)).ok());
  // A clean stop stores the usage...
  ASSERT_TRUE(server_->Stop().ok());
  ASSERT_TRUE(server_->Restart().ok());
  // ...which this session then makes stale before it crashes.
  ASSERT_TRUE(WriteFile(M("second"), RandomBytes(3, 30 * kMiB)).ok());
  ASSERT_SYS_OK(::unlink(M("doomed").c_str()));
  ASSERT_SYS_OK(::mkdir(M("dir").c_str(), 0755));
  server_->Kill9();
  struct statvfs sv;
  EXPECT_SYS_ERRNO(::statvfs(mnt_.c_str(), &sv), ENOTCONN);
  ASSERT_TRUE(server_->DetachDeadMount().ok());
  uint64_t du = Du();
  ASSERT_TRUE(server_->Restart().ok()) << server_->Log();
  SpaceInfo s = Space();
  EXPECT_TRUE(UsageAgrees(s.used_bytes(), du))
      << "after crash: statfs " << s.ToString() << " du " << du;
  EXPECT_GE(s.used_bytes(), 40 * kMiB) << s.ToString();
  EXPECT_EQ(s.used_inodes(), 3u) << s.ToString();
  // Over-quota writes still fail, and nothing is stored over quota.
  FillResult r = FillPath(M("fill"), kMiB);
  EXPECT_EQ(ErrnoName(r.err), "ENOSPC");
  EXPECT_LE(Du(), kCap);
  EXPECT_LE(r.bytes, kCap - 40 * kMiB);
  ExpectUsageMatchesDu("after crash and refill");
}

// The first writes after a mount that had to rescan (no clean state) must be
// checked against the rescanned usage, however big the tree.
TEST_F(QuotaTest, WritesRightAfterARescanSeeTheFullUsage) {
  constexpr uint64_t kCap = 64 * kMiB;
  // 3000 files, ~56 MiB, made directly on the disk: the server must find them.
  const std::string chunk = RandomBytes(5, 19 * kKiB);
  for (int d = 0; d < 30; ++d) {
    std::string dir = B("d" + std::to_string(d));
    ASSERT_SYS_OK(::mkdir(dir.c_str(), 0755));
    for (int f = 0; f < 100; ++f) {
      ASSERT_TRUE(WriteFile(dir + "/f" + std::to_string(f), chunk).ok());
    }
  }
  uint64_t du = Du();
  ASSERT_GT(du, 50 * kMiB);
  ASSERT_LT(du, kCap);
  ASSERT_NO_FATAL_FAILURE(Start("64Mi"));
  FillResult r = FillPath(M("more"), kMiB);  // immediately
  EXPECT_EQ(ErrnoName(r.err), "ENOSPC");
  EXPECT_LE(r.bytes, kCap - du + kMiB) << "writes were admitted before the rescan finished";
  EXPECT_LE(Du(), kCap);
  EXPECT_EQ(Space().used_inodes(), 30u * 100 + 30 + 1);
  ExpectUsageMatchesDu("after rescan and fill");
}

TEST_F(QuotaTest, CrashWhileWritingThenRestartStaysWithinQuota) {
  constexpr uint64_t kCap = 64 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("64Mi"));
  // A writer keeps writing while the server is killed under it.
  std::string path = M("busy");
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    server_->Kill9();
  });
  FillResult during = RunInChild([&] { return FillPath(path, 256 * kKiB); }, 60s);
  killer.join();
  // ECONNABORTED: the write in flight when the server died (the kernel
  // aborts the requests the dead server had taken).
  EXPECT_TRUE(during.err == ENOTCONN || during.err == ENOSPC || during.err == EIO ||
              during.err == ECONNABORTED)
      << ErrnoName(during.err);
  ASSERT_TRUE(server_->Restart().ok()) << server_->Log();
  ExpectUsageMatchesDu("after crash mid-write");
  FillResult r = FillPath(M("fill"), kMiB);
  EXPECT_EQ(ErrnoName(r.err), "ENOSPC");
  EXPECT_LE(Du(), kCap);
}

TEST_F(QuotaTest, RenameOverAFileFreesTheReplacedFile) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  ASSERT_TRUE(WriteFile(M("x"), RandomBytes(1, 20 * kMiB)).ok());
  ASSERT_TRUE(WriteFile(M("y"), RandomBytes(2, 10 * kMiB)).ok());
  ASSERT_SYS_OK(::rename(M("y").c_str(), M("x").c_str()));
  EXPECT_GE(WaitForFreeBytes(21 * kMiB, 2s), 21 * kMiB) << Space().ToString();
  FillResult r = FillPath(M("z"), kMiB, 20 * kMiB);
  EXPECT_EQ(r.err, 0) << ErrnoName(r.err) << " after " << r.bytes;
  EXPECT_EQ(Space().used_inodes(), 2u);
  ExpectUsageMatchesDu("after rename over");
}

// A full volume renames as XFS does (posix_test's RenameFullTest): nothing
// is reserved to replace a name, and a new name is tried without a
// reservation. Usage stays exact and within the capacity.
TEST_F(QuotaTest, RenamesAtAFullVolumeKeepUsageExact) {
  constexpr uint64_t kCap = 16 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  ASSERT_TRUE(WriteFile(M("a"), "a").ok());
  ASSERT_TRUE(WriteFile(M("b"), "b").ok());
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  ASSERT_EQ(ErrnoName(FillPath(M("fill"), 4096).err), "ENOSPC");
  EXPECT_LT(Space().free_bytes(), 4096u) << Space().ToString();
  EXPECT_SYS_OK(::rename(M("a").c_str(), M("d/a2").c_str()));
  EXPECT_SYS_OK(::rename(M("d/a2").c_str(), M("b").c_str()));
  EXPECT_GE(WaitForFreeBytes(4096, 2s), 4096u) << "the replaced file's block came back";
  ExpectUsageMatchesDu("after renames at a full volume");
  EXPECT_LE(Du(), kCap);
}

// RENAME_WHITEOUT leaves a new inode (a 0/0 character device) at the old
// name: it is admitted and counted as one.
TEST_F(QuotaTest, RenameWhiteoutCountsTheWhiteout) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi", 2));
  auto used = [&] { return Space().used_inodes(); };
  ASSERT_TRUE(WriteFile(M("a"), "a").ok());
  ASSERT_SYS_OK(::renameat2(AT_FDCWD, M("a").c_str(), AT_FDCWD, M("b").c_str(), RENAME_WHITEOUT));
  struct stat st {};
  ASSERT_SYS_OK(::lstat(M("a").c_str(), &st));
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(used(), 2u);
  // At the inode limit, a whiteout cannot be made.
  EXPECT_SYS_ERRNO(::renameat2(AT_FDCWD, M("b").c_str(), AT_FDCWD, M("c").c_str(), RENAME_WHITEOUT),
                   ENOSPC);
  EXPECT_TRUE(Exists(M("b")));
  ASSERT_SYS_OK(::unlink(M("a").c_str()));
  EXPECT_EQ(used(), 1u);
}

TEST_F(QuotaTest, InodeAccountingFollowsLinksRenamesAndRemovals) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi", 100));
  auto used = [&] { return Space().used_inodes(); };
  ASSERT_TRUE(WriteFile(M("a"), "a").ok());
  ASSERT_TRUE(WriteFile(M("b"), "b").ok());
  EXPECT_EQ(used(), 2u);
  ASSERT_SYS_OK(::link(M("a").c_str(), M("c").c_str()));
  EXPECT_EQ(used(), 2u) << "a hard link is not an inode";
  ASSERT_SYS_OK(::unlink(M("a").c_str()));
  EXPECT_EQ(used(), 2u) << "the inode still has a name (c)";
  ASSERT_SYS_OK(::rename(M("b").c_str(), M("c").c_str()));
  EXPECT_EQ(WaitForUsedInodes(1, 5s), 1u) << "rename over c drops c's inode";
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  ASSERT_SYS_OK(::mkfifo(M("d/p").c_str(), 0644));
  ASSERT_SYS_OK(::symlink("c", M("d/l").c_str()));
  EXPECT_EQ(used(), 4u);
  ASSERT_SYS_OK(::renameat2(AT_FDCWD, M("c").c_str(), AT_FDCWD, M("d/l").c_str(), RENAME_EXCHANGE));
  EXPECT_EQ(used(), 4u);
  ASSERT_SYS_OK(::unlink(M("d/p").c_str()));
  ASSERT_SYS_OK(::unlink(M("d/l").c_str()));
  ASSERT_SYS_OK(::unlink(M("c").c_str()));
  ASSERT_SYS_OK(::rmdir(M("d").c_str()));
  EXPECT_EQ(WaitForUsedInodes(0, 5s), 0u);
  // The count survives a restart, and matches the tree.
  ASSERT_TRUE(WriteFile(M("e"), "e").ok());
  ASSERT_SYS_OK(::link(M("e").c_str(), M("f").c_str()));
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_EQ(used(), 1u);
  server_->Kill9();
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_EQ(used(), 1u) << "after a crash the rescan must count hard-linked inodes once";
}

TEST_F(QuotaTest, SparseFilesCountOnlyAllocatedBlocks) {
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  UniqueFd fd(::open(M("sparse").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  EXPECT_EQ(::pwrite(fd.get(), "x", 1, 10 * kGiB), 1) << std::strerror(errno);
  EXPECT_SYS_OK(::ftruncate(fd.get(), 100 * kGiB));
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 100 * kGiB);
  fd.Reset();
  EXPECT_LE(Space().used_bytes(), 64 * kKiB) << Space().ToString();
  FillResult r = FillPath(M("data"), kMiB, 15 * kMiB);
  EXPECT_EQ(r.err, 0) << ErrnoName(r.err) << " after " << r.bytes;
  ExpectUsageMatchesDu("with a 100 GiB sparse file");
}

// XFS copies with reflinks: the copy's blocks are shared, yet du (and so the
// quota) counts them in full. A copy that would take the volume over its
// capacity must be refused (or cut short), never stored.
TEST_F(QuotaTest, CopyFileRangeRespectsTheQuota) {
  constexpr uint64_t kCap = 32 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  ASSERT_TRUE(WriteFile(M("src"), RandomBytes(1, 20 * kMiB)).ok());
  UniqueFd in(::open(M("src").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd out(::open(M("dst").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(in.valid() && out.valid());
  uint64_t copied = 0;
  int err = 0;
  while (copied < 20 * kMiB) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, 20 * kMiB - copied, 0);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    copied += n;
  }
  EXPECT_EQ(ErrnoName(err), "ENOSPC")
      << "copied " << copied << " bytes of 20 MiB into 12 MiB of room";
  EXPECT_LE(copied, 12 * kMiB);
  out.Reset();
  EXPECT_LE(Du(), kCap) << "copy_file_range stored past the quota";
  ExpectUsageMatchesDu("after copy_file_range");
  // A copy that fits works and reads back right.
  ASSERT_SYS_OK(::unlink(M("dst").c_str()));
  ASSERT_TRUE(WriteFile(M("small"), RandomBytes(2, 4 * kMiB)).ok());
  UniqueFd in2(::open(M("small").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd out2(::open(M("small2").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  uint64_t done = 0;
  while (done < 4 * kMiB) {
    ssize_t n = ::copy_file_range(in2.get(), nullptr, out2.get(), nullptr, 4 * kMiB - done, 0);
    ASSERT_GT(n, 0) << std::strerror(errno);
    done += n;
  }
  out2.Reset();
  EXPECT_TRUE(ReadFile(M("small2")).value() == ReadFile(M("small")).value());
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("after a copy that fits");
}

TEST_F(QuotaTest, DirectIoOverQuotaIsRefused) {
  constexpr uint64_t kCap = 16 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  int raw_fd = ::open(M("f").c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(raw_fd, 0) << std::strerror(errno);
  UniqueFd fd(raw_fd);
  void* buf = nullptr;
  ASSERT_EQ(::posix_memalign(&buf, 4096, kMiB), 0);
  std::unique_ptr<void, decltype(&std::free)> owner(buf, &std::free);
  std::memset(buf, 'd', kMiB);
  uint64_t written = 0;
  int err = 0;
  for (int i = 0; i < 32; ++i) {
    ssize_t n = ::write(fd.get(), buf, kMiB);
    if (n < 0) {
      err = errno;
      break;
    }
    written += n;
  }
  EXPECT_EQ(ErrnoName(err), "ENOSPC");
  EXPECT_EQ(written, kCap);
  fd.Reset();
  EXPECT_LE(Du(), kCap);
}

// Writes through a shared mapping cannot fail at the store instruction; when
// the volume is full the failure must still surface (SIGBUS, or an error from
// msync/fsync/close), never vanish while the data is silently dropped.
TEST_F(QuotaTest, MmapWritesOverQuotaAreReportedNotLost) {
  constexpr uint64_t kCap = 16 * kMiB;
  ASSERT_NO_FATAL_FAILURE(Start("16Mi"));
  std::string path = M("mapped");
  ASSERT_TRUE(WriteFile(path, "").ok());
  ASSERT_SYS_OK(::truncate(path.c_str(), kMiB));  // sparse: needs blocks when written
  ASSERT_EQ(ErrnoName(FillPath(M("full"), kMiB).err), "ENOSPC");
  struct Reported {
    int msync_err;
    int fsync_err;
    int close_err;
  };
  std::string payload;
  Status st = ForkAndCollect(
      nullptr,
      [&](int wfd) {
        Reported rep{};
        int fd = ::open(path.c_str(), O_RDWR);
        char* map =
            static_cast<char*>(::mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        if (map == MAP_FAILED) ::_exit(3);
        std::memset(map, 'm', kMiB);
        rep.msync_err = ::msync(map, kMiB, MS_SYNC) == 0 ? 0 : errno;
        rep.fsync_err = ::fsync(fd) == 0 ? 0 : errno;
        ::munmap(map, kMiB);
        rep.close_err = ::close(fd) == 0 ? 0 : errno;
        (void)!::write(wfd, &rep, sizeof(rep));
      },
      &payload, 30s);
  const bool sigbus = !st.ok() && st.context().find("signal 7") != std::string::npos;
  if (!sigbus) {
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_EQ(payload.size(), sizeof(Reported));
    Reported rep;
    std::memcpy(&rep, payload.data(), sizeof(rep));
    EXPECT_TRUE(rep.msync_err != 0 || rep.fsync_err != 0 || rep.close_err != 0)
        << "mmap writes over quota were accepted silently (msync, fsync and close all succeeded)";
  }
  EXPECT_LE(Du(), kCap);
  // Whatever was reported, the file must not claim data it does not hold.
  auto data = ReadFile(path);
  ASSERT_TRUE(data.ok());
  if (data->find('m') != std::string::npos) {
    EXPECT_LE(Du(), kCap) << "mapped data was stored";
  }
}

// localvol keeps its clean-shutdown state in the backing root's xattrs
// (trusted.localvol.*). Users of the volume must neither see nor change it, or
// they could forge the usage the next mount trusts.
TEST_F(QuotaTest, InternalStateXattrsAreHiddenAndProtected) {
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  ASSERT_TRUE(WriteFile(M("f"), RandomBytes(1, 4 * kMiB)).ok());
  ASSERT_TRUE(server_->Restart().ok());  // a clean stop writes the state
  char names[4096];
  ssize_t n = ::listxattr(mnt_.c_str(), names, sizeof(names));
  ASSERT_GE(n, 0) << std::strerror(errno);
  for (ssize_t i = 0; i < n;) {
    std::string name(names + i);
    i += name.size() + 1;
    EXPECT_NE(name.rfind("trusted.localvol.", 0), 0u) << "listxattr on the root shows " << name;
  }
  char value[256];
  EXPECT_SYS_ERRNO(::getxattr(mnt_.c_str(), "trusted.localvol.state", value, sizeof(value)),
                   ENODATA);
  const std::string forged = "forged";
  SysResult set =
      Sys(::setxattr(mnt_.c_str(), "trusted.localvol.state", forged.data(), forged.size(), 0));
  EXPECT_FALSE(set.ok()) << "a volume user could overwrite localvol's state";
  SysResult rm = Sys(::removexattr(mnt_.c_str(), "trusted.localvol.state"));
  EXPECT_FALSE(rm.ok() && rm.err == 0) << "a volume user could remove localvol's state";
  // And the usage is still right after the next clean restart.
  ASSERT_TRUE(server_->Restart().ok());
  ExpectUsageMatchesDu("after trying to forge the state");
  EXPECT_GE(Space().used_bytes(), 4 * kMiB);
}

// ---------------------------------------------------------------------------
// concurrency

TEST_F(QuotaTest, ConcurrentWritersNeverExceedCapacity) {
  constexpr uint64_t kCap = 64 * kMiB;
  constexpr int kWriters = 4;
  ASSERT_NO_FATAL_FAILURE(Start("64Mi"));
  std::vector<FillResult> results(kWriters);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) {
    std::string path = M("w" + std::to_string(i));
    size_t chunk = (i + 1) * 48 * kKiB;  // different sizes: 48k..192k
    threads.emplace_back([&results, i, path, chunk] {
      results[i] = RunInChild([&] { return FillPath(path, chunk); }, 120s);
    });
  }
  for (auto& t : threads) t.join();
  uint64_t total = 0;
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_EQ(ErrnoName(results[i].err), "ENOSPC") << "writer " << i;
    total += results[i].bytes;
  }
  EXPECT_LE(total, kCap);
  EXPECT_GE(total, kCap - 4 * kMiB) << "the volume filled up far below its capacity";
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("after concurrent fill");
}

TEST_F(QuotaTest, ConcurrentWritersToOneSparseFileNeverExceedCapacity) {
  constexpr uint64_t kCap = 32 * kMiB;
  constexpr int kWriters = 4;
  ASSERT_NO_FATAL_FAILURE(Start("32Mi"));
  ASSERT_TRUE(WriteFile(M("shared"), "").ok());
  std::string path = M("shared");
  std::vector<FillResult> results(kWriters);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&results, i, path] {
      results[i] = RunInChild(
          [&] {
            FillResult r;
            int fd = ::open(path.c_str(), O_WRONLY);
            if (fd < 0) return FillResult{0, errno};
            const std::string data = RandomBytes(i, 64 * kKiB);
            // Each writer owns a 64 MiB region of the file: together they want 256 MiB.
            for (uint64_t off = i * 64 * kMiB;; off += data.size()) {
              SysResult w = PwriteAll(fd, data, off);
              r.bytes += w.ret > 0 ? w.ret : 0;
              if (!w.ok()) {
                r.err = w.err;
                break;
              }
            }
            ::close(fd);
            return r;
          },
          120s);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kWriters; ++i) EXPECT_EQ(ErrnoName(results[i].err), "ENOSPC") << i;
  EXPECT_LE(Du(), kCap);
  ExpectUsageMatchesDu("after concurrent sparse fill");
}

// ---------------------------------------------------------------------------
// refusing to start over quota

TEST_F(QuotaTest, CapacityBelowExistingUsageRefusesToMount) {
  ASSERT_TRUE(WriteFile(B("existing"), RandomBytes(1, 20 * kMiB)).ok());
  FuseServerOptions o;
  o.source = backing_;
  o.mountpoint = mnt_;
  o.capacity = "10Mi";
  CommandResult r = RunCommand(FuseServer::CommandLine(o), 20s);
  if (IsMountPoint(mnt_)) (void)LazyUnmountAll(mnt_);
  EXPECT_FALSE(r.timed_out) << "localvol-fuse mounted instead of refusing";
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_FALSE(r.err.empty()) << "no message on stderr; " << r.Summary();
  EXPECT_TRUE(r.err.find("10") != std::string::npos || r.err.find("capacity") != std::string::npos)
      << "stderr does not mention the capacity: " << r.err;
  EXPECT_FALSE(IsMountPoint(mnt_));
  auto back = ReadFile(B("existing"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size(), 20 * kMiB);
}

TEST_F(QuotaTest, InodeLimitBelowExistingInodesRefusesToMount) {
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(WriteFile(B("f" + std::to_string(i)), "x").ok());
  FuseServerOptions o;
  o.source = backing_;
  o.mountpoint = mnt_;
  o.capacity = "64Mi";
  o.inodes = 50;
  CommandResult r = RunCommand(FuseServer::CommandLine(o), 20s);
  if (IsMountPoint(mnt_)) (void)LazyUnmountAll(mnt_);
  EXPECT_FALSE(r.timed_out) << "localvol-fuse mounted instead of refusing";
  EXPECT_NE(r.exit_code, 0) << r.Summary();
  EXPECT_FALSE(r.err.empty()) << r.Summary();
  EXPECT_FALSE(IsMountPoint(mnt_));
}

// ---------------------------------------------------------------------------
// SetLimits and Usage (in-process volume)

class SetLimitsTest : public QuotaTest {
 protected:
  void SetUp() override {
    if (!InProcessVolume::Available()) {
      GTEST_SKIP() << "the localvol_fuse library was not built (no localvol_fuse CMake target)";
    }
    QuotaTest::SetUp();
  }
  void TearDown() override {
    vol_.reset();
    QuotaTest::TearDown();
  }
  void MountInProcess(uint64_t capacity, uint64_t inodes) {
    InProcessVolumeOptions o;
    o.source = backing_;
    o.mountpoint = mnt_;
    o.capacity_bytes = capacity;
    o.inode_limit = inodes;
    auto v = InProcessVolume::Mount(o);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    vol_ = std::move(*v);
  }
  std::unique_ptr<InProcessVolume> vol_;
};

#if LOCALVOL_HAVE_VOLUME_LIB

TEST_F(SetLimitsTest, GrowingTakesEffectImmediately) {
  ASSERT_NO_FATAL_FAILURE(MountInProcess(32 * kMiB, 1000));
  ASSERT_EQ(ErrnoName(FillPath(M("a"), kMiB).err), "ENOSPC");
  Status st = vol_->volume().SetLimits(64 * kMiB, 2000);
  ASSERT_TRUE(st.ok()) << st.ToString();
  SpaceInfo s = Space();
  EXPECT_EQ(s.capacity(), 64 * kMiB);
  EXPECT_EQ(s.files, 2000u);
  FillResult r = FillPath(M("b"), kMiB, 16 * kMiB);
  EXPECT_EQ(r.err, 0) << ErrnoName(r.err) << " after " << r.bytes;
  EXPECT_EQ(vol_->volume().Usage().capacity_bytes, 64 * kMiB);
  EXPECT_LE(Du(), 64 * kMiB);
}

TEST_F(SetLimitsTest, ShrinkingBelowUsageIsRefusedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(MountInProcess(32 * kMiB, 1000));
  ASSERT_TRUE(WriteFile(M("a"), RandomBytes(1, 20 * kMiB)).ok());
  auto before = vol_->volume().Usage();
  Status st = vol_->volume().SetLimits(16 * kMiB, 1000);
  EXPECT_EQ(ErrnoName(st.err()), "ENOSPC") << st.ToString();
  EXPECT_NE(st.context().find(std::to_string(before.used_bytes)), std::string::npos)
      << "the refusal should name the usage: " << st.ToString();
  auto after = vol_->volume().Usage();
  EXPECT_EQ(after.capacity_bytes, 32 * kMiB);
  EXPECT_EQ(after.inode_limit, 1000u);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(Space().capacity(), 32 * kMiB);
  // Shrinking to just above the usage works, and then binds.
  st = vol_->volume().SetLimits(24 * kMiB, 1000);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(Space().capacity(), 24 * kMiB);
  FillResult r = FillPath(M("b"), kMiB, 8 * kMiB);
  EXPECT_EQ(ErrnoName(r.err), "ENOSPC");
  EXPECT_LE(Du(), 24 * kMiB);
}

TEST_F(SetLimitsTest, ShrinkingTheInodeLimitBelowUseIsRefused) {
  ASSERT_NO_FATAL_FAILURE(MountInProcess(32 * kMiB, 1000));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(WriteFile(M("f" + std::to_string(i)), "").ok());
  Status st = vol_->volume().SetLimits(32 * kMiB, 50);
  EXPECT_EQ(ErrnoName(st.err()), "ENOSPC") << st.ToString();
  EXPECT_EQ(vol_->volume().Usage().inode_limit, 1000u);
  EXPECT_EQ(Space().files, 1000u);
  st = vol_->volume().SetLimits(32 * kMiB, 100);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(Space().ffree, 0u);
  EXPECT_SYS_ERRNO(::mkdir(M("d").c_str(), 0755), ENOSPC);
}

TEST_F(SetLimitsTest, UsageAgreesWithStatfsAndDu) {
  ASSERT_NO_FATAL_FAILURE(MountInProcess(64 * kMiB, 1000));
  ASSERT_TRUE(WriteFile(M("a"), RandomBytes(1, 7 * kMiB + 123)).ok());
  ASSERT_SYS_OK(::mkdir(M("d").c_str(), 0755));
  ASSERT_TRUE(WriteFile(M("d/b"), RandomBytes(2, 3 * kMiB)).ok());
  auto u = vol_->volume().Usage();
  SpaceInfo s = Space();
  EXPECT_EQ(u.capacity_bytes, 64 * kMiB);
  EXPECT_EQ(u.inode_limit, 1000u);
  EXPECT_EQ(u.used_inodes, 3u);
  EXPECT_EQ(s.used_inodes(), u.used_inodes);
  EXPECT_LE(
      s.used_bytes() > u.used_bytes ? s.used_bytes() - u.used_bytes : u.used_bytes - s.used_bytes(),
      s.frsize);
  EXPECT_TRUE(UsageAgrees(u.used_bytes, Du()));
}

TEST_F(SetLimitsTest, CleanRemountKeepsUsageExactly) {
  ASSERT_NO_FATAL_FAILURE(MountInProcess(64 * kMiB, 1000));
  ASSERT_TRUE(WriteFile(M("a"), RandomBytes(1, 9 * kMiB)).ok());
  auto before = vol_->volume().Usage();
  Status st = vol_->Remount();
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto after = vol_->volume().Usage();
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.used_inodes, before.used_inodes);
}

TEST_F(SetLimitsTest, MountRefusesASourceOverItsLimits) {
  ASSERT_TRUE(WriteFile(B("big"), RandomBytes(1, 20 * kMiB)).ok());
  InProcessVolumeOptions o;
  o.source = backing_;
  o.mountpoint = mnt_;
  o.capacity_bytes = 10 * kMiB;
  auto v = InProcessVolume::Mount(o);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(ErrnoName(v.err()), "ENOSPC") << v.status().ToString();
  EXPECT_FALSE(IsMountPoint(mnt_));
}

// ---------------------------------------------------------------------------
// Overwrites: writes into a file's allocated prefix skip the reservation and
// the fstat that settles it (fuse/space.h). In-process, to see
// that they did.

class OverwriteTest : public SetLimitsTest {
 protected:
  static constexpr uint64_t kCap = 32 * kMiB;
  static constexpr uint64_t kFileSize = 16 * kMiB;

  // Mounts, and writes file "a", kFileSize bytes, open read-write in fd_.
  void MakeWrittenFile() {
    ASSERT_NO_FATAL_FAILURE(MountInProcess(kCap, 1000));
    fd_ = UniqueFd(::open(M("a").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd_.valid());
    ASSERT_EQ(FillFd(fd_.get(), kMiB, kFileSize).err, 0);
  }
  // MakeWrittenFile, then enough 4 KiB overwrites across it that the server
  // has found it allocated and admits further ones as overwrites.
  void MakeOverwrittenFile() {
    ASSERT_NO_FATAL_FAILURE(MakeWrittenFile());
    ASSERT_NO_FATAL_FAILURE(OverwriteAcross(0, kFileSize));
    ASSERT_GT(vol_->volume().Overwrites(), 0u) << "no write was admitted as an overwrite";
  }
  // 4 KiB writes spread over [begin, end), four probe intervals' worth.
  void OverwriteAcross(uint64_t begin, uint64_t end) {
    const std::string block = RandomBytes(7, 4 * kKiB);
    constexpr int kWrites = 4 * 64;
    for (int i = 0; i < kWrites; ++i) {
      const uint64_t off = begin + (end - begin) / kWrites * i / (4 * kKiB) * (4 * kKiB);
      SysResult w = PwriteAll(fd_.get(), block, static_cast<off_t>(off));
      ASSERT_TRUE(w.ok()) << "overwrite at " << off << ": " << ErrnoName(w.err);
    }
  }
  // Takes every free byte with file "b".
  void FillTheRest() { ASSERT_EQ(ErrnoName(FillPath(M("b"), kMiB).err), "ENOSPC"); }

  void TearDown() override {
    fd_.Reset();  // before the unmount, which would wait for it
    SetLimitsTest::TearDown();
  }

  UniqueFd fd_;
};

TEST_F(OverwriteTest, OverwritesAreAdmittedAndChargeNothing) {
  ASSERT_NO_FATAL_FAILURE(MakeWrittenFile());
  const uint64_t used = vol_->volume().Usage().used_bytes;
  const uint64_t before = vol_->volume().Overwrites();
  ASSERT_NO_FATAL_FAILURE(OverwriteAcross(0, kFileSize));
  // All but those before the first probe after the file was complete.
  EXPECT_GE(vol_->volume().Overwrites() - before, 3u * 64) << "overwrites still took the slow path";
  EXPECT_EQ(vol_->volume().Usage().used_bytes, used);
  ExpectUsageMatchesDu("after overwrites");
}

TEST_F(OverwriteTest, AFullVolumeStillAcceptsOverwrites) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  EXPECT_EQ(Space().bfree, 0u);
  const uint64_t before = vol_->volume().Overwrites();
  ASSERT_NO_FATAL_FAILURE(OverwriteAcross(0, kFileSize));
  EXPECT_GT(vol_->volume().Overwrites(), before);
  EXPECT_LE(Du(), kCap);
}

// A punched range is no longer allocated: writing it again needs space.
TEST_F(OverwriteTest, PunchedBlocksAreNotOverwrites) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  ASSERT_SYS_OK(
      ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * kMiB, 8 * kMiB));
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  SysResult w = PwriteAll(fd_.get(), RandomBytes(2, kMiB), static_cast<off_t>(6 * kMiB));
  EXPECT_EQ(ErrnoName(w.err), "ENOSPC") << "a full volume took " << w.ret << " new bytes";
  EXPECT_LE(Du(), kCap);
  // The allocated part still takes overwrites.
  ASSERT_NO_FATAL_FAILURE(OverwriteAcross(0, 4 * kMiB));
  fd_.Reset();
  ExpectUsageMatchesDu("after punching and refilling");
}

// Blocks past a truncation are gone even if the file grows back over them.
TEST_F(OverwriteTest, TruncatedBlocksAreNotOverwrites) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  ASSERT_SYS_OK(::ftruncate(fd_.get(), 2 * kMiB));
  ASSERT_SYS_OK(::ftruncate(fd_.get(), kFileSize));  // a hole where the data was
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  SysResult w = PwriteAll(fd_.get(), RandomBytes(3, kMiB), static_cast<off_t>(8 * kMiB));
  EXPECT_EQ(ErrnoName(w.err), "ENOSPC") << "a full volume took " << w.ret << " new bytes";
  EXPECT_LE(Du(), kCap);
  fd_.Reset();
  ExpectUsageMatchesDu("after truncating and refilling");
}

// The same through an open with O_TRUNC.
TEST_F(OverwriteTest, BlocksFreedByOTruncAreNotOverwrites) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  UniqueFd reopened(::open(M("a").c_str(), O_RDWR | O_TRUNC | O_CLOEXEC));
  ASSERT_TRUE(reopened.valid()) << ErrnoName(errno);
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  SysResult w = PwriteAll(fd_.get(), RandomBytes(4, kMiB), 0);
  EXPECT_EQ(ErrnoName(w.err), "ENOSPC") << "a full volume took " << w.ret << " new bytes";
  EXPECT_LE(Du(), kCap);
}

// A truncation must wait for overwrites the server still has. Only
// asynchronous direct I/O leaves the kernel's inode lock while the server
// holds the write (a synchronous write or truncate keeps it), so io_uring
// here, with a write limit that keeps the writes in the server.
TEST_F(OverwriteTest, TruncationWaitsForOverwritesInFlight) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  UniqueFd direct(::open(M("a").c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  ASSERT_TRUE(direct.valid()) << ErrnoName(errno);
  iopath::IoLimits slow;
  slow.write_iops.rate = 2;
  ASSERT_TRUE(vol_->volume().SetIoLimits(slow).ok());
  io_uring ring;
  ASSERT_EQ(io_uring_queue_init(4, &ring, 0), 0);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, kMiB), 0);
  std::unique_ptr<void, decltype(&std::free)> owned(buf, &std::free);
  std::memset(buf, 'x', kMiB);
  constexpr int kWrites = 3;  // at 2 per second: the last one leaves the server a second later
  for (int i = 0; i < kWrites; ++i) {
    io_uring_prep_write(io_uring_get_sqe(&ring), direct.get(), buf, kMiB, i * kMiB);
  }
  ASSERT_EQ(io_uring_submit(&ring), kWrites);
  std::this_thread::sleep_for(200ms);
  ASSERT_SYS_OK(::ftruncate(fd_.get(), 0));
  for (int i = 0; i < kWrites; ++i) {
    io_uring_cqe* cqe = nullptr;
    ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
    EXPECT_EQ(cqe->res, static_cast<int>(kMiB));
    io_uring_cqe_seen(&ring, cqe);
  }
  io_uring_queue_exit(&ring);
  ASSERT_TRUE(vol_->volume().SetIoLimits(iopath::IoLimits{}).ok());
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  EXPECT_LE(Du(), kCap);
}

// Punching while another thread overwrites: every write into freed blocks
// must be charged, so the volume never holds more than its capacity.
TEST_F(OverwriteTest, PunchingWhileOverwritingNeverExceedsCapacity) {
  ASSERT_NO_FATAL_FAILURE(MakeOverwrittenFile());
  ASSERT_NO_FATAL_FAILURE(FillTheRest());
  std::atomic<bool> stop{false};
  std::thread overwriter([&] {
    const std::string block = RandomBytes(5, 4 * kKiB);
    std::mt19937_64 rng(11);
    while (!stop.load()) {
      const off_t off = static_cast<off_t>(rng() % (kFileSize / (4 * kKiB)) * 4 * kKiB);
      (void)PwriteAll(fd_.get(), block, off);  // ENOSPC into punched blocks is expected
    }
  });
  std::mt19937_64 rng(12);
  for (int round = 0; round < 20; ++round) {
    const off_t off = static_cast<off_t>(rng() % (kFileSize / kMiB) * kMiB);
    ASSERT_SYS_OK(::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, kMiB));
    (void)FillPath(M("b"), 64 * kKiB);  // takes back whatever the overwriter left free
  }
  stop = true;
  overwriter.join();
  EXPECT_LE(Du(), kCap);
  fd_.Reset();
  ExpectUsageMatchesDu("after punching under overwrites");
}

#else

TEST_F(SetLimitsTest, NeedsTheVolumeLibrary) {}  // SetUp skips with the reason

#endif  // LOCALVOL_HAVE_VOLUME_LIB

}  // namespace
}  // namespace localvol::testing
