#include "fuse/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "base/logging.h"
#include "fuse/caller_credentials.h"
#include "fuse/protocol_extensions.h"
#include "fuse/thread_placement.h"
#include "fuse/usage_store.h"
#include "iopath/engine.h"

namespace localvol::fuse {

// What fi->fh points at: an open file or directory of the backing tree.
struct Filesystem::OpenHandle {
  explicit OpenHandle(Inode* i) : inode(i) {}
  virtual ~OpenHandle() = default;
  Inode* inode;
};

struct Filesystem::FileHandle : OpenHandle {
  FileHandle(UniqueFd f, Inode* i) : OpenHandle(i), fd(std::move(f)) {}
  UniqueFd fd;
};

struct Filesystem::DirHandle : OpenHandle {
  explicit DirHandle(Inode* i) : OpenHandle(i) {}
  ~DirHandle() override {
    if (dir != nullptr) closedir(dir);
  }
  DIR* dir = nullptr;
  off_t offset = 0;
  struct dirent* entry = nullptr;  // read but not yet returned to the kernel
};

namespace {

Filesystem* Fs(fuse_req_t req) { return static_cast<Filesystem*>(fuse_req_userdata(req)); }

template <typename Handle>
Handle* HandleOf(const fuse_file_info* fi) {
  return reinterpret_cast<Handle*>(fi->fh);
}

bool IsReservedXattr(const char* name) {
  return std::strncmp(name, kReservedXattrPrefix.data(), kReservedXattrPrefix.size()) == 0;
}

// Names come from the kernel as single components; "." and ".." would walk
// out of the tree relative to the volume root, so refuse them outright.
bool IsUnsafeName(const char* name) {
  return std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0 ||
         std::strchr(name, '/') != nullptr;
}

InodeHandle HandleOfFd(int fd) {
  InodeHandle handle;
  struct {
    struct file_handle fh;
    unsigned char storage[sizeof(InodeHandle::bytes)];
  } buf;
  buf.fh.handle_bytes = sizeof(InodeHandle::bytes);
  int mount_id;
  if (name_to_handle_at(fd, "", &buf.fh, &mount_id, AT_EMPTY_PATH) != 0) {
    return handle;  // no export support (or handle too large): never evicted
  }
  handle.valid = true;
  handle.type = buf.fh.handle_type;
  handle.size = buf.fh.handle_bytes;
  std::memcpy(handle.bytes, buf.fh.f_handle, handle.size);
  return handle;
}

uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Bytes of the block-aligned range covering [offset, offset+len) that have no
// extent yet (holes and everything past the last extent). Delayed-allocation
// and unwritten extents count as allocated, as st_blocks counts them.
Result<uint64_t> UnallocatedBytesInRange(int fd, uint64_t offset, uint64_t len,
                                         uint64_t block) {
  const uint64_t start = AlignDown(offset, block);
  const uint64_t end = AlignUp(offset + len, block);
  constexpr unsigned kExtents = 64;
  std::vector<char> storage(sizeof(struct fiemap) + kExtents * sizeof(struct fiemap_extent));
  auto* map = reinterpret_cast<struct fiemap*>(storage.data());
  uint64_t covered = 0;
  uint64_t cursor = start;
  while (cursor < end) {
    std::memset(storage.data(), 0, storage.size());
    map->fm_start = cursor;
    map->fm_length = end - cursor;
    map->fm_extent_count = kExtents;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) return Status::FromErrno("FIEMAP");
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const struct fiemap_extent& e = map->fm_extents[i];
      const uint64_t lo = std::max<uint64_t>(e.fe_logical, cursor);
      const uint64_t hi = std::min<uint64_t>(e.fe_logical + e.fe_length, end);
      if (hi > lo) covered += hi - lo;
      cursor = std::max<uint64_t>(cursor, e.fe_logical + e.fe_length);
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last) break;
  }
  const uint64_t total = end - start;
  return covered >= total ? 0 : total - covered;
}

// ---- Data requests: submitted on a FUSE worker, completed on the iopath thread.

class ReadRequest final : public iopath::IoRequest {
 public:
  ReadRequest(fuse_req_t req, PooledBuffer buffer) : req_(req), buffer_(std::move(buffer)) {
    op = iopath::IoOp::kRead;
    buf = buffer_.data();
  }
  void Complete(iopath::IoResult r) noexcept override {
    if (r.err != 0) {
      fuse_reply_err(req_, r.err);
    } else {
      fuse_reply_buf(req_, buffer_.data(), r.bytes);
    }
  }

 private:
  fuse_req_t req_;
  PooledBuffer buffer_;
};

// Writes and fallocate: settle the quota reservation against what the
// backing file really allocated (an overwrite has nothing to settle), then
// reply.
class AllocatingRequest final : public iopath::IoRequest {
 public:
  AllocatingRequest(fuse_req_t req, Filesystem* fs, Inode* inode, Reservation reservation,
                    PooledBuffer buffer)
      : req_(req), fs_(fs), inode_(inode), reservation_(std::move(reservation)),
        buffer_(std::move(buffer)) {
    buf = buffer_.data();
  }
  // The write was admitted by Filesystem::BeginOverwrite.
  void MarkOverwrite() { overwrite_ = true; }
  // Held until the operation (a fallocate) completed and was settled.
  void HoldWhileFreeing(FreeingGuard guard) { freeing_.emplace(std::move(guard)); }

  void Complete(iopath::IoResult r) noexcept override {
    if (overwrite_) {
      fs_->EndOverwrite(*inode_);
    } else {
      fs_->quota().Settle(reservation_, fs_->TakeAllocationDelta(*inode_, fd), 0);
      if (op == iopath::IoOp::kWrite) fs_->CountSettledWrite(*inode_, fd);
    }
    freeing_.reset();
    if (r.err != 0) {
      fuse_reply_err(req_, r.err);
    } else if (op == iopath::IoOp::kWrite) {
      fuse_reply_write(req_, r.bytes);
    } else {
      fuse_reply_err(req_, 0);
    }
  }

 private:
  fuse_req_t req_;
  Filesystem* fs_;
  Inode* inode_;
  Reservation reservation_;
  PooledBuffer buffer_;
  bool overwrite_ = false;
  std::optional<FreeingGuard> freeing_;
};

class SyncRequest final : public iopath::IoRequest {
 public:
  explicit SyncRequest(fuse_req_t req) : req_(req) {}
  void Complete(iopath::IoResult r) noexcept override { fuse_reply_err(req_, r.err); }

 private:
  fuse_req_t req_;
};

// copy_file_range as a chain of reads and writes through the ring, one chunk
// at a time. Not a reflink: a copy always allocates, so the quota sees it.
struct CopyJob {
  fuse_req_t req;
  Filesystem* fs;
  iopath::Engine* engine;
  iopath::IoQueue* queue;
  int in_fd;
  int out_fd;
  Inode* out_inode;
  uint64_t in_off;
  uint64_t out_off;
  size_t remaining;  // admitted bytes still to copy
  uint64_t copied = 0;
  Reservation reservation;
  PooledBuffer buffer;
};

constexpr size_t kCopyChunk = 1 << 20;

class CopyStep final : public iopath::IoRequest {
 public:
  // Submits the next read of `job`.
  static void Read(std::unique_ptr<CopyJob> job) {
    const size_t n = std::min(job->remaining, kCopyChunk);
    Next(std::move(job), iopath::IoOp::kRead, n);
  }

  void Complete(iopath::IoResult r) noexcept override {
    if (op == iopath::IoOp::kRead) {
      if (r.err != 0 || r.bytes == 0) return Finish(r.err);
      return Next(std::move(job_), iopath::IoOp::kWrite, r.bytes);
    }
    if (r.err != 0) return Finish(r.err);
    job_->copied += r.bytes;
    job_->in_off += r.bytes;
    job_->out_off += r.bytes;
    job_->remaining -= std::min<size_t>(job_->remaining, r.bytes);
    if (r.bytes < len || job_->remaining == 0) return Finish(0);
    Read(std::move(job_));
  }

