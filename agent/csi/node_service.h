// csi.v1.Node for localvold: publishing a volume into a pod is a bind mount
// of <publish_dir>/<name> (the volume's own FUSE mount) onto the target path;
// there is no stage step. Stats come from the volume's quota through statfs
// of the target, as df in the pod sees them. Expansion grows the quota live
// through the VolumeManager.
//
// Errors (the CSI specification's codes; every message names the volume):
//   INVALID_ARGUMENT    a missing field, a relative target path, block access,
//                       a multi-node access mode, a mount flag a bind cannot
//                       take, a shrink
//   NOT_FOUND           no such volume on this node; a volume_path that is not
//                       where the volume is published
//   ALREADY_EXISTS      the volume is published at the target already, with
//                       the other read-only setting
//   FAILED_PRECONDITION the target is another mount or not a directory; the
//                       volume is not served; a single-writer volume is
//                       published elsewhere; a target not empty after unmount
//   OUT_OF_RANGE        no room on the volume's disk to expand it
//   ABORTED             another operation on the volume is in progress
// Thread-safe: gRPC's threads call it; one operation per volume at a time.
#pragma once

#include "agent/csi/csi_common.h"

namespace localvol::agent::csi {

// The node's capabilities: GET_VOLUME_STATS, EXPAND_VOLUME, VOLUME_CONDITION,
// SINGLE_NODE_MULTI_WRITER. The controller-only endpoint reports them too.
void FillNodeCapabilities(pb::NodeGetCapabilitiesResponse* out);

class NodeService final : public pb::Node::Service {
 public:
  // `ctx` is borrowed, has a VolumeManager, and outlives the service.
  explicit NodeService(const Context* ctx) : ctx_(ctx) {}

  grpc::Status NodePublishVolume(grpc::ServerContext*, const pb::NodePublishVolumeRequest* req,
                                 pb::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*, const pb::NodeUnpublishVolumeRequest* req,
                                   pb::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const pb::NodeGetVolumeStatsRequest* req,
                                  pb::NodeGetVolumeStatsResponse* out) override;
  grpc::Status NodeExpandVolume(grpc::ServerContext*, const pb::NodeExpandVolumeRequest* req,
                                pb::NodeExpandVolumeResponse* out) override;
  // GET_VOLUME_STATS, EXPAND_VOLUME, VOLUME_CONDITION, SINGLE_NODE_MULTI_WRITER.
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const pb::NodeGetCapabilitiesRequest*,
                                   pb::NodeGetCapabilitiesResponse* out) override;
  // The node name as node id, and its topology.
  grpc::Status NodeGetInfo(grpc::ServerContext*, const pb::NodeGetInfoRequest*,
                           pb::NodeGetInfoResponse* out) override;

 private:
  const Context* const ctx_;
};

}  // namespace localvol::agent::csi
