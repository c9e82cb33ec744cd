// UnixSocketServer: a gRPC server on a Unix socket, for the localvol.v1 API
// (ApiServer) and the CSI services (agent/csi/) alike.
//
// The socket is created with mode 0600 (umask 077 while binding, then chmod),
// owned by the daemon's user (root), in a directory made if missing (0755).
// A stale socket file left by a crashed agent is replaced; a socket another
// live process answers on is not.
//
// Threading: gRPC's own thread pool runs the services' handlers. Start() and
// Shutdown() run on the daemon's main thread. After Shutdown() returns, no
// handler runs and new calls fail with UNAVAILABLE.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace localvol::agent {

class UnixSocketServer {
 public:
  // Fails (EADDRINUSE, EEXIST) if Start() would, so that the daemon can
  // refuse to start before it touches any disk.
  static Status CheckSocketFree(const std::string& socket_path);

  // Serves `services` (borrowed; they must outlive the server) on
  // `socket_path`. `what` names the API in logs ("localvol.v1", "CSI").
  // Fails (ENAMETOOLONG, EADDRINUSE, EEXIST, EADDRNOTAVAIL, ...) with nothing
  // left listening.
  static Result<std::unique_ptr<UnixSocketServer>> Start(
      const std::string& socket_path, const std::vector<grpc::Service*>& services,
      const std::string& what);
  // Calls Shutdown().
  ~UnixSocketServer();
  UnixSocketServer(const UnixSocketServer&) = delete;
  UnixSocketServer& operator=(const UnixSocketServer&) = delete;

  // Stops accepting calls, lets calls in flight finish (at most 30 s), and
  // removes the socket file. Idempotent.
  void Shutdown();

  const std::string& socket_path() const { return socket_path_; }

 private:
  UnixSocketServer() = default;
  std::string socket_path_;
  std::string what_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace localvol::agent