 private:
  static void Next(std::unique_ptr<CopyJob> job, iopath::IoOp next_op, size_t n) {
    CopyJob& j = *job;
    auto step = std::make_unique<CopyStep>();
    step->op = next_op;
    step->fd = next_op == iopath::IoOp::kRead ? j.in_fd : j.out_fd;
    step->offset = next_op == iopath::IoOp::kRead ? j.in_off : j.out_off;
    step->buf = j.buffer.data();
    step->len = n;
    step->job_ = std::move(job);
    j.engine->Submit(*j.queue, std::move(step));
  }

  void Finish(int err) {
    CopyJob& job = *job_;
    job.fs->SettleAllocation(*job.out_inode, job.out_fd, job.reservation);
    if (job.copied > 0 || err == 0) {
      fuse_reply_write(job.req, job.copied);
    } else {
      fuse_reply_err(job.req, err);
    }
  }

  std::unique_ptr<CopyJob> job_;
};

}  // namespace

std::atomic<size_t> Filesystem::open_path_fds_{0};

size_t Filesystem::PathFdBudget() {
  // Half of the open-file limit: the rest is for open files, directories,
  // the ring and libfuse. Read once; the limit is raised before the first mount.
  static const size_t budget = [] {
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return size_t{4096};
    return std::max<size_t>(256, static_cast<size_t>(lim.rlim_cur) / 2);
  }();
  return budget;
}

PathFd::~PathFd() {
  if (inode_ != nullptr) fs_->Unpin(*inode_);
}

Filesystem::Filesystem(UniqueFd root_fd, const struct stat& root_stat, Quota* quota,
                       iopath::Engine* engine, iopath::IoQueue* queue,
                       const FilesystemConfig& config)
    : root_(std::make_unique<Inode>(std::move(root_fd), root_stat, InodeHandle{})),
      quota_(quota),
      engine_(engine),
      queue_(queue),
      config_(config),
      worker_cpus_(ThreadPlacement::CurrentAffinity()) {
  auto proc = OpenAt(AT_FDCWD, "/proc/self/fd", O_PATH | O_DIRECTORY);
  if (proc.ok()) proc_self_fd_ = std::move(proc).value();
  // open_by_handle_at refuses an O_PATH fd as its mount fd.
  auto mount_fd = OpenAt(root_->path_fd.get(), ".", O_RDONLY | O_DIRECTORY);
  if (mount_fd.ok()) handle_mount_fd_ = std::move(mount_fd).value();
  root_->nlookup = 1;
  ++open_path_fds_;
}

Filesystem::~Filesystem() {
  ForgetAll();
  --open_path_fds_;
}

// The inode itself through procfs: following this magic link lands on the
// inode an O_PATH fd refers to, a symlink included (never its target).
std::string Filesystem::ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Inode& Filesystem::GetInode(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  return *reinterpret_cast<Inode*>(ino);
}

void Filesystem::LruRemoveLocked(Inode& inode) {
  if (inode.lru_prev != nullptr) inode.lru_prev->lru_next = inode.lru_next;
  if (inode.lru_next != nullptr) inode.lru_next->lru_prev = inode.lru_prev;
  if (lru_head_ == &inode) lru_head_ = inode.lru_next;
  if (lru_tail_ == &inode) lru_tail_ = inode.lru_prev;
  inode.lru_prev = inode.lru_next = nullptr;
}

void Filesystem::LruPushFrontLocked(Inode& inode) {
  inode.lru_prev = nullptr;
  inode.lru_next = lru_head_;
  if (lru_head_ != nullptr) lru_head_->lru_prev = &inode;
  lru_head_ = &inode;
  if (lru_tail_ == nullptr) lru_tail_ = &inode;
}

void Filesystem::EvictFdsLocked() {
  // Walk from the least recently used end; pinned inodes stay.
  Inode* candidate = lru_tail_;
  while (open_path_fds_.load() > PathFdBudget() && candidate != nullptr) {
    Inode* prev = candidate->lru_prev;
    if (candidate->pins == 0) {
      LruRemoveLocked(*candidate);
      candidate->path_fd.Reset();
      --open_path_fds_;
    }
    candidate = prev;
  }
}

Result<PathFd> Filesystem::Pin(Inode& inode) {
  MutexLock lock(fd_mu_);
  if (!inode.path_fd.valid()) {
    struct {
      struct file_handle fh;
      unsigned char storage[sizeof(InodeHandle::bytes)];
    } buf;
    buf.fh.handle_bytes = inode.handle.size;
    buf.fh.handle_type = inode.handle.type;
    std::memcpy(buf.fh.f_handle, inode.handle.bytes, inode.handle.size);
    int fd = open_by_handle_at(handle_mount_fd_.get(), &buf.fh, O_PATH | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("reopen inode by handle");
    inode.path_fd.Reset(fd);
    ++open_path_fds_;
    if (inode.evictable) LruPushFrontLocked(inode);
    EvictFdsLocked();
  } else if (inode.evictable && lru_head_ != &inode) {
    LruRemoveLocked(inode);
    LruPushFrontLocked(inode);
  }
  ++inode.pins;
  return PathFd(this, &inode, inode.path_fd.get());
}

void Filesystem::Unpin(Inode& inode) {
  MutexLock lock(fd_mu_);
  --inode.pins;
}

void Filesystem::KeepOpenUntilForgotten(const struct stat& victim) {
  MutexLock table_lock(mu_);
  auto it = inodes_.find(DevIno{victim.st_dev, victim.st_ino});
  if (it == inodes_.end()) return;
  Inode& inode = *it->second;
  auto pinned = Pin(inode);  // makes sure the fd is open
  if (!pinned.ok()) return;
  MutexLock lock(fd_mu_);
  if (inode.evictable) {
    LruRemoveLocked(inode);
    inode.evictable = false;
  }
}

int64_t Filesystem::TakeAllocationDelta(Inode& inode, int fd) {
  std::optional<PathFd> pinned;
  if (fd < 0) {
    auto p = Pin(inode);
    if (!p.ok()) return 0;
    pinned.emplace(std::move(p).value());
    fd = pinned->get();
  }
  MutexLock lock(inode.alloc_mu);
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  const uint64_t now = static_cast<uint64_t>(st.st_blocks) * 512;
  const int64_t delta = static_cast<int64_t>(now) - static_cast<int64_t>(inode.charged_bytes);
  inode.charged_bytes = now;
  return delta;
}

void Filesystem::SettleAllocation(Inode& inode, int fd, Reservation& reservation) {
  quota_->Settle(reservation, TakeAllocationDelta(inode, fd), 0);
}

// Counting first and reading dense_end second (both sequentially consistent)
// pairs with FreeingGuard, which clears dense_end first and reads the count
// second: either this write sees the cleared prefix, or the guard waits for it.
// The first, uncounted look only spares other writes the count.
bool Filesystem::BeginOverwrite(Inode& inode, uint64_t end) {
  if (end > inode.dense_end.load(std::memory_order_relaxed)) return false;
  inode.overwrites_in_flight.fetch_add(1);
  if (end <= inode.dense_end.load()) {
    overwrites_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  EndOverwrite(inode);
  return false;
}

void Filesystem::EndOverwrite(Inode& inode) {
  if (inode.overwrites_in_flight.fetch_sub(1) == 1) inode.overwrites_in_flight.notify_all();
}

void Filesystem::CountSettledWrite(Inode& inode, int fd) {
  if (inode.settled_writes.fetch_add(1, std::memory_order_relaxed) % kProbeEvery != 0) return;
  MutexLock lock(inode.alloc_mu);
  if (inode.freeing != 0) return;
  // The first hole; the end of the file counts as one. Unwritten extents
  // count as holes too, which only makes the prefix shorter.
  const off_t hole = lseek(fd, 0, SEEK_HOLE);
  if (hole >= 0) inode.dense_end.store(static_cast<uint64_t>(hole));
}

FreeingGuard::FreeingGuard(Inode& inode) : inode_(&inode) {
  {
    MutexLock lock(inode.alloc_mu);
    ++inode.freeing;
    inode.dense_end.store(0);
  }
  for (uint32_t n = inode.overwrites_in_flight.load(); n != 0;
       n = inode.overwrites_in_flight.load()) {
    inode.overwrites_in_flight.wait(n);
  }
}

FreeingGuard::~FreeingGuard() {
  if (inode_ == nullptr) return;
  MutexLock lock(inode_->alloc_mu);
  --inode_->freeing;
}

namespace {

// Whether the caller of `req` may keep a setgid bit of group `gid` (Linux's
// in_group_or_capable): a member of the group, or root.
bool CallerMayKeepSetgid(fuse_req_t req, gid_t gid) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 || ctx->gid == gid) return true;
  gid_t groups[256];
  const int n = fuse_req_getgroups(req, 256, groups);
  for (int i = 0; i < std::min(n, 256); ++i) {
    if (groups[i] == gid) return true;
  }
  return false;
}

}  // namespace

