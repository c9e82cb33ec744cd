#include "iopath/scheduler.h"

#include <algorithm>

namespace localvol::iopath {
namespace {

// Tags are cost * kTagScale / weight, so that weights up to kMaxWeight keep
// precision for small costs.
constexpr uint64_t kTagScale = 1 << 16;

// Tags only grow and may wrap after months of traffic; they are compared by
// signed difference, which is exact while live tags are within 2^63 of each
// other (they are within a few requests' cost).
bool TagBefore(uint64_t a, uint64_t b) { return static_cast<int64_t>(a - b) < 0; }
uint64_t TagMax(uint64_t a, uint64_t b) { return TagBefore(a, b) ? b : a; }

}  // namespace

// ---------------------------------------------------------------------------
// FlowHeap

void FlowHeap::Place(size_t i, Flow* flow) {
  flows_[i] = flow;
  flow->heap_index_ = i;
}

void FlowHeap::SiftUp(size_t i) {
  Flow* flow = flows_[i];
  while (i > 0) {
    const size_t parent = (i - 1) / 2;
    if (!before_(flow, flows_[parent])) break;
    Place(i, flows_[parent]);
    i = parent;
  }
  Place(i, flow);
}

void FlowHeap::SiftDown(size_t i) {
  Flow* flow = flows_[i];
  const size_t n = flows_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && before_(flows_[child + 1], flows_[child])) ++child;
    if (!before_(flows_[child], flow)) break;
    Place(i, flows_[child]);
    i = child;
  }
  Place(i, flow);
}

void FlowHeap::Push(Flow* flow) {
  flows_.push_back(flow);
  SiftUp(flows_.size() - 1);
}

void FlowHeap::Erase(Flow* flow) {
  const size_t i = flow->heap_index_;
  Flow* last = flows_.back();
  flows_.pop_back();
  if (last == flow) return;
  Place(i, last);
  SiftUp(i);
  SiftDown(last->heap_index_);
}

// ---------------------------------------------------------------------------
// Scheduler

Scheduler::Scheduler(SchedulerOptions options)
    : options_(options),
      eligible_(
          [](const Flow* a, const Flow* b) { return TagBefore(a->start_tag_, b->start_tag_); }),
      throttled_(
          [](const Flow* a, const Flow* b) { return a->eligible_at_ns_ < b->eligible_at_ns_; }) {}

Throttle& Scheduler::OpsThrottle(Flow& f, IoDirection d) {
  return d == IoDirection::kRead ? f.read_ops_ : f.write_ops_;
}

Throttle& Scheduler::BytesThrottle(Flow& f, IoDirection d) {
  return d == IoDirection::kRead ? f.read_bytes_ : f.write_bytes_;
}

void Scheduler::Configure(Flow& flow, const IoLimits& limits, uint64_t now_ns) {
  flow.weight_ = std::clamp<uint32_t>(limits.weight, 1, kMaxWeight);
  flow.read_ops_.Configure(limits.read_iops, now_ns);
  flow.write_ops_.Configure(limits.write_iops, now_ns);
  flow.read_bytes_.Configure(limits.read_bps, now_ns);
  flow.write_bytes_.Configure(limits.write_bps, now_ns);
  // A throttled flow's wake-up time was computed with the old limits; it is
  // checked again against the new ones when it reaches the top.
  if (flow.state_ == Flow::State::kThrottled) {
    throttled_.Erase(&flow);
    MakeEligible(flow);
  }
}

void Scheduler::MakeEligible(Flow& flow) {
  flow.start_tag_ = options_.policy == IoPolicy::kFifo ? flow.head_.enqueue_ns
                                                       : TagMax(flow.finish_tag_, virtual_time_);
  flow.state_ = Flow::State::kEligible;
  eligible_.Push(&flow);
}

void Scheduler::Enqueue(Flow& flow, const Demand& head) {
  flow.head_ = head;  // before MakeEligible: FIFO orders by its enqueue time
  if (flow.state_ == Flow::State::kIdle) MakeEligible(flow);
}

void Scheduler::Remove(Flow& flow) {
  if (flow.state_ == Flow::State::kEligible) eligible_.Erase(&flow);
  if (flow.state_ == Flow::State::kThrottled) throttled_.Erase(&flow);
  flow.state_ = Flow::State::kIdle;
  flow.throttled_since_ns_ = 0;
}

