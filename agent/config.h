// Config: the agent's YAML configuration (default /etc/localvol/config.yaml).
//
//   disks:                        # the dedicated disks; nothing else is ever touched
//     - device: /dev/disk/by-id/nvme-SAMSUNG_*   # a device path or a glob pattern
//     - device: /dev/sdc
//       wipe: true                # may wipe an existing signature (one exact device only)
//       reserve: 4Gi              # overrides the global reserve for this disk
//   filesystem: xfs               # xfs (default) or ext4, for disks the agent formats
//   publish_dir: /mnt/disks       # volumes are mounted at <publish_dir>/<name>
//   state_dir: /var/lib/localvol  # disk mount points, the embedded disk image
//   reserve: 5%                   # per disk: a size ("2Gi") or a percentage of the filesystem
//   socket: /run/localvol/localvol.sock
//   log_level: info               # trace, debug, info, warn, error, critical, off
//   metrics_port: 9477            # Prometheus text on 127.0.0.1; 0 turns it off
//   embedded_disk_size: 10Gi      # the file-backed disk used when `disks` is empty
//   io_scheduler: fair            # fair (default): volumes of a disk share it by
//                                 # weight; fifo: arrival order, no sharing (for
//                                 # measuring what fair sharing buys). Limits apply
//                                 # either way.
//   io_contended_in_flight: 64Ki  # while volumes of a disk contend, the ring takes
//                                 # more only from volumes with nothing in it once it
//                                 # holds this much cost (bytes + 32Ki per request);
//                                 # 0: no cap. See docs/isolation.md.
//   fuse_io_uring: false          # true: volumes take FUSE requests through
//                                 # io_uring where the kernel offers it (fuse
//                                 # module parameter enable_uring); see
//                                 # fuse/kernel_ring.h and docs/performance.md, section 7.
//   fuse_thread_placement: true   # false: FUSE serving threads are left to the
//                                 # scheduler instead of placing themselves on
//                                 # CPUs (fuse/thread_placement.h, a heuristic
//                                 # tuned on a 2-CPU machine)
//   read_passthrough: auto        # auto (default): read-only opens of a volume with no
//                                 # read limit, on a disk it does not share fairly with
//                                 # other volumes, are served by kernel FUSE passthrough
//                                 # where the kernel offers it (Linux 6.9+); off: every
//                                 # read goes through localvold. See docs/volumes.md.
//   node_name: node-1             # the Kubernetes node name (CSI node id and the
//                                 # value of topology.localvol.io/node); default:
//                                 # $NODE_NAME, else the host name
//   csi_socket: /var/lib/kubelet/plugins/localvol.io/csi.sock
//                                 # the CSI driver's socket (agent/csi/); "" turns
//                                 # CSI off
//
// Every key is optional. An unknown key, a value of the wrong type or an
// invalid value is an error whose message names the key ("disks[1].wipe: ...");
// so is a key given twice in one map, naming both lines.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "iopath/engine.h"

namespace localvol::agent {

inline constexpr const char* kDefaultConfigPath = "/etc/localvol/config.yaml";
inline constexpr const char* kDefaultSocketPath = "/run/localvol/localvol.sock";
inline constexpr const char* kDefaultCsiSocketPath =
    "/var/lib/kubelet/plugins/localvol.io/csi.sock";

enum class FsType { kXfs, kExt4 };
std::string FsTypeName(FsType type);

// A capacity reserve: a fixed size, or a percentage of the filesystem size.
struct Reserve {
  uint64_t bytes = 0;
  double percent = 0;  // used when > 0
  // The reserve for a filesystem of `fs_size` bytes, never more than fs_size.
  uint64_t For(uint64_t fs_size) const;
  std::string ToString() const;
};

struct DiskEntry {
  std::string device;  // a path or a glob(7) pattern, as written
  bool wipe = false;   // only for an exact path
  std::optional<Reserve> reserve;
  bool IsPattern() const;
};

struct Config {
  std::string source = "(defaults)";  // the file it was read from
  std::vector<DiskEntry> disks;
  FsType filesystem = FsType::kXfs;
  std::string publish_dir = "/mnt/disks";
  std::string state_dir = "/var/lib/localvol";
  Reserve reserve{0, 5.0};
  std::string socket = kDefaultSocketPath;
  std::string log_level = "info";
  uint16_t metrics_port = 9477;
  uint64_t embedded_disk_size = 10ull << 30;
  iopath::IoPolicy io_scheduler = iopath::IoPolicy::kFair;
  uint64_t io_contended_in_flight = iopath::kDefaultContendedInFlightCost;
  bool fuse_io_uring = false;
  bool fuse_thread_placement = true;
  bool read_passthrough = true;  // "auto"; false: "off"
  std::string node_name;         // "": $NODE_NAME, else the host name (agent/csi/)
  std::string csi_socket = kDefaultCsiSocketPath;  // "": no CSI driver
};

// OK if `name` can be the node name (a topology label value: 1 to 63 of
// [A-Za-z0-9._-], starting and ending with a letter or digit); else EINVAL
// saying so.
Status ValidateNodeName(const std::string& name);

// Parses YAML text. `source` names the text in messages (usually the path).
// Fails with EINVAL and a message naming the key and what is wrong.
Result<Config> ParseConfig(const std::string& text, const std::string& source);

// Reads and parses `path`. A missing file fails with ENOENT naming the path;
// a directory or anything else that is not a regular file with EINVAL.
Result<Config> LoadConfig(const std::string& path);

}  // namespace localvol::agent
