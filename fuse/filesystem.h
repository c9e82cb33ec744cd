// Filesystem: the FUSE low-level operations of one volume (private to fuse/).
//
// The operations live in one file per family: entry_ops.cc (names),
// attr_ops.cc, data_ops.cc (open files and their data), dir_ops.cc,
// xattr_ops.cc, and lowlevel.cc (the libfuse trampolines). The inodes and
// their fds are an InodeTable (fuse/inode_table.h); quota admission and
// settling are Space (fuse/space.h).
//
// Threads
//   FUSE worker threads (libfuse's mt loop) run every operation. Metadata
//   operations run synchronously on them; data operations (read, write,
//   fsync, fallocate, copy_file_range) are submitted to the iopath engine and
//   replied to from its completion thread, or on the worker itself when the
//   engine runs them there (Engine::SubmitOrRun), so no worker waits for a
//   busy disk.
//
// Locks: the InodeTable's, then Inode::alloc_mu, then the quota's
// (fuse/inode_table.h); handles_mu_ below is a leaf. None is held while
// replying to the kernel.
#pragma once

#include <fuse_lowlevel.h>
#include <sched.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/buffer_pool.h"
#include "fuse/inode_table.h"
#include "fuse/passthrough.h"
#include "fuse/quota.h"
#include "fuse/request.h"
#include "fuse/space.h"

namespace localvol::iopath {
class Engine;
class IoQueue;
class IoRequest;
}  // namespace localvol::iopath

namespace localvol::fuse {

struct OpenHandle;
struct FileHandle;

struct FilesystemConfig {
  double entry_timeout_s = 3600;  // the backing directory belongs to this volume alone
  double attr_timeout_s = 3600;
  bool cache_listings = true;  // FOPEN_CACHE_DIR and keep_cache on directories
  uint32_t max_write = 1 << 20;
  uint32_t max_background = 64;  // background FUSE requests in flight
  uint64_t block_size = 4096;    // allocation unit of the backing filesystem
  // When set, Init asks the kernel for FUSE over io_uring and, if granted,
  // calls this (on the session's loop thread, before the INIT reply is sent)
  // to start serving the ring; see fuse/kernel_ring.h.
  std::function<void()> start_kernel_ring;
  // Whether /dev/fuse workers place themselves (PlaceWorker).
  bool thread_placement = true;
  // Whether Init asks for FUSE_PASSTHROUGH: read-only opens are then served
  // by the kernel from the backing file (fuse/passthrough.h).
  bool read_passthrough = false;
};

class Filesystem {
 public:
  // `root_fd` is the backing root opened O_PATH. `quota`, `engine` and `queue`
  // are borrowed and must outlive the Filesystem.
  Filesystem(UniqueFd root_fd, const struct stat& root_stat, Quota* quota, iopath::Engine* engine,
             iopath::IoQueue* queue, const FilesystemConfig& config);
  ~Filesystem();

  // The operation table to pass to fuse_session_new, with a
  // protocol::Connection naming this as userdata (lowlevel.cc).
  static const fuse_lowlevel_ops& Operations();

  // After the session ended: closes the handles the kernel never released,
  // settles the allocation of every inode the kernel still held (returning
  // the space of unlinked ones) and drops them.
  void ForgetAll();

