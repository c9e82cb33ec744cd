// Kernel FUSE passthrough for reads (fuse/passthrough.h) on an in-process
// volume, over /dev/fuse and over FUSE over io_uring: read-only opens really
// skip the server and read the right data (buffered, O_DIRECT, mmap); a
// writer and a passthrough reader of one file see what they see on XFS;
// every mix of opens succeeds where XFS succeeds; a passthrough open can
// neither change allocation nor read anything but its own inode; with
// passthrough off, or a read limit, reads take the server path.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "fuse/space.h"
#include "tests/support/fuse_uring_switch.h"
#include "tests/support/in_process_volume.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

using namespace std::chrono_literals;

enum class Transport { kDevFuse, kRing };

using AlignedBuffer = std::unique_ptr<char, decltype(&std::free)>;
AlignedBuffer Aligned(size_t bytes) {
  return AlignedBuffer(static_cast<char*>(std::aligned_alloc(4096, bytes)), &std::free);
}

// Pattern byte of `offset` in file `seed`: every 4 KiB block differs.
char PatternAt(int seed, size_t offset) {
  return static_cast<char>((offset / 4096 * 7 + seed * 13 + offset % 251) & 0xff);
}
std::string Pattern(int seed, size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = PatternAt(seed, i);
  return s;
}

UniqueFd Open(const std::string& path, int flags, mode_t mode = 0644) {
  auto fd = OpenAt(AT_FDCWD, path, flags, mode);
  EXPECT_TRUE(fd.ok()) << path << ": " << fd.status().ToString();
  return fd.ok() ? std::move(fd).value() : UniqueFd();
}

// pread of up to `size` bytes at `off`; "<errno N>" on failure.
std::string ReadAt(int fd, size_t size, off_t off) {
  std::string s(size, '\0');
  const ssize_t n = pread(fd, s.data(), size, off);
  if (n < 0) return "<errno " + std::to_string(errno) + ">";
  s.resize(static_cast<size_t>(n));
  return s;
}

