#include "tests/support/fake_service_manager.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

extern char** environ;

namespace localvol::testing {
namespace {

// systemd's fdname_is_valid: printable ASCII without ':', at most 255 bytes
// (it accepts the empty name; the store then uses "stored").
bool FdNameValid(const std::string& s) {
  if (s.size() > 255) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e && c != ':'; });
}

// systemd's same_fd: do the two fds refer to the same open file?
bool SameFile(int a, int b) {
  const pid_t self = ::getpid();
  return ::syscall(SYS_kcmp, self, self, KCMP_FILE, a, b) == 0;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

}  // namespace

Result<FakeServiceManager> FakeServiceManager::Create(size_t fd_store_max) {
  FakeServiceManager m;
  auto dir = TempDir::Create("lvnotify");
  if (!dir.ok()) return dir.status();
  m.dir_ = std::move(*dir);
  m.socket_path_ = m.dir_.Sub("notify");
  m.max_ = fd_store_max;
  m.socket_.Reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!m.socket_.valid()) return Status::FromErrno("socket for the notify socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (m.socket_path_.size() >= sizeof addr.sun_path) {
    return Status::Error(ENAMETOOLONG, "notify socket path " + m.socket_path_);
  }
  std::memcpy(addr.sun_path, m.socket_path_.c_str(), m.socket_path_.size() + 1);
  if (::bind(m.socket_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("bind " + m.socket_path_);
  }
  const int on = 1;
  if (::setsockopt(m.socket_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) {
    return Status::FromErrno("SO_PASSCRED on " + m.socket_path_);
  }
  return m;
}

std::string FakeServiceManager::StoreNames() const {
  std::string names;
  for (const auto& s : store_) names += (names.empty() ? "" : ":") + s.name;
  return names;
}

Result<Subprocess> FakeServiceManager::Start(const std::vector<std::string>& argv,
                                             const std::string& log_path) {
  if (Status st = Drain(); !st.ok()) return st;
  DropHungUp();
  // Everything the child needs is built here: between fork and exec it may
  // only move fds, format its pid into `pid_var` and switch `environ`.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string v(*e);
    if (v.rfind("NOTIFY_SOCKET=", 0) == 0 || v.rfind("LISTEN_", 0) == 0) continue;
    env.push_back(v);
  }
  env.push_back("NOTIFY_SOCKET=" + socket_path_);
  std::vector<int> fds;
  for (const auto& s : store_) fds.push_back(s.fd.get());
  if (!fds.empty()) {
    env.push_back("LISTEN_FDS=" + std::to_string(fds.size()));
    env.push_back("LISTEN_FDNAMES=" + StoreNames());
  }
  std::vector<char*> envp;
  for (auto& v : env) envp.push_back(v.data());
  char pid_var[32] = "LISTEN_PID=";
  if (!fds.empty()) envp.push_back(pid_var);
  envp.push_back(nullptr);
  std::vector<int> moved(fds.size(), -1);
  const int n = static_cast<int>(fds.size());

  auto arrange = [&] {
    // First lift every stored fd above the target range, so that placing one
    // at 3+i never overwrites another not yet placed.
    for (int i = 0; i < n; ++i) moved[i] = ::fcntl(fds[i], F_DUPFD, 3 + n);
    for (int i = 0; i < n; ++i) {
      if (moved[i] < 0 || ::dup2(moved[i], 3 + i) != 3 + i) ::_exit(125);  // dup2: no CLOEXEC
    }
    ::close_range(3 + n, ~0U, 0);
    if (n > 0) {
      // LISTEN_PID is the child's own pid, known only here.
      char digits[16];
      int len = 0;
      for (pid_t p = ::getpid(); p > 0; p /= 10) digits[len++] = static_cast<char>('0' + p % 10);
      char* out = pid_var + std::strlen("LISTEN_PID=");
      while (len > 0) *out++ = digits[--len];
      *out = '\0';
    }
    environ = envp.data();
  };
  auto child = Subprocess::Spawn(argv, log_path, arrange);
  if (!child.ok()) return child.status();
  main_pid_ = child->pid();
  ready_ = stopping_ = false;
  return child;
}

