// gRPC first, without abseil's lock-annotation macros (agent/grpcpp.h).
#include "agent/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/fmt/fmt.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "agent/config.h"
#include "agent/grpcpp.h"
#include "agent/io_limits_proto.h"
#include "agent/proto/localvol.grpc.pb.h"
#include "agent/volume_manager.h"
#include "base/size.h"
#include "fuse/volume.h"
#include "iopath/io_limits.h"

namespace localvol::agent {
namespace {

namespace pb = ::localvol::v1;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "InvalidArgument";
    case grpc::StatusCode::NOT_FOUND:
      return "NotFound";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "AlreadyExists";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "ResourceExhausted";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FailedPrecondition";
    case grpc::StatusCode::UNAVAILABLE:
      return "Unavailable";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DeadlineExceeded";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PermissionDenied";
    case grpc::StatusCode::INTERNAL:
      return "Internal";
    default:
      return "Error";
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
  return fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
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

// `s` without `suffix`, or "" if it does not end with it.
std::string StripSuffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
                 s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0
             ? s.substr(0, s.size() - suffix.size())
             : "";
}

bool IsLimitKey(const std::string& key) {
  for (const auto& k : iopath::IoLimitKeys()) {
    if (k == key) return true;
  }
  return false;
}

// Help for the flag of one iopath::IoLimitKeys() setting.
std::string LimitHelp(const std::string& key) {
  if (key == "weight")
    return "share of the disk when volumes on it contend, 1..10000 (default 100)";
  if (std::string base = StripSuffix(key, "-burst-seconds"); !base.empty()) {
    return "how long a full --" + base + "-burst lasts, 1..3600 seconds (default 1)";
  }
  if (std::string base = StripSuffix(key, "-burst"); !base.empty()) {
    return "rate allowed for a burst after idling, above --" + base + " (0: no burst)";
  }
  const bool bytes = !StripSuffix(key, "-bps").empty();
  return std::string(bytes ? "bytes per second, e.g. 100Mi" : "operations per second") +
         " (0: no limit)";
}

// --<key> VALUE for every I/O limit setting (iopath::IoLimitKeys()): the one
// spelling shared with the manifest and the logs. Values are parsed by
// iopath::SetIoLimit.
class LimitFlags {
 public:
  void Register(CLI::App* cmd) {
    for (const auto& key : iopath::IoLimitKeys()) {
      CLI::Option* opt =
          cmd->add_option("--" + key, values_[key], LimitHelp(key))->group("I/O limits");
      opt->type_name(key == "weight"                         ? "N"
                     : !StripSuffix(key, "-seconds").empty() ? "SECONDS"
                     : !StripSuffix(key, "-bps").empty() || !StripSuffix(key, "-bps-burst").empty()
                         ? "BYTES/S"
                         : "OPS/S");
      flags_.emplace_back(key, opt);
    }
  }

  bool any() const {
    for (const auto& f : flags_) {
      if (f.second->count() > 0) return true;
    }
    return false;
  }

  // Applies the flags that were given onto *limits, or fails with EINVAL
  // naming the flag (and leaves *limits unchanged). Does not validate the
  // result as a whole. A rate set to 0 removes that limit, its burst included
  // (unless a burst flag is given too).
  Status ApplyTo(iopath::IoLimits* limits) const {
    iopath::IoLimits out = *limits;
    for (const auto& [key, opt] : flags_) {
      if (opt->count() == 0) continue;
      const std::string& value = values_.at(key);
      if (Status s = iopath::SetIoLimit(&out, key, value); !s.ok()) {
        return Status::Error(EINVAL, "--" + s.context());
      }
      if (IsLimitKey(key + "-burst") && IsDefault(key, value) && !Given(key + "-burst") &&
          !Given(key + "-burst-seconds")) {
        const iopath::RateLimit off;
        (void)iopath::SetIoLimit(&out, key + "-burst", std::to_string(off.burst_rate));
        (void)iopath::SetIoLimit(&out, key + "-burst-seconds", std::to_string(off.burst_seconds));
      }
    }
    *limits = out;
    return Status::Ok();
  }

 private:
  bool Given(const std::string& key) const {
    for (const auto& f : flags_) {
      if (f.first == key) return f.second->count() > 0;
    }
    return false;
  }
  // True if `value` sets `key` to what an unlimited IoLimits has.
  static bool IsDefault(const std::string& key, const std::string& value) {
    iopath::IoLimits probe;
    if (!iopath::SetIoLimit(&probe, key, value).ok()) return false;
    for (const auto& setting : iopath::IoLimitSettings(probe)) {
      if (setting.first == key) return false;
    }
    return true;
  }

