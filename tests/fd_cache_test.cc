// The server keeps one O_PATH fd per inode the kernel knows, in a cache
// bounded by half the open-file limit; evicted fds are reopened by file
// handle. These tests lower this process's limit so that a few thousand
// files overflow the cache, then check that every operation still reaches the
// right inode and that quota accounting survives eviction.
//
// Each test runs in its own process (gtest_discover_tests), so lowering the
// limit here affects nothing else.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "tests/support/in_process_volume.h"
#include "tests/support/space.h"

namespace localvol::testing {
namespace {

constexpr int kFiles = 3000;    // many times the cache
constexpr rlim_t kLimit = 512;  // cache budget: 256 fds

class FdCacheTest : public InProcessVolumeTest {
 protected:
  void SetUp() override {
    struct rlimit lim = {kLimit, kLimit};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    capacity_bytes_ = 1ull << 30;
    inode_limit_ = 100000;
    InProcessVolumeTest::SetUp();
  }
  std::string P(int i) const { return volume_->mountpoint() + "/f" + std::to_string(i); }
};

void WriteFile(const std::string& path, const std::string& content) {
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ASSERT_EQ(close(fd), 0);
}

std::string ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open failed: " + std::string(strerror(errno)) + ">";
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  return n < 0 ? "<read failed>" : std::string(buf, n);
}

TEST_F(FdCacheTest, EveryFileStaysReachableBeyondTheFdBudget) {
  for (int i = 0; i < kFiles; ++i)
    ASSERT_NO_FATAL_FAILURE(WriteFile(P(i), "file " + std::to_string(i)));
  // Every inode is still known to the kernel; most fds were evicted and must
  // be reopened by handle for getattr, setattr, xattrs and open.
  for (int i = 0; i < kFiles; ++i) {
    struct stat st;
    ASSERT_EQ(stat(P(i).c_str(), &st), 0) << P(i) << ": " << strerror(errno);
    ASSERT_EQ(chmod(P(i).c_str(), 0600), 0) << strerror(errno);
    ASSERT_EQ(ReadFile(P(i)), "file " + std::to_string(i));
  }
  struct stat st;
  ASSERT_EQ(stat(P(7).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(FdCacheTest, UnlinkedOpenFileSurvivesEvictionPressure) {
  int fd = open(P(-1).c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "still here", 10), 10);
  ASSERT_EQ(unlink(P(-1).c_str()), 0);
  // Push every other inode through the cache.
  for (int i = 0; i < kFiles; ++i) ASSERT_NO_FATAL_FAILURE(WriteFile(P(i), "x"));
  // fchmod and fstat on the unlinked file reach it through its inode's fd,
  // which cannot be reopened by handle once unlinked: it must have stayed open.
  EXPECT_EQ(fchmod(fd, 0640), 0) << strerror(errno);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  char buf[16] = {};
  EXPECT_EQ(pread(fd, buf, sizeof buf, 0), 10);
  EXPECT_STREQ(buf, "still here");
  close(fd);
}

TEST_F(FdCacheTest, UsageMatchesDuAfterEvictionAndDeletes) {
  const std::string block(4096, 'b');
  for (int i = 0; i < kFiles; ++i) ASSERT_NO_FATAL_FAILURE(WriteFile(P(i), block));
  for (int i = 0; i < kFiles; i += 2) ASSERT_EQ(unlink(P(i).c_str()), 0) << strerror(errno);
  for (int i = 1; i < kFiles; i += 2) {
    ASSERT_EQ(link(P(i).c_str(), (P(i) + ".link").c_str()), 0) << strerror(errno);
  }
  // A clean remount persists and reloads usage without a rescan.
  ASSERT_TRUE(volume_->Remount().ok());
  struct statvfs sv;
  ASSERT_EQ(statvfs(volume_->mountpoint().c_str(), &sv), 0);
  const uint64_t used = (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
  auto du = DuBytes(dirs_.backing);
  ASSERT_TRUE(du.ok());
  EXPECT_TRUE(UsageAgrees(used, *du)) << "statfs used " << used << " du " << *du;
  EXPECT_EQ(sv.f_files - sv.f_ffree, static_cast<uint64_t>(kFiles / 2));
}

}  // namespace
}  // namespace localvol::testing
