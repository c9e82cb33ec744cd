// Small helpers the integration tests share: syscall results that carry errno,
// readable errno names, unique resource names, seeded random data, and file
// shortcuts. Pure functions or value types; thread-safe.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "base/status.h"

namespace localvol::testing {

// The outcome of one syscall: its return value and, when it failed, errno.
// Trivially copyable, so it can travel back from a child process (AsUser).
struct SysResult {
  long ret = 0;
  int err = 0;  // 0 on success, else a positive errno

  bool ok() const { return err == 0; }
  friend bool operator==(const SysResult& a, const SysResult& b) {
    return a.err == b.err && (a.err != 0 || a.ret == b.ret);
  }
};

// Wraps a syscall's return value; captures errno when it is negative.
// Use right after the call: Sys(unlink(p)).
inline SysResult Sys(long ret) { return ret < 0 ? SysResult{ret, errno} : SysResult{ret, 0}; }
inline SysResult Ok(long ret = 0) { return SysResult{ret, 0}; }
inline SysResult Err(int err) { return SysResult{-1, err}; }

// "ENOENT" for ENOENT; "errno 1234" for unknown values; "ok" for 0.
std::string ErrnoName(int err);
void PrintTo(const SysResult& r, std::ostream* os);

// "ENOENT (No such file or directory)"-style text for assertions.
std::string Describe(const SysResult& r);

// Asserting helpers. The expression is any syscall returning < 0 with errno.
#define LV_SYS_STR(expr) #expr
#define EXPECT_SYS_OK(expr)                                                                        \
  do {                                                                                             \
    ::localvol::testing::SysResult lv_r_ = ::localvol::testing::Sys(expr);                         \
    EXPECT_TRUE(lv_r_.ok()) << LV_SYS_STR(expr) << " -> " << ::localvol::testing::Describe(lv_r_); \
  } while (0)
#define ASSERT_SYS_OK(expr)                                                                        \
  do {                                                                                             \
    ::localvol::testing::SysResult lv_r_ = ::localvol::testing::Sys(expr);                         \
    ASSERT_TRUE(lv_r_.ok()) << LV_SYS_STR(expr) << " -> " << ::localvol::testing::Describe(lv_r_); \
  } while (0)
#define EXPECT_SYS_ERRNO(expr, errno_value)                                    \
  do {                                                                         \
    ::localvol::testing::SysResult lv_r_ = ::localvol::testing::Sys(expr);     \
    EXPECT_EQ(::localvol::testing::ErrnoName(lv_r_.err),                       \
              ::localvol::testing::ErrnoName(errno_value))                     \
        << LV_SYS_STR(expr) << " -> " << ::localvol::testing::Describe(lv_r_); \
  } while (0)
// For a SysResult value (e.g. from AsUser).
#define EXPECT_RESULT_ERRNO(result, errno_value)          \
  EXPECT_EQ(::localvol::testing::ErrnoName((result).err), \
            ::localvol::testing::ErrnoName(errno_value))  \
      << #result " -> " << ::localvol::testing::Describe(result)
#define EXPECT_RESULT_OK(result) EXPECT_RESULT_ERRNO(result, 0)

// A name unique to this process and call: "<tag>-<test>-<pid>-<n>", at most
// about 48 characters, using only [A-Za-z0-9_-]. The test part comes from the
// running GoogleTest test so leaked resources can be traced back.
std::string UniqueName(std::string_view tag);

// The seed for a randomized test: LOCALVOL_TEST_SEED from the environment if
// set, else `fallback`. Returns it; callers print it.
uint64_t SeedFromEnvOr(uint64_t fallback);
// A fresh random seed (from the environment override or /dev/urandom).
uint64_t RandomSeed();

// `n` pseudo-random bytes from `seed`; the same seed gives the same bytes.
std::string RandomBytes(uint64_t seed, size_t n);

// Whole-file helpers. They return a failed Status with errno on error.
Status WriteFile(const std::string& path, std::string_view data, int flags = 0, mode_t mode = 0644);
Result<std::string> ReadFile(const std::string& path);
Result<struct stat> Lstat(const std::string& path);
Result<struct stat> Stat(const std::string& path);
bool Exists(const std::string& path);  // lstat succeeds

// Whether this kernel can do FUSE passthrough (FUSE_PASSTHROUGH): Linux 6.9
// or later, and CONFIG_FUSE_PASSTHROUGH when /proc/config.gz tells. A test
// that finds passthrough not granted skips only when this is false; on such a
// kernel a refusal is a failure.
bool KernelHasFusePassthrough();

// Writes all of `data` at `offset` with pwrite, looping on short writes.
// Returns bytes written before the first error and that error (0 if none).
SysResult PwriteAll(int fd, std::string_view data, off_t offset);

}  // namespace localvol::testing
