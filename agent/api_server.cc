// gRPC first, without abseil's lock-annotation macros (agent/grpcpp.h).
#include "agent/grpcpp.h"

#include "agent/api_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "agent/io_limits_proto.h"
#include "agent/proto/localvol.grpc.pb.h"
#include "agent/system.h"
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

// True if a process accepts connections on the Unix socket at `path`.
bool SomeoneListens(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

// inode_limit of a create or resize: 0 (the default, or keep) or from 1 to
// fuse::kMaxInodeLimit; checked before anything is changed.
grpc::Status CheckInodeLimit(uint64_t inode_limit) {
  if (inode_limit <= fuse::kMaxInodeLimit) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "inode_limit " + std::to_string(inode_limit) + " is out of range: give 1 to " +
                          std::to_string(fuse::kMaxInodeLimit) + ", or 0 for the default");
}

}  // namespace

grpc::Status ToGrpcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  switch (s.err()) {
    case EINVAL: return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, s.context());
    case ENOENT: return grpc::Status(grpc::StatusCode::NOT_FOUND, s.context());
    case EEXIST: return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, s.context());
    case ENOSPC: return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, s.context());
    case EBUSY: return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, s.context());
    case ESHUTDOWN: return grpc::Status(grpc::StatusCode::UNAVAILABLE, s.context());
    default: return grpc::Status(grpc::StatusCode::INTERNAL, s.ToString());
  }
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
    CreateVolumeParams params{req->name(), req->capacity_bytes(), req->inode_limit(), req->disk(),
                              std::nullopt};
    if (req->has_io_limits()) params.io_limits = IoLimitsFromProto(req->io_limits());
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
  // Refusals are logged once at warn, failures at error.
  static grpc::Status Fail(const std::string& what, const Status& s) {
    grpc::Status g = ToGrpcStatus(s);
    if (g.error_code() == grpc::StatusCode::INTERNAL) {
      GetLogger("api")->error("{}: {}", what, s.ToString());
    } else {
      GetLogger("api")->warn("{} refused: {}", what, s.context());
    }
    return g;
  }

  VolumeManager* const volumes_;
};

Status ApiServer::CheckSocketFree(const std::string& socket_path) {
  struct stat st;
  if (::lstat(socket_path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) {
    return Status::Error(EEXIST, socket_path + " exists and is not a socket; remove it or choose another socket path");
  }
  if (SomeoneListens(socket_path)) {
    return Status::Error(EADDRINUSE, "another process (a running localvold?) serves " + socket_path +
                                         "; stop it, or give this one another socket path");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& socket_path,
                                                    VolumeManager* volumes) {
  if (socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::Error(ENAMETOOLONG, "socket path " + socket_path + " is too long for a Unix socket");
  }
  const std::string dir = socket_path.substr(0, socket_path.rfind('/'));
  if (!dir.empty()) {
    Status st = MakeDirs(dir, 0755);
    if (!st.ok()) return st;
  }
  if (Status s = CheckSocketFree(socket_path); !s.ok()) return s;
  ::unlink(socket_path.c_str());  // a stale socket left by a crashed agent
  std::unique_ptr<ApiServer> server(new ApiServer());
  server->socket_path_ = socket_path;
  server->service_ = std::make_unique<Service>(volumes);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(server->service_.get());
  // The socket is born 0600: nobody else can connect in the window before chmod.
  const mode_t old_umask = ::umask(077);
  server->server_ = builder.BuildAndStart();
  ::umask(old_umask);
  if (!server->server_) {
    return Status::Error(EADDRNOTAVAIL, "could not serve gRPC on unix:" + socket_path);
  }
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    const int err = errno;
    server->Shutdown();
    return Status::Error(err, "chmod 0600 " + socket_path);
  }
  GetLogger("api")->info("serving localvol.v1 on unix:{}", socket_path);
  return server;
}

ApiServer::~ApiServer() { Shutdown(); }

void ApiServer::Shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
  server_->Wait();
  server_.reset();
  ::unlink(socket_path_.c_str());
  GetLogger("api")->info("API on unix:{} stopped", socket_path_);
}

}  // namespace localvol::agent
