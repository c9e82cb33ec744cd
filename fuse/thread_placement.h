// ThreadPlacement: on which CPUs a thread that serves FUSE requests runs.
//
// While requests come one at a time (a caller at queue depth 1, or creates),
// the caller sleeps while its request is served. Serving it on the caller's
// CPU spares two wake-ups of another CPU per request, one for the request and
// one for the reply, and waking an idle virtual CPU is the dearest step of a
// request there. While requests come in batches, the caller keeps its CPU
// busy, and the serving thread does better on any other CPU.
//
// So a serving thread pins itself to a target CPU (where its requests come
// from) while it takes about one request per wake-up, and goes back to every
// allowed CPU while it takes several. It decides once per window of requests,
// and follows the target if that moves. Two kinds of thread use it:
//  - a FUSE-over-io_uring queue's thread (fuse/kernel_ring.h): the target is
//    the queue's CPU, which the kernel picks as the caller's. A wake-up that
//    takes several requests is a batch.
//  - a /dev/fuse worker (fuse/filesystem.cc): the target is the CPU the
//    calling thread last ran on. Each small read or write counts as one
//    request per wake-up when it finds the disk idle (the engine runs it on
//    the worker), and as a batch when it joins other I/O; other requests
//    (creates among them) do not count.
// Measured on 2 vCPUs (docs/performance.md, sections 2 and 7). For the
// workers, most of the gain came from staying on one CPU rather than from
// sharing the caller's: the reply wakes the caller on an idle CPU, so the
// workers end up following it from window to window.
//
// Not thread-safe: one instance per serving thread, used by that thread only.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace localvol::fuse {

class ThreadPlacement {
 public:
  // Applies an affinity mask to the calling thread; false if it failed.
  using Apply = std::function<bool(const cpu_set_t&)>;

  // Requests observed per decision.
  static constexpr uint64_t kWindow = 1024;
  // Pin below this many requests per wake-up, unpin above the second; in
  // between the placement stays, so that it does not flap.
  static constexpr double kPinBelow = 1.5;
  static constexpr double kUnpinAbove = 2.5;
  // What a thread that takes one request per wake-up by construction (a
  // /dev/fuse worker) reports for a request that found other I/O in
  // progress: a batch, above kUnpinAbove. So a worker pins while fewer than
  // a quarter of its requests find company, and unpins above three quarters.
  static constexpr size_t kJoinedOthers = 3;

  // For a thread that may run on `allowed` (where it returns when unpinned).
  // It never pins to a CPU outside `allowed`, nor when `allowed` has one
  // CPU. `apply` defaults to sched_setaffinity of the calling thread.
  explicit ThreadPlacement(const cpu_set_t& allowed, Apply apply = nullptr);

  // The calling thread's current affinity, for `allowed`.
  static cpu_set_t CurrentAffinity();

  // After a wake-up of the thread that took `requests` requests (0: a
  // wake-up for something else, not counted). `target()` returns the CPU to
  // pin to, or -1 if it is not known; it is called only at the end of a
  // window that decides to pin, so it may be slow.
  template <typename Target>
  void Observe(size_t requests, Target&& target) {
    switch (Count(requests)) {
      case Decision::kNone:
        return;
      case Decision::kPin:
        PinTo(target());
        return;
      case Decision::kUnpin:
        Unpin();
        return;
    }
  }

  // Back to every allowed CPU now, whatever the window says (a thread that
  // inherited a pinned mask from the thread that created it).
  void Unpin();

  bool pinned() const { return pinned_cpu_ >= 0; }
  int pinned_cpu() const { return pinned_cpu_; }

 private:
  enum class Decision { kNone, kPin, kUnpin };
  Decision Count(size_t requests);
  void PinTo(int cpu);

  cpu_set_t allowed_;
  bool can_pin_;
  Apply apply_;
  int pinned_cpu_ = -1;
  uint64_t wakes_ = 0;
  uint64_t requests_ = 0;
};

// The CPU `tid` last ran on (field 39 of /proc/<tid>/stat), or -1 if the
// thread is gone or not visible from here.
int LastCpuOf(pid_t tid);

}  // namespace localvol::fuse