class PassthroughTest : public InProcessVolumeTest,
                        public ::testing::WithParamInterface<Transport> {
 protected:
  void SetUp() override {
    if (GetParam() == Transport::kRing) {
      auto on = FuseUringSwitch::Acquire();
      ASSERT_TRUE(on.ok()) << on.status().ToString();
      switch_ = std::move(*on);
      fuse_io_uring_ = true;
    }
    read_passthrough_ = passthrough_;
    InProcessVolumeTest::SetUp();
    if (::testing::Test::IsSkipped() || HasFatalFailure()) return;
    // The first request waits for INIT, where passthrough is negotiated.
    struct stat st {};
    ASSERT_EQ(stat(dirs_.mountpoint.c_str(), &st), 0) << strerror(errno);
    if (passthrough_ && !volume_->volume().ReadPassthrough()) {
      ASSERT_FALSE(KernelHasFusePassthrough())
          << "this kernel has FUSE passthrough, but the volume did not get it";
      GTEST_SKIP() << "the kernel did not grant FUSE_PASSTHROUGH (Linux 6.9+, "
                      "CONFIG_FUSE_PASSTHROUGH, CAP_SYS_ADMIN)";
    }
  }
  void TearDown() override {
    InProcessVolumeTest::TearDown();
    switch_.reset();
  }

  std::string Mounted(const std::string& name) const { return dirs_.mountpoint + "/" + name; }
  std::string Raw(const std::string& name) const { return dirs_.disk->Path("raw/" + name); }
  fuse::Volume& Vol() { return volume_->volume(); }
  uint64_t ServerReads() { return Vol().IoStats().read_ops; }

  // Writes `data` to `path` through a fresh O_WRONLY open, closed again.
  static void WriteFile(const std::string& path, const std::string& data) {
    UniqueFd fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC);
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(pwrite(fd.get(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  }

  // RELEASE reaches the server after close(2) returns: waits for the count.
  void WaitForOpenFiles(uint64_t want) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (Vol().PassthroughOpenFiles() != want && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_EQ(Vol().PassthroughOpenFiles(), want);
  }

  // Opens `path` O_RDONLY with passthrough: the RELEASE of an earlier
  // server-path open (WriteFile's) may still be on its way, and until the
  // server handled it the inode stays on the server path.
  UniqueFd OpenPassthrough(const std::string& path) {
    const uint64_t before = Vol().PassthroughOpenFiles();
    for (int i = 0; i < 500; ++i) {
      UniqueFd fd = Open(path, O_RDONLY);
      if (Vol().PassthroughOpenFiles() > before) return fd;
      fd.Reset();
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << path << " was never opened with passthrough";
    return UniqueFd();
  }

  bool passthrough_ = true;
  std::unique_ptr<FuseUringSwitch> switch_;
};

TEST_P(PassthroughTest, ReadOnlyOpensReadTheBackingFileWithoutTheServer) {
  constexpr size_t kSize = 4 << 20;
  const std::string data = Pattern(1, kSize);
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("f"), data));
  WaitForOpenFiles(0);
  const uint64_t reads_before = ServerReads();
  {
    UniqueFd buffered = OpenPassthrough(Mounted("f"));
    UniqueFd direct = Open(Mounted("f"), O_RDONLY | O_DIRECT);
    ASSERT_TRUE(buffered.valid() && direct.valid());
    EXPECT_EQ(Vol().PassthroughOpenFiles(), 2u);
    for (size_t off = 0; off < kSize; off += 1 << 20) {
      ASSERT_EQ(ReadAt(buffered.get(), 1 << 20, off), data.substr(off, 1 << 20)) << off;
    }
    AlignedBuffer buf = Aligned(1 << 20);
    for (size_t off = 0; off < kSize; off += 1 << 20) {
      ASSERT_EQ(pread(direct.get(), buf.get(), 1 << 20, off), 1 << 20) << strerror(errno);
      ASSERT_EQ(std::memcmp(buf.get(), data.data() + off, 1 << 20), 0) << off;
    }
    void* map = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, buffered.get(), 0);
    ASSERT_NE(map, MAP_FAILED) << strerror(errno);
    EXPECT_EQ(std::memcmp(map, data.data(), kSize), 0);
    munmap(map, kSize);
    // A short read at the end, as on XFS.
    EXPECT_EQ(ReadAt(buffered.get(), 8192, kSize - 100), data.substr(kSize - 100));
  }
  EXPECT_EQ(ServerReads(), reads_before) << "passthrough reads must not reach the server";
  WaitForOpenFiles(0);
  EXPECT_GE(Vol().PassthroughOpensTotal(), 2u);
}

