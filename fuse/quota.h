// Quota: the byte and inode accounting of one volume.
//
// Units: bytes are allocated bytes (st_blocks * 512, as du(1) counts them);
// inodes are inodes below the volume root. The FUSE layer is the only
// enforcement (no kernel quota backs it), so every operation that can allocate
// first reserves its worst case here and settles to what it really allocated
// afterwards. A reservation counts against the limit while the operation is in
// flight, so concurrent writers can never together exceed the capacity.
//
// Plain object, no I/O. Thread-safe: every method takes the internal mutex.
#pragma once

#include <cstdint>
#include <utility>

#include "base/status.h"
#include "base/thread_annotations.h"

namespace localvol::fuse {

struct QuotaSnapshot {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t reserved_bytes = 0;
  uint64_t inode_limit = 0;
  uint64_t used_inodes = 0;
  uint64_t reserved_inodes = 0;
};

class Quota;

// Move-only claim on bytes and/or inodes; released on destruction unless
// settled. Must not outlive its Quota.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept { *this = std::move(other); }
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  uint64_t bytes() const { return bytes_; }
  uint64_t inodes() const { return inodes_; }
  // Gives the claim back unused.
  void Release();

 private:
  friend class Quota;
  Quota* quota_ = nullptr;
  uint64_t bytes_ = 0;
  uint64_t inodes_ = 0;
};

class Quota {
 public:
  Quota(uint64_t capacity_bytes, uint64_t inode_limit, uint64_t used_bytes, uint64_t used_inodes);

  // Claims `bytes` and `inodes` if used + reserved + claim stays within both
  // limits. Returns false (claiming nothing) otherwise.
  bool TryReserve(uint64_t bytes, uint64_t inodes, Reservation* out) EXCLUDES(mu_);

  // Replaces `reservation` by what the operation really did, atomically:
  // `byte_delta` is the observed change in allocation (may be negative, may
  // exceed the reservation if the filesystem allocated metadata), and
  // `inodes_created` the inodes it created (at most reservation.inodes()).
  void Settle(Reservation& reservation, int64_t byte_delta, uint64_t inodes_created) EXCLUDES(mu_);

  // Records a change that needed no reservation: space or inodes freed, or
  // allocation observed after the fact (a file closed, an inode forgotten).
  void Adjust(int64_t byte_delta, int64_t inode_delta) EXCLUDES(mu_);

  // Changes the limits. Shrinking below current usage fails with ENOSPC and a
  // message naming the usage; nothing changes then.
  Status SetLimits(uint64_t capacity_bytes, uint64_t inode_limit) EXCLUDES(mu_);

  QuotaSnapshot Snapshot() const EXCLUDES(mu_);

 private:
  friend class Reservation;
  void ReleaseClaim(uint64_t bytes, uint64_t inodes) EXCLUDES(mu_);
  void ApplyLocked(int64_t byte_delta, int64_t inode_delta) REQUIRES(mu_);

  mutable Mutex mu_;  // leaf lock: nothing else is acquired while it is held
  uint64_t capacity_bytes_ GUARDED_BY(mu_);
  uint64_t inode_limit_ GUARDED_BY(mu_);
  uint64_t used_bytes_ GUARDED_BY(mu_);
  uint64_t used_inodes_ GUARDED_BY(mu_);
  uint64_t reserved_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t reserved_inodes_ GUARDED_BY(mu_) = 0;
};

}  // namespace localvol::fuse
