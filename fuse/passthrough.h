// Kernel FUSE passthrough for reads (private to fuse/).
//
// With FUSE_PASSTHROUGH (Linux 6.9, protocol 7.40) the server registers a
// backing file with the connection (FUSE_DEV_IOC_BACKING_OPEN on /dev/fuse,
// CAP_SYS_ADMIN) and answers an OPEN with FOPEN_PASSTHROUGH and the id it
// got: the kernel then sends that open file's reads, splice reads and mmap
// straight to the backing file, without a request to this server. libfuse
// 3.14 knows none of it; the wire facts are defined here, the INIT and OPEN
// reply amendments live in fuse/protocol_extensions.
//
// The kernel's rules for one inode (fs/fuse/iomode.c, file.c, backing.c):
//  - An open answered without FOPEN_DIRECT_IO and without FOPEN_PASSTHROUGH
//    puts the inode in cached io mode. A passthrough open of an inode in
//    cached mode fails, and the opener gets EIO.
//  - Once an inode has a passthrough open, every open of it must carry
//    FOPEN_PASSTHROUGH with the same backing file, or the opener gets EIO.
//    FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO sends reads and writes to the server
//    and only mmap to the backing file. FOPEN_KEEP_CACHE is refused (EIO).
//  - mmap of an open without FOPEN_PASSTHROUGH fails with ENODEV while the
//    inode has passthrough opens; the first shared mmap of a FOPEN_DIRECT_IO
//    open puts the inode in cached mode, which the server cannot see.
//  - The kernel ends an open's io mode when its last reference goes (close,
//    munmap), before it sends RELEASE; the inode leaves passthrough mode when
//    its last passthrough open ended. So the server's view (opens answered,
//    RELEASE not yet handled) always includes the kernel's.
//  - The kernel opens its own backing file per open from the registered
//    file's path with the opener's flags, and keeps a reference on the
//    registered file while the inode is in passthrough mode; closing the id
//    only stops new opens from naming it.
//
// PassthroughTable decides every open of a volume by those rules, from the
// server's view; see Open() for the rule and docs/volumes.md for what the
// mixes look like to applications.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"

namespace localvol::fuse::passthrough {

// ---- The wire facts, newer than Debian 12's <linux/fuse.h> (protocol 7.38).

// FUSE_PASSTHROUGH in the INIT flags: bit 37, i.e. bit 5 of flags2.
inline constexpr uint64_t kInitPassthrough = 1ull << 37;
// fuse_init_out.max_stack_depth: the uint32 right after flags2 (offset 32),
// where the old header has unused[0].
inline constexpr size_t kInitOutMaxStackDepthOffset = 36;
// FOPEN_PASSTHROUGH in fuse_open_out.open_flags.
inline constexpr uint32_t kOpenPassthrough = 1u << 7;
// fuse_open_out.backing_id (int32): what the old header calls padding.
inline constexpr size_t kOpenOutBackingIdOffset = 12;

// The argument of FUSE_DEV_IOC_BACKING_OPEN; flags and padding must be 0.
struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
inline constexpr unsigned kDevIocMagic = 229;  // FUSE_DEV_IOC_MAGIC
inline constexpr unsigned long kIocBackingOpen = _IOW(kDevIocMagic, 1, BackingMap);
inline constexpr unsigned long kIocBackingClose = _IOW(kDevIocMagic, 2, uint32_t);

// FILESYSTEM_MAX_STACK_DEPTH (include/linux/fs.h): INIT with max_stack_depth
// 0 or above it leaves passthrough off.
inline constexpr uint32_t kFilesystemMaxStackDepth = 2;
// What this server answers in max_stack_depth: the volume's own stacking
// depth. BACKING_OPEN refuses (ELOOP) a file whose filesystem's
// s_stack_depth is not below it, so 1 admits plain filesystems (XFS, ext4:
// depth 0) only, and leaves room to stack one filesystem (an overlayfs
// layer) on the volume.
inline constexpr uint32_t kMaxStackDepth = 1;

// OK when files under `dir_fd` can be registered with kMaxStackDepth: the
// directory is not on a stacking filesystem (overlayfs, ecryptfs, FUSE). The
// kernel does not show s_stack_depth, so this names the filesystem types
// that have one; EINVAL naming the type and `what` otherwise, ENOTDIR-style
// errnos of fstatfs as they come.
Status CheckBackingNotStacked(int dir_fd, const std::string& what);

// ---- The owner of one registered backing id.

// Move-only; closes the id (FUSE_DEV_IOC_BACKING_CLOSE) when destroyed.
// Thread-compatible.
class BackingFile {
 public:
  BackingFile() = default;
  // Adopts `id`, registered on `dev_fd` (-1: nothing to close, for ids the
  // table's tests hand out).
  BackingFile(int dev_fd, int32_t id) : dev_fd_(dev_fd), id_(id) {}
  BackingFile(BackingFile&& o) noexcept;
  BackingFile& operator=(BackingFile&& o) noexcept;
  BackingFile(const BackingFile&) = delete;
  BackingFile& operator=(const BackingFile&) = delete;
  ~BackingFile() { Close(); }

