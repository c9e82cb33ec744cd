// Scheduler: decides which volume's request enters the ring next.
//
// Each volume is a Flow: its limits (four Throttles, iopath/throttle.h), its
// fair-share weight, and what the scheduler needs of its oldest queued request
// (a Demand). The owner keeps the requests; the scheduler only sees heads.
//
// Algorithm: start-time fair queuing (SFQ; Goyal, Vin and Cheng, SIGCOMM '96)
// over the flows whose head is within its limits.
//   * Virtual time V is the start tag of the request dispatched last.
//   * A flow's head gets start tag S = max(F, V), where F is the finish tag of
//     the flow's previous request; dispatching it sets V = S and
//     F = S + cost / weight.
//   * PickNext() dispatches the eligible flow with the smallest S.
//   A flow that was idle or throttled re-enters at V: it gets its share from
//   now on but no credit for the time it did not use. A flow alone is always
//   picked (work conserving); contending flows receive service in proportion to
//   their weights, within one maximal request of the ideal, whatever their
//   request sizes. SFQ needs no knowledge of the device's speed, which the
//   engine does not have.
//
// Cost model (fair sharing only; limits count ops and bytes separately):
//   cost = op_cost_bytes + request length in bytes. A device spends a fixed
//   time per request (command overhead, seek or flash page access) plus time
//   per byte, so pure op counting lets large requests take more than their
//   share and pure byte counting starves small ones. The default of 32 KiB per
//   op charges a 4 KiB request 36 KiB and a 128 KiB request 160 KiB, roughly
//   the ratio of their service times on NVMe and virtio disks; fsync, fdatasync
//   and fallocate cost one op.
//
// Limits: a flow whose head is over one of its direction's throttles (ops, or
// bytes) is skipped; PickNext() reports when the earliest such flow becomes
// eligible so the owner can wake then. Charging happens at dispatch.
//
// Units: times in ns (from the caller's clock), cost in bytes, tags in
// cost * kTagScale / weight.
//
// Data structures: eligible flows sit in a min-heap by start tag, throttled
// ones in a min-heap by the time they become eligible, so admission is
// O(log backlogged flows). A flow is checked against its limits when it reaches
// the top of the eligible heap; if over, it moves to the throttled heap until
// its buckets allow its head.
//
// Thread-safety: none; the engine calls it under its mutex.
#pragma once

#include <cstdint>
#include <vector>

#include "iopath/io_limits.h"
#include "iopath/throttle.h"

namespace localvol::iopath {

inline constexpr uint64_t kDefaultOpCostBytes = 32 * 1024;

enum class IoDirection : uint8_t { kRead, kWrite };

// What the scheduler knows of one request.
struct Demand {
  IoDirection direction = IoDirection::kRead;
  uint64_t bytes = 0;       // 0 for fsync, fdatasync, fallocate
  uint64_t enqueue_ns = 0;  // when it was submitted: for the wait bound
};

class Flow;
class Scheduler;

// One binary min-heap of flows; each flow knows its position, so any flow can
// be removed in O(log n). `Before` orders two flows.
class FlowHeap {
 public:
  using Before = bool (*)(const Flow* a, const Flow* b);
  explicit FlowHeap(Before before) : before_(before) {}
  bool empty() const { return flows_.empty(); }
  size_t size() const { return flows_.size(); }
  Flow* top() const { return flows_.front(); }
  const std::vector<Flow*>& flows() const { return flows_; }
  void Push(Flow* flow);
  void Erase(Flow* flow);

 private:
  void Place(size_t i, Flow* flow);
  void SiftUp(size_t i);
  void SiftDown(size_t i);
  Before before_;
  std::vector<Flow*> flows_;
};

class Flow {
 public:
  explicit Flow(void* owner = nullptr) : owner_(owner) {}
  Flow(const Flow&) = delete;
  Flow& operator=(const Flow&) = delete;

  void* owner() const { return owner_; }
  bool backlogged() const { return state_ != State::kIdle; }

 private:
  friend class Scheduler;
  friend class FlowHeap;
  enum class State : uint8_t { kIdle, kEligible, kThrottled };

