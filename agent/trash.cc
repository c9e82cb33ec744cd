#include "agent/trash.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <random>
#include <vector>

#include "base/directory.h"
#include "base/logging.h"
#include "base/size.h"
#include "base/unique_fd.h"
#include "fuse/usage_store.h"

namespace localvol::agent {
namespace {

std::shared_ptr<spdlog::logger> Log() { return GetLogger("trash"); }

// Removes everything below the directory `dir_fd` without following symlinks
// or crossing into another filesystem, calling `freed` with the allocated
// bytes of each inode whose last link it removed. Stops early (returning
// ECANCELED) when `stop` becomes true. Recursion depth is the tree's depth.
Status RemoveContents(int dir_fd, dev_t dev, const std::atomic<bool>& stop,
                      const std::function<void(uint64_t)>& freed, int depth = 0) {
  if (depth > 4096) return Status::Error(ELOOP, "directory tree too deep");
  auto names = ListDirectoryAt(dir_fd);
  if (!names.ok()) return names.status();
  Status first;
  for (const auto& name : *names) {
    if (stop.load(std::memory_order_relaxed)) return Status::Error(ECANCELED, "stopping");
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    const uint64_t bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) continue;  // a mount: never walk into it
      auto sub = OpenAt(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!sub.ok()) {
        if (first.ok()) first = sub.status();
        continue;
      }
      Status s = RemoveContents(sub->get(), dev, stop, freed, depth + 1);
      if (s.err() == ECANCELED) return s;
      if (!s.ok() && first.ok()) first = s;
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) == 0) {
        freed(bytes);
      } else if (first.ok()) {
        first = Status::FromErrno("rmdir " + name);
      }
    } else if (::unlinkat(dir_fd, name.c_str(), 0) == 0) {
      if (st.st_nlink <= 1) freed(bytes);
    } else if (errno != ENOENT && first.ok()) {
      first = Status::FromErrno("unlink " + name);
    }
  }
  return first;
}

uint64_t TreeBytes(int dir_fd, dev_t dev, int depth = 0) {
  if (depth > 4096) return 0;
  auto names = ListDirectoryAt(dir_fd);
  if (!names.ok()) return 0;
  uint64_t sum = 0;
  for (const auto& name : *names) {
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != dev)
      continue;
    sum += static_cast<uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode)) {
      auto sub = OpenAt(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (sub.ok()) sum += TreeBytes(sub->get(), dev, depth + 1);
    }
  }
  return sum;
}

std::string RandomSuffix() {
  static std::mt19937_64 rng(std::random_device{}());
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  return fmt::format("{:016x}", rng());
}

}  // namespace

uint64_t BytesHeldBy(int dir_fd) {
  auto clean = fuse::ReadCleanUsage(dir_fd);
  if (clean.ok() && clean->has_value()) return (*clean)->used_bytes;
  struct stat root;
  if (::fstat(dir_fd, &root) != 0) return 0;
  return static_cast<uint64_t>(root.st_blocks) * 512 + TreeBytes(dir_fd, root.st_dev);
}

Trash::~Trash() { Stop(); }

void Trash::Start() {
  MutexLock lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  abort_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Trash::Stop() {
  {
    MutexLock lock(mu_);
    if (!thread_.joinable()) return;
    abort_ = true;
    stop_ = true;
    cv_.notify_all();
  }
  thread_.join();
  // What is left is charged again by the next Adopt().
  MutexLock lock(mu_);
  thread_ = std::thread();
  queue_.clear();
  bytes_.clear();
}

void Trash::Queue(Item item) {
  MutexLock lock(mu_);
  bytes_[item.disk] += item.charged;
  queue_.push_back(std::move(item));
  cv_.notify_all();
}

Status Trash::Move(AttachedDisk* disk, const std::string& path, uint64_t bytes) {
  const std::string base = path.substr(path.rfind('/') + 1);
  const std::string target = disk->TrashDir() + "/" + base + "." + RandomSuffix();
  if (::rename(path.c_str(), target.c_str()) != 0) {
    return Status::FromErrno("move " + path + " to " + target);
  }
  Queue(Item{disk, target, bytes});
  return Status::Ok();
}

Status Trash::MoveMeasured(AttachedDisk* disk, const std::string& path) {
  uint64_t bytes = 0;
  if (auto fd = OpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW); fd.ok()) {
    bytes = BytesHeldBy(fd->get());
  }
  return Move(disk, path, bytes);
}

