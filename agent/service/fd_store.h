// Storing fds in the service manager's file descriptor store.
//
// Under systemd (sd_notify(3), systemd.service(5) FileDescriptorStoreMax=) a
// service may hand fds to the manager with a "FDSTORE=1" notification; the
// manager keeps them while the unit is restarted and passes them to the next
// start as LISTEN_FDS (see listen_fds.h). Each fd carries a name (FDNAME=).
//
// Delivery is fire-and-forget: the manager does not acknowledge a datagram. A
// manager whose store is full, or that has FileDescriptorStoreMax=0, drops the
// fd and only logs it. So Ok() means "sent", never "kept"; the next start must
// check what it received.
//
// Functions read NOTIFY_SOCKET from the environment; they are thread-safe as
// long as no thread changes the environment.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

namespace localvol::service {

// The longest name the manager accepts (systemd's FDNAME_MAX).
inline constexpr size_t kFdNameMax = 255;

// True if `name` is a valid fd name: 1 to kFdNameMax characters, each
// printable ASCII (0x20..0x7e) and not ':' (LISTEN_FDNAMES separates names with
// ':'). systemd also accepts the empty name but stores it as "stored"; we
// refuse it so that every stored fd has a name we chose.
bool IsValidFdName(std::string_view name);

// Sends `fds` to the store, all under `name` ("FDSTORE=1", "FDNAME=name", and
// "FDPOLL=0" when `poll` is false: the manager then keeps the fd even when it
// reports EPOLLHUP or EPOLLERR, instead of dropping it). The fds stay open and
// owned by the caller; the manager receives its own copies.
// Errors: EINVAL for an invalid name or no fds; ENOTCONN when NOTIFY_SOCKET is
// not set (no service manager, hence no store); the send's errno otherwise.
Status StoreFds(std::string_view name, std::span<const int> fds, bool poll);

// Asks the manager to close every stored fd named `name` ("FDSTOREREMOVE=1").
// Same errors as StoreFds.
Status RemoveStoredFds(std::string_view name);

// The notification text StoreFds and RemoveStoredFds send; exposed for tests.
std::string StoreMessage(std::string_view name, bool poll);
std::string RemoveMessage(std::string_view name);

}  // namespace localvol::service
