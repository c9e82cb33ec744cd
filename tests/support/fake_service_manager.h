// FakeServiceManager: the service manager's side of sd_notify and the file
// descriptor store, played faithfully for tests, as systemd 252 (Debian 12)
// plays it for a Type=notify service with FileDescriptorStoreMax=N and
// NotifyAccess=main. This machine has no systemd as PID 1.
//
//  * The notify socket is an AF_UNIX SOCK_DGRAM socket at a path in a private
//    temporary directory, with SO_PASSCRED, so each datagram carries its
//    sender's pid (SCM_CREDENTIALS); messages from any process but the main
//    one (the last started) are ignored, as NotifyAccess=main does.
//  * READY=1, STOPPING=1 and STATUS= are recorded.
//  * FDSTORE=1 adds the attached fds under FDNAME= ("stored" when missing or
//    invalid; an empty FDNAME= is valid and kept). An fd whose open file is already stored is
//    dropped (same_fd: kcmp KCMP_FILE), the stored entry keeps its name. When the store holds
//    fd_store_max fds, further fds are closed and counted as rejected.
//    FDPOLL=0 keeps the fd even when it reports POLLHUP/POLLERR; otherwise
//    such an fd is dropped, as systemd drops it when epoll reports it (here
//    checked whenever datagrams are processed and before a start).
//  * FDSTOREREMOVE=1 closes every stored fd named FDNAME=.
//  * Fds sent without FDSTORE=1 are closed.
//  * Start() runs the next process like systemd runs ExecStart=: the stored
//    fds at 3.. in store order, LISTEN_PID set to the child's own pid (written
//    between fork and exec), LISTEN_FDS and LISTEN_FDNAMES, NOTIFY_SOCKET.
//    The store order is systemd 252's: newest first (it prepends). A service
//    must match fds by name, never by position.
//
// Not thread-safe: one test thread drives it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {

class FakeServiceManager {
 public:
  struct StoredFd {
    std::string name;
    UniqueFd fd;
    bool poll = true;
  };
  struct Message {
    pid_t sender = 0;
    std::string text;
    size_t fds = 0;         // how many fds were attached
    bool accepted = false;  // false: not from the main process
  };

  static Result<FakeServiceManager> Create(size_t fd_store_max);

  FakeServiceManager() = default;
  FakeServiceManager(FakeServiceManager&&) = default;
  FakeServiceManager& operator=(FakeServiceManager&&) = default;

  // The NOTIFY_SOCKET value children get.
  const std::string& notify_socket() const { return socket_path_; }

  // Starts argv as the service's main process (see the header comment);
  // stdout and stderr go to `log_path`. The store keeps its fds.
  Result<Subprocess> Start(const std::vector<std::string>& argv, const std::string& log_path);

  // Processes datagrams until one from the main process contains the line
  // `line` (e.g. "READY=1"), or fails with ETIMEDOUT after `timeout`.
  Status WaitFor(const std::string& line, std::chrono::milliseconds timeout);
  // Processes every datagram already queued, then drops stored fds that hang
  // up (those stored without FDPOLL=0).
  Status Drain();

  const std::vector<StoredFd>& store() const { return store_; }
  // Names in store order, ':'-joined, as LISTEN_FDNAMES would carry them.
  std::string StoreNames() const;
  size_t rejected() const { return rejected_; }
  const std::vector<Message>& messages() const { return messages_; }
  bool ready() const { return ready_; }
  bool stopping() const { return stopping_; }
  const std::string& status() const { return status_; }

 private:
  // Receives one datagram if one is queued within `timeout`; returns whether
  // one was processed, and whether it contained `line`.
  Result<bool> ReceiveOne(std::chrono::milliseconds timeout, const std::string& line,
                          bool* matched);
  void Apply(const std::string& text, std::vector<UniqueFd> fds);
  void AddToStore(const std::string& name, UniqueFd fd, bool poll);
  void DropHungUp();

  TempDir dir_;
  std::string socket_path_;
  UniqueFd socket_;
  size_t max_ = 0;
  pid_t main_pid_ = 0;
  std::vector<StoredFd> store_;
  size_t rejected_ = 0;
  std::vector<Message> messages_;
  bool ready_ = false;
  bool stopping_ = false;
  std::string status_;
};

}  // namespace localvol::testing
