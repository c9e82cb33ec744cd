#include "agent/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/proto/localvol.grpc.pb.h"
#include "base/size.h"

namespace localvol::agent {
namespace {

namespace pb = ::localvol::v1;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return "InvalidArgument";
    case grpc::StatusCode::NOT_FOUND: return "NotFound";
    case grpc::StatusCode::ALREADY_EXISTS: return "AlreadyExists";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "ResourceExhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FailedPrecondition";
    case grpc::StatusCode::UNAVAILABLE: return "Unavailable";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DeadlineExceeded";
    case grpc::StatusCode::PERMISSION_DENIED: return "PermissionDenied";
    case grpc::StatusCode::INTERNAL: return "Internal";
    default: return "Error";
  }
}

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
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string s;
  (void)google::protobuf::util::MessageToJsonString(m, &s, o);
  return s;
}

void PrintVolume(const pb::Volume& v, std::ostream& out) {
  const int w = 12;
  auto line = [&](const std::string& k, const std::string& val) {
    out << std::left << std::setw(w) << (k + ":") << val << "\n";
  };
  line("Name", v.name());
  line("State", v.state() + (v.message().empty() ? "" : " (" + v.message() + ")"));
  line("Mount path", v.mount_path());
  line("Disk", v.disk_id() + " (" + v.device() + ")");
  line("Capacity", FormatSize(v.capacity_bytes()) + " (" + std::to_string(v.capacity_bytes()) + " bytes)");
  line("Used", FormatSize(v.used_bytes()) + " (" + std::to_string(v.used_bytes()) + " bytes, " +
                   Percent(v.used_bytes(), v.capacity_bytes()) + ")");
  line("Inodes", std::to_string(v.inodes_used()) + " / " + std::to_string(v.inode_limit()) + " (" +
                     Percent(v.inodes_used(), v.inode_limit()) + ")");
}

void PrintVolumes(const pb::ListVolumesResponse& r, std::ostream& out) {
  if (r.volumes().empty()) {
    out << "No volumes. Create one with: localvolctl volume create NAME --size SIZE\n";
    return;
  }
  Table t({"NAME", "STATE", "CAPACITY", "USED", "USE%", "INODES", "DISK", "MOUNT"});
  for (const auto& v : r.volumes()) {
    t.Add({v.name(), v.state(), FormatSize(v.capacity_bytes()), FormatSize(v.used_bytes()),
           Percent(v.used_bytes(), v.capacity_bytes()),
           std::to_string(v.inodes_used()) + "/" + std::to_string(v.inode_limit()), ShortId(v.disk_id()),
           v.mount_path()});
  }
  t.Print(out);
  for (const auto& v : r.volumes()) {
    if (!v.message().empty()) out << v.name() << ": " << v.message() << "\n";
  }
}

void PrintDisks(const pb::ListDisksResponse& r, std::ostream& out) {
  if (r.disks().empty()) {
    out << "No disks.\n";
    return;
  }
  Table t({"ID", "DEVICE", "STATE", "FS", "SIZE", "RESERVE", "ALLOCATED", "FREE", "VOLUMES", "MOUNT"});
  bool refused = false;
  for (const auto& d : r.disks()) {
    if (d.state() != "ready") {
      refused = true;
      t.Add({"-", d.device().empty() ? d.configured_as() : d.device(), d.state(), "-", "-", "-", "-", "-", "-", "-"});
      continue;
    }
    t.Add({ShortId(d.id()), d.device() + (d.embedded() ? " (embedded)" : ""), d.state(), d.filesystem(),
           FormatSize(d.size_bytes()), FormatSize(d.reserve_bytes()), FormatSize(d.allocated_bytes()),
           FormatSize(d.free_bytes()), std::to_string(d.volume_count()), d.mount_path()});
  }
  t.Print(out);
  if (refused) {
    out << "\nRefused devices (nothing was written to them):\n";
    for (const auto& d : r.disks()) {
      if (d.state() == "ready") continue;
      out << "  " << d.configured_as();
      if (!d.device().empty() && d.device() != d.configured_as()) out << " (" << d.device() << ")";
      out << ": " << d.reason() << "\n";
    }
  }
}