// The same steps on raw XFS and through the volume: a reader opened first
// (passthrough) and a writer opened after it, whose changes the reader must
// see exactly as on XFS.
TEST_P(PassthroughTest, WriterAndPassthroughReaderSeeWhatXfsShows) {
  ASSERT_EQ(mkdir(dirs_.disk->Path("raw").c_str(), 0755), 0);
  struct Seen {
    std::vector<std::string> reads;
  };
  auto run = [&](const std::function<std::string(const std::string&)>& path, bool mounted) {
    Seen seen;
    WriteFile(path("f"), Pattern(2, 64 << 10));
    UniqueFd reader = mounted ? OpenPassthrough(path("f")) : Open(path("f"), O_RDONLY);
    UniqueFd writer = Open(path("f"), O_RDWR);
    UniqueFd direct_writer = Open(path("f"), O_RDWR | O_DIRECT);
    auto look = [&] {
      seen.reads.push_back(ReadAt(reader.get(), 96 << 10, 0));
      struct stat st {};
      fstat(reader.get(), &st);
      seen.reads.push_back("size " + std::to_string(st.st_size));
    };
    look();
    const std::string b = Pattern(3, 5000);
    EXPECT_EQ(pwrite(writer.get(), b.data(), b.size(), 1000), 5000);  // buffered, unaligned
    look();
    AlignedBuffer block = Aligned(8192);
    std::memset(block.get(), 'd', 8192);
    EXPECT_EQ(pwrite(direct_writer.get(), block.get(), 8192, 16384), 8192) << strerror(errno);
    look();
    EXPECT_EQ(pwrite(writer.get(), b.data(), b.size(), (64 << 10) + 3000), 5000);  // extends
    look();
    EXPECT_EQ(ftruncate(writer.get(), 40000), 0);
    look();
    EXPECT_EQ(fallocate(writer.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192), 0);
    look();
    void* map = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, writer.get(), 0);
    EXPECT_NE(map, MAP_FAILED) << strerror(errno);
    if (map != MAP_FAILED) {
      std::memset(static_cast<char*>(map) + 100, 'm', 50);
      EXPECT_EQ(msync(map, 8192, MS_SYNC), 0);
      munmap(map, 8192);
    }
    look();
    // A reader opened now, while the writers are open.
    UniqueFd late = Open(path("f"), O_RDONLY);
    seen.reads.push_back(ReadAt(late.get(), 96 << 10, 0));
    return seen;
  };
  const Seen raw = run([&](const std::string& n) { return Raw(n); }, false);
  const Seen vol = run([&](const std::string& n) { return Mounted(n); }, true);
  ASSERT_EQ(raw.reads.size(), vol.reads.size());
  for (size_t i = 0; i < raw.reads.size(); ++i) {
    EXPECT_TRUE(raw.reads[i] == vol.reads[i])
        << "step " << i << ": XFS gave " << raw.reads[i].size() << " bytes, the volume "
        << vol.reads[i].size()
        << (raw.reads[i].size() < 40 ? " (" + raw.reads[i] + " / " + vol.reads[i] + ")" : "");
  }
}

// Three opens of one file in every combination of flags, each mapped shared
// and read, with the first closed early or not: every open, mmap and read
// gives what it gives on XFS (an O_WRONLY open cannot be mapped, on XFS too).
TEST_P(PassthroughTest, EveryMixOfOpensSucceedsAsOnXfs) {
  ASSERT_EQ(mkdir(dirs_.disk->Path("raw").c_str(), 0755), 0);
  const int kFlags[] = {O_RDONLY, O_RDONLY | O_DIRECT, O_WRONLY,
                        O_RDWR,   O_RDWR | O_DIRECT,   O_RDONLY | O_TRUNC};
  ASSERT_NO_FATAL_FAILURE(WriteFile(Raw("mix"), Pattern(4, 16384)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("mix"), Pattern(4, 16384)));
  // What one mix gives: per open, the errno of open, mmap and pread (0: it worked).
  auto mix = [](const std::string& path, int a, int b, int c, bool close_first_early) {
    std::vector<int> out;
    std::vector<UniqueFd> fds;
    AlignedBuffer buf = Aligned(4096);
    for (int flags : {a, b, c}) {
      auto fd = OpenAt(AT_FDCWD, path, flags);
      out.push_back(fd.ok() ? 0 : fd.err());
      if (!fd.ok()) continue;
      const bool writable = (flags & O_ACCMODE) != O_RDONLY;
      void* map = mmap(nullptr, 4096, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                       fd->get(), 0);
      out.push_back(map == MAP_FAILED ? errno : 0);
      if (map != MAP_FAILED) munmap(map, 4096);
      out.push_back(pread(fd->get(), buf.get(), 4096, 0) < 0 ? errno : 0);
      fds.push_back(std::move(fd).value());
      if (close_first_early && fds.size() == 2) fds.front().Reset();
    }
    return out;
  };
  const uint64_t passthrough_before = Vol().PassthroughOpensTotal();
  int mixes = 0;
  for (int a : kFlags) {
    for (int b : kFlags) {
      for (int c : kFlags) {
        for (bool close_first_early : {false, true}) {
          const std::vector<int> raw = mix(Raw("mix"), a, b, c, close_first_early);
          const std::vector<int> vol = mix(Mounted("mix"), a, b, c, close_first_early);
          EXPECT_EQ(raw, vol) << "flags " << a << ", " << b << ", " << c
                              << (close_first_early ? ", first closed early" : "")
                              << ": errnos of open, mmap, pread per open";
          ++mixes;
          // Let the releases arrive, so the next mix starts with no open.
          WaitForOpenFiles(0);
        }
      }
    }
  }
  EXPECT_EQ(mixes, 6 * 6 * 6 * 2);
  EXPECT_GT(Vol().PassthroughOpensTotal(), passthrough_before) << "no mix used passthrough";
}

