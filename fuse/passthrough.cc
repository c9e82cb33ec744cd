#include "fuse/passthrough.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>

#include <cerrno>
#include <cstddef>
#include <utility>

namespace localvol::fuse::passthrough {

// The old header names the same bytes differently; the layout is ABI.
static_assert(offsetof(fuse_init_out, flags2) + sizeof(uint32_t) == kInitOutMaxStackDepthOffset);
static_assert(offsetof(fuse_open_out, padding) == kOpenOutBackingIdOffset);
static_assert(sizeof(fuse_open_out) == kOpenOutBackingIdOffset + sizeof(int32_t));
static_assert(sizeof(BackingMap) == 16);
static_assert(kIocBackingOpen == 0x4010e501ul);
static_assert(kIocBackingClose == 0x4004e502ul);
static_assert(kMaxStackDepth >= 1 && kMaxStackDepth <= kFilesystemMaxStackDepth);

namespace {

// Filesystems that stack on others and so have an s_stack_depth of 1 or more.
struct StackingFs {
  long magic;
  const char* name;
};
constexpr StackingFs kStackingFilesystems[] = {
    {0x794c7630, "overlayfs"},  // OVERLAYFS_SUPER_MAGIC
    {0xf15f, "ecryptfs"},       // ECRYPTFS_SUPER_MAGIC
    {0x65735546, "FUSE"},       // FUSE_SUPER_MAGIC: stacked when it uses passthrough
};

}  // namespace

Status CheckBackingNotStacked(int dir_fd, const std::string& what) {
  struct statfs st;
  if (fstatfs(dir_fd, &st) != 0) return Status::FromErrno("statfs " + what);
  for (const StackingFs& fs : kStackingFilesystems) {
    if (st.f_type == fs.magic) {
      return Status::Error(
          EINVAL, what + " is on " + fs.name +
                      ", a stacking filesystem: FUSE passthrough needs the backing files on a "
                      "plain filesystem (XFS, ext4); set read_passthrough to off for this volume");
    }
  }
  return Status::Ok();
}

// ---- BackingFile

BackingFile::BackingFile(BackingFile&& o) noexcept
    : dev_fd_(std::exchange(o.dev_fd_, -1)), id_(std::exchange(o.id_, 0)) {}

BackingFile& BackingFile::operator=(BackingFile&& o) noexcept {
  if (this != &o) {
    Close();
    dev_fd_ = std::exchange(o.dev_fd_, -1);
    id_ = std::exchange(o.id_, 0);
  }
  return *this;
}

Result<BackingFile> BackingFile::Register(int dev_fd, int file_fd) {
  BackingMap map{.fd = file_fd, .flags = 0, .padding = 0};
  int id;
  do {
    id = ioctl(dev_fd, kIocBackingOpen, &map);
  } while (id < 0 && errno == EINTR);
  if (id < 0) return Status::FromErrno("register a FUSE passthrough backing file");
  if (id == 0) return Status::Error(EPROTO, "register a FUSE passthrough backing file: id 0");
  return BackingFile(dev_fd, id);
}

void BackingFile::Close() {
  if (dev_fd_ >= 0 && id_ > 0) {
    uint32_t id = static_cast<uint32_t>(id_);
    // Fails only if the connection is gone, which took the id with it.
    (void)ioctl(dev_fd_, kIocBackingClose, &id);
  }
  dev_fd_ = -1;
  id_ = 0;
}

// ---- PassthroughTable

namespace {

// Reads through the open can never change the file's allocation: no write
// access (so no writable shared mapping either) and no truncation.
bool CannotAllocate(int flags) { return (flags & O_ACCMODE) == O_RDONLY && !(flags & O_TRUNC); }

}  // namespace

OpenDecision PassthroughTable::Open(uint64_t inode, const OpenRequest& request,
                                    const VolumePolicy& policy, const Registrar& registrar) {
  OpenDecision d;
  if (!request.regular_file) return d;
  const bool reader = CannotAllocate(request.flags);
  const bool reads_past_server = reader && policy.passthrough && !policy.queued_reads;
  MutexLock lock(mu_);
  auto it = inodes_.find(inode);
  if (it != inodes_.end() && it->second.passthrough_opens > 0) {
    // The kernel holds the inode in passthrough mode until the last of these
    // ends: this open must name the same backing file.
    Entry& e = it->second;
    d.mode = reads_past_server ? OpenMode::kPassthrough : OpenMode::kPassthroughServerIo;
    d.backing_id = e.backing.id();
    // A writer's shared mapping writes to the backing file, not through
    // the FUSE page cache.
    if (!reader) e.cache_stale = true;
    ++e.passthrough_opens;
    ++open_now_;
    ++opened_total_;
    return d;
  }
  if (reads_past_server && (it == inodes_.end() || it->second.server_opens == 0)) {
    Result<BackingFile> backing = registrar();
    if (backing.ok()) {
      if (it == inodes_.end()) it = inodes_.emplace(inode, Entry{}).first;
      Entry& e = it->second;
      e.backing = std::move(backing).value();
      e.passthrough_opens = 1;
      ++open_now_;
      ++opened_total_;
      d.mode = OpenMode::kPassthrough;
      d.backing_id = e.backing.id();
      return d;
    }
  }
  if (it == inodes_.end()) {
    if (!policy.passthrough) return d;  // nothing to remember without passthrough
    it = inodes_.emplace(inode, Entry{}).first;
  }
  Entry& e = it->second;
  ++e.server_opens;
  d.keep_cache = !e.cache_stale;
  e.cache_stale = false;
  return d;
}

BackingFile PassthroughTable::Release(uint64_t inode, OpenMode mode) {
  BackingFile last;
  MutexLock lock(mu_);
  auto it = inodes_.find(inode);
  if (it == inodes_.end()) return last;  // a server open without passthrough
  Entry& e = it->second;
  if (mode == OpenMode::kServer) {
    if (e.server_opens > 0) --e.server_opens;
  } else if (e.passthrough_opens > 0) {
    --open_now_;
    if (--e.passthrough_opens == 0) last = std::move(e.backing);
  }
  MaybeErase(it);
  return last;
}

std::vector<BackingFile> PassthroughTable::Clear() {
  std::vector<BackingFile> out;
  MutexLock lock(mu_);
  for (auto& [inode, e] : inodes_) {
    if (e.backing.valid()) out.push_back(std::move(e.backing));
  }
  inodes_.clear();
  open_now_ = 0;
  return out;
}

void PassthroughTable::MaybeErase(std::unordered_map<uint64_t, Entry>::iterator it) {
  const Entry& e = it->second;
  if (e.passthrough_opens == 0 && e.server_opens == 0 && !e.cache_stale) inodes_.erase(it);
}

bool PassthroughTable::InPassthroughMode(uint64_t inode) const {
  MutexLock lock(mu_);
  auto it = inodes_.find(inode);
  return it != inodes_.end() && it->second.passthrough_opens > 0;
}

uint64_t PassthroughTable::passthrough_opens() const {
  MutexLock lock(mu_);
  return open_now_;
}

uint64_t PassthroughTable::passthrough_opens_total() const {
  MutexLock lock(mu_);
  return opened_total_;
}

}  // namespace localvol::fuse::passthrough
