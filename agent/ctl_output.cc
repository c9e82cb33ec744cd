#include "agent/ctl_output.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <iomanip>
#include <string>
#include <utility>
#include <vector>

#include "agent/io_limits_proto.h"
#include "base/size.h"
#include "iopath/io_limits.h"

namespace localvol::agent {
namespace {

// A plain text table: columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_) {
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string ShortId(const std::string& id) { return id.size() > 8 ? id.substr(0, 8) : id; }

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  return fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

}  // namespace

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string s;
  (void)google::protobuf::util::MessageToJsonString(m, &s, o);
  return s;
}

void PrintVolume(const localvol::v1::Volume& v, std::ostream& out) {
  const int w = 12;
  auto line = [&](const std::string& k, const std::string& val) {
    out << std::left << std::setw(w) << (k.empty() ? k : k + ":") << val << "\n";
  };
  line("Name", v.name());
  line("State", v.state() + (v.message().empty() ? "" : " (" + v.message() + ")"));
  line("Mount path", v.mount_path());
  line("Disk", v.disk_id() + " (" + v.device() + ")");
  line("Capacity",
       FormatSize(v.capacity_bytes()) + " (" + std::to_string(v.capacity_bytes()) + " bytes)");
  line("Used", FormatSize(v.used_bytes()) + " (" + std::to_string(v.used_bytes()) + " bytes, " +
                   Percent(v.used_bytes(), v.capacity_bytes()) + ")");
  line("Inodes", std::to_string(v.inodes_used()) + " / " + std::to_string(v.inode_limit()) + " (" +
                     Percent(v.inodes_used(), v.inode_limit()) + ")");
  line("I/O limits", iopath::FormatIoLimits(IoLimitsFromProto(v.io_limits())));
  const localvol::v1::IoStats& io = v.io_stats();
  line("Reads", std::to_string(io.read_ops()) + " ops, " + FormatSize(io.read_bytes()));
  line("Writes", std::to_string(io.write_ops()) + " ops, " + FormatSize(io.write_bytes()) + "; " +
                     std::to_string(io.other_ops()) + " other ops (fsync, fallocate)");
  line("Throttled", fmt::format("{:.3f}s", io.throttled_seconds()) + " in total; now " +
                        std::to_string(io.queued()) + " queued, " + std::to_string(io.in_flight()) +
                        " in flight");
  line("I/O errors",
       std::to_string(io.errors()) + " (" + std::to_string(io.timed_out()) + " timed out)");
  if (v.fuse_ring_requests() == 0 && v.fuse_ring_resident_bytes() == 0) {
    line("FUSE ring", "not used (requests take /dev/fuse)");
  } else {
    line("FUSE ring", std::to_string(v.fuse_ring_requests()) + " requests; " +
                          FormatSize(v.fuse_ring_resident_bytes()) + " of buffers resident");
  }
  if (v.read_passthrough_setting() == "off") {
    line("Read path", "every read through localvold (read passthrough off for this volume)");
  } else if (!v.read_passthrough()) {
    line("Read path", "every read through localvold (read passthrough off or not offered)");
  } else {
    line("Read path", std::to_string(v.passthrough_open_files()) +
                          (v.passthrough_open_files() == 1 ? " file" : " files") +
                          " open with passthrough; " + std::to_string(v.passthrough_opens_total()) +
                          " such opens since mounted (their reads are not in Reads)");
  }
  if (v.csi()) {
    line("CSI", "PV " + v.name() + (v.pvc().empty() ? "" : ", for PVC " + v.pvc()));
  } else {
    line("CSI", "no (created with localvolctl or the localvol.v1 API)");
  }
  if (v.publish_targets().empty()) {
    line("Published", "nowhere else");
  } else {
    for (int i = 0; i < v.publish_targets_size(); ++i)
      line(i == 0 ? "Published" : "", v.publish_targets(i));
  }
}

void PrintVolumes(const localvol::v1::ListVolumesResponse& r, std::ostream& out) {
  if (r.volumes().empty()) {
    out << "No volumes. Create one with: localvolctl volume create NAME --size SIZE\n";
    return;
  }
  Table t({"NAME", "STATE", "CAPACITY", "USED", "USE%", "INODES", "DISK", "MOUNT"});
  for (const auto& v : r.volumes()) {
    t.Add({v.name(), v.state(), FormatSize(v.capacity_bytes()), FormatSize(v.used_bytes()),
           Percent(v.used_bytes(), v.capacity_bytes()),
           std::to_string(v.inodes_used()) + "/" + std::to_string(v.inode_limit()),
           ShortId(v.disk_id()), v.mount_path()});
  }
  t.Print(out);
  for (const auto& v : r.volumes()) {
    if (!v.message().empty()) out << v.name() << ": " << v.message() << "\n";
  }
}

void PrintDisks(const localvol::v1::ListDisksResponse& r, std::ostream& out) {
  if (r.disks().empty()) {
    out << "No disks.\n";
    return;
  }
  Table t(
      {"ID", "DEVICE", "STATE", "FS", "SIZE", "RESERVE", "ALLOCATED", "FREE", "VOLUMES", "MOUNT"});
  bool refused = false, failed = false;
  for (const auto& d : r.disks()) {
    failed |= d.state() == "error" || d.state() == "missing";
    if (d.state() == "refused") {
      refused = true;
      t.Add({"-", d.device().empty() ? d.configured_as() : d.device(), d.state(), "-", "-", "-",
             "-", "-", "-", "-"});
      continue;
    }
    t.Add({ShortId(d.id()), d.device() + (d.embedded() ? " (embedded)" : ""), d.state(),
           d.filesystem(), FormatSize(d.size_bytes()), FormatSize(d.reserve_bytes()),
           FormatSize(d.allocated_bytes()), FormatSize(d.free_bytes()),
           std::to_string(d.volume_count()), d.mount_path()});
  }
  t.Print(out);
  if (failed) {
    out << "\nDisks that cannot serve volumes:\n";
    for (const auto& d : r.disks()) {
      if (d.state() == "error" || d.state() == "missing") {
        out << "  " << d.id() << " (" << d.device() << "): " << d.reason() << "\n";
      }
    }
  }
  if (refused) {
    out << "\nRefused devices (nothing was written to them):\n";
    for (const auto& d : r.disks()) {
      if (d.state() != "refused") continue;
      out << "  " << d.configured_as();
      if (!d.device().empty() && d.device() != d.configured_as()) out << " (" << d.device() << ")";
      out << ": " << d.reason() << "\n";
    }
  }
}

}  // namespace localvol::agent
