#include "agent/csi/node_service.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "agent/system.h"
#include "agent/volume_manager.h"
#include "base/logging.h"
#include "base/mount_table.h"
#include "base/scope_guard.h"
#include "base/size.h"

namespace localvol::agent::csi {
namespace {

using Code = grpc::StatusCode;

std::shared_ptr<spdlog::logger> Log() { return GetLogger("csi"); }

// "ENOTCONN (Transport endpoint is not connected)".
std::string ErrnoText(int err) {
  const char* name = ::strerrorname_np(err);
  return std::string(name != nullptr ? name : "errno " + std::to_string(err)) + " (" +
         std::strerror(err) + ")";
}

// An absolute path without "." or ".." components, duplicate or trailing
// slashes removed; "" if `path` is not one.
std::string CleanAbsolutePath(const std::string& path) {
  if (path.empty() || path[0] != '/') return "";
  std::string out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    const size_t end = std::min(path.find('/', i), path.size());
    const std::string part = path.substr(i, end - i);
    i = end;
    if (part.empty()) continue;
    if (part == "." || part == "..") return "";
    out += "/" + part;
  }
  return out;
}

// `path` (clean, absolute) with its parent resolved through symlinks, as the
// mount table spells mount points. The last component is not resolved: it
// may be a mount whose server is gone, which cannot be stat'ed. ENOENT when
// the parent does not exist.
Result<std::string> MountPointSpelling(const std::string& path) {
  const size_t slash = path.rfind('/');
  auto parent = CanonicalPath(slash == 0 ? "/" : path.substr(0, slash));
  if (!parent.ok()) return parent.status();
  return (*parent == "/" ? "" : *parent) + path.substr(slash);
}

std::string Source(const std::string& volume) { return "localvol:" + volume; }

bool IsMountOf(const MountInfo& m, const std::string& volume) {
  return m.fstype == "fuse.localvol" && m.source == Source(volume);
}

// statvfs(2) of `path` from a helper thread: a FUSE server that does not
// answer cannot hold the gRPC thread for longer than `timeout` (the helper is
// then left to finish on its own). Returns 0 or the errno (ETIMEDOUT).
int StatVfsWithin(const std::string& path, std::chrono::seconds timeout, struct statvfs* out) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int err = 0;
    struct statvfs st {};
  };
  auto shared = std::make_shared<Shared>();
  std::thread([shared, path] {
    struct statvfs st;
    const int err = ::statvfs(path.c_str(), &st) == 0 ? 0 : errno;
    std::lock_guard<std::mutex> lock(shared->mu);
    shared->err = err;
    shared->st = st;
    shared->done = true;
    shared->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(shared->mu);
  if (!shared->cv.wait_for(lock, timeout, [&] { return shared->done; })) return ETIMEDOUT;
  *out = shared->st;
  return shared->err;
}

// The MS_* flags of the mount at `path` that a bind remount must keep.
unsigned long MountFlagsOf(const struct statvfs& st) {
  unsigned long f = 0;
  if (st.f_flag & ST_RDONLY) f |= MS_RDONLY;
  if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) f |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

constexpr auto kStatTimeout = std::chrono::seconds(10);

// The volume_id and target_path of NodePublish/NodeUnpublishVolume:
// INVALID_ARGUMENT unless both are given and the path is absolute, without
// "." or "..", and not "/". Sets `*clean` to the path tidied.
grpc::Status CheckIdAndTarget(const char* rpc, const std::string& id, const std::string& path,
                              std::string* clean) {
  if (id.empty())
    return Refuse(Code::INVALID_ARGUMENT, std::string(rpc) + ": volume_id is missing");
  *clean = CleanAbsolutePath(path);
  if (clean->empty() || *clean == "/") {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": target_path '" + path +
                                              "' is not an absolute path without '.' or '..'");
  }
  return grpc::Status::OK;
}

}  // namespace

