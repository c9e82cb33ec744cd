// Engine: the io_uring data path. engine.h states the contract; this file
// holds the detail. Measured costs of these choices: docs/performance.md,
// sections 2 and 3.
//
// Threading model
//   * Submitters (FUSE workers, or a Complete() that chains work) call
//     Submit(). Under mu_ they queue the request on its IoQueue and run
//     Dispatch(), which moves admitted requests into SQEs and publishes them;
//     then, with mu_ released, Enter() submits them. Nothing here waits for
//     the disk, except SubmitOrRun()'s run on the caller (RunHere).
//   * The completion thread ("iopath-cq", CompletionLoop) owns the CQ. It
//     waits for CQEs without mu_, decides for each whether the request is
//     finished or goes back to the ring (ApplyCqe), refills the ring under
//     mu_, and calls Complete() with no lock held.
//   * The SQ half of the ring is touched only under mu_, the CQ half only by
//     the completion thread. io_uring_enter runs outside mu_, because for a
//     direct read or write the kernel issues the bio inside it; liburing
//     keeps the halves independent, and the completion thread's timed wait
//     uses IORING_FEAT_EXT_ARG (checked at startup), never a timeout SQE.
//   * One thread at a time enters to submit (Enter()); the others leave
//     their published SQEs to it.
//   * Many threads submit, so the ring has neither SINGLE_ISSUER nor
//     DEFER_TASKRUN; the kernel may run brief completion task_work on a
//     submitting thread.
//
// Life of a request
//   queued (IoQueue::head_; the queue's oldest request is its flow's head in
//   the Scheduler) -> admitted by Scheduler::PickNext -> in flight (holds one
//   of max_in_flight slots: in an SQE, or on resume_ waiting for one) ->
//   finished (slot released) -> Complete() returns -> deleted ->
//   IoQueue::outstanding_ decremented. The last step comes after Complete()
//   so that ~IoQueue cannot return while a Complete() for it still runs.
//   Each request completes exactly once, whatever fails on the way.
//
// Throttling and the wait bound
//   Dispatch() stops taking new requests when the Scheduler has none eligible,
//   and records when the earliest throttled flow becomes eligible (wake_at_ns_).
//   The completion thread bounds its wait by that time, so it is the one that
//   dispatches throttled requests when they become eligible; a submitter whose
//   throttled request becomes eligible before the completion thread would next
//   wake posts a wake-up NOP. Every kOverdueCheckIntervalNs the completion
//   thread fails queued requests older than max_queue_wait_ns with ETIMEDOUT.
//   Nothing waits on a thread: a throttled request is only a queue entry.
//
// Shutdown
//   ~IoQueue waits on idle_cv_ until the queue's outstanding count is 0 (every
//   Complete() has returned), then unregisters it. ~Engine sets stopping_,
//   wakes the completion thread with a NOP SQE whose user_data is null, and
//   joins it. The thread exits once stopping_ is set and no request is
//   outstanding; its wait also times out every kIdleWakeup, so a NOP that
//   could not be queued delays shutdown by at most that long. The ring is
//   closed after the join.
#include "iopath/engine.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "base/logging.h"
#include "base/thread_annotations.h"
#include "iopath/clock.h"
#include "iopath/engine_testing.h"
#include "iopath/uring.h"

namespace localvol::iopath {
namespace {

// Consecutive -EAGAIN/-EINTR results (without progress) before giving up.
constexpr uint32_t kMaxAgainRetries = 100;

// io_uring_prep_read/write take a 32-bit length and Linux moves at most
// MAX_RW_COUNT (2 GiB - 4 KiB) per call; longer requests are continued.
constexpr uint64_t kMaxBytesPerSqe = uint64_t{1} << 30;

// CQEs reaped per completion-loop iteration.
constexpr unsigned kCqeBatch = 64;

// Completion-thread wait bounds: the idle one backs up the shutdown NOP, the
// short one is used while published SQEs wait for a retried io_uring_submit.
constexpr long kIdleWakeupNs = 100'000'000;         // 100 ms
constexpr long kSubmitRetryIntervalNs = 1'000'000;  // 1 ms
// How often queued requests are checked against max_queue_wait_ns.
constexpr uint64_t kOverdueCheckIntervalNs = 100'000'000;  // 100 ms

struct RequiredFeature {
  unsigned bit;
  const char* name;
  const char* why;
};
constexpr RequiredFeature kRequiredFeatures[] = {
    {IORING_FEAT_NODROP, "IORING_FEAT_NODROP", "completions must never be dropped"},
    {IORING_FEAT_SUBMIT_STABLE, "IORING_FEAT_SUBMIT_STABLE",
     "submitted requests must not depend on SQE memory"},
    {IORING_FEAT_EXT_ARG, "IORING_FEAT_EXT_ARG",
     "the completion thread waits with a timeout without using an SQE"},
};

struct RequiredOpcode {
  int op;
  const char* name;
};
constexpr RequiredOpcode kRequiredOpcodes[] = {
    {IORING_OP_READ, "READ"},           {IORING_OP_WRITE, "WRITE"}, {IORING_OP_FSYNC, "FSYNC"},
    {IORING_OP_FALLOCATE, "FALLOCATE"}, {IORING_OP_NOP, "NOP"},
};

// True on the 1st, 2nd, 4th, 8th, ... call: for logs about a condition that
// may repeat for every I/O.
bool ShouldLog(std::atomic<uint64_t>& occurrences) {
  const uint64_t n = occurrences.fetch_add(1, std::memory_order_relaxed) + 1;
  return (n & (n - 1)) == 0;
}

// Intrusive FIFO of requests linked through IoRequest::next_in_queue.
struct RequestList {
  IoRequest* head = nullptr;
  IoRequest* tail = nullptr;

