// Filesystem: the FUSE low-level operations of one volume (private to fuse/).
//
// Inodes
//   Each inode the kernel knows is an Inode holding an O_PATH|O_NOFOLLOW fd to
//   the backing file, keyed by (st_dev, st_ino) so hard links share one Inode.
//   The fuse_ino_t handed to the kernel is the Inode's address (the root is
//   FUSE_ROOT_ID). Every operation works relative to these fds with the *at
//   calls, never by path, so nothing can reach outside the backing directory
//   and no symlink is ever resolved by the server.
//
// Quota
//   Each Inode remembers the allocation charged to the quota for it. An
//   operation that can allocate reserves its worst case first (ENOSPC if that
//   does not fit), and settles to the allocation observed with fstat after it
//   completed. Space of an unlinked inode is returned when the kernel forgets
//   it (the server's O_PATH fd keeps it allocated until then).
//
//   Overwrites skip both. Each Inode knows a prefix of its backing file that
//   is allocated (dense_end, found with lseek(SEEK_HOLE) every kProbeEvery
//   settled writes). A write inside it cannot allocate: the backing
//   filesystem is this volume's alone and nothing here shares extents
//   (copy_file_range copies), so overwriting allocated blocks keeps them.
//   Freeing blocks (truncate, fallocate) happens only under a FreeingGuard,
//   which forgets the prefix and waits for overwrites in flight first, so no
//   write is admitted without a reservation into blocks being freed.
//
// Threads
//   FUSE worker threads (libfuse's mt loop) run every operation. Metadata
//   operations run synchronously on them; data operations (read, write,
//   fsync, fallocate, copy_file_range) are submitted to the iopath engine and
//   replied to from its completion thread, so no worker waits for the disk.
//
// Lock order: mu_ (inode table), fd_mu_ (fd cache), Inode::alloc_mu, then
// the quota's mutex.
// None is held while replying to the kernel.
#pragma once

#include <fuse_lowlevel.h>
#include <sched.h>
#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <atomic>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/buffer_pool.h"
#include "fuse/quota.h"

namespace localvol::iopath {
class Engine;
class IoQueue;
class IoRequest;
}  // namespace localvol::iopath

namespace localvol::fuse {

// A kernel file handle (name_to_handle_at), to reopen an inode without a path.
struct InodeHandle {
  bool valid = false;
  int type = 0;
  uint32_t size = 0;
  unsigned char bytes[64] = {};
};

struct Inode {
  Inode(UniqueFd fd, const struct stat& st, const InodeHandle& kernel_handle)
      : dev(st.st_dev), ino(st.st_ino), type(st.st_mode & S_IFMT), handle(kernel_handle),
        path_fd(std::move(fd)), evictable(kernel_handle.valid),
        charged_bytes(static_cast<uint64_t>(st.st_blocks) * 512) {}

  const dev_t dev;
  const ino_t ino;
  const mode_t type;  // S_IFMT bits
  const InodeHandle handle;
  uint64_t nlookup = 0;  // guarded by Filesystem::mu_

  // The O_PATH | O_NOFOLLOW fd, cached: guarded by Filesystem::fd_mu_.
  // Closed when the cache needs room and nothing pins it; reopened by handle.
  // Inodes without a handle, the root, and unlinked inodes (which cannot be
  // reopened by handle) are never evicted.
  UniqueFd path_fd;
  uint32_t pins = 0;
  uint32_t open_handles = 0;  // open files and directories of this inode
  bool evictable;
  // Unlinked with nothing holding it: its space and inode were returned to
  // the quota and its fd closed before the kernel forgot it.
  bool released = false;
  Inode* lru_prev = nullptr;
  Inode* lru_next = nullptr;

  Mutex alloc_mu;  // acquire after Filesystem::mu_, before the quota's mutex
  uint64_t charged_bytes GUARDED_BY(alloc_mu);

