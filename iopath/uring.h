// Owner types for the liburing handles of the engine and of fuse/kernel_ring.cc, and
// the one conversion from liburing's negative error codes to a positive errno.
//
// Uring owns one `struct io_uring` (its fd and mappings); UringProbe owns the
// result of io_uring_get_probe_ring(). Both are move-only and release their
// handle in the destructor. Neither is thread-safe by itself: the engine
// documents who may touch which half of the ring.
#pragma once

#include <liburing.h>

#include <memory>
#include <string>

#include "base/status.h"

namespace localvol::iopath {

// liburing and cqe->res report failure as -errno. Everything above iopath
// speaks positive errno (IoResult::err, Status::err). This is the one place the
// sign flips; call it only on a value that is known to be negative.
constexpr int ErrnoFromUring(int negative_res) { return -negative_res; }

// ThreadSanitizer cannot see that the ring orders memory: everything a thread
// wrote to a request before io_uring_submit is visible to the thread that
// reaps its CQE. These mark that handoff (no-ops in other builds).
#if defined(__SANITIZE_THREAD__)
#define LV_IOPATH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LV_IOPATH_TSAN 1
#endif
#endif
#ifdef LV_IOPATH_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void MarkHandedToRing(void* user_data) { __tsan_release(user_data); }
inline void MarkReapedFromRing(void* user_data) { __tsan_acquire(user_data); }
#else
inline void MarkHandedToRing(void*) {}
inline void MarkReapedFromRing(void*) {}
#endif

class Uring {
 public:
  // io_uring_queue_init_params(entries, params). `params` carries the setup
  // flags in and the kernel's answer (sq/cq sizes, features) out. Fails with
  // the kernel's errno and a context naming the call and the sizes.
  static Result<Uring> Create(unsigned entries, io_uring_params& params);

  Uring() = default;
  Uring(Uring&& other) noexcept;
  Uring& operator=(Uring&& other) noexcept;
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;
  ~Uring() { Reset(); }

  bool valid() const { return valid_; }
  io_uring* get() { return &ring_; }
  unsigned features() const { return ring_.features; }

 private:
  void Reset();

  // struct io_uring holds the ring fd and pointers into the kernel's mmapped
  // rings, never into itself, so moving it is a plain copy plus disarming the
  // source.
  io_uring ring_{};
  bool valid_ = false;
};

struct UringProbeDeleter {
  void operator()(io_uring_probe* probe) const { io_uring_free_probe(probe); }
};
using UringProbe = std::unique_ptr<io_uring_probe, UringProbeDeleter>;

// io_uring_get_probe_ring(). Fails (EOPNOTSUPP) on kernels without
// IORING_REGISTER_PROBE (< 5.6).
Result<UringProbe> ProbeRing(Uring& ring);

}  // namespace localvol::iopath
