#include "fuse/quota.h"

#include <cerrno>
#include <string>

#include "base/size.h"

namespace localvol::fuse {

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    quota_ = std::exchange(other.quota_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    inodes_ = std::exchange(other.inodes_, 0);
  }
  return *this;
}

void Reservation::Release() {
  if (quota_ != nullptr && (bytes_ != 0 || inodes_ != 0)) quota_->ReleaseClaim(bytes_, inodes_);
  quota_ = nullptr;
  bytes_ = 0;
  inodes_ = 0;
}

Quota::Quota(uint64_t capacity_bytes, uint64_t inode_limit, uint64_t used_bytes,
             uint64_t used_inodes)
    : capacity_bytes_(capacity_bytes),
      inode_limit_(inode_limit),
      used_bytes_(used_bytes),
      used_inodes_(used_inodes) {}

bool Quota::TryReserve(uint64_t bytes, uint64_t inodes, Reservation* out) {
  MutexLock lock(mu_);
  // Written as subtractions so that huge requests cannot overflow.
  const uint64_t committed_bytes = used_bytes_ + reserved_bytes_;
  if (committed_bytes > capacity_bytes_ || bytes > capacity_bytes_ - committed_bytes) return false;
  const uint64_t committed_inodes = used_inodes_ + reserved_inodes_;
  if (committed_inodes > inode_limit_ || inodes > inode_limit_ - committed_inodes) return false;
  reserved_bytes_ += bytes;
  reserved_inodes_ += inodes;
  out->Release();
  out->quota_ = this;
  out->bytes_ = bytes;
  out->inodes_ = inodes;
  return true;
}

void Quota::ReleaseClaim(uint64_t bytes, uint64_t inodes) {
  MutexLock lock(mu_);
  reserved_bytes_ -= bytes;
  reserved_inodes_ -= inodes;
}

void Quota::ApplyLocked(int64_t byte_delta, int64_t inode_delta) {
  // Usage never goes below zero: a negative delta larger than the usage can
  // only come from allocation the volume never saw (it predates a rescan).
  if (byte_delta < 0 && static_cast<uint64_t>(-byte_delta) > used_bytes_) {
    used_bytes_ = 0;
  } else {
    used_bytes_ += byte_delta;
  }
  if (inode_delta < 0 && static_cast<uint64_t>(-inode_delta) > used_inodes_) {
    used_inodes_ = 0;
  } else {
    used_inodes_ += inode_delta;
  }
}

void Quota::Settle(Reservation& reservation, int64_t byte_delta, uint64_t inodes_created) {
  {
    MutexLock lock(mu_);
    if (reservation.quota_ == this) {
      reserved_bytes_ -= reservation.bytes_;
      reserved_inodes_ -= reservation.inodes_;
    }
    ApplyLocked(byte_delta, static_cast<int64_t>(inodes_created));
  }
  reservation.quota_ = nullptr;
  reservation.bytes_ = 0;
  reservation.inodes_ = 0;
}

void Quota::Adjust(int64_t byte_delta, int64_t inode_delta) {
  MutexLock lock(mu_);
  ApplyLocked(byte_delta, inode_delta);
}

Status Quota::SetLimits(uint64_t capacity_bytes, uint64_t inode_limit) {
  MutexLock lock(mu_);
  if (capacity_bytes == 0) return Status::Error(EINVAL, "capacity must be greater than zero");
  if (inode_limit == 0) return Status::Error(EINVAL, "inode limit must be greater than zero");
  if (capacity_bytes < used_bytes_ + reserved_bytes_) {
    return Status::Error(ENOSPC, "cannot shrink capacity to " + std::to_string(capacity_bytes) +
                                     " bytes (" + FormatSize(capacity_bytes) +
                                     "): the volume already uses " +
                                     std::to_string(used_bytes_ + reserved_bytes_) +
                                     " bytes; free space first or choose a larger size");
  }
  if (inode_limit < used_inodes_ + reserved_inodes_) {
    return Status::Error(ENOSPC, "cannot lower the inode limit to " + std::to_string(inode_limit) +
                                     ": the volume already uses " +
                                     std::to_string(used_inodes_ + reserved_inodes_) +
                                     " inodes; delete files first or choose a larger limit");
  }
  capacity_bytes_ = capacity_bytes;
  inode_limit_ = inode_limit;
  return Status::Ok();
}

QuotaSnapshot Quota::Snapshot() const {
  MutexLock lock(mu_);
  return QuotaSnapshot{capacity_bytes_, used_bytes_,  reserved_bytes_,
                       inode_limit_,    used_inodes_, reserved_inodes_};
}

}  // namespace localvol::fuse