  std::map<std::string, std::string> values_;
  std::vector<std::pair<std::string, CLI::Option*>> flags_;
};

void PrintVolume(const pb::Volume& v, std::ostream& out) {
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
  const pb::IoStats& io = v.io_stats();
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

void PrintVolumes(const pb::ListVolumesResponse& r, std::ostream& out) {
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

void PrintDisks(const pb::ListDisksResponse& r, std::ostream& out) {
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

// The value of --inodes: a whole number from 1 to fuse::kMaxInodeLimit. A
// sign or a value beyond 64 bits fails too (from_chars takes neither).
Result<uint64_t> ParseInodes(const std::string& text) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v == 0 ||
      v > fuse::kMaxInodeLimit) {
    return Status::Error(EINVAL, "expected a whole number from 1 to " +
                                     std::to_string(fuse::kMaxInodeLimit) + ", not '" + text + "'");
  }
  return v;
}

struct Options {
  std::string socket = kDefaultSocketPath;
  std::string output = "table";
  double timeout_s = 120;
  std::string name;
  std::string size;
  std::string inodes;  // checked by ParseInodes when given
  std::string disk;
  std::string read_passthrough;  // "", auto or off
  LimitFlags create_limits;
  LimitFlags set_limits;
  bool unlimited = false;
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

  enum class Cmd {
    kNone,
    kDiskList,
    kCreate,
    kList,
    kInspect,
    kResize,
    kSetLimits,
    kDelete
  } cmd = Cmd::kNone;
  auto* disk = app.add_subcommand("disk", "the dedicated disks");
  disk->add_subcommand("list", "list the configured disks, in use or refused")->callback([&] {
    cmd = Cmd::kDiskList;
  });
  auto* volume = app.add_subcommand("volume", "volumes");
  auto* create =
      volume->add_subcommand("create", "create and mount a volume at <publish_dir>/NAME");
  create->add_option("NAME", o.name, "DNS-1123 label, e.g. db-data-0")->required();
  create->add_option("--size", o.size, "capacity, e.g. 10Gi or 500M")->required();
  create->add_option("--inodes", o.inodes, "inode limit (default: one per 16 KiB, at least 1024)");
  create->add_option(
      "--disk", o.disk,
      "disk id (or a unique prefix) or device; default: the disk with the most room");
  o.create_limits.Register(create);
  create
      ->add_option("--read-passthrough", o.read_passthrough,
                   "auto (default): read-only opens read the backing file through kernel FUSE "
                   "passthrough where allowed; off: every read goes through localvold")
      ->check(CLI::IsMember({"auto", "off"}));
  create->callback([&] { cmd = Cmd::kCreate; });
  volume->add_subcommand("list", "list volumes")->callback([&] { cmd = Cmd::kList; });
  auto* inspect = volume->add_subcommand("inspect", "show one volume");
  inspect->add_option("NAME", o.name)->required();
  inspect->callback([&] { cmd = Cmd::kInspect; });
  auto* resize = volume->add_subcommand("resize", "change a volume's size while it is in use");
  resize->add_option("NAME", o.name)->required();
  resize->add_option("--size", o.size, "new capacity")->required();
  resize->add_option("--inodes", o.inodes,
                     "new inode limit (default: keep, or rescale a default one)");
  resize->callback([&] { cmd = Cmd::kResize; });
  auto* set_limits = volume->add_subcommand(
      "set-limits",
      "change a volume's I/O limits and weight while it is in use; settings not given are kept");
  set_limits->add_option("NAME", o.name)->required();
  set_limits->add_flag(
      "--unlimited", o.unlimited,
      "remove every rate limit first (the weight is kept unless --weight is given)");
  o.set_limits.Register(set_limits);
  set_limits->callback([&] { cmd = Cmd::kSetLimits; });
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
      err << "localvolctl: --size: "
          << (parsed.ok() ? "must be greater than zero" : parsed.status().context()) << "\n";
      return kExitUsage;
    }
    size = *parsed;
  }
  uint64_t inodes = 0;
  if ((cmd == Cmd::kCreate && create->count("--inodes") > 0) ||
      (cmd == Cmd::kResize && resize->count("--inodes") > 0)) {
    auto parsed = ParseInodes(o.inodes);
    if (!parsed.ok()) {
      err << "localvolctl: --inodes: " << parsed.status().context() << "\n";
      return kExitUsage;
    }
    inodes = *parsed;
  }
  // A name the agent would refuse is refused here, before it goes into a
  // message: protobuf cannot even encode a name that is not UTF-8.
  if (cmd != Cmd::kDiskList && cmd != Cmd::kList && cmd != Cmd::kNone) {
    if (Status s = ValidateVolumeName(o.name); !s.ok()) {
      err << "localvolctl: " << s.context() << "\n";
      return kExitUsage;
    }
  }
  // I/O limit flags: every value is checked before the agent is asked anything.
  iopath::IoLimits create_limits;
  if (cmd == Cmd::kCreate) {
    if (Status s = o.create_limits.ApplyTo(&create_limits); !s.ok()) {
      err << "localvolctl: " << s.context() << "\n";
      return kExitUsage;
    }
    if (Status s = iopath::ValidateIoLimits(create_limits); !s.ok()) {
      err << "localvolctl: invalid I/O limits: " << s.context() << "\n";
      return kExitUsage;
    }
  }
  if (cmd == Cmd::kSetLimits) {
    if (!o.set_limits.any() && !o.unlimited) {
      err << "localvolctl: volume set-limits: give at least one limit to change (e.g. --read-iops "
             "500, "
             "--write-bps 100Mi, --weight 200) or --unlimited\n(run 'localvolctl volume set-limits "
             "--help' for all of them)\n";
      return kExitUsage;
    }
    iopath::IoLimits scratch;
    if (Status s = o.set_limits.ApplyTo(&scratch); !s.ok()) {
      err << "localvolctl: " << s.context() << "\n";
      return kExitUsage;
    }
  }
  if (o.timeout_s <= 0) {
    err << "localvolctl: --timeout must be positive\n";
    return kExitUsage;
  }