  bool empty() const { return head == nullptr; }
  void PushBack(IoRequest* r) {
    r->next_in_queue = nullptr;
    if (tail) {
      tail->next_in_queue = r;
    } else {
      head = r;
    }
    tail = r;
  }
  IoRequest* PopFront() {
    IoRequest* r = head;
    head = r->next_in_queue;
    if (!head) tail = nullptr;
    r->next_in_queue = nullptr;
    return r;
  }
  void Append(RequestList& other) {
    if (other.empty()) return;
    if (tail) {
      tail->next_in_queue = other.head;
    } else {
      head = other.head;
    }
    tail = other.tail;
    other.head = other.tail = nullptr;
  }
};

enum class CqeVerdict { kFinished, kResubmit };

// Applies one CQE (`res` as io_uring reports it) to `r`'s progress. Returns
// kResubmit when the rest of the request must go back to the ring; otherwise
// stores the final result in *result. Sets *again_exhausted when the request
// ran out of -EAGAIN retries. Pure bookkeeping, no I/O.
//
// res is -errno on failure; ErrnoFromUring() (uring.h) flips the sign in one
// place and IoResult::err is positive from then on.
//   * Short read (0 < res < remaining): continued at offset + done. A read
//     returning 0 is end of file: finished with the bytes read so far.
//   * Short write: continued. A write whose later chunk fails finishes as a
//     short write {done, 0}, as write(2) would; one whose first chunk fails
//     finishes with the error. A write returning 0 with bytes left finishes
//     with {done, 0} if some bytes went through, else with EIO.
//   * A read that fails after some bytes finishes with {done, err}: a short
//     read without error would read as end of file to FUSE, hiding the error.
//   * fsync, fdatasync, fallocate finish with bytes = 0.
//
// EAGAIN policy: the kernel normally turns "would block" into a blocking
// retry in io-wq, so -EAGAIN (or -EINTR) here is a transient refusal (memory
// pressure, a non-blocking backing fd). The request goes straight back to the
// ring, up to kMaxAgainRetries times in a row without progress; any progress
// resets the count. After that it finishes with EIO, not EAGAIN: the
// application above FUSE did a blocking read or write, and EAGAIN on a
// blocking descriptor is a contract violation that programs mishandle (busy
// loops, or "no data yet"); EIO says what happened: the I/O could not be
// done. Exhaustion is logged at warn, rate-limited.
// -ECANCELED is retried the same way. The engine never cancels a request; the
// kernel does when the thread whose io_uring_enter issued it exits while it
// still waits in that thread's io-wq (io-wq work is tied to the issuing task,
// and any Submit() caller may be the one that enters; the submitting threads
// of EngineConcurrency.ManyRequestsFromTwoThreadsAcrossQueuesCompleteExactlyOnce
// exit right after their last Submit()). Such a request never started, so
// issuing it again from the completion thread is safe, O_APPEND included.
CqeVerdict ApplyCqe(IoRequest& r, int res, IoResult* result, bool* again_exhausted) {
  if (res < 0) {
    int err = ErrnoFromUring(res);
    if (err == EAGAIN || err == EINTR || err == ECANCELED) {
      if (r.again_retries < kMaxAgainRetries) {
        ++r.again_retries;
        return CqeVerdict::kResubmit;
      }
      *again_exhausted = true;
      err = EIO;  // see "EAGAIN policy" above
    }
    if (r.op == IoOp::kWrite && r.done_bytes > 0) {
      *result = IoResult{r.done_bytes, 0};  // short write, as write(2) reports it
    } else {
      *result = IoResult{r.done_bytes, err};
    }
    return CqeVerdict::kFinished;
  }

  switch (r.op) {
    case IoOp::kFsync:
    case IoOp::kFdatasync:
    case IoOp::kFallocate:
      *result = IoResult{0, 0};
      return CqeVerdict::kFinished;
    case IoOp::kRead:
    case IoOp::kWrite:
      break;
    default:  // an IoOp value outside the enum: prepared as a NOP, refused here
      *result = IoResult{0, EINVAL};
      return CqeVerdict::kFinished;
  }

  const uint64_t remaining = r.len - r.done_bytes;
  r.done_bytes += std::min<uint64_t>(static_cast<uint64_t>(res), remaining);
  if (res > 0) r.again_retries = 0;
  if (r.done_bytes == r.len) {
    *result = IoResult{r.done_bytes, 0};
    return CqeVerdict::kFinished;
  }
  if (res == 0) {
    if (r.op == IoOp::kRead) {
      *result = IoResult{r.done_bytes, 0};  // end of file
    } else {
      *result = r.done_bytes > 0 ? IoResult{r.done_bytes, 0} : IoResult{0, EIO};
    }
    return CqeVerdict::kFinished;
  }
  return CqeVerdict::kResubmit;  // short transfer: continue at offset + done
}

// After the last moment two queues had requests outstanding, the ring stays
// capped this long: a queue doing one request at a time is idle between
// requests, and must not find the ring flooded each time it comes back.
constexpr uint64_t kContentionMemoryNs = 50'000'000;  // 50 ms

Demand DemandOf(const IoRequest& r) {
  const bool data = r.op == IoOp::kRead || r.op == IoOp::kWrite;
  return Demand{r.op == IoOp::kRead ? IoDirection::kRead : IoDirection::kWrite,
                data ? r.len : uint64_t{0}, r.submit_ns};
}

void CountCompletion(IoQueueStats& stats, IoOp op, const IoResult& result, uint64_t latency_ns) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  stats.latency_count[LatencyBucket(latency_ns)].fetch_add(1, kRelaxed);
  stats.latency_sum_ns.fetch_add(latency_ns, kRelaxed);
  switch (op) {
    case IoOp::kRead:
      stats.read_ops.fetch_add(1, kRelaxed);
      stats.read_bytes.fetch_add(result.bytes, kRelaxed);
      break;
    case IoOp::kWrite:
      stats.write_ops.fetch_add(1, kRelaxed);
      stats.write_bytes.fetch_add(result.bytes, kRelaxed);
      break;
    default:
      stats.other_ops.fetch_add(1, kRelaxed);
      break;
  }
  if (result.err != 0) stats.errors.fetch_add(1, kRelaxed);
}

}  // namespace

