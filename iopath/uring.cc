#include "iopath/uring.h"

#include <cerrno>
#include <utility>

namespace localvol::iopath {

Result<Uring> Uring::Create(unsigned entries, io_uring_params& params) {
  Uring uring;
  const int rc = io_uring_queue_init_params(entries, &uring.ring_, &params);
  if (rc < 0) {
    const int err = ErrnoFromUring(rc);
    std::string context = "io_uring_queue_init_params(entries=" + std::to_string(entries) +
                          ", cq_entries=" + std::to_string(params.cq_entries) + ")";
    if (err == ENOSYS || err == EPERM) {
      context +=
          " (io_uring is missing or disabled: check the kernel config and "
          "/proc/sys/kernel/io_uring_disabled)";
    }
    return Status::Error(err, std::move(context));
  }
  uring.valid_ = true;
  return uring;
}

Uring::Uring(Uring&& other) noexcept : ring_(other.ring_), valid_(other.valid_) {
  other.valid_ = false;
}

Uring& Uring::operator=(Uring&& other) noexcept {
  if (this != &other) {
    Reset();
    ring_ = other.ring_;
    valid_ = other.valid_;
    other.valid_ = false;
  }
  return *this;
}

void Uring::Reset() {
  if (valid_) io_uring_queue_exit(&ring_);
  valid_ = false;
}

Result<UringProbe> ProbeRing(Uring& ring) {
  UringProbe probe(io_uring_get_probe_ring(ring.get()));
  if (!probe) {
    return Status::Error(EOPNOTSUPP,
                         "io_uring_get_probe_ring: this kernel cannot report which io_uring "
                         "opcodes it supports (needs Linux 5.6 or later)");
  }
  return probe;
}

}  // namespace localvol::iopath
