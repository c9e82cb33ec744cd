#include "agent/csi/identity_service.h"

#include "agent/volume_manager.h"
#include "base/logging.h"

namespace localvol::agent::csi {

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const pb::GetPluginInfoRequest*,
                                            pb::GetPluginInfoResponse* out) {
  out->set_name(kDriverName);
  out->set_vendor_version(LOCALVOL_VERSION);
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*,
                                                    const pb::GetPluginCapabilitiesRequest*,
                                                    pb::GetPluginCapabilitiesResponse* out) {
  using Service = pb::PluginCapability::Service;
  for (auto type : {Service::CONTROLLER_SERVICE, Service::VOLUME_ACCESSIBILITY_CONSTRAINTS}) {
    out->add_capabilities()->mutable_service()->set_type(type);
  }
  out->add_capabilities()->mutable_volume_expansion()->set_type(
      pb::PluginCapability::VolumeExpansion::ONLINE);
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const pb::ProbeRequest*,
                                    pb::ProbeResponse* out) {
  bool ready = true;
  if (ctx_->volumes != nullptr) {
    ready = false;
    for (const auto& d : ctx_->volumes->Disks()) ready |= d.state == "ready";
    if (!ready)
      GetLogger("csi")->debug("Probe: not ready: no disk is ready (see 'localvolctl disk list')");
  }
  out->mutable_ready()->set_value(ready);
  return grpc::Status::OK;
}

}  // namespace localvol::agent::csi
