// Running other programs and other identities from a test.
//
//  * RunCommand: fork/exec an argument vector (never a shell), capture stdout
//    and stderr, enforce a timeout.
//  * Subprocess: a move-only owner of a long-running child (a FUSE server, fio)
//    whose output goes to a log file; killed and reaped on destruction.
//  * RunInChild / AsUser: run a callable in a forked child, optionally after
//    dropping to another uid/gid/groups, and bring its trivially copyable
//    result back through a pipe. This is how a test checks exactly which errno
//    another user gets.
//
// A RunInChild/AsUser child keeps only stdin/stdout/stderr open: the callable
// opens what it needs itself.
// Forked children never return into GoogleTest: they _exit(), so no fixture
// destructor (which would unmount or delete things) runs twice. The callable
// must not use gtest assertions; return what you want to check instead.
// Thread-safety: functions are thread-compatible; objects are not shared.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "base/status.h"

namespace localvol::testing {

using namespace std::chrono_literals;

struct CommandResult {
  int exit_code = -1;   // valid when the child exited normally
  int term_signal = 0;  // non-zero when killed by a signal
  bool timed_out = false;
  std::string out;  // stdout
  std::string err;  // stderr
  bool ok() const { return exit_code == 0 && term_signal == 0 && !timed_out; }
  // "exit 1; stderr: ..." for assertion messages.
  std::string Summary() const;
};

// Runs argv[0] (looked up in PATH) with the given arguments. Kills the child
// with SIGKILL if it runs longer than `timeout`. Never fails: a spawn failure
// is reported as exit code 127 with the reason in `err`.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = 60s);

// One running child process. Move-only; the destructor SIGKILLs and reaps a
// child that is still running (only in the process that spawned it).
class Subprocess {
 public:
  // Spawns argv with stdin from /dev/null and stdout+stderr appended to
  // `log_path`. Fails if fork fails; exec failures show up as exit 127.
  // The child gets SIGKILL if the spawning thread dies (PR_SET_PDEATHSIG), so
  // a test killed by a timeout does not leave its server running.
  // `arrange_fds`, if given, runs in the child after stdin/stdout/stderr are
  // set up, instead of closing every other fd: it decides what the program
  // inherits (and may point `environ` at a prepared environment). It runs
  // between fork and exec, so it must be async-signal-safe: no allocation.
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv, const std::string& log_path,
                                  const std::function<void()>& arrange_fds = {});

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // A pidfd for the child (valid until this object dies), for race-free
  // signalling from other threads: pidfd_send_signal never hits a reused pid.
  int pidfd() const { return pidfd_; }
  bool running() const { return pid_ > 0 && !status_.has_value(); }
  // Sends `sig` if the child has not been reaped yet.
  void Signal(int sig);
  // Reaps the child if it has exited; returns its wait status, else nullopt.
  std::optional<int> TryWait();
  // Waits at most `timeout` for the child; returns its wait status or nullopt.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGKILL and reap. Returns the wait status.
  int Kill();

 private:
  void ClosePidfd();
  pid_t pid_ = -1;
  int pidfd_ = -1;
  pid_t owner_ = -1;
  std::optional<int> status_;
};

// "exit 3", "signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

struct Creds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};
inline const Creds kRoot{0, 0, {0}};
// Unprivileged identities used across the suite. 1000 exists in /etc/passwd;
// the others are bare numeric ids, which the kernel treats the same.
inline const Creds kUserA{1000, 1000, {1000}};
inline const Creds kUserB{1001, 1001, {1001}};
inline const Creds kUserC{1002, 1002, {1002}};

// Core of RunInChild/AsUser: forks; the child drops to `creds` (if given),
// runs `body(write_fd)`, and _exit()s. The parent collects everything written
// to the pipe into `payload`. Fails if the child could not drop privileges,
// crashed, or did not finish within `timeout` (it is then killed).
Status ForkAndCollect(const Creds* creds, const std::function<void(int)>& body,
                      std::string* payload, std::chrono::milliseconds timeout);

namespace internal {
template <typename T>
T RunForked(const Creds* creds, const std::function<T()>& fn, std::chrono::milliseconds timeout) {
  static_assert(std::is_trivially_copyable_v<T>, "AsUser results cross a pipe; use a POD");
  std::string payload;
  Status st = ForkAndCollect(
      creds,
      [&](int wfd) {
        T value = fn();
        const char* p = reinterpret_cast<const char*>(&value);
        size_t left = sizeof(T);
        while (left > 0) {
          ssize_t n = ::write(wfd, p, left);
          if (n <= 0) return;
          p += n;
          left -= n;
        }
      },
      &payload, timeout);
  T value{};
  if (!st.ok()) {
    ADD_FAILURE() << "child process failed: " << st.ToString();
    return value;
  }
  if (payload.size() != sizeof(T)) {
    ADD_FAILURE() << "child process returned " << payload.size() << " bytes, want " << sizeof(T);
    return value;
  }
  std::memcpy(&value, payload.data(), sizeof(T));
  return value;
}
}  // namespace internal

// Runs `fn` in a child process with the given identity and returns its result.
// A failure to fork, drop privileges, or a crash is reported with ADD_FAILURE
// and a value-initialized T is returned.
template <typename F>
auto AsUser(const Creds& creds, F fn, std::chrono::milliseconds timeout = 30s) {
  using T = std::invoke_result_t<F>;
  return internal::RunForked<T>(&creds, std::function<T()>(fn), timeout);
}

// Runs `fn` in a child process as the current identity (e.g. to take a lock
// as "another process").
template <typename F>
auto RunInChild(F fn, std::chrono::milliseconds timeout = 30s) {
  using T = std::invoke_result_t<F>;
  return internal::RunForked<T>(nullptr, std::function<T()>(fn), timeout);
}

}  // namespace localvol::testing
