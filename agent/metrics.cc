#include "agent/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

#include "base/logging.h"
#include "iopath/io_stats.h"

namespace localvol::agent {
namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// `value` / 10^digits as an exact decimal: (2500000, 6) -> "2.5", (50, 6) ->
// "0.00005", (0, 9) -> "0".
std::string Decimal(uint64_t value, int digits) {
  uint64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  std::string frac = std::to_string(value % scale);
  frac.insert(0, static_cast<size_t>(digits) - frac.size(), '0');
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  return std::to_string(value / scale) + (frac.empty() ? "" : "." + frac);
}

std::string Seconds(uint64_t ns) { return Decimal(ns, 9); }

class Writer {
 public:
  // HELP and TYPE, once per family, before its samples.
  void Family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  void Sample(const std::string& name, const std::string& labels, uint64_t value) {
    Sample(name, labels, std::to_string(value));
  }
  void Sample(const std::string& name, const std::string& labels, const std::string& value) {
    out_ << name << "{" << labels << "} " << value << "\n";
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

std::string VolumeLabels(const VolumeInfo& v) {
  return "volume=\"" + Escape(v.name) + "\",disk=\"" + Escape(v.disk_id) + "\"";
}

std::string DiskLabels(const DiskInfo& d) {
  return "disk=\"" + Escape(d.id) + "\",device=\"" + Escape(d.device) + "\"";
}

bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string RenderMetrics(const std::vector<VolumeInfo>& volumes, const std::vector<DiskInfo>& disks) {
  Writer w;
  struct VolumeGauge {
    const char* name;
    const char* type;
    const char* help;
    uint64_t (*get)(const VolumeInfo&);
  };
  static const VolumeGauge kVolume[] = {
      {"localvol_volume_capacity_bytes", "gauge", "Capacity (byte quota) of the volume.",
       [](const VolumeInfo& v) { return v.capacity_bytes; }},
      {"localvol_volume_used_bytes", "gauge", "Bytes allocated in the volume, as du counts them.",
       [](const VolumeInfo& v) { return v.used_bytes; }},
      {"localvol_volume_inodes_used", "gauge", "Inodes used in the volume.",
       [](const VolumeInfo& v) { return v.inodes_used; }},
      {"localvol_volume_inodes_limit", "gauge", "Inode quota of the volume.",
       [](const VolumeInfo& v) { return v.inode_limit; }},
      {"localvol_volume_ready", "gauge", "1 if the volume is mounted and served, else 0.",
       [](const VolumeInfo& v) -> uint64_t { return v.state == "ready" ? 1 : 0; }},
      // The data path, since the volume was mounted (iopath queue counters).
      {"localvol_volume_io_errors_total", "counter",
       "Data-path requests of the volume that failed, timeouts included, since it was mounted.",
       [](const VolumeInfo& v) { return v.io.errors; }},
      {"localvol_volume_io_timeouts_total", "counter",
       "Data-path requests of the volume that failed with ETIMEDOUT after waiting in its queue too long.",
       [](const VolumeInfo& v) { return v.io.timed_out; }},
      {"localvol_volume_io_queue_depth", "gauge",
       "Data-path requests of the volume waiting for dispatch (throttled or behind other volumes).",
       [](const VolumeInfo& v) { return v.io.queued; }},
      {"localvol_volume_io_in_flight", "gauge", "Data-path requests of the volume at the disk now.",
       [](const VolumeInfo& v) { return v.io.in_flight; }},
      {"localvol_volume_fuse_io_uring_requests_total", "counter",
       "FUSE requests of the volume taken through FUSE over io_uring since it was mounted "
       "(0 when it serves /dev/fuse only).",
       [](const VolumeInfo& v) { return v.fuse_ring_requests; }},
      {"localvol_volume_fuse_io_uring_resident_bytes", "gauge",
       "Memory of the volume's FUSE over io_uring buffers resident now; given back after a "
       "period without requests (0 when it serves /dev/fuse only).",
       [](const VolumeInfo& v) { return v.fuse_ring_resident_bytes; }},
      {"localvol_volume_io_weight", "gauge",
       "Fair-share weight of the volume among the volumes of its disk (default 100).",
       [](const VolumeInfo& v) -> uint64_t { return v.io_limits.weight; }},
  };
  for (const auto& g : kVolume) {
    w.Family(g.name, g.type, g.help);
    for (const auto& v : volumes) w.Sample(g.name, VolumeLabels(v), g.get(v));
  }

  w.Family("localvol_volume_io_ops_total", "counter",
           "Data-path requests of the volume completed since it was mounted: reads, writes, and "
           "other (fsync, fdatasync, fallocate).");
  for (const auto& v : volumes) {
    const std::string l = VolumeLabels(v);
    w.Sample("localvol_volume_io_ops_total", l + ",direction=\"read\"", v.io.read_ops);
    w.Sample("localvol_volume_io_ops_total", l + ",direction=\"write\"", v.io.write_ops);
    w.Sample("localvol_volume_io_ops_total", l + ",direction=\"other\"", v.io.other_ops);
  }
  w.Family("localvol_volume_io_bytes_total", "counter",
           "Bytes read and written by the data path of the volume since it was mounted.");
  for (const auto& v : volumes) {
    const std::string l = VolumeLabels(v);
    w.Sample("localvol_volume_io_bytes_total", l + ",direction=\"read\"", v.io.read_bytes);
    w.Sample("localvol_volume_io_bytes_total", l + ",direction=\"write\"", v.io.write_bytes);
  }
  w.Family("localvol_volume_throttled_seconds_total", "counter",
           "Time the volume's oldest data-path request was held back by its I/O limits.");
  for (const auto& v : volumes) {
    w.Sample("localvol_volume_throttled_seconds_total", VolumeLabels(v), Seconds(v.io.throttled_ns));
  }

  // Request latency, from submission to completion (queueing and throttling
  // included). Buckets are cumulative, as Prometheus wants them.
  const std::string latency = "localvol_volume_io_latency_seconds";
  w.Family(latency.c_str(), "histogram",
           "Latency of the volume's data-path requests, from submission to completion, queueing "
           "and throttling included.");
  for (const auto& v : volumes) {
    const std::string l = VolumeLabels(v);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < iopath::kLatencyBuckets; ++i) {
      cumulative += v.io.latency_count[i];
      const std::string le =
          i < iopath::kLatencyBucketsUs.size() ? Decimal(iopath::kLatencyBucketsUs[i], 6) : "+Inf";
      w.Sample(latency + "_bucket", l + ",le=\"" + le + "\"", cumulative);
    }
    w.Sample(latency + "_sum", l, Seconds(v.io.latency_sum_ns));
    w.Sample(latency + "_count", l, cumulative);
  }

  // The configured limits; a limit that is not set has no sample.
  struct Limit {
    const char* kind;
    iopath::RateLimit iopath::IoLimits::*member;
  };
  static const Limit kLimits[] = {
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
  static const LimitGauge kLimitGauges[] = {
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
  for (const auto& g : kLimitGauges) {
    w.Family(g.name, "gauge", g.help);
    for (const auto& v : volumes) {
      for (const auto& k : kLimits) {
        const iopath::RateLimit& r = v.io_limits.*k.member;
        if (g.present(r)) w.Sample(g.name, VolumeLabels(v) + ",kind=\"" + k.kind + "\"", g.value(r));
      }
    }
  }
  struct DiskGauge {
    const char* name;
    const char* help;
    uint64_t (*get)(const DiskInfo&);
  };
  static const DiskGauge kDisk[] = {
      {"localvol_disk_size_bytes", "Size of the disk's filesystem.", [](const DiskInfo& d) { return d.size_bytes; }},
      {"localvol_disk_reserve_bytes", "Space kept back for filesystem metadata.",
       [](const DiskInfo& d) { return d.reserve_bytes; }},
      {"localvol_disk_allocated_bytes", "Sum of the capacities of the disk's volumes (plus deleted data not yet removed).",
       [](const DiskInfo& d) { return d.allocated_bytes; }},
      {"localvol_disk_free_bytes", "Space a new volume may still be given.",
       [](const DiskInfo& d) { return d.free_bytes; }},
      {"localvol_disk_volumes", "Volumes on the disk.",
       [](const DiskInfo& d) -> uint64_t { return d.volume_count; }},
  };
  for (const auto& g : kDisk) {
    w.Family(g.name, "gauge", g.help);
    for (const auto& d : disks) {
      if (d.state != "refused") w.Sample(g.name, DiskLabels(d), g.get(d));
    }
  }
  w.Family("localvol_disk_ready", "gauge",
           "1 if the disk can serve volumes, 0 if it cannot (its I/O engine failed; see the log).");
  for (const auto& d : disks) {
    if (d.state != "refused") w.Sample("localvol_disk_ready", DiskLabels(d), d.state == "ready" ? 1 : 0);
  }
  w.Family("localvol_disk_refused", "gauge", "1 for each configured device the agent refused to use.");
  for (const auto& d : disks) {
    if (d.state == "refused") {
      w.Sample("localvol_disk_refused", "device=\"" + Escape(d.device.empty() ? d.configured_as : d.device) + "\"", 1);
    }
  }
  return w.str();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(uint16_t port, const VolumeManager* volumes) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->volumes_ = volumes;
  s->listen_fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s->listen_fd_) return Status::FromErrno("socket");
  int one = 1;
  ::setsockopt(s->listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(s->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("metrics: bind 127.0.0.1:" + std::to_string(port) +
                             " (choose another metrics_port, or 0 to turn metrics off)");
  }
  if (::listen(s->listen_fd_.get(), 16) != 0) return Status::FromErrno("metrics: listen");
  socklen_t len = sizeof addr;
  ::getsockname(s->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  s->port_ = ntohs(addr.sin_port);
  s->stop_fd_.Reset(::eventfd(0, EFD_CLOEXEC));
  if (!s->stop_fd_) return Status::FromErrno("eventfd");
  MetricsServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->Loop(); });
  GetLogger("metrics")->info("Prometheus metrics on http://127.0.0.1:{}/metrics", s->port_);
  return s;
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  thread_.join();
}

void MetricsServer::Loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      GetLogger("metrics")->error("poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    Serve(conn.get());
  }
}

void MetricsServer::Serve(int conn) {
  timeval tv{2, 0};
  ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos &&
         req.size() < 8192) {
    ssize_t n = ::recv(conn, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    req.append(buf, static_cast<size_t>(n));
  }
  std::istringstream first(req.substr(0, req.find('\n')));
  std::string method, target;
  first >> method >> target;
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (method != "GET" && method != "HEAD") {
    status = "405 Method Not Allowed";
    type = "text/plain";
    body = "only GET\n";
  } else if (target == "/metrics" || target.rfind("/metrics?", 0) == 0) {
    body = RenderMetrics(volumes_->List(), volumes_->Disks());
  } else if (target == "/") {
    type = "text/plain";
    body = "localvold: metrics are at /metrics\n";
  } else {
    status = "404 Not Found";
    type = "text/plain";
    body = "not found; metrics are at /metrics\n";
  }
  std::string resp = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                     "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  if (method != "HEAD") resp += body;
  (void)SendAll(conn, resp);
}

}  // namespace localvol::agent
