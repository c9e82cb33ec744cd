#include "agent/service/listen_fds.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <cstdlib>

#include "agent/service/fd_store.h"

namespace localvol::service {
namespace {

// Parses a whole decimal string into a non-negative value no larger than
// `max`; rejects signs, spaces and trailing text.
std::optional<long> ParseCount(const std::string& s, long max) {
  long v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v < 0 || v > max) return std::nullopt;
  return v;
}

std::vector<std::string> SplitNames(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t colon = s.find(':', start);
    out.push_back(s.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) return out;
    start = colon + 1;
  }
}

std::optional<std::string> Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

}  // namespace

Result<std::vector<ListenFd>> ParseListenFds(const ListenEnv& env, pid_t self, int first_fd) {
  std::vector<ListenFd> out;
  if (!env.pid && !env.fds) return out;
  if (!env.pid || !env.fds) {
    return Status::Error(EINVAL, std::string("LISTEN_PID and LISTEN_FDS must be set together; ") +
                                     (env.pid ? "LISTEN_FDS" : "LISTEN_PID") + " is missing");
  }
  const auto pid = ParseCount(*env.pid, INT_MAX);
  if (!pid || *pid == 0) {
    return Status::Error(EINVAL, "LISTEN_PID=\"" + *env.pid + "\" is not a pid");
  }
  if (*pid != self) {
    return Status::Error(EINVAL, "LISTEN_PID=" + *env.pid + " is not this process (pid " +
                                     std::to_string(self) + "): the fds are not ours");
  }
  const auto count = ParseCount(*env.fds, INT_MAX - first_fd);
  if (!count) return Status::Error(EINVAL, "LISTEN_FDS=\"" + *env.fds + "\" is not a count");

  // From here the fds are ours: own every one that is open, so that an error
  // below closes them all.
  Status failure;
  out.reserve(static_cast<size_t>(*count));
  for (int i = 0; i < *count; ++i) {
    const int fd = first_fd + i;
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) {
      if (failure.ok()) failure = Status::FromErrno("LISTEN_FDS fd " + std::to_string(fd));
      continue;
    }
    out.push_back({kUnknownFdName, UniqueFd(fd)});
    // The fds came to us across exec, so they lack FD_CLOEXEC; set it so that
    // no program we start inherits them.
    if ((flags & FD_CLOEXEC) == 0 && ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0 && failure.ok()) {
      failure = Status::FromErrno("set FD_CLOEXEC on LISTEN_FDS fd " + std::to_string(fd));
    }
  }
  if (!failure.ok()) return failure;
  if (env.names) {
    // An empty LISTEN_FDNAMES with no fds is the one empty case; otherwise
    // SplitNames yields one entry per ':'-separated field.
    std::vector<std::string> names =
        *count == 0 && env.names->empty() ? std::vector<std::string>{} : SplitNames(*env.names);
    if (names.size() != out.size()) {
      return Status::Error(EINVAL, "LISTEN_FDNAMES has " + std::to_string(names.size()) +
                                       " names for LISTEN_FDS=" + *env.fds);
    }
    for (size_t i = 0; i < names.size(); ++i) {
      if (!IsValidFdName(names[i])) {
        return Status::Error(EINVAL, "LISTEN_FDNAMES name " + std::to_string(i + 1) + " \"" +
                                         names[i] + "\" is invalid");
      }
      out[i].name = std::move(names[i]);
    }
  }
  return out;
}

Result<std::vector<ListenFd>> TakeListenFds() {
  const ListenEnv env{Env("LISTEN_PID"), Env("LISTEN_FDS"), Env("LISTEN_FDNAMES")};
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return ParseListenFds(env, ::getpid(), kListenFdsStart);
}

}  // namespace localvol::service
