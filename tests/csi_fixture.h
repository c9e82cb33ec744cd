// A real localvold serving its CSI driver, for the CSI integration tests:
// loop disks the test creates (tests/agent_fixtures.h), the real binary, and
// gRPC stubs generated from agent/csi/csi.proto talking to the real socket.
//
// Declare the fixture after nothing else that uses its mounts: its destructor
// stops the agent (SIGTERM, then SIGKILL) before AgentDirs unmounts what is
// left below its root and the loop devices go.
// Not thread-safe, except the stubs, which any thread may call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/csi/csi.grpc.pb.h"
#include "tests/agent_fixtures.h"
#include "tests/support/process.h"

namespace localvol::testing {

namespace csipb = ::csi::v1;

inline constexpr const char* kCsiNode = "node-a";
inline constexpr const char* kCsiTopologyKey = "topology.localvol.io/node";

class CsiAgent {
 public:
  // Loop disks of `sizes` bytes, an agent on them with node_name kCsiNode and
  // the CSI socket at dirs()->Sub("plugins/localvol.io/csi.sock"), started
  // and answering Probe with ready=true.
  ::testing::AssertionResult Start(const std::vector<uint64_t>& sizes);
  ~CsiAgent();

  const AgentDirs& dirs() const { return *dirs_; }
  std::string csi_socket() const { return dirs_->Sub("plugins/localvol.io/csi.sock"); }
  csipb::Identity::Stub& identity() { return *identity_; }
  csipb::Controller::Stub& controller() { return *controller_; }
  csipb::Node::Stub& node() { return *node_; }
  // localvolctl against the agent's localvol.v1 socket.
  CommandResult Ctl(std::vector<std::string> args) const;
  std::string Log() const;
  // SIGTERM and wait; the wait status, or -1.
  int Stop();
  // Stop(), then start the agent again on the same disks and directories.
  ::testing::AssertionResult Restart();

 private:
  std::vector<std::unique_ptr<RawLoop>> loops_;
  std::unique_ptr<AgentDirs> dirs_;
  Subprocess process_;
  std::unique_ptr<csipb::Identity::Stub> identity_;
  std::unique_ptr<csipb::Controller::Stub> controller_;
  std::unique_ptr<csipb::Node::Stub> node_;

  ::testing::AssertionResult Launch();
};

// Stubs on the CSI socket at `path`.
std::shared_ptr<grpc::Channel> CsiChannel(const std::string& path);

// A mount capability with `mode` (SINGLE_NODE_WRITER by default).
csipb::VolumeCapability MountCapability(
    csipb::VolumeCapability::AccessMode::Mode mode =
        csipb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
// A CreateVolume request as the external-provisioner sends it: one mount
// capability, required_bytes (0: no capacity_range), requisite topology of
// this node.
csipb::CreateVolumeRequest CreateRequest(const std::string& name, int64_t required_bytes);
// A NodePublishVolume request for a mount at `target`.
csipb::NodePublishVolumeRequest PublishRequest(const std::string& id, const std::string& target,
                                               bool readonly = false);

// "INVALID_ARGUMENT: message" for assertion messages.
std::string Describe(const grpc::Status& s);

// Success, or a failure that shows the code and message.
::testing::AssertionResult GrpcOk(const grpc::Status& s);
// Failure with `code` and `text` in the message.
::testing::AssertionResult GrpcFails(const grpc::Status& s, grpc::StatusCode code,
                                     const std::string& text);

#define EXPECT_GRPC_OK(call) EXPECT_TRUE(::localvol::testing::GrpcOk(call)) << #call
#define ASSERT_GRPC_OK(call) ASSERT_TRUE(::localvol::testing::GrpcOk(call)) << #call
#define EXPECT_GRPC_CODE(call, code, text) \
  EXPECT_TRUE(::localvol::testing::GrpcFails(call, code, text)) << #call

}  // namespace localvol::testing
