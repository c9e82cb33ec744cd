// Engine: the io_uring data path under every volume.
//
// Threading model
//   * Any number of submitter threads (the FUSE workers) call Submit(). Submit
//     appends to the request's IoQueue and, under the engine mutex, moves
//     queued requests into the ring; the io_uring_enter follows without it,
//     made by this thread or left to one that is entering already. It never
//     waits for the disk; it only blocks briefly on the mutex.
//     SubmitOrRun() is the one exception: on an idle disk it does the I/O on
//     the caller's thread.
//   * One completion thread, owned by the engine, reaps CQEs. For each it
//     either continues the request (short read/write, -EAGAIN) or calls
//     IoRequest::Complete() with no engine lock held, then refills the ring
//     from the queues.
//   * The SQ is touched only under `mu_`; the CQ only by the completion thread.
//
// Queues, limits and fair sharing
//   Every volume gets its own IoQueue with its IoLimits (iopath/io_limits.h).
//   Requests wait in their queue until the dispatcher moves them into the ring,
//   keeping at most `max_in_flight` requests there. The dispatcher asks the
//   Scheduler (iopath/scheduler.h) which queue goes next: a queue over its
//   limits is skipped until its buckets allow its oldest request, and among the
//   others the one furthest behind its weighted share goes first. A throttled
//   request holds neither a ring slot nor the submitter's thread: it is just
//   queued, and the completion thread wakes when it becomes eligible.
//   One engine is one disk: the fair share is of this engine's ring.
//
// Failure: Create() fails with a Status naming the missing io_uring feature or
// opcode. Submit() never fails; errors arrive through IoRequest::Complete(),
// including ETIMEDOUT for a request that waited in its queue longer than
// EngineOptions::max_queue_wait_ns.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "iopath/io_limits.h"
#include "iopath/io_request.h"
#include "iopath/io_stats.h"
#include "iopath/scheduler.h"

namespace localvol::iopath {

class Engine;

// One volume's queue in front of the ring. Created by Engine::CreateQueue().
// The destructor lifts the queue's limits, waits until every request submitted
// through this queue has completed, then detaches the queue from the engine.
// Thread-safe.
class IoQueue {
 public:
  ~IoQueue();
  IoQueue(const IoQueue&) = delete;
  IoQueue& operator=(const IoQueue&) = delete;

  const std::string& name() const { return name_; }
  const IoQueueStats& stats() const { return stats_; }

  // Replaces the queue's limits and weight, live: the next dispatch decision
  // uses them. Credit already earned is kept up to the new bucket sizes; a
  // limit that was off starts with a full burst. Fails with EINVAL (see
  // ValidateIoLimits) and changes nothing if `limits` is invalid.
  Status SetLimits(const IoLimits& limits);
  IoLimits limits() const;

 private:
  friend class Engine;
  IoQueue(Engine* engine, std::string name);

  Engine* engine_;
  const std::string name_;
  IoQueueStats stats_;
  // Guarded by the engine mutex (Engine::Impl::mu_ in engine.cc).
  IoRequest* head_ = nullptr;  // requests waiting for the dispatcher, FIFO via next_in_queue
  IoRequest* tail_ = nullptr;
  uint64_t outstanding_ = 0;  // queued + in the ring + completing (until Complete returns)
  bool registered_ = false;
  IoLimits limits_;
  std::unique_ptr<Flow> flow_;  // the queue as the scheduler sees it
};

inline constexpr uint64_t kDefaultContendedInFlightCost = 64 << 10;

struct EngineOptions {
  unsigned ring_entries = 256;   // SQ size; the CQ is twice this
  unsigned max_in_flight = 256;  // requests in the ring at once, <= ring_entries
  // A request still queued this long after Submit() (throttled, or starved by
  // an overloaded disk) fails with ETIMEDOUT instead of waiting on. Checked
  // every 100 ms.
  uint64_t max_queue_wait_ns = 30'000'000'000;
  // Fair-sharing cost of a request: this many bytes plus its length (see
  // iopath/scheduler.h for why).
  uint64_t op_cost_bytes = kDefaultOpCostBytes;
  // While two or more queues have requests outstanding (and for 50 ms after),
  // the ring takes more requests only from queues with none in it once it
  // holds this much cost; 0: no cap. The device serves what is in the ring in
  // its own order, so a victim's small read waits behind every large write
  // already dispatched; the cap keeps that backlog short and lets the
  // scheduler decide who goes next, while a queue doing one request at a time
  // is never held back by it. A queue alone is not capped (docs/isolation.md
  // has the trade-off measured).
  uint64_t contended_in_flight_cost = kDefaultContendedInFlightCost;
  // kFifo turns fair sharing off: arrival order across volumes and no
  // in-flight cap (contended_in_flight_cost is ignored). Limits still apply.
  IoPolicy policy = IoPolicy::kFair;
};

class Engine {
 public:
  // Sets up the ring, checks the features and opcodes iopath relies on, and
  // starts the completion thread. Fails with a clear Status if the kernel
  // lacks io_uring or any of them.
  static Result<std::unique_ptr<Engine>> Create(const EngineOptions& options = {});

  // Stops the completion thread after every outstanding request has completed.
  // All IoQueues must have been destroyed first.
  ~Engine();

  // Creates a volume's queue, unlimited and with the default weight (see
  // IoQueue::SetLimits). The engine must outlive it.
  std::unique_ptr<IoQueue> CreateQueue(std::string name);

  // Takes ownership of `request` and queues it on `queue`. Never blocks on
  // I/O. Complete() is always called exactly once, possibly before Submit
  // returns (on the completion thread, never on the caller's thread).
  void Submit(IoQueue& queue, std::unique_ptr<IoRequest> request);

  // Like Submit(), except for a read or write of at most 64 KiB that finds
  // the disk idle (nothing in flight or waiting on this engine) and that the
  // queue's limits admit at once: that one runs on the calling thread
  // (pread/pwrite, with the same continuation and error rules as the ring)
  // and is completed there, before this returns. It is counted in flight
  // meanwhile, so requests that arrive then go to the ring. This saves the
  // hand-off to the completion thread (docs/performance.md, section 2); the
  // price is that the caller waits for the disk, so call it only from
  // threads that may (the FUSE workers, and a FUSE ring queue's thread when
  // nothing else waits for it). Returns whether the request ran here, that
  // is, found the disk idle.
  bool SubmitOrRun(IoQueue& queue, std::unique_ptr<IoRequest> request);
  // The largest request SubmitOrRun() runs on the caller's thread. The
  // hand-off it saves is a fixed cost per request, which matters for small
  // requests; a large one would hold the caller for its whole transfer, and
  // the FUSE worker it holds could be fetching the next request instead
  // (docs/performance.md, section 2).
  static constexpr uint64_t kRunHereMaxBytes = 64 << 10;

  // Whether the engine shares the disk fairly between volumes now: the fair
  // policy, with two or more queues. I/O that bypasses the engine (kernel
  // FUSE passthrough reads) escapes that sharing: the scheduler cannot see
  // it, so the volumes it protects lose their share (docs/isolation.md).
  bool SharedFairly() const;

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  void Unregister(IoQueue& queue);
  friend class IoQueue;
  friend class EngineTestPeer;  // iopath/engine_testing.h: fault injection for tests
  std::unique_ptr<Impl> impl_;
};

}  // namespace localvol::iopath
