#include "agent/metrics.h"

#include <gtest/gtest.h>

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
           "# TYPE localvol_volume_read_ops_total counter\n",
           "localvol_volume_read_ops_total{volume=\"db\",disk=\"u1\"} 5\n",
           "localvol_volume_write_bytes_total{volume=\"db\",disk=\"u1\"} 4096\n",
           "localvol_disk_size_bytes{disk=\"u1\",device=\"/dev/sdb\"} 1000\n",
           "localvol_disk_allocated_bytes{disk=\"u1\",device=\"/dev/sdb\"} 100\n",
           "localvol_disk_refused{device=\"/dev/sdc\"} 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  EXPECT_EQ(text.find("localvol_disk_size_bytes{disk=\"\""), std::string::npos) << "a refused disk has no size";
}

}  // namespace
}  // namespace localvol::agent
