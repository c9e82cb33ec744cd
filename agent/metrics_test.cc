#include "agent/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/disk_manager.h"
#include "agent/system.h"
#include "base/unique_fd.h"

namespace localvol::agent {
namespace {

TEST(MetricsTest, ExpositionFormat) {
  VolumeInfo v;
  v.name = "db";
  v.disk_id = "u1";
  v.state = "ready";
  v.capacity_bytes = 100;
  v.used_bytes = 40;
  v.inode_limit = 1024;
  v.inodes_used = 3;
  v.io.read_ops = 5;
  v.io.write_bytes = 4096;
  DiskInfo d;
  d.id = "u1";
  d.device = "/dev/sdb";
  d.state = "ready";
  d.size_bytes = 1000;
  d.allocated_bytes = 100;
  DiskInfo refused;
  refused.device = "/dev/sdc";
  refused.state = "refused";
  const std::string text = RenderMetrics({v}, {d, refused});
  for (const char* line : {
           "# TYPE localvol_volume_capacity_bytes gauge\n",
           "localvol_volume_capacity_bytes{volume=\"db\",disk=\"u1\"} 100\n",
           "localvol_volume_used_bytes{volume=\"db\",disk=\"u1\"} 40\n",
           "localvol_volume_inodes_used{volume=\"db\",disk=\"u1\"} 3\n",
           "localvol_volume_inodes_limit{volume=\"db\",disk=\"u1\"} 1024\n",
           "localvol_volume_ready{volume=\"db\",disk=\"u1\"} 1\n",
           "# TYPE localvol_volume_io_ops_total counter\n",
           "localvol_volume_io_ops_total{volume=\"db\",disk=\"u1\",direction=\"read\"} 5\n",
           "localvol_volume_io_ops_total{volume=\"db\",disk=\"u1\",direction=\"write\"} 0\n",
           "localvol_volume_io_bytes_total{volume=\"db\",disk=\"u1\",direction=\"write\"} 4096\n",
           "localvol_disk_size_bytes{disk=\"u1\",device=\"/dev/sdb\"} 1000\n",
           "localvol_disk_allocated_bytes{disk=\"u1\",device=\"/dev/sdb\"} 100\n",
           "localvol_disk_refused{device=\"/dev/sdc\"} 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  EXPECT_EQ(text.find("localvol_disk_size_bytes{disk=\"\""), std::string::npos)
      << "a refused disk has no size";
}

VolumeInfo BusyVolume() {
  VolumeInfo v;
  v.name = "db";
  v.disk_id = "u1";
  v.state = "ready";
  v.io.read_ops = 7;
  v.io.read_bytes = 28672;
  v.io.write_ops = 3;
  v.io.write_bytes = 12288;
  v.io.other_ops = 2;
  v.io.errors = 4;
  v.io.timed_out = 1;
  v.io.throttled_ns = 1'500'000'000;
  v.io.queued = 6;
  v.io.in_flight = 2;
  v.fuse_ring_requests = 41;
  v.fuse_ring_resident_bytes = 3 << 20;
  v.read_passthrough = true;
  v.passthrough_open_files = 3;
  v.passthrough_opens_total = 17;
  // 2 requests <= 50us, 3 <= 100us, 1 <= 1ms, 1 over 10s.
  v.io.latency_count[0] = 2;
  v.io.latency_count[1] = 3;
  v.io.latency_count[4] = 1;
  v.io.latency_count[iopath::kLatencyBuckets - 1] = 1;
  v.io.latency_sum_ns = 12'000'250'000;
  v.io_limits.read_iops = {500, 2000, 10};
  v.io_limits.write_bps.rate = 100ull << 20;
  v.io_limits.weight = 300;
  return v;
}

TEST(MetricsTest, DataPathCountersLimitsAndWeight) {
  const std::string text = RenderMetrics({BusyVolume()}, {});
  const std::string l = "{volume=\"db\",disk=\"u1\"";
  for (const std::string& line : std::vector<std::string>{
           "localvol_volume_io_ops_total" + l + ",direction=\"read\"} 7\n",
           "localvol_volume_io_ops_total" + l + ",direction=\"write\"} 3\n",
           "localvol_volume_io_ops_total" + l + ",direction=\"other\"} 2\n",
           "localvol_volume_io_bytes_total" + l + ",direction=\"read\"} 28672\n",
           "localvol_volume_io_bytes_total" + l + ",direction=\"write\"} 12288\n",
           "# TYPE localvol_volume_throttled_seconds_total counter\n",
           "localvol_volume_throttled_seconds_total" + l + "} 1.5\n",
           "# TYPE localvol_volume_io_queue_depth gauge\n",
           "localvol_volume_io_queue_depth" + l + "} 6\n",
           "# TYPE localvol_volume_io_in_flight gauge\n",
           "localvol_volume_io_in_flight" + l + "} 2\n",
           "# TYPE localvol_volume_io_timeouts_total counter\n",
           "localvol_volume_io_timeouts_total" + l + "} 1\n",
           "localvol_volume_io_errors_total" + l + "} 4\n",
           "localvol_volume_io_weight" + l + "} 300\n",
           "# TYPE localvol_volume_fuse_io_uring_requests_total counter\n",
           "localvol_volume_fuse_io_uring_requests_total" + l + "} 41\n",
           "# TYPE localvol_volume_fuse_io_uring_resident_bytes gauge\n",
           "localvol_volume_fuse_io_uring_resident_bytes" + l + "} 3145728\n",
           "# TYPE localvol_volume_passthrough_open_files gauge\n",
           "localvol_volume_passthrough_open_files" + l + "} 3\n",
           "# TYPE localvol_volume_passthrough_opens_total counter\n",
           "localvol_volume_passthrough_opens_total" + l + "} 17\n",
           "# TYPE localvol_volume_io_limit gauge\n",
           "localvol_volume_io_limit" + l + ",kind=\"read_iops\"} 500\n",
           "localvol_volume_io_limit" + l + ",kind=\"write_bps\"} 104857600\n",
           "localvol_volume_io_burst_limit" + l + ",kind=\"read_iops\"} 2000\n",
           "localvol_volume_io_burst_seconds" + l + ",kind=\"read_iops\"} 10\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  // Limits that are not set have no sample.
  EXPECT_EQ(text.find("kind=\"write_iops\""), std::string::npos) << text;
  EXPECT_EQ(text.find("localvol_volume_io_burst_limit" + l + ",kind=\"write_bps\""),
            std::string::npos);
  // The read metrics say what they do not cover.
  for (const std::string family : {"localvol_volume_io_ops_total", "localvol_volume_io_bytes_total",
                                   "localvol_volume_io_latency_seconds"}) {
    const size_t help = text.find("# HELP " + family + " ");
    ASSERT_NE(help, std::string::npos) << family;
    EXPECT_NE(text.substr(help, text.find('\n', help) - help).find("passthrough"),
              std::string::npos)
        << family << "'s HELP must say passthrough reads are not in it";
  }
  // The old per-direction names are gone (one family per quantity).
  EXPECT_EQ(text.find("localvol_volume_read_ops_total"), std::string::npos);
}

TEST(MetricsTest, LatencyHistogramIsCumulativeInSeconds) {
  VolumeInfo other = BusyVolume();
  other.name = "idle";
  other.io = {};
  const std::string text = RenderMetrics({BusyVolume(), other}, {});
  const std::string b = "localvol_volume_io_latency_seconds_bucket{volume=\"db\",disk=\"u1\",le=";
  for (const std::string& line : std::vector<std::string>{
           "# TYPE localvol_volume_io_latency_seconds histogram\n",
           b + "\"5e-05\"} 2\n",
           b + "\"0.0001\"} 5\n",
           b + "\"0.00025\"} 5\n",
           b + "\"0.0005\"} 5\n",
           b + "\"0.001\"} 6\n",
           b + "\"2.5\"} 6\n",
           b + "\"10\"} 6\n",
           b + "\"+Inf\"} 7\n",
           "localvol_volume_io_latency_seconds_sum{volume=\"db\",disk=\"u1\"} 12.00025\n",
           "localvol_volume_io_latency_seconds_count{volume=\"db\",disk=\"u1\"} 7\n",
           "localvol_volume_io_latency_seconds_bucket{volume=\"idle\",disk=\"u1\",le=\"+Inf\"} 0\n",
           "localvol_volume_io_latency_seconds_count{volume=\"idle\",disk=\"u1\"} 0\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  // One bucket per bound plus +Inf, per volume; never decreasing.
  std::istringstream in(text);
  std::string line;
  int buckets = 0;
  uint64_t last = 0;
  while (std::getline(in, line)) {
    if (line.rfind(b, 0) != 0) continue;
    ++buckets;
    const uint64_t value = std::stoull(line.substr(line.rfind(' ') + 1));
    EXPECT_GE(value, last) << line;
    last = value;
  }
  EXPECT_EQ(buckets, static_cast<int>(iopath::kLatencyBucketsUs.size()) + 1);
}

TEST(MetricsTest, EveryFamilyHasHelpAndTypeOnceBeforeItsSamples) {
  DiskInfo d;
  d.id = "u1";
  d.device = "/dev/sdb";
  d.state = "ready";
  DiskInfo broken = d;
  broken.id = "u2";
  broken.state = "error";
  VolumeInfo second = BusyVolume();
  second.name = "db2";
  const std::string text = RenderMetrics({BusyVolume(), second}, {d, broken});
  std::map<std::string, int> help, type;
  std::map<std::string, std::string> type_of;
  std::string current;  // the family whose samples may follow
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      ++help[name];
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      ++type[name];
      type_of[name] = line.substr(line.rfind(' ') + 1);
      current = name;
      EXPECT_EQ(help[name], 1) << "HELP must precede TYPE for " << name;
      continue;
    }
    const std::string sample = line.substr(0, line.find_first_of("{ "));
    std::string family = sample;
    if (type_of[current] == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string sfx(suffix);
        if (sample.size() > sfx.size() &&
            sample.compare(sample.size() - sfx.size(), sfx.size(), sfx) == 0) {
          family = sample.substr(0, sample.size() - sfx.size());
        }
      }
    }
    EXPECT_EQ(family, current) << "sample outside its family: " << line;
  }
  for (const auto& [name, n] : help) EXPECT_EQ(n, 1) << name;
  for (const auto& [name, n] : type) EXPECT_EQ(n, 1) << name;
  // A disk that cannot serve volumes is listed as not ready, not as refused.
  EXPECT_NE(text.find("localvol_disk_ready{disk=\"u1\",device=\"/dev/sdb\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("localvol_disk_ready{disk=\"u2\",device=\"/dev/sdb\"} 0\n"),
            std::string::npos);
  EXPECT_EQ(text.find("localvol_disk_refused{"), std::string::npos);
}

// A TCP connection to 127.0.0.1:`port` with 5 s send and receive timeouts;
// invalid if it cannot connect.
UniqueFd Connect(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd.Reset();
  return fd;
}

bool Send(const UniqueFd& fd, const std::string& data) {
  return ::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(data.size());
}

// What a scraper gets for GET /metrics: the whole response, or what came
// before a 5 s receive timeout.
std::string Scrape(uint16_t port) {
  UniqueFd fd = Connect(port);
  if (!fd || !Send(fd, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")) return "";
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// True once the server has closed `fd` (EOF or reset), waiting up to `timeout`.
bool ClosedByServer(const UniqueFd& fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
  return false;
}

// The attack that blocked every scrape of the hand-written server: clients
// that send a request line and then a header every 0.5 s, never finishing
// the request, and clients that connect and send nothing. Scrapes made while
// they go on, for longer than the request timeout, must each answer within a
// second, and the server must drop the slow and the idle clients after its
// request timeout.
TEST(MetricsServerTest, SlowAndIdleClientsDoNotBlockAScrape) {
  Config config;
  PosixCommandRunner runner;
  DiskManager disks(config, &runner);
  VolumeManager volumes(VolumeManagerOptions{}, &disks);  // not started: no volumes, no disks
  auto server = MetricsServer::Start(0, &volumes);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const uint16_t port = (*server)->port();
  ASSERT_NE(port, 0);

  constexpr int kSlow = 6;
  constexpr int kIdle = 3;
  static_assert(kSlow + kIdle < MetricsServer::kWorkerThreads);
  std::vector<UniqueFd> slow, idle;
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(Connect(port));
    ASSERT_TRUE(slow.back()) << "connect slow client " << i;
    ASSERT_TRUE(Send(slow.back(), "GET /metrics HTTP/1.1\r\n"));
  }
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(Connect(port));
    ASSERT_TRUE(idle.back()) << "connect idle client " << i;
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    for (int n = 0; !stop; ++n) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      // A client the server has dropped fails here; that is the point.
      for (const auto& fd : slow) (void)Send(fd, "X-Slow-" + std::to_string(n) + ": 1\r\n");
    }
  });

  const auto attack_start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    const auto t0 = std::chrono::steady_clock::now();
    const std::string response = Scrape(port);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << "scrape " << i << ": " << response;
    EXPECT_NE(response.find("# TYPE localvol_disk_refused gauge"), std::string::npos) << response;
    EXPECT_LT(took, std::chrono::seconds(1))
        << "scrape " << i << " took "
        << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  }
  // Still trickling, yet dropped once the request timeout has passed.
  const auto waited = std::chrono::steady_clock::now() - attack_start;
  const auto budget = std::chrono::milliseconds(MetricsServer::kRequestTimeoutMs + 5000) -
                      std::chrono::duration_cast<std::chrono::milliseconds>(waited);
  for (size_t i = 0; i < slow.size(); ++i) {
    EXPECT_TRUE(ClosedByServer(slow[i], std::max(budget, std::chrono::milliseconds(100))))
        << "slow client " << i << " still holds a worker";
  }
  for (size_t i = 0; i < idle.size(); ++i) {
    EXPECT_TRUE(ClosedByServer(idle[i], std::chrono::milliseconds(100)))
        << "idle client " << i << " still holds a worker";
  }
  stop = true;
  trickle.join();
}

TEST(MetricsServerTest, PortInUseFailsNamingIt) {
  Config config;
  PosixCommandRunner runner;
  DiskManager disks(config, &runner);
  VolumeManager volumes(VolumeManagerOptions{}, &disks);
  auto first = MetricsServer::Start(0, &volumes);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = MetricsServer::Start((*first)->port(), &volumes);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.err(), EADDRINUSE) << second.status().ToString();
  EXPECT_NE(second.status().context().find("127.0.0.1:" + std::to_string((*first)->port())),
            std::string::npos)
      << second.status().context();
  EXPECT_NE(second.status().context().find("choose another metrics_port"), std::string::npos);
  // The first one still serves.
  EXPECT_EQ(Scrape((*first)->port()).rfind("HTTP/1.1 200", 0), 0u);
}

}  // namespace
}  // namespace localvol::agent
