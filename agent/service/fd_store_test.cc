#include "agent/service/fd_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "base/unique_fd.h"

namespace localvol::service {
namespace {

TEST(FdNameTest, FollowsTheFdnameRules) {
  EXPECT_TRUE(IsValidFdName("fuse-vol-1"));
  EXPECT_TRUE(IsValidFdName("a b~!"));
  EXPECT_TRUE(IsValidFdName(std::string(kFdNameMax, 'x')));
  EXPECT_FALSE(IsValidFdName(""));
  EXPECT_FALSE(IsValidFdName(std::string(kFdNameMax + 1, 'x')));
  EXPECT_FALSE(IsValidFdName("a:b"));
  EXPECT_FALSE(IsValidFdName("a\nb"));
  EXPECT_FALSE(IsValidFdName("a\x7f"));
  EXPECT_FALSE(IsValidFdName("\xc3\xa9"));
}

TEST(FdStoreTest, MessagesMatchSdNotify) {
  EXPECT_EQ(StoreMessage("v1", true), "FDSTORE=1\nFDNAME=v1");
  EXPECT_EQ(StoreMessage("v1", false), "FDSTORE=1\nFDNAME=v1\nFDPOLL=0");
  EXPECT_EQ(RemoveMessage("v1"), "FDSTOREREMOVE=1\nFDNAME=v1");
}

// Sets NOTIFY_SOCKET for one test and restores the previous value.
class NotifyEnv {
 public:
  explicit NotifyEnv(const char* value) {
    if (const char* old = std::getenv("NOTIFY_SOCKET")) old_ = old;
    if (value) {
      ::setenv("NOTIFY_SOCKET", value, 1);
    } else {
      ::unsetenv("NOTIFY_SOCKET");
    }
  }
  ~NotifyEnv() {
    if (old_.empty()) {
      ::unsetenv("NOTIFY_SOCKET");
    } else {
      ::setenv("NOTIFY_SOCKET", old_.c_str(), 1);
    }
  }

 private:
  std::string old_;
};

TEST(FdStoreTest, WithoutAServiceManagerThereIsNoStore) {
  NotifyEnv env(nullptr);
  const int fds[] = {0};
  Status st = StoreFds("v1", fds, true);
  EXPECT_EQ(st.err(), ENOTCONN) << st.ToString();
  EXPECT_NE(st.context().find("NOTIFY_SOCKET"), std::string::npos);
  EXPECT_EQ(RemoveStoredFds("v1").err(), ENOTCONN);
}

TEST(FdStoreTest, BadArgumentsAreRefusedBeforeSending) {
  NotifyEnv env("@lv-unused");
  const int fds[] = {0};
  EXPECT_EQ(StoreFds("a:b", fds, true).err(), EINVAL);
  EXPECT_EQ(StoreFds("v1", {}, true).err(), EINVAL);
  const int bad[] = {-1};
  EXPECT_EQ(StoreFds("v1", bad, true).err(), EBADF);
  EXPECT_EQ(RemoveStoredFds("").err(), EINVAL);
}

TEST(FdStoreTest, SendsTheFdWithItsName) {
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock.valid());
  const std::string abstract = "lv-fdstore-unit-" + std::to_string(::getpid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, abstract.data(), abstract.size());
  const socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size());
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), len), 0) << std::strerror(errno);
  NotifyEnv env(("@" + abstract).c_str());

  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  const int fds[] = {r.get()};
  ASSERT_TRUE(StoreFds("pipe-end", fds, false).ok());

  char text[256] = {};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  iovec iov{text, sizeof text - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ASSERT_GT(::recvmsg(sock.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC), 0);
  EXPECT_STREQ(text, "FDSTORE=1\nFDNAME=pipe-end\nFDPOLL=0");
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
  int got = -1;
  std::memcpy(&got, CMSG_DATA(c), sizeof got);
  UniqueFd received(got);
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(received.get(), &a), 0);
  ASSERT_EQ(::fstat(r.get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "the store got another file";

  ASSERT_TRUE(RemoveStoredFds("pipe-end").ok());
  std::memset(text, 0, sizeof text);
  ASSERT_GT(::recv(sock.get(), text, sizeof text - 1, MSG_DONTWAIT), 0);
  EXPECT_STREQ(text, "FDSTOREREMOVE=1\nFDNAME=pipe-end");
}

}  // namespace
}  // namespace localvol::service