void Trash::Adopt(AttachedDisk* disk) {
  const std::string dir = disk->TrashDir();
  auto listed = ListDirectory(dir);
  if (!listed.ok()) {
    Log()->warn("disk {}: cannot read the trash: {}; what is in it is neither counted nor removed",
                disk->uuid, listed.status().ToString());
    return;
  }
  const std::vector<std::string>& names = *listed;
  uint64_t total = 0;
  for (const auto& n : names) {
    const std::string path = dir + "/" + n;
    uint64_t bytes = 0;
    if (auto fd = OpenAt(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW); fd.ok()) {
      bytes = BytesHeldBy(fd->get());
    } else {
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0) bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    }
    total += bytes;
    Queue(Item{disk, path, bytes});
  }
  if (!names.empty()) {
    Log()->info(
        "disk {}: {} deleted volume(s) still in the trash, holding {}; counted as "
        "allocated until removed",
        disk->uuid, names.size(), FormatSize(total));
  }
}

uint64_t Trash::PendingBytes(const AttachedDisk* disk) const {
  MutexLock lock(mu_);
  auto it = bytes_.find(disk);
  return it == bytes_.end() ? 0 : it->second;
}

uint64_t Trash::PendingBytes() const {
  MutexLock lock(mu_);
  uint64_t sum = 0;
  for (const auto& [disk, bytes] : bytes_) sum += bytes;
  return sum;
}

void Trash::Release(Item* item, uint64_t bytes) {
  bytes = std::min(bytes, item->charged);
  if (bytes == 0) return;
  item->charged -= bytes;
  MutexLock lock(mu_);
  auto& charged = bytes_[item->disk];
  charged -= std::min(charged, bytes);
}

void Trash::Remove(Item item) {
  const uint64_t held = item.charged;
  Status st;
  struct stat root;
  auto fd = OpenAt(AT_FDCWD, item.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd.ok()) {
    // Not a directory (or gone): a plain unlink.
    st = fd.status();
    if (fd.err() == ENOTDIR || fd.err() == ELOOP) {
      st = ::unlink(item.path.c_str()) == 0 ? Status::Ok()
                                            : Status::FromErrno("unlink " + item.path);
    }
  } else if (::fstat(fd->get(), &root) != 0) {
    st = Status::FromErrno("stat " + item.path);
  } else {
    st = RemoveContents(fd->get(), root.st_dev, abort_,
                        [&](uint64_t bytes) { Release(&item, bytes); });
    fd->Reset();
    if (st.ok() && ::rmdir(item.path.c_str()) != 0) st = Status::FromErrno("rmdir " + item.path);
  }
  if (st.err() == ECANCELED) return;  // resumed (and charged again) at the next start
  if (!st.ok() && st.err() != ENOENT) {
    Log()->error(
        "removing {}: {}; its {} stay counted as allocated on disk {} until a later "
        "start removes it",
        item.path, st.ToString(), FormatSize(item.charged), item.disk->uuid);
    return;
  }
  Log()->info("removed {} ({} returned to disk {})", item.path, FormatSize(held), item.disk->uuid);
  Release(&item, item.charged);
}

void Trash::Loop() {
  for (;;) {
    Item item;
    {
      MutexLock lock(mu_);
      while (!stop_ && queue_.empty()) cv_.wait(mu_);
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Remove(std::move(item));
  }
}

}  // namespace localvol::agent
