#include "fuse/space.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

namespace localvol::fuse {

namespace {

uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Result<uint64_t> UnallocatedBytesInRange(int fd, uint64_t offset, uint64_t len, uint64_t block) {
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

int64_t Space::TakeAllocationDelta(Inode& inode, int fd) {
  std::optional<PathFd> pinned;
  if (fd < 0) {
    auto p = table_->Pin(inode);
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

void Space::SettleAllocation(Inode& inode, int fd, Reservation& reservation) {
  quota_->Settle(reservation, TakeAllocationDelta(inode, fd), 0);
}

size_t Space::AdmitWrite(int fd, uint64_t offset, size_t len, Reservation* reservation) {
  const uint64_t block = block_size_;
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
  const uint64_t free_blocks =
      committed >= q.capacity_bytes ? 0 : (q.capacity_bytes - committed) / block;
  const uint64_t prefix_end = AlignDown(offset, block) + free_blocks * block;
  if (prefix_end <= offset) return 0;
  const size_t prefix = static_cast<size_t>(std::min<uint64_t>(len, prefix_end - offset));
  if (!quota_->TryReserve(free_blocks * block, 0, reservation)) return 0;
  return prefix;
}

bool Space::AdmitAllocation(int fd, uint64_t offset, uint64_t len, Reservation* reservation) {
  const uint64_t block = block_size_;
  const uint64_t worst = AlignUp(offset + len, block) - AlignDown(offset, block);
  if (quota_->TryReserve(worst, 0, reservation)) return true;
  auto exact = UnallocatedBytesInRange(fd, offset, len, block);
  return exact.ok() && quota_->TryReserve(*exact, 0, reservation);
}

Result<bool> Space::IsDense(int fd) const {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::FromErrno("fstat");
  if (st.st_size == 0) return true;
  auto holes = UnallocatedBytesInRange(fd, 0, static_cast<uint64_t>(st.st_size), block_size_);
  if (!holes.ok()) return holes.status();
  return *holes == 0;
}

int Space::AllocateRange(Inode& inode, int fd, uint64_t from, uint64_t to) {
  if (to <= from) return 0;
  Reservation reservation;
  if (!AdmitAllocation(fd, from, to - from, &reservation)) return ENOSPC;
  const int rc = RetryEintr([&] {
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                     static_cast<off_t>(to - from));
  });
  const int err = rc != 0 ? errno : 0;
  SettleAllocation(inode, fd, reservation);
  return err;
}

int Space::AllocateGapTo(Inode& inode, int fd, uint64_t offset) {
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  return AllocateRange(inode, fd, static_cast<uint64_t>(st.st_size), offset);
}

// Counting first and reading dense_end second (both sequentially consistent)
// pairs with FreeingGuard, which clears dense_end first and reads the count
// second: either this write sees the cleared prefix, or the guard waits for it.
// The first, uncounted look only spares other writes the count.
bool Space::BeginOverwrite(Inode& inode, uint64_t end) {
  if (end > inode.dense_end.load(std::memory_order_relaxed)) return false;
  inode.overwrites_in_flight.fetch_add(1);
  if (end <= inode.dense_end.load()) {
    overwrites_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  EndOverwrite(inode);
  return false;
}

void Space::EndOverwrite(Inode& inode) {
  if (inode.overwrites_in_flight.fetch_sub(1) == 1) inode.overwrites_in_flight.notify_all();
}

void Space::CountSettledWrite(Inode& inode, int fd) {
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

}  // namespace localvol::fuse
