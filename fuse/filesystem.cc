#include "fuse/filesystem.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_set>

#include "base/logging.h"
#include "fuse/handles.h"
#include "fuse/protocol_extensions.h"
#include "fuse/thread_placement.h"
#include "iopath/engine.h"

namespace localvol::fuse {

Filesystem::Filesystem(UniqueFd root_fd, const struct stat& root_stat, Quota* quota,
                       iopath::Engine* engine, iopath::IoQueue* queue,
                       const FilesystemConfig& config)
    : quota_(quota),
      inodes_(std::move(root_fd), root_stat, quota),
      space_(&inodes_, quota, config.block_size),
      engine_(engine),
      queue_(queue),
      config_(config),
      worker_cpus_(ThreadPlacement::CurrentAffinity()) {
  auto proc = OpenAt(AT_FDCWD, "/proc/self/fd", O_PATH | O_DIRECTORY);
  if (proc.ok()) proc_self_fd_ = std::move(proc).value();
}

Filesystem::~Filesystem() { ForgetAll(); }

std::string Filesystem::ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

void Filesystem::AddHandle(OpenHandle* handle) {
  inodes_.CountOpenHandle(*handle->inode, +1);
  MutexLock lock(handles_mu_);
  open_handles_.insert(handle);
}

void Filesystem::DropHandle(OpenHandle* handle) {
  {
    MutexLock lock(handles_mu_);
    open_handles_.erase(handle);
  }
  inodes_.CountOpenHandle(*handle->inode, -1);
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
  // Their backing ids too (destroyed here, on the still open /dev/fuse fd).
  (void)passthrough_.Clear();
  inodes_.ForgetAll();
}

void Filesystem::Init(Request& request, fuse_conn_info* conn) {
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
  if (request.KernelOffers(Feature::kKillPrivV2)) {
    request.Ask(Feature::kKillPrivV2);
  } else {
    GetLogger("fuse")->warn(
        "kernel lacks FUSE killpriv v2: every write costs a security.capability lookup, and a "
        "setgid bit without group-execute survives writes by non-members");
  }
  if (request.KernelOffers(Feature::kDirectIoAllowMmap)) {
    request.Ask(Feature::kDirectIoAllowMmap);
    direct_io_for_o_direct_ = true;
  }
  if (config_.start_kernel_ring) {
    if (request.KernelOffers(Feature::kOverIoUring)) {
      request.Ask(Feature::kOverIoUring);
      config_.start_kernel_ring();
    } else {
      GetLogger("fuse")->warn(
          "FUSE over io_uring was asked for but the kernel does not offer it; serving "
          "/dev/fuse. It needs Linux 6.14 or later with the fuse module parameter set: "
          "`echo 1 > /sys/module/fuse/parameters/enable_uring` (or `options fuse "
          "enable_uring=1` in /etc/modprobe.d)");
    }
  }
  if (config_.read_passthrough) {
    if (request.KernelOffers(Feature::kPassthrough)) {
      // The reply also says kMaxStackDepth (fuse/protocol_extensions.cc). The
      // kernel refuses passthrough with a writeback cache, which is off.
      request.Ask(Feature::kPassthrough);
      passthrough_granted_.store(true, std::memory_order_release);
      GetLogger("fuse")->debug("FUSE passthrough on: read-only opens read the backing files");
    } else {
      GetLogger("fuse")->info(
          "the kernel does not offer FUSE passthrough (Linux 6.9 or later with "
          "CONFIG_FUSE_PASSTHROUGH): every read goes through the server");
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

void Filesystem::KillSuidSgidIfAsked(const Request& request, fuse_req_t req, Inode& inode, int fd) {
  if (request.kills_suidgid()) KillSuidSgid(req, inode, fd);
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

void Filesystem::SubmitData(const Request& request, fuse_req_t req,
                            std::unique_ptr<iopath::IoRequest> io) {
  if (request.others_waiting()) return engine_->Submit(*queue_, std::move(io));
  // A ring queue's thread places itself (fuse/kernel_ring.cc).
  if (request.transport() == Transport::kRing) {
    return (void)engine_->SubmitOrRun(*queue_, std::move(io));
  }
  // Read before the request can be answered (and `req` freed) inside SubmitOrRun.
  const pid_t caller = fuse_req_ctx(req)->pid;
  const bool small = io->len <= iopath::Engine::kRunHereMaxBytes;
  const bool alone = engine_->SubmitOrRun(*queue_, std::move(io));
  PlaceWorker(caller, alone ? 1 : ThreadPlacement::kJoinedOthers, small);
}

void Filesystem::PlaceWorkerForOtherRequest(const Request& request, fuse_req_t req) {
  if (request.transport() == Transport::kRing) return;
  PlaceWorker(fuse_req_ctx(req)->pid, ThreadPlacement::kJoinedOthers, /*spread=*/false);
}

void Filesystem::PlaceWorker(pid_t caller, size_t per_wake, bool spread) {
  if (!config_.thread_placement) return;
  // A worker serves this one volume for its whole life.
  thread_local std::optional<ThreadPlacement> placement;
  if (!placement) {
    const uint64_t ordinal = workers_placed_.fetch_add(1, std::memory_order_relaxed);
    placement.emplace(worker_cpus_, SpreadCpu(worker_cpus_, ordinal));
    // libfuse starts a worker from another, whose pinned mask it inherits.
    placement->Unpin();
  }
  const bool was_batched = placement->batched();
  placement->Observe(
      per_wake, [this, caller] { return FollowCpu(caller); }, spread);
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

}  // namespace localvol::fuse