void Filesystem::KillSuidSgidIfAsked(fuse_req_t req, Inode& inode, int fd) {
  if (protocol::RequestKillsSuidgid()) KillSuidSgid(req, inode, fd);
}

void Filesystem::KillSuidSgid(fuse_req_t req, Inode& inode, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  mode_t kill = st.st_mode & S_ISUID;
  if ((st.st_mode & S_ISGID) && ((st.st_mode & S_IXGRP) || !CallerMayKeepSetgid(req, st.st_gid))) {
    kill |= S_ISGID;
  }
  if (kill == 0) return;
  // Through /proc so that an O_PATH fd works too; the server acts as root.
  if (fchmodat(AT_FDCWD, ProcPath(fd).c_str(), st.st_mode & 07777 & ~kill, 0) != 0) {
    GetLogger("fuse")->warn("could not clear setuid/setgid: {}", std::strerror(errno));
    return;
  }
  // The kernel caches the mode for long and exec and permission checks use
  // the cached one: make it read the new mode.
  if (session_ != nullptr) {
    fuse_lowlevel_notify_inval_inode(session_, reinterpret_cast<fuse_ino_t>(&inode), -1, 0);
  }
}

int Filesystem::LookupChild(Inode& parent, const char* name, fuse_entry_param* entry,
                            Inode** out) {
  if (IsUnsafeName(name)) return EINVAL;
  auto parent_fd = Pin(parent);
  if (!parent_fd.ok()) return parent_fd.err();
  auto fd = OpenAt(parent_fd->get(), name, O_PATH | O_NOFOLLOW);
  if (!fd.ok()) return fd.err();
  struct stat st;
  if (fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  Inode* inode;
  {
    MutexLock lock(mu_);
    auto& slot = inodes_[DevIno{st.st_dev, st.st_ino}];
    if (!slot) {
      const InodeHandle handle = HandleOfFd(fd->get());
      slot = std::make_unique<Inode>(std::move(fd).value(), st, handle);
      MutexLock fd_lock(fd_mu_);
      ++open_path_fds_;
      if (slot->evictable) LruPushFrontLocked(*slot);
      EvictFdsLocked();
    }
    inode = slot.get();
    ++inode->nlookup;
  }
  std::memset(entry, 0, sizeof *entry);
  entry->ino = reinterpret_cast<fuse_ino_t>(inode);
  entry->attr = st;
  entry->attr_timeout = config_.attr_timeout_s;
  entry->entry_timeout = config_.entry_timeout_s;
  if (out != nullptr) *out = inode;
  return 0;
}

void Filesystem::ForgetOne(Inode* inode, uint64_t n) {
  if (inode == root_.get()) return;
  std::unique_ptr<Inode> dropped;
  {
    MutexLock lock(mu_);
    if (n >= inode->nlookup) {
      auto it = inodes_.find(DevIno{inode->dev, inode->ino});
      if (it != inodes_.end()) {
        dropped = std::move(it->second);
        inodes_.erase(it);
      }
    } else {
      inode->nlookup -= n;
    }
  }
  if (dropped) Finalize(*dropped);
}

void Filesystem::Finalize(Inode& inode) {
  {
    MutexLock lock(fd_mu_);
    if (inode.released) return;  // settled when it was unlinked
  }
  struct stat st;
  bool gone;
  {
    auto fd = Pin(inode);
    // A handle that no longer opens means the inode was unlinked and freed.
    gone = !fd.ok() || fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 ||
           st.st_nlink == 0;
  }
  {
    MutexLock lock(fd_mu_);
    if (inode.path_fd.valid()) {
      if (inode.evictable) LruRemoveLocked(inode);
      inode.path_fd.Reset();
      --open_path_fds_;
    }
  }
  MutexLock lock(inode.alloc_mu);
  if (gone) {
    // Closing our O_PATH fd (above) frees the space.
    quota_->Adjust(-static_cast<int64_t>(inode.charged_bytes), -1);
    inode.charged_bytes = 0;
  } else {
    const uint64_t now = static_cast<uint64_t>(st.st_blocks) * 512;
    quota_->Adjust(static_cast<int64_t>(now) - static_cast<int64_t>(inode.charged_bytes), 0);
    inode.charged_bytes = now;
  }
}

void Filesystem::AddHandle(OpenHandle* handle) {
  CountOpenHandle(*handle->inode, +1);
  MutexLock lock(handles_mu_);
  open_handles_.insert(handle);
}

void Filesystem::DropHandle(OpenHandle* handle) {
  {
    MutexLock lock(handles_mu_);
    open_handles_.erase(handle);
  }
  CountOpenHandle(*handle->inode, -1);
  delete handle;
}

void Filesystem::ForgetAll() {
  // The kernel sends RELEASE for a closed file asynchronously and drops what
  // it has not sent when the connection ends, so an unmount right after a
  // close can leave handles that will never be released. Close them here:
  // their fds would otherwise keep the backing filesystem busy.
  std::unordered_set<OpenHandle*> unreleased;
  {
    MutexLock lock(handles_mu_);
    unreleased.swap(open_handles_);
  }
  for (OpenHandle* handle : unreleased) DropHandle(handle);
  if (!unreleased.empty()) {
    GetLogger("fuse")->debug("closed {} file(s) the kernel did not release before unmount",
                             unreleased.size());
  }
  std::unordered_map<DevIno, std::unique_ptr<Inode>, DevInoHash> all;
  {
    MutexLock lock(mu_);
    all.swap(inodes_);
  }
  for (auto& [key, inode] : all) Finalize(*inode);
}

void Filesystem::ReleaseVictim(const struct stat& victim) {
  MutexLock table_lock(mu_);
  auto it = inodes_.find(DevIno{victim.st_dev, victim.st_ino});
  if (it == inodes_.end()) {
    // The kernel does not know it, so nothing holds it: its space is free.
    if (S_ISDIR(victim.st_mode) || victim.st_nlink <= 1) {
      quota_->Adjust(-static_cast<int64_t>(victim.st_blocks) * 512, -1);
    }
    return;
  }
  Inode& inode = *it->second;
  MutexLock fd_lock(fd_mu_);
  if (inode.released || inode.open_handles > 0 || inode.pins > 0 || !inode.path_fd.valid()) {
    return;  // in use: Finalize settles it when the kernel forgets it
  }
  struct stat st;
  if (fstat(inode.path_fd.get(), &st) != 0 || st.st_nlink != 0) return;  // still named
  // Our O_PATH fd is the last thing holding the inode; closing it frees the
  // space now instead of whenever the kernel sends FORGET.
  if (inode.evictable) LruRemoveLocked(inode);
  inode.evictable = false;
  inode.path_fd.Reset();
  --open_path_fds_;
  inode.released = true;
  MutexLock alloc_lock(inode.alloc_mu);
  quota_->Adjust(-static_cast<int64_t>(inode.charged_bytes), -1);
  inode.charged_bytes = 0;
}

void Filesystem::CountOpenHandle(Inode& inode, int delta) {
  MutexLock lock(fd_mu_);
  inode.open_handles += delta;
}

// ---------------------------------------------------------------- operations

void Filesystem::Init(fuse_conn_info* conn) {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // The kernel enforces permissions (default_permissions) and, with this,
  // ACLs; the server stores them as xattrs on the backing file.
  want(FUSE_CAP_POSIX_ACL);
  // The caller's umask arrives with each create and is applied by the backing
  // filesystem (or ignored there when a default ACL applies), as on a kernel fs.
  want(FUSE_CAP_DONT_MASK);
  want(FUSE_CAP_ASYNC_DIO);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_ATOMIC_O_TRUNC);
  // Locks are kept by the kernel: every process on the node reaches the volume
  // through this one mount, so kernel-local flock/fcntl locks are node-wide.
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  // write(2) must see ENOSPC: no writeback cache.
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV);
  // The server clears setuid/setgid (killpriv v2) instead of the kernel
  // asking it, before every write, whether the file has security.capability;
  // see fuse/protocol_extensions.h. (v1 is the older, coarser contract.)
  if (protocol::KernelOffers(protocol::Feature::kKillPrivV2)) {
    protocol::Request(protocol::Feature::kKillPrivV2);
  } else {
    GetLogger("fuse")->warn(
        "kernel lacks FUSE killpriv v2: every write costs a security.capability lookup, and a "
        "setgid bit without group-execute survives writes by non-members");
  }
  if (protocol::KernelOffers(protocol::Feature::kDirectIoAllowMmap)) {
    protocol::Request(protocol::Feature::kDirectIoAllowMmap);
    direct_io_for_o_direct_ = true;
  }
  if (config_.start_kernel_ring) {
    if (protocol::KernelOffers(protocol::Feature::kOverIoUring)) {
      protocol::Request(protocol::Feature::kOverIoUring);
      config_.start_kernel_ring();
    } else {
      GetLogger("fuse")->warn(
          "FUSE over io_uring was asked for but the kernel does not offer it; serving "
          "/dev/fuse. It needs Linux 6.14 or later with the fuse module parameter set: "
          "`echo 1 > /sys/module/fuse/parameters/enable_uring` (or `options fuse "
          "enable_uring=1` in /etc/modprobe.d)");
    }
  }
  conn->max_write = config_.max_write;
  conn->max_read = config_.max_write;
  // Async direct I/O and readahead travel as background requests, of which
  // the kernel keeps at most max_background in flight (default 12): that
  // would cap a QD32 workload at 12. See docs/performance.md.
  conn->max_background = config_.max_background;
  conn->congestion_threshold = config_.max_background * 3 / 4;
  if (!(conn->capable & FUSE_CAP_POSIX_ACL)) {
    GetLogger("fuse")->warn("kernel lacks FUSE POSIX ACL support; ACLs will not be enforced");
  }
}

