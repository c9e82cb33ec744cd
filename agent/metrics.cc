#include "agent/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>

#include <limits>
#include <sstream>

#include "base/logging.h"
#include "base/unique_fd.h"
#include "iopath/io_stats.h"

namespace localvol::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

double Seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

// A family with its samples; each sample's value goes where the type wants it.
class Family {
 public:
  Family(const char* name, MetricType type, const char* help) { f_ = {name, help, type, {}}; }
  void Add(Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f_.type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f_.metric.push_back(std::move(m));
  }
  void AddHistogram(Labels labels, ClientMetric::Histogram h) {
    ClientMetric m;
    m.label = std::move(labels);
    m.histogram = std::move(h);
    f_.metric.push_back(std::move(m));
  }
  MetricFamily Take() { return std::move(f_); }

 private:
  MetricFamily f_;
};

Labels VolumeLabels(const VolumeInfo& v) { return {{"volume", v.name}, {"disk", v.disk_id}}; }

Labels With(Labels labels, const char* name, std::string value) {
  labels.push_back({name, std::move(value)});
  return labels;
}

Labels DiskLabels(const DiskInfo& d) { return {{"disk", d.id}, {"device", d.device}}; }

// The latency histogram of one volume: cumulative buckets in seconds, +Inf last.
ClientMetric::Histogram Latency(const iopath::IoStatsSnapshot& io) {
  ClientMetric::Histogram h;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < iopath::kLatencyBuckets; ++i) {
    cumulative += io.latency_count[i];
    const double bound = i < iopath::kLatencyBucketsUs.size()
                             ? static_cast<double>(iopath::kLatencyBucketsUs[i]) / 1e6
                             : std::numeric_limits<double>::infinity();
    h.bucket.push_back({cumulative, bound});
  }
  h.sample_count = cumulative;
  h.sample_sum = Seconds(io.latency_sum_ns);
  return h;
}

// Renders the VolumeManager's state when a scrape asks for it.
class Collector : public prometheus::Collectable {
 public:
  explicit Collector(const VolumeManager* volumes) : volumes_(volumes) {}
  std::vector<MetricFamily> Collect() const override {
    return CollectMetrics(volumes_->List(), volumes_->Disks());
  }

 private:
  const VolumeManager* const volumes_;
};

// Binds 127.0.0.1:`port` and lets it go, for a bind error with its errno:
// civetweb only says that it failed.
Status CheckPortFree(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("metrics: socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("metrics: bind 127.0.0.1:" + std::to_string(port) +
                             " (choose another metrics_port, or 0 to turn metrics off)");
  }
  return Status::Ok();
}

// A per-volume family whose sample is one field of VolumeInfo.
struct VolumeGauge {
  const char* name;
  MetricType type;
  const char* help;
  uint64_t (*get)(const VolumeInfo&);
};
const VolumeGauge kVolume[] = {
    {"localvol_volume_capacity_bytes", MetricType::Gauge, "Capacity (byte quota) of the volume.",
     [](const VolumeInfo& v) { return v.capacity_bytes; }},
    {"localvol_volume_used_bytes", MetricType::Gauge,
     "Bytes allocated in the volume, as du counts them.",
     [](const VolumeInfo& v) { return v.used_bytes; }},
    {"localvol_volume_inodes_used", MetricType::Gauge, "Inodes used in the volume.",
     [](const VolumeInfo& v) { return v.inodes_used; }},
    {"localvol_volume_inodes_limit", MetricType::Gauge, "Inode quota of the volume.",
     [](const VolumeInfo& v) { return v.inode_limit; }},
    {"localvol_volume_ready", MetricType::Gauge, "1 if the volume is mounted and served, else 0.",
     [](const VolumeInfo& v) -> uint64_t { return v.state == "ready" ? 1 : 0; }},
    // The data path, since the volume was mounted (iopath queue counters).
    {"localvol_volume_io_errors_total", MetricType::Counter,
     "Data-path requests of the volume that failed, timeouts included, since it was mounted.",
     [](const VolumeInfo& v) { return v.io.errors; }},
    {"localvol_volume_io_timeouts_total", MetricType::Counter,
     "Data-path requests of the volume that failed with ETIMEDOUT after waiting in its queue too "
     "long.",
     [](const VolumeInfo& v) { return v.io.timed_out; }},
    {"localvol_volume_io_queue_depth", MetricType::Gauge,
     "Data-path requests of the volume waiting for dispatch (throttled or behind other volumes).",
     [](const VolumeInfo& v) { return v.io.queued; }},
    {"localvol_volume_io_in_flight", MetricType::Gauge,
     "Data-path requests of the volume at the disk now.",
     [](const VolumeInfo& v) { return v.io.in_flight; }},
    {"localvol_volume_fuse_io_uring_requests_total", MetricType::Counter,
     "FUSE requests of the volume taken through FUSE over io_uring since it was mounted "
     "(0 when it serves /dev/fuse only).",
     [](const VolumeInfo& v) { return v.fuse_ring_requests; }},
    {"localvol_volume_fuse_io_uring_resident_bytes", MetricType::Gauge,
     "Memory of the volume's FUSE over io_uring buffers resident now; given back after a "
     "period without requests (0 when it serves /dev/fuse only).",
     [](const VolumeInfo& v) { return v.fuse_ring_resident_bytes; }},
    {"localvol_volume_passthrough_open_files", MetricType::Gauge,
     "Files of the volume open with kernel FUSE passthrough now: their reads go straight to the "
     "backing file, past every localvol_volume_io_* metric, the I/O limits and the fair "
     "sharing (0 with read_passthrough off or where the kernel lacks it).",
     [](const VolumeInfo& v) { return v.passthrough_open_files; }},
    {"localvol_volume_passthrough_opens_total", MetricType::Counter,
     "Opens of the volume's files answered with kernel FUSE passthrough since it was mounted.",
     [](const VolumeInfo& v) { return v.passthrough_opens_total; }},
    {"localvol_volume_io_weight", MetricType::Gauge,
     "Fair-share weight of the volume among the volumes of its disk (default 100).",
     [](const VolumeInfo& v) -> uint64_t { return v.io_limits.weight; }},
};

