// VolumeManager: the catalogue of volumes and their lifecycle.
//
// Every volume is a backing directory <disk>/volumes/<name> served through
// fuse::Volume (in this process, with its quotas and I/O limits) and mounted
// at <publish_dir>/<name>. The disks' manifests are the truth: Start() builds
// the catalogue from them, so nothing is lost with the state directory.
//
// I/O engines: one iopath::Engine per attached disk, created by Start() before
// any volume is mounted and destroyed by Shutdown() after the last volume is
// gone. Every volume of a disk queues on that disk's engine, so the fair
// sharing by weight is among the volumes of one disk, and disks do not
// throttle each other. A disk whose engine cannot be created cannot serve
// volumes: its volumes are listed in state "error", the disk in state "error"
// with the reason, and new volumes go elsewhere.
//
// Errors carry an errno that says what kind of failure it is (the API turns
// it into a gRPC code) and a message that says what to do:
//   EINVAL      a bad name, size, inode count or I/O limit
//   ENOENT      no such volume, or no such disk
//   EEXIST      the volume exists with another size, inode limit, disk or
//               I/O limits
//   ENOSPC      no disk has the room (no overcommit: the capacities on a disk
//               never add up to more than its size minus its reserve)
//   EBUSY       the volume is in use, mounted elsewhere, not served, or holds
//               more than a shrink allows; the disk cannot serve volumes
//   ESHUTDOWN   the agent is stopping
//   other       an unexpected system failure
//
// Threading model
//   * Any number of API threads call Create/Resize/SetIoLimits/Delete/Get/
//     List/Disks and the metrics thread calls List()/Disks(); Start() and
//     Shutdown() run on the daemon's main thread.
//   * `ops_mu_` serialises everything that changes volumes, manifests or
//     engines (Create, Resize, SetIoLimits, Delete, Start, Shutdown). Those
//     may take a while (a mount, an fsync), and only other changes wait for
//     them.
//   * Each disk's engine runs its own completion thread (iopath/engine.h); the
//     volumes' FUSE workers submit to it.
//   * `mu_` guards the in-memory catalogue and the manifests' in-memory copies,
//     and is held only to copy or swap them: reads (Get, List, Disks,
//     Snapshot) never wait for I/O. A manifest is written to disk with only
//     `ops_mu_` held, then swapped in under `mu_`.
//   * The trash (agent/trash.h) removes the data of deleted volumes on its
//     own thread, so a delete returns as soon as the volume is unmounted and
//     its directory renamed; what it still holds counts as allocated.
//   Lock order: ops_mu_ before mu_ before the trash's own lock.
//
// Crash consistency: a volume exists when its disk's manifest lists it. Its
// backing root is built complete under a temporary name and renamed into
// place (agent/volume_dirs.h), and Start() finishes whatever a crash
// interrupted: it builds a listed volume's missing root, repairs a root that
// was never served, moves build leftovers and unlisted directories to the
// trash, and removes empty publish directories a delete left.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/disk_manager.h"
#include "agent/trash.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/volume.h"
#include "iopath/engine.h"
#include "iopath/io_limits.h"

namespace localvol::iopath {
class Engine;
}