// What XFS answers for each operation that could allocate, through an
// O_RDONLY fd: the passthrough open must answer the same and allocate
// nothing.
TEST_P(PassthroughTest, PassthroughOpenCannotChangeAllocation) {
  ASSERT_EQ(mkdir(dirs_.disk->Path("raw").c_str(), 0755), 0);
  auto errnos = [&](const std::string& path, bool mounted) {
    std::vector<int> out;
    auto record = [&](bool ok) { out.push_back(ok ? 0 : errno); };
    UniqueFd fd = mounted ? OpenPassthrough(path) : Open(path, O_RDONLY);
    UniqueFd target = Open(path + ".copy", O_RDWR | O_CREAT | O_TRUNC);
    const std::string x(8192, 'x');
    record(pwrite(fd.get(), x.data(), x.size(), 1 << 20) >= 0);
    record(ftruncate(fd.get(), 64 << 20) == 0);
    record(fallocate(fd.get(), 0, 0, 64 << 20) == 0);
    void* rw = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    record(rw != MAP_FAILED);
    if (rw != MAP_FAILED) munmap(rw, 1 << 20);
    void* ro = mmap(nullptr, 1 << 20, PROT_READ, MAP_SHARED, fd.get(), 0);
    record(ro != MAP_FAILED);
    if (ro != MAP_FAILED) {
      record(mprotect(ro, 1 << 20, PROT_READ | PROT_WRITE) == 0);
      munmap(ro, 1 << 20);
    }
    loff_t in = 0, out_off = 0;
    record(copy_file_range(target.get(), &in, fd.get(), &out_off, 4096, 0) >= 0);
    // Reading allocates nothing.
    std::string buf(1 << 20, '\0');
    for (off_t off = 0; off < (4 << 20); off += 1 << 20)
      record(pread(fd.get(), buf.data(), buf.size(), off) >= 0);
    return out;
  };
  // Dense: a sparse file takes the server path (SparseFilesAreReadThroughTheServer).
  ASSERT_NO_FATAL_FAILURE(WriteFile(Raw("s"), Pattern(6, 4 << 20)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("s"), Pattern(6, 4 << 20)));
  WaitForOpenFiles(0);
  struct stat before {};
  ASSERT_EQ(stat((dirs_.backing + "/s").c_str(), &before), 0);
  const uint64_t used_before = Vol().Usage().used_bytes;
  const std::vector<int> raw = errnos(Raw("s"), false);
  const std::vector<int> vol = errnos(Mounted("s"), true);
  EXPECT_EQ(raw, vol) << "errnos of write, ftruncate, fallocate, mmap rw, mmap ro, mprotect rw, "
                         "copy_file_range into it, reads";
  struct stat after {};
  ASSERT_EQ(stat((dirs_.backing + "/s").c_str(), &after), 0);
  EXPECT_EQ(after.st_blocks, before.st_blocks);
  EXPECT_EQ(after.st_size, before.st_size);
  WaitForOpenFiles(0);
  // The ".copy" target was created empty; nothing else may have grown.
  EXPECT_LE(Vol().Usage().used_bytes, used_before + 4096);
}