struct Engine::Impl {
  Impl(Uring ring, const EngineOptions& options, unsigned max_in_flight, EngineTestHooks hooks)
      : ring_(std::move(ring)),
        max_in_flight_(max_in_flight),
        max_queue_wait_ns_(options.max_queue_wait_ns),
        op_cost_bytes_(options.op_cost_bytes),
        contended_in_flight_cost_(
            options.policy == IoPolicy::kFair ? options.contended_in_flight_cost : 0),
        clock_(SteadyClock()),
        max_bytes_per_sqe_(hooks.max_bytes_per_sqe > 0
                               ? std::min<uint64_t>(hooks.max_bytes_per_sqe, kMaxBytesPerSqe)
                               : kMaxBytesPerSqe),
        hooks_(std::move(hooks)),
        log_(GetLogger("iopath")),
        scheduler_(SchedulerOptions{options.op_cost_bytes, options.policy}),
        fair_(options.policy == IoPolicy::kFair) {}

  // Sets up the ring, checks what iopath relies on, starts the completion thread.
  static Result<std::unique_ptr<Impl>> Create(const EngineOptions& options, EngineTestHooks hooks);

  void RegisterQueue(IoQueue& queue) EXCLUDES(mu_);
  void Unregister(IoQueue& queue) EXCLUDES(mu_);
  void SetLimits(IoQueue& queue, const IoLimits& limits) EXCLUDES(mu_);
  IoLimits GetLimits(const IoQueue& queue) EXCLUDES(mu_);
  // Submit() and SubmitOrRun(): with `may_run_here`, a read or write that
  // finds the disk idle runs on the calling thread (see engine.h).
  // Returns whether the request ran on the calling thread.
  bool Submit(IoQueue& queue, std::unique_ptr<IoRequest> request, bool may_run_here) EXCLUDES(mu_);
  // The request `r`, admitted and counted in flight, done with preadv/pwritev
  // on this thread, continued like a ring request, then completed.
  void RunHere(IoRequest* r) EXCLUDES(mu_);
  // Rate-limited warning for a request that kept getting EAGAIN.
  void LogAgainExhausted(const IoRequest& r);
  void Shutdown() EXCLUDES(mu_);

  // Moves work into the ring: first continuations (they hold a slot already),
  // then new requests while fewer than max_in_flight_ are in flight, in the
  // order the scheduler admits them, and publishes the SQEs. Records in
  // wake_at_ns_ when a throttled queue becomes eligible, and wakes the
  // completion thread if it would sleep past that. Returns how many published
  // SQEs await submission: pass it to Enter() once mu_ is released.
  [[nodiscard]] unsigned Dispatch() REQUIRES(mu_);
  // Makes the SQEs prepared so far visible to the kernel; returns how many
  // it has not consumed yet. liburing 2.3 has no public call for this half of
  // io_uring_submit (it maps the SQ array one to one at setup, so publishing
  // is the tail store alone); this is that half, so that the other, the
  // io_uring_enter, can run without mu_.
  unsigned PublishSq() REQUIRES(mu_);
  // Has `to_submit` published SQEs (and any others) submitted, without mu_:
  // enters itself, or leaves them to the thread that is entering (see the
  // threading model). 0: nothing to do.
  void Enter(unsigned to_submit) EXCLUDES(mu_);
  // Takes the oldest request off `queue` and hands its next one to the
  // scheduler.
  IoRequest* PopHead(IoQueue& queue) REQUIRES(mu_);
  // Takes the head of the queue the scheduler picked into flight: off its
  // queue, counted with its cost in in_flight_ and in its queue's gauge, and
  // the time it was held back charged to the queue.
  IoRequest* TakeIntoFlight(const Scheduler::Pick& pick) REQUIRES(mu_);
  // Undoes TakeIntoFlight's counts for a finished request.
  void LeaveFlight(const IoRequest& r, IoQueue& queue) REQUIRES(mu_);
  // Fails (into `out`) every queued request that has waited longer than
  // max_queue_wait_ns_.
  void TakeOverdue(uint64_t now_ns, RequestList* out) REQUIRES(mu_);
  // The scheduler filter while the ring is at the contended cap (called under mu_).
  static bool HasNothingInRing(const Flow& flow) NO_THREAD_SAFETY_ANALYSIS {
    // stats_.in_flight changes only under mu_, so this read is exact.
    return static_cast<const IoQueue*>(flow.owner())
               ->stats_.in_flight.load(std::memory_order_relaxed) == 0;
  }
  // A request's cost in the scheduler's cost model.
  uint64_t CostOf(const IoRequest& r) const { return op_cost_bytes_ + DemandOf(r).bytes; }
  // Prepares a NOP so that the completion thread re-evaluates its wait;
  // returns the number of SQEs prepared (0 when the SQ is full).
  unsigned WakeCompletionThread() REQUIRES(mu_);
  void PrepSqe(io_uring_sqe* sqe, IoRequest& r) const;
  // Runs Complete() for `count` finished requests with no lock held, then
  // releases them from their queues' outstanding counts.
  struct Finished {
    IoRequest* request;
    IoQueue* queue;
    IoResult result;
  };
  void CompleteAll(Finished* finished, unsigned count) EXCLUDES(mu_);
  // io_uring_submit for everything published so far; on failure leaves
  // sq_unflushed_ set so the SQEs are submitted again later.
  void FlushSq() REQUIRES(mu_);