void Filesystem::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  int err = LookupChild(GetInode(parent), name, &e, nullptr);
  if (err == ENOENT) {
    // Negative entries may be cached as long as positive ones: nothing but
    // this server changes the backing directory.
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = config_.entry_timeout_s;
    fuse_reply_entry(req, &e);
  } else if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    ReplyEntry(req, e);
  }
}

void Filesystem::ReplyEntry(fuse_req_t req, const fuse_entry_param& e) {
  // An interrupted request is gone: the kernel never counts this lookup.
  if (fuse_reply_entry(req, &e) != 0) ForgetOne(reinterpret_cast<Inode*>(e.ino), 1);
}

void Filesystem::Forget(fuse_ino_t ino, uint64_t nlookup) { ForgetOne(&GetInode(ino), nlookup); }

void Filesystem::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  struct stat st;
  int rc;
  if (fi != nullptr) {
    rc = fstat(HandleOf<FileHandle>(fi)->fd.get(), &st);
  } else {
    auto fd = Pin(GetInode(ino));
    if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
    rc = fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }
  if (rc != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_attr(req, &st, config_.attr_timeout_s);
}

void Filesystem::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                         fuse_file_info* fi) {
  Inode& inode = GetInode(ino);
  const int file_fd = fi != nullptr ? HandleOf<FileHandle>(fi)->fd.get() : -1;
  auto fail = [&](int err) { fuse_reply_err(req, err); };
  auto pinned = Pin(inode);
  if (!pinned.ok()) return fail(pinned.err());
  const int path_fd = pinned->get();
  // A chown drops setuid/setgid first; a mode in the same request is the
  // caller's explicit choice instead. A SETATTR that sets nothing drops them
  // too: the kernel sends it for chown(f, -1, -1), forgetting its kill flags
  // (killpriv v2), and before a buffered write or a fallocate
  // (file_remove_privs). Linux lets only the owner drop them by chown and
  // refuses others with EPERM; the server cannot tell the two apart and drops
  // them for any caller (README, "Ownership"). utimensat() with both times
  // UTIME_OMIT sends no SETATTR at all; the ownership tests check all of it.
  // A truncate the kernel flags runs as the caller below instead, and the
  // backing filesystem drops them by its own rules; not for a root caller,
  // whose credentials the server keeps.
  constexpr int kAnyAttribute = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                                FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                                FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                                FUSE_SET_ATTR_CTIME;
  const bool truncate_as_caller = (to_set & FUSE_SET_ATTR_SIZE) &&
                                  protocol::RequestKillsSuidgid() && fuse_req_ctx(req)->uid != 0;
  if (!(to_set & FUSE_SET_ATTR_MODE) && !truncate_as_caller &&
      (protocol::RequestKillsSuidgid() || (to_set & kAnyAttribute) == 0)) {
    KillSuidSgid(req, inode, path_fd);
  }
  // The kernel has already checked permissions (default_permissions); the
  // server acts as root. Ownership first: chown clears setuid/setgid on
  // files, and a mode sent in the same request must be the final word.
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (fchownat(path_fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return fail(errno);
    }
  }
  if (to_set & FUSE_SET_ATTR_MODE) {
    if (inode.type == S_IFLNK) return fail(EOPNOTSUPP);
    int rc = file_fd >= 0 ? fchmod(file_fd, attr->st_mode & 07777)
                          : fchmodat(AT_FDCWD, ProcPath(path_fd).c_str(), attr->st_mode & 07777, 0);
    if (rc != 0) return fail(errno);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (inode.type != S_IFREG) return fail(inode.type == S_IFDIR ? EISDIR : EINVAL);
    FreeingGuard truncating(inode);
    // The way the caller asked: ftruncate with a file handle, truncate(2) by
    // path without, so that the backing filesystem treats it alike (XFS
    // changes nothing, not even setuid/setgid, when an empty file is
    // truncated to 0 by path). As the caller when setuid/setgid may have to
    // go, so that the backing filesystem applies its own rules; the kernel
    // has checked the permission, and the caller's groups let the backing
    // filesystem agree.
    std::optional<CallerCredentials> creds;
    if (truncate_as_caller) {
      creds.emplace(req, /*with_groups=*/true);
      if (!creds->ok()) return fail(creds->err());
    }
    const int rc =
        file_fd >= 0
            ? RetryEintr([&] { return ftruncate(file_fd, attr->st_size); })
            : RetryEintr([&] { return truncate(ProcPath(path_fd).c_str(), attr->st_size); });
    const int err = rc != 0 ? errno : 0;
    creds.reset();  // before anything else can change errno
    if (err != 0) return fail(err);
    // Shrinking frees space; growing leaves a hole and allocates nothing.
    quota_->Adjust(TakeAllocationDelta(inode, path_fd), 0);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec times[2];
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      times[0].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      times[0] = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      times[1].tv_nsec = UTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      times[1] = attr->st_mtim;
    }
    if (utimensat(path_fd, "", times, AT_EMPTY_PATH) != 0) return fail(errno);
  }
  GetAttr(req, ino, fi);
}