// A writer joining passthrough readers reaches the backing file through its
// shared mapping, past the server's admission. So a file in passthrough mode
// never has a hole below its end of file: a sparse file is read through the
// server, and what would leave a hole allocates it first, or fails.
TEST_P(PassthroughTest, SparseFilesAreReadThroughTheServer) {
  {
    UniqueFd fd = Open(Mounted("s"), O_WRONLY | O_CREAT | O_TRUNC);
    ASSERT_EQ(pwrite(fd.get(), "head", 4, 0), 4);
    ASSERT_EQ(ftruncate(fd.get(), 4 << 20), 0);
  }
  WaitForOpenFiles(0);
  const uint64_t reads_before = ServerReads();
  {
    UniqueFd fd = Open(Mounted("s"), O_RDONLY);
    EXPECT_EQ(Vol().PassthroughOpenFiles(), 0u) << "a sparse file must not enter passthrough mode";
    EXPECT_EQ(ReadAt(fd.get(), 4, 0), "head");
    EXPECT_EQ(ReadAt(fd.get(), 4, 1 << 20), std::string(4, '\0'));
  }
  EXPECT_GT(ServerReads(), reads_before);
  {
    UniqueFd fd = Open(Mounted("s"), O_WRONLY);
    ASSERT_EQ(fallocate(fd.get(), 0, 0, 4 << 20), 0) << strerror(errno);
  }
  WaitForOpenFiles(0);
  UniqueFd dense = OpenPassthrough(Mounted("s"));
  EXPECT_EQ(ReadAt(dense.get(), 4, 0), "head");
}

TEST_P(PassthroughTest, AFileInPassthroughModeStaysDenseWithinTheQuota) {
  constexpr off_t kSize = 1 << 20;
  const std::string data = Pattern(5, kSize);
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("f"), data));
  WaitForOpenFiles(0);
  UniqueFd reader = OpenPassthrough(Mounted("f"));
  UniqueFd writer = Open(Mounted("f"), O_RDWR);
  ASSERT_TRUE(reader.valid() && writer.valid());
  ASSERT_EQ(Vol().PassthroughOpenFiles(), 2u);
  // Each would leave a hole past the volume's free space: refused, unchanged.
  const off_t beyond = kSize + static_cast<off_t>(capacity_bytes_);
  EXPECT_EQ(ftruncate(writer.get(), beyond), -1);
  EXPECT_EQ(errno, ENOSPC) << "ftruncate";
  EXPECT_EQ(truncate(Mounted("f").c_str(), beyond), -1);
  EXPECT_EQ(errno, ENOSPC) << "truncate by path";
  EXPECT_EQ(pwrite(writer.get(), "x", 1, beyond), -1);
  EXPECT_EQ(errno, ENOSPC) << "a write past the end of file";
  EXPECT_EQ(fallocate(writer.get(), 0, beyond, 4096), -1);
  EXPECT_EQ(errno, ENOSPC) << "fallocate past the end of file";
  EXPECT_EQ(fallocate(writer.get(), FALLOC_FL_INSERT_RANGE, 0, 65536), -1);
  EXPECT_EQ(errno, EOPNOTSUPP) << "inserting a hole";
  struct stat st {};
  ASSERT_EQ(fstat(reader.get(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  // What fits is allocated as it is reached; a punched range stays allocated.
  ASSERT_EQ(ftruncate(writer.get(), 4 * kSize), 0) << strerror(errno);
  ASSERT_EQ(pwrite(writer.get(), "y", 1, 6 * kSize), 1) << strerror(errno);
  ASSERT_EQ(truncate(Mounted("f").c_str(), 8 * kSize), 0) << strerror(errno);
  ASSERT_EQ(fallocate(writer.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536), 0)
      << strerror(errno);
  EXPECT_EQ(ReadAt(reader.get(), 65536, 0), std::string(65536, '\0'));
  EXPECT_EQ(ReadAt(reader.get(), 4, 65536), data.substr(65536, 4));
  {
    UniqueFd backing = Open(dirs_.backing + "/f", O_RDONLY);
    auto holes = fuse::UnallocatedBytesInRange(backing.get(), 0, 8 * kSize, 4096);
    ASSERT_TRUE(holes.ok()) << holes.status().ToString();
    EXPECT_EQ(*holes, 0u) << "a hole the writer's mapping could allocate into";
  }
  // The writer's mapping now stores into allocated blocks only.
  const uint64_t used = Vol().Usage().used_bytes;
  void* map = mmap(nullptr, 8 * kSize, PROT_READ | PROT_WRITE, MAP_SHARED, writer.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << strerror(errno);
  std::memset(map, 'm', 8 * kSize);
  EXPECT_EQ(msync(map, 8 * kSize, MS_SYNC), 0);
  munmap(map, 8 * kSize);
  EXPECT_EQ(ReadAt(reader.get(), 4, 7 * kSize), "mmmm");
  reader.Reset();
  writer.Reset();
  WaitForOpenFiles(0);
  // Converting unwritten extents may split one: a block of metadata at most.
  EXPECT_LE(Vol().Usage().used_bytes, used + 65536) << "the stores allocated past the admission";
}

// The backing file is the opened inode itself: renaming another file over
// its name, or a file of the same name outside the volume, changes nothing
// for an open passthrough reader.
TEST_P(PassthroughTest, PassthroughReadsOnlyTheOpenedInode) {
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("a"), "inside-a"));
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("b"), "inside-b"));
  ASSERT_NO_FATAL_FAILURE(WriteFile(dirs_.disk->Path("a"), "outside"));
  UniqueFd reader = OpenPassthrough(Mounted("a"));
  ASSERT_TRUE(reader.valid());
  ASSERT_EQ(rename(Mounted("b").c_str(), Mounted("a").c_str()), 0);
  EXPECT_EQ(ReadAt(reader.get(), 100, 0), "inside-a");
  UniqueFd again = Open(Mounted("a"), O_RDONLY);
  EXPECT_EQ(ReadAt(again.get(), 100, 0), "inside-b");
}

