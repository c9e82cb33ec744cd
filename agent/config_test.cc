#include "agent/config.h"

#include <gtest/gtest.h>

#include "agent/volume_manager.h"

namespace localvol::agent {
namespace {

// The message of a failed parse; "" when it parsed.
std::string ErrorOf(const std::string& yaml) {
  auto c = ParseConfig(yaml, "test.yaml");
  if (c.ok()) return "";
  EXPECT_EQ(c.err(), EINVAL);
  return c.status().context();
}

TEST(ConfigTest, EmptyFileGivesDefaults) {
  auto c = ParseConfig("", "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->disks.empty());
  EXPECT_EQ(c->filesystem, FsType::kXfs);
  EXPECT_EQ(c->publish_dir, "/mnt/disks");
  EXPECT_EQ(c->state_dir, "/var/lib/localvol");
  EXPECT_EQ(c->socket, "/run/localvol/localvol.sock");
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->metrics_port, 9477);
  EXPECT_EQ(c->embedded_disk_size, 10ull << 30);
  EXPECT_EQ(c->reserve.For(1000), 50u);
  EXPECT_EQ(c->io_scheduler, iopath::IoPolicy::kFair);
  EXPECT_EQ(c->io_contended_in_flight, 64u << 10);
  EXPECT_FALSE(c->fuse_io_uring);
  EXPECT_TRUE(c->fuse_thread_placement);
  EXPECT_TRUE(c->read_passthrough);
}

TEST(ConfigTest, FullConfig) {
  auto c = ParseConfig(R"(
disks:
  - /dev/sdb
  - device: /dev/disk/by-id/nvme-*
    reserve: 1Gi
  - device: /dev/sdc
    wipe: true
filesystem: ext4
publish_dir: /srv/volumes/
state_dir: /srv/state
reserve: 2%
socket: /tmp/x.sock
log_level: debug
metrics_port: 0
embedded_disk_size: 2Gi
io_scheduler: fifo
io_contended_in_flight: 1Mi
fuse_io_uring: true
fuse_thread_placement: false
read_passthrough: off
)",
                       "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->disks.size(), 3u);
  EXPECT_EQ(c->disks[0].device, "/dev/sdb");
  EXPECT_FALSE(c->disks[0].wipe);
  EXPECT_TRUE(c->disks[1].IsPattern());
  ASSERT_TRUE(c->disks[1].reserve.has_value());
  EXPECT_EQ(c->disks[1].reserve->For(10ull << 30), 1ull << 30);
  EXPECT_TRUE(c->disks[2].wipe);
  EXPECT_EQ(c->filesystem, FsType::kExt4);
  EXPECT_EQ(c->publish_dir, "/srv/volumes");
  EXPECT_EQ(c->reserve.For(1000), 20u);
  EXPECT_EQ(c->metrics_port, 0);
  EXPECT_EQ(c->embedded_disk_size, 2ull << 30);
  EXPECT_EQ(c->io_scheduler, iopath::IoPolicy::kFifo);
  EXPECT_EQ(c->io_contended_in_flight, 1u << 20);
  EXPECT_TRUE(c->fuse_io_uring);
  EXPECT_FALSE(c->fuse_thread_placement);
  EXPECT_FALSE(c->read_passthrough);
}

TEST(ConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* yaml;
    const char* must_contain;
  } cases[] = {
      {"colour: blue\n", "colour: unknown key"},
      {"disks:\n  - device: /dev/sdb\n    wipe: yes please\n",
       "disks[0].wipe: expected true or false"},
      {"disks:\n  - device: /dev/sdb\n    size: 3\n", "disks[0].size: unknown key"},
      {"disks:\n  - wipe: true\n", "disks[0].device: missing"},
      {"disks:\n  - device: /dev/disk/by-id/*\n    wipe: true\n",
       "disks[0].wipe: wipe: true is only allowed"},
      {"disks:\n  - dev/sdb\n", "disks[0]: expected an absolute path"},
      {"disks:\n  - /dev/sdb\n  - /dev/sdb\n", "disks[1]: '/dev/sdb' is listed twice"},
      {"disks: /dev/sdb\n", "disks: expected a list"},
      {"filesystem: btrfs\n", "filesystem: expected xfs or ext4, not 'btrfs'"},
      {"reserve: lots\n", "reserve: expected a size"},
      {"reserve: 150%\n", "reserve: expected a percentage"},
      {"metrics_port: 70000\n", "metrics_port: expected a TCP port"},
      {"metrics_port: [1]\n", "metrics_port: expected a single value"},
      {"log_level: loud\n", "log_level: expected trace"},
      {"io_scheduler: cfq\n", "io_scheduler: expected fair or fifo, not 'cfq'"},
      {"io_contended_in_flight: lots\n", "io_contended_in_flight: invalid size"},
      {"fuse_io_uring: maybe\n", "fuse_io_uring: expected true or false"},
      {"fuse_thread_placement: 2\n", "fuse_thread_placement: expected true or false"},
      {"read_passthrough: on\n", "read_passthrough: expected auto"},
      {"read_passthrough: false\n", "or off, not 'false'"},
      {"read_passthrough: [auto]\n", "read_passthrough: expected a single value"},
      {"publish_dir: relative/path\n", "publish_dir: expected an absolute path"},
      {"embedded_disk_size: 10Mi\n", "embedded_disk_size: must be at least 512Mi"},
      {"embedded_disk_size: 10Qi\n", "embedded_disk_size: invalid size"},
      {"state_dir: /a\npublish_dir: /a\n", "publish_dir: must differ from state_dir"},
      {"disks: [/dev/sdb\n", "not valid YAML"},
      {"- just\n- a list\n", "must be a YAML map"},
      // yaml-cpp keeps both pairs of a duplicated key and its lookup returns
      // the first: without the check, `metrics_port: abc` would be ignored.
      {"metrics_port: 0\nmetrics_port: abc\n",
       "metrics_port: given twice, on lines 1 and 2; keep one of them"},
      {"log_level: info\nreserve: 1%\nlog_level: info\n",
       "log_level: given twice, on lines 1 and 3"},
      {"\"socket\": /a.sock\nsocket: /b.sock\n", "socket: given twice, on lines 1 and 2"},
      {"disks:\n  - device: /dev/sdb\n    wipe: true\n    wipe: false\n",
       "disks[0].wipe: given twice, on lines 3 and 4"},
      {"disks:\n  - /dev/sdb\n  - device: /dev/sdc\n    reserve: 1Gi\n    device: /dev/sdd\n",
       "disks[1].device: given twice, on lines 3 and 5"},
      {"disks: [{device: /dev/sdb, device: /dev/sdc}]\n",
       "disks[0].device: given twice, on line 1;"},
  };
  for (const auto& c : cases) {
    const std::string err = ErrorOf(c.yaml);
    EXPECT_NE(err.find(c.must_contain), std::string::npos)
        << "yaml:\n"
        << c.yaml << "error: '" << err << "'\nwanted: '" << c.must_contain << "'";
    EXPECT_EQ(err.rfind("test.yaml: ", 0), 0u) << err;
  }
}

TEST(ConfigTest, ErrorsGiveTheLine) {
  const std::string err = ErrorOf("log_level: info\nfilesystem: zfs\n");
  EXPECT_NE(err.find("(line 2)"), std::string::npos) << err;
}

TEST(ConfigTest, SameKeyInDifferentMapsIsNoDuplicate) {
  EXPECT_EQ(
      ErrorOf(
          "disks:\n  - device: /dev/sdb\n    reserve: 1Gi\n  - device: /dev/sdc\n    reserve: 2Gi\n"
          "reserve: 3%\n"),
      "");
  // An alias of an enclosing node ends the duplicate walk instead of
  // recursing forever; the value is refused as any other.
  EXPECT_NE(ErrorOf("disks: &x [*x]\n"), "");
}

TEST(ConfigTest, MissingFile) {
  auto c = LoadConfig("/nonexistent/localvol/config.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.err(), ENOENT);
  EXPECT_NE(c.status().context().find("/nonexistent/localvol/config.yaml"), std::string::npos);
}

TEST(ConfigTest, DirectoryOrSpecialFileIsRefused) {
  // An ifstream opens a directory and reads nothing: the agent used to start
  // on the built-in defaults.
  auto dir = LoadConfig("/tmp");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.err(), EINVAL);
  EXPECT_NE(dir.status().context().find("the configuration /tmp is a directory; name a YAML file"),
            std::string::npos)
      << dir.status().context();
  auto dev = LoadConfig("/dev/null");
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.status().context().find("/dev/null is not a regular file"), std::string::npos)
      << dev.status().context();
}

