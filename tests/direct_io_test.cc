// O_DIRECT through a volume must bypass every cache on the way, including the
// page cache of the backing file under the FUSE layer: otherwise a direct
// read could be served from memory the caller asked not to use. These tests
// measure the backing file's page-cache residency with mincore(2), with a
// buffered control that proves the measurement sees caching when it happens.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
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

}  // namespace
}  // namespace localvol::testing
