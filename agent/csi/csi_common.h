// What the three CSI services (agent/csi/) share: the driver's name and
// topology key, the node name, the per-volume operation locks, the checks of
// a VolumeCapability, and the conversion of a VolumeManager Status to a gRPC
// status with one log line per refusal.
#pragma once

// clang-format off
#include "agent/grpcpp.h"  // first: see there
// clang-format on

#include <memory>
#include <set>
#include <string>

#include "agent/csi/csi.grpc.pb.h"
#include "agent/csi/csi_params.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace localvol::agent {
class VolumeManager;
struct VolumeInfo;
}  // namespace localvol::agent

namespace localvol::agent::csi {

namespace pb = ::csi::v1;

inline constexpr const char* kDriverName = "localvol.io";
// The one topology segment: its value is the node name.
inline constexpr const char* kTopologyKey = "topology.localvol.io/node";
// CreateVolume without a capacity_range (or with only limit_bytes, capped at
// it) gets this size.
inline constexpr uint64_t kDefaultVolumeBytes = 1ull << 30;

// Serialises operations per volume name: a second operation on a name whose
// first is still running is answered ABORTED at once (the CSI specification's
// "operation pending for volume"), never queued. Thread-safe.
class VolumeLocks {
 public:
  class Held {
   public:
    ~Held();
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

   private:
    friend class VolumeLocks;
    Held(VolumeLocks* owner, std::string name) : owner_(owner), name_(std::move(name)) {}
    VolumeLocks* owner_;
    std::string name_;
  };
  // Holds `name` until the result is destroyed; null while another operation
  // holds it.
  std::unique_ptr<Held> TryLock(const std::string& name) EXCLUDES(mu_);

 private:
  Mutex mu_;
  std::set<std::string> held_ GUARDED_BY(mu_);
};

// What the services share: borrowed, outlives them.
struct Context {
  VolumeManager* volumes = nullptr;  // null in --csi-controller-only mode
  std::string node_name;
  VolumeLocks* locks = nullptr;
};

// A refusal: logged once at warn, returned with `code`.
grpc::Status Refuse(grpc::StatusCode code, const std::string& message);
// A VolumeManager failure: ToGrpcStatus (agent/api_server.h), logged at warn
// for a refusal and at error for an INTERNAL failure; `what` says what was
// being done ("create volume pvc-1").
grpc::Status Fail(const std::string& what, const Status& status);
// The volume `id` of this node, for `what` ("publish volume x"): NOT_FOUND
// when there is none (or `id` cannot name one), else the VolumeManager's
// error through Fail().
grpc::Status FindVolume(const Context& ctx, const std::string& id, const std::string& what,
                        VolumeInfo* out);
// ABORTED for a volume whose lock is held.
grpc::Status Busy(const std::string& volume);

// Checks one capability the CO asks for: a mount (fs_type "", "localvol" or
// "fuse.localvol") with a single-node access mode. INVALID_ARGUMENT names
// what is refused: block access ("localvol serves filesystems only"), a
// multi-node or unknown access mode, another filesystem type.
grpc::Status CheckCapability(const pb::VolumeCapability& cap);

// A protobuf map as the parameter parser takes it.
ParameterMap ToMap(const google::protobuf::Map<std::string, std::string>& m);

// This node's topology: {kTopologyKey: node}.
void SetTopology(const std::string& node, pb::Topology* out);
// True if `t` names this node: its segment for kTopologyKey is `node`. A
// topology with other keys names some other driver's domain: not this node.
bool IsThisNode(const pb::Topology& t, const std::string& node);

}  // namespace localvol::agent::csi
