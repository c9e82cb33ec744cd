// Fixtures for the agent's integration tests.
//
//  * RawLoop: a sparse image attached to a loop device and left unformatted
//    (or prepared by the test itself: a foreign filesystem, a partition
//    table). These are the only devices an agent test ever names in a config,
//    so the agent can only ever format, mount or wipe devices the test created.
//  * AgentDirs: a unique directory holding the agent's state and publish
//    directories, its config and socket. Its destructor lazily detaches every
//    mount below it (volumes, disks), so a failing test leaks nothing.
//  * ImageHash: a digest of a whole image file, to prove a device stayed
//    byte-for-byte untouched.
//
// Declare RawLoops before AgentDirs, and AgentDirs before anything that uses
// the agent: teardown then unmounts before it detaches the devices.
// Not thread-safe; owned by one test.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/config.h"
#include "base/status.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {

class RawLoop {
 public:
  static constexpr uint64_t kDefaultSize = 512ull << 20;
  // Creates a sparse image of `size` and runs `prepare(image)` on the file
  // (e.g. mkfs.ext4 on the image) before attaching it.
  static Result<std::unique_ptr<RawLoop>> Create(uint64_t size = kDefaultSize,
                                                 const std::vector<std::string>& prepare = {});
  ~RawLoop();
  RawLoop(const RawLoop&) = delete;
  RawLoop& operator=(const RawLoop&) = delete;

  const std::string& device() const { return device_; }
  const std::string& image() const { return image_; }
  // Directory holding the image (for symlinks and side files).
  const TempDir& dir() const { return dir_; }

 private:
  RawLoop() = default;
  TempDir dir_;
  std::string image_;
  std::string device_;
  int owner_ = -1;
};

// FNV-1a over every byte of the file.
Result<uint64_t> ImageHash(const std::string& path);

class AgentDirs {
 public:
  static Result<std::unique_ptr<AgentDirs>> Create();
  ~AgentDirs();

  const std::string& root() const { return dir_.path(); }
  std::string state() const { return dir_.Sub("state"); }
  std::string publish() const { return dir_.Sub("publish"); }
  std::string socket() const { return dir_.Sub("run/localvol.sock"); }
  std::string config_path() const { return dir_.Sub("config.yaml"); }
  std::string Sub(const std::string& name) const { return dir_.Sub(name); }

  // A config for these directories and the given devices, metrics and CSI
  // off (unless `extra` sets csi_socket).
  agent::Config MakeConfig(const std::vector<std::string>& devices) const;
  // The same as YAML text (plus `extra` lines), written to config_path().
  Status WriteConfig(const std::vector<std::string>& devices, const std::string& extra = "") const;

  // Lazily unmounts everything below root(), deepest first.
  void UnmountAll() const;

 private:
  AgentDirs() = default;
  TempDir dir_;
};

// True if `device` shows no signature to `blkid -p`.
bool DeviceIsBlank(const std::string& device);

}  // namespace localvol::testing