  // Overwrites (see "Quota" above). [0, dense_end) was allocated when probed;
  // 0 while unknown or while a FreeingGuard lives. Written under alloc_mu.
  std::atomic<uint64_t> dense_end{0};
  std::atomic<uint32_t> overwrites_in_flight{0};
  uint32_t freeing GUARDED_BY(alloc_mu) = 0;  // FreeingGuards alive; no probe meanwhile
  std::atomic<uint32_t> settled_writes{0};  // the first, then every kProbeEvery-th probes
};

class Filesystem;

// An inode's O_PATH fd, kept open (pinned) while this object lives. Move-only.
class PathFd {
 public:
  PathFd(Filesystem* fs, Inode* inode, int fd) : fs_(fs), inode_(inode), fd_(fd) {}
  PathFd(PathFd&& o) noexcept
      : fs_(o.fs_), inode_(std::exchange(o.inode_, nullptr)), fd_(std::exchange(o.fd_, -1)) {}
  PathFd& operator=(PathFd&&) = delete;
  PathFd(const PathFd&) = delete;
  ~PathFd();
  int get() const { return fd_; }

 private:
  Filesystem* fs_;
  Inode* inode_;
  int fd_;
};

// While it lives, writes into `inode` take the reservation and fstat path
// and its allocated prefix is neither used nor probed. The constructor waits
// for overwrites already in flight. Held around every operation that can free
// blocks of a file. Move-only; a moved-from guard does nothing.
class FreeingGuard {
 public:
  explicit FreeingGuard(Inode& inode);
  FreeingGuard(FreeingGuard&& o) noexcept : inode_(std::exchange(o.inode_, nullptr)) {}
  FreeingGuard& operator=(FreeingGuard&&) = delete;
  FreeingGuard(const FreeingGuard&) = delete;
  ~FreeingGuard();

 private:
  Inode* inode_;
};

struct FilesystemConfig {
  double entry_timeout_s = 3600;  // the backing directory belongs to this volume alone
  double attr_timeout_s = 3600;
  bool cache_listings = true;     // FOPEN_CACHE_DIR and keep_cache on directories
  uint32_t max_write = 1 << 20;
  uint32_t max_background = 64;   // background FUSE requests in flight
  uint64_t block_size = 4096;     // allocation unit of the backing filesystem
  // When set, Init asks the kernel for FUSE over io_uring and, if granted,
  // calls this (on the session's loop thread, before the INIT reply is sent)
  // to start serving the ring; see fuse/kernel_ring.h.
  std::function<void()> start_kernel_ring;
};

class Filesystem {
 public:
  // `root_fd` is the backing root opened O_PATH. `quota`, `engine` and `queue`
  // are borrowed and must outlive the Filesystem.
  Filesystem(UniqueFd root_fd, const struct stat& root_stat, Quota* quota, iopath::Engine* engine,
             iopath::IoQueue* queue, const FilesystemConfig& config);
  ~Filesystem();

  // The operation table to pass to fuse_session_new with this as userdata.
  static const fuse_lowlevel_ops& Operations();

  // After the session ended: settles the allocation of every inode the kernel
  // still held (returning the space of unlinked ones) and drops them.
  void ForgetAll();