namespace localvol::agent {

// Names are DNS-1123 labels: 1 to 63 of [a-z0-9-], starting and ending with
// a letter or digit. Fails with EINVAL saying what is wrong.
Status ValidateVolumeName(const std::string& name);

inline constexpr uint64_t kMinVolumeCapacity = 1ull << 20;  // 1 MiB

struct VolumeInfo {
  std::string name;
  std::string disk_id;
  std::string device;
  std::string mount_path;
  std::string backing_path;
  std::string state;    // "ready", "not-mounted" or "error"
  std::string message;  // why, when not ready
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t inode_limit = 0;
  uint64_t inodes_used = 0;
  iopath::IoLimits io_limits;             // in force; the manifest's when not served
  fuse::VolumeIoStats io;                 // zero when not served
  uint64_t fuse_ring_requests = 0;        // taken through FUSE over io_uring since mounted
  uint64_t fuse_ring_resident_bytes = 0;  // of the ring's buffers, now
  bool read_passthrough_setting = true;   // the volume's own setting (VolumeRecord), auto or off
  bool read_passthrough = false;          // kernel FUSE passthrough negotiated at mount
  uint64_t passthrough_open_files = 0;    // files open with passthrough now
  uint64_t passthrough_opens_total = 0;   // opens answered with passthrough since mounted
  // Created through the CSI driver (then `name` is the PV name), and the
  // claim it was made for ("namespace/name", or "").
  bool csi = false;
  std::string pvc;
  // Every other mount of this volume in the agent's mount namespace (bind
  // mounts into pods, e.g. by NodePublishVolume), read from the mount table:
  // it stays true across agent restarts (a bind left by a previous agent
  // shows up too, as its source is still localvol:<name>).
  std::vector<std::string> publish_targets;
};

struct DiskInfo {
  std::string id;  // filesystem UUID; "" when refused
  std::string device;
  std::string configured_as;
  // "ready"; "error": attached, but it cannot serve volumes (its I/O engine
  // failed); "missing": a disk the agent knew that is not there (see
  // DiskManager); "refused": not used at all.
  std::string state;
  std::string reason;  // for a refused device, or a disk in error
  std::string filesystem;
  std::string mount_path;
  uint64_t size_bytes = 0;
  uint64_t reserve_bytes = 0;
  uint64_t allocated_bytes = 0;  // capacities, plus deleted data not yet removed
  uint64_t free_bytes = 0;       // what a new volume may still get
  uint32_t volume_count = 0;
  bool embedded = false;
};

struct CreateVolumeParams {
  std::string name;
  uint64_t capacity_bytes = 0;
  uint64_t inode_limit = 0;  // 0: fuse::DefaultInodeLimit(capacity)
  std::string disk;          // "": placement; else a disk id, unique id prefix or device
  // Unset: unlimited, weight 100; and an existing volume matches whatever its
  // limits. Set: an existing volume must have exactly these.
  std::optional<iopath::IoLimits> io_limits;
  // Recorded in the manifest for a volume made through the CSI driver
  // (VolumeRecord::csi and ::pvc); an existing volume is not changed.
  bool csi = false;
  std::string pvc;
  // Unset: auto for a new volume, and an existing one matches either. Set: a
  // new volume records it (VolumeRecord::read_passthrough); an existing one
  // must have it.
  std::optional<bool> read_passthrough;
};

// Creates the I/O engine of one attached disk. The default
// (VolumeManagerOptions::make_engine empty) is iopath::Engine::Create() with
// default options; tests inject failures.
using EngineFactory =
    std::function<Result<std::unique_ptr<iopath::Engine>>(const AttachedDisk& disk)>;

struct VolumeManagerOptions {
  std::string publish_dir;
  unsigned fuse_threads = fuse::DefaultWorkerThreads();  // per volume, at most
  bool fuse_io_uring = false;            // fuse::VolumeOptions::fuse_io_uring, for every volume
  bool fuse_thread_placement = true;     // fuse::VolumeOptions::thread_placement, likewise
  bool read_passthrough = true;          // fuse::VolumeOptions::read_passthrough, for every volume
  iopath::EngineOptions engine_options;  // for the default factory
  EngineFactory make_engine;             // empty: iopath::Engine::Create(engine_options)
};

class VolumeManager {
 public:
  // `disks` is borrowed, must have attached its disks, and outlive this.
  VolumeManager(VolumeManagerOptions options, DiskManager* disks);
  // Calls Shutdown().
  ~VolumeManager();
  VolumeManager(const VolumeManager&) = delete;
  VolumeManager& operator=(const VolumeManager&) = delete;

  // Creates one I/O engine per disk, builds the catalogue from the disks'
  // manifests, finishes what a crash interrupted (see above), charges the
  // trash a predecessor left to its disk, clears stale FUSE mounts a crashed
  // predecessor left (ENOTCONN) and mounts every volume with its limits. A volume that cannot be
  // mounted (or whose disk has no engine) is listed in state "error" with the reason; Start()
  // itself fails only if the publish directory is unusable.
  Status Start() EXCLUDES(ops_mu_, mu_);

  // Creates and mounts a volume; see the errno table above. Creating an
  // existing volume with the same size (and inodes, disk and I/O limits, when
  // given) is a success that changes nothing.
  Result<VolumeInfo> Create(const CreateVolumeParams& params) EXCLUDES(ops_mu_, mu_);
  // Changes the limits of a served volume, live. inode_limit 0 keeps an
  // explicit limit and rescales a default one.
  Result<VolumeInfo> Resize(const std::string& name, uint64_t capacity_bytes, uint64_t inode_limit)
      EXCLUDES(ops_mu_, mu_);
  // Replaces the I/O limits and weight of a served volume, live (no remount),
  // then records them in the manifest. Invalid limits fail with EINVAL (the
  // iopath::ValidateIoLimits message) and change nothing; a volume that is not
  // served fails with EBUSY. If the manifest cannot be written, the old limits
  // are put back live and the write error is returned.
  Result<VolumeInfo> SetIoLimits(const std::string& name, const iopath::IoLimits& limits)
      EXCLUDES(ops_mu_, mu_);
  // Refuses (EBUSY) while any process, in any mount namespace, has its
  // working or root directory or an open file in the volume, or while the
  // volume is mounted at another path in any namespace; the message names
  // the processes and mounts. Otherwise unmounts it, drops it from the manifest and removes its
  // data in the background.
  Status Delete(const std::string& name) EXCLUDES(ops_mu_, mu_);