  void CompletionLoop() noexcept EXCLUDES(mu_);
  // One wait-reap-complete round. Returns false when the thread should exit.
  bool RunCompletionRound() EXCLUDES(mu_);
  int FilterRes(const IoRequest& r, int res) const noexcept;

  // The SQ half is used under mu_, the CQ half by the completion thread only
  // (see the threading model at the top of the file), so ring_ itself is not
  // GUARDED_BY.
  Uring ring_;
  const unsigned max_in_flight_;
  const uint64_t max_queue_wait_ns_;
  const uint64_t op_cost_bytes_;
  const uint64_t contended_in_flight_cost_;
  const Clock& clock_;
  const uint64_t max_bytes_per_sqe_;
  const EngineTestHooks hooks_;
  const std::shared_ptr<spdlog::logger> log_;
  std::atomic<uint64_t> again_exhausted_{0};  // for rate-limited logging
  std::atomic<uint64_t> submit_failures_{0};  // for rate-limited logging
  std::atomic<uint64_t> timeouts_{0};         // for rate-limited logging
  // Calls to Enter() with SQEs to submit since the entering thread last found
  // none new; 0 while no thread is entering. See Enter().
  std::atomic<uint64_t> enter_calls_{0};

  // mu_ guards the SQ, every IoQueue's list and counters, and the fields below.
  // Lock order: callers' own locks -> mu_ (a caller may hold its locks while
  // calling Submit()). Inside iopath mu_ is a leaf: the engine never holds it
  // while calling caller code (Complete(), test hooks) and takes no other lock
  // under it, spdlog's internal ones aside. It is held for list and counter
  // updates and io_uring_submit, never while waiting for I/O; Unregister()
  // waits on idle_cv_, which releases it.
  Mutex mu_;
  // Notified when some queue's outstanding count drops to 0.
  std::condition_variable_any idle_cv_;
  // Which queue's request goes next; sees only each queue's oldest request.
  Scheduler scheduler_ GUARDED_BY(mu_);
  // When the earliest throttled queue becomes eligible; 0 when none waits.
  uint64_t wake_at_ns_ GUARDED_BY(mu_) = 0;
  // When the completion thread's current wait ends at the latest.
  uint64_t cq_deadline_ns_ GUARDED_BY(mu_) = 0;
  bool wake_posted_ GUARDED_BY(mu_) = false;  // a wake-up NOP is in the ring
  uint64_t next_overdue_check_ns_ GUARDED_BY(mu_) = 0;
  // In flight, waiting for an SQE to continue (short transfer or -EAGAIN).
  RequestList resume_ GUARDED_BY(mu_);
  unsigned in_flight_ GUARDED_BY(mu_) = 0;       // requests holding a ring slot
  uint64_t in_flight_cost_ GUARDED_BY(mu_) = 0;  // their cost (scheduler cost model)
  size_t busy_queues_ GUARDED_BY(mu_) = 0;       // queues with outstanding_ > 0
  uint64_t contended_until_ns_ GUARDED_BY(mu_) = 0;
  uint64_t outstanding_ GUARDED_BY(mu_) = 0;  // sum of every queue's outstanding_
  // Registered queues: changed under mu_, read without it by SharedFairly.
  std::atomic<size_t> num_queues_{0};
  const bool fair_;
  bool sq_unflushed_ GUARDED_BY(mu_) = false;  // published SQEs the kernel has not taken
  bool stopping_ GUARDED_BY(mu_) = false;

  // Started last in Create(), joined in Shutdown(); not changed in between.
  std::thread completion_thread_;
};

Result<std::unique_ptr<Engine::Impl>> Engine::Impl::Create(const EngineOptions& options,
                                                           EngineTestHooks hooks) {
  if (options.ring_entries == 0) {
    return Status::Error(EINVAL, "EngineOptions.ring_entries is 0: it must be at least 1");
  }
  if (options.max_in_flight == 0) {
    return Status::Error(EINVAL, "EngineOptions.max_in_flight is 0: it must be at least 1");
  }
  if (options.ring_entries > std::numeric_limits<unsigned>::max() / 2) {
    return Status::Error(EINVAL, "EngineOptions.ring_entries " +
                                     std::to_string(options.ring_entries) + " is too large");
  }

  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  // Twice the SQ: with at most ring_entries requests in flight plus the
  // shutdown NOP, the CQ can never overflow.
  params.cq_entries = 2 * options.ring_entries;
  auto ring = Uring::Create(options.ring_entries, params);
  if (!ring.ok()) return ring.status();

  for (const RequiredFeature& feature : kRequiredFeatures) {
    if ((params.features & feature.bit) == 0) {
      return Status::Error(EOPNOTSUPP, std::string("io_uring feature ") + feature.name +
                                           " not supported by this kernel (" + feature.why + ")");
    }
  }
  auto probe = ProbeRing(*ring);
  if (!probe.ok()) return probe.status();
  for (const RequiredOpcode& opcode : kRequiredOpcodes) {
    if (!io_uring_opcode_supported(probe->get(), opcode.op)) {
      return Status::Error(EOPNOTSUPP, std::string("io_uring opcode ") + opcode.name +
                                           " not supported by this kernel");
    }
  }

  // The kernel rounds the SQ up to a power of two; more in flight than SQ
  // entries could not be submitted anyway.
  const unsigned max_in_flight = std::min(options.max_in_flight, params.sq_entries);
  auto impl = std::make_unique<Impl>(std::move(*ring), options, max_in_flight, std::move(hooks));
  try {
    impl->completion_thread_ = std::thread([p = impl.get()] { p->CompletionLoop(); });
  } catch (const std::system_error& e) {
    return Status::Error(e.code().value() > 0 ? e.code().value() : EAGAIN,
                         std::string("starting the iopath completion thread: ") + e.what());
  }
  pthread_setname_np(impl->completion_thread_.native_handle(), "iopath-cq");

  impl->log_->info(
      "io_uring engine ready: sq_entries={} cq_entries={} max_in_flight={} features={:#x}",
      params.sq_entries, params.cq_entries, max_in_flight, params.features);
  return impl;
}

