#include "agent/csi/controller_service.h"

#include "agent/volume_manager.h"
#include "base/logging.h"
#include "base/size.h"

namespace localvol::agent::csi {
namespace {

using Code = grpc::StatusCode;

void Describe(const VolumeInfo& v, const std::string& node, pb::Volume* out) {
  out->set_volume_id(v.name);
  out->set_capacity_bytes(static_cast<int64_t>(v.capacity_bytes));
  SetTopology(node, out->add_accessible_topology());
}

// The size CreateVolume asks for, and the range an existing volume must fit.
struct SizeRequest {
  uint64_t required = 0;  // 0: none
  uint64_t limit = 0;     // 0: none
  uint64_t chosen = 0;    // what a new volume gets
  bool Fits(uint64_t capacity) const {
    return capacity >= required && (limit == 0 || capacity <= limit);
  }
  std::string Describe() const {
    if (required != 0 && limit != 0)
      return "between " + FormatSize(required) + " and " + FormatSize(limit);
    if (required != 0) return "at least " + FormatSize(required);
    if (limit != 0) return "at most " + FormatSize(limit);
    return "of any size";
  }
};

// No capacity_range: the default size. Only limit_bytes: the default, capped
// at the limit. required_bytes: exactly that.
grpc::Status ParseSize(const pb::CreateVolumeRequest& req, SizeRequest* out) {
  const std::string& name = req.name();
  if (!req.has_capacity_range()) {
    out->chosen = kDefaultVolumeBytes;
    return grpc::Status::OK;
  }
  const auto& r = req.capacity_range();
  if (r.required_bytes() < 0 || r.limit_bytes() < 0) {
    return Refuse(Code::INVALID_ARGUMENT,
                  "volume " + name + ": capacity_range must not be negative");
  }
  out->required = static_cast<uint64_t>(r.required_bytes());
  out->limit = static_cast<uint64_t>(r.limit_bytes());
  if (out->required == 0 && out->limit == 0) {
    return Refuse(Code::INVALID_ARGUMENT,
                  "volume " + name +
                      ": capacity_range has neither required_bytes "
                      "nor limit_bytes; give the size (the PVC's storage request)");
  }
  if (out->limit != 0 && out->required > out->limit) {
    return Refuse(Code::INVALID_ARGUMENT,
                  "volume " + name + ": required_bytes " + std::to_string(out->required) +
                      " is above limit_bytes " + std::to_string(out->limit));
  }
  out->chosen = out->required != 0 ? out->required : std::min(kDefaultVolumeBytes, out->limit);
  if (out->chosen < kMinVolumeCapacity) {
    return Refuse(Code::OUT_OF_RANGE, "volume " + name + ": " + FormatSize(out->chosen) +
                                          " is too small; a localvol volume has at least 1Mi");
  }
  return grpc::Status::OK;
}

}  // namespace

void ControllerService::Capabilities(pb::ControllerGetCapabilitiesResponse* out) {
  using Rpc = pb::ControllerServiceCapability::RPC;
  for (auto type :
       {Rpc::CREATE_DELETE_VOLUME, Rpc::GET_CAPACITY, Rpc::LIST_VOLUMES, Rpc::MODIFY_VOLUME}) {
    out->add_capabilities()->mutable_rpc()->set_type(type);
  }
}

grpc::Status ControllerService::ControllerGetCapabilities(
    grpc::ServerContext*, const pb::ControllerGetCapabilitiesRequest*,
    pb::ControllerGetCapabilitiesResponse* out) {
  Capabilities(out);
  return grpc::Status::OK;
}

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*,
                                             const pb::CreateVolumeRequest* req,
                                             pb::CreateVolumeResponse* out) {
  const std::string& name = req->name();
  if (name.empty())
    return Refuse(Code::INVALID_ARGUMENT,
                  "CreateVolume: name is missing; give the volume (PV) name");
  if (Status st = ValidateVolumeName(name); !st.ok())
    return Refuse(Code::INVALID_ARGUMENT, st.context());
  if (req->volume_capabilities().empty()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + name + ": volume_capabilities is missing");
  }
  for (const auto& cap : req->volume_capabilities()) {
    if (grpc::Status g = CheckCapability(cap); !g.ok()) return g;
  }
  if (req->has_volume_content_source()) {
    return Refuse(Code::INVALID_ARGUMENT,
                  "volume " + name +
                      ": creating a volume from a snapshot or another "
                      "volume is not supported; remove the PVC's dataSource");
  }
  auto params = ParseVolumeParameters(ToMap(req->parameters()), ToMap(req->mutable_parameters()));
  if (!params.ok())
    return Refuse(Code::INVALID_ARGUMENT, "volume " + name + ": " + params.status().context());
  SizeRequest size;
  if (grpc::Status g = ParseSize(*req, &size); !g.ok()) return g;
  if (req->has_accessibility_requirements()) {
    const auto& requisite = req->accessibility_requirements().requisite();
    bool here = requisite.empty();
    for (const auto& t : requisite) here |= IsThisNode(t, ctx_->node_name);
    if (!here) {
      return Refuse(Code::RESOURCE_EXHAUSTED,
                    "volume " + name + ": the requisite topology does not include this node (" +
                        std::string(kTopologyKey) + "=" + ctx_->node_name +
                        "); this agent provisions only on its own node");
    }
  }

  auto held = ctx_->locks->TryLock(name);
  if (!held) return Busy(name);
  CreateVolumeParams p;
  p.name = name;
  p.capacity_bytes = size.chosen;
  p.inode_limit = params->inode_limit;
  p.disk = params->disk;
  p.io_limits = params->io_limits;
  p.csi = true;
  p.pvc = params->pvc;
  p.read_passthrough = params->read_passthrough;
  if (auto existing = ctx_->volumes->Get(name); existing.ok()) {
    // Idempotent: the existing volume answers if its size is in the range;
    // the VolumeManager then checks the other parameters against it.
    if (!existing->csi) {
      // Never hand an operator's volume, and its data, to a new claim.
      return Refuse(Code::ALREADY_EXISTS, "volume " + name +
                                              " already exists and was made with localvolctl, "
                                              "not through CSI; rename or delete it");
    }
    if (!size.Fits(existing->capacity_bytes)) {
      return Refuse(Code::ALREADY_EXISTS, "volume " + name + " already exists with " +
                                              FormatSize(existing->capacity_bytes) + ", not " +
                                              size.Describe() +
                                              "; choose another name or delete it first");
    }
    p.capacity_bytes = existing->capacity_bytes;
  }
  auto v = ctx_->volumes->Create(p);
  if (!v.ok()) {
    const std::string what = "volume " + name + ": ";
    switch (v.err()) {
      case ENOENT:  // the `disk` parameter names no disk
        return Refuse(Code::INVALID_ARGUMENT, what + "parameter disk: " + v.status().context());
      case EBUSY:  // no disk can serve volumes: another node may
        return Refuse(Code::RESOURCE_EXHAUSTED, what + v.status().context());
      default:
        return Fail("create volume " + name, v.status());
    }
  }
  Describe(*v, ctx_->node_name, out->mutable_volume());
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*,
                                             const pb::DeleteVolumeRequest* req,
                                             pb::DeleteVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return Refuse(Code::INVALID_ARGUMENT, "DeleteVolume: volume_id is missing");
  // An id that cannot name a volume names none: deleting it is done.
  if (!ValidateVolumeName(id).ok()) return grpc::Status::OK;
  auto held = ctx_->locks->TryLock(id);
  if (!held) return Busy(id);
  auto v = ctx_->volumes->Get(id);
  if (!v.ok())
    return v.err() == ENOENT ? grpc::Status::OK : Fail("delete volume " + id, v.status());
  if (!v->csi) {
    return Refuse(Code::FAILED_PRECONDITION,
                  "volume " + id +
                      " was not created through CSI (localvolctl made it); delete it with "
                      "'localvolctl volume delete " +
                      id + "' if it is really unused");
  }
  if (!v->publish_targets.empty()) {
    std::string list;
    for (const auto& t : v->publish_targets) list += (list.empty() ? "" : ", ") + t;
    return Refuse(Code::FAILED_PRECONDITION,
                  "volume " + id + " is still published at " + list +
                      "; unpublish it (stop the pods using it) and retry");
  }
  Status s = ctx_->volumes->Delete(id);
  if (!s.ok() && s.err() != ENOENT) return Fail("delete volume " + id, s);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*, const pb::ValidateVolumeCapabilitiesRequest* req,
    pb::ValidateVolumeCapabilitiesResponse* out) {
  const std::string& id = req->volume_id();
  if (id.empty())
    return Refuse(Code::INVALID_ARGUMENT, "ValidateVolumeCapabilities: volume_id is missing");
  if (req->volume_capabilities().empty()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": volume_capabilities is missing");
  }
  VolumeInfo v;
  if (grpc::Status g = FindVolume(*ctx_, id, "validate volume " + id, &v); !g.ok()) return g;
  for (const auto& cap : req->volume_capabilities()) {
    if (grpc::Status g = CheckCapability(cap); !g.ok()) {
      out->set_message(g.error_message());
      return grpc::Status::OK;
    }
  }
  if (auto p = ParseVolumeParameters(ToMap(req->parameters()), ToMap(req->mutable_parameters()));
      !p.ok()) {
    out->set_message(p.status().context());
    return grpc::Status::OK;
  }
  auto* c = out->mutable_confirmed();
  *c->mutable_volume_context() = req->volume_context();
  *c->mutable_volume_capabilities() = req->volume_capabilities();
  *c->mutable_parameters() = req->parameters();
  *c->mutable_mutable_parameters() = req->mutable_parameters();
  return grpc::Status::OK;
}