  // Public so the C trampolines in lowlevel.cc can reach them.
  // Handlers that need what the transport knows about their request take
  // its Request (fuse/request.h) first.
  void Init(Request& request, fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Forget(fuse_ino_t ino, uint64_t nlookup);
  void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void SetAttr(const Request& request, fuse_req_t req, fuse_ino_t ino, struct stat* attr,
               int to_set, fuse_file_info* fi);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags);
  void Open(Request& request, fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Create(Request& request, fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi);
  // On a /dev/fuse worker, before a request other than a read or write:
  // such requests gain nothing from a placement (creates were measured), so
  // they count as batches to run on every CPU (PlaceWorker).
  void PlaceWorkerForOtherRequest(const Request& request, fuse_req_t req);
  void Read(Request& request, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
            fuse_file_info* fi);
  void Write(Request& request, fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size,
             off_t off, fuse_file_info* fi);
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

  // Writes admitted as overwrites since construction.
  uint64_t overwrites() const { return space_.overwrites(); }
  // Whether the kernel granted FUSE_PASSTHROUGH at INIT.
  bool read_passthrough() const { return passthrough_granted_.load(std::memory_order_acquire); }
  // Files open with passthrough now; opens answered with it since construction.
  uint64_t passthrough_open_files() const { return passthrough_.passthrough_opens(); }
  uint64_t passthrough_opens_total() const { return passthrough_.passthrough_opens_total(); }

 private:
  // Every open handle is registered, so that ForgetAll() can close those the
  // kernel never released. AddHandle counts the inode's open handle.
  void AddHandle(OpenHandle* handle) EXCLUDES(handles_mu_);
  // Unregisters, uncounts and deletes.
  void DropHandle(OpenHandle* handle) EXCLUDES(handles_mu_);

  // ---- entry_ops.cc
  // Finds or creates the Inode for `name` in `parent` and counts one lookup.
  int LookupChild(Inode& parent, const char* name, fuse_entry_param* entry, Inode** out);
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
  // Runs `make` (a mkdirat/mknodat/symlinkat/openat creating `name`) as the
  // caller with an inode and a directory block reserved, then replies with
  // the new entry. `make` returns a fd (or 0) on success, -1 with errno set.
  template <typename MakeFn>
  int CreateAsCaller(fuse_req_t req, Inode& parent, const char* name, mode_t mode, MakeFn make,
                     fuse_entry_param* entry, Reservation* reservation);

  // ---- data_ops.cc
  // The open flags of a file open or create reply (`flags` as the backing
  // file was opened with), passthrough included (on `request`, for the
  // reply amendment), and the handle registered.
  void SetOpenReply(Request& request, fuse_file_info* fi, FileHandle* handle, int flags);
  // How the open of `handle` (with `flags`) is answered: PassthroughTable::Open
  // with this volume's policy now, registering the backing file when needed.
  passthrough::OpenDecision DecidePassthrough(const FileHandle& handle, int flags);
  // For an operation through `handle` that reaches `offset`: while the inode
  // is in passthrough mode, allocates the gap from its end of file to
  // `offset` (fuse/space.h). 0 or the errno to answer.
  int KeepDense(FileHandle& handle, uint64_t offset);
  // KeepDense for a SETATTR to `size`, with the handle `fi` or by path.
  int KeepDenseForTruncate(Inode& inode, fuse_file_info* fi, int path_fd, off_t size);
  // DropHandle of a file the kernel released, or never got: gives its part
  // of the passthrough state back, closing the backing id with the last one.
  void DropFileHandle(FileHandle* handle);
  // Opens `inode`, a file the kernel resolved and checked, with `flags`
  // through /proc. With O_TRUNC: under a FreeingGuard, drops setuid/setgid
  // when the kernel asks, and settles the space freed.
  Result<UniqueFd> Reopen(const Request& request, fuse_req_t req, Inode& inode, int flags);
  // fsync or fdatasync of `fd` through the engine, replied to when done.
  void SubmitSync(fuse_req_t req, int fd, int datasync);

  // ---- filesystem.cc
  // A data read or write: on the calling thread when the engine finds the
  // disk idle, unless other requests wait for this thread. On a /dev/fuse
  // worker, whether it found the disk idle also places the worker
  // (fuse/thread_placement.h).
  void SubmitData(const Request& request, fuse_req_t req, std::unique_ptr<iopath::IoRequest> io);
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
  // The inode itself through procfs: following this magic link lands on the
  // inode an O_PATH fd refers to, a symlink included (never its target).
  static std::string ProcPath(int fd);
  // Clears the setuid/setgid bits of a regular file as Linux does before a
  // write, truncate or chown: setuid always, setgid when group-execute is set
  // or the caller is not in the file's group. `fd` is any fd of the inode,
  // O_PATH included. The IfAsked form acts only when the kernel asks for it
  // (Request::kills_suidgid).
  void KillSuidSgid(fuse_req_t req, Inode& inode, int fd);
  void KillSuidSgidIfAsked(const Request& request, fuse_req_t req, Inode& inode, int fd);

  Inode& GetInode(fuse_ino_t ino) { return inodes_.Get(ino); }
  Result<PathFd> Pin(Inode& inode) { return inodes_.Pin(inode); }

  UniqueFd proc_self_fd_;
  fuse_session* session_ = nullptr;
  // O_DIRECT opens get FOPEN_DIRECT_IO, which lets their writes run in
  // parallel; only where the kernel keeps shared mappings of such files
  // working (FUSE_DIRECT_IO_ALLOW_MMAP). Set by Init, before any open.
  bool direct_io_for_o_direct_ = false;
  Quota* quota_;
  InodeTable inodes_;
  Space space_;
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

  // Set by Init when the kernel granted FUSE_PASSTHROUGH, before any open.
  std::atomic<bool> passthrough_granted_{false};
  std::atomic<bool> passthrough_refusal_logged_{false};
  // Which inodes are open with passthrough and their backing files; its
  // mutex is a leaf. Its backing ids are closed by ForgetAll, while the
  // session's /dev/fuse fd is still open.
  passthrough::PassthroughTable passthrough_;

  // Open file and directory handles; a leaf lock.
  Mutex handles_mu_;
  std::unordered_set<OpenHandle*> open_handles_ GUARDED_BY(handles_mu_);
};

}  // namespace localvol::fuse