void Engine::Impl::RegisterQueue(IoQueue& queue) {
  MutexLock lock(mu_);
  queue.registered_ = true;
  num_queues_.fetch_add(1, std::memory_order_relaxed);
}

void Engine::Impl::Unregister(IoQueue& queue) {
  MutexLock lock(mu_);
  if (!queue.registered_) return;
  if (queue.outstanding_ > 0 && std::this_thread::get_id() == completion_thread_.get_id()) {
    // Complete() runs on this thread; waiting here for the queue's requests to
    // complete would wait forever.
    log_->critical(
        "IoQueue '{}' destroyed inside IoRequest::Complete() with {} request(s) "
        "outstanding; this would deadlock the engine",
        queue.name_, queue.outstanding_);
    std::abort();
  }
  if (queue.outstanding_ > 0) {
    // The volume is going away: its queued requests are still served (each
    // completes exactly once) but no longer held to its limits, so that an
    // unmount does not wait for a low limit to drain them.
    IoLimits unlimited;
    unlimited.weight = queue.limits_.weight;
    scheduler_.Configure(*queue.flow_, unlimited, clock_.NowNs());
    queue.limits_ = unlimited;
    if (Dispatch() > 0) FlushSq();  // about to wait: submit under mu_
  }
  while (queue.outstanding_ > 0) idle_cv_.wait(mu_);
  scheduler_.Remove(*queue.flow_);
  queue.registered_ = false;
  num_queues_.fetch_sub(1, std::memory_order_relaxed);
}

void Engine::Impl::SetLimits(IoQueue& queue, const IoLimits& limits) {
  unsigned to_submit;
  {
    MutexLock lock(mu_);
    scheduler_.Configure(*queue.flow_, limits, clock_.NowNs());
    queue.limits_ = limits;
    to_submit = Dispatch();  // a throttled queue may be eligible now, or later than planned
  }
  Enter(to_submit);
}

IoLimits Engine::Impl::GetLimits(const IoQueue& queue) {
  MutexLock lock(mu_);
  return queue.limits_;
}

bool Engine::Impl::Submit(IoQueue& queue, std::unique_ptr<IoRequest> request, bool may_run_here) {
  if (!request) return false;
  IoRequest* r = request.release();  // owned by the engine until Complete() returns
  r->done_bytes = 0;
  r->again_retries = 0;
  r->next_in_queue = nullptr;
  r->queue_ = &queue;
  r->submit_ns = clock_.NowNs();

  unsigned to_submit = 0;
  bool run_here = false;
  {
    MutexLock lock(mu_);
    RequestList queued{queue.head_, queue.tail_};
    const bool was_empty = queued.empty();
    queued.PushBack(r);
    queue.head_ = queued.head;
    queue.tail_ = queued.tail;
    if (queue.outstanding_++ == 0) ++busy_queues_;
    ++outstanding_;
    queue.stats_.queued.fetch_add(1, std::memory_order_relaxed);
    if (was_empty) scheduler_.Enqueue(*queue.flow_, DemandOf(*r));
    // The disk is idle: nothing in flight, nothing else waiting. If the
    // scheduler admits this request now (it can pick no other), the ring and
    // the completion thread's wake-up would only add latency.
    if (may_run_here && (r->op == IoOp::kRead || r->op == IoOp::kWrite) &&
        r->len <= Engine::kRunHereMaxBytes && in_flight_ == 0 && resume_.empty() &&
        scheduler_.backlogged() == 1 && queue.head_ == r) {
      const Scheduler::Pick pick = scheduler_.PickNext(r->submit_ns, &wake_at_ns_);
      if (pick.flow == queue.flow_.get()) {
        TakeIntoFlight(pick);  // r: the queue's only request
        run_here = true;
      }
    }
    if (!run_here) to_submit = Dispatch();
  }
  if (run_here) {
    RunHere(r);
    return true;
  }
  Enter(to_submit);
  return false;
}

IoRequest* Engine::Impl::TakeIntoFlight(const Scheduler::Pick& pick) {
  auto* queue = static_cast<IoQueue*>(pick.flow->owner());
  if (pick.throttled_ns > 0) {
    queue->stats_.throttled_ns.fetch_add(pick.throttled_ns, std::memory_order_relaxed);
  }
  IoRequest* r = PopHead(*queue);
  queue->stats_.in_flight.fetch_add(1, std::memory_order_relaxed);
  ++in_flight_;
  in_flight_cost_ += CostOf(*r);
  return r;
}

void Engine::Impl::LeaveFlight(const IoRequest& r, IoQueue& queue) {
  --in_flight_;
  in_flight_cost_ -= CostOf(r);
  queue.stats_.in_flight.fetch_sub(1, std::memory_order_relaxed);
}

