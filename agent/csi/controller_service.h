// csi.v1.Controller for localvold: provisioning on this node's disks, through
// the VolumeManager (agent/volume_manager.h), which holds every rule about
// sizes, placement, limits and deletion; this class only translates.
//
// Errors (the CSI specification's codes; every message names the volume):
//   INVALID_ARGUMENT    a missing or malformed field, a non-DNS-1123 name, an
//                       unknown or malformed parameter, block access, a
//                       multi-node access mode, a content source
//   OUT_OF_RANGE        a capacity below 1Mi
//   ALREADY_EXISTS      CreateVolume of an existing name outside its range,
//                       with other parameters, or made with localvolctl
//   RESOURCE_EXHAUSTED  no room on this node, or a requisite topology that
//                       excludes it
//   FAILED_PRECONDITION DeleteVolume of a volume still published, or not
//                       made through CSI; a volume not served
//   NOT_FOUND           no such volume (ModifyVolume, Validate...)
//   ABORTED             another operation on the volume is in progress, or a
//                       starting_token this driver did not issue
// Thread-safe: gRPC's threads call it; one operation per volume at a time.
#pragma once

#include "agent/csi/csi_common.h"

namespace localvol::agent::csi {

class ControllerService final : public pb::Controller::Service {
 public:
  // `ctx` is borrowed, has a VolumeManager, and outlives the service.
  explicit ControllerService(const Context* ctx) : ctx_(ctx) {}

  grpc::Status CreateVolume(grpc::ServerContext*, const pb::CreateVolumeRequest* req,
                            pb::CreateVolumeResponse* out) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const pb::DeleteVolumeRequest* req,
                            pb::DeleteVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*,
                                          const pb::ValidateVolumeCapabilitiesRequest* req,
                                          pb::ValidateVolumeCapabilitiesResponse* out) override;
  grpc::Status ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest* req,
                           pb::ListVolumesResponse* out) override;
  grpc::Status GetCapacity(grpc::ServerContext*, const pb::GetCapacityRequest* req,
                           pb::GetCapacityResponse* out) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*,
                                         const pb::ControllerGetCapabilitiesRequest*,
                                         pb::ControllerGetCapabilitiesResponse* out) override;
  grpc::Status ControllerModifyVolume(grpc::ServerContext*,
                                      const pb::ControllerModifyVolumeRequest* req,
                                      pb::ControllerModifyVolumeResponse*) override;

  // The capabilities ControllerGetCapabilities returns: CREATE_DELETE_VOLUME,
  // GET_CAPACITY, LIST_VOLUMES, MODIFY_VOLUME (no EXPAND_VOLUME: expansion
  // happens on the node).
  static void Capabilities(pb::ControllerGetCapabilitiesResponse* out);

 private:
  const Context* const ctx_;
};

}  // namespace localvol::agent::csi