uint64_t Scheduler::CostTag(const Flow& flow, const Demand& d) const {
  return (options_.op_cost_bytes + d.bytes) * kTagScale / flow.weight_;
}

uint64_t Scheduler::HeadWaitNs(Flow& flow, uint64_t now_ns) {
  const IoDirection dir = flow.head_.direction;
  uint64_t wait = OpsThrottle(flow, dir).WaitNs(now_ns);
  if (flow.head_.bytes > 0) wait = std::max(wait, BytesThrottle(flow, dir).WaitNs(now_ns));
  return wait;
}

uint64_t Scheduler::EndThrottled(Flow& flow, uint64_t now_ns) {
  if (flow.throttled_since_ns_ == 0) return 0;
  const uint64_t since = flow.throttled_since_ns_;
  flow.throttled_since_ns_ = 0;
  return now_ns > since ? now_ns - since : 0;
}

void Scheduler::ReleaseThrottled(uint64_t now_ns) {
  // Throttled flows whose wait is over rejoin at the current virtual time: no
  // credit for the service they could not take.
  while (!throttled_.empty() && throttled_.top()->eligible_at_ns_ <= now_ns) {
    Flow* flow = throttled_.top();
    throttled_.Erase(flow);
    MakeEligible(*flow);
  }
}

void Scheduler::HoldBack(Flow& flow, uint64_t wait_ns, uint64_t now_ns) {
  eligible_.Erase(&flow);
  if (flow.throttled_since_ns_ == 0) flow.throttled_since_ns_ = now_ns;
  flow.eligible_at_ns_ = now_ns + wait_ns;
  flow.state_ = Flow::State::kThrottled;
  throttled_.Push(&flow);
}

Scheduler::Pick Scheduler::Admit(Flow& flow, uint64_t now_ns) {
  eligible_.Erase(&flow);
  const Demand& head = flow.head_;
  OpsThrottle(flow, head.direction).Charge(1, now_ns);
  if (head.bytes > 0) BytesThrottle(flow, head.direction).Charge(head.bytes, now_ns);
  if (options_.policy == IoPolicy::kFair) {
    virtual_time_ = flow.start_tag_;
    flow.finish_tag_ = flow.start_tag_ + CostTag(flow, head);
  }
  flow.state_ = Flow::State::kIdle;
  return Pick{&flow, EndThrottled(flow, now_ns)};
}

Scheduler::Pick Scheduler::PickNext(uint64_t now_ns, uint64_t* wake_at_ns) {
  ReleaseThrottled(now_ns);
  while (!eligible_.empty()) {
    Flow* flow = eligible_.top();
    const uint64_t wait = HeadWaitNs(*flow, now_ns);
    if (wait == 0) return Admit(*flow, now_ns);
    HoldBack(*flow, wait, now_ns);
  }
  if (!throttled_.empty()) *wake_at_ns = throttled_.top()->eligible_at_ns_;
  return Pick{};
}

Scheduler::Pick Scheduler::PickNextAllowed(uint64_t now_ns, uint64_t* wake_at_ns,
                                           FlowFilter allowed) {
  ReleaseThrottled(now_ns);
  for (;;) {
    Flow* best = nullptr;
    for (Flow* flow : eligible_.flows()) {
      if (allowed(*flow) && (best == nullptr || TagBefore(flow->start_tag_, best->start_tag_))) {
        best = flow;
      }
    }
    if (best == nullptr) break;
    const uint64_t wait = HeadWaitNs(*best, now_ns);
    if (wait == 0) return Admit(*best, now_ns);
    HoldBack(*best, wait, now_ns);  // then look again without it
  }
  if (!throttled_.empty()) *wake_at_ns = throttled_.top()->eligible_at_ns_;
  return Pick{};
}

Flow* Scheduler::TakeOverdue(uint64_t deadline_ns, uint64_t now_ns, uint64_t* throttled_ns) {
  for (const FlowHeap* heap : {&eligible_, &throttled_}) {
    for (Flow* flow : heap->flows()) {
      if (flow->head_.enqueue_ns <= deadline_ns) {
        *throttled_ns = EndThrottled(*flow, now_ns);
        Remove(*flow);
        return flow;
      }
    }
  }
  return nullptr;
}

}  // namespace localvol::iopath