TEST_P(PassthroughTest, AReadLimitSendsNewOpensThroughTheServer) {
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("f"), Pattern(5, 65536)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("g"), Pattern(6, 65536)));
  UniqueFd before = OpenPassthrough(Mounted("f"));
  // "g" too could be opened with passthrough now, were it not for the limit.
  OpenPassthrough(Mounted("g")).Reset();
  WaitForOpenFiles(1);
  iopath::IoLimits limits;
  limits.read_iops.rate = 1000000;
  ASSERT_TRUE(Vol().SetIoLimits(limits).ok());
  const uint64_t reads = ServerReads();
  UniqueFd after = Open(Mounted("g"), O_RDONLY | O_DIRECT);
  AlignedBuffer buf = Aligned(4096);
  ASSERT_EQ(pread(after.get(), buf.get(), 4096, 0), 4096);
  EXPECT_GT(ServerReads(), reads) << "a file opened after the limit reads through the server";
  // The file opened before keeps passthrough; a new open of it reads through
  // the server too (still a passthrough open for the kernel's rule).
  UniqueFd again = Open(Mounted("f"), O_RDONLY | O_DIRECT);
  const uint64_t reads2 = ServerReads();
  ASSERT_EQ(pread(again.get(), buf.get(), 4096, 0), 4096);
  EXPECT_GT(ServerReads(), reads2);
  EXPECT_EQ(ReadAt(before.get(), 65536, 0), Pattern(5, 65536));
}

// Passthrough reads escape the engine's scheduler, so a volume whose disk is
// shared fairly with another reads through its queue; alone, any weight is moot.
TEST_P(PassthroughTest, ADiskSharedFairlyWithAnotherVolumeKeepsReadsOnTheServer) {
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("f"), Pattern(8, 65536)));
  iopath::IoLimits limits;
  limits.weight = 200;
  ASSERT_TRUE(Vol().SetIoLimits(limits).ok());
  OpenPassthrough(Mounted("f")).Reset();
  WaitForOpenFiles(0);
  {
    std::unique_ptr<iopath::IoQueue> neighbour = volume_->engine().CreateQueue("neighbour");
    const uint64_t reads = ServerReads();
    UniqueFd fd = Open(Mounted("f"), O_RDONLY | O_DIRECT);
    AlignedBuffer buf = Aligned(4096);
    ASSERT_EQ(pread(fd.get(), buf.get(), 4096, 0), 4096);
    EXPECT_GT(ServerReads(), reads) << "the scheduler must see the reads it shares out";
    EXPECT_EQ(Vol().PassthroughOpenFiles(), 0u);
  }
  // The neighbour is gone: passthrough again.
  EXPECT_TRUE(OpenPassthrough(Mounted("f")).valid());
}

