// Space: admission and settling of the allocation of one volume's inodes
// against its Quota (private to fuse/).
//
// Each Inode remembers the allocation charged to the quota for it. An
// operation that can allocate reserves its worst case first (ENOSPC if that
// does not fit), and settles to the allocation observed with fstat after it
// completed. Space of an unlinked inode is returned when the kernel forgets
// it (the server's O_PATH fd keeps it allocated until then; InodeTable).
//
// Overwrites skip both. Each Inode knows a prefix of its backing file that
// is allocated (dense_end, found with lseek(SEEK_HOLE) every kProbeEvery
// settled writes). A write inside it cannot allocate: the backing
// filesystem is this volume's alone and nothing here shares extents
// (copy_file_range copies), so overwriting allocated blocks keeps them.
// Freeing blocks (truncate, fallocate) happens only under a FreeingGuard,
// which forgets the prefix and waits for overwrites in flight first, so no
// write is admitted without a reservation into blocks being freed.
//
// Files in passthrough mode (fuse/passthrough.h) have no hole below their end
// of file. A writer of such a file reaches the backing file through its
// shared mappings, whose stores into a hole would allocate blocks that no
// admission saw. So an inode enters passthrough mode only when it is dense
// (IsDense), and while it is in that mode every server operation that would
// leave a hole below the end of file allocates it first, with admission
// (AllocateRange), or fails with ENOSPC.
//
// Thread-safe; takes Inode::alloc_mu and the quota's mutex, in that order.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/status.h"
#include "fuse/inode_table.h"
#include "fuse/quota.h"

namespace localvol::fuse {

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

// Bytes of the block-aligned range covering [offset, offset+len) of `fd`
// that have no extent yet (holes and everything past the last extent).
// Delayed-allocation and unwritten extents count as allocated, as st_blocks
// counts them.
Result<uint64_t> UnallocatedBytesInRange(int fd, uint64_t offset, uint64_t len, uint64_t block);

class Space {
 public:
  // `table` and `quota` are borrowed and must outlive this. `block_size` is
  // the allocation unit of the backing filesystem.
  Space(InodeTable* table, Quota* quota, uint64_t block_size)
      : table_(table), quota_(quota), block_size_(block_size) {}

  Quota& quota() { return *quota_; }
  uint64_t block_size() const { return block_size_; }

  // Allocation change of `inode` since it was last charged; records the new
  // value. `fd` is any open fd of the inode, or -1 to use its O_PATH fd.
  int64_t TakeAllocationDelta(Inode& inode, int fd = -1);
  // Settles `reservation` against the allocation change of `inode` observed
  // now through `fd`, an open fd of that inode.
  void SettleAllocation(Inode& inode, int fd, Reservation& reservation);
  // Charges the allocation change of `inode` that needed no reservation
  // (space freed, or allocation observed after the fact).
  void ChargeAllocation(Inode& inode, int fd = -1) {
    quota_->Adjust(TakeAllocationDelta(inode, fd), 0);
  }

  // Reserves space for writing [offset, offset+len) of `fd`. May admit only
  // a prefix (like a kernel filesystem that fills up); returns the admitted
  // length, 0 for ENOSPC.
  size_t AdmitWrite(int fd, uint64_t offset, size_t len, Reservation* reservation);
  // Reserves space for allocating [offset, offset+len) of `fd`, all or
  // nothing as fallocate(2) is. False for ENOSPC.
  bool AdmitAllocation(int fd, uint64_t offset, uint64_t len, Reservation* reservation);

  // Whether [0, end of file) of `fd` is allocated throughout (unwritten and
  // delayed-allocation extents count, as in UnallocatedBytesInRange).
  Result<bool> IsDense(int fd) const;
  // Allocates the holes of [from, to) of `inode` through `fd`, an fd of it
  // open for writing, without changing its size: admitted all or nothing,
  // as fallocate(2) is. 0, ENOSPC, or fallocate's errno.
  int AllocateRange(Inode& inode, int fd, uint64_t from, uint64_t to);
  // AllocateRange from the end of file to `offset`: the gap a write,
  // fallocate or truncate reaching `offset` would leave. 0 when there is none.
  int AllocateGapTo(Inode& inode, int fd, uint64_t offset);

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
  InodeTable* const table_;
  Quota* const quota_;
  const uint64_t block_size_;
  std::atomic<uint64_t> overwrites_{0};
};

}  // namespace localvol::fuse
