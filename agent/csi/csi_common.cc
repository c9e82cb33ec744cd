#include "agent/csi/csi_common.h"

#include <unistd.h>

#include <cstdlib>

#include "agent/api_server.h"
#include "agent/config.h"
#include "agent/csi/csi_server.h"
#include "agent/volume_manager.h"
#include "base/logging.h"

namespace localvol::agent::csi {

Result<std::string> ResolveNodeName(const std::string& configured) {
  std::string name = configured, from = "node_name in the configuration";
  if (name.empty()) {
    if (const char* env = std::getenv("NODE_NAME"); env != nullptr && *env != '\0') {
      name = env;
      from = "the NODE_NAME environment variable";
    }
  }
  if (name.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) return Status::FromErrno("gethostname");
    name = host;
    from = "the host name";
  }
  if (Status st = ValidateNodeName(name); !st.ok()) {
    return Status::Error(EINVAL, "node name from " + from + ": " + st.context());
  }
  return name;
}

VolumeLocks::Held::~Held() {
  MutexLock lock(owner_->mu_);
  owner_->held_.erase(name_);
}

std::unique_ptr<VolumeLocks::Held> VolumeLocks::TryLock(const std::string& name) {
  MutexLock lock(mu_);
  if (!held_.insert(name).second) return nullptr;
  return std::unique_ptr<Held>(new Held(this, name));
}

grpc::Status Refuse(grpc::StatusCode code, const std::string& message) {
  GetLogger("csi")->warn("refused: {}", message);
  return grpc::Status(code, message);
}

grpc::Status Fail(const std::string& what, const Status& s) {
  return ToGrpcStatusLogged("csi", what, s);
}

grpc::Status FindVolume(const Context& ctx, const std::string& id, const std::string& what,
                        VolumeInfo* out) {
  auto v = ValidateVolumeName(id).ok() ? ctx.volumes->Get(id)
                                       : Result<VolumeInfo>(Status::Error(ENOENT, ""));
  if (v.ok()) {
    *out = std::move(v).value();
    return grpc::Status::OK;
  }
  if (v.err() == ENOENT)
    return Refuse(grpc::StatusCode::NOT_FOUND, "no volume " + id + " on node " + ctx.node_name);
  return Fail(what, v.status());
}

grpc::Status Busy(const std::string& volume) {
  return Refuse(grpc::StatusCode::ABORTED, "an operation on volume " + volume +
                                               " is already in progress; retry when it is done");
}

grpc::Status CheckCapability(const pb::VolumeCapability& cap) {
  if (cap.has_block()) {
    return Refuse(
        grpc::StatusCode::INVALID_ARGUMENT,
        "block access is not supported: localvol serves filesystems only (use volumeMode: "
        "Filesystem)");
  }
  if (!cap.has_mount()) {
    return Refuse(
        grpc::StatusCode::INVALID_ARGUMENT,
        "volume_capability has no access type; localvol serves mount (filesystem) access");
  }
  const std::string& fs = cap.mount().fs_type();
  if (!fs.empty() && fs != "localvol" && fs != "fuse.localvol") {
    return Refuse(
        grpc::StatusCode::INVALID_ARGUMENT,
        "fs_type '" + fs +
            "' is not supported: every localvol volume is its own FUSE "
            "filesystem (fuse.localvol); remove csi.storage.k8s.io/fstype from the StorageClass");
  }
  using Mode = pb::VolumeCapability::AccessMode;
  switch (cap.access_mode().mode()) {
    case Mode::SINGLE_NODE_WRITER:
    case Mode::SINGLE_NODE_READER_ONLY:
    case Mode::SINGLE_NODE_SINGLE_WRITER:
    case Mode::SINGLE_NODE_MULTI_WRITER:
      return grpc::Status::OK;
    case Mode::MULTI_NODE_READER_ONLY:
    case Mode::MULTI_NODE_SINGLE_WRITER:
    case Mode::MULTI_NODE_MULTI_WRITER:
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    "access mode " + Mode::Mode_Name(cap.access_mode().mode()) +
                        " is not supported: a localvol volume lives on one node's disk (use "
                        "ReadWriteOnce or ReadWriteOncePod)");
    default:
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    "volume_capability.access_mode is missing or unknown; give a single-node mode");
  }
}

ParameterMap ToMap(const google::protobuf::Map<std::string, std::string>& m) {
  return ParameterMap(m.begin(), m.end());
}

void SetTopology(const std::string& node, pb::Topology* out) {
  (*out->mutable_segments())[kTopologyKey] = node;
}

bool IsThisNode(const pb::Topology& t, const std::string& node) {
  auto it = t.segments().find(kTopologyKey);
  return it != t.segments().end() && it->second == node;
}

}  // namespace localvol::agent::csi
