// MetricsServer: Prometheus metrics on http://127.0.0.1:<port>/metrics,
// served by prometheus-cpp's Exposer (civetweb).
//
// Per volume (labels volume, disk): capacity, used bytes, inodes used and
// limit, whether it is served; its data path since it was mounted (iopath
// queue counters): ops by direction (read, write, other) and bytes by
// direction, errors, timeouts, time throttled, queue depth and requests in
// flight, a latency histogram (localvol_volume_io_latency_seconds, buckets
// from iopath::kLatencyBucketsUs); and its I/O limits (io_limit,
// io_burst_limit, io_burst_seconds by kind; only the limits that are set) and
// weight. Per disk: size, reserve, allocated and free space, volume count,
// whether it can serve volumes; and each refused device. prometheus-cpp adds
// the exposer's own exposer_* families.
// Only loopback is bound: the node's Prometheus agent scrapes it locally.
//
// Values are read at scrape time: the collector asks the VolumeManager
// (thread-safe List()/Disks()) for every volume and disk, so one scrape shows
// one moment of each volume and the data path pays nothing per I/O.
//
// Threading: civetweb's listener thread accepts; kWorkerThreads workers each
// serve one connection at a time and run the collector for a scrape. A
// connection that has not sent its whole request within the request timeout
// is closed, and keep-alive is off, so clients that send slowly or not at all
// hold a worker for a bounded time, and a scrape finds a free worker while
// fewer than kWorkerThreads such clients are connected. Stop() (or the
// destructor) stops civetweb and joins its threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/volume_manager.h"
#include "base/status.h"

namespace prometheus {
class Exposer;
class Collectable;
struct MetricFamily;
}  // namespace prometheus

namespace localvol::agent {

// The metric families for these volumes and disks.
std::vector<prometheus::MetricFamily> CollectMetrics(const std::vector<VolumeInfo>& volumes,
                                                     const std::vector<DiskInfo>& disks);

// The same in the Prometheus text exposition format, as a scrape shows it.
std::string RenderMetrics(const std::vector<VolumeInfo>& volumes,
                          const std::vector<DiskInfo>& disks);

class MetricsServer {
 public:
  // Workers serving connections; see the threading note above.
  static constexpr int kWorkerThreads = 16;
  // How long a connection may take to send its request (and a response to be
  // sent) before it is closed.
  static constexpr int kRequestTimeoutMs = 2000;

  // Binds 127.0.0.1:`port` (0: any free port, see port()). `volumes` is
  // borrowed and must outlive the server. Fails naming the port when it
  // cannot be bound.
  static Result<std::unique_ptr<MetricsServer>> Start(uint16_t port, const VolumeManager* volumes);
  ~MetricsServer();
  // Stops serving; a scrape in progress finishes first. Idempotent.
  void Stop();
  uint16_t port() const { return port_; }

 private:
  MetricsServer() = default;

  std::shared_ptr<prometheus::Collectable> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  uint16_t port_ = 0;
};

}  // namespace localvol::agent