  // Public so the C trampolines in filesystem.cc can reach them.
  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Forget(fuse_ino_t ino, uint64_t nlookup);
  void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  // On a /dev/fuse worker, before a request other than a read or write:
  // such requests gain nothing from a placement (creates were measured), so
  // they count as batches to run on every CPU (PlaceWorker).
  void PlaceWorkerForOtherRequest(fuse_req_t req);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi);
  void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus);
  void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void StatFs(fuse_req_t req, fuse_ino_t ino);
  void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi);
  void CopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                     int flags);
  void Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);

  // The session, for cache invalidations. Set once, before serving.
  void SetSession(fuse_session* session) { session_ = session; }

  // Used by the completion side of data requests.
  Quota& quota() { return *quota_; }
  // Allocation change of `inode` since it was last charged; records the new
  // value. `fd` is any open fd of the inode, or -1 to use its O_PATH fd.
  int64_t TakeAllocationDelta(Inode& inode, int fd = -1);
  // Settles `reservation` against the allocation change of `inode` observed
  // now through `fd`, an open fd of that inode.
  void SettleAllocation(Inode& inode, int fd, Reservation& reservation);
  // A write of [.., end) of `inode` that lies in its allocated prefix is an
  // overwrite: it needs no reservation and no settling. Returns whether it
  // is; if so, EndOverwrite must follow once the write completed.
  bool BeginOverwrite(Inode& inode, uint64_t end);
  void EndOverwrite(Inode& inode);
  // After a write was settled: every kProbeEvery calls, probes the allocated
  // prefix of `inode` through `fd`, an open fd of it (whose file offset moves;
  // all I/O here is positional).
  void CountSettledWrite(Inode& inode, int fd);
  static constexpr uint32_t kProbeEvery = 64;
  // Writes admitted as overwrites since construction.
  uint64_t overwrites() const { return overwrites_.load(std::memory_order_relaxed); }

 private:
  struct OpenHandle;
  struct FileHandle;
  struct DirHandle;
  // Every open handle is registered, so that ForgetAll() can close those the
  // kernel never released. AddHandle counts the inode's open handle.
  void AddHandle(OpenHandle* handle) EXCLUDES(handles_mu_);
  // Unregisters, uncounts and deletes.
  void DropHandle(OpenHandle* handle) EXCLUDES(handles_mu_);
  // The open flags of a file open or create reply (`flags` as the backing
  // file was opened with), and the handle registered.
  void SetOpenReply(fuse_file_info* fi, FileHandle* handle, int flags);

  Inode& GetInode(fuse_ino_t ino);
  // Pins the inode's O_PATH fd open, reopening it by handle if the cache
  // closed it. Fails with ESTALE if the inode no longer exists.
  Result<PathFd> Pin(Inode& inode);
  void Unpin(Inode& inode);
  // The inode is being unlinked: keep its fd open until it is forgotten,
  // since an unlinked inode cannot be reopened by handle.
  void KeepOpenUntilForgotten(const struct stat& victim);
  void EvictFdsLocked() REQUIRES(fd_mu_);
  void LruRemoveLocked(Inode& inode) REQUIRES(fd_mu_);
  void LruPushFrontLocked(Inode& inode) REQUIRES(fd_mu_);
  friend class PathFd;
  // Finds or creates the Inode for `name` in `parent` and counts one lookup.
  int LookupChild(Inode& parent, const char* name, fuse_entry_param* entry, Inode** out);
  void ForgetOne(Inode* inode, uint64_t n);
  // Replies with a positive entry; takes the lookup back if the kernel
  // abandoned the request.
  void ReplyEntry(fuse_req_t req, const fuse_entry_param& e);
  // unlink (flags 0) or rmdir (AT_REMOVEDIR) of `name` in `parent`.
  void RemoveEntry(fuse_req_t req, fuse_ino_t parent, const char* name, int flags);
  // Renames `name` in `from` to the new name `newname` in `to` with no space
  // reserved, as XFS does at a full volume: only if the entry fits in the
  // blocks `to` already has. Undoes the rename and returns ENOSPC if `to`
  // grew; errno of a failed rename, 0 on success. Charges what it observed.
  int RenameWithoutGrowing(Inode& from, int from_fd, const char* name, Inode& to, int to_fd,
                           const char* newname, unsigned flags);
  // Settles a dropped Inode: returns its space and inode if it was unlinked.
  void Finalize(Inode& inode);

  // After an unlink/rmdir/rename removed the last name of `victim`: returns
  // its space and inode now unless something still holds it open (then
  // Finalize does when the kernel forgets it).
  void ReleaseVictim(const struct stat& victim);
  // Counts an open file or directory handle of `inode` (delta +1 or -1).
  void CountOpenHandle(Inode& inode, int delta);
  // Runs `make` (a mkdirat/mknodat/symlinkat/openat creating `name`) as the
  // caller with an inode and a directory block reserved, then replies with
  // the new entry. `make` returns a fd (or 0) on success, -1 with errno set.
  template <typename MakeFn>
  int CreateAsCaller(fuse_req_t req, Inode& parent, const char* name, mode_t mode, MakeFn make,
                     fuse_entry_param* entry, Reservation* reservation);
  // Opens `inode`, a file the kernel resolved and checked, with `flags`
  // through /proc. With O_TRUNC: under a FreeingGuard, drops setuid/setgid
  // when the kernel asks, and settles the space freed.
  Result<UniqueFd> Reopen(fuse_req_t req, Inode& inode, int flags);
  // Reserves space for writing [offset, offset+len). May admit only a prefix
  // (like a kernel filesystem that fills up); returns the admitted length, 0 for ENOSPC.
  size_t AdmitWrite(int fd, uint64_t offset, size_t len, Reservation* reservation);
  // A data read or write: on the calling thread when the engine finds the
  // disk idle, unless other requests wait for this thread. On a /dev/fuse
  // worker, whether it found the disk idle also places the worker
  // (fuse/thread_placement.h).
  void SubmitData(fuse_req_t req, std::unique_ptr<iopath::IoRequest> request);
  // The CPU a worker follows while requests come one at a time: one for all
  // of the volume's workers, where `caller` last ran when the first of them
  // decided. Workers that each chased the caller on their own ended up split
  // across CPUs, and at queue depth 1 the gain is in being on one CPU
  // (docs/performance.md, section 2). -1 if unknown.
  int FollowCpu(pid_t caller);
  // Counts a request of `caller` on this worker's ThreadPlacement: `per_wake`
  // 1 for one that found the disk idle, ThreadPlacement::kJoinedOthers for
  // one that joined other I/O; `spread` whether in batches it gains from the
  // workers being spread over the CPUs (small reads and writes).
  void PlaceWorker(pid_t caller, size_t per_wake, bool spread);
  static std::string ProcPath(int fd);
  // Clears the setuid/setgid bits of a regular file as Linux does before a
  // write, truncate or chown: setuid always, setgid when group-execute is set
  // or the caller is not in the file's group. `fd` is any fd of the inode,
  // O_PATH included. The IfAsked form acts only when the kernel asks for it
  // (protocol::RequestKillsSuidgid).
  void KillSuidSgid(fuse_req_t req, Inode& inode, int fd);
  void KillSuidSgidIfAsked(fuse_req_t req, Inode& inode, int fd);

  UniqueFd proc_self_fd_;
  UniqueFd handle_mount_fd_;  // the root, O_RDONLY: the mount fd for open_by_handle_at
  fuse_session* session_ = nullptr;
  // O_DIRECT opens get FOPEN_DIRECT_IO, which lets their writes run in
  // parallel; only where the kernel keeps shared mappings of such files
  // working (FUSE_DIRECT_IO_ALLOW_MMAP). Set by Init, before any open.
  bool direct_io_for_o_direct_ = false;
  std::unique_ptr<Inode> root_;
  Quota* quota_;
  iopath::Engine* engine_;
  iopath::IoQueue* queue_;
  const FilesystemConfig config_;
  // Where the /dev/fuse workers may run: the mounting thread's CPUs, which
  // they inherit through the loop thread.
  const cpu_set_t worker_cpus_;
  // Workers numbered as they first serve a request; the number picks the
  // CPU each takes in batches of small reads and writes (SpreadCpu). Should
  // libfuse stop idle workers and start new ones, the spread is even only
  // roughly.
  std::atomic<uint64_t> workers_placed_{0};
  // The one CPU the workers pin to while their requests come one at a time,
  // or -1 until a worker decides to (FollowCpu).
  std::atomic<int> follow_cpu_{-1};
  BufferPool buffers_;
  std::atomic<uint64_t> overwrites_{0};

  Mutex mu_;  // the inode table; acquire before Inode::alloc_mu
  struct DevIno {
    dev_t dev;
    ino_t ino;
    bool operator==(const DevIno&) const = default;
  };
  struct DevInoHash {
    size_t operator()(const DevIno& k) const { return std::hash<uint64_t>()(k.ino ^ (uint64_t(k.dev) << 40)); }
  };
  std::unordered_map<DevIno, std::unique_ptr<Inode>, DevInoHash> inodes_ GUARDED_BY(mu_);

  // The O_PATH fd cache. Acquire after mu_; no other lock is taken under it.
  // The budget is shared by every volume in the process (one RLIMIT_NOFILE).
  Mutex fd_mu_;
  Inode* lru_head_ GUARDED_BY(fd_mu_) = nullptr;  // most recently used
  Inode* lru_tail_ GUARDED_BY(fd_mu_) = nullptr;  // eviction starts here
  static std::atomic<size_t> open_path_fds_;
  // Open file and directory handles; a leaf lock.
  Mutex handles_mu_;
  std::unordered_set<OpenHandle*> open_handles_ GUARDED_BY(handles_mu_);
  static size_t PathFdBudget();

};

}  // namespace localvol::fuse
