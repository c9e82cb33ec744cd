// Engine: the io_uring data path. engine.h states the contract; this file
// holds the detail.
//
// Threading model
//   * Submitter threads (FUSE workers, or a Complete() that chains work) call
//     Submit(). Under mu_ they append the request to its IoQueue and run
//     Dispatch(), which moves queued requests into SQEs and calls
//     io_uring_submit once for the batch. Nothing here waits for the disk.
//   * The completion thread ("iopath-cq", CompletionLoop) owns the CQ. It waits
//     for CQEs without holding mu_, decides for each whether the request is
//     finished or must go back to the ring (short transfer, -EAGAIN), refills
//     the ring under mu_, and then calls Complete() with no lock held.
//   * The ring is shared: its SQ half is touched only under mu_ (by whichever
//     thread dispatches), its CQ half only by the completion thread. liburing
//     keeps the two halves independent, and waiting for CQEs never touches the
//     SQ because the timed wait uses IORING_FEAT_EXT_ARG (checked at startup)
//     instead of a timeout SQE.
//   * Many threads submit, so the ring is set up without SINGLE_ISSUER or
//     DEFER_TASKRUN. The kernel may run completion task_work on the thread that
//     submitted a request; that is brief and invisible to callers.
//
// Life of a request
//   queued (IoQueue::head_) -> in flight (holds one of max_in_flight slots: in
//   an SQE, or on resume_ waiting for one) -> finished (slot released) ->
//   Complete() returns -> deleted -> IoQueue::outstanding_ decremented. The
//   last step comes after Complete() so that ~IoQueue cannot return while a
//   Complete() for that queue is still running.
//
// Results
//   cqe->res is -errno on failure; ErrnoFromUring() (uring.h) flips the sign in
//   one place and IoResult::err is positive from then on.
//   * Short read (0 < res < remaining): continued at offset + done.
//   * Read returning 0: end of file, finished with the bytes read so far.
//   * Short write: continued. A write whose later chunk fails finishes as a
//     short write {done, 0}, as write(2) would; a write whose first chunk fails
//     finishes with the error. A write returning 0 with bytes left finishes
//     with {done, 0} if some bytes went through, else with EIO.
//   * A read that fails after some bytes finishes with {done, err}: a short
//     read without error would read as end of file to FUSE, hiding the error.
//   * fsync, fdatasync, fallocate finish with bytes = 0.
//
// EAGAIN policy
//   The kernel normally turns "would block" into a blocking retry in io-wq, so
//   -EAGAIN (or -EINTR) reaching us means a transient refusal (memory pressure,
//   a non-blocking backing fd). The request goes straight back to the ring, up
//   to kMaxAgainRetries times in a row without progress; any progress resets
//   the count. After that the request finishes with EIO, not EAGAIN: the
//   application above FUSE did a blocking read or write, and EAGAIN on a
//   blocking file descriptor is a contract violation that programs mishandle
//   (busy loops, or treating it as "no data yet"). EIO says what happened: the
//   I/O could not be done. Exhaustion is logged at warn, rate-limited.
//
// io_uring_submit failure
//   The SQEs are already published to the kernel when io_uring_enter fails
//   (-EAGAIN, -EBUSY), so they are neither lost nor failed: sq_unflushed_ is
//   set and the next Dispatch(), or the completion thread within
//   kSubmitRetryInterval, submits them again. Each request still completes
//   exactly once.
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
CqeVerdict ApplyCqe(IoRequest& r, int res, IoResult* result, bool* again_exhausted) {
  if (res < 0) {
    int err = ErrnoFromUring(res);
    if (err == EAGAIN || err == EINTR) {
      if (r.again_retries < kMaxAgainRetries) {
        ++r.again_retries;
        return CqeVerdict::kResubmit;
      }
      *again_exhausted = true;
      err = EIO;  // see "EAGAIN policy" at the top of this file
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

void CountCompletion(IoQueueStats& stats, IoOp op, const IoResult& result) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
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
  Impl(Uring ring, unsigned max_in_flight, EngineTestHooks hooks)
      : ring_(std::move(ring)),
        max_in_flight_(max_in_flight),
        max_bytes_per_sqe_(hooks.max_bytes_per_sqe > 0
                               ? std::min<uint64_t>(hooks.max_bytes_per_sqe, kMaxBytesPerSqe)
                               : kMaxBytesPerSqe),
        hooks_(std::move(hooks)),
        log_(GetLogger("iopath")) {}

  // Sets up the ring, checks what iopath relies on, starts the completion thread.
  static Result<std::unique_ptr<Impl>> Create(const EngineOptions& options, EngineTestHooks hooks);

  void RegisterQueue(IoQueue& queue) EXCLUDES(mu_);
  void Unregister(IoQueue& queue) EXCLUDES(mu_);
  void Submit(IoQueue& queue, std::unique_ptr<IoRequest> request) EXCLUDES(mu_);
  void Shutdown() EXCLUDES(mu_);

  // Moves work into the ring: first continuations (they hold a slot already),
  // then new requests while fewer than max_in_flight_ are in flight, taking
  // queues in the order PickNextQueue() gives. One io_uring_submit per call.
  void Dispatch() REQUIRES(mu_);
  // The scheduler seam. Returns the queue whose oldest request enters the ring
  // next and takes it off the active list (Dispatch() puts it back at the end
  // if it still has work), or nullptr if no queue has work. Today: plain
  // round-robin, one request per turn. Per-volume token buckets and weighted
  // fair queuing replace this function, not Dispatch().
  IoQueue* PickNextQueue() REQUIRES(mu_);
  void PushActive(IoQueue& queue) REQUIRES(mu_);
  void PrepSqe(io_uring_sqe* sqe, IoRequest& r) const;
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
  const uint64_t max_bytes_per_sqe_;
  const EngineTestHooks hooks_;
  const std::shared_ptr<spdlog::logger> log_;
  std::atomic<uint64_t> again_exhausted_{0};  // for rate-limited logging
  std::atomic<uint64_t> submit_failures_{0};  // for rate-limited logging

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
  // Round-robin list of queues with queued requests, via IoQueue::next_active_.
  IoQueue* active_head_ GUARDED_BY(mu_) = nullptr;
  IoQueue* active_tail_ GUARDED_BY(mu_) = nullptr;
  // In flight, waiting for an SQE to continue (short transfer or -EAGAIN).
  RequestList resume_ GUARDED_BY(mu_);
  unsigned in_flight_ GUARDED_BY(mu_) = 0;    // requests holding a ring slot
  uint64_t outstanding_ GUARDED_BY(mu_) = 0;  // sum of every queue's outstanding_
  size_t num_queues_ GUARDED_BY(mu_) = 0;
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
  auto impl = std::make_unique<Impl>(std::move(*ring), max_in_flight, std::move(hooks));
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
  ++num_queues_;
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
  while (queue.outstanding_ > 0) idle_cv_.wait(mu_);
  queue.registered_ = false;
  --num_queues_;
}

void Engine::Impl::Submit(IoQueue& queue, std::unique_ptr<IoRequest> request) {
  if (!request) return;
  IoRequest* r = request.release();  // owned by the engine until Complete() returns
  r->done_bytes = 0;
  r->again_retries = 0;
  r->next_in_queue = nullptr;
  r->queue_ = &queue;

  MutexLock lock(mu_);
  RequestList queued{queue.head_, queue.tail_};
  queued.PushBack(r);
  queue.head_ = queued.head;
  queue.tail_ = queued.tail;
  ++queue.outstanding_;
  ++outstanding_;
  if (!queue.active_) PushActive(queue);
  Dispatch();
}

void Engine::Impl::PushActive(IoQueue& queue) {
  queue.active_ = true;
  queue.next_active_ = nullptr;
  if (active_tail_) {
    active_tail_->next_active_ = &queue;
  } else {
    active_head_ = &queue;
  }
  active_tail_ = &queue;
}

IoQueue* Engine::Impl::PickNextQueue() {
  IoQueue* queue = active_head_;
  if (!queue) return nullptr;
  active_head_ = queue->next_active_;
  if (!active_head_) active_tail_ = nullptr;
  queue->next_active_ = nullptr;
  queue->active_ = false;
  return queue;
}

void Engine::Impl::Dispatch() {
  io_uring* ring = ring_.get();
  unsigned prepared = 0;
  while (!resume_.empty() && io_uring_sq_space_left(ring) > 0) {
    PrepSqe(io_uring_get_sqe(ring), *resume_.PopFront());
    ++prepared;
  }
  while (resume_.empty() && in_flight_ < max_in_flight_ && io_uring_sq_space_left(ring) > 0) {
    IoQueue* queue = PickNextQueue();
    if (!queue) break;
    RequestList queued{queue->head_, queue->tail_};
    IoRequest* r = queued.PopFront();
    queue->head_ = queued.head;
    queue->tail_ = queued.tail;
    if (queue->head_) PushActive(*queue);
    ++in_flight_;
    PrepSqe(io_uring_get_sqe(ring), *r);
    ++prepared;
  }
  if (prepared > 0 || sq_unflushed_) FlushSq();
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
  {
    MutexLock lock(mu_);
    if (stopping_ && outstanding_ == 0) return false;
    if (sq_unflushed_) FlushSq();
    timeout.tv_nsec = sq_unflushed_ ? kSubmitRetryIntervalNs : kIdleWakeupNs;
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

  struct Finished {
    IoRequest* request;
    IoQueue* queue;
    IoResult result;
  };
  Finished finished[kCqeBatch];
  unsigned num_finished = 0;
  RequestList resume;
  for (unsigned i = 0; i < reaped; ++i) {
    auto* r = static_cast<IoRequest*>(io_uring_cqe_get_data(cqes[i]));
    if (r == nullptr) continue;  // the wake-up NOP from Shutdown()
    MarkReapedFromRing(r);
    const int res = FilterRes(*r, cqes[i]->res);
    IoResult result;
    bool again_exhausted = false;
    if (ApplyCqe(*r, res, &result, &again_exhausted) == CqeVerdict::kResubmit) {
      resume.PushBack(r);
    } else {
      finished[num_finished++] = Finished{r, r->queue_, result};
    }
    if (again_exhausted && ShouldLog(again_exhausted_)) {
      log_->warn("{} on fd {} still got EAGAIN after {} retries, failing it with EIO ({} so far)",
                 IoOpName(r->op), r->fd, kMaxAgainRetries,
                 again_exhausted_.load(std::memory_order_relaxed));
    }
  }
  io_uring_cq_advance(ring, reaped);

  // Refill the ring before running callbacks, so the disk is not idle while
  // they run.
  {
    MutexLock lock(mu_);
    in_flight_ -= num_finished;
    resume_.Append(resume);
    Dispatch();
  }

  // Each request is destroyed right after its Complete() returns.
  for (unsigned i = 0; i < num_finished; ++i) {
    Finished& f = finished[i];
    CountCompletion(f.queue->stats_, f.request->op, f.result);
    std::unique_ptr<IoRequest> owned(f.request);
    owned->Complete(f.result);  // noexcept; may Submit() more work
  }

  if (num_finished > 0) {
    MutexLock lock(mu_);
    bool queue_idle = false;
    for (unsigned i = 0; i < num_finished; ++i) {
      // Last touch of the queue: once its count is 0, ~IoQueue may free it.
      if (--finished[i].queue->outstanding_ == 0) queue_idle = true;
    }
    outstanding_ -= num_finished;
    if (queue_idle) idle_cv_.notify_all();
  }
  return true;
}

void Engine::Impl::Shutdown() {
  {
    MutexLock lock(mu_);
    if (num_queues_ > 0) {
      log_->error(
          "iopath engine destroyed while {} IoQueue(s) still exist; waiting for their "
          "requests to complete",
          num_queues_);
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

IoQueue::~IoQueue() { engine_->Unregister(*this); }

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
  impl_->Submit(queue, std::move(request));
}

void Engine::Unregister(IoQueue& queue) { impl_->Unregister(queue); }

}  // namespace localvol::iopath