  // Registers `file_fd`, an open regular file, with the connection whose
  // /dev/fuse fd is `dev_fd` (borrowed: it must outlive the BackingFile).
  // Fails with the ioctl's errno: EPERM without CAP_SYS_ADMIN or when the
  // connection did not negotiate passthrough, ELOOP when the file's
  // filesystem is stacked too deep, ENOTTY when `dev_fd` is no FUSE device.
  static Result<BackingFile> Register(int dev_fd, int file_fd);

  int32_t id() const { return id_; }
  bool valid() const { return id_ > 0; }

 private:
  void Close();
  int dev_fd_ = -1;
  int32_t id_ = 0;
};

// ---- The per-inode decision.

enum class OpenMode : uint8_t {
  // As without passthrough: cached with FOPEN_KEEP_CACHE, or FOPEN_DIRECT_IO
  // where the server chooses it for O_DIRECT.
  kServer,
  // FOPEN_PASSTHROUGH: reads, splice and mmap go to the backing file.
  kPassthrough,
  // FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO: reads and writes through the server
  // (uncached), mmap to the backing file. For opens of an inode that must
  // stay in passthrough mode but may not read past the server.
  kPassthroughServerIo,
};

struct OpenRequest {
  int flags = 0;              // the open(2) flags the kernel sent
  bool regular_file = false;  // the inode is a regular file
};

// What the volume allows now.
struct VolumePolicy {
  bool passthrough = false;  // negotiated at INIT and not configured off
  // The volume's reads must go through its I/O queue: it has a read iops or
  // bandwidth limit, or a fair-share weight other than the default (which
  // only the queue's scheduler can honour; docs/volumes.md).
  bool queued_reads = false;
};

struct OpenDecision {
  OpenMode mode = OpenMode::kServer;
  int32_t backing_id = 0;  // > 0 exactly in the passthrough modes
  // kServer only: the kernel may keep the inode's page cache. False once
  // after the inode had a writer in passthrough mode, whose shared mappings
  // wrote to the backing file past the FUSE page cache.
  bool keep_cache = true;
};

// The passthrough state of one volume's inodes. Pure bookkeeping: the only
// effect is through the registrar Open() is given and the BackingFile
// Release() hands back. Thread-safe; mu_ is a leaf.
class PassthroughTable {
 public:
  // Registers the inode's backing file, for the first passthrough open, or
  // fails to keep it on the server path. Called under the table's lock.
  using Registrar = std::function<Result<BackingFile>()>;

  // Decides how to answer an open of `inode` and counts it as open:
  //  - the inode has passthrough opens: the kernel requires passthrough with
  //    their backing id. kPassthrough for an open that can read past the
  //    server (see below), kPassthroughServerIo for any other (writers,
  //    O_TRUNC, and readers once the volume queues its reads).
  //  - otherwise an open of a regular file that cannot change its
  //    allocation (O_RDONLY without O_TRUNC), in a volume that allows
  //    passthrough and does not queue its reads, of an inode with no other open:
  //    kPassthrough with a newly registered backing file. If the registrar
  //    fails (it also refuses files that may not enter passthrough mode), the
  //    open takes the server path (the failure is the caller's to log).
  //  - every other open: kServer.
  // Never an answer the kernel refuses, given that every decision is
  // released (Release) only after the kernel is done with that open.
  OpenDecision Open(uint64_t inode, const OpenRequest& request, const VolumePolicy& policy,
                    const Registrar& registrar) EXCLUDES(mu_);

  // An open Open() decided is over: its RELEASE came, or the kernel never
  // got the answer. When it was the inode's last passthrough open, returns
  // the backing file, to destroy (close the id) outside the lock.
  BackingFile Release(uint64_t inode, OpenMode mode) EXCLUDES(mu_);

  // The connection ended: forgets every open and hands back every backing
  // file, to destroy while the connection's /dev/fuse fd is still open.
  std::vector<BackingFile> Clear() EXCLUDES(mu_);

  // Whether `inode` has passthrough opens not yet released: every open of it
  // is then in one of the passthrough modes.
  bool InPassthroughMode(uint64_t inode) const EXCLUDES(mu_);

  // Opens answered with passthrough and not yet released.
  uint64_t passthrough_opens() const EXCLUDES(mu_);
  // Opens answered with passthrough since construction.
  uint64_t passthrough_opens_total() const EXCLUDES(mu_);

 private:
  struct Entry {
    uint32_t passthrough_opens = 0;
    uint32_t server_opens = 0;
    BackingFile backing;  // valid while passthrough_opens > 0
    // A writer opened in passthrough mode. Kept until the next server-path
    // open drops the page cache, even after the kernel forgot the inode (the
    // key, an Inode's address, may then name another inode: one needless
    // drop of its cache).
    bool cache_stale = false;
  };
  // Drops `it` when it holds nothing any more.
  void MaybeErase(std::unordered_map<uint64_t, Entry>::iterator it) REQUIRES(mu_);

  mutable Mutex mu_;
  std::unordered_map<uint64_t, Entry> inodes_ GUARDED_BY(mu_);
  uint64_t open_now_ GUARDED_BY(mu_) = 0;
  uint64_t opened_total_ GUARDED_BY(mu_) = 0;
};

}  // namespace localvol::fuse::passthrough
