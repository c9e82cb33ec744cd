#include "agent/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "agent/system.h"
#include "base/directory.h"
#include "base/logging.h"
#include "base/scope_guard.h"

namespace localvol::agent {

std::string LoopDevice::FindAttached(const std::string& image) {
  auto canonical = CanonicalPath(image);
  if (!canonical.ok()) return "";
  auto names = ListDirectory("/sys/block");
  if (!names.ok()) return "";
  for (const auto& name : *names) {
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream in("/sys/block/" + name + "/loop/backing_file");
    std::string backing;
    if (std::getline(in, backing) && backing == *canonical) return "/dev/" + name;
  }
  return "";
}

Result<LoopDevice> LoopDevice::Attach(const std::string& image) {
  LoopDevice loop;
  if (std::string existing = FindAttached(image); !existing.empty()) {
    auto fd = OpenAt(AT_FDCWD, existing, O_RDWR);
    if (!fd.ok()) return Status::Error(fd.err(), "open " + existing + " (backing " + image + ")");
    loop.path_ = existing;
    loop.fd_ = std::move(fd).value();
    return loop;
  }
  auto image_fd = OpenAt(AT_FDCWD, image, O_RDWR);
  if (!image_fd.ok()) return Status::Error(image_fd.err(), "open disk image " + image);
  auto control = OpenAt(AT_FDCWD, "/dev/loop-control", O_RDWR);
  if (!control.ok()) {
    return Status::Error(control.err(), "open /dev/loop-control (is the loop module loaded?)");
  }
  // Another process may take the free device between GET_FREE and CONFIGURE.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int n = ::ioctl(control->get(), LOOP_CTL_GET_FREE);
    if (n < 0) return Status::FromErrno("LOOP_CTL_GET_FREE");
    const std::string path = "/dev/loop" + std::to_string(n);
    auto fd = OpenAt(AT_FDCWD, path, O_RDWR);
    if (!fd.ok()) return Status::Error(fd.err(), "open " + path);
    loop_config config;
    std::memset(&config, 0, sizeof config);
    config.fd = static_cast<__u32>(image_fd->get());
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), image.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(fd->get(), LOOP_CONFIGURE, &config) == 0) {
      loop.path_ = path;
      loop.fd_ = std::move(fd).value();
      return loop;
    }
    if (errno != EBUSY) return Status::FromErrno("LOOP_CONFIGURE " + path + " with " + image);
  }
  return Status::Error(EBUSY, "no free loop device for " + image + " after 16 attempts");
}

Status CreateSparseImage(const std::string& path, uint64_t size) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return Status::Ok();
  auto fd = OpenAt(AT_FDCWD, path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!fd.ok()) return Status::Error(fd.err(), "create disk image " + path);
  ScopeGuard remove([&] {
    if (Status rm = RemoveFile(path); !rm.ok()) {
      GetLogger("disk")->warn("could not remove the unfinished disk image: {}", rm.ToString());
    }
  });
  if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0) {
    return Status::FromErrno("size disk image " + path);
  }
  if (::fsync(fd->get()) != 0) return Status::FromErrno("fsync " + path);
  remove.Cancel();
  return Status::Ok();
}

}  // namespace localvol::agent