void Engine::Impl::LogAgainExhausted(const IoRequest& r) {
  if (!ShouldLog(again_exhausted_)) return;
  log_->warn("{} on fd {} still got EAGAIN after {} retries, failing it with EIO ({} so far)",
             IoOpName(r.op), r.fd, kMaxAgainRetries,
             again_exhausted_.load(std::memory_order_relaxed));
}

void Engine::Impl::RunHere(IoRequest* r) {
  IoResult result;
  bool again_exhausted = false;
  for (;;) {
    const uint64_t remaining = r->len - r->done_bytes;
    const size_t chunk = static_cast<size_t>(std::min(remaining, max_bytes_per_sqe_));
    char* buf = r->buf + r->done_bytes;
    const auto offset = static_cast<off_t>(r->offset + r->done_bytes);
    const ssize_t n =
        r->op == IoOp::kRead ? pread(r->fd, buf, chunk, offset) : pwrite(r->fd, buf, chunk, offset);
    const int res = FilterRes(*r, n < 0 ? -errno : static_cast<int>(n));
    if (ApplyCqe(*r, res, &result, &again_exhausted) == CqeVerdict::kFinished) break;
  }
  if (again_exhausted) LogAgainExhausted(*r);
  IoQueue* queue = r->queue_;
  unsigned to_submit;
  {
    MutexLock lock(mu_);
    LeaveFlight(*r, *queue);
    to_submit = Dispatch();  // what arrived meanwhile went to the queues
  }
  Enter(to_submit);
  Finished finished{r, queue, result};
  CompleteAll(&finished, 1);
}

IoRequest* Engine::Impl::PopHead(IoQueue& queue) {
  RequestList queued{queue.head_, queue.tail_};
  IoRequest* r = queued.PopFront();
  queue.head_ = queued.head;
  queue.tail_ = queued.tail;
  if (queue.head_) scheduler_.Enqueue(*queue.flow_, DemandOf(*queue.head_));
  queue.stats_.queued.fetch_sub(1, std::memory_order_relaxed);
  return r;
}

unsigned Engine::Impl::Dispatch() {
  io_uring* ring = ring_.get();
  unsigned prepared = 0;
  while (!resume_.empty() && io_uring_sq_space_left(ring) > 0) {
    PrepSqe(io_uring_get_sqe(ring), *resume_.PopFront());
    ++prepared;
  }
  wake_at_ns_ = 0;
  if (resume_.empty() && scheduler_.backlogged() > 0) {
    const uint64_t now = clock_.NowNs();
    if (busy_queues_ >= 2) contended_until_ns_ = now + kContentionMemoryNs;
    const bool capped = contended_in_flight_cost_ > 0 && now < contended_until_ns_;
    while (in_flight_ < max_in_flight_ && io_uring_sq_space_left(ring) > 0) {
      const Scheduler::Pick pick =
          capped && in_flight_cost_ >= contended_in_flight_cost_
              ? scheduler_.PickNextAllowed(now, &wake_at_ns_, &Impl::HasNothingInRing)
              : scheduler_.PickNext(now, &wake_at_ns_);
      if (!pick.flow) break;
      PrepSqe(io_uring_get_sqe(ring), *TakeIntoFlight(pick));
      ++prepared;
    }
    // Sleeping past the moment a throttled request may go would throttle it
    // twice; a small slack avoids a wake-up NOP for every submission.
    constexpr uint64_t kWakeSlackNs = 20'000;
    if (wake_at_ns_ != 0 && !wake_posted_ && wake_at_ns_ + kWakeSlackNs < cq_deadline_ns_ &&
        std::this_thread::get_id() != completion_thread_.get_id()) {
      prepared += WakeCompletionThread();
    }
  }
  // SQEs another thread published are its to enter.
  return prepared > 0 ? PublishSq() : 0;
}

unsigned Engine::Impl::PublishSq() {
  io_uring_sq& sq = ring_.get()->sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    io_uring_smp_store_release(sq.ktail, tail);  // the SQEs before the tail
  }
  return tail - io_uring_smp_load_acquire(sq.khead);
}

// One thread at a time enters to submit ("combining"): a thread that
// publishes SQEs while another is entering leaves them to it, and the one
// entering enters again until nobody has published more. The kernel
// serializes submissions to a ring on a mutex of its own, so concurrent
// enters only wait on each other, and one enter for several threads' SQEs
// submits them as a batch (docs/performance.md, section 3). An enter that
// finds fewer published SQEs than it asked for submits what is there, so
// asking for the whole SQ submits every published SQE exactly once.
//
// If io_uring_enter fails (-EAGAIN, -EBUSY), the SQEs are already published,
// so they are neither lost nor failed: FlushSq() retries once under mu_, and
// if that fails too sq_unflushed_ is set and the next enter, or the
// completion thread within kSubmitRetryInterval, submits them.
void Engine::Impl::Enter(unsigned to_submit) {
  if (to_submit == 0) return;
  // Our SQEs were published (under mu_) before this increment; whoever is
  // entering reads the count after each enter, sees it, and enters again.
  uint64_t seen = enter_calls_.fetch_add(1, std::memory_order_acq_rel);
  if (seen != 0) return;
  seen = 1;
  const unsigned whole_sq = ring_.get()->sq.ring_entries;
  for (;;) {
    if (hooks_.before_enter) hooks_.before_enter();
    if (io_uring_enter(ring_.get()->ring_fd, whole_sq, 0, 0, nullptr) < 0) {
      MutexLock lock(mu_);
      FlushSq();  // counts, logs and, if it fails again, leaves the retry to later
    }
    // Unchanged: nobody published since our last enter began, done. Else
    // `seen` takes the new count and we enter for the newcomers. Each round
    // takes everything published so far, so the loop ends at the first enter
    // during which nothing new was published; it keeps this thread only while
    // other threads keep the ring busy.
    if (enter_calls_.compare_exchange_strong(seen, 0, std::memory_order_acq_rel)) return;
  }
}

