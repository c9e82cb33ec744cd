// clang-format off
#include "agent/grpcpp.h"  // first: see there
// clang-format on

#include "agent/api_server.h"

#include "agent/io_limits_proto.h"
#include "agent/proto/localvol.grpc.pb.h"
#include "agent/system.h"
#include "agent/unix_socket_server.h"
#include "base/logging.h"
#include "base/unique_fd.h"
#include "fuse/volume.h"

namespace localvol::agent {
namespace {

namespace pb = ::localvol::v1;

void ToProto(const fuse::VolumeIoStats& s, pb::IoStats* out) {
  out->set_read_ops(s.read_ops);
  out->set_read_bytes(s.read_bytes);
  out->set_write_ops(s.write_ops);
  out->set_write_bytes(s.write_bytes);
  out->set_other_ops(s.other_ops);
  out->set_errors(s.errors);
  out->set_timed_out(s.timed_out);
  out->set_throttled_seconds(static_cast<double>(s.throttled_ns) / 1e9);
  out->set_queued(s.queued);
  out->set_in_flight(s.in_flight);
}

void ToProto(const VolumeInfo& v, pb::Volume* out) {
  out->set_name(v.name);
  out->set_disk_id(v.disk_id);
  out->set_device(v.device);
  out->set_mount_path(v.mount_path);
  out->set_state(v.state);
  out->set_message(v.message);
  out->set_capacity_bytes(v.capacity_bytes);
  out->set_used_bytes(v.used_bytes);
  out->set_inode_limit(v.inode_limit);
  out->set_inodes_used(v.inodes_used);
  IoLimitsToProto(v.io_limits, out->mutable_io_limits());
  ToProto(v.io, out->mutable_io_stats());
  out->set_fuse_ring_requests(v.fuse_ring_requests);
  out->set_fuse_ring_resident_bytes(v.fuse_ring_resident_bytes);
  out->set_read_passthrough(v.read_passthrough);
  out->set_read_passthrough_setting(v.read_passthrough_setting ? "auto" : "off");
  out->set_passthrough_open_files(v.passthrough_open_files);
  out->set_passthrough_opens_total(v.passthrough_opens_total);
  out->set_csi(v.csi);
  out->set_pvc(v.pvc);
  for (const auto& t : v.publish_targets) out->add_publish_targets(t);
}

void ToProto(const DiskInfo& d, pb::Disk* out) {
  out->set_id(d.id);
  out->set_device(d.device);
  out->set_configured_as(d.configured_as);
  out->set_state(d.state);
  out->set_reason(d.reason);
  out->set_filesystem(d.filesystem);
  out->set_mount_path(d.mount_path);
  out->set_size_bytes(d.size_bytes);
  out->set_reserve_bytes(d.reserve_bytes);
  out->set_allocated_bytes(d.allocated_bytes);
  out->set_free_bytes(d.free_bytes);
  out->set_volume_count(d.volume_count);
  out->set_embedded(d.embedded);
}

// inode_limit of a create or resize: 0 (the default, or keep) or from 1 to
// fuse::kMaxInodeLimit; checked before anything is changed.
grpc::Status CheckInodeLimit(uint64_t inode_limit) {
  if (inode_limit <= fuse::kMaxInodeLimit) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "inode_limit " + std::to_string(inode_limit) +
                          " is out of range: give 1 to " + std::to_string(fuse::kMaxInodeLimit) +
                          ", or 0 for the default");
}

}  // namespace

grpc::Status ToGrpcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  switch (s.err()) {
    case EINVAL:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, s.context());
    case ENOENT:
      return grpc::Status(grpc::StatusCode::NOT_FOUND, s.context());
    case EEXIST:
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, s.context());
    case ENOSPC:
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, s.context());
    case EBUSY:
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, s.context());
    case ESHUTDOWN:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, s.context());
    default:
      return grpc::Status(grpc::StatusCode::INTERNAL, s.ToString());
  }
}

grpc::Status ToGrpcStatusLogged(const std::string& component, const std::string& what,
                                const Status& s) {
  grpc::Status g = ToGrpcStatus(s);
  if (g.error_code() == grpc::StatusCode::INTERNAL) {
    GetLogger(component)->error("{}: {}", what, s.ToString());
  } else {
    GetLogger(component)->warn("{} refused: {}", what, s.context());
  }
  return g;
}

class ApiServer::Service final : public pb::LocalVol::Service {
 public:
  explicit Service(VolumeManager* volumes) : volumes_(volumes) {}

