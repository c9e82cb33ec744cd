#include "fuse/queue_placement.h"

#include <utility>

namespace localvol::fuse {

QueuePlacement::QueuePlacement(unsigned cpu, const cpu_set_t& allowed, Apply apply)
    : cpu_(cpu), allowed_(allowed), apply_(std::move(apply)) {
  can_pin_ = cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed_) && CPU_COUNT(&allowed_) > 1;
  if (!apply_) {
    apply_ = [](const cpu_set_t& mask) { return sched_setaffinity(0, sizeof mask, &mask) == 0; };
  }
}

cpu_set_t QueuePlacement::CurrentAffinity() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) CPU_ZERO(&mask);
  return mask;
}

void QueuePlacement::Observe(size_t requests) {
  if (!can_pin_ || requests == 0) return;
  ++wakes_;
  requests_ += requests;
  if (requests_ < kWindow) return;
  const double per_wake = static_cast<double>(requests_) / static_cast<double>(wakes_);
  if (!pinned_ && per_wake < kPinBelow) {
    Set(true);
  } else if (pinned_ && per_wake > kUnpinAbove) {
    Set(false);
  }
  wakes_ = 0;
  requests_ = 0;
}

void QueuePlacement::Set(bool pin) {
  cpu_set_t mask = allowed_;
  if (pin) {
    CPU_ZERO(&mask);
    CPU_SET(cpu_, &mask);
  }
  // On failure (the CPU went offline, a cpuset changed) the placement stays
  // and the next window tries again.
  if (apply_(mask)) pinned_ = pin;
}

}  // namespace localvol::fuse
