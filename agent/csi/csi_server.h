// CsiServer: localvold's CSI driver (driver localvol.io, CSI v1.12) on its own
// Unix socket, next to the localvol.v1 API.
//
//   * Start(): Identity, Controller and Node for this node's volumes, over
//     the daemon's VolumeManager. The socket (config key csi_socket, default
//     /var/lib/kubelet/plugins/localvol.io/csi.sock) is made as
//     UnixSocketServer makes it: mode 0600, root, its directory created.
//   * StartControllerOnly(): Identity, ControllerGetCapabilities with no
//     capability and NodeGetCapabilities (EXPAND_VOLUME among them) only
//     (`localvold --csi-controller-only`): the endpoint the
//     central csi-resizer needs, which then takes its trivial resizer (it
//     updates the PV; kubelet calls NodeExpandVolume on the owning node) and
//     never sends ControllerModifyVolume, which only the node's agent could
//     serve. Every other RPC answers UNIMPLEMENTED. It touches no disk.
//
// Threading: gRPC's thread pool runs the handlers; Start()/Shutdown() run on
// the daemon's main thread. One VolumeLocks instance serialises operations
// per volume across the Controller and Node services.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"

namespace localvol::agent {
class UnixSocketServer;
class VolumeManager;
}  // namespace localvol::agent

namespace localvol::agent::csi {

// The node name: `configured` (the config key node_name), else $NODE_NAME,
// else the host name. Fails with EINVAL when the chosen one is not a valid
// topology value (agent/config.h ValidateNodeName), naming where it came from.
Result<std::string> ResolveNodeName(const std::string& configured);

class CsiServer {
 public:
  // `volumes` is borrowed and must outlive the server. Fails as
  // UnixSocketServer::Start fails.
  static Result<std::unique_ptr<CsiServer>> Start(const std::string& socket_path,
                                                  VolumeManager* volumes,
                                                  const std::string& node_name);
  static Result<std::unique_ptr<CsiServer>> StartControllerOnly(const std::string& socket_path);
  // Calls Shutdown().
  ~CsiServer();

  // Stops taking calls, lets calls in flight finish, removes the socket.
  // Idempotent.
  void Shutdown();

 private:
  struct Services;
  CsiServer();
  std::unique_ptr<Services> services_;
  std::unique_ptr<UnixSocketServer> server_;
};

// `localvold --csi-controller-only [--csi-socket PATH]`: serves
// StartControllerOnly() until SIGTERM or SIGINT (which the caller has
// blocked in every thread), then exits 0; 1 if it cannot serve.
int RunControllerOnly(const std::string& socket_path);

}  // namespace localvol::agent::csi
