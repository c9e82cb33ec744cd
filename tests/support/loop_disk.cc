#include "tests/support/loop_disk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/scope_guard.h"
#include "base/unique_fd.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"

namespace localvol::testing {

Result<std::unique_ptr<LoopDisk>> LoopDisk::Create(uint64_t size_bytes) {
  auto dir = TempDir::Create("lvdisk");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<LoopDisk> disk(new LoopDisk());
  disk->owner_ = ::getpid();
  disk->dir_ = std::move(*dir);
  disk->image_ = disk->dir_.Sub("disk.img");
  disk->mount_point_ = disk->dir_.Sub("mnt");
  {
    auto fd = OpenAt(AT_FDCWD, disk->image_, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (!fd.ok()) return fd.status();
    if (::ftruncate(fd->get(), static_cast<off_t>(size_bytes)) != 0) {
      return Status::FromErrno("ftruncate " + disk->image_);
    }
  }
  CommandResult attach = RunCommand({"losetup", "--find", "--show", disk->image_}, 30s);
  if (!attach.ok()) return Status::Error(EIO, "losetup --find --show: " + attach.Summary());
  std::string dev = attach.out;
  while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' ')) dev.pop_back();
  if (dev.rfind("/dev/loop", 0) != 0) return Status::Error(EIO, "losetup printed '" + dev + "'");
  disk->device_ = dev;
  // From here on the destructor detaches the device if a later step fails.
  CommandResult mkfs = RunCommand({"mkfs.xfs", "-q", "-f", disk->device_}, 60s);
  if (!mkfs.ok()) return Status::Error(EIO, "mkfs.xfs " + disk->device_ + ": " + mkfs.Summary());
  if (::mkdir(disk->mount_point_.c_str(), 0755) != 0) {
    return Status::FromErrno("mkdir " + disk->mount_point_);
  }
  Status st = disk->Mount();
  if (!st.ok()) return st;
  return disk;
}

Result<std::string> LoopDisk::MakeDir(const std::string& name, unsigned mode) const {
  std::string p = Path(name);
  if (::mkdir(p.c_str(), mode) != 0) return Status::FromErrno("mkdir " + p);
  if (::chmod(p.c_str(), mode) != 0) return Status::FromErrno("chmod " + p);
  return p;
}

Status LoopDisk::Mount() {
  if (mounted_) return Status::Ok();
  if (::mount(device_.c_str(), mount_point_.c_str(), "xfs", 0, nullptr) != 0) {
    return Status::FromErrno("mount " + device_ + " on " + mount_point_);
  }
  mounted_ = true;
  return Status::Ok();
}

Status LoopDisk::Unmount() {
  if (!mounted_) return Status::Ok();
  Status st;
  if (::umount2(mount_point_.c_str(), 0) != 0) {
    st = Status::FromErrno("umount " + mount_point_ + " (detached lazily instead)");
    (void)LazyUnmountAll(mount_point_);
  }
  mounted_ = false;
  return st;
}

Status LoopDisk::Remount() {
  Status st = Unmount();
  if (!st.ok()) return st;
  return Mount();
}

Status LoopDisk::Detach() {
  if (device_.empty()) return Status::Ok();
  // Make sure the device still belongs to our image before detaching it.
  std::string name = device_.substr(std::string("/dev/").size());
  std::ifstream in("/sys/block/" + name + "/loop/backing_file");
  std::string backing;
  std::getline(in, backing);
  if (backing.rfind(image_, 0) != 0) {
    return Status::Error(
        EPERM, device_ + " is backed by '" + backing + "', not " + image_ + "; leaving it alone");
  }
  CommandResult r = RunCommand({"losetup", "-d", device_}, 30s);
  device_.clear();
  if (!r.ok()) return Status::Error(EIO, "losetup -d: " + r.Summary());
  return Status::Ok();
}

LoopDisk::~LoopDisk() {
  if (owner_ != ::getpid()) return;
  (void)Unmount();
  (void)Detach();
  // dir_ (image and mount point) is removed by its own destructor.
}

void MakeVolumeDirs(VolumeDirs* out) {
  auto disk = LoopDisk::Create();
  ASSERT_TRUE(disk.ok()) << disk.status().ToString();
  out->disk = std::move(*disk);
  auto backing = out->disk->MakeDir("vol", 0777);
  ASSERT_TRUE(backing.ok()) << backing.status().ToString();
  out->backing = *backing;
  auto mounts = TempDir::Create("lvmnt");
  ASSERT_TRUE(mounts.ok()) << mounts.status().ToString();
  out->mounts = std::move(*mounts);
  auto mp = out->mounts.MakeSubdir("mnt", 0755);
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  out->mountpoint = *mp;
}

}  // namespace localvol::testing