  grpc::Status ListDisks(grpc::ServerContext*, const pb::ListDisksRequest*,
                         pb::ListDisksResponse* out) override {
    for (const auto& d : volumes_->Disks()) ToProto(d, out->add_disks());
    return grpc::Status::OK;
  }

  grpc::Status CreateVolume(grpc::ServerContext*, const pb::CreateVolumeRequest* req,
                            pb::Volume* out) override {
    if (req->capacity_bytes() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "capacity_bytes is missing: give the volume a size (e.g. --size 10Gi)");
    }
    if (grpc::Status st = CheckInodeLimit(req->inode_limit()); !st.ok()) return st;
    CreateVolumeParams params;
    params.name = req->name();
    params.capacity_bytes = req->capacity_bytes();
    params.inode_limit = req->inode_limit();
    params.disk = req->disk();
    if (req->has_io_limits()) params.io_limits = IoLimitsFromProto(req->io_limits());
    if (!req->read_passthrough().empty()) {
      if (req->read_passthrough() != "auto" && req->read_passthrough() != "off") {
        return grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            "read_passthrough must be auto or off, not '" + req->read_passthrough() + "'");
      }
      params.read_passthrough = req->read_passthrough() == "auto";
    }
    auto v = volumes_->Create(params);
    if (!v.ok()) return Fail("create volume " + req->name(), v.status());
    ToProto(*v, out);
    return grpc::Status::OK;
  }

  grpc::Status ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest*,
                           pb::ListVolumesResponse* out) override {
    for (const auto& v : volumes_->List()) ToProto(v, out->add_volumes());
    return grpc::Status::OK;
  }

  grpc::Status GetVolume(grpc::ServerContext*, const pb::GetVolumeRequest* req,
                         pb::Volume* out) override {
    auto v = volumes_->Get(req->name());
    if (!v.ok()) return ToGrpcStatus(v.status());
    ToProto(*v, out);
    return grpc::Status::OK;
  }

  grpc::Status ResizeVolume(grpc::ServerContext*, const pb::ResizeVolumeRequest* req,
                            pb::Volume* out) override {
    if (req->capacity_bytes() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "capacity_bytes is missing: give the new size (e.g. --size 20Gi)");
    }
    if (grpc::Status st = CheckInodeLimit(req->inode_limit()); !st.ok()) return st;
    auto v = volumes_->Resize(req->name(), req->capacity_bytes(), req->inode_limit());
    if (!v.ok()) return Fail("resize volume " + req->name(), v.status());
    ToProto(*v, out);
    return grpc::Status::OK;
  }

  grpc::Status SetVolumeLimits(grpc::ServerContext*, const pb::SetVolumeLimitsRequest* req,
                               pb::Volume* out) override {
    if (!req->has_io_limits()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "io_limits is missing: give the complete new limits (an empty IoLimits "
                          "removes them all)");
    }
    auto v = volumes_->SetIoLimits(req->name(), IoLimitsFromProto(req->io_limits()));
    if (!v.ok()) return Fail("set the I/O limits of volume " + req->name(), v.status());
    ToProto(*v, out);
    return grpc::Status::OK;
  }

  grpc::Status DeleteVolume(grpc::ServerContext*, const pb::DeleteVolumeRequest* req,
                            pb::DeleteVolumeResponse*) override {
    Status s = volumes_->Delete(req->name());
    if (!s.ok()) return Fail("delete volume " + req->name(), s);
    return grpc::Status::OK;
  }

 private:
  static grpc::Status Fail(const std::string& what, const Status& s) {
    return ToGrpcStatusLogged("api", what, s);
  }

  VolumeManager* const volumes_;
};

Status ApiServer::CheckSocketFree(const std::string& socket_path) {
  return UnixSocketServer::CheckSocketFree(socket_path);
}

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& socket_path,
                                                    VolumeManager* volumes) {
  std::unique_ptr<ApiServer> server(new ApiServer());
  server->service_ = std::make_unique<Service>(volumes);
  auto s = UnixSocketServer::Start(socket_path, {server->service_.get()}, "localvol.v1");
  if (!s.ok()) return s.status();
  server->server_ = std::move(s).value();
  return server;
}

ApiServer::~ApiServer() { Shutdown(); }

void ApiServer::Shutdown() {
  if (server_) server_->Shutdown();
}

const std::string& ApiServer::socket_path() const { return server_->socket_path(); }

}  // namespace localvol::agent
