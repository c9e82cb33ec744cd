// A FUSE connection spoken in the raw kernel protocol, for tests that check
// what the kernel does with a connection whose server dies (issue 20).
//
// RawFuseServer mounts a tiny filesystem and serves it from a forked child:
//   node 1  the root directory,
//   "f"     node 2, a regular file of kFileSize bytes,
//   "stall" a LOOKUP the child reads and never answers; it reports the
//           request's unique on its status pipe, so a test knows the request
//           sits in the kernel's "read but not answered" list,
//   others  ENOENT.
// Entry timeouts are zero, so every stat of a name reaches the server.
// The test takes a copy of the child's /dev/fuse fd (pidfd_getfd, the same
// open file, as the fd store would keep it), kills the child and speaks the
// protocol itself with ReadRequest / ReplyEntry / NotifyResend.
//
// Wire definitions come from <linux/fuse.h>, except those newer than Debian
// 12's copy, which are defined here with the kernel's names and numbers.
// Objects are move-only and not thread-safe; the free functions are.
#pragma once

#include <linux/fuse.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "base/status.h"
#include "base/unique_fd.h"

namespace localvol::testing {

// include/uapi/linux/fuse.h, Linux 6.9 (protocol 7.40): enum fuse_notify_code
// FUSE_NOTIFY_RESEND and the flag the kernel sets in the unique of a resent
// request.
inline constexpr int32_t FUSE_NOTIFY_RESEND = 7;
inline constexpr uint64_t FUSE_UNIQUE_RESEND = 1ULL << 63;

inline constexpr uint64_t kRawFileNode = 2;
inline constexpr uint64_t kRawFileSize = 4321;

class RawFuseServer {
 public:
  // Opens /dev/fuse, mounts it at `mountpoint` (an existing directory) and
  // forks the serving child. The caller unmounts (the destructor only kills).
  static Result<RawFuseServer> Start(const std::string& mountpoint);

  RawFuseServer() = default;
  RawFuseServer(RawFuseServer&& other) noexcept;
  RawFuseServer& operator=(RawFuseServer&& other) noexcept;
  RawFuseServer(const RawFuseServer&) = delete;
  RawFuseServer& operator=(const RawFuseServer&) = delete;
  ~RawFuseServer();  // Kill()

  pid_t pid() const { return pid_; }
  // A new fd for the child's /dev/fuse file (pidfd_getfd): the same open
  // file, so the connection and its unanswered requests stay with it.
  Result<UniqueFd> TakeFd() const;
  // Waits for the child to report a stalled LOOKUP "stall"; returns its unique.
  Result<uint64_t> WaitStalled(std::chrono::milliseconds timeout) const;
  // SIGKILL and reap; no-op when not running.
  void Kill();

 private:
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd status_;    // read end of the child's status pipe
  int child_fd_ = -1;  // the /dev/fuse fd number inside the child
};

// One request as read from /dev/fuse.
struct RawRequest {
  fuse_in_header header{};
  std::string name;  // LOOKUP: the name looked up
};

// Reads the next request, skipping FORGET and BATCH_FORGET (they take no
// reply). ETIMEDOUT if none arrives within `timeout`.
Result<RawRequest> ReadRequest(int fuse_fd, std::chrono::milliseconds timeout);

// Answers `unique` with an entry for `node`: a regular file of `size` bytes
// whose inode number is `node`, with zero timeouts.
Status ReplyEntry(int fuse_fd, uint64_t unique, uint64_t node, uint64_t size);
// Answers a GETATTR `unique` with the attributes ReplyEntry gives `node`.
Status ReplyAttr(int fuse_fd, uint64_t unique, uint64_t node, uint64_t size);
// Answers `unique` with -err.
Status ReplyError(int fuse_fd, uint64_t unique, int err);
// Writes the FUSE_NOTIFY_RESEND notification. EINVAL on kernels before 6.9.
Status NotifyResend(int fuse_fd);

// True if `fd` has nothing to read within `timeout`.
bool NothingToRead(int fd, std::chrono::milliseconds timeout);

}  // namespace localvol::testing