void Filesystem::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  char buf[PATH_MAX + 1];
  auto fd = Pin(GetInode(ino));
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  ssize_t n = readlinkat(fd->get(), "", buf, sizeof buf);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (static_cast<size_t>(n) >= sizeof buf) return (void)fuse_reply_err(req, ENAMETOOLONG);
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

template <typename MakeFn>
int Filesystem::CreateAsCaller(fuse_req_t req, Inode& parent, const char* name, mode_t mode,
                               MakeFn make, fuse_entry_param* entry, Reservation* reservation) {
  if (IsUnsafeName(name)) return EINVAL;
  auto dir_fd = Pin(parent);
  if (!dir_fd.ok()) return dir_fd.err();
  // One inode, and one block for the directory entry should the directory grow.
  if (!quota_->TryReserve(config_.block_size, 1, reservation)) return ENOSPC;
  int result;
  int err = 0;
  {
    // Supplementary groups cost a read of /proc/<pid>/status, so first try
    // without; they matter only for group permission on the parent and for
    // keeping a requested setgid bit.
    const bool groups_needed = (mode & S_ISGID) != 0;
    CallerCredentials creds(req, groups_needed);
    if (!creds.ok()) return creds.err();
    result = make(dir_fd->get());
    err = result < 0 ? errno : 0;
    if ((err == EACCES || err == EPERM) && !groups_needed) {
      CallerCredentials with_groups(req, true);
      if (!with_groups.ok()) return with_groups.err();
      result = make(dir_fd->get());
      err = result < 0 ? errno : 0;
    }
  }
  if (err != 0) return err;
  Inode* child = nullptr;
  err = LookupChild(parent, name, entry, &child);
  if (err != 0) return err;
  int64_t delta = TakeAllocationDelta(parent);
  {
    MutexLock lock(child->alloc_mu);
    delta += static_cast<int64_t>(child->charged_bytes);
  }
  quota_->Settle(*reservation, delta, 1);
  return 0;
}

void Filesystem::MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                       dev_t rdev) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, mode, [&](int dir_fd) { return mknodat(dir_fd, name, mode, rdev); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, mode, [&](int dir_fd) { return mkdirat(dir_fd, name, mode); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Inode& dir = GetInode(parent);
  fuse_entry_param e;
  Reservation r;
  int err = CreateAsCaller(
      req, dir, name, 0, [&](int dir_fd) { return symlinkat(target, dir_fd, name); }, &e, &r);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        fuse_file_info* fi) {
  Inode& dir = GetInode(parent);
  const int flags = (fi->flags & ~(O_NOCTTY | O_CREAT | O_EXCL)) | O_NOFOLLOW | O_CLOEXEC;
  fuse_entry_param e;
  Reservation r;
  int file_fd = -1;
  int err = CreateAsCaller(
      req, dir, name, mode,
      [&](int dir_fd) {
        // O_EXCL even when the caller did not ask: the inode must be new for
        // the quota to count it once. The kernel sends CREATE only for names
        // it believes absent.
        file_fd = openat(dir_fd, name, flags | O_CREAT | O_EXCL, mode);
        return file_fd < 0 ? -1 : 0;
      },
      &e, &r);
  if (err == EEXIST && !(fi->flags & O_EXCL)) {
    // Lost a race with another creator in the backing directory: open it.
    fuse_entry_param existing;
    Inode* inode = nullptr;
    err = LookupChild(dir, name, &existing, &inode);
    if (err == 0) {
      auto fd = Reopen(req, *inode, flags & ~O_NOFOLLOW);
      if (!fd.ok()) {
        ForgetOne(inode, 1);
        return (void)fuse_reply_err(req, fd.err());
      }
      file_fd = fd->Release();
      e = existing;
    }
  }
  if (err != 0) {
    if (file_fd >= 0) close(file_fd);
    return (void)fuse_reply_err(req, err);
  }
  auto* handle = new FileHandle{UniqueFd(file_fd), reinterpret_cast<Inode*>(e.ino)};
  SetOpenReply(fi, handle, flags);
  if (fuse_reply_create(req, &e, fi) != 0) {
    // The kernel gave up on the request (interrupted); nobody will release it.
    DropHandle(handle);
    ForgetOne(reinterpret_cast<Inode*>(e.ino), 1);
  }
}

void Filesystem::Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  Inode& inode = GetInode(ino);
  Inode& dir = GetInode(parent);
  if (IsUnsafeName(name)) return (void)fuse_reply_err(req, EINVAL);
  auto inode_fd = Pin(inode);
  if (!inode_fd.ok()) return (void)fuse_reply_err(req, inode_fd.err());
  auto dir_fd = Pin(dir);
  if (!dir_fd.ok()) return (void)fuse_reply_err(req, dir_fd.err());
  Reservation r;
  if (!quota_->TryReserve(config_.block_size, 0, &r)) return (void)fuse_reply_err(req, ENOSPC);
  if (linkat(inode_fd->get(), "", dir_fd->get(), name, AT_EMPTY_PATH) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  fuse_entry_param e;
  int err = LookupChild(dir, name, &e, nullptr);
  quota_->Settle(r, TakeAllocationDelta(dir, dir_fd->get()), 0);
  if (err != 0) return (void)fuse_reply_err(req, err);
  ReplyEntry(req, e);
}

void Filesystem::RemoveEntry(fuse_req_t req, fuse_ino_t parent, const char* name, int flags) {
  Inode& dir = GetInode(parent);
  if (IsUnsafeName(name)) return (void)fuse_reply_err(req, EINVAL);
  auto dir_fd = Pin(dir);
  if (!dir_fd.ok()) return (void)fuse_reply_err(req, dir_fd.err());
  struct stat victim;
  if (fstatat(dir_fd->get(), name, &victim, AT_SYMLINK_NOFOLLOW) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  KeepOpenUntilForgotten(victim);
  if (unlinkat(dir_fd->get(), name, flags) != 0) return (void)fuse_reply_err(req, errno);
  ReleaseVictim(victim);
  quota_->Adjust(TakeAllocationDelta(dir, dir_fd->get()), 0);
  fuse_reply_err(req, 0);
}

void Filesystem::Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, 0);
}

void Filesystem::RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, AT_REMOVEDIR);
}

