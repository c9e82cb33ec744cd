#include "tests/support/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/unique_fd.h"

namespace localvol::testing {
namespace {

using Clock = std::chrono::steady_clock;

// In a freshly forked child: close every fd above stderr so nothing (a
// /dev/fuse fd, a pipe end) outlives its owner through the child.
void CloseExtraFds() { ::close_range(3, ~0U, 0); }

[[noreturn]] void ExecOrDie(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  const char* msg = "exec failed: ";
  (void)!::write(2, msg, std::strlen(msg));
  (void)!::write(2, args[0], std::strlen(args[0]));
  (void)!::write(2, "\n", 1);
  ::_exit(127);
}

// Drops to creds in a child. Returns false (errno set) on failure.
bool DropTo(const Creds& creds) {
  if (::setgroups(creds.groups.size(), creds.groups.data()) != 0) return false;
  if (::setresgid(creds.gid, creds.gid, creds.gid) != 0) return false;
  if (::setresuid(creds.uid, creds.uid, creds.uid) != 0) return false;
  return ::geteuid() == creds.uid && ::getegid() == creds.gid;
}

}  // namespace

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

std::string CommandResult::Summary() const {
  std::string s;
  if (timed_out) s = "timed out; ";
  if (term_signal != 0) {
    s += "killed by signal " + std::to_string(term_signal);
  } else {
    s += "exit " + std::to_string(exit_code);
  }
  if (!out.empty()) s += "; stdout: " + out;
  if (!err.empty()) s += "; stderr: " + err;
  return s;
}

CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CommandResult result;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.exit_code = 127;
    result.err = std::string("pipe2: ") + std::strerror(errno);
    return result;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    result.exit_code = 127;
    result.err = std::string("pipe2: ") + std::strerror(errno);
    return result;
  }
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]), err_r(err_pipe[0]), err_w(err_pipe[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    result.exit_code = 127;
    result.err = std::string("fork: ") + std::strerror(errno);
    return result;
  }
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(out_w.get(), 1);
    ::dup2(err_w.get(), 2);
    CloseExtraFds();
    ExecOrDie(argv);
  }
  out_w.Reset();
  err_w.Reset();
  const auto deadline = Clock::now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd fds[2] = {{out_open ? out_r.get() : -1, POLLIN, 0},
                     {err_open ? err_r.get() : -1, POLLIN, 0}};
    int n = ::poll(fds, 2, static_cast<int>(std::min<long>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) break;
    char buf[8192];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t r = ::read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        (i == 0 ? result.out : result.err).append(buf, r);
      } else if (r == 0 || errno != EINTR) {
        (i == 0 ? out_open : err_open) = false;
      }
    }
  }
  // The pipes may close before the child exits; wait for it within the deadline too.
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (Clock::now() > deadline && !result.timed_out) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(5ms);
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  return result;
}

Result<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv,
                                     const std::string& log_path,
                                     const std::function<void()>& arrange_fds) {
  auto log = OpenAt(AT_FDCWD, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (!log.ok()) return log.status();
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("fork for " + argv[0]);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(log->get(), 1);
    ::dup2(log->get(), 2);
    if (arrange_fds) {
      arrange_fds();
    } else {
      CloseExtraFds();
    }
    ExecOrDie(argv);
  }
  Subprocess p;
  p.pid_ = pid;
  p.owner_ = ::getpid();
  // Not reaped yet (only we reap it), so this pidfd names our child.
  p.pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  return p;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_), pidfd_(other.pidfd_), owner_(other.owner_), status_(other.status_) {
  other.pid_ = -1;
  other.pidfd_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (running() && owner_ == ::getpid()) Kill();
    ClosePidfd();
    pid_ = other.pid_;
    pidfd_ = other.pidfd_;
    owner_ = other.owner_;
    status_ = other.status_;
    other.pid_ = -1;
    other.pidfd_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (running() && owner_ == ::getpid()) Kill();
  ClosePidfd();
}

void Subprocess::ClosePidfd() {
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
}

void Subprocess::Signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> Subprocess::TryWait() {
  if (pid_ <= 0) return std::nullopt;
  if (status_) return status_;
  int status = 0;
  pid_t w = RetryEintr([&] { return ::waitpid(pid_, &status, WNOHANG); });
  if (w == pid_) status_ = status;
  return status_;
}

std::optional<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto s = TryWait()) return s;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

int Subprocess::Kill() {
  if (!running()) return status_.value_or(0);
  ::kill(pid_, SIGKILL);
  int status = 0;
  RetryEintr([&] { return ::waitpid(pid_, &status, 0); });
  status_ = status;
  return status;
}

Status ForkAndCollect(const Creds* creds, const std::function<void(int)>& body,
                      std::string* payload, std::chrono::milliseconds timeout) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe2");
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("fork");
  if (pid == 0) {
    // Keep only stdio and our pipe end: fds of other threads' children (their
    // pipes) must not stay open here, or their parents would wait for us.
    const int w = wr.get();
    if (w > 3) ::close_range(3, w - 1, 0);
    ::close_range(w + 1, ~0U, 0);
    if (creds != nullptr && !DropTo(*creds)) ::_exit(120);
    body(wr.get());
    ::_exit(0);
  }
  wr.Reset();
  const auto deadline = Clock::now() + timeout;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{rd.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t r = ::read(rd.get(), buf, sizeof(buf));
    if (r > 0) {
      payload->append(buf, r);
    } else if (r == 0 || errno != EINTR) {
      break;
    }
  }
  int status = 0;
  RetryEintr([&] { return ::waitpid(pid, &status, 0); });
  if (timed_out) return Status::Error(ETIMEDOUT, "child did not finish in time; killed");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 120) {
    return Status::Error(EPERM, "child could not drop to uid " + std::to_string(creds->uid));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Error(ECHILD, "child ended with " + DescribeWaitStatus(status));
  }
  return Status::Ok();
}

}  // namespace localvol::testing