Status FakeServiceManager::WaitFor(const std::string& line, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::Error(ETIMEDOUT, "no \"" + line + "\" from the main process");
    }
    bool matched = false;
    auto got = ReceiveOne(left, line, &matched);
    if (!got.ok()) return got.status();
    if (matched) return Status::Ok();
  }
}

Status FakeServiceManager::Drain() {
  bool matched = false;
  for (;;) {
    auto got = ReceiveOne(std::chrono::milliseconds(0), "", &matched);
    if (!got.ok()) return got.status();
    if (!*got) break;
  }
  DropHungUp();
  return Status::Ok();
}

Result<bool> FakeServiceManager::ReceiveOne(std::chrono::milliseconds timeout,
                                            const std::string& line, bool* matched) {
  pollfd p{socket_.get(), POLLIN, 0};
  const int r = RetryEintr([&] { return ::poll(&p, 1, static_cast<int>(timeout.count())); });
  if (r < 0) return Status::FromErrno("poll the notify socket");
  if (r == 0) return false;
  // systemd accepts up to NOTIFY_FD_MAX (768) fds per datagram.
  constexpr size_t kMaxFds = 768;
  std::vector<char> text(64 * 1024);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds) + CMSG_SPACE(sizeof(ucred)));
  iovec iov{text.data(), text.size() - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  const ssize_t n =
      RetryEintr([&] { return ::recvmsg(socket_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
  if (n < 0) {
    if (errno == EAGAIN) return false;
    return Status::FromErrno("recvmsg on the notify socket");
  }
  Message m;
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) {
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    } else if (c->cmsg_type == SCM_CREDENTIALS) {
      ucred cred;
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      m.sender = cred.pid;
    }
  }
  m.text.assign(text.data(), static_cast<size_t>(n));
  m.fds = fds.size();
  m.accepted = m.sender != 0 && m.sender == main_pid_;
  messages_.push_back(m);
  if (!m.accepted) return true;  // NotifyAccess=main: dropped, fds closed
  for (const auto& l : Lines(m.text)) {
    if (l == line) *matched = true;
  }
  Apply(m.text, std::move(fds));
  DropHungUp();
  return true;
}

void FakeServiceManager::Apply(const std::string& text, std::vector<UniqueFd> fds) {
  bool fdstore = false, remove = false, poll = true;
  std::string name = "stored";
  bool have_name = false;
  for (const auto& l : Lines(text)) {
    if (l == "READY=1") ready_ = true;
    if (l == "STOPPING=1") stopping_ = true;
    if (l.rfind("STATUS=", 0) == 0) status_ = l.substr(7);
    if (l == "FDSTORE=1") fdstore = true;
    if (l == "FDSTOREREMOVE=1") remove = true;
    if (l == "FDPOLL=0") poll = false;
    if (l.rfind("FDNAME=", 0) == 0) {
      const std::string v = l.substr(7);
      // systemd ignores an invalid name (and keeps "stored").
      if (FdNameValid(v)) {
        name = v;
        have_name = true;
      }
    }
  }
  if (remove && have_name) {
    std::erase_if(store_, [&](const StoredFd& s) { return s.name == name; });
  }
  if (!fdstore) return;  // fds without FDSTORE=1 close with `fds`
  for (auto& fd : fds) AddToStore(name, std::move(fd), poll);
}

void FakeServiceManager::AddToStore(const std::string& name, UniqueFd fd, bool poll) {
  if (store_.size() >= max_) {
    ++rejected_;  // EXFULL in systemd: the fd is closed
    return;
  }
  for (const auto& s : store_) {
    if (SameFile(s.fd.get(), fd.get())) return;  // already stored; keeps its name
  }
  store_.insert(store_.begin(), StoredFd{name, std::move(fd), poll});
}

void FakeServiceManager::DropHungUp() {
  std::erase_if(store_, [](const StoredFd& s) {
    if (!s.poll) return false;
    pollfd p{s.fd.get(), 0, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)) != 0;
  });
}

}  // namespace localvol::testing
