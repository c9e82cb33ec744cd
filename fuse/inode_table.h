// InodeTable: the inodes of one volume that the kernel knows, and the cache
// of their O_PATH fds (private to fuse/).
//
// Inodes
//   Each inode the kernel knows is an Inode holding an O_PATH|O_NOFOLLOW fd to
//   the backing file, keyed by (st_dev, st_ino) so hard links share one Inode.
//   The fuse_ino_t handed to the kernel is the Inode's address (the root is
//   FUSE_ROOT_ID). Every operation works relative to these fds with the *at
//   calls, never by path, so nothing can reach outside the backing directory
//   and no symlink is ever resolved by the server.
//
// The fd cache
//   An Inode's fd is closed when the cache needs room and nothing pins it,
//   and reopened by its kernel file handle. The budget is shared by every
//   volume in the process (one RLIMIT_NOFILE). Inodes without a handle, the
//   root, and unlinked inodes (which cannot be reopened by handle) are never
//   evicted.
//
// Each Inode remembers the allocation charged to the quota for it
// (fuse/space.h). The table returns that charge when an unlinked inode is
// released or forgotten. The lock order is stated on the mutexes below.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/quota.h"

namespace localvol::fuse {

// A kernel file handle (name_to_handle_at), to reopen an inode without a path.
struct InodeHandle {
  bool valid = false;
  int type = 0;
  uint32_t size = 0;
  unsigned char bytes[64] = {};
};

class InodeTable;

struct Inode {
  Inode(UniqueFd fd, const struct stat& st, const InodeHandle& kernel_handle)
      : dev(st.st_dev),
        ino(st.st_ino),
        type(st.st_mode & S_IFMT),
        handle(kernel_handle),
        charged_bytes(static_cast<uint64_t>(st.st_blocks) * 512),
        path_fd_(std::move(fd)),
        evictable_(kernel_handle.valid) {}

  const dev_t dev;
  const ino_t ino;
  const mode_t type;  // S_IFMT bits
  const InodeHandle handle;

  // Space (fuse/space.h). Taken after the table's locks (InodeTable::fd_mu_
  // states it) and before the quota's mutex, a leaf.
  Mutex alloc_mu;
  uint64_t charged_bytes GUARDED_BY(alloc_mu);
  // Overwrites: [0, dense_end) was allocated when probed; 0 while unknown or
  // while a FreeingGuard lives. Written under alloc_mu.
  std::atomic<uint64_t> dense_end{0};
  std::atomic<uint32_t> overwrites_in_flight{0};
  uint32_t freeing GUARDED_BY(alloc_mu) = 0;  // FreeingGuards alive; no probe meanwhile
  std::atomic<uint32_t> settled_writes{0};    // the first, then every kProbeEvery-th probes
  // SETATTR size changes in progress. Counted before the handler asks whether
  // the inode is in passthrough mode, and read by the first passthrough open
  // (under the PassthroughTable's lock) before it checks the file is dense:
  // either the size change sees the mode and keeps the file dense, or the
  // open sees the count and takes the server path (fuse/space.h).
  std::atomic<uint32_t> size_changes{0};

 private:
  // The table's state of this inode, touched only by InodeTable and under
  // the lock named (the analysis cannot name another object's mutex here).
  friend class InodeTable;
  uint64_t nlookup_ = 0;  // InodeTable::mu_
  UniqueFd path_fd_;      // InodeTable::fd_mu_, as is everything below
  uint32_t pins_ = 0;
  // The kernel forgot the inode while it was pinned: a handler replied (and
  // the kernel then sent FORGET) before its PathFd went out of scope. The
  // inode has left the table; the last Unpin finalizes and deletes it.
  bool forgotten_ = false;
  uint32_t open_handles_ = 0;  // open files and directories of this inode
  bool evictable_;
  // Unlinked with nothing holding it: its space and inode were returned to
  // the quota and its fd closed before the kernel forgot it.
  bool released_ = false;
  Inode* lru_prev_ = nullptr;
  Inode* lru_next_ = nullptr;
};

// An inode's O_PATH fd, kept open (pinned) while this object lives. Move-only.
class PathFd {
 public:
  PathFd(InodeTable* table, Inode* inode, int fd) : table_(table), inode_(inode), fd_(fd) {}
  PathFd(PathFd&& o) noexcept
      : table_(o.table_), inode_(std::exchange(o.inode_, nullptr)), fd_(std::exchange(o.fd_, -1)) {}
  PathFd& operator=(PathFd&&) = delete;
  PathFd(const PathFd&) = delete;
  ~PathFd();
  int get() const { return fd_; }

