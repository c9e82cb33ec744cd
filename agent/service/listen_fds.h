// Taking over the fds the service manager passed to this start.
//
// sd_listen_fds(3): the manager starts the service with the fds at
// SD_LISTEN_FDS_START (3) onwards and describes them in the environment:
//   LISTEN_PID      the pid they are meant for (the service's own pid),
//   LISTEN_FDS      how many there are,
//   LISTEN_FDNAMES  their names, ':'-separated, in fd order (optional).
// The fd store (fd_store.h) hands its fds back this way, under the names they
// were stored with.
//
// TakeListenFds reads and unsets these variables, so a child the service
// starts later neither inherits them nor mistakes the fds for its own. It
// edits the environment: call it at startup, before any thread starts.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"

namespace localvol::service {

// sd-daemon.h's SD_LISTEN_FDS_START: the first passed fd.
inline constexpr int kListenFdsStart = 3;

// The name sd_listen_fds_with_names reports when LISTEN_FDNAMES is not set.
inline constexpr const char kUnknownFdName[] = "unknown";

struct ListenFd {
  std::string name;
  UniqueFd fd;  // owned, O_CLOEXEC set
};

// The three variables as found; nullopt when unset.
struct ListenEnv {
  std::optional<std::string> pid;
  std::optional<std::string> fds;
  std::optional<std::string> names;
};

// Parses `env` for the process `self`, whose passed fds start at `first_fd`.
// Returns the fds in order with their names, owned and with O_CLOEXEC set;
// none when neither LISTEN_PID nor LISTEN_FDS is set (a plain start).
// Errors (EINVAL, or EBADF for an fd that is not open), with nothing owned or
// closed: LISTEN_PID or LISTEN_FDS missing, malformed, or LISTEN_PID not
// `self` (the fds are another process's). Errors once the count is known and
// LISTEN_PID is `self`: a name count that differs from LISTEN_FDS, an invalid
// name, or an fd that is not open; then every passed fd that is open is
// closed, so none leaks.
Result<std::vector<ListenFd>> ParseListenFds(const ListenEnv& env, pid_t self, int first_fd);

// ParseListenFds on this process's environment, getpid() and kListenFdsStart;
// unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in every case.
Result<std::vector<ListenFd>> TakeListenFds();

}  // namespace localvol::service
