// Volume: one localvol volume served as its own FUSE filesystem.
//
// A volume exports one backing directory (its root on a dedicated disk) with
// hard byte and inode quotas. Mount() recovers usage (exactly, from the state a
// clean unmount persisted, or by rescanning the tree after a crash), mounts the
// filesystem with allow_other,default_permissions, and serves it on worker
// threads owned by the Volume. Data I/O goes through the shared iopath engine.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "iopath/io_limits.h"
#include "iopath/io_stats.h"

namespace localvol::iopath {
class Engine;
}

namespace localvol::fuse {

// FUSE worker threads per volume unless configured: two per CPU, at least 4.
// Workers never wait for data I/O (the engine does), so more of them only
// contend for the CPUs (docs/performance.md, "Levers measured"). The floor
// is for metadata operations, which do block a worker.
unsigned DefaultWorkerThreads();

struct VolumeOptions {
  std::string source_dir;            // backing directory; must exist and be a directory
  std::string mountpoint;            // must exist, be a directory, and not be a mountpoint;
                                     // "/proc/self/fd/N" mounts on the directory open at fd N
  std::string name;                  // shown as "localvol:<name>" in the mount table
  uint64_t capacity_bytes = 0;       // > 0
  uint64_t inode_limit = 0;          // 0 means DefaultInodeLimit(capacity_bytes)
  iopath::Engine* engine = nullptr;  // borrowed; must outlive the Volume
  // The volume's I/O limits and fair-share weight on its engine's disk.
  iopath::IoLimits io_limits;
  unsigned max_threads = DefaultWorkerThreads();  // FUSE worker threads at most
  // How long the kernel may cache attributes, entries (negative ones too) and
  // listings, in seconds. Safe to be long: only this server changes the
  // backing directory. 0 asks the server every time.
  double cache_timeout_s = 3600;
  // Take requests through FUSE over io_uring (fuse/kernel_ring.h) when the
  // kernel offers it, with this many entries per CPU; /dev/fuse otherwise.
  // A request waits for a free entry of its CPU's queue, so the depth bounds
  // the requests in flight from one CPU (docs/performance.md, "Levers
  // measured", has fewer entries against 32). Each entry
  // reserves max_write (1 MiB) of address space, made resident as requests
  // use it: up to CPUs x depth MiB per volume. A CPU's queue that has had no
  // request for fuse_io_uring_idle_release gives that memory back (0: never).
  bool fuse_io_uring = false;
  unsigned fuse_io_uring_depth = 32;
  // Whether the serving threads place themselves on CPUs
  // (fuse/thread_placement.h). A heuristic tuned on a 2-CPU machine; false
  // leaves the threads to the scheduler.
  bool thread_placement = true;
  std::chrono::milliseconds fuse_io_uring_idle_release{10000};
  // Kernel FUSE passthrough for opens that cannot change a file's allocation
  // (O_RDONLY without O_TRUNC) while the volume has no read limit, where the
  // kernel offers it ("auto"); false ("off"): every read takes the server
  // path. Passthrough reads bypass the iopath queue: its limits, weight and
  // counters (docs/volumes.md). Mount fails if the backing directory is on a
  // stacking filesystem.
  bool read_passthrough = true;
};

struct VolumeUsage {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // allocated bytes, as du(1) of the backing directory counts them
  uint64_t inode_limit = 0;
  uint64_t used_inodes = 0;  // inodes below the root, the root itself excluded
};

// Data-path counters of a mounted volume since Mount(), read from its iopath
// queue with relaxed loads (recent, not a consistent snapshot).
using VolumeIoStats = iopath::IoStatsSnapshot;

// The largest inode limit a volume may be given: 2^32 (4294967296), far
// beyond what a volume can use and far below 2^64 - 1, which statfs(2)
// readers take for "unknown" (df -i shows "-"). The agent, localvolctl and
// localvol-fuse refuse an explicit limit above it.
inline constexpr uint64_t kMaxInodeLimit = uint64_t{1} << 32;

// One inode per 16 KiB of capacity, like mkfs.ext4's default ratio; at least
// 1024 and at most kMaxInodeLimit.
uint64_t DefaultInodeLimit(uint64_t capacity_bytes);

class Volume {
 public:
  // Validates the options, recovers usage, mounts and starts serving.
  // Fails, with nothing mounted and the backing directory unchanged, if an
  // option is invalid, the source already holds more than the limits allow
  // (ENOSPC), the mountpoint is in use (EBUSY), or the mount fails.
  static Result<std::unique_ptr<Volume>> Mount(const VolumeOptions& options);

  // Unmounts if still mounted (see Unmount()).
  ~Volume();

  // Stops serving, unmounts (lazily if the mount is busy, so callers are never
  // stuck), waits for in-flight I/O and persists usage so the next Mount() is
  // exact without a rescan. Idempotent.
  Status Unmount();

  // Blocks until the filesystem is unmounted from outside (fusermount -u,
  // umount) or Unmount() is called.
  void WaitUntilUnmounted();

  // Changes the quotas of the live volume. Growing always succeeds; shrinking
  // below current usage fails with ENOSPC and a message naming the usage, and
  // changes nothing.
  Status SetLimits(uint64_t capacity_bytes, uint64_t inode_limit);

  // Changes the volume's I/O limits and weight, live (see
  // iopath::IoQueue::SetLimits). Fails with EINVAL naming the bad setting, and
  // changes nothing, if `limits` is invalid.
  Status SetIoLimits(const iopath::IoLimits& limits);
  iopath::IoLimits IoLimits() const;

  VolumeUsage Usage() const;
  // All zero once Unmount() has begun.
  VolumeIoStats IoStats() const;
  // Requests taken through FUSE over io_uring since Mount(); 0 when the
  // volume serves /dev/fuse only.
  uint64_t KernelRingRequests() const;
  // Bytes of FUSE over io_uring buffers resident now; 0 without the ring.
  uint64_t KernelRingResidentBytes() const;
  // Whether the kernel granted FUSE passthrough at mount (read_passthrough
  // and Linux 6.9+); the files open with it now, and the opens answered with
  // it since Mount(). Reads of such files never reach the server: IoStats()
  // does not count them.
  bool ReadPassthrough() const;
  uint64_t PassthroughOpenFiles() const;
  uint64_t PassthroughOpensTotal() const;
  // Writes admitted as overwrites of allocated blocks (no reservation and no
  // fstat to settle; see fuse/space.h) since Mount().
  uint64_t Overwrites() const;
  const std::string& mountpoint() const;

  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;

  struct Impl;

 private:
  explicit Volume(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace localvol::fuse