unsigned Engine::Impl::WakeCompletionThread() {
  if (io_uring_sq_space_left(ring_.get()) == 0) return 0;  // it wakes within kIdleWakeupNs
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data(sqe, nullptr);
  wake_posted_ = true;
  return 1;
}

void Engine::Impl::TakeOverdue(uint64_t now_ns, RequestList* out) {
  if (now_ns < max_queue_wait_ns_) return;
  const uint64_t deadline = now_ns - max_queue_wait_ns_;
  uint64_t throttled = 0;
  while (Flow* flow = scheduler_.TakeOverdue(deadline, now_ns, &throttled)) {
    auto* queue = static_cast<IoQueue*>(flow->owner());
    queue->stats_.throttled_ns.fetch_add(throttled, std::memory_order_relaxed);
    // A queue is FIFO: its later requests are younger, but may be overdue too;
    // the loop meets this queue again through its new head if so.
    out->PushBack(PopHead(*queue));
  }
}

void Engine::Impl::PrepSqe(io_uring_sqe* sqe, IoRequest& r) const {
  switch (r.op) {
    case IoOp::kRead:
    case IoOp::kWrite: {
      const uint64_t remaining = r.len - r.done_bytes;
      const auto chunk = static_cast<unsigned>(std::min(remaining, max_bytes_per_sqe_));
      char* buf = r.buf + r.done_bytes;
      const uint64_t offset = r.offset + r.done_bytes;
      if (r.op == IoOp::kRead) {
        io_uring_prep_read(sqe, r.fd, buf, chunk, offset);
      } else {
        io_uring_prep_write(sqe, r.fd, buf, chunk, offset);
      }
      break;
    }
    case IoOp::kFsync:
      io_uring_prep_fsync(sqe, r.fd, 0);
      break;
    case IoOp::kFdatasync:
      io_uring_prep_fsync(sqe, r.fd, IORING_FSYNC_DATASYNC);
      break;
    case IoOp::kFallocate:
      io_uring_prep_fallocate(sqe, r.fd, r.fallocate_mode, static_cast<off_t>(r.offset),
                              static_cast<off_t>(r.len));
      break;
    default:
      io_uring_prep_nop(sqe);  // ApplyCqe() fails it with EINVAL
      break;
  }
  io_uring_sqe_set_data(sqe, &r);
  MarkHandedToRing(&r);
}

void Engine::Impl::FlushSq() {
  const int rc = io_uring_submit(ring_.get());
  if (rc < 0) {
    sq_unflushed_ = true;
    if (ShouldLog(submit_failures_)) {
      log_->warn("io_uring_submit failed ({} so far), retrying: {}",
                 submit_failures_.load(std::memory_order_relaxed),
                 Status::Error(ErrnoFromUring(rc), "io_uring_enter").ToString());
    }
    return;
  }
  // The kernel stops at an SQE it cannot even start (it posts a CQE for that
  // one); whatever follows stays published for the next submit.
  sq_unflushed_ = io_uring_sq_ready(ring_.get()) > 0;
}

int Engine::Impl::FilterRes(const IoRequest& r, int res) const noexcept {
  if (!hooks_.cqe_res_filter) return res;
  try {
    return hooks_.cqe_res_filter(r, res);
  } catch (...) {
    return res;
  }
}

void Engine::Impl::CompletionLoop() noexcept {
  for (;;) {
    try {
      if (!RunCompletionRound()) return;
    } catch (const std::exception& e) {
      log_->error("iopath completion loop: unexpected exception: {}", e.what());
    } catch (...) {
      log_->error("iopath completion loop: unexpected exception");
    }
  }
}