void Filesystem::Rename(fuse_req_t req, fuse_ino_t parent, const char* name,
                        fuse_ino_t newparent, const char* newname, unsigned flags) {
  Inode& from = GetInode(parent);
  Inode& to = GetInode(newparent);
  if (IsUnsafeName(name) || IsUnsafeName(newname)) return (void)fuse_reply_err(req, EINVAL);
  auto from_fd = Pin(from);
  if (!from_fd.ok()) return (void)fuse_reply_err(req, from_fd.err());
  auto to_fd = Pin(to);
  if (!to_fd.ok()) return (void)fuse_reply_err(req, to_fd.err());
  struct stat victim;
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  const bool replaces =
      !exchange && fstatat(to_fd->get(), newname, &victim, AT_SYMLINK_NOFOLLOW) == 0;
  // Admission (README, "Quotas"). Replacing or exchanging rewrites entries
  // that exist, in place: nothing grows and nothing new is made, so nothing
  // is reserved and a full volume renames as XFS does. A whiteout is a new
  // inode and may grow the source directory. A new name may grow the target
  // directory by a block: reserved when it fits, and otherwise tried the way
  // XFS renames without a reservation (RenameWithoutGrowing).
  Reservation r;
  if (flags & RENAME_WHITEOUT) {
    if (!quota_->TryReserve(config_.block_size, 1, &r)) return (void)fuse_reply_err(req, ENOSPC);
  } else if (!replaces && !exchange && !quota_->TryReserve(config_.block_size, 0, &r)) {
    const int err = RenameWithoutGrowing(from, from_fd->get(), name, to, to_fd->get(), newname,
                                         flags);
    return (void)fuse_reply_err(req, err);
  }
  if (replaces) KeepOpenUntilForgotten(victim);
  if (renameat2(from_fd->get(), name, to_fd->get(), newname, flags) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  if (replaces) ReleaseVictim(victim);
  int64_t delta = TakeAllocationDelta(from, from_fd->get());
  if (&to != &from) delta += TakeAllocationDelta(to, to_fd->get());
  quota_->Settle(r, delta, (flags & RENAME_WHITEOUT) ? 1 : 0);
  fuse_reply_err(req, 0);
}

int Filesystem::RenameWithoutGrowing(Inode& from, int from_fd, const char* name, Inode& to,
                                     int to_fd, const char* newname, unsigned flags) {
  // Charge any change not yet seen, so that what follows measures this rename alone.
  int64_t delta = TakeAllocationDelta(to, to_fd);
  // NOREPLACE keeps the name new, as the admission assumed.
  if (renameat2(from_fd, name, to_fd, newname, flags | RENAME_NOREPLACE) != 0) {
    const int err = errno;
    quota_->Adjust(delta, 0);
    return err;
  }
  const int64_t grown = TakeAllocationDelta(to, to_fd);
  delta += grown;
  int err = 0;
  if (grown > 0) {
    // The entry did not fit in the blocks the directory had: put the name
    // back, which gives the block back. The kernel holds both directories
    // locked for the whole request, so no caller sees the name come and go.
    if (renameat2(to_fd, newname, from_fd, name, RENAME_NOREPLACE) == 0) {
      err = ENOSPC;
      delta += TakeAllocationDelta(to, to_fd);
    } else {
      const int undo_err = errno;
      GetLogger("fuse")->error(
          "rename at a full volume grew a directory by {} bytes and could not be undone: {}",
          grown, std::strerror(undo_err));
    }
  }
  if (&to != &from) delta += TakeAllocationDelta(from, from_fd);
  quota_->Adjust(delta, 0);
  return err;
}

Result<UniqueFd> Filesystem::Reopen(fuse_req_t req, Inode& inode, int flags) {
  auto path_fd = Pin(inode);
  if (!path_fd.ok()) return path_fd.status();
  std::optional<FreeingGuard> truncating;
  if (flags & O_TRUNC) truncating.emplace(inode);
  auto fd = OpenAt(proc_self_fd_.get(), std::to_string(path_fd->get()), flags);
  if (fd.ok() && (flags & O_TRUNC)) {
    KillSuidSgidIfAsked(req, inode, fd->get());
    quota_->Adjust(TakeAllocationDelta(inode, fd->get()), 0);
  }
  return fd;
}

void Filesystem::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode& inode = GetInode(ino);
  // The kernel resolved the path and checked permissions; reopen the inode
  // itself through /proc (O_NOFOLLOW would refuse that magic link).
  const int flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  auto fd = Reopen(req, inode, flags);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  auto* handle = new FileHandle{std::move(fd).value(), &inode};
  SetOpenReply(fi, handle, flags);
  if (fuse_reply_open(req, fi) != 0) DropHandle(handle);
}

void Filesystem::SetOpenReply(fuse_file_info* fi, FileHandle* handle, int flags) {
  fi->fh = reinterpret_cast<uint64_t>(handle);
  // Page cache survives reopen: only this server changes the backing file.
  fi->keep_cache = 1;
  fi->direct_io = direct_io_for_o_direct_ && (flags & O_DIRECT);
  fi->noflush = 1;
  AddHandle(handle);
}

void Filesystem::Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* handle = HandleOf<FileHandle>(fi);
  Inode* inode = handle->inode;
  DropHandle(handle);
  // Closing may trim preallocation past EOF; charge what is really allocated.
  quota_->Adjust(TakeAllocationDelta(*inode), 0);
  fuse_reply_err(req, 0);
}

void Filesystem::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      fuse_file_info* fi) {
  PooledBuffer buffer = protocol::TakeReplyBuffer(size);
  if (buffer.data() == nullptr) buffer = buffers_.Get(size);
  auto request = std::make_unique<ReadRequest>(req, std::move(buffer));
  request->fd = HandleOf<FileHandle>(fi)->fd.get();
  request->offset = static_cast<uint64_t>(off);
  request->len = size;
  SubmitData(req, std::move(request));
}

size_t Filesystem::AdmitWrite(int fd, uint64_t offset, size_t len, Reservation* reservation) {
  const uint64_t block = config_.block_size;
  // Fast path: the worst case, every block the range touches being new.
  const uint64_t worst = AlignUp(offset + len, block) - AlignDown(offset, block);
  if (quota_->TryReserve(worst, 0, reservation)) return len;
  // Near the limit: count the blocks that really are unallocated, so that
  // overwriting existing data in a full volume still works.
  auto exact = UnallocatedBytesInRange(fd, offset, len, block);
  if (exact.ok() && quota_->TryReserve(*exact, 0, reservation)) return len;
  // Admit the prefix that fits, as a kernel filesystem writes what it can
  // before it reports ENOSPC. Assume the prefix is entirely unallocated.
  const QuotaSnapshot q = quota_->Snapshot();
  const uint64_t committed = q.used_bytes + q.reserved_bytes;
  const uint64_t free_blocks = committed >= q.capacity_bytes ? 0 : (q.capacity_bytes - committed) / block;
  const uint64_t prefix_end = AlignDown(offset, block) + free_blocks * block;
  if (prefix_end <= offset) return 0;
  const size_t prefix = static_cast<size_t>(std::min<uint64_t>(len, prefix_end - offset));
  if (!quota_->TryReserve(free_blocks * block, 0, reservation)) return 0;
  return prefix;
}

void Filesystem::Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                       fuse_file_info* fi) {
  FileHandle* handle = HandleOf<FileHandle>(fi);
  const uint64_t offset = static_cast<uint64_t>(off);
  Reservation reservation;
  const bool overwrite = BeginOverwrite(*handle->inode, offset + size);
  const size_t admitted =
      overwrite ? size : AdmitWrite(handle->fd.get(), offset, size, &reservation);
  if (admitted == 0 && size != 0) return (void)fuse_reply_err(req, ENOSPC);
  // Before the data changes, as the kernel orders it for its own filesystems.
  KillSuidSgidIfAsked(req, *handle->inode, handle->fd.get());
  // The data must outlive this call and be aligned for O_DIRECT: normally it
  // was received into such a buffer; otherwise libfuse reuses `buf` once this
  // returns, so copy it.
  PooledBuffer data = protocol::TakeWritePayload();
  if (data.data() == nullptr) {
    data = buffers_.Get(admitted);
    std::memcpy(data.data(), buf, admitted);
  }
  auto request = std::make_unique<AllocatingRequest>(req, this, handle->inode,
                                                     std::move(reservation), std::move(data));
  if (overwrite) request->MarkOverwrite();
  request->op = iopath::IoOp::kWrite;
  request->fd = handle->fd.get();
  request->offset = offset;
  request->len = admitted;
  SubmitData(req, std::move(request));
}

void Filesystem::SubmitData(fuse_req_t req, std::unique_ptr<iopath::IoRequest> request) {
  if (protocol::ThreadHasOthersWaiting()) return engine_->Submit(*queue_, std::move(request));
  // A ring queue's thread places itself (fuse/kernel_ring.cc).
  if (protocol::RequestFromRing()) return (void)engine_->SubmitOrRun(*queue_, std::move(request));
  // Read before the request can be answered (and `req` freed) inside SubmitOrRun.
  const pid_t caller = fuse_req_ctx(req)->pid;
  const bool small = request->len <= iopath::Engine::kRunHereMaxBytes;
  const bool alone = engine_->SubmitOrRun(*queue_, std::move(request));
  PlaceWorker(caller, alone ? 1 : ThreadPlacement::kJoinedOthers, small);
}