struct Options {
  std::string socket = kDefaultSocketPath;
  std::string output = "table";
  double timeout_s = 120;
  std::string name;
  std::string size;
  uint64_t inodes = 0;
  std::string disk;
};

}  // namespace

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Options o;
  CLI::App app{"localvolctl: manage the local volumes of this node's localvold"};
  app.fallthrough();
  app.add_option("--socket", o.socket, "the agent's socket")->capture_default_str();
  app.add_option("-o,--output", o.output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", o.timeout_s, "seconds to wait for the agent")->capture_default_str();

  enum class Cmd { kNone, kDiskList, kCreate, kList, kInspect, kResize, kDelete } cmd = Cmd::kNone;
  auto* disk = app.add_subcommand("disk", "the dedicated disks");
  disk->add_subcommand("list", "list the configured disks, in use or refused")
      ->callback([&] { cmd = Cmd::kDiskList; });
  auto* volume = app.add_subcommand("volume", "volumes");
  auto* create = volume->add_subcommand("create", "create and mount a volume at <publish_dir>/NAME");
  create->add_option("NAME", o.name, "DNS-1123 label, e.g. db-data-0")->required();
  create->add_option("--size", o.size, "capacity, e.g. 10Gi or 500M")->required();
  create->add_option("--inodes", o.inodes, "inode limit (default: one per 16 KiB, at least 1024)");
  create->add_option("--disk", o.disk, "disk id (or a unique prefix) or device; default: the disk with the most room");
  create->callback([&] { cmd = Cmd::kCreate; });
  volume->add_subcommand("list", "list volumes")->callback([&] { cmd = Cmd::kList; });
  auto* inspect = volume->add_subcommand("inspect", "show one volume");
  inspect->add_option("NAME", o.name)->required();
  inspect->callback([&] { cmd = Cmd::kInspect; });
  auto* resize = volume->add_subcommand("resize", "change a volume's size while it is in use");
  resize->add_option("NAME", o.name)->required();
  resize->add_option("--size", o.size, "new capacity")->required();
  resize->add_option("--inodes", o.inodes, "new inode limit (default: keep, or rescale a default one)");
  resize->callback([&] { cmd = Cmd::kResize; });
  auto* del = volume->add_subcommand("delete", "unmount a volume and remove its data");
  del->add_option("NAME", o.name)->required();
  del->callback([&] { cmd = Cmd::kDelete; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    // Help for a subcommand is thrown as CallForHelp from it; others are usage errors.
    if (e.get_exit_code() == 0) {
      out << e.what() << "\n";
      return 0;
    }
    err << "localvolctl: " << e.what() << "\n(run 'localvolctl --help' for usage)\n";
    return kExitUsage;
  }

  uint64_t size = 0;
  if (cmd == Cmd::kCreate || cmd == Cmd::kResize) {
    auto parsed = ParseSize(o.size);
    if (!parsed.ok() || *parsed == 0) {
      err << "localvolctl: --size: " << (parsed.ok() ? "must be greater than zero" : parsed.status().context())
          << "\n";
      return kExitUsage;
    }
    size = *parsed;
  }
  if (o.timeout_s <= 0) {
    err << "localvolctl: --timeout must be positive\n";
    return kExitUsage;
  }

  auto channel = grpc::CreateChannel("unix:" + o.socket, grpc::InsecureChannelCredentials());
  auto stub = pb::LocalVol::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  const bool json = o.output == "json";
  grpc::Status st;
  switch (cmd) {
    case Cmd::kDiskList: {
      pb::ListDisksResponse r;
      st = stub->ListDisks(&ctx, pb::ListDisksRequest(), &r);
      if (st.ok()) json ? void(out << Json(r)) : PrintDisks(r, out);
      break;
    }
    case Cmd::kCreate: {
      pb::CreateVolumeRequest req;
      req.set_name(o.name);
      req.set_capacity_bytes(size);
      req.set_inode_limit(o.inodes);
      req.set_disk(o.disk);
      pb::Volume v;
      st = stub->CreateVolume(&ctx, req, &v);
      if (st.ok()) json ? void(out << Json(v)) : PrintVolume(v, out);
      break;
    }
    case Cmd::kList: {
      pb::ListVolumesResponse r;
      st = stub->ListVolumes(&ctx, pb::ListVolumesRequest(), &r);
      if (st.ok()) json ? void(out << Json(r)) : PrintVolumes(r, out);
      break;
    }
    case Cmd::kInspect: {
      pb::GetVolumeRequest req;
      req.set_name(o.name);
      pb::Volume v;
      st = stub->GetVolume(&ctx, req, &v);
      if (st.ok()) json ? void(out << Json(v)) : PrintVolume(v, out);
      break;
    }
    case Cmd::kResize: {
      pb::ResizeVolumeRequest req;
      req.set_name(o.name);
      req.set_capacity_bytes(size);
      req.set_inode_limit(o.inodes);
      pb::Volume v;
      st = stub->ResizeVolume(&ctx, req, &v);
      if (st.ok()) json ? void(out << Json(v)) : PrintVolume(v, out);
      break;
    }
    case Cmd::kDelete: {
      pb::DeleteVolumeRequest req;
      req.set_name(o.name);
      pb::DeleteVolumeResponse r;
      st = stub->DeleteVolume(&ctx, req, &r);
      if (st.ok()) {
        if (json) {
          out << "{\n \"name\": \"" << o.name << "\",\n \"deleted\": true\n}\n";
        } else {
          out << "volume " << o.name << " deleted; its data is removed in the background\n";
        }
      }
      break;
    }
    case Cmd::kNone:
      if (volume->parsed()) {
        err << "localvolctl: volume: missing command: create, list, inspect, resize or delete\n";
      } else if (disk->parsed()) {
        err << "localvolctl: disk: missing command: list\n";
      } else {
        err << "localvolctl: missing command: disk or volume\n";
      }
      err << "(run 'localvolctl --help' for usage)\n";
      return kExitUsage;
  }
  if (st.ok()) return 0;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE && st.error_message().find("stopping") == std::string::npos) {
    err << "localvolctl: cannot reach localvold at " << o.socket << ": " << st.error_message()
        << "\nIs it running? (systemctl status localvol) Use --socket for another socket path.\n";
    return kExitUnreachable;
  }
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    err << "localvolctl: localvold at " << o.socket << " did not answer within " << o.timeout_s
        << "s; it may still complete the request (check with 'localvolctl volume list')\n";
    return kExitUnreachable;
  }
  err << "localvolctl: " << CodeName(st.error_code()) << ": " << st.error_message() << "\n";
  return kExitFailed;
}

}  // namespace localvol::agent
