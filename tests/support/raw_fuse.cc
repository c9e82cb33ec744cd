#include "tests/support/raw_fuse.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace localvol::testing {
namespace {

// Large enough for any request this filesystem receives; the kernel refuses
// reads into buffers smaller than its minimum (FUSE_MIN_READ_BUFFER).
constexpr size_t kReadBuffer = 128 * 1024;
constexpr size_t kTakeoverReadBuffer = 4 * 1024 * 1024;
constexpr uint32_t kMaxWrite = 4096;
constexpr uint64_t kAttrValidSeconds = 3600;

fuse_attr Attr(uint64_t node, uint32_t mode, uint64_t size) {
  fuse_attr a{};
  a.ino = node;
  a.mode = mode;
  a.nlink = S_ISDIR(mode) ? 2 : 1;
  a.size = size;
  a.blocks = (size + 511) / 512;
  a.blksize = 4096;
  return a;
}

// Writes header + payload as one reply; the kernel takes a reply in one write.
Status Reply(int fd, uint64_t unique, int32_t error, const void* payload, size_t size) {
  fuse_out_header out{};
  out.len = static_cast<uint32_t>(sizeof out + size);
  out.error = error;
  out.unique = unique;
  iovec iov[2] = {{&out, sizeof out}, {const_cast<void*>(payload), size}};
  const ssize_t n = RetryEintr([&] { return ::writev(fd, iov, size > 0 ? 2 : 1); });
  if (n < 0) return Status::FromErrno("write to /dev/fuse");
  if (static_cast<size_t>(n) != out.len) return Status::Error(EIO, "short write to /dev/fuse");
  return Status::Ok();
}

// The child's request loop. Runs after fork in a process that may have had
// other threads, so it uses only syscalls and stack or static memory.
[[noreturn]] void Serve(int fd, int status_w) {
  static char buf[kReadBuffer];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      // ENOENT: the request was interrupted before we read it.
      if (errno == EINTR || errno == ENOENT) continue;
      ::_exit(0);  // ENODEV: unmounted or aborted
    }
    if (static_cast<size_t>(n) < sizeof(fuse_in_header)) ::_exit(3);
    fuse_in_header in;
    std::memcpy(&in, buf, sizeof in);
    const char* arg = buf + sizeof in;
    switch (in.opcode) {
      case FUSE_INIT: {
        fuse_init_in init;
        std::memcpy(&init, arg, sizeof init);
        fuse_init_out out{};
        out.major = FUSE_KERNEL_VERSION;
        out.minor = FUSE_KERNEL_MINOR_VERSION;
        out.max_readahead = init.max_readahead;
        out.max_write = kMaxWrite;
        (void)Reply(fd, in.unique, 0, &out, sizeof out);
        break;
      }
      case FUSE_LOOKUP:
        if (std::strcmp(arg, "f") == 0) {
          (void)ReplyEntry(fd, in.unique, kRawFileNode, kRawFileSize);
        } else if (std::strcmp(arg, "stall") == 0) {
          // Read, never answered: as if the server died while handling it.
          (void)!::write(status_w, &in.unique, sizeof in.unique);
        } else {
          (void)ReplyError(fd, in.unique, ENOENT);
        }
        break;
      case FUSE_GETATTR: {
        fuse_attr_out out{};
        if (in.nodeid == FUSE_ROOT_ID) {
          out.attr = Attr(FUSE_ROOT_ID, S_IFDIR | 0755, 0);
        } else if (in.nodeid == kRawFileNode) {
          out.attr = Attr(kRawFileNode, S_IFREG | 0644, kRawFileSize);
        } else {
          (void)ReplyError(fd, in.unique, ENOENT);
          break;
        }
        (void)Reply(fd, in.unique, 0, &out, sizeof out);
        break;
      }
      case FUSE_FORGET:
      case FUSE_BATCH_FORGET:
      case FUSE_INTERRUPT:
        break;  // no reply
      default:
        (void)ReplyError(fd, in.unique, ENOSYS);
    }
  }
}

}  // namespace

Result<RawFuseServer> RawFuseServer::Start(const std::string& mountpoint) {
  auto dev = OpenAt(AT_FDCWD, "/dev/fuse", O_RDWR);
  if (!dev.ok()) return dev.status();
  char options[128];
  const int n = std::snprintf(options, sizeof options, "fd=%d,rootmode=40000,user_id=0,group_id=0",
                              dev->get());
  if (n < 0 || static_cast<size_t>(n) >= sizeof options) {
    return Status::Error(EOVERFLOW, "fuse mount options do not fit");
  }
  if (::mount("lvrawfuse", mountpoint.c_str(), "fuse.lvrawfuse", MS_NOSUID | MS_NODEV, options) !=
      0) {
    return Status::FromErrno("mount fuse at " + mountpoint);
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe2");
  UniqueFd status_r(p[0]), status_w(p[1]);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("fork the raw FUSE server");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    Serve(dev->get(), status_w.get());
  }
  RawFuseServer s;
  s.pid_ = pid;
  s.child_fd_ = dev->get();
  // The child is not reaped yet (only we reap it), so the pidfd names it.
  s.pidfd_.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!s.pidfd_.valid()) return Status::FromErrno("pidfd_open the raw FUSE server");
  s.status_ = std::move(status_r);
  // `dev` closes here: from now on the child holds the only /dev/fuse fd.
  return s;
}

