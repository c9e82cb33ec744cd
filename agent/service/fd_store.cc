#include "agent/service/fd_store.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>

namespace localvol::service {
namespace {

Status CheckName(std::string_view name) {
  if (IsValidFdName(name)) return Status::Ok();
  return Status::Error(EINVAL, "fd store name \"" + std::string(name) +
                                   "\" is invalid: use 1 to 255 printable ASCII "
                                   "characters without ':'");
}

// Sends `state` with `fds` attached. sd_pid_notify_with_fds returns 0 when
// NOTIFY_SOCKET is unset, which would read as success; we check first so the
// caller learns that nothing keeps its fds.
Status Send(const std::string& state, std::span<const int> fds) {
  if (std::getenv("NOTIFY_SOCKET") == nullptr) {
    return Status::Error(ENOTCONN,
                         "no service manager fd store: NOTIFY_SOCKET is not set (run under "
                         "systemd with FileDescriptorStoreMax= to keep fds across restarts)");
  }
  const int r =
      sd_pid_notify_with_fds(0, 0, state.c_str(), fds.data(), static_cast<unsigned>(fds.size()));
  if (r < 0) return Status::Error(-r, "sd_notify to the service manager");
  if (r == 0) return Status::Error(ENOTCONN, "sd_notify: NOTIFY_SOCKET vanished");
  return Status::Ok();
}

}  // namespace

bool IsValidFdName(std::string_view name) {
  if (name.empty() || name.size() > kFdNameMax) return false;
  for (char c : name) {
    if (c < 0x20 || c > 0x7e || c == ':') return false;
  }
  return true;
}

std::string StoreMessage(std::string_view name, bool poll) {
  std::string msg = "FDSTORE=1\nFDNAME=" + std::string(name);
  if (!poll) msg += "\nFDPOLL=0";
  return msg;
}

std::string RemoveMessage(std::string_view name) {
  return "FDSTOREREMOVE=1\nFDNAME=" + std::string(name);
}

Status StoreFds(std::string_view name, std::span<const int> fds, bool poll) {
  if (Status st = CheckName(name); !st.ok()) return st;
  if (fds.empty()) return Status::Error(EINVAL, "fd store \"" + std::string(name) + "\": no fds");
  for (int fd : fds) {
    if (fd < 0) return Status::Error(EBADF, "fd store \"" + std::string(name) + "\": invalid fd");
  }
  return Send(StoreMessage(name, poll), fds);
}

Status RemoveStoredFds(std::string_view name) {
  if (Status st = CheckName(name); !st.ok()) return st;
  return Send(RemoveMessage(name), {});
}

}  // namespace localvol::service
