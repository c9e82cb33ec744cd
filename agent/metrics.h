// MetricsServer: Prometheus text exposition on 127.0.0.1:<port>/metrics.
//
// Per volume (labels volume, disk): capacity, used bytes, inodes used and
// limit, whether it is served; its data path since it was mounted (iopath
// queue counters): ops by direction (read, write, other) and bytes by
// direction, errors, timeouts, time throttled, queue depth and requests in
// flight, a latency histogram (localvol_volume_io_latency_seconds, buckets
// from iopath::kLatencyBucketsUs); and its I/O limits (io_limit,
// io_burst_limit, io_burst_seconds by kind; only the limits that are set) and
// weight. Per disk: size, reserve, allocated and free space, volume count,
// whether it can serve volumes; and each refused device.
// Only loopback is bound: the node's Prometheus agent scrapes it locally.
//
// Threading: one thread, owned by the server, accepts and answers one
// connection at a time (2 s I/O timeout per connection) and reads the
// VolumeManager through its thread-safe List()/Disks(). Stop() (or the
// destructor) wakes it through an eventfd and joins it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/volume_manager.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace localvol::agent {

// The exposition text for these volumes and disks.
std::string RenderMetrics(const std::vector<VolumeInfo>& volumes, const std::vector<DiskInfo>& disks);

class MetricsServer {
 public:
  // Binds 127.0.0.1:`port` (0: any free port, see port()). `volumes` is
  // borrowed and must outlive the server.
  static Result<std::unique_ptr<MetricsServer>> Start(uint16_t port, const VolumeManager* volumes);
  ~MetricsServer();
  void Stop();
  uint16_t port() const { return port_; }

 private:
  MetricsServer() = default;
  void Loop();
  void Serve(int conn);

  const VolumeManager* volumes_ = nullptr;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;  // eventfd
  uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace localvol::agent
