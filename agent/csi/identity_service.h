// csi.v1.Identity for localvold: the driver's name and version, its plugin
// capabilities, and readiness. Thread-safe (gRPC's threads call it).
#pragma once

#include "agent/csi/csi_common.h"

namespace localvol::agent::csi {

class IdentityService final : public pb::Identity::Service {
 public:
  // `ctx` is borrowed and outlives the service.
  explicit IdentityService(const Context* ctx) : ctx_(ctx) {}

  // name localvol.io, vendor_version the project version.
  grpc::Status GetPluginInfo(grpc::ServerContext*, const pb::GetPluginInfoRequest*,
                             pb::GetPluginInfoResponse* out) override;
  // CONTROLLER_SERVICE, VOLUME_ACCESSIBILITY_CONSTRAINTS and ONLINE expansion.
  grpc::Status GetPluginCapabilities(grpc::ServerContext*, const pb::GetPluginCapabilitiesRequest*,
                                     pb::GetPluginCapabilitiesResponse* out) override;
  // ready = the agent serves at least one disk (always, in controller-only
  // mode, which serves no disk).
  grpc::Status Probe(grpc::ServerContext*, const pb::ProbeRequest*,
                     pb::ProbeResponse* out) override;

 private:
  const Context* const ctx_;
};

}  // namespace localvol::agent::csi