// One family per entry of kVolume, a sample per volume.
void AppendVolumeGauges(const std::vector<VolumeInfo>& volumes, std::vector<MetricFamily>* out) {
  for (const auto& g : kVolume) {
    Family f(g.name, g.type, g.help);
    for (const auto& v : volumes) f.Add(VolumeLabels(v), static_cast<double>(g.get(v)));
    out->push_back(f.Take());
  }
}

// The data path's counters and latency, by direction where they have one.
void AppendVolumeIo(const std::vector<VolumeInfo>& volumes, std::vector<MetricFamily>* out) {
  Family ops("localvol_volume_io_ops_total", MetricType::Counter,
             "Data-path requests of the volume completed since it was mounted: reads, writes, and "
             "other (fsync, fdatasync, fallocate). Reads of files open with kernel FUSE "
             "passthrough are not counted (see localvol_volume_passthrough_open_files).");
  Family bytes(
      "localvol_volume_io_bytes_total", MetricType::Counter,
      "Bytes read and written by the data path of the volume since it was mounted. Reads of "
      "files open with kernel FUSE passthrough are not counted.");
  Family throttled("localvol_volume_throttled_seconds_total", MetricType::Counter,
                   "Time the volume's oldest data-path request was held back by its I/O limits.");
  // Request latency, from submission to completion (queueing and throttling
  // included).
  Family latency(
      "localvol_volume_io_latency_seconds", MetricType::Histogram,
      "Latency of the volume's data-path requests, from submission to completion, queueing "
      "and throttling included; reads of files open with kernel FUSE passthrough are not "
      "included.");
  for (const auto& v : volumes) {
    const Labels l = VolumeLabels(v);
    ops.Add(With(l, "direction", "read"), static_cast<double>(v.io.read_ops));
    ops.Add(With(l, "direction", "write"), static_cast<double>(v.io.write_ops));
    ops.Add(With(l, "direction", "other"), static_cast<double>(v.io.other_ops));
    bytes.Add(With(l, "direction", "read"), static_cast<double>(v.io.read_bytes));
    bytes.Add(With(l, "direction", "write"), static_cast<double>(v.io.write_bytes));
    throttled.Add(l, Seconds(v.io.throttled_ns));
    latency.AddHistogram(l, Latency(v.io));
  }
  for (Family* f : {&ops, &bytes, &throttled, &latency}) out->push_back(f->Take());
}

// The configured limits; a limit that is not set has no sample.
struct Limit {
  const char* kind;
  iopath::RateLimit iopath::IoLimits::*member;
};
const Limit kLimits[] = {
    {"read_iops", &iopath::IoLimits::read_iops},
    {"write_iops", &iopath::IoLimits::write_iops},
    {"read_bps", &iopath::IoLimits::read_bps},
    {"write_bps", &iopath::IoLimits::write_bps},
};
// One family per field of a limit; a limit (or burst) that is not set has
// no sample.
struct LimitGauge {
  const char* name;
  const char* help;
  bool (*present)(const iopath::RateLimit&);
  uint64_t (*value)(const iopath::RateLimit&);
};
const LimitGauge kLimitGauges[] = {
    {"localvol_volume_io_limit",
     "Sustained I/O limit of the volume: operations per second for kind read_iops and "
     "write_iops, bytes per second for read_bps and write_bps. No sample: no limit.",
     [](const iopath::RateLimit& r) { return r.limited(); },
     [](const iopath::RateLimit& r) { return r.rate; }},
    {"localvol_volume_io_burst_limit",
     "Burst rate of an I/O limit of the volume (units as localvol_volume_io_limit). No "
     "sample: no burst.",
     [](const iopath::RateLimit& r) { return r.burst_rate > 0; },
     [](const iopath::RateLimit& r) { return r.burst_rate; }},
    {"localvol_volume_io_burst_seconds",
     "How long a full burst of an I/O limit of the volume lasts at its burst rate.",
     [](const iopath::RateLimit& r) { return r.burst_rate > 0; },
     [](const iopath::RateLimit& r) { return uint64_t{r.burst_seconds}; }},
};

