// A GoogleTest fixture for the fuse units without a mount: an InodeTable over
// a scratch directory (tests/support's TempDir), charging a real Quota.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"
#include "fuse/inode_table.h"
#include "fuse/quota.h"
#include "tests/support/temp_dir.h"

namespace localvol::fuse {

class InodeTableFixture : public ::testing::Test {
 protected:
  // `used_bytes`: usage from elsewhere that the quota starts with.
  explicit InodeTableFixture(uint64_t used_bytes = 0)
      : quota_(/*capacity_bytes=*/1 << 30, /*inode_limit=*/1000, used_bytes, 0) {}

  void SetUp() override {
    auto dir = testing::TempDir::Create("lv-fuse-unit");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(dir).value();
    auto root = OpenAt(AT_FDCWD, dir_.path(), O_PATH | O_DIRECTORY);
    ASSERT_TRUE(root.ok()) << root.status().ToString();
    struct stat st;
    ASSERT_EQ(fstat(root->get(), &st), 0);
    table_.emplace(std::move(root).value(), st, &quota_);
  }

  // What a FUSE lookup does: the O_PATH fd and stat of `name`, added to the
  // table (one lookup counted).
  Inode* Lookup(const std::string& name, struct stat* st_out = nullptr) {
    auto fd = OpenAt(AT_FDCWD, dir_.Sub(name), O_PATH | O_NOFOLLOW);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (!fd.ok()) return nullptr;
    struct stat st;
    EXPECT_EQ(fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), 0);
    if (st_out != nullptr) *st_out = st;
    return table_->Add(std::move(fd).value(), st);
  }

  testing::TempDir dir_;
  Quota quota_;
  std::optional<InodeTable> table_;
};

}  // namespace localvol::fuse
