#include "tests/support/in_process_volume.h"

#include <unistd.h>

#include "tests/support/mounts.h"
#include "tests/support/sys.h"

namespace localvol::testing {

bool InProcessVolume::Available() { return LOCALVOL_HAVE_VOLUME_LIB != 0; }

Result<std::unique_ptr<InProcessVolume>> InProcessVolume::Mount(
    const InProcessVolumeOptions& options) {
#if LOCALVOL_HAVE_VOLUME_LIB
  std::unique_ptr<InProcessVolume> v(new InProcessVolume());
  v->owner_ = ::getpid();
  v->options_ = options;
  auto engine = iopath::Engine::Create();
  if (!engine.ok()) return engine.status();
  v->engine_ = std::move(*engine);
  Status st = v->DoMount();
  if (!st.ok()) return st;
  return v;
#else
  return Status::Error(ENOSYS, "the localvol_fuse library was not built");
#endif
}

Status InProcessVolume::DoMount() {
#if LOCALVOL_HAVE_VOLUME_LIB
  fuse::VolumeOptions vo;
  vo.source_dir = options_.source;
  vo.mountpoint = options_.mountpoint;
  vo.name = UniqueName("inproc");
  vo.capacity_bytes = options_.capacity_bytes;
  vo.inode_limit = options_.inode_limit;
  vo.engine = engine_.get();
  vo.fuse_io_uring = options_.fuse_io_uring;
  vo.thread_placement = options_.thread_placement;
  vo.read_passthrough = options_.read_passthrough;
  if (options_.fuse_io_uring_idle_release) {
    vo.fuse_io_uring_idle_release = *options_.fuse_io_uring_idle_release;
  }
  auto vol = fuse::Volume::Mount(vo);
  if (!vol.ok()) {
    (void)LazyUnmountAll(options_.mountpoint);
    return vol.status();
  }
  volume_ = std::move(*vol);
  return Status::Ok();
#else
  return Status::Error(ENOSYS, "the localvol_fuse library was not built");
#endif
}

Status InProcessVolume::Unmount() {
#if LOCALVOL_HAVE_VOLUME_LIB
  if (!volume_) return Status::Ok();
  Status st = volume_->Unmount();
  volume_.reset();
  if (IsMountPoint(options_.mountpoint)) {
    (void)LazyUnmountAll(options_.mountpoint);
    if (st.ok()) st = Status::Error(EBUSY, "Volume::Unmount left the mount behind");
  }
  return st;
#else
  return Status::Ok();
#endif
}

Status InProcessVolume::Remount() {
  Status st = Unmount();
  if (!st.ok()) return st;
  return DoMount();
}

InProcessVolume::~InProcessVolume() {
  if (owner_ != ::getpid()) return;
  (void)Unmount();
  (void)LazyUnmountAll(options_.mountpoint);
}

InProcessVolumeOptions InProcessVolumeTest::Options() const {
  InProcessVolumeOptions options;
  options.source = dirs_.backing;
  options.mountpoint = dirs_.mountpoint;
  options.capacity_bytes = capacity_bytes_;
  options.inode_limit = inode_limit_;
  options.fuse_io_uring = fuse_io_uring_;
  options.thread_placement = thread_placement_;
  options.fuse_io_uring_idle_release = fuse_io_uring_idle_release_;
  options.read_passthrough = read_passthrough_;
  return options;
}

void InProcessVolumeTest::SetUp() {
  if (!InProcessVolume::Available()) GTEST_SKIP() << "localvol_fuse library not built";
  ASSERT_NO_FATAL_FAILURE(MakeVolumeDirs(&dirs_));
  auto volume = InProcessVolume::Mount(Options());
  ASSERT_TRUE(volume.ok()) << volume.status().ToString();
  volume_ = std::move(volume).value();
}

void InProcessVolumeTest::TearDown() {
  volume_.reset();
  dirs_ = VolumeDirs();
}

}  // namespace localvol::testing