grpc::Status ControllerService::ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest* req,
                                            pb::ListVolumesResponse* out) {
  if (req->max_entries() < 0)
    return Refuse(Code::INVALID_ARGUMENT, "ListVolumes: max_entries is negative");
  const std::string& token = req->starting_token();
  // The token is the name of the first volume of the next page, so a page
  // survives volumes created or deleted in between.
  if (!token.empty() && !ValidateVolumeName(token).ok()) {
    return Refuse(Code::ABORTED, "ListVolumes: starting_token '" + token +
                                     "' was not issued by this driver; "
                                     "list again from the start");
  }
  const size_t max = req->max_entries() == 0 ? SIZE_MAX : static_cast<size_t>(req->max_entries());
  size_t n = 0;
  for (const auto& v : ctx_->volumes->List()) {  // sorted by name
    if (!v.csi || v.name < token) continue;
    if (n == max) {
      out->set_next_token(v.name);
      break;
    }
    Describe(v, ctx_->node_name, out->add_entries()->mutable_volume());
    ++n;
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::GetCapacity(grpc::ServerContext*, const pb::GetCapacityRequest* req,
                                            pb::GetCapacityResponse* out) {
  out->set_available_capacity(0);
  out->mutable_maximum_volume_size()->set_value(0);
  out->mutable_minimum_volume_size()->set_value(static_cast<int64_t>(kMinVolumeCapacity));
  // Another node's segment, or capabilities this driver cannot serve: none.
  if (req->has_accessible_topology() && !IsThisNode(req->accessible_topology(), ctx_->node_name)) {
    return grpc::Status::OK;
  }
  for (const auto& cap : req->volume_capabilities()) {
    if (!CheckCapability(cap).ok()) return grpc::Status::OK;
  }
  auto params = ParseVolumeParameters(ToMap(req->parameters()), {});
  if (!params.ok())
    return Refuse(Code::INVALID_ARGUMENT, "GetCapacity: " + params.status().context());
  // A volume never spans disks: the largest volume is the largest free space
  // of one disk; the total is what all of them can still provision.
  uint64_t total = 0, largest = 0;
  for (const auto& d : ctx_->volumes->Disks()) {
    if (d.state != "ready") continue;
    if (!params->disk.empty() && d.id != params->disk && d.device != params->disk &&
        d.id.rfind(params->disk, 0) != 0) {
      continue;
    }
    total += d.free_bytes;
    largest = std::max(largest, d.free_bytes);
  }
  out->set_available_capacity(static_cast<int64_t>(total));
  out->mutable_maximum_volume_size()->set_value(static_cast<int64_t>(largest));
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerModifyVolume(grpc::ServerContext*,
                                                       const pb::ControllerModifyVolumeRequest* req,
                                                       pb::ControllerModifyVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty())
    return Refuse(Code::INVALID_ARGUMENT, "ControllerModifyVolume: volume_id is missing");
  auto held = ctx_->locks->TryLock(id);
  if (!held) return Busy(id);
  VolumeInfo v;
  if (grpc::Status g = FindVolume(*ctx_, id, "modify volume " + id, &v); !g.ok()) return g;
  iopath::IoLimits limits = v.io_limits;
  if (Status st = ApplyMutableParameters(ToMap(req->mutable_parameters()), &limits); !st.ok()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": " + st.context());
  }
  // The same path as the localvol.v1 SetVolumeLimits.
  auto set = ctx_->volumes->SetIoLimits(id, limits);
  if (!set.ok()) return Fail("modify volume " + id, set.status());
  return grpc::Status::OK;
}

}  // namespace localvol::agent::csi