 private:
  InodeTable* table_;
  Inode* inode_;
  int fd_;
};

class InodeTable {
 public:
  // `root_fd` is the backing root opened O_PATH; `quota` is borrowed and must
  // outlive the table.
  InodeTable(UniqueFd root_fd, const struct stat& root_stat, Quota* quota);
  ~InodeTable();
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode& root() { return *root_; }
  // The Inode the kernel calls `ino`.
  Inode& Get(fuse_ino_t ino);
  static fuse_ino_t IdOf(Inode& inode) { return reinterpret_cast<fuse_ino_t>(&inode); }

  // The Inode of `fd`, an O_PATH|O_NOFOLLOW fd of the file `st` describes,
  // added if the table does not hold it yet (then it keeps `fd`); counts one
  // lookup.
  Inode* Add(UniqueFd fd, const struct stat& st) EXCLUDES(mu_, fd_mu_);
  // Takes back `n` lookups of `inode`. When none is left, the inode leaves
  // the table and is finalized (Finalize).
  void Forget(Inode* inode, uint64_t n) EXCLUDES(mu_);
  // Drops every inode (after the session ended), finalizing each.
  void ForgetAll() EXCLUDES(mu_);

  // Pins the inode's O_PATH fd open, reopening it by handle if the cache
  // closed it. Fails with ESTALE if the inode no longer exists.
  Result<PathFd> Pin(Inode& inode) EXCLUDES(fd_mu_);
  // Counts an open file or directory handle of `inode` (delta +1 or -1).
  void CountOpenHandle(Inode& inode, int delta) EXCLUDES(fd_mu_);
  // The inode `victim` is about to lose a name: keep its fd open until it is
  // forgotten, since an unlinked inode cannot be reopened by handle.
  void KeepOpenUntilForgotten(const struct stat& victim) EXCLUDES(mu_, fd_mu_);
  // After an unlink/rmdir/rename removed the last name of `victim`: returns
  // its space and inode to the quota now unless something still holds it
  // open (then Finalize does when the kernel forgets it).
  void ReleaseVictim(const struct stat& victim) EXCLUDES(mu_, fd_mu_);

  // Inodes in the table, the root not counted; O_PATH fds open in the
  // process (every volume's).
  size_t size() const EXCLUDES(mu_);
  static size_t OpenPathFds() { return open_path_fds_.load(); }
  // Half of RLIMIT_NOFILE, read once: the rest is for open files,
  // directories, the ring and libfuse.
  static size_t PathFdBudget();

 private:
  friend class PathFd;
  void Unpin(Inode& inode) EXCLUDES(fd_mu_);
  // Settles a dropped Inode: returns its space and inode if it was unlinked.
  void Finalize(Inode& inode) EXCLUDES(fd_mu_);
  void EvictFdsLocked() REQUIRES(fd_mu_);
  void LruRemoveLocked(Inode& inode) REQUIRES(fd_mu_);
  void LruPushFrontLocked(Inode& inode) REQUIRES(fd_mu_);

  struct DevIno {
    dev_t dev;
    ino_t ino;
    bool operator==(const DevIno&) const = default;
  };
  struct DevInoHash {
    size_t operator()(const DevIno& k) const {
      return std::hash<uint64_t>()(k.ino ^ (uint64_t(k.dev) << 40));
    }
  };

  Quota* const quota_;
  std::unique_ptr<Inode> root_;
  UniqueFd handle_mount_fd_;  // the root, O_RDONLY: the mount fd for open_by_handle_at

  // The lock order: mu_, fd_mu_, Inode::alloc_mu, then the quota's mutex (a
  // leaf, fuse/quota.h), as annotated. None is held while replying to the
  // kernel.
  mutable Mutex mu_ ACQUIRED_BEFORE(fd_mu_);  // the table
  std::unordered_map<DevIno, std::unique_ptr<Inode>, DevInoHash> inodes_ GUARDED_BY(mu_);

  Mutex fd_mu_ ACQUIRED_AFTER(mu_) ACQUIRED_BEFORE(Inode::alloc_mu);  // the fd cache
  Inode* lru_head_ GUARDED_BY(fd_mu_) = nullptr;                      // most recently used
  Inode* lru_tail_ GUARDED_BY(fd_mu_) = nullptr;                      // eviction starts here
  static std::atomic<size_t> open_path_fds_;
};

}  // namespace localvol::fuse
