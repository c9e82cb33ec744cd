// gRPC first, without abseil's lock-annotation macros (agent/grpcpp.h).
#include "agent/ctl.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/config.h"
#include "agent/ctl_output.h"
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

enum class Cmd { kNone, kDiskList, kCreate, kList, kInspect, kResize, kSetLimits, kDelete };

// The command line: as given, then checked and converted by CheckOptions.
struct Options {
  std::string socket = kDefaultSocketPath;
  std::string output = "table";
  double timeout_s = 120;
  Cmd cmd = Cmd::kNone;
  std::string name;
  std::string size;
  std::string inodes;  // checked by ParseInodes when given
  std::string disk;
  std::string read_passthrough;  // "", auto or off
  LimitFlags create_limits;
  LimitFlags set_limits;
  bool unlimited = false;
  // Set by CheckOptions.
  uint64_t size_bytes = 0;
  uint64_t inode_limit = 0;  // 0: not given
  iopath::IoLimits create_io_limits;
};

// The subcommands that are looked at after parsing.
struct Commands {
  CLI::App* disk = nullptr;
  CLI::App* volume = nullptr;
  CLI::App* create = nullptr;
  CLI::App* resize = nullptr;
};

// volume create|list|inspect|resize|set-limits|delete, into `o`.
void DefineVolumeCommands(CLI::App* volume, Options* o, Commands* c) {
  c->create = volume->add_subcommand("create", "create and mount a volume at <publish_dir>/NAME");
  c->create->add_option("NAME", o->name, "DNS-1123 label, e.g. db-data-0")->required();
  c->create->add_option("--size", o->size, "capacity, e.g. 10Gi or 500M")->required();
  c->create->add_option("--inodes", o->inodes,
                        "inode limit (default: one per 16 KiB, at least 1024)");
  c->create->add_option(
      "--disk", o->disk,
      "disk id (or a unique prefix) or device; default: the disk with the most room");
  o->create_limits.Register(c->create);
  c->create
      ->add_option("--read-passthrough", o->read_passthrough,
                   "auto (default): read-only opens read the backing file through kernel FUSE "
                   "passthrough where allowed; off: every read goes through localvold")
      ->check(CLI::IsMember({"auto", "off"}));
  c->create->callback([o] { o->cmd = Cmd::kCreate; });
  volume->add_subcommand("list", "list volumes")->callback([o] { o->cmd = Cmd::kList; });
  auto* inspect = volume->add_subcommand("inspect", "show one volume");
  inspect->add_option("NAME", o->name)->required();
  inspect->callback([o] { o->cmd = Cmd::kInspect; });
  c->resize = volume->add_subcommand("resize", "change a volume's size while it is in use");
  c->resize->add_option("NAME", o->name)->required();
  c->resize->add_option("--size", o->size, "new capacity")->required();
  c->resize->add_option("--inodes", o->inodes,
                        "new inode limit (default: keep, or rescale a default one)");
  c->resize->callback([o] { o->cmd = Cmd::kResize; });
  auto* set_limits = volume->add_subcommand(
      "set-limits",
      "change a volume's I/O limits and weight while it is in use; settings not given are kept");
  set_limits->add_option("NAME", o->name)->required();
  set_limits->add_flag(
      "--unlimited", o->unlimited,
      "remove every rate limit first (the weight is kept unless --weight is given)");
  o->set_limits.Register(set_limits);
  set_limits->callback([o] { o->cmd = Cmd::kSetLimits; });
  auto* del = volume->add_subcommand("delete", "unmount a volume and remove its data");
  del->add_option("NAME", o->name)->required();
  del->callback([o] { o->cmd = Cmd::kDelete; });
}

