#include "base/directory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/unique_fd.h"

namespace localvol {
namespace {

using Names = std::vector<std::string>;

// The number of fds this process has open (entries of /proc/self/fd, read
// without the code under test).
size_t OpenFdCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

Names Sorted(Names v) {
  std::sort(v.begin(), v.end());
  return v;
}

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lvdir-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::mkdir((dir_ + "/sub").c_str(), 0755), 0);
    UniqueFd f(::open((dir_ + "/file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(f.valid());
    ASSERT_EQ(::symlink("nowhere", (dir_ + "/link").c_str()), 0);
    ASSERT_EQ(::mkdir((dir_ + "/.hidden").c_str(), 0755), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  const Names kAll = {".hidden", "file", "link", "sub"};
  std::string dir_;
};

TEST_F(DirectoryTest, ListsEveryEntryButDotAndDotDot) {
  auto names = ListDirectory(dir_);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(Sorted(*names), kAll);
}

TEST_F(DirectoryTest, EmptyDirectoryIsAnEmptyList) {
  auto names = ListDirectory(dir_ + "/sub");
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_TRUE(names->empty());
}

TEST_F(DirectoryTest, MissingDirectoryGivesItsErrnoAndPath) {
  auto names = ListDirectory(dir_ + "/absent");
  ASSERT_FALSE(names.ok());
  EXPECT_EQ(names.err(), ENOENT);
  EXPECT_NE(names.status().context().find(dir_ + "/absent"), std::string::npos)
      << names.status().ToString();
}

TEST_F(DirectoryTest, FileIsNotADirectory) {
  auto names = ListDirectory(dir_ + "/file");
  ASSERT_FALSE(names.ok());
  EXPECT_EQ(names.err(), ENOTDIR);
  UniqueFd f(::open((dir_ + "/file").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(f.valid());
  auto at = ListDirectoryAt(f.get());
  ASSERT_FALSE(at.ok());
  EXPECT_EQ(at.err(), ENOTDIR);
}

TEST_F(DirectoryTest, BadFdGivesEbadf) {
  auto names = ListDirectoryAt(-1);
  ASSERT_FALSE(names.ok());
  EXPECT_EQ(names.err(), EBADF);
}

// The fd directory of a process that has exited stays open, but reading it
// fails with ENOENT (fdopendir's fstat or getdents, as the kernel has it): an
// error, where a loop that stops at readdir's NULL would see no entries.
TEST_F(DirectoryTest, AnUnreadableDirectoryIsAnErrorNotAnEmptyList) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  UniqueFd fd(::open(("/proc/" + std::to_string(child) + "/fd").c_str(),
                     O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const int open_err = errno;
  EXPECT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(fd.valid()) << std::strerror(open_err);
  auto names = ListDirectoryAt(fd.get());
  ASSERT_FALSE(names.ok()) << "listed " << names->size() << " entries of a dead process's fds";
  EXPECT_EQ(names.err(), ENOENT) << names.status().ToString();
}

TEST_F(DirectoryTest, FdVariantLeavesTheCallersFdUsableAndItsOffsetAlone) {
  UniqueFd fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  // Move the caller's offset past some entries, as a half-done listing would.
  char buf[64];
  ASSERT_GT(::syscall(SYS_getdents64, fd.get(), buf, sizeof buf), 0);
  const off_t before = ::lseek(fd.get(), 0, SEEK_CUR);
  ASSERT_GT(before, 0);

  auto names = ListDirectoryAt(fd.get());
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(Sorted(*names), kAll) << "the listing starts at the first entry";
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), before) << "the caller's offset moved";
  struct stat st;
  EXPECT_EQ(::fstat(fd.get(), &st), 0) << "the caller's fd was closed";
  auto again = ListDirectoryAt(fd.get());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(Sorted(*again), kAll);
}

TEST_F(DirectoryTest, FdVariantTakesAnOPathFd) {
  UniqueFd fd(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  auto names = ListDirectoryAt(fd.get());
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(Sorted(*names), kAll);
}

TEST_F(DirectoryTest, LeaksNoFdOnSuccessOrFailure) {
  UniqueFd fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  UniqueFd file(::open((dir_ + "/file").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid() && file.valid());
  const size_t before = OpenFdCount();
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(ListDirectory(dir_).ok());
    EXPECT_FALSE(ListDirectory(dir_ + "/absent").ok());
    EXPECT_FALSE(ListDirectory(dir_ + "/file").ok());
    EXPECT_TRUE(ListDirectoryAt(fd.get()).ok());
    EXPECT_FALSE(ListDirectoryAt(file.get()).ok());
    EXPECT_TRUE(OpenDirectoryAt(fd.get()).ok());
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(DirectoryTest, StreamFdIsCloseOnExec) {
  UniqueFd fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  auto dir = OpenDirectoryAt(fd.get());
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  const int flags = ::fcntl(::dirfd(dir->get()), F_GETFD);
  ASSERT_GE(flags, 0);
  EXPECT_NE(flags & FD_CLOEXEC, 0);
  EXPECT_NE(::dirfd(dir->get()), fd.get());
}

TEST_F(DirectoryTest, UniqueDirClosesOnceAndMoves) {
  const size_t before = OpenFdCount();
  {
    auto opened = OpenDirectoryAt(AT_FDCWD);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    UniqueDir a = std::move(opened).value();
    ASSERT_TRUE(a.valid());
    UniqueDir b(std::move(a));
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    EXPECT_TRUE(b.valid());
    UniqueDir c;
    c = std::move(b);
    EXPECT_TRUE(c.valid());
    EXPECT_EQ(OpenFdCount(), before + 1);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

}  // namespace
}  // namespace localvol