INSTANTIATE_TEST_SUITE_P(Transports, PassthroughTest,
                         ::testing::Values(Transport::kDevFuse, Transport::kRing),
                         [](const auto& info) {
                           return info.param == Transport::kRing ? "Ring" : "DevFuse";
                         });

class PassthroughOffTest : public PassthroughTest {
 protected:
  void SetUp() override {
    passthrough_ = false;
    PassthroughTest::SetUp();
  }
};

TEST_P(PassthroughOffTest, EveryReadTakesTheServerPath) {
  ASSERT_NO_FATAL_FAILURE(WriteFile(Mounted("f"), Pattern(7, 1 << 20)));
  EXPECT_FALSE(Vol().ReadPassthrough());
  const uint64_t reads = ServerReads();
  UniqueFd fd = Open(Mounted("f"), O_RDONLY | O_DIRECT);
  AlignedBuffer buf = Aligned(1 << 20);
  ASSERT_EQ(pread(fd.get(), buf.get(), 1 << 20, 0), 1 << 20);
  EXPECT_EQ(std::memcmp(buf.get(), Pattern(7, 1 << 20).data(), 1 << 20), 0);
  EXPECT_GT(ServerReads(), reads);
  EXPECT_EQ(Vol().PassthroughOpenFiles(), 0u);
  EXPECT_EQ(Vol().PassthroughOpensTotal(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Transports, PassthroughOffTest, ::testing::Values(Transport::kDevFuse),
                         [](const auto&) { return "DevFuse"; });

// A backing directory on a stacking filesystem (overlayfs) cannot back
// passthrough with max_stack_depth 1: the mount fails, saying what to do;
// with read passthrough off it mounts.
TEST(PassthroughMountTest, StackedBackingDirectoryFailsTheMountLoudly) {
  if (!InProcessVolume::Available()) GTEST_SKIP() << "localvol_fuse library not built";
  auto dir = TempDir::Create("pt-overlay");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  for (const char* sub : {"lower", "upper", "work", "merged", "mnt"}) {
    ASSERT_TRUE(dir->MakeSubdir(sub).ok());
  }
  const std::string data = "lowerdir=" + dir->Sub("lower") + ",upperdir=" + dir->Sub("upper") +
                           ",workdir=" + dir->Sub("work");
  if (mount("overlay", dir->Sub("merged").c_str(), "overlay", 0, data.c_str()) != 0) {
    GTEST_SKIP() << "cannot mount overlayfs here: " << strerror(errno);
  }
  InProcessVolumeOptions options;
  options.source = dir->Sub("merged");
  options.mountpoint = dir->Sub("mnt");
  options.capacity_bytes = 64 << 20;
  auto refused = InProcessVolume::Mount(options);
  ASSERT_FALSE(refused.ok()) << "a volume over overlayfs mounted with passthrough on";
  EXPECT_EQ(refused.err(), EINVAL);
  EXPECT_NE(refused.status().context().find("overlayfs"), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().context().find("read_passthrough"), std::string::npos)
      << refused.status().ToString();
  EXPECT_FALSE(IsMountPoint(options.mountpoint));
  options.read_passthrough = false;
  auto mounted = InProcessVolume::Mount(options);
  EXPECT_TRUE(mounted.ok()) << mounted.status().ToString();
  if (mounted.ok()) mounted->reset();  // the volume goes before the overlay
  EXPECT_TRUE(LazyUnmountAll(dir->Sub("merged")).ok());
}

}  // namespace
}  // namespace localvol::testing
