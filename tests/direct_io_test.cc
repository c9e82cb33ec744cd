// O_DIRECT through a volume must bypass every cache on the way, including the
// page cache of the backing file under the FUSE layer: otherwise a direct
// read could be served from memory the caller asked not to use. These tests
// measure the backing file's page-cache residency with mincore(2), with a
// buffered control that proves the measurement sees caching when it happens.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/in_process_volume.h"

namespace localvol::testing {
namespace {

constexpr size_t kSize = 4 << 20;

// Pages of `path` resident in the page cache.
size_t ResidentPages(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  struct stat st;
  fstat(fd, &st);
  size_t resident = 0;
  if (st.st_size > 0) {
    void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED) {
      const size_t pages = (st.st_size + 4095) / 4096;
      std::vector<unsigned char> vec(pages);
      if (mincore(map, st.st_size, vec.data()) == 0) {
        for (unsigned char v : vec) resident += v & 1;
      }
      munmap(map, st.st_size);
    }
  }
  close(fd);
  return resident;
}

// Drops the backing file's cached pages (it is clean after fsync).
void EvictBacking(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fdatasync(fd), 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  close(fd);
  ASSERT_EQ(ResidentPages(path), 0u) << "could not evict " << path;
}

class DirectIoTest : public InProcessVolumeTest {
 protected:
  void SetUp() override {
    InProcessVolumeTest::SetUp();
    buf_ = static_cast<char*>(std::aligned_alloc(4096, kSize));
    std::memset(buf_, 'd', kSize);
  }
  void TearDown() override {
    std::free(buf_);
    InProcessVolumeTest::TearDown();
  }
  std::string Mounted(const std::string& name) { return volume_->mountpoint() + "/" + name; }
  std::string Backing(const std::string& name) { return dirs_.backing + "/" + name; }

  // Writes kSize bytes through the volume with `flags` added.
  void WriteThrough(const std::string& name, int flags) {
    int fd = open(Mounted(name).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | flags, 0644);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(pwrite(fd, buf_, kSize, 0), static_cast<ssize_t>(kSize)) << strerror(errno);
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  void ReadThrough(const std::string& name, int flags) {
    int fd = open(Mounted(name).c_str(), O_RDONLY | O_CLOEXEC | flags);
    ASSERT_GE(fd, 0) << strerror(errno);
    // Drop the FUSE mount's own cache of the file too.
    ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ASSERT_EQ(pread(fd, buf_, kSize, 0), static_cast<ssize_t>(kSize)) << strerror(errno);
    close(fd);
  }

  char* buf_ = nullptr;
};

TEST_F(DirectIoTest, DirectWriteLeavesNothingInTheBackingPageCache) {
  ASSERT_NO_FATAL_FAILURE(WriteThrough("direct", O_DIRECT));
  EXPECT_EQ(ResidentPages(Backing("direct")), 0u);
  // Control: a buffered write does fill the backing page cache.
  ASSERT_NO_FATAL_FAILURE(WriteThrough("buffered", 0));
  EXPECT_GT(ResidentPages(Backing("buffered")), 0u);
}

TEST_F(DirectIoTest, DirectReadComesFromTheDiskNotTheBackingPageCache) {
  ASSERT_NO_FATAL_FAILURE(WriteThrough("f", 0));
  ASSERT_NO_FATAL_FAILURE(EvictBacking(Backing("f")));
  ASSERT_NO_FATAL_FAILURE(ReadThrough("f", O_DIRECT));
  EXPECT_EQ(ResidentPages(Backing("f")), 0u) << "a direct read went through the page cache";
  for (size_t i = 0; i < kSize; i += 4096) ASSERT_EQ(buf_[i], 'd');
  // Control: a buffered read through the volume populates it.
  ASSERT_NO_FATAL_FAILURE(ReadThrough("f", 0));
  EXPECT_GT(ResidentPages(Backing("f")), 0u);
}

TEST_F(DirectIoTest, UnalignedDirectIoFailsLikeXfs) {
  int fd = open(Mounted("u").c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pwrite(fd, buf_, 100, 1), -1);
  EXPECT_EQ(errno, EINVAL);
  close(fd);
}

// Direct writes to one file inside its size reach the server concurrently
// (FOPEN_PARALLEL_DIRECT_WRITES) instead of one at a time under the inode
// lock. A write-IOPS limit of 2 holds requests in the volume's queue; if the
// kernel serialized the writers, the queue would never hold more than one.
TEST_F(DirectIoTest, DirectWritesToOneFileRunInParallel) {
  ASSERT_NO_FATAL_FAILURE(WriteThrough("p", 0));
  iopath::IoLimits limits;
  limits.write_iops.rate = 2;
  ASSERT_TRUE(volume_->volume().SetIoLimits(limits).ok());
  int fd = open(Mounted("p").c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  constexpr int kWriters = 3;
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      if (pwrite(fd, buf_, 4096, static_cast<off_t>(i) * 65536) != 4096) ++failed;
    });
  }
  uint64_t most_queued = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (most_queued < 2 && std::chrono::steady_clock::now() < deadline) {
    most_queued = std::max(most_queued, volume_->volume().IoStats().queued);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& w : writers) w.join();
  close(fd);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(most_queued, 2u) << "direct writes to one file were serialized";
}

// A direct write through one descriptor is seen by a buffered reader of the
// same file whose pages are cached (keep_cache): the kernel drops them.
TEST_F(DirectIoTest, DirectWriteIsSeenByABufferedReaderWithCachedPages) {
  ASSERT_NO_FATAL_FAILURE(WriteThrough("c", 0));
  int reader = open(Mounted("c").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  char got[4096];
  ASSERT_EQ(pread(reader, got, sizeof got, 0), 4096);
  ASSERT_EQ(got[0], 'd');
  int writer = open(Mounted("c").c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  std::memset(buf_, 'n', 4096);
  ASSERT_EQ(pwrite(writer, buf_, 4096, 0), 4096);
  close(writer);
  ASSERT_EQ(pread(reader, got, sizeof got, 0), 4096);
  close(reader);
  EXPECT_EQ(got[0], 'n');
  EXPECT_EQ(got[4095], 'n');
}

// A file opened O_DIRECT can still be mapped shared, as on XFS, and the
// mapping sees what direct writes through the same descriptor stored.
TEST_F(DirectIoTest, FileOpenedDirectCanBeMappedShared) {
  ASSERT_NO_FATAL_FAILURE(WriteThrough("m", 0));
  int fd = open(Mounted("m").c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::memset(buf_, 'q', 4096);
  ASSERT_EQ(pwrite(fd, buf_, 4096, 8192), 4096);
  void* map = mmap(nullptr, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED) << strerror(errno);
  const char* bytes = static_cast<const char*>(map);
  EXPECT_EQ(bytes[0], 'd');
  EXPECT_EQ(bytes[8192], 'q');
  munmap(map, 16384);
  close(fd);
}

}  // namespace
}  // namespace localvol::testing
