// Engine: the io_uring data path under every volume.
//
// Threading model
//   * Any number of submitter threads (the FUSE workers) call Submit(). Submit
//     appends to the request's IoQueue and, under the engine mutex, moves
//     queued requests into the ring and calls io_uring_submit. It never waits
//     for the disk; it only blocks briefly on the mutex.
//   * One completion thread, owned by the engine, reaps CQEs. For each it
//     either continues the request (short read/write, -EAGAIN) or calls
//     IoRequest::Complete() with no engine lock held, then refills the ring
//     from the queues.
//   * The SQ is touched only under `mu_`; the CQ only by the completion thread.
//
// Queues and the scheduler seam
//   Every volume gets its own IoQueue. Requests wait in their queue until the
//   dispatcher moves them into the ring; today the dispatcher serves queues in
//   round-robin order and keeps at most `max_in_flight` requests in the ring.
//   Per-volume limits and weighted fair sharing plug in at that dispatch step
//   (PickNextQueue in engine.cc).
//
// Failure: Create() fails with a Status naming the missing io_uring feature or
// opcode. Submit() never fails; errors arrive through IoRequest::Complete().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "iopath/io_request.h"

namespace localvol::iopath {

class Engine;

// Per-volume counters, updated on completion. Relaxed atomics: readers get a
// recent, not a consistent, snapshot.
struct IoQueueStats {
  std::atomic<uint64_t> read_ops{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> write_ops{0};
  std::atomic<uint64_t> write_bytes{0};
  std::atomic<uint64_t> other_ops{0};
  std::atomic<uint64_t> errors{0};
};

// One volume's queue in front of the ring. Created by Engine::CreateQueue().
// The destructor waits until every request submitted through this queue has
// completed, then detaches the queue from the engine. Thread-safe.
class IoQueue {
 public:
  ~IoQueue();
  IoQueue(const IoQueue&) = delete;
  IoQueue& operator=(const IoQueue&) = delete;

  const std::string& name() const { return name_; }
  const IoQueueStats& stats() const { return stats_; }

 private:
  friend class Engine;
  IoQueue(Engine* engine, std::string name) : engine_(engine), name_(std::move(name)) {}

  Engine* engine_;
  const std::string name_;
  IoQueueStats stats_;
  // Guarded by the engine mutex (Engine::Impl::mu_ in engine.cc).
  IoRequest* head_ = nullptr;  // requests waiting for the dispatcher, FIFO via next_in_queue
  IoRequest* tail_ = nullptr;
  uint64_t outstanding_ = 0;  // queued + in the ring + completing (until Complete returns)
  bool registered_ = false;
  // Link in the engine's round-robin list of queues that have queued requests.
  IoQueue* next_active_ = nullptr;
  bool active_ = false;
};

struct EngineOptions {
  unsigned ring_entries = 256;   // SQ size; the CQ is twice this
  unsigned max_in_flight = 256;  // requests in the ring at once, <= ring_entries
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

  // Creates a volume's queue. The engine must outlive it.
  std::unique_ptr<IoQueue> CreateQueue(std::string name);

  // Takes ownership of `request` and queues it on `queue`. Never blocks on
  // I/O. Complete() is always called exactly once, possibly before Submit
  // returns (on the completion thread, never on the caller's thread).
  void Submit(IoQueue& queue, std::unique_ptr<IoRequest> request);

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