void Filesystem::PlaceWorkerForOtherRequest(fuse_req_t req) {
  if (protocol::RequestFromRing()) return;
  PlaceWorker(fuse_req_ctx(req)->pid, ThreadPlacement::kJoinedOthers, /*spread=*/false);
}

void Filesystem::PlaceWorker(pid_t caller, size_t per_wake, bool spread) {
  // A worker serves this one volume for its whole life.
  thread_local std::optional<ThreadPlacement> placement;
  if (!placement) {
    const uint64_t ordinal = workers_placed_.fetch_add(1, std::memory_order_relaxed);
    placement.emplace(worker_cpus_, SpreadCpu(worker_cpus_, ordinal));
    // libfuse starts a worker from another, whose pinned mask it inherits.
    placement->Unpin();
  }
  const bool was_batched = placement->batched();
  placement->Observe(per_wake, [this, caller] { return FollowCpu(caller); }, spread);
  // Once batches come, the next lone caller picks the CPU afresh.
  if (!was_batched && placement->batched()) follow_cpu_.store(-1, std::memory_order_relaxed);
}

int Filesystem::FollowCpu(pid_t caller) {
  int cpu = follow_cpu_.load(std::memory_order_relaxed);
  if (cpu >= 0) return cpu;
  const int seen = LastCpuOf(caller);
  if (seen < 0) return -1;
  // The first worker to decide picks for all; the others take its pick.
  return follow_cpu_.compare_exchange_strong(cpu, seen, std::memory_order_relaxed) ? seen : cpu;
}

void Filesystem::Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  auto request = std::make_unique<SyncRequest>(req);
  request->op = datasync ? iopath::IoOp::kFdatasync : iopath::IoOp::kFsync;
  request->fd = HandleOf<FileHandle>(fi)->fd.get();
  engine_->Submit(*queue_, std::move(request));
}

void Filesystem::Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                           fuse_file_info* fi) {
  if (offset < 0 || length <= 0) return (void)fuse_reply_err(req, EINVAL);
  FileHandle* handle = HandleOf<FileHandle>(fi);
  // Punching, zeroing (XFS frees and reallocates) and collapsing free blocks;
  // plain allocation and insertion take the same guard, for one rule.
  FreeingGuard freeing(*handle->inode);
  Reservation reservation;
  if (!(mode & FALLOC_FL_PUNCH_HOLE)) {
    // All or nothing, as fallocate(2) is.
    const uint64_t block = config_.block_size;
    const uint64_t start = static_cast<uint64_t>(offset);
    const uint64_t worst = AlignUp(start + length, block) - AlignDown(start, block);
    if (!quota_->TryReserve(worst, 0, &reservation)) {
      auto exact = UnallocatedBytesInRange(handle->fd.get(), start, length, block);
      if (!exact.ok() || !quota_->TryReserve(*exact, 0, &reservation)) {
        return (void)fuse_reply_err(req, ENOSPC);
      }
    }
  }
  auto request = std::make_unique<AllocatingRequest>(req, this, handle->inode,
                                                     std::move(reservation), PooledBuffer());
  request->HoldWhileFreeing(std::move(freeing));
  request->op = iopath::IoOp::kFallocate;
  request->fd = handle->fd.get();
  request->offset = static_cast<uint64_t>(offset);
  request->len = static_cast<size_t>(length);
  request->fallocate_mode = mode;
  engine_->Submit(*queue_, std::move(request));
}

void Filesystem::CopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                               fuse_file_info* fi_out, size_t len, int flags) {
  if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
  FileHandle* in = HandleOf<FileHandle>(fi_in);
  FileHandle* out = HandleOf<FileHandle>(fi_out);
  auto job = std::make_unique<CopyJob>();
  const size_t admitted = AdmitWrite(out->fd.get(), static_cast<uint64_t>(off_out), len,
                                     &job->reservation);
  if (admitted == 0 && len != 0) return (void)fuse_reply_err(req, ENOSPC);
  if (admitted == 0) return (void)fuse_reply_write(req, 0);
  job->req = req;
  job->fs = this;
  job->engine = engine_;
  job->queue = queue_;
  job->in_fd = in->fd.get();
  job->out_fd = out->fd.get();
  job->out_inode = out->inode;
  job->in_off = static_cast<uint64_t>(off_in);
  job->out_off = static_cast<uint64_t>(off_out);
  job->remaining = admitted;
  job->buffer = buffers_.Get(std::min(admitted, kCopyChunk));
  CopyStep::Read(std::move(job));
}

void Filesystem::Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       fuse_file_info* fi) {
  off_t res = lseek(HandleOf<FileHandle>(fi)->fd.get(), off, whence);
  if (res < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_lseek(req, res);
}

void Filesystem::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto path_fd = Pin(GetInode(ino));
  if (!path_fd.ok()) return (void)fuse_reply_err(req, path_fd.err());
  auto fd = OpenAt(path_fd->get(), ".", O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  auto handle = std::make_unique<DirHandle>(&GetInode(ino));
  handle->dir = fdopendir(fd->get());
  if (handle->dir == nullptr) return (void)fuse_reply_err(req, errno);
  fd->Release();  // owned by the DIR now
  fi->fh = reinterpret_cast<uint64_t>(handle.get());
  // The kernel may cache listings: it invalidates them itself on every change
  // made through this mount, and nothing else changes the backing directory.
  fi->cache_readdir = config_.cache_listings;
  fi->keep_cache = config_.cache_listings;
  DirHandle* raw = handle.release();
  AddHandle(raw);
  if (fuse_reply_open(req, fi) != 0) DropHandle(raw);
}

void Filesystem::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info* fi, bool plus) {
  auto* d = HandleOf<DirHandle>(fi);
  Inode& dir = GetInode(ino);
  std::vector<char> buf(size);
  size_t used = 0;
  if (off != d->offset) {
    seekdir(d->dir, off);
    d->entry = nullptr;
    d->offset = off;
  }
  int err = 0;
  while (true) {
    if (d->entry == nullptr) {
      errno = 0;
      d->entry = readdir(d->dir);
      if (d->entry == nullptr) {
        err = errno;
        break;
      }
    }
    const char* name = d->entry->d_name;
    const off_t next = d->entry->d_off;
    size_t entsize;
    if (plus) {
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      const bool dot = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
      Inode* child = nullptr;
      if (dot) {
        e.attr.st_ino = d->entry->d_ino;
        e.attr.st_mode = d->entry->d_type << 12;
      } else {
        int lerr = LookupChild(dir, name, &e, &child);
        if (lerr == ENOENT) {  // vanished between readdir and lookup
          d->entry = nullptr;
          d->offset = next;
          continue;
        }
        if (lerr != 0) {
          err = lerr;
          break;
        }
      }
      entsize = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (entsize > size - used) {
        if (child != nullptr) ForgetOne(child, 1);  // the kernel never saw it
        break;
      }
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = d->entry->d_ino;
      st.st_mode = d->entry->d_type << 12;
      entsize = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
      if (entsize > size - used) break;
    }
    used += entsize;
    d->entry = nullptr;
    d->offset = next;
  }
  // An error after some entries is reported on the next call instead.
  if (err != 0 && used == 0) return (void)fuse_reply_err(req, err);
  fuse_reply_buf(req, buf.data(), used);
}

void Filesystem::ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  DropHandle(HandleOf<DirHandle>(fi));
  fuse_reply_err(req, 0);
}

