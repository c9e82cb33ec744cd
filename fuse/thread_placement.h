// ThreadPlacement: on which CPUs a thread that serves FUSE requests runs.
//
// While requests come one at a time (a caller at queue depth 1), the caller
// sleeps while its request is served. Serving it on the caller's
// CPU spares two wake-ups of another CPU per request, one for the request and
// one for the reply, and waking an idle virtual CPU is the dearest step of a
// request there. While requests come in batches, the caller keeps its CPU
// busy, and the serving thread does better on any other CPU.
//
// So a serving thread pins itself to a target CPU (where its requests come
// from) while it takes about one request per wake-up, and takes a batch
// placement while it takes several: one CPU of its own, when the threads of
// a group are spread over the allowed CPUs and most of the batched requests
// are of the kind that gains from it, else every allowed CPU. It decides
// once per window of requests, and follows the target if that moves. Two
// kinds of thread use it:
//  - a FUSE-over-io_uring queue's thread (fuse/kernel_ring.h): the target is
//    the queue's CPU, which the kernel picks as the caller's. A wake-up that
//    takes several requests is a batch. In batches it runs on every allowed
//    CPU.
//  - a /dev/fuse worker (fuse/filesystem.cc): the target is one CPU for
//    all of the volume's workers, the one the caller last ran on when the
//    first of them decided (Filesystem::FollowCpu); after batches the next
//    lone caller picks again. Each small read or write counts as one request
//    per wake-up when it finds the disk idle (the engine runs it on the
//    worker), and as a batch when it joins other I/O. In batches of small
//    requests the workers of a volume are spread evenly over the allowed
//    CPUs (SpreadCpu): any idle worker takes the next request, so a CPU that
//    another task keeps busy only leaves its workers fewer requests. Large
//    reads and writes (those the engine never runs on the worker) and all
//    other requests count as batches not to spread, so that they leave the
//    workers on every CPU: spreading them or pinning them to one CPU gained
//    those requests nothing.
// Why (docs/performance.md, sections 2, 3 and 7): at queue depth 1 the gain
// is in the workers being together on one CPU rather than on the caller's,
// since the reply wakes the caller on an idle CPU and workers that each
// chased the caller ended up split across CPUs; in batches, an even spread
// beats leaving the workers to the scheduler. A heuristic tuned on a 2-CPU
// machine: the agent's fuse.worker_placement: off turns it off.
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
  // Follow the target below this many requests per wake-up, take a batch
  // placement above the second; in between the placement stays, so that it
  // does not flap.
  static constexpr double kFollowBelow = 1.5;
  static constexpr double kBatchAbove = 2.5;
  // What a thread that takes one request per wake-up by construction (a
  // /dev/fuse worker) reports for a request that found other I/O in
  // progress: a batch, above kBatchAbove. So a worker follows its target
  // while fewer than a quarter of its requests find company, and takes a
  // batch placement above three quarters.
  static constexpr size_t kJoinedOthers = 3;

  // A batch placement on every allowed CPU.
  static constexpr int kAnyCpu = -1;

  // For a thread that may run on `allowed`. In batches to spread (Observe)
  // it runs on `batch_cpu` alone if that is one of `allowed`, in others on
  // every allowed CPU. It never pins to a CPU outside `allowed`, nor when
  // `allowed` has one CPU. `apply` defaults to sched_setaffinity of the
  // calling thread.
  explicit ThreadPlacement(const cpu_set_t& allowed, int batch_cpu = kAnyCpu,
                           Apply apply = nullptr);

  // The calling thread's current affinity, for `allowed`.
  static cpu_set_t CurrentAffinity();

  // After a wake-up of the thread that took `requests` requests (0: a
  // wake-up for something else, not counted). `target()` returns the CPU to
  // pin to, or -1 if it is not known; it is called only at the end of a
  // window that decides to pin, so it may be slow. `spread`: whether these
  // requests, in batches, do better with the thread on its batch CPU than on
  // every allowed CPU; a window spreads if most of its requests do.
  template <typename Target>
  void Observe(size_t requests, Target&& target, bool spread = true) {
    switch (Count(requests, spread)) {
      case Decision::kNone:
        return;
      case Decision::kFollow:
        PinTo(target());
        return;
      case Decision::kBatch:
        PlaceForBatches();
        return;
    }
  }

  // Back to every allowed CPU now, whatever the window says (a thread that
  // inherited a pinned mask from the thread that created it).
  void Unpin();

  // The CPU the thread is pinned to, following its target or for batches;
  // -1 while it runs on every allowed CPU.
  bool pinned() const { return pinned_cpu_ >= 0; }
  int pinned_cpu() const { return pinned_cpu_; }
  // Whether it has a batch placement (every allowed CPU from the start, or
  // its batch CPU), rather than following its target.
  bool batched() const { return batched_; }

 private:
  enum class Decision { kNone, kFollow, kBatch };
  Decision Count(size_t requests, bool spread);
  void PinTo(int cpu);
  void PlaceForBatches();
  bool ApplyOnly(int cpu);  // the thread on `cpu` alone

  cpu_set_t allowed_;
  bool can_pin_;
  int batch_cpu_;
  Apply apply_;
  int pinned_cpu_ = -1;
  bool batched_ = true;
  int batch_target_ = kAnyCpu;  // the batch placement the last window chose
  uint64_t wakes_ = 0;
  uint64_t requests_ = 0;
  uint64_t unspread_ = 0;  // requests observed with `spread` false
};

// The CPU the `ordinal`-th thread of a group takes to spread the group
// evenly over `allowed`: the allowed CPUs in turn, from the lowest. -1 if
// `allowed` is empty.
int SpreadCpu(const cpu_set_t& allowed, uint64_t ordinal);

// The CPU `tid` last ran on (field 39 of /proc/<tid>/stat), or -1 if the
// thread is gone or not visible from here.
int LastCpuOf(pid_t tid);

}  // namespace localvol::fuse
