// A tiny service for service_fd_store_test: stores fds through the agent's
// fd store library and takes them back at the next start.
//
//   store NAME=TEXT... [--dup NAME] [--remove NAME] [--pipe[-nopoll] NAME]
//       stores, for each NAME=TEXT, a memfd holding TEXT under NAME (FDPOLL=0);
//       --pipe stores a pipe's read end under NAME (polled; --pipe-nopoll with
//       FDPOLL=0) and keeps the write end until exit, so it then hangs up;
//       --dup stores another fd of the first memfd's open file under NAME;
//       --remove sends FDSTOREREMOVE=1 for NAME; then READY=1, exit 0.
//   receive
//       takes the passed fds (TakeListenFds) and prints, per fd,
//       "fd N NAME=TEXT cloexec=0|1", then "listen_env=unset" if LISTEN_*
//       are gone from the environment; then READY=1, exit 0.
// Any failure prints the error on stderr and exits 1.
#include <fcntl.h>
#include <sys/mman.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/service/fd_store.h"
#include "agent/service/listen_fds.h"
#include "base/unique_fd.h"

namespace {

using localvol::Status;
using localvol::UniqueFd;

int Fail(const Status& st) {
  (void)std::fprintf(stderr, "%s\n", st.ToString().c_str());  // exiting 1 says it anyway
  return 1;
}

int Store(int argc, char** argv) {
  std::vector<UniqueFd> kept;     // memfds, in order
  std::vector<UniqueFd> writers;  // pipe write ends
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--pipe" || arg == "--pipe-nopoll") && i + 1 < argc) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return Fail(Status::FromErrno("pipe2"));
      UniqueFd r(p[0]), w(p[1]);
      const int fds[] = {r.get()};
      Status st = localvol::service::StoreFds(argv[++i], fds, arg == "--pipe");
      if (!st.ok()) return Fail(st);
      writers.push_back(std::move(w));  // closes at exit: the stored end then hangs up
      continue;
    }
    if ((arg == "--dup" || arg == "--remove") && i + 1 < argc) {
      const std::string name = argv[++i];
      if (arg == "--remove") {
        if (Status st = localvol::service::RemoveStoredFds(name); !st.ok()) return Fail(st);
        continue;
      }
      if (kept.empty()) return Fail(Status::Error(EINVAL, "--dup before any NAME=TEXT"));
      UniqueFd dup(::fcntl(kept.front().get(), F_DUPFD_CLOEXEC, 3));
      if (!dup.valid()) return Fail(Status::FromErrno("dup"));
      const int fds[] = {dup.get()};
      if (Status st = localvol::service::StoreFds(name, fds, false); !st.ok()) return Fail(st);
      continue;
    }
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) return Fail(Status::Error(EINVAL, "expected NAME=TEXT: " + arg));
    UniqueFd memfd(::memfd_create("fdstore-test", MFD_CLOEXEC));
    if (!memfd.valid()) return Fail(Status::FromErrno("memfd_create"));
    const std::string text = arg.substr(eq + 1);
    if (::write(memfd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return Fail(Status::FromErrno("write memfd"));
    }
    const int fds[] = {memfd.get()};
    if (Status st = localvol::service::StoreFds(arg.substr(0, eq), fds, false); !st.ok()) {
      return Fail(st);
    }
    kept.push_back(std::move(memfd));
  }
  sd_notify(0, "READY=1");
  return 0;
}

int Receive() {
  auto fds = localvol::service::TakeListenFds();
  if (!fds.ok()) return Fail(fds.status());
  for (const auto& f : *fds) {
    char buf[256] = {};
    const ssize_t n = ::pread(f.fd.get(), buf, sizeof buf - 1, 0);
    if (n < 0) return Fail(Status::FromErrno("pread " + f.name));
    const bool cloexec = (::fcntl(f.fd.get(), F_GETFD) & FD_CLOEXEC) != 0;
    std::printf("fd %d %s=%s cloexec=%d\n", f.fd.get(), f.name.c_str(), buf, cloexec ? 1 : 0);
  }
  if (!std::getenv("LISTEN_PID") && !std::getenv("LISTEN_FDS") && !std::getenv("LISTEN_FDNAMES")) {
    std::printf("listen_env=unset\n");
  }
  // The test reads what was received from stdout: a lost line must fail it.
  if (std::fflush(stdout) != 0) return Fail(Status::FromErrno("flush stdout"));
  sd_notify(0, "READY=1\nSTATUS=received");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "store") == 0) return Store(argc, argv);
  if (argc == 2 && std::strcmp(argv[1], "receive") == 0) return Receive();
  (void)std::fprintf(
      stderr, "usage: %s store NAME=TEXT... [--dup NAME] [--remove NAME] | receive\n", argv[0]);
  return 2;
}
