#include "tests/csi_fixture.h"

#include <signal.h>

#include <chrono>
#include <thread>

#include "tests/support/sys.h"

namespace localvol::testing {

std::shared_ptr<grpc::Channel> CsiChannel(const std::string& path) {
  return grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials());
}

::testing::AssertionResult CsiAgent::Start(const std::vector<uint64_t>& sizes) {
  std::vector<std::string> devices;
  for (uint64_t size : sizes) {
    auto l = RawLoop::Create(size);
    if (!l.ok()) return ::testing::AssertionFailure() << l.status().ToString();
    devices.push_back((*l)->device());
    loops_.push_back(std::move(l).value());
  }
  auto d = AgentDirs::Create();
  if (!d.ok()) return ::testing::AssertionFailure() << d.status().ToString();
  dirs_ = std::move(d).value();
  Status st = dirs_->WriteConfig(
      devices, "node_name: " + std::string(kCsiNode) + "\ncsi_socket: " + csi_socket() + "\n");
  if (!st.ok()) return ::testing::AssertionFailure() << st.ToString();
  return Launch();
}

::testing::AssertionResult CsiAgent::Restart() {
  Stop();
  return Launch();
}

::testing::AssertionResult CsiAgent::Launch() {
  auto p =
      Subprocess::Spawn({LOCALVOLD_BIN, "--config", dirs_->config_path(), "--log-level", "debug"},
                        dirs_->Sub("localvold.log"));
  if (!p.ok()) return ::testing::AssertionFailure() << p.status().ToString();
  process_ = std::move(p).value();
  auto channel = CsiChannel(csi_socket());
  identity_ = csipb::Identity::NewStub(channel);
  controller_ = csipb::Controller::NewStub(channel);
  node_ = csipb::Node::NewStub(channel);
  for (int i = 0; i < 600; ++i) {
    if (auto w = process_.TryWait()) {
      return ::testing::AssertionFailure() << "localvold exited: " << DescribeWaitStatus(*w) << "\n"
                                           << Log();
    }
    if (Exists(csi_socket())) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      csipb::ProbeResponse r;
      if (identity_->Probe(&ctx, csipb::ProbeRequest(), &r).ok() && r.ready().value()) {
        return ::testing::AssertionSuccess();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ::testing::AssertionFailure() << "the CSI socket did not answer Probe ready within 60 s\n"
                                       << Log();
}

int CsiAgent::Stop() {
  if (!process_.running()) return -1;
  process_.Signal(SIGTERM);
  auto st = process_.Wait(std::chrono::seconds(60));
  return st ? *st : -1;
}

CsiAgent::~CsiAgent() {
  if (process_.running() && !process_.TryWait()) Stop();
  if (::testing::Test::HasFailure() && dirs_) std::cerr << "localvold log:\n" << Log();
  dirs_.reset();
  loops_.clear();
}

CommandResult CsiAgent::Ctl(std::vector<std::string> args) const {
  args.insert(args.begin(), {LOCALVOLCTL_BIN, "--socket", dirs_->socket()});
  return RunCommand(args, std::chrono::seconds(120));
}

std::string CsiAgent::Log() const {
  auto r = ReadFile(dirs_->Sub("localvold.log"));
  return r.ok() ? *r : "(no log)";
}

csipb::VolumeCapability MountCapability(csipb::VolumeCapability::AccessMode::Mode mode) {
  csipb::VolumeCapability c;
  c.mutable_mount();
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

csipb::CreateVolumeRequest CreateRequest(const std::string& name, int64_t required_bytes) {
  csipb::CreateVolumeRequest r;
  r.set_name(name);
  if (required_bytes > 0) r.mutable_capacity_range()->set_required_bytes(required_bytes);
  *r.add_volume_capabilities() = MountCapability();
  auto* t = r.mutable_accessibility_requirements();
  (*t->add_requisite()->mutable_segments())[kCsiTopologyKey] = kCsiNode;
  (*t->add_preferred()->mutable_segments())[kCsiTopologyKey] = kCsiNode;
  return r;
}

csipb::NodePublishVolumeRequest PublishRequest(const std::string& id, const std::string& target,
                                               bool readonly) {
  csipb::NodePublishVolumeRequest r;
  r.set_volume_id(id);
  r.set_target_path(target);
  r.set_readonly(readonly);
  *r.mutable_volume_capability() = MountCapability();
  return r;
}

std::string Describe(const grpc::Status& s) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(s.error_code());
  return std::string(c >= 0 && c <= 16 ? kNames[c] : "?") + ": " + s.error_message();
}

::testing::AssertionResult GrpcOk(const grpc::Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << Describe(s);
}

::testing::AssertionResult GrpcFails(const grpc::Status& s, grpc::StatusCode code,
                                     const std::string& text) {
  if (s.error_code() == code && s.error_message().find(text) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  grpc::Status want(code, "");
  return ::testing::AssertionFailure()
         << "got " << Describe(s) << "; want " << Describe(want) << "... '" << text << "'";
}

}  // namespace localvol::testing