  void* const owner_;
  uint32_t weight_ = kDefaultWeight;
  Throttle read_ops_, write_ops_, read_bytes_, write_bytes_;
  uint64_t finish_tag_ = 0;
  uint64_t start_tag_ = 0;       // key in the eligible heap
  uint64_t eligible_at_ns_ = 0;  // key in the throttled heap
  Demand head_;
  State state_ = State::kIdle;
  size_t heap_index_ = 0;
  uint64_t throttled_since_ns_ = 0;  // 0: the head is not known to be throttled
};

// kFair: start-time fair queuing, as above. kFifo: eligible heads go in
// arrival order whatever their volume (limits still apply): no fair sharing,
// for measuring what it buys.
enum class IoPolicy : uint8_t { kFair, kFifo };

struct SchedulerOptions {
  uint64_t op_cost_bytes = kDefaultOpCostBytes;
  IoPolicy policy = IoPolicy::kFair;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});

  // Applies a flow's limits and weight (validated by ValidateIoLimits) from now.
  void Configure(Flow& flow, const IoLimits& limits, uint64_t now_ns);

  // The flow's oldest request is now `head`: call it when a flow that had no
  // queued request gets one, and after PickNext() or TakeOverdue() took its
  // head if it has more. The flow must not be backlogged.
  void Enqueue(Flow& flow, const Demand& head);

  struct Pick {
    Flow* flow = nullptr;       // its head is admitted and charged; nullptr: none may go now
    uint64_t throttled_ns = 0;  // how long that head had been held back by limits
  };
  // Admits the head of the eligible flow with the smallest start tag, charges
  // its throttles, and takes the flow off the backlog (Enqueue its next head).
  // When it returns no flow but flows are backlogged, all are throttled:
  // *wake_at_ns is the earliest time one becomes eligible (else it is left
  // unchanged). Never returns a throttled flow.
  Pick PickNext(uint64_t now_ns, uint64_t* wake_at_ns);

  // PickNext() restricted to the flows `allowed` accepts (others stay
  // backlogged, untouched). O(backlogged flows): for when the owner must
  // hold most flows back, which the engine does only while its ring is at the
  // contended in-flight cap.
  using FlowFilter = bool (*)(const Flow& flow);
  Pick PickNextAllowed(uint64_t now_ns, uint64_t* wake_at_ns, FlowFilter allowed);

  // A backlogged flow whose head was enqueued at or before `deadline_ns`, taken
  // off the backlog (the owner fails that request and Enqueues the next), or
  // nullptr. *throttled_ns gets the time that head spent throttled.
  Flow* TakeOverdue(uint64_t deadline_ns, uint64_t now_ns, uint64_t* throttled_ns);

  // Takes a flow off the backlog, if it is on it (the owner is going away).
  void Remove(Flow& flow);

  size_t backlogged() const { return eligible_.size() + throttled_.size(); }

 private:
  uint64_t CostTag(const Flow& flow, const Demand& d) const;
  static Throttle& OpsThrottle(Flow& f, IoDirection d);
  static Throttle& BytesThrottle(Flow& f, IoDirection d);
  // Time until `flow`'s head is within its limits, 0 if it is now.
  static uint64_t HeadWaitNs(Flow& flow, uint64_t now_ns);
  uint64_t EndThrottled(Flow& flow, uint64_t now_ns);
  // Puts a flow on the eligible heap at the current virtual time.
  void MakeEligible(Flow& flow);
  // Moves throttled flows whose wait is over to the eligible heap.
  void ReleaseThrottled(uint64_t now_ns);
  // Moves an eligible flow over its limits to the throttled heap.
  void HoldBack(Flow& flow, uint64_t wait_ns, uint64_t now_ns);
  // Takes an eligible flow within its limits off the backlog and charges it.
  Pick Admit(Flow& flow, uint64_t now_ns);

  const SchedulerOptions options_;
  uint64_t virtual_time_ = 0;
  FlowHeap eligible_;   // by start tag
  FlowHeap throttled_;  // by eligible_at_ns_
};

}  // namespace localvol::iopath
