#include "agent/csi/csi_server.h"

#include <signal.h>

#include "agent/csi/controller_service.h"
#include "agent/csi/identity_service.h"
#include "agent/csi/node_service.h"
#include "agent/unix_socket_server.h"
#include "base/logging.h"

namespace localvol::agent::csi {
namespace {

// The controller of --csi-controller-only: ControllerGetCapabilities with no
// capability (so the resizer never sends ControllerExpandVolume or
// ControllerModifyVolume); the generated base answers UNIMPLEMENTED to the rest.
class CapabilitiesOnlyController final : public pb::Controller::Service {
 public:
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*,
                                         const pb::ControllerGetCapabilitiesRequest*,
                                         pb::ControllerGetCapabilitiesResponse*) override {
    return grpc::Status::OK;
  }
};

// The node side of --csi-controller-only: NodeGetCapabilities alone. The
// csi-resizer picks its trivial (node-only) resizer only when the endpoint it
// talks to reports EXPAND_VOLUME there and not in ControllerGetCapabilities;
// every other node RPC is UNIMPLEMENTED, as no volume lives here.
class CapabilitiesOnlyNode final : public pb::Node::Service {
 public:
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const pb::NodeGetCapabilitiesRequest*,
                                   pb::NodeGetCapabilitiesResponse* out) override {
    FillNodeCapabilities(out);
    return grpc::Status::OK;
  }
};

}  // namespace

struct CsiServer::Services {
  VolumeLocks locks;
  Context ctx;
  std::unique_ptr<IdentityService> identity;
  std::unique_ptr<grpc::Service> controller;
  std::unique_ptr<grpc::Service> node;
};

CsiServer::CsiServer() : services_(std::make_unique<Services>()) {}

CsiServer::~CsiServer() { Shutdown(); }

void CsiServer::Shutdown() {
  if (server_) server_->Shutdown();
}

Result<std::unique_ptr<CsiServer>> CsiServer::Start(const std::string& socket_path,
                                                    VolumeManager* volumes,
                                                    const std::string& node_name) {
  std::unique_ptr<CsiServer> s(new CsiServer());
  Services& sv = *s->services_;
  sv.ctx = Context{volumes, node_name, &sv.locks};
  sv.identity = std::make_unique<IdentityService>(&sv.ctx);
  sv.controller = std::make_unique<ControllerService>(&sv.ctx);
  sv.node = std::make_unique<NodeService>(&sv.ctx);
  auto server = UnixSocketServer::Start(
      socket_path, {sv.identity.get(), sv.controller.get(), sv.node.get()},
      "CSI (driver " + std::string(kDriverName) + ", node " + node_name + ")");
  if (!server.ok()) return server.status();
  s->server_ = std::move(server).value();
  return s;
}

Result<std::unique_ptr<CsiServer>> CsiServer::StartControllerOnly(const std::string& socket_path) {
  std::unique_ptr<CsiServer> s(new CsiServer());
  Services& sv = *s->services_;
  sv.ctx = Context{nullptr, "", &sv.locks};
  sv.identity = std::make_unique<IdentityService>(&sv.ctx);
  sv.controller = std::make_unique<CapabilitiesOnlyController>();
  sv.node = std::make_unique<CapabilitiesOnlyNode>();
  auto server = UnixSocketServer::Start(
      socket_path, {sv.identity.get(), sv.controller.get(), sv.node.get()},
      "CSI controller capabilities only (driver " + std::string(kDriverName) + ")");
  if (!server.ok()) return server.status();
  s->server_ = std::move(server).value();
  return s;
}

int RunControllerOnly(const std::string& socket_path) {
  auto log = GetLogger("csi");
  auto server = CsiServer::StartControllerOnly(socket_path);
  if (!server.ok()) {
    log->critical("CSI: {}", server.status().ToString());
    return 1;
  }
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT}) sigaddset(&signals, s);
  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  log->info("{}: stopping", strsignal(sig));
  (*server)->Shutdown();
  return 0;
}

}  // namespace localvol::agent::csi
