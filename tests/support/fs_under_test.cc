#include "tests/support/fs_under_test.h"

#include <sys/stat.h>

#include <regex>

#include "tests/support/janitor.h"
#include "tests/support/mounts.h"

namespace localvol::testing {

std::string FsModeName(FsMode mode) {
  switch (mode) {
    case FsMode::kRaw:
      return "Raw";
    case FsMode::kLocalvol:
      return "Localvol";
    case FsMode::kLocalvolRing:
      return "LocalvolRing";
  }
  return "?";
}

void PrintTo(FsMode mode, std::ostream* os) { *os << FsModeName(mode); }

std::string FsModeParamName(const ::testing::TestParamInfo<FsMode>& info) {
  return FsModeName(info.param);
}

Result<std::unique_ptr<FsUnderTest>> FsUnderTest::Create(FsMode mode, const FsConfig& config) {
  std::unique_ptr<FsUnderTest> fs(new FsUnderTest());
  fs->mode_ = mode;
  fs->config_ = config;
  auto disk = LoopDisk::Create(config.disk_size);
  if (!disk.ok()) return disk.status();
  fs->disk_ = std::move(*disk);
  if (mode == FsMode::kRaw) {
    auto dir = fs->disk_->MakeDir("raw", 0777);
    if (!dir.ok()) return dir.status();
    fs->root_ = fs->backing_ = *dir;
    return fs;
  }
  if (!FuseServer::Available()) return Status::Error(ENOENT, "localvol-fuse was not built");
  if (mode == FsMode::kLocalvolRing) {
    auto on = FuseUringSwitch::Acquire();
    if (!on.ok()) return on.status();
    fs->uring_switch_ = std::move(*on);
  }
  auto backing = fs->disk_->MakeDir("vol", 0777);
  if (!backing.ok()) return backing.status();
  fs->backing_ = *backing;
  auto mounts = TempDir::Create("lvmnt");
  if (!mounts.ok()) return mounts.status();
  fs->mounts_ = std::move(*mounts);
  auto mp = fs->mounts_.MakeSubdir("mnt", 0755);
  if (!mp.ok()) return mp.status();
  FuseServerOptions so = fs->ServerOptions(fs->backing_, *mp, config.capacity);
  so.inodes = config.inodes;
  auto server = FuseServer::Start(so);
  if (!server.ok()) return server.status();
  fs->server_ = std::move(*server);
  fs->root_ = *mp;
  return fs;
}

FuseServerOptions FsUnderTest::ServerOptions(const std::string& source,
                                             const std::string& mountpoint,
                                             const std::string& capacity) const {
  FuseServerOptions so;
  so.source = source;
  so.mountpoint = mountpoint;
  so.capacity = capacity;
  if (mode_ == FsMode::kLocalvolRing) so.extra_args.push_back("--io-uring");
  return so;
}

FsUnderTest::~FsUnderTest() {
  second_server_.reset();
  server_.reset();
}

Status FsUnderTest::Remount() {
  if (mode_ == FsMode::kRaw) return disk_->Remount();
  Status st = server_->Stop();
  if (!st.ok()) return st;
  st = disk_->Remount();
  if (!st.ok()) return st;
  return server_->Restart();
}

Result<std::string> FsUnderTest::SecondVolumeRoot() {
  if (!second_root_.empty()) return second_root_;
  if (mode_ == FsMode::kRaw) {
    auto disk = LoopDisk::Create(LoopDisk::kDefaultSize);
    if (!disk.ok()) return disk.status();
    second_disk_ = std::move(*disk);
    auto dir = second_disk_->MakeDir("raw2", 0777);
    if (!dir.ok()) return dir.status();
    second_root_ = *dir;
    return second_root_;
  }
  auto backing = disk_->MakeDir("vol2", 0777);
  if (!backing.ok()) return backing.status();
  auto mp = mounts_.MakeSubdir("mnt2", 0755);
  if (!mp.ok()) return mp.status();
  auto server = FuseServer::Start(ServerOptions(*backing, *mp, "64Mi"));
  if (!server.ok()) return server.status();
  second_server_ = std::move(*server);
  second_root_ = *mp;
  return second_root_;
}

Result<std::string> FsUnderTest::OtherFsDir() {
  if (other_fs_.path().empty()) {
    auto dir = TempDir::Create("lvother");
    if (!dir.ok()) return dir.status();
    other_fs_ = std::move(*dir);
    if (::chmod(other_fs_.path().c_str(), 0777) != 0) return Status::FromErrno("chmod");
  }
  return other_fs_.path();
}

static bool RingServedRequests(const std::string& server_log) {
  static const std::regex kServed(R"(([1-9][0-9]*) requests came through FUSE over io_uring)");
  return std::regex_search(server_log, kServed);
}

void FsTest::SetUp() {
  CleanupLeftoversOfDeadTests();
  ::umask(022);
  if (GetParam() != FsMode::kRaw && !FuseServer::Available()) {
    GTEST_SKIP() << "localvol-fuse was not built (no localvol-fuse CMake target); "
                    "only the kernel (Raw) mode can run";
  }
  auto fs = FsUnderTest::Create(GetParam(), Config());
  ASSERT_TRUE(fs.ok()) << "setting up " << FsModeName(GetParam()) << ": " << fs.status().ToString();
  fs_ = std::move(*fs);
}

void FsTest::TearDown() {
  if (fs_ && fs_->server() != nullptr && fs_->server()->watchdog_fired()) {
    ADD_FAILURE() << "localvol-fuse hung: the watchdog had to kill it";
  }
  if (fs_ && fs_->mode() == FsMode::kLocalvolRing && fs_->server()->running()) {
    // The test means nothing for the ring unless its requests went that way.
    EXPECT_TRUE(fs_->server()->Stop().ok());
    EXPECT_TRUE(RingServedRequests(fs_->server()->Log()))
        << "no request came through FUSE over io_uring";
  }
  if (fs_ && fs_->server() != nullptr && HasFailure()) {
    std::cout << "--- localvol-fuse output ---\n" << fs_->server()->Log() << "\n---\n";
  }
  fs_.reset();
}

}  // namespace localvol::testing
