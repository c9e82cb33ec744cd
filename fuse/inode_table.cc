#include "fuse/inode_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace localvol::fuse {

namespace {

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

}  // namespace

std::atomic<size_t> InodeTable::open_path_fds_{0};

size_t InodeTable::PathFdBudget() {
  // The limit is raised before the first mount.
  static const size_t budget = [] {
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return size_t{4096};
    return std::max<size_t>(256, static_cast<size_t>(lim.rlim_cur) / 2);
  }();
  return budget;
}

PathFd::~PathFd() {
  if (inode_ != nullptr) table_->Unpin(*inode_);
}

InodeTable::InodeTable(UniqueFd root_fd, const struct stat& root_stat, Quota* quota)
    : quota_(quota), root_(std::make_unique<Inode>(std::move(root_fd), root_stat, InodeHandle{})) {
  // open_by_handle_at refuses an O_PATH fd as its mount fd.
  auto mount_fd = OpenAt(root_->path_fd_.get(), ".", O_RDONLY | O_DIRECTORY);
  if (mount_fd.ok()) handle_mount_fd_ = std::move(mount_fd).value();
  root_->nlookup_ = 1;
  ++open_path_fds_;
}

InodeTable::~InodeTable() {
  ForgetAll();
  --open_path_fds_;
}

Inode& InodeTable::Get(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  return *reinterpret_cast<Inode*>(ino);
}

size_t InodeTable::size() const {
  MutexLock lock(mu_);
  return inodes_.size();
}

void InodeTable::LruRemoveLocked(Inode& inode) {
  if (inode.lru_prev_ != nullptr) inode.lru_prev_->lru_next_ = inode.lru_next_;
  if (inode.lru_next_ != nullptr) inode.lru_next_->lru_prev_ = inode.lru_prev_;
  if (lru_head_ == &inode) lru_head_ = inode.lru_next_;
  if (lru_tail_ == &inode) lru_tail_ = inode.lru_prev_;
  inode.lru_prev_ = inode.lru_next_ = nullptr;
}

void InodeTable::LruPushFrontLocked(Inode& inode) {
  inode.lru_prev_ = nullptr;
  inode.lru_next_ = lru_head_;
  if (lru_head_ != nullptr) lru_head_->lru_prev_ = &inode;
  lru_head_ = &inode;
  if (lru_tail_ == nullptr) lru_tail_ = &inode;
}

void InodeTable::EvictFdsLocked() {
  // Walk from the least recently used end; pinned inodes stay.
  Inode* candidate = lru_tail_;
  while (open_path_fds_.load() > PathFdBudget() && candidate != nullptr) {
    Inode* prev = candidate->lru_prev_;
    if (candidate->pins_ == 0) {
      LruRemoveLocked(*candidate);
      candidate->path_fd_.Reset();
      --open_path_fds_;
    }
    candidate = prev;
  }
}