TEST(VolumeNameTest, Dns1123Labels) {
  for (const char* good :
       {"a", "db-0", "0abc", "x123456789012345678901234567890123456789012345678901234567890ab"}) {
    EXPECT_TRUE(ValidateVolumeName(good).ok()) << good;
  }
  for (const char* bad : {"", "-a", "a-", "A", "a_b", "a.b", "a/b", "..", "a b",
                          "x1234567890123456789012345678901234567890123456789012345678901ab"}) {
    Status s = ValidateVolumeName(bad);
    EXPECT_EQ(s.err(), EINVAL) << bad;
    EXPECT_NE(s.context().find("invalid volume name"), std::string::npos) << s.context();
  }
}

TEST(ConfigTest, NodeNameAndCsiSocket) {
  auto c = ParseConfig("", "t");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->csi_socket, "/var/lib/kubelet/plugins/localvol.io/csi.sock");
  EXPECT_EQ(c->node_name, "");
  c = ParseConfig("node_name: worker-3.example\ncsi_socket: /run/csi/x.sock\n", "t");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->node_name, "worker-3.example");
  EXPECT_EQ(c->csi_socket, "/run/csi/x.sock");
  c = ParseConfig("csi_socket: \"\"\n", "t");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->csi_socket, "") << "an empty csi_socket turns CSI off";
  for (const char* bad : {"node_name: -x\n", "node_name: \"a b\"\n", "node_name: \"\"\n",
                          "csi_socket: relative.sock\n"}) {
    auto r = ParseConfig(bad, "t");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.err(), EINVAL);
    EXPECT_NE(r.status().context().find(std::string(bad).substr(0, std::string(bad).find(':'))),
              std::string::npos)
        << r.status().context();
  }
}

}  // namespace
}  // namespace localvol::agent