// Every option and subcommand of localvolctl, into `o`.
Commands DefineCommandLine(CLI::App* app, Options* o) {
  app->fallthrough();
  app->add_option("--socket", o->socket, "the agent's socket")->capture_default_str();
  app->add_option("-o,--output", o->output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app->add_option("--timeout", o->timeout_s, "seconds to wait for the agent")
      ->capture_default_str();
  Commands c;
  c.disk = app->add_subcommand("disk", "the dedicated disks");
  c.disk->add_subcommand("list", "list the configured disks, in use or refused")->callback([o] {
    o->cmd = Cmd::kDiskList;
  });
  c.volume = app->add_subcommand("volume", "volumes");
  DefineVolumeCommands(c.volume, o, &c);
  return c;
}

// Parses the command line; returns an exit status when the process must stop
// now (help: 0, usage errors: 2).
std::optional<int> Parse(CLI::App* app, int argc, char** argv, std::ostream& out,
                         std::ostream& err) {
  try {
    app->parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    out << app->help();
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
  return std::nullopt;
}

// --size and --inodes of create and resize, into o->size_bytes and
// o->inode_limit; EINVAL naming the flag.
Status CheckSizes(const Commands& c, Options* o) {
  if (o->cmd == Cmd::kCreate || o->cmd == Cmd::kResize) {
    auto parsed = ParseSize(o->size);
    if (!parsed.ok() || *parsed == 0) {
      return Status::Error(EINVAL, "--size: " + (parsed.ok() ? "must be greater than zero"
                                                             : parsed.status().context()));
    }
    o->size_bytes = *parsed;
  }
  if ((o->cmd == Cmd::kCreate && c.create->count("--inodes") > 0) ||
      (o->cmd == Cmd::kResize && c.resize->count("--inodes") > 0)) {
    auto parsed = ParseInodes(o->inodes);
    if (!parsed.ok()) return Status::Error(EINVAL, "--inodes: " + parsed.status().context());
    o->inode_limit = *parsed;
  }
  return Status::Ok();
}

// The I/O limit flags of create (into o->create_io_limits) and set-limits:
// every value is checked before the agent is asked anything.
Status CheckLimitFlags(Options* o) {
  if (o->cmd == Cmd::kCreate) {
    if (Status s = o->create_limits.ApplyTo(&o->create_io_limits); !s.ok()) return s;
    if (Status s = iopath::ValidateIoLimits(o->create_io_limits); !s.ok()) {
      return Status::Error(EINVAL, "invalid I/O limits: " + s.context());
    }
  }
  if (o->cmd == Cmd::kSetLimits) {
    if (!o->set_limits.any() && !o->unlimited) {
      return Status::Error(
          EINVAL,
          "volume set-limits: give at least one limit to change (e.g. --read-iops 500, "
          "--write-bps 100Mi, --weight 200) or --unlimited\n(run 'localvolctl volume set-limits "
          "--help' for all of them)");
    }
    iopath::IoLimits scratch;
    if (Status s = o->set_limits.ApplyTo(&scratch); !s.ok()) return s;
  }
  return Status::Ok();
}

// Everything that can be checked without the agent; EINVAL saying what is
// wrong (a usage error).
Status CheckOptions(const Commands& c, Options* o) {
  if (Status s = CheckSizes(c, o); !s.ok()) return s;
  // A name the agent would refuse is refused here, before it goes into a
  // message: protobuf cannot even encode a name that is not UTF-8.
  if (o->cmd != Cmd::kDiskList && o->cmd != Cmd::kList && o->cmd != Cmd::kNone) {
    if (Status s = ValidateVolumeName(o->name); !s.ok()) return s;
  }
  if (Status s = CheckLimitFlags(o); !s.ok()) return s;
  if (o->timeout_s <= 0) return Status::Error(EINVAL, "--timeout must be positive");
  return Status::Ok();
}

// A subcommand without its command: what is missing.
int MissingCommand(const Commands& c, std::ostream& err) {
  if (c.volume->parsed()) {
    err << "localvolctl: volume: missing command: create, list, inspect, resize, set-limits or "
           "delete\n";
  } else if (c.disk->parsed()) {
    err << "localvolctl: disk: missing command: list\n";
  } else {
    err << "localvolctl: missing command: disk or volume\n";
  }
  err << "(run 'localvolctl --help' for usage)\n";
  return kExitUsage;
}

// One command's calls to the agent, all under one deadline, and what they
// print. Each method returns the exit status.
class Client {
 public:
  Client(const Options& o, std::ostream& out, std::ostream& err)
      : o_(o),
        out_(out),
        err_(err),
        stub_(pb::LocalVol::NewStub(
            grpc::CreateChannel("unix:" + o.socket, grpc::InsecureChannelCredentials()))),
        // One deadline for the whole command, however many calls it makes.
        deadline_(std::chrono::system_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000))) {}

  int ListDisks() {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_);
    pb::ListDisksResponse r;
    return Show(stub_->ListDisks(&ctx, pb::ListDisksRequest(), &r), r, PrintDisks);
  }
  int Create() {
    pb::CreateVolumeRequest req;
    req.set_name(o_.name);
    req.set_capacity_bytes(o_.size_bytes);
    req.set_inode_limit(o_.inode_limit);
    req.set_disk(o_.disk);
    req.set_read_passthrough(o_.read_passthrough);
    if (o_.create_limits.any()) IoLimitsToProto(o_.create_io_limits, req.mutable_io_limits());
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_);
    pb::Volume v;
    return Show(stub_->CreateVolume(&ctx, req, &v), v, PrintVolume);
  }
  int List() {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_);
    pb::ListVolumesResponse r;
    return Show(stub_->ListVolumes(&ctx, pb::ListVolumesRequest(), &r), r, PrintVolumes);
  }
  int Inspect() {
    pb::Volume v;
    return Show(Get(&v), v, PrintVolume);
  }
  int Resize() {
    pb::ResizeVolumeRequest req;
    req.set_name(o_.name);
    req.set_capacity_bytes(o_.size_bytes);
    req.set_inode_limit(o_.inode_limit);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_);
    pb::Volume v;
    return Show(stub_->ResizeVolume(&ctx, req, &v), v, PrintVolume);
  }
  int SetLimits();
  int Delete();

 private:
  grpc::Status Get(pb::Volume* v) {
    pb::GetVolumeRequest req;
    req.set_name(o_.name);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_);
    return stub_->GetVolume(&ctx, req, v);
  }
  // Prints `m` (as JSON with -o json) if `st` is OK; the exit status.
  template <typename M>
  int Show(const grpc::Status& st, const M& m, void (*print)(const M&, std::ostream&)) {
    if (!st.ok()) return Failed(st);
    if (o_.output == "json") {
      out_ << Json(m);
    } else {
      print(m, out_);
    }
    return 0;
  }
  int Failed(const grpc::Status& st);

  const Options& o_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<pb::LocalVol::Stub> stub_;
  const std::chrono::system_clock::time_point deadline_;
};

