#include "agent/service/listen_fds.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

namespace localvol::service {
namespace {

// Passed fds are placed here, far above what the test runner has open, the
// way a service manager places them at 3 onwards.
constexpr int kFirst = 200;

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// Puts `n` pipe ends at kFirst.. without FD_CLOEXEC, as exec leaves them.
void PlaceFds(int n) {
  for (int i = 0; i < n; ++i) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    ASSERT_EQ(::dup2(p[0], kFirst + i), kFirst + i);
    ::close(p[0]);
    ::close(p[1]);
  }
}

void CloseFds(int n) {
  for (int i = 0; i < n; ++i) ::close(kFirst + i);
}

ListenEnv Env(std::optional<std::string> pid, std::optional<std::string> fds,
              std::optional<std::string> names = std::nullopt) {
  return {std::move(pid), std::move(fds), std::move(names)};
}

const std::string kSelf = std::to_string(::getpid());

TEST(ListenFdsTest, PlainStartHasNoFds) {
  auto r = ParseListenFds(Env(std::nullopt, std::nullopt), ::getpid(), kFirst);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
}

TEST(ListenFdsTest, TakesNamedFdsInOrderWithCloexec) {
  PlaceFds(2);
  auto r = ParseListenFds(Env(kSelf, "2", "fuse-vol1:state"), ::getpid(), kFirst);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].name, "fuse-vol1");
  EXPECT_EQ((*r)[0].fd.get(), kFirst);
  EXPECT_EQ((*r)[1].name, "state");
  EXPECT_EQ((*r)[1].fd.get(), kFirst + 1);
  for (const auto& f : *r) EXPECT_NE(::fcntl(f.fd.get(), F_GETFD) & FD_CLOEXEC, 0);
  r = Result<std::vector<ListenFd>>(std::vector<ListenFd>{});  // closes them
  EXPECT_FALSE(IsOpen(kFirst));
  EXPECT_FALSE(IsOpen(kFirst + 1));
}

TEST(ListenFdsTest, WithoutNamesEveryFdIsUnknown) {
  PlaceFds(1);
  auto r = ParseListenFds(Env(kSelf, "1"), ::getpid(), kFirst);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].name, kUnknownFdName);
}

TEST(ListenFdsTest, ZeroFdsWithEmptyNamesIsEmpty) {
  auto r = ParseListenFds(Env(kSelf, "0", ""), ::getpid(), kFirst);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
}

TEST(ListenFdsTest, AnotherProcessesFdsAreRefusedAndLeftOpen) {
  PlaceFds(1);
  auto r = ParseListenFds(Env(std::to_string(::getpid() + 1), "1", "x"), ::getpid(), kFirst);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err(), EINVAL);
  EXPECT_NE(r.status().context().find("not this process"), std::string::npos);
  EXPECT_TRUE(IsOpen(kFirst)) << "the fds of another process are not ours to close";
  CloseFds(1);
}

TEST(ListenFdsTest, MalformedPidOrCountIsRefused) {
  for (const char* pid : {"", "abc", "-1", "0", "12x", " 1"}) {
    auto r = ParseListenFds(Env(pid, "1"), ::getpid(), kFirst);
    EXPECT_EQ(r.err(), EINVAL) << "LISTEN_PID=" << pid;
  }
  for (const char* count : {"", "x", "-1", "1 ", "+1", "99999999999"}) {
    auto r = ParseListenFds(Env(kSelf, count), ::getpid(), kFirst);
    EXPECT_EQ(r.err(), EINVAL) << "LISTEN_FDS=" << count;
    EXPECT_NE(r.status().context().find("LISTEN_FDS"), std::string::npos);
  }
  EXPECT_EQ(ParseListenFds(Env(kSelf, std::nullopt), ::getpid(), kFirst).err(), EINVAL);
  EXPECT_EQ(ParseListenFds(Env(std::nullopt, "1"), ::getpid(), kFirst).err(), EINVAL);
}

TEST(ListenFdsTest, NameCountMismatchClosesEveryFd) {
  for (const char* names : {"one", "a:b:c", ""}) {
    PlaceFds(2);
    auto r = ParseListenFds(Env(kSelf, "2", names), ::getpid(), kFirst);
    ASSERT_FALSE(r.ok()) << "LISTEN_FDNAMES=" << names;
    EXPECT_EQ(r.err(), EINVAL);
    EXPECT_NE(r.status().context().find("LISTEN_FDNAMES"), std::string::npos);
    EXPECT_FALSE(IsOpen(kFirst));
    EXPECT_FALSE(IsOpen(kFirst + 1));
  }
}

TEST(ListenFdsTest, InvalidNameClosesEveryFd) {
  for (const std::string& names : {std::string("ok:bad\x01"), std::string("ok:"),
                                   std::string("ok:") + std::string(256, 'n')}) {
    PlaceFds(2);
    auto r = ParseListenFds(Env(kSelf, "2", names), ::getpid(), kFirst);
    ASSERT_FALSE(r.ok()) << names;
    EXPECT_EQ(r.err(), EINVAL);
    EXPECT_FALSE(IsOpen(kFirst));
    EXPECT_FALSE(IsOpen(kFirst + 1));
  }
}

TEST(ListenFdsTest, MissingFdIsEbadfAndTheOthersAreClosed) {
  PlaceFds(1);
  ASSERT_FALSE(IsOpen(kFirst + 1));
  auto r = ParseListenFds(Env(kSelf, "2", "a:b"), ::getpid(), kFirst);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err(), EBADF);
  EXPECT_FALSE(IsOpen(kFirst));
}

TEST(ListenFdsTest, TakeListenFdsUnsetsTheVariables) {
  ASSERT_EQ(::setenv("LISTEN_PID", kSelf.c_str(), 1), 0);
  ASSERT_EQ(::setenv("LISTEN_FDS", "0", 1), 0);
  ASSERT_EQ(::setenv("LISTEN_FDNAMES", "", 1), 0);
  auto r = TakeListenFds();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->empty());
  EXPECT_EQ(std::getenv("LISTEN_PID"), nullptr);
  EXPECT_EQ(std::getenv("LISTEN_FDS"), nullptr);
  EXPECT_EQ(std::getenv("LISTEN_FDNAMES"), nullptr);
  // Unset even when the content is refused.
  ASSERT_EQ(::setenv("LISTEN_PID", "1", 1), 0);
  ASSERT_EQ(::setenv("LISTEN_FDS", "1", 1), 0);
  EXPECT_EQ(TakeListenFds().err(), EINVAL);
  EXPECT_EQ(std::getenv("LISTEN_PID"), nullptr);
  EXPECT_EQ(std::getenv("LISTEN_FDS"), nullptr);
}

}  // namespace
}  // namespace localvol::service