void FillNodeCapabilities(pb::NodeGetCapabilitiesResponse* out) {
  using Rpc = pb::NodeServiceCapability::RPC;
  for (auto type : {Rpc::GET_VOLUME_STATS, Rpc::EXPAND_VOLUME, Rpc::VOLUME_CONDITION,
                    Rpc::SINGLE_NODE_MULTI_WRITER}) {
    out->add_capabilities()->mutable_rpc()->set_type(type);
  }
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*,
                                              const pb::NodeGetCapabilitiesRequest*,
                                              pb::NodeGetCapabilitiesResponse* out) {
  FillNodeCapabilities(out);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const pb::NodeGetInfoRequest*,
                                      pb::NodeGetInfoResponse* out) {
  out->set_node_id(ctx_->node_name);
  SetTopology(ctx_->node_name, out->mutable_accessible_topology());
  return grpc::Status::OK;
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*,
                                            const pb::NodePublishVolumeRequest* req,
                                            pb::NodePublishVolumeResponse*) {
  const std::string& id = req->volume_id();
  std::string clean;
  if (grpc::Status g = CheckIdAndTarget("NodePublishVolume", id, req->target_path(), &clean);
      !g.ok())
    return g;
  if (!req->has_volume_capability()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": volume_capability is missing");
  }
  if (grpc::Status g = CheckCapability(req->volume_capability()); !g.ok()) return g;
  const auto& cap = req->volume_capability();
  const std::vector<std::string> mount_flags(cap.mount().mount_flags().begin(),
                                             cap.mount().mount_flags().end());
  if (auto f = BindRemountFlags(mount_flags, req->readonly(), 0); !f.ok()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": " + f.status().context());
  }
  auto held = ctx_->locks->TryLock(id);
  if (!held) return Busy(id);
  VolumeInfo vol;
  if (grpc::Status g = FindVolume(*ctx_, id, "publish volume " + id, &vol); !g.ok()) return g;
  const VolumeInfo* v = &vol;
  if (v->state != "ready") {
    return Refuse(Code::FAILED_PRECONDITION,
                  "volume " + id + " is not served (" + v->state + ": " + v->message + ")");
  }
  // Make the parent, then spell the target as the mount table does.
  const std::string parent = clean.substr(0, clean.rfind('/'));
  if (Status st = MakeDirs(parent.empty() ? "/" : parent, 0750); !st.ok()) {
    return Fail("publish volume " + id, st);
  }
  auto target = MountPointSpelling(clean);
  if (!target.ok()) return Fail("publish volume " + id, target.status());
  if (cap.access_mode().mode() == pb::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER) {
    for (const auto& t : v->publish_targets) {
      if (t != *target) {
        return Refuse(Code::FAILED_PRECONDITION,
                      "volume " + id + " is single-writer and already published at " + t);
      }
    }
  }
  if (auto m = FindMountAt(*target)) {
    if (!IsMountOf(*m, id)) {
      return Refuse(Code::FAILED_PRECONDITION,
                    "volume " + id + ": target_path " + *target + " already has a " + m->fstype +
                        " mount (" + m->source + "); unmount it or choose another path");
    }
    struct statvfs st;
    const int err = StatVfsWithin(*target, kStatTimeout, &st);
    if (err == 0) {
      const bool ro = (st.f_flag & ST_RDONLY) != 0;
      if (ro == req->readonly()) return grpc::Status::OK;  // published already: idempotent
      return Refuse(Code::ALREADY_EXISTS, "volume " + id + " is already published at " + *target +
                                              (ro ? " read-only" : " read-write") +
                                              "; unpublish it first");
    }
    // A bind of a connection that is gone (the agent restarted): replace it.
    Log()->warn("volume {}: {} is a stale mount ({}); publishing again", id, *target,
                ErrnoText(err));
    if (::umount2(target->c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      const int err = errno;
      return Fail("publish volume " + id, Status::Error(err, "umount stale " + *target));
    }
  }
  bool created = false;
  struct stat st;
  if (::lstat(target->c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Refuse(Code::FAILED_PRECONDITION, "volume " + id + ": target_path " + *target +
                                                   " exists and is not a directory; remove it");
    }
  } else if (::mkdir(target->c_str(), 0750) == 0) {
    created = true;
  } else {
    const int err = errno;
    return Fail("publish volume " + id, Status::Error(err, "mkdir " + *target));
  }
  ScopeGuard remove_dir([&] {
    if (!created) return;
    if (Status rm = RemoveDirectory(*target); !rm.ok()) {
      Log()->warn("volume {}: undoing the failed publish: {}", id, rm.ToString());
    }
  });
  struct statvfs source_st;
  if (int err = StatVfsWithin(v->mount_path, kStatTimeout, &source_st); err != 0) {
    return Refuse(Code::FAILED_PRECONDITION, "volume " + id + " does not answer at " +
                                                 v->mount_path + ": " + ErrnoText(err) +
                                                 "; restart localvold");
  }
  const unsigned long flags =
      *BindRemountFlags(mount_flags, req->readonly(), MountFlagsOf(source_st));
  if (::mount(v->mount_path.c_str(), target->c_str(), nullptr, MS_BIND, nullptr) != 0) {
    const int err = errno;
    return Fail("publish volume " + id,
                Status::Error(err, "bind mount " + v->mount_path + " on " + *target));
  }
  ScopeGuard unmount([&] {
    if (::umount2(target->c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      const int err = errno;
      Log()->error("volume {}: undoing the failed publish: umount {}: {}; it stays mounted", id,
                   *target, ErrnoText(err));
    }
  });
  // A bind takes the source's flags; ro and mount_flags need a remount of
  // the bind, which changes this mount only.
  if (flags != MountFlagsOf(source_st) &&
      ::mount(nullptr, target->c_str(), nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) != 0) {
    const int err = errno;
    return Fail("publish volume " + id, Status::Error(err, "remount " + *target));
  }
  unmount.Cancel();
  remove_dir.Cancel();
  Log()->info("volume {}: published at {}{}", id, *target, req->readonly() ? " (read-only)" : "");
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*,
                                              const pb::NodeUnpublishVolumeRequest* req,
                                              pb::NodeUnpublishVolumeResponse*) {
  const std::string& id = req->volume_id();
  std::string clean;
  if (grpc::Status g = CheckIdAndTarget("NodeUnpublishVolume", id, req->target_path(), &clean);
      !g.ok())
    return g;
  auto held = ctx_->locks->TryLock(id);
  if (!held) return Busy(id);
  auto target = MountPointSpelling(clean);
  if (!target.ok()) {
    if (target.err() == ENOENT) return grpc::Status::OK;  // not even its parent: nothing to do
    return Fail("unpublish volume " + id, target.status());
  }
  // Stacked binds of this volume all go; anything else is not ours to touch.
  for (int i = 0; i < 16; ++i) {
    auto m = FindMountAt(*target);
    if (!m) break;
    if (!IsMountOf(*m, id)) {
      return Refuse(Code::FAILED_PRECONDITION, "volume " + id + ": target_path " + *target +
                                                   " has a " + m->fstype + " mount (" + m->source +
                                                   "), not this volume; not unmounting it");
    }
    if (::umount2(target->c_str(), UMOUNT_NOFOLLOW) != 0) {
      const int err = errno;
      // The bind is the pod's alone; the volume's own mount stays. A busy
      // bind (a process still in it) is detached.
      if (err != EBUSY || ::umount2(target->c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
        return Fail("unpublish volume " + id, Status::Error(err, "umount " + *target));
      }
      Log()->warn("volume {}: {} was busy; detached it", id, *target);
    }
  }
  if (::rmdir(target->c_str()) != 0 && errno != ENOENT) {
    const int err = errno;
    if (err == ENOTEMPTY || err == ENOTDIR) {
      return Refuse(Code::FAILED_PRECONDITION, "volume " + id + ": " + *target +
                                                   " is not an empty directory "
                                                   "after unmounting (" +
                                                   ErrnoText(err) +
                                                   "); localvol did "
                                                   "not create what is there, remove it");
    }
    return Fail("unpublish volume " + id, Status::Error(err, "rmdir " + *target));
  }
  Log()->info("volume {}: unpublished from {}", id, *target);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext*,
                                             const pb::NodeGetVolumeStatsRequest* req,
                                             pb::NodeGetVolumeStatsResponse* out) {
  const std::string& id = req->volume_id();
  if (id.empty()) return Refuse(Code::INVALID_ARGUMENT, "NodeGetVolumeStats: volume_id is missing");
  const std::string clean = CleanAbsolutePath(req->volume_path());
  if (clean.empty()) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + ": volume_path '" + req->volume_path() +
                                              "' is not an absolute path without '.' or '..'");
  }
  VolumeInfo vol;
  if (grpc::Status g = FindVolume(*ctx_, id, "stats of volume " + id, &vol); !g.ok()) return g;
  const VolumeInfo* v = &vol;
  auto path = MountPointSpelling(clean);
  std::optional<MountInfo> m;
  if (path.ok()) m = FindMountAt(*path);
  if (!m || !IsMountOf(*m, id)) {
    return Refuse(Code::NOT_FOUND, "volume " + id + " is not published at " + req->volume_path());
  }
  auto* bytes = out->add_usage();
  auto* inodes = out->add_usage();
  bytes->set_unit(pb::VolumeUsage::BYTES);
  inodes->set_unit(pb::VolumeUsage::INODES);
  auto* condition = out->mutable_volume_condition();
  struct statvfs st;
  const int err = StatVfsWithin(*path, kStatTimeout, &st);
  if (err == 0) {
    // The volume's statfs reports its quota, so these are df's numbers.
    const auto unit = static_cast<int64_t>(st.f_frsize);
    bytes->set_total(static_cast<int64_t>(st.f_blocks) * unit);
    bytes->set_available(static_cast<int64_t>(st.f_bavail) * unit);
    bytes->set_used(static_cast<int64_t>(st.f_blocks - st.f_bfree) * unit);
    inodes->set_total(static_cast<int64_t>(st.f_files));
    inodes->set_available(static_cast<int64_t>(st.f_favail));
    inodes->set_used(static_cast<int64_t>(st.f_files - st.f_ffree));
  } else {
    // Not answering: the catalogue's figures, and the reason.
    bytes->set_total(static_cast<int64_t>(v->capacity_bytes));
    bytes->set_used(static_cast<int64_t>(std::min(v->used_bytes, v->capacity_bytes)));
    inodes->set_total(static_cast<int64_t>(v->inode_limit));
    inodes->set_used(static_cast<int64_t>(std::min(v->inodes_used, v->inode_limit)));
  }
  if (err != 0) {
    condition->set_abnormal(true);
    condition->set_message(
        "volume " + id + " does not answer at " + *path + ": " + ErrnoText(err) +
        (err == ENOTCONN || err == ECONNABORTED
             ? " (its FUSE server is gone: localvold stopped or crashed, or the connection "
               "was aborted); restart the pod to get a fresh mount"
             : ""));
  } else if (v->state != "ready") {
    condition->set_abnormal(true);
    condition->set_message("volume " + id + " is " + v->state + ": " + v->message);
  } else {
    condition->set_abnormal(false);
    condition->set_message("volume " + id + " is served");
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeExpandVolume(grpc::ServerContext*,
                                           const pb::NodeExpandVolumeRequest* req,
                                           pb::NodeExpandVolumeResponse* out) {
  const std::string& id = req->volume_id();
  if (id.empty()) return Refuse(Code::INVALID_ARGUMENT, "NodeExpandVolume: volume_id is missing");
  if (req->has_volume_capability()) {
    if (grpc::Status g = CheckCapability(req->volume_capability()); !g.ok()) return g;
  }
  const auto& r = req->capacity_range();
  if (r.required_bytes() < 0 || r.limit_bytes() < 0 ||
      (r.required_bytes() == 0 && r.limit_bytes() == 0)) {
    return Refuse(Code::INVALID_ARGUMENT,
                  "volume " + id + ": capacity_range is missing or negative; give the new size");
  }
  auto held = ctx_->locks->TryLock(id);
  if (!held) return Busy(id);
  VolumeInfo vol;
  if (grpc::Status g = FindVolume(*ctx_, id, "expand volume " + id, &vol); !g.ok()) return g;
  const VolumeInfo* v = &vol;
  if (!req->volume_path().empty()) {
    struct stat st;
    if (::lstat(req->volume_path().c_str(), &st) != 0 && errno == ENOENT) {
      return Refuse(Code::NOT_FOUND,
                    "volume " + id + ": volume_path " + req->volume_path() + " does not exist");
    }
  }
  const auto want =
      static_cast<uint64_t>(r.required_bytes() != 0 ? r.required_bytes() : r.limit_bytes());
  const auto limit = static_cast<uint64_t>(r.limit_bytes());
  if (want < v->capacity_bytes || (limit != 0 && limit < v->capacity_bytes)) {
    return Refuse(Code::INVALID_ARGUMENT, "volume " + id + " has " + FormatSize(v->capacity_bytes) +
                                              "; it cannot shrink to " + FormatSize(want) +
                                              " (a PVC can only grow)");
  }
  if (want == v->capacity_bytes) {
    out->set_capacity_bytes(static_cast<int64_t>(v->capacity_bytes));
    return grpc::Status::OK;
  }
  auto grown = ctx_->volumes->Resize(id, want, 0);
  if (!grown.ok()) {
    if (grown.err() == ENOSPC)
      return Refuse(Code::OUT_OF_RANGE, "volume " + id + ": " + grown.status().context());
    return Fail("expand volume " + id, grown.status());
  }
  Log()->info("volume {}: expanded to {}", id, FormatSize(grown->capacity_bytes));
  out->set_capacity_bytes(static_cast<int64_t>(grown->capacity_bytes));
  return grpc::Status::OK;
}

}  // namespace localvol::agent::csi