// One family per entry of kLimitGauges, a sample per volume and kind of limit
// that is set.
void AppendVolumeLimits(const std::vector<VolumeInfo>& volumes, std::vector<MetricFamily>* out) {
  for (const auto& g : kLimitGauges) {
    Family f(g.name, MetricType::Gauge, g.help);
    for (const auto& v : volumes) {
      for (const auto& k : kLimits) {
        const iopath::RateLimit& r = v.io_limits.*k.member;
        if (g.present(r))
          f.Add(With(VolumeLabels(v), "kind", k.kind), static_cast<double>(g.value(r)));
      }
    }
    out->push_back(f.Take());
  }
}

// A per-disk gauge whose sample is one field of DiskInfo.
struct DiskGauge {
  const char* name;
  const char* help;
  uint64_t (*get)(const DiskInfo&);
};
const DiskGauge kDisk[] = {
    {"localvol_disk_size_bytes", "Size of the disk's filesystem.",
     [](const DiskInfo& d) { return d.size_bytes; }},
    {"localvol_disk_reserve_bytes", "Space kept back for filesystem metadata.",
     [](const DiskInfo& d) { return d.reserve_bytes; }},
    {"localvol_disk_allocated_bytes",
     "Sum of the capacities of the disk's volumes (plus deleted data not yet removed).",
     [](const DiskInfo& d) { return d.allocated_bytes; }},
    {"localvol_disk_free_bytes", "Space a new volume may still be given.",
     [](const DiskInfo& d) { return d.free_bytes; }},
    {"localvol_disk_volumes", "Volumes on the disk.",
     [](const DiskInfo& d) -> uint64_t { return d.volume_count; }},
    {"localvol_disk_ready",
     "1 if the disk can serve volumes, 0 if it cannot (its I/O engine failed; see the log).",
     [](const DiskInfo& d) -> uint64_t { return d.state == "ready" ? 1 : 0; }},
};

// One family per entry of kDisk, a sample per disk that is not refused; then
// the refused devices.
void AppendDisks(const std::vector<DiskInfo>& disks, std::vector<MetricFamily>* out) {
  for (const auto& g : kDisk) {
    Family f(g.name, MetricType::Gauge, g.help);
    for (const auto& d : disks) {
      if (d.state != "refused") f.Add(DiskLabels(d), static_cast<double>(g.get(d)));
    }
    out->push_back(f.Take());
  }
  Family refused("localvol_disk_refused", MetricType::Gauge,
                 "1 for each configured device the agent refused to use.");
  for (const auto& d : disks) {
    if (d.state == "refused")
      refused.Add({{"device", d.device.empty() ? d.configured_as : d.device}}, 1);
  }
  out->push_back(refused.Take());
}

}  // namespace

std::vector<MetricFamily> CollectMetrics(const std::vector<VolumeInfo>& volumes,
                                         const std::vector<DiskInfo>& disks) {
  std::vector<MetricFamily> out;
  AppendVolumeGauges(volumes, &out);
  AppendVolumeIo(volumes, &out);
  AppendVolumeLimits(volumes, &out);
  AppendDisks(disks, &out);
  return out;
}

std::string RenderMetrics(const std::vector<VolumeInfo>& volumes,
                          const std::vector<DiskInfo>& disks) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, CollectMetrics(volumes, disks));
  return out.str();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(uint16_t port,
                                                            const VolumeManager* volumes) {
  if (Status s = CheckPortFree(port); !s.ok()) return s;
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->collector_ = std::make_shared<Collector>(volumes);
  const std::string where = "127.0.0.1:" + std::to_string(port);
  try {
    // civetweb options. Keep-alive off: an idle connection between scrapes
    // would hold a worker. No linger option: close() then never waits for a
    // client that does not read.
    s->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports",
        where,
        "num_threads",
        std::to_string(kWorkerThreads),
        "request_timeout_ms",
        std::to_string(kRequestTimeoutMs),
        "enable_keep_alive",
        "no",
    });
    s->exposer_->RegisterCollectable(s->collector_);
  } catch (const std::exception& e) {
    return Status::Error(EADDRNOTAVAIL,
                         "metrics: cannot serve " + where + ": " + e.what() +
                             " (choose another metrics_port, or 0 to turn metrics off)");
  }
  const std::vector<int> ports = s->exposer_->GetListeningPorts();
  s->port_ = ports.empty() ? port : static_cast<uint16_t>(ports.front());
  GetLogger("metrics")->info("Prometheus metrics on http://127.0.0.1:{}/metrics", s->port_);
  return s;
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  exposer_.reset();  // stops civetweb: joins its threads
  collector_.reset();
}

}  // namespace localvol::agent