  auto channel = grpc::CreateChannel("unix:" + o.socket, grpc::InsecureChannelCredentials());
  auto stub = pb::LocalVol::NewStub(channel);
  // One deadline for the whole command, however many calls it makes.
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
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
      req.set_inode_limit(inodes);
      req.set_disk(o.disk);
      req.set_read_passthrough(o.read_passthrough);
      if (o.create_limits.any()) IoLimitsToProto(create_limits, req.mutable_io_limits());
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
      req.set_inode_limit(inodes);
      pb::Volume v;
      st = stub->ResizeVolume(&ctx, req, &v);
      if (st.ok()) json ? void(out << Json(v)) : PrintVolume(v, out);
      break;
    }
    case Cmd::kSetLimits: {
      // Merge: the volume's current limits, then the flags given.
      pb::GetVolumeRequest get;
      get.set_name(o.name);
      pb::Volume current;
      st = stub->GetVolume(&ctx, get, &current);
      if (!st.ok()) break;
      const iopath::IoLimits old = IoLimitsFromProto(current.io_limits());
      iopath::IoLimits limits;
      if (o.unlimited) {
        limits.weight = old.weight;
      } else {
        limits = old;
      }
      Status s = o.set_limits.ApplyTo(&limits);
      if (s.ok()) s = iopath::ValidateIoLimits(limits);
      if (!s.ok()) {
        err << "localvolctl: invalid I/O limits for volume " << o.name << ": " << s.context()
            << "\n(its limits are now " << iopath::FormatIoLimits(old)
            << "; nothing was changed)\n";
        return kExitUsage;
      }
      pb::SetVolumeLimitsRequest req;
      req.set_name(o.name);
      IoLimitsToProto(limits, req.mutable_io_limits());
      grpc::ClientContext set_ctx;
      set_ctx.set_deadline(deadline);
      pb::Volume v;
      st = stub->SetVolumeLimits(&set_ctx, req, &v);
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
        err << "localvolctl: volume: missing command: create, list, inspect, resize, set-limits or "
               "delete\n";
      } else if (disk->parsed()) {
        err << "localvolctl: disk: missing command: list\n";
      } else {
        err << "localvolctl: missing command: disk or volume\n";
      }
      err << "(run 'localvolctl --help' for usage)\n";
      return kExitUsage;
  }
  if (st.ok()) return 0;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
      st.error_message().find("stopping") == std::string::npos) {
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