bool Engine::Impl::RunCompletionRound() {
  __kernel_timespec timeout{};
  RequestList overdue;
  unsigned to_submit = 0;
  {
    MutexLock lock(mu_);
    if (stopping_ && outstanding_ == 0) return false;
    if (sq_unflushed_) FlushSq();
    const uint64_t now = clock_.NowNs();
    if (now >= next_overdue_check_ns_) {
      TakeOverdue(now, &overdue);
      next_overdue_check_ns_ = now + kOverdueCheckIntervalNs;
    }
    if (wake_at_ns_ != 0 && now >= wake_at_ns_)
      to_submit = Dispatch();  // throttled ones now eligible
    uint64_t wait_ns = sq_unflushed_ ? kSubmitRetryIntervalNs : kIdleWakeupNs;
    if (wake_at_ns_ != 0) wait_ns = std::min(wait_ns, wake_at_ns_ > now ? wake_at_ns_ - now : 0);
    if (scheduler_.backlogged() > 0 && next_overdue_check_ns_ > now) {
      wait_ns = std::min(wait_ns, next_overdue_check_ns_ - now);
    }
    timeout.tv_sec = static_cast<int64_t>(wait_ns / 1'000'000'000);
    timeout.tv_nsec = static_cast<long long>(wait_ns % 1'000'000'000);
    cq_deadline_ns_ = now + wait_ns;
    wake_posted_ = false;
  }
  Enter(to_submit);
  if (!overdue.empty()) {
    Finished failed[kCqeBatch];
    unsigned count = 0;
    while (!overdue.empty()) {
      IoRequest* r = overdue.PopFront();
      r->queue_->stats_.timed_out.fetch_add(1, std::memory_order_relaxed);
      failed[count++] = Finished{r, r->queue_, IoResult{0, ETIMEDOUT}};
      if (count == kCqeBatch || overdue.empty()) {
        CompleteAll(failed, count);
        count = 0;
      }
    }
    if (ShouldLog(timeouts_)) {
      log_->warn(
          "requests waited in their queue longer than {} s and failed with ETIMEDOUT ({} "
          "check(s) with timeouts so far)",
          max_queue_wait_ns_ / 1'000'000'000.0, timeouts_.load(std::memory_order_relaxed));
    }
  }

  io_uring* ring = ring_.get();
  io_uring_cqe* first = nullptr;
  const int rc = io_uring_wait_cqe_timeout(ring, &first, &timeout);
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
    log_->error("{}", Status::Error(ErrnoFromUring(rc), "io_uring_wait_cqe_timeout").ToString());
  }

  io_uring_cqe* cqes[kCqeBatch];
  const unsigned reaped = io_uring_peek_batch_cqe(ring, cqes, kCqeBatch);
  if (reaped == 0) return true;

  Finished finished[kCqeBatch];
  unsigned num_finished = 0;
  RequestList resume;
  for (unsigned i = 0; i < reaped; ++i) {
    auto* r = static_cast<IoRequest*>(io_uring_cqe_get_data(cqes[i]));
    if (r == nullptr) continue;  // a wake-up NOP
    MarkReapedFromRing(r);
    const int res = FilterRes(*r, cqes[i]->res);
    IoResult result;
    bool again_exhausted = false;
    if (ApplyCqe(*r, res, &result, &again_exhausted) == CqeVerdict::kResubmit) {
      resume.PushBack(r);
    } else {
      finished[num_finished++] = Finished{r, r->queue_, result};
    }
    if (again_exhausted) LogAgainExhausted(*r);
  }
  io_uring_cq_advance(ring, reaped);

  // Refill the ring before running callbacks, so the disk is not idle while
  // they run.
  {
    MutexLock lock(mu_);
    for (unsigned i = 0; i < num_finished; ++i) {
      LeaveFlight(*finished[i].request, *finished[i].queue);
    }
    resume_.Append(resume);
    to_submit = Dispatch();
  }
  Enter(to_submit);
  CompleteAll(finished, num_finished);
  return true;
}

void Engine::Impl::CompleteAll(Finished* finished, unsigned count) {
  if (count == 0) return;
  const uint64_t now = clock_.NowNs();
  // Each request is destroyed right after its Complete() returns.
  for (unsigned i = 0; i < count; ++i) {
    Finished& f = finished[i];
    const uint64_t latency = now > f.request->submit_ns ? now - f.request->submit_ns : 0;
    CountCompletion(f.queue->stats_, f.request->op, f.result, latency);
    std::unique_ptr<IoRequest> owned(f.request);
    owned->Complete(f.result);  // noexcept; may Submit() more work
  }

  MutexLock lock(mu_);
  bool queue_idle = false;
  for (unsigned i = 0; i < count; ++i) {
    // Last touch of the queue: once its count is 0, ~IoQueue may free it.
    if (--finished[i].queue->outstanding_ == 0) {
      queue_idle = true;
      --busy_queues_;
    }
  }
  outstanding_ -= count;
  if (queue_idle) idle_cv_.notify_all();
}

void Engine::Impl::Shutdown() {
  {
    MutexLock lock(mu_);
    if (const size_t queues = num_queues_.load(std::memory_order_relaxed); queues > 0) {
      log_->error(
          "iopath engine destroyed while {} IoQueue(s) still exist; waiting for their "
          "requests to complete",
          queues);
    }
    stopping_ = true;
    io_uring* ring = ring_.get();
    if (io_uring_sq_space_left(ring) > 0) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      FlushSq();
    }  // else the completion thread's idle timeout notices stopping_
  }
  if (completion_thread_.joinable()) completion_thread_.join();
}

// ---------------------------------------------------------------------------

IoQueue::IoQueue(Engine* engine, std::string name)
    : engine_(engine), name_(std::move(name)), flow_(std::make_unique<Flow>(this)) {}

IoQueue::~IoQueue() { engine_->Unregister(*this); }

Status IoQueue::SetLimits(const IoLimits& limits) {
  if (Status s = ValidateIoLimits(limits); !s.ok()) return s;
  engine_->impl_->SetLimits(*this, limits);
  return Status::Ok();
}

IoLimits IoQueue::limits() const { return engine_->impl_->GetLimits(*this); }

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { impl_->Shutdown(); }

Result<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  auto impl = Impl::Create(options, EngineTestHooks{});
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<Engine>(new Engine(std::move(*impl)));
}

Result<std::unique_ptr<Engine>> EngineTestPeer::Create(const EngineOptions& options,
                                                       EngineTestHooks hooks) {
  auto impl = Engine::Impl::Create(options, std::move(hooks));
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<Engine>(new Engine(std::move(*impl)));
}

std::unique_ptr<IoQueue> Engine::CreateQueue(std::string name) {
  std::unique_ptr<IoQueue> queue(new IoQueue(this, std::move(name)));
  impl_->RegisterQueue(*queue);
  return queue;
}

void Engine::Submit(IoQueue& queue, std::unique_ptr<IoRequest> request) {
  impl_->Submit(queue, std::move(request), /*may_run_here=*/false);
}

bool Engine::SubmitOrRun(IoQueue& queue, std::unique_ptr<IoRequest> request) {
  return impl_->Submit(queue, std::move(request), /*may_run_here=*/true);
}

void Engine::Unregister(IoQueue& queue) { impl_->Unregister(queue); }

bool Engine::SharedFairly() const {
  return impl_->fair_ && impl_->num_queues_.load(std::memory_order_relaxed) >= 2;
}

}  // namespace localvol::iopath
