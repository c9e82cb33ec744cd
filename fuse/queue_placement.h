// QueuePlacement: where the thread of one FUSE-over-io_uring queue runs.
//
// The kernel puts a request in the queue of the CPU its caller runs on. While
// requests come one at a time (a caller at queue depth 1, or creates), the
// caller sleeps while its request is served, so serving it on the same CPU
// spares two wake-ups of another CPU per request: one for the request, one
// for the reply. While requests come in batches, the caller keeps its CPU
// busy and the queue's thread does better on any other CPU.
//
// So the thread pins itself to its queue's CPU while it takes about one
// request per wake-up, and goes back to every allowed CPU while it takes
// several. Measured on 2 vCPUs (docs/performance.md, section 7): pinned always
// served 4 KiB QD1 writes up to 27% faster but QD32 reads 11-30% slower; this
// rule kept QD1 and creates 4-6% faster and QD32 unchanged.
//
// Not thread-safe: one instance per queue thread, used by that thread only.
#pragma once

#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace localvol::fuse {

class QueuePlacement {
 public:
  // Applies an affinity mask to the calling thread; false if it failed.
  using Apply = std::function<bool(const cpu_set_t&)>;

  // Requests observed per decision.
  static constexpr uint64_t kWindow = 1024;
  // Pin below this many requests per wake-up, unpin above the second; in
  // between the placement stays, so that it does not flap.
  static constexpr double kPinBelow = 1.5;
  static constexpr double kUnpinAbove = 2.5;

  // For the queue of `cpu`, whose thread may run on `allowed` (its affinity
  // when it started, which it returns to when unpinned). The thread never
  // pins if `cpu` is not in `allowed` or `allowed` has one CPU. `apply`
  // defaults to sched_setaffinity of the calling thread.
  QueuePlacement(unsigned cpu, const cpu_set_t& allowed, Apply apply = nullptr);

  // The calling thread's current affinity, for `allowed`.
  static cpu_set_t CurrentAffinity();

  // After a wake-up of the queue's thread that took `requests` requests
  // (0: a wake-up for something else, not counted).
  void Observe(size_t requests);

  bool pinned() const { return pinned_; }

 private:
  void Set(bool pin);

  unsigned cpu_;
  cpu_set_t allowed_;
  bool can_pin_;
  Apply apply_;
  bool pinned_ = false;
  uint64_t wakes_ = 0;
  uint64_t requests_ = 0;
};

}  // namespace localvol::fuse