  Result<VolumeInfo> Get(const std::string& name) const EXCLUDES(mu_);
  std::vector<VolumeInfo> List() const EXCLUDES(mu_);  // sorted by name
  std::vector<DiskInfo> Disks() const EXCLUDES(mu_);   // attached, missing, then refused

  // Unmounts every volume (in parallel; a busy one gets the fuse layer's grace
  // period), then stops the disks' engines and the trash thread. Later
  // changes fail with ESHUTDOWN. Idempotent.
  void Shutdown() EXCLUDES(ops_mu_, mu_);

  // Blocks until no change is in progress: the watchdog's liveness probe.
  void Ping() const EXCLUDES(ops_mu_, mu_);

  // Bytes of deleted volumes still being removed (all disks).
  uint64_t PendingTrashBytes() const EXCLUDES(mu_);

 private:
  struct Vol {
    std::string name;
    AttachedDisk* disk = nullptr;
    std::string mount_path;
    std::string backing_path;
    std::unique_ptr<fuse::Volume> fs;  // null when not served
    std::string error;                 // why it is not served
  };

  VolumeInfo Describe(const Vol& vol, const std::vector<MountInfo>& mounts) const REQUIRES(mu_);
  // Bytes of `disk` given to volumes or held by the trash.
  uint64_t AllocatedLocked(const AttachedDisk* disk) const REQUIRES(mu_);
  // Allocatable bytes of `disk` not yet allocated.
  uint64_t UnallocatedLocked(const AttachedDisk* disk) const REQUIRES(mu_);
  // The volume called `name`, or ENOENT with a message that says so.
  Result<Vol*> FindLocked(const std::string& name) const REQUIRES(mu_);
  // For an operation that changes a volume: ESHUTDOWN while stopping, else
  // FindLocked(), with a copy of its disk's manifest to edit and commit.
  Result<Vol*> FindForChange(const std::string& name, DiskManifest* manifest) REQUIRES(ops_mu_)
      EXCLUDES(mu_);
  // The disk a new volume goes to (agent/placement.h), or why none.
  Result<AttachedDisk*> PickDisk(const CreateVolumeParams& params) const REQUIRES(mu_);
  void CreateEngines() REQUIRES(ops_mu_);
  // Why `disk` cannot serve volumes, or null if it can.
  const std::string* EngineErrorLocked(const AttachedDisk* disk) const REQUIRES(mu_);
  // Clears a stale mount at the volume's publish path and opens it (an O_PATH
  // fd) without following links; see OpenPublishPath().
  Result<UniqueFd> PrepareMountpoint(const std::string& name);
  // Why `vol` must not be unmounted now (EBUSY naming the processes and
  // mounts that use it), or Ok.
  Status CheckNotInUse(const Vol& vol, const MountInfo& ours) const;
  // Builds the catalogue entries of `disk`, finishing what a crash left.
  void LoadDisk(AttachedDisk* disk, std::vector<Vol*>* to_mount) REQUIRES(ops_mu_);
  // Mounts `vol` with the capacity, inodes and I/O limits of `rec`, on its
  // disk's engine.
  Result<std::unique_ptr<fuse::Volume>> MountVolume(const Vol& vol, const VolumeRecord& rec)
      REQUIRES(ops_mu_);
  Status CommitManifest(AttachedDisk* disk, const DiskManifest& manifest) REQUIRES(ops_mu_);

  const VolumeManagerOptions options_;
  DiskManager* const disks_;
  std::string publish_dir_;  // canonical, set by Start()

  mutable Mutex ops_mu_;  // acquired before mu_
  bool shut_down_ GUARDED_BY(ops_mu_) = false;
  bool started_ GUARDED_BY(ops_mu_) = false;
  // One per disk that has one; destroyed after every volume (Shutdown).
  std::map<const AttachedDisk*, std::unique_ptr<iopath::Engine>> engines_ GUARDED_BY(ops_mu_);

  mutable Mutex mu_;  // acquired before the trash's lock
  std::map<std::string, std::unique_ptr<Vol>> vols_ GUARDED_BY(mu_);
  // Why a disk has no engine (set by Start()): it cannot serve volumes.
  std::map<const AttachedDisk*, std::string> engine_errors_ GUARDED_BY(mu_);

  Trash trash_;
};

}  // namespace localvol::agent