Result<PathFd> InodeTable::Pin(Inode& inode) {
  MutexLock lock(fd_mu_);
  if (!inode.path_fd_.valid()) {
    struct {
      struct file_handle fh;
      unsigned char storage[sizeof(InodeHandle::bytes)];
    } buf;
    buf.fh.handle_bytes = inode.handle.size;
    buf.fh.handle_type = inode.handle.type;
    std::memcpy(buf.fh.f_handle, inode.handle.bytes, inode.handle.size);
    int fd = open_by_handle_at(handle_mount_fd_.get(), &buf.fh, O_PATH | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("reopen inode by handle");
    inode.path_fd_.Reset(fd);
    ++open_path_fds_;
    if (inode.evictable_) LruPushFrontLocked(inode);
    EvictFdsLocked();
  } else if (inode.evictable_ && lru_head_ != &inode) {
    LruRemoveLocked(inode);
    LruPushFrontLocked(inode);
  }
  ++inode.pins_;
  return PathFd(this, &inode, inode.path_fd_.get());
}

void InodeTable::Unpin(Inode& inode) {
  {
    MutexLock lock(fd_mu_);
    if (--inode.pins_ > 0 || !inode.forgotten_) return;
    // Finalize pins the inode once more; that Unpin must not come here again.
    inode.forgotten_ = false;
  }
  // The last pin of an inode the kernel forgot meanwhile (Forget): it is
  // this pin's to finish.
  std::unique_ptr<Inode> owned(&inode);
  Finalize(*owned);
}

void InodeTable::CountOpenHandle(Inode& inode, int delta) {
  MutexLock lock(fd_mu_);
  inode.open_handles_ += delta;
}

void InodeTable::KeepOpenUntilForgotten(const struct stat& victim) {
  MutexLock table_lock(mu_);
  auto it = inodes_.find(DevIno{victim.st_dev, victim.st_ino});
  if (it == inodes_.end()) return;
  Inode& inode = *it->second;
  auto pinned = Pin(inode);  // makes sure the fd is open
  if (!pinned.ok()) return;
  MutexLock lock(fd_mu_);
  if (inode.evictable_) {
    LruRemoveLocked(inode);
    inode.evictable_ = false;
  }
}

Inode* InodeTable::Add(UniqueFd fd, const struct stat& st) {
  MutexLock lock(mu_);
  auto& slot = inodes_[DevIno{st.st_dev, st.st_ino}];
  if (!slot) {
    const InodeHandle handle = HandleOfFd(fd.get());
    slot = std::make_unique<Inode>(std::move(fd), st, handle);
    MutexLock fd_lock(fd_mu_);
    ++open_path_fds_;
    if (slot->evictable_) LruPushFrontLocked(*slot);
    EvictFdsLocked();
  }
  Inode* inode = slot.get();
  ++inode->nlookup_;
  return inode;
}

void InodeTable::Forget(Inode* inode, uint64_t n) {
  if (inode == root_.get()) return;
  std::unique_ptr<Inode> dropped;
  {
    MutexLock lock(mu_);
    if (n >= inode->nlookup_) {
      auto it = inodes_.find(DevIno{inode->dev, inode->ino});
      if (it != inodes_.end()) {
        dropped = std::move(it->second);
        inodes_.erase(it);
      }
    } else {
      inode->nlookup_ -= n;
    }
  }
  if (!dropped) return;
  {
    MutexLock lock(fd_mu_);
    if (dropped->pins_ > 0) {
      // Still pinned by a handler that has already replied: the last Unpin
      // finalizes and deletes it.
      dropped->forgotten_ = true;
      Inode* owned_by_pins = dropped.release();
      (void)owned_by_pins;
      return;
    }
  }
  Finalize(*dropped);
}

void InodeTable::ForgetAll() {
  std::unordered_map<DevIno, std::unique_ptr<Inode>, DevInoHash> all;
  {
    MutexLock lock(mu_);
    all.swap(inodes_);
  }
  for (auto& [key, inode] : all) Finalize(*inode);
}

void InodeTable::Finalize(Inode& inode) {
  {
    MutexLock lock(fd_mu_);
    if (inode.released_) return;  // settled when it was unlinked
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
    if (inode.path_fd_.valid()) {
      if (inode.evictable_) LruRemoveLocked(inode);
      inode.path_fd_.Reset();
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

void InodeTable::ReleaseVictim(const struct stat& victim) {
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
  if (inode.released_ || inode.open_handles_ > 0 || inode.pins_ > 0 || !inode.path_fd_.valid()) {
    return;  // in use: Finalize settles it when the kernel forgets it
  }
  struct stat st;
  if (fstat(inode.path_fd_.get(), &st) != 0 || st.st_nlink != 0) return;  // still named
  // Our O_PATH fd is the last thing holding the inode; closing it frees the
  // space now instead of whenever the kernel sends FORGET.
  if (inode.evictable_) LruRemoveLocked(inode);
  inode.evictable_ = false;
  inode.path_fd_.Reset();
  --open_path_fds_;
  inode.released_ = true;
  MutexLock alloc_lock(inode.alloc_mu);
  quota_->Adjust(-static_cast<int64_t>(inode.charged_bytes), -1);
  inode.charged_bytes = 0;
}

}  // namespace localvol::fuse