RawFuseServer::RawFuseServer(RawFuseServer&& other) noexcept
    : pid_(other.pid_),
      pidfd_(std::move(other.pidfd_)),
      status_(std::move(other.status_)),
      child_fd_(other.child_fd_) {
  other.pid_ = -1;
}

RawFuseServer& RawFuseServer::operator=(RawFuseServer&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = other.pid_;
    pidfd_ = std::move(other.pidfd_);
    status_ = std::move(other.status_);
    child_fd_ = other.child_fd_;
    other.pid_ = -1;
  }
  return *this;
}

RawFuseServer::~RawFuseServer() { Kill(); }

Result<UniqueFd> RawFuseServer::TakeFd() const {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd_.get(), child_fd_, 0));
  if (fd < 0) return Status::FromErrno("pidfd_getfd the server's /dev/fuse fd");
  return UniqueFd(fd);  // pidfd_getfd sets O_CLOEXEC
}

Result<uint64_t> RawFuseServer::WaitStalled(std::chrono::milliseconds timeout) const {
  pollfd p{status_.get(), POLLIN, 0};
  const int r = RetryEintr([&] { return ::poll(&p, 1, static_cast<int>(timeout.count())); });
  if (r < 0) return Status::FromErrno("poll the raw server's status pipe");
  if (r == 0) return Status::Error(ETIMEDOUT, "the raw server stalled no request");
  uint64_t unique = 0;
  if (::read(status_.get(), &unique, sizeof unique) != sizeof unique) {
    return Status::FromErrno("read the raw server's status pipe");
  }
  return unique;
}

void RawFuseServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  RetryEintr([&] { return ::waitpid(pid_, nullptr, 0); });
  pid_ = -1;
}

Result<RawRequest> ReadRequest(int fuse_fd, std::chrono::milliseconds timeout) {
  // The kernel refuses (EINVAL) a read into a buffer smaller than a WRITE of
  // the negotiated max_write; another server's connection may have negotiated
  // up to FUSE_MAX_MAX_PAGES pages.
  std::vector<char> buf(kTakeoverReadBuffer);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || NothingToRead(fuse_fd, left)) {
      return Status::Error(ETIMEDOUT, "no FUSE request arrived");
    }
    const ssize_t n = ::read(fuse_fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR || errno == ENOENT) continue;
      return Status::FromErrno("read /dev/fuse");
    }
    RawRequest req;
    if (static_cast<size_t>(n) < sizeof req.header) return Status::Error(EIO, "short FUSE request");
    std::memcpy(&req.header, buf.data(), sizeof req.header);
    if (req.header.opcode == FUSE_FORGET || req.header.opcode == FUSE_BATCH_FORGET) continue;
    if (req.header.opcode == FUSE_LOOKUP) {
      req.name.assign(buf.data() + sizeof req.header);  // NUL-terminated by the kernel
    }
    return req;
  }
}

Status ReplyEntry(int fuse_fd, uint64_t unique, uint64_t node, uint64_t size) {
  fuse_entry_out out{};
  out.nodeid = node;
  out.generation = 1;
  // Entries expire at once (every lookup reaches the server), attributes do
  // not, so a stat after the lookup needs no GETATTR.
  out.attr_valid = kAttrValidSeconds;
  out.attr = Attr(node, S_IFREG | 0644, size);
  return Reply(fuse_fd, unique, 0, &out, sizeof out);
}

Status ReplyAttr(int fuse_fd, uint64_t unique, uint64_t node, uint64_t size) {
  fuse_attr_out out{};
  out.attr_valid = kAttrValidSeconds;
  out.attr = Attr(node, S_IFREG | 0644, size);
  return Reply(fuse_fd, unique, 0, &out, sizeof out);
}

Status ReplyError(int fuse_fd, uint64_t unique, int err) {
  return Reply(fuse_fd, unique, -err, nullptr, 0);
}

Status NotifyResend(int fuse_fd) {
  // A notification is a reply with unique 0 whose error field is the code;
  // RESEND carries no payload.
  return Reply(fuse_fd, 0, FUSE_NOTIFY_RESEND, nullptr, 0);
}

bool NothingToRead(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return RetryEintr([&] { return ::poll(&p, 1, static_cast<int>(timeout.count())); }) == 0;
}

}  // namespace localvol::testing
