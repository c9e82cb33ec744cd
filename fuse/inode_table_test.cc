// InodeTable without a mount: inodes of a scratch directory, looked up,
// forgotten and released as the FUSE operations do it, against a real Quota.
#include "fuse/inode_table.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

#include "base/status.h"
#include "fuse/inode_table_fixture.h"

namespace localvol::fuse {
namespace {

class InodeTableTest : public InodeTableFixture {
 protected:
  // Writes `bytes` bytes to a new file `name` and syncs it, so that its
  // allocation shows in st_blocks.
  void MakeFile(const std::string& name, size_t bytes) {
    UniqueFd fd(open(dir_.Sub(name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid()) << std::strerror(errno);
    const std::string data(bytes, 'x');
    ASSERT_EQ(write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(bytes));
    ASSERT_EQ(fsync(fd.get()), 0);
  }

  // Charges `inode` as the create that made it would have.
  void Charge(Inode& inode) {
    MutexLock lock(inode.alloc_mu);
    quota_.Adjust(static_cast<int64_t>(inode.charged_bytes), 1);
  }

  // A 64 KiB file, looked up and charged; its stat in `st`.
  Inode* MakeChargedFile(const std::string& name, struct stat* st) {
    MakeFile(name, 64 * 1024);
    Inode* inode = Lookup(name, st);
    if (inode != nullptr) Charge(*inode);
    return inode;
  }

  void ExpectNothingUsed() {
    EXPECT_EQ(used_bytes(), 0u);
    EXPECT_EQ(used_inodes(), 0u);
  }

  uint64_t used_bytes() const { return quota_.Snapshot().used_bytes; }
  uint64_t used_inodes() const { return quota_.Snapshot().used_inodes; }

  // As RemoveEntry does: keep the fd, unlink, release.
  void UnlinkAndRelease(const std::string& name, const struct stat& victim) {
    table_->KeepOpenUntilForgotten(victim);
    ASSERT_EQ(unlink(dir_.Sub(name).c_str()), 0);
    table_->ReleaseVictim(victim);
  }
};

TEST_F(InodeTableTest, HardLinksShareOneInodeUntilEveryLookupIsForgotten) {
  ASSERT_NO_FATAL_FAILURE(MakeFile("f", 1));
  ASSERT_EQ(link(dir_.Sub("f").c_str(), dir_.Sub("g").c_str()), 0);
  Inode* f = Lookup("f");
  Inode* g = Lookup("g");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f, g);
  EXPECT_EQ(table_->size(), 1u);
  EXPECT_EQ(&table_->Get(InodeTable::IdOf(*f)), f);
  EXPECT_EQ(&table_->Get(FUSE_ROOT_ID), &table_->root());
  table_->Forget(f, 1);
  EXPECT_EQ(table_->size(), 1u) << "one lookup is left";
  table_->Forget(f, 1);
  EXPECT_EQ(table_->size(), 0u);
  table_->Forget(&table_->root(), 1);  // the root is never forgotten
  EXPECT_EQ(&table_->Get(FUSE_ROOT_ID), &table_->root());
}

TEST_F(InodeTableTest, PinnedFdReachesTheInode) {
  ASSERT_NO_FATAL_FAILURE(MakeFile("f", 10));
  struct stat want;
  Inode* f = Lookup("f", &want);
  ASSERT_NE(f, nullptr);
  {
    // A pin never outlives the inode's last lookup: the kernel forgets an
    // inode only once no request of its is in flight.
    auto pinned = table_->Pin(*f);
    ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
    struct stat st;
    ASSERT_EQ(fstatat(pinned->get(), "", &st, AT_EMPTY_PATH), 0);
    EXPECT_EQ(st.st_ino, want.st_ino);
    EXPECT_EQ(st.st_size, 10);
  }
  table_->Forget(f, 1);
}

// A handler may still hold a pin when the kernel forgets the inode: it
// replied first, and the kernel sent FORGET at once. The inode then lives
// until that pin goes, and is finalized exactly once.
TEST_F(InodeTableTest, ForgetWhilePinnedFinalizesAtTheLastUnpin) {
  ASSERT_NO_FATAL_FAILURE(MakeFile("f", 10));
  struct stat want;
  Inode* f = Lookup("f", &want);
  ASSERT_NE(f, nullptr);
  const size_t fds_before = InodeTable::OpenPathFds();
  {
    auto pinned = table_->Pin(*f);
    ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
    table_->Forget(f, 1);
    // Still usable: the pin keeps the inode and its fd.
    struct stat st;
    ASSERT_EQ(fstatat(pinned->get(), "", &st, AT_EMPTY_PATH), 0);
    EXPECT_EQ(st.st_ino, want.st_ino);
    EXPECT_EQ(InodeTable::OpenPathFds(), fds_before);
  }
  // The last pin finalized it: its fd is closed.
  EXPECT_EQ(InodeTable::OpenPathFds(), fds_before - 1);
  // A new lookup makes a new inode.
  Inode* again = Lookup("f", &want);
  ASSERT_NE(again, nullptr);
  table_->Forget(again, 1);
}

TEST_F(InodeTableTest, UnlinkedInodeReturnsItsChargeOnceWhenReleased) {
  struct stat victim;
  Inode* f = MakeChargedFile("f", &victim);
  ASSERT_NE(f, nullptr);
  const uint64_t charged = used_bytes();
  ASSERT_GT(charged, 0u);
  ASSERT_EQ(used_inodes(), 1u);
  ASSERT_NO_FATAL_FAILURE(UnlinkAndRelease("f", victim));
  ExpectNothingUsed();
  // The kernel forgets it later: nothing is returned twice.
  table_->Forget(f, 1);
  ExpectNothingUsed();
}

TEST_F(InodeTableTest, OpenInodeKeepsItsChargeUntilForgotten) {
  struct stat victim;
  Inode* f = MakeChargedFile("f", &victim);
  ASSERT_NE(f, nullptr);
  const uint64_t charged = used_bytes();
  table_->CountOpenHandle(*f, +1);
  ASSERT_NO_FATAL_FAILURE(UnlinkAndRelease("f", victim));
  EXPECT_EQ(used_bytes(), charged) << "an open file keeps its space";
  EXPECT_EQ(used_inodes(), 1u);
  table_->CountOpenHandle(*f, -1);
  table_->Forget(f, 1);
  ExpectNothingUsed();
}

TEST_F(InodeTableTest, VictimTheKernelNeverLookedUpIsFreedAtOnce) {
  ASSERT_NO_FATAL_FAILURE(MakeFile("f", 64 * 1024));
  struct stat victim;
  ASSERT_EQ(lstat(dir_.Sub("f").c_str(), &victim), 0);
  quota_.Adjust(victim.st_blocks * 512, 1);
  ASSERT_EQ(unlink(dir_.Sub("f").c_str()), 0);
  table_->ReleaseVictim(victim);
  ExpectNothingUsed();
}

TEST_F(InodeTableTest, ForgetAllSettlesWhatChangedSinceTheLastCharge) {
  ASSERT_NO_FATAL_FAILURE(MakeFile("f", 4096));
  Inode* f = Lookup("f");
  ASSERT_NE(f, nullptr);
  ASSERT_NO_FATAL_FAILURE(Charge(*f));
  {
    UniqueFd fd(open(dir_.Sub("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    const std::string more(256 * 1024, 'y');
    ASSERT_EQ(write(fd.get(), more.data(), more.size()), static_cast<ssize_t>(more.size()));
    ASSERT_EQ(fsync(fd.get()), 0);
  }
  struct stat st;
  ASSERT_EQ(lstat(dir_.Sub("f").c_str(), &st), 0);
  table_->ForgetAll();
  EXPECT_EQ(table_->size(), 0u);
  EXPECT_EQ(used_bytes(), static_cast<uint64_t>(st.st_blocks) * 512);
  EXPECT_EQ(used_inodes(), 1u) << "a file that still has a name keeps its inode";
}

}  // namespace
}  // namespace localvol::fuse
