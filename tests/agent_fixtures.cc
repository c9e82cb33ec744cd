#include "tests/agent_fixtures.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "base/unique_fd.h"
#include "tests/support/janitor.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"

namespace localvol::testing {

Result<std::unique_ptr<RawLoop>> RawLoop::Create(uint64_t size,
                                                 const std::vector<std::string>& prepare) {
  CleanupLeftoversOfDeadTests();
  auto dir = TempDir::Create("lvtmp");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<RawLoop> loop(new RawLoop());
  loop->owner_ = ::getpid();
  loop->dir_ = std::move(*dir);
  loop->image_ = loop->dir_.Sub("raw.img");
  {
    auto fd = OpenAt(AT_FDCWD, loop->image_, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (!fd.ok()) return fd.status();
    if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0) {
      return Status::FromErrno("ftruncate " + loop->image_);
    }
  }
  if (!prepare.empty()) {
    std::vector<std::string> argv = prepare;
    argv.push_back(loop->image_);
    CommandResult r = RunCommand(argv, 120s);
    if (!r.ok()) return Status::Error(EIO, argv[0] + ": " + r.Summary());
  }
  CommandResult attach = RunCommand({"losetup", "--find", "--show", loop->image_}, 30s);
  if (!attach.ok()) return Status::Error(EIO, "losetup: " + attach.Summary());
  std::string dev = attach.out;
  while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' ')) dev.pop_back();
  if (dev.rfind("/dev/loop", 0) != 0) return Status::Error(EIO, "losetup printed '" + dev + "'");
  loop->device_ = dev;
  return loop;
}

RawLoop::~RawLoop() {
  if (owner_ != ::getpid() || device_.empty()) return;
  // Anything of ours still mounted from it goes first.
  for (const auto& e : ReadMountTable()) {
    if (e.source == device_) (void)LazyUnmountAll(e.mount_point);
  }
  std::ifstream in("/sys/block/" + device_.substr(5) + "/loop/backing_file");
  std::string backing;
  std::getline(in, backing);
  if (backing.rfind(image_, 0) == 0) (void)RunCommand({"losetup", "-d", device_}, 30s);
}

Result<uint64_t> ImageHash(const std::string& path) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  uint64_t h = 1469598103934665603ull;
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0) return Status::FromErrno("read " + path);
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      h ^= buf[static_cast<size_t>(i)];
      h *= 1099511628211ull;
    }
  }
  return h;
}

Result<std::unique_ptr<AgentDirs>> AgentDirs::Create() {
  CleanupLeftoversOfDeadTests();
  auto dir = TempDir::Create("lvtmp");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<AgentDirs> d(new AgentDirs());
  d->dir_ = std::move(*dir);
  for (const char* sub : {"state", "publish", "run"}) {
    auto made = d->dir_.MakeSubdir(sub, 0755);
    if (!made.ok()) return made.status();
  }
  return d;
}

AgentDirs::~AgentDirs() { UnmountAll(); }

void AgentDirs::UnmountAll() const {
  if (root().empty()) return;
  std::vector<std::string> below;
  for (const auto& e : ReadMountTable()) {
    if (e.mount_point.rfind(root() + "/", 0) == 0) below.push_back(e.mount_point);
  }
  for (auto it = below.rbegin(); it != below.rend(); ++it) (void)LazyUnmountAll(*it);
}

agent::Config AgentDirs::MakeConfig(const std::vector<std::string>& devices) const {
  agent::Config c;
  c.source = "test";
  for (const auto& d : devices) c.disks.push_back(agent::DiskEntry{d, false, std::nullopt});
  c.state_dir = state();
  c.publish_dir = publish();
  c.socket = socket();
  c.metrics_port = 0;
  c.csi_socket = "";
  c.reserve = agent::Reserve{0, 5.0};
  return c;
}

Status AgentDirs::WriteConfig(const std::vector<std::string>& devices,
                              const std::string& extra) const {
  std::string text;
  if (!devices.empty()) {
    text += "disks:\n";
    for (const auto& d : devices) text += "  - " + d + "\n";
  }
  text += "state_dir: " + state() + "\n";
  text += "publish_dir: " + publish() + "\n";
  text += "socket: " + socket() + "\n";
  text += "metrics_port: 0\n";
  text += extra;
  // Agents of parallel tests must not share the default CSI socket.
  if (extra.find("csi_socket:") == std::string::npos) text += "csi_socket: \"\"\n";
  std::ofstream out(config_path());
  out << text;
  out.close();
  if (!out) return Status::Error(EIO, "write " + config_path());
  return Status::Ok();
}

bool DeviceIsBlank(const std::string& device) {
  // blkid -p exits 2 when it finds nothing.
  CommandResult r = RunCommand({"blkid", "-p", device}, 30s);
  return r.exit_code == 2;
}

}  // namespace localvol::testing