int Client::SetLimits() {
  // Merge: the volume's current limits, then the flags given.
  pb::Volume current;
  if (grpc::Status st = Get(&current); !st.ok()) return Failed(st);
  const iopath::IoLimits old = IoLimitsFromProto(current.io_limits());
  iopath::IoLimits limits;
  if (o_.unlimited) {
    limits.weight = old.weight;
  } else {
    limits = old;
  }
  Status s = o_.set_limits.ApplyTo(&limits);
  if (s.ok()) s = iopath::ValidateIoLimits(limits);
  if (!s.ok()) {
    err_ << "localvolctl: invalid I/O limits for volume " << o_.name << ": " << s.context()
         << "\n(its limits are now " << iopath::FormatIoLimits(old) << "; nothing was changed)\n";
    return kExitUsage;
  }
  pb::SetVolumeLimitsRequest req;
  req.set_name(o_.name);
  IoLimitsToProto(limits, req.mutable_io_limits());
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_);
  pb::Volume v;
  return Show(stub_->SetVolumeLimits(&ctx, req, &v), v, PrintVolume);
}

int Client::Delete() {
  pb::DeleteVolumeRequest req;
  req.set_name(o_.name);
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_);
  pb::DeleteVolumeResponse r;
  if (grpc::Status st = stub_->DeleteVolume(&ctx, req, &r); !st.ok()) return Failed(st);
  if (o_.output == "json") {
    out_ << "{\n \"name\": \"" << o_.name << "\",\n \"deleted\": true\n}\n";
  } else {
    out_ << "volume " << o_.name << " deleted; its data is removed in the background\n";
  }
  return 0;
}

int Client::Failed(const grpc::Status& st) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
      st.error_message().find("stopping") == std::string::npos) {
    err_ << "localvolctl: cannot reach localvold at " << o_.socket << ": " << st.error_message()
         << "\nIs it running? (systemctl status localvol) Use --socket for another socket path.\n";
    return kExitUnreachable;
  }
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    err_ << "localvolctl: localvold at " << o_.socket << " did not answer within " << o_.timeout_s
         << "s; it may still complete the request (check with 'localvolctl volume list')\n";
    return kExitUnreachable;
  }
  err_ << "localvolctl: " << CodeName(st.error_code()) << ": " << st.error_message() << "\n";
  return kExitFailed;
}

}  // namespace

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Options o;
  CLI::App app{"localvolctl: manage the local volumes of this node's localvold"};
  const Commands commands = DefineCommandLine(&app, &o);
  if (auto exit = Parse(&app, argc, argv, out, err)) return *exit;
  if (Status s = CheckOptions(commands, &o); !s.ok()) {
    err << "localvolctl: " << s.context() << "\n";
    return kExitUsage;
  }
  Client client(o, out, err);
  switch (o.cmd) {
    case Cmd::kDiskList:
      return client.ListDisks();
    case Cmd::kCreate:
      return client.Create();
    case Cmd::kList:
      return client.List();
    case Cmd::kInspect:
      return client.Inspect();
    case Cmd::kResize:
      return client.Resize();
    case Cmd::kSetLimits:
      return client.SetLimits();
    case Cmd::kDelete:
      return client.Delete();
    case Cmd::kNone:
      break;
  }
  return MissingCommand(commands, err);
}

}  // namespace localvol::agent
