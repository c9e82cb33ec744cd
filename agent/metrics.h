// MetricsServer: Prometheus text exposition on 127.0.0.1:<port>/metrics.
//
// Per volume: capacity, used bytes, inodes used and limit, read/write ops and
// bytes (iopath queue counters since the volume was mounted), and whether it
// is served. Per disk: size, reserve, allocated and free space, volume count.
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
