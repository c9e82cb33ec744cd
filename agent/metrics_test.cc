#include "agent/metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>
#include <sstream>

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
  EXPECT_EQ(text.find("localvol_disk_size_bytes{disk=\"\""), std::string::npos) << "a refused disk has no size";
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
  EXPECT_EQ(text.find("localvol_volume_io_burst_limit" + l + ",kind=\"write_bps\""), std::string::npos);
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
           b + "\"0.00005\"} 2\n",
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
        if (sample.size() > sfx.size() && sample.compare(sample.size() - sfx.size(), sfx.size(), sfx) == 0) {
          family = sample.substr(0, sample.size() - sfx.size());
        }
      }
    }
    EXPECT_EQ(family, current) << "sample outside its family: " << line;
  }
  for (const auto& [name, n] : help) EXPECT_EQ(n, 1) << name;
  for (const auto& [name, n] : type) EXPECT_EQ(n, 1) << name;
  // A disk that cannot serve volumes is listed as not ready, not as refused.
  EXPECT_NE(text.find("localvol_disk_ready{disk=\"u1\",device=\"/dev/sdb\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("localvol_disk_ready{disk=\"u2\",device=\"/dev/sdb\"} 0\n"), std::string::npos);
  EXPECT_EQ(text.find("localvol_disk_refused{"), std::string::npos);
}

}  // namespace
}  // namespace localvol::agent
