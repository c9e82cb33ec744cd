// ApiServer: the localvol.v1 gRPC service (agent/proto/localvol.proto) on a
// Unix socket, backed by a VolumeManager.
//
// The socket is made as UnixSocketServer makes it (mode 0600, root).
//
// Threading: gRPC's own thread pool runs the handlers; each handler calls the
// thread-safe VolumeManager and returns. Start()/Shutdown() run on the
// daemon's main thread. After Shutdown() returns, no handler runs and new
// calls fail with UNAVAILABLE.
#pragma once

#include <memory>
#include <string>

#include "agent/unix_socket_server.h"
#include "agent/volume_manager.h"
#include "base/status.h"

namespace grpc {
class Status;
}  // namespace grpc

namespace localvol::agent {

// The one conversion from a VolumeManager errno to a gRPC status code:
// EINVAL InvalidArgument, ENOENT NotFound, EEXIST AlreadyExists, ENOSPC
// ResourceExhausted, EBUSY FailedPrecondition, ESHUTDOWN Unavailable,
// anything else Internal. The message is the Status context.
grpc::Status ToGrpcStatus(const Status& status);
// ToGrpcStatus, logged once by the `component` logger: a refusal at warn, an
// INTERNAL failure at error. `what` says what was being done ("create volume
// x").
grpc::Status ToGrpcStatusLogged(const std::string& component, const std::string& what,
                                const Status& status);

class ApiServer {
 public:
  // Fails (EADDRINUSE, EEXIST) if Start() would: lets the daemon refuse to
  // start before it touches any disk.
  static Status CheckSocketFree(const std::string& socket_path);

  // `volumes` is borrowed and must outlive the server. Fails (EADDRINUSE) if
  // another process serves `socket_path`, or when the socket cannot be made.
  static Result<std::unique_ptr<ApiServer>> Start(const std::string& socket_path,
                                                  VolumeManager* volumes);
  // Calls Shutdown().
  ~ApiServer();

  // Stops accepting calls, lets calls in flight finish (at most 30 s), and
  // removes the socket file. Idempotent.
  void Shutdown();

  const std::string& socket_path() const;

 private:
  class Service;
  ApiServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<UnixSocketServer> server_;
};

}  // namespace localvol::agent