void Filesystem::FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  auto request = std::make_unique<SyncRequest>(req);
  request->op = datasync ? iopath::IoOp::kFdatasync : iopath::IoOp::kFsync;
  request->fd = dirfd(HandleOf<DirHandle>(fi)->dir);
  engine_->Submit(*queue_, std::move(request));
}

void Filesystem::StatFs(fuse_req_t req, fuse_ino_t ino) {
  const QuotaSnapshot q = quota_->Snapshot();
  // f_blocks * f_frsize must equal the capacity exactly (the local static
  // provisioner reads it as the PV size), so the unit is the largest power of
  // two up to 4 KiB that divides the capacity.
  uint64_t unit = 4096;
  while (unit > 1 && q.capacity_bytes % unit != 0) unit >>= 1;
  const uint64_t used = std::min(q.used_bytes, q.capacity_bytes);
  const uint64_t used_inodes = std::min(q.used_inodes, q.inode_limit);
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = unit;
  st.f_frsize = unit;
  st.f_blocks = q.capacity_bytes / unit;
  st.f_bfree = (q.capacity_bytes - used) / unit;
  st.f_bavail = st.f_bfree;
  st.f_files = q.inode_limit;
  st.f_ffree = q.inode_limit - used_inodes;
  st.f_favail = st.f_ffree;
  st.f_namemax = NAME_MAX;
  fuse_reply_statfs(req, &st);
}

void Filesystem::SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                          size_t size, int flags) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, EPERM);
  Inode& inode = GetInode(ino);
  // Large values spill into attribute blocks, which count as allocation.
  Reservation r;
  if (!quota_->TryReserve(AlignUp(size, config_.block_size) + config_.block_size, 0, &r)) {
    return (void)fuse_reply_err(req, ENOSPC);
  }
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  if (setxattr(ProcPath(fd->get()).c_str(), name, value, size, flags) != 0) {
    return (void)fuse_reply_err(req, errno);
  }
  SettleAllocation(inode, fd->get(), r);
  fuse_reply_err(req, 0);
}

void Filesystem::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, ENODATA);
  Inode& inode = GetInode(ino);
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  std::vector<char> value(size);
  ssize_t n = getxattr(ProcPath(fd->get()).c_str(), name, size ? value.data() : nullptr, size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (size == 0) return (void)fuse_reply_xattr(req, n);
  fuse_reply_buf(req, value.data(), n);
}

void Filesystem::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Inode& inode = GetInode(ino);
  // Read the whole list to filter our own names out, then answer as asked.
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  const std::string path = ProcPath(fd->get());
  std::vector<char> names;
  ssize_t n;
  do {
    n = listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    names.resize(n);
    n = n == 0 ? 0 : listxattr(path.c_str(), names.data(), names.size());
  } while (n < 0 && errno == ERANGE);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  std::string visible;
  for (ssize_t i = 0; i < n;) {
    const char* entry = names.data() + i;
    const size_t len = std::strlen(entry);
    if (!IsReservedXattr(entry)) visible.append(entry, len + 1);
    i += static_cast<ssize_t>(len) + 1;
  }
  if (size == 0) return (void)fuse_reply_xattr(req, visible.size());
  if (visible.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, visible.data(), visible.size());
}

void Filesystem::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (IsReservedXattr(name)) return (void)fuse_reply_err(req, ENODATA);
  Inode& inode = GetInode(ino);
  auto fd = Pin(inode);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  if (removexattr(ProcPath(fd->get()).c_str(), name) != 0) return (void)fuse_reply_err(req, errno);
  quota_->Adjust(TakeAllocationDelta(inode, fd->get()), 0);
  fuse_reply_err(req, 0);
}

// ------------------------------------------------------- C trampolines

namespace {

// No exception may cross into libfuse's C frames: answer EIO instead.
template <typename Fn>
void GuardData(fuse_req_t req, Fn fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    if (req != nullptr) fuse_reply_err(req, ENOMEM);
  } catch (...) {
    GetLogger("fuse")->error("unexpected exception in a FUSE operation");
    if (req != nullptr) fuse_reply_err(req, EIO);
  }
}

// Runs the handler of a request other than a read or write, which places
// the worker the way such requests do (Filesystem::PlaceWorker), then the
// handler as GuardData does.
template <typename Fn>
void Guard(fuse_req_t req, Fn fn) {
  GuardData(req, [&] {
    if (req != nullptr) Fs(req)->PlaceWorkerForOtherRequest(req);
    fn();
  });
}

fuse_lowlevel_ops MakeOperations() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = [](void* userdata, fuse_conn_info* conn) {
    static_cast<Filesystem*>(userdata)->Init(conn);
  };
  ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Lookup(req, parent, name); });
  };
  ops.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    Guard(nullptr, [&] { Fs(req)->Forget(ino, nlookup); });
    fuse_reply_none(req);
  };
  ops.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Guard(nullptr, [&] {
      for (size_t i = 0; i < count; ++i) Fs(req)->Forget(forgets[i].ino, forgets[i].nlookup);
    });
    fuse_reply_none(req);
  };
  ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->GetAttr(req, ino, fi); });
  };
  ops.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                   fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->SetAttr(req, ino, attr, to_set, fi); });
  };
  ops.readlink = [](fuse_req_t req, fuse_ino_t ino) {
    Guard(req, [&] { Fs(req)->ReadLink(req, ino); });
  };
  ops.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    Guard(req, [&] { Fs(req)->MkNod(req, parent, name, mode, rdev); });
  };
  ops.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    Guard(req, [&] { Fs(req)->MkDir(req, parent, name, mode); });
  };
  ops.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Unlink(req, parent, name); });
  };
  ops.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->RmDir(req, parent, name); });
  };
  ops.symlink = [](fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Symlink(req, target, parent, name); });
  };
  ops.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                  const char* newname, unsigned int flags) {
    Guard(req, [&] { Fs(req)->Rename(req, parent, name, newparent, newname, flags); });
  };
  ops.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Link(req, ino, parent, name); });
  };
  ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Open(req, ino, fi); });
  };
  ops.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    GuardData(req, [&] { Fs(req)->Read(req, ino, size, off, fi); });
  };
  ops.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                 fuse_file_info* fi) {
    GuardData(req, [&] { Fs(req)->Write(req, ino, buf, size, off, fi); });
  };
  ops.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Release(req, ino, fi); });
  };
  ops.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Fsync(req, ino, datasync, fi); });
  };
  ops.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->OpenDir(req, ino, fi); });
  };
  ops.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReadDir(req, ino, size, off, fi, false); });
  };
  ops.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReadDir(req, ino, size, off, fi, true); });
  };
  ops.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReleaseDir(req, ino, fi); });
  };
  ops.fsyncdir = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->FsyncDir(req, ino, datasync, fi); });
  };
  ops.statfs = [](fuse_req_t req, fuse_ino_t ino) {
    Guard(req, [&] { Fs(req)->StatFs(req, ino); });
  };
  ops.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    size_t size, int flags) {
    Guard(req, [&] { Fs(req)->SetXattr(req, ino, name, value, size, flags); });
  };
  ops.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Guard(req, [&] { Fs(req)->GetXattr(req, ino, name, size); });
  };
  ops.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
    Guard(req, [&] { Fs(req)->ListXattr(req, ino, size); });
  };
  ops.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
    Guard(req, [&] { Fs(req)->RemoveXattr(req, ino, name); });
  };
  ops.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                  fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Create(req, parent, name, mode, fi); });
  };
  ops.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Fallocate(req, ino, mode, offset, length, fi); });
  };
  ops.copy_file_range = [](fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                           fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                           fuse_file_info* fi_out, size_t len, int flags) {
    Guard(req, [&] {
      Fs(req)->CopyFileRange(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
    });
  };
  ops.lseek = [](fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Lseek(req, ino, off, whence, fi); });
  };
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& Filesystem::Operations() {
  static const fuse_lowlevel_ops ops = MakeOperations();
  return ops;
}

}  // namespace localvol::fuse
