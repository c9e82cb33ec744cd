#include "fuse/thread_placement.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "base/unique_fd.h"

namespace localvol::fuse {

ThreadPlacement::ThreadPlacement(const cpu_set_t& allowed, int batch_cpu, Apply apply)
    : allowed_(allowed), apply_(std::move(apply)) {
  can_pin_ = CPU_COUNT(&allowed_) > 1;
  const bool batch_cpu_allowed =
      can_pin_ && batch_cpu >= 0 && batch_cpu < CPU_SETSIZE && CPU_ISSET(batch_cpu, &allowed_);
  batch_cpu_ = batch_cpu_allowed ? batch_cpu : kAnyCpu;
  if (!apply_) {
    apply_ = [](const cpu_set_t& mask) { return sched_setaffinity(0, sizeof mask, &mask) == 0; };
  }
}

cpu_set_t ThreadPlacement::CurrentAffinity() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) CPU_ZERO(&mask);
  return mask;
}

ThreadPlacement::Decision ThreadPlacement::Count(size_t requests, bool spread) {
  if (!can_pin_ || requests == 0) return Decision::kNone;
  ++wakes_;
  requests_ += requests;
  if (!spread) unspread_ += requests;
  if (requests_ < kWindow) return Decision::kNone;
  const double per_wake = static_cast<double>(requests_) / static_cast<double>(wakes_);
  const bool spread_window = unspread_ * 2 < requests_;
  wakes_ = 0;
  requests_ = 0;
  unspread_ = 0;
  // Following or not, one at a time means "be on the target": it may have
  // moved.
  if (per_wake < kFollowBelow) return Decision::kFollow;
  if (per_wake <= kBatchAbove) return Decision::kNone;
  batch_target_ = spread_window ? batch_cpu_ : kAnyCpu;
  if (batched_ && pinned_cpu_ == batch_target_) return Decision::kNone;
  return Decision::kBatch;
}

// Here and below: on failure to apply a mask (the CPU went offline, a cpuset
// changed) the placement stays and the next window tries again.
bool ThreadPlacement::ApplyOnly(int cpu) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  CPU_SET(cpu, &mask);
  return apply_(mask);
}

void ThreadPlacement::PinTo(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed_)) return;
  if (cpu != pinned_cpu_) {
    if (!ApplyOnly(cpu)) return;
    pinned_cpu_ = cpu;
  }
  batched_ = false;  // also when the batch CPU is the target: it now follows
}

void ThreadPlacement::PlaceForBatches() {
  if (batch_target_ == kAnyCpu) {
    if (pinned_cpu_ != -1 && !apply_(allowed_)) return;
    pinned_cpu_ = -1;
  } else if (pinned_cpu_ != batch_target_) {
    if (!ApplyOnly(batch_target_)) return;
    pinned_cpu_ = batch_target_;
  }
  batched_ = true;
}

void ThreadPlacement::Unpin() {
  if (!apply_(allowed_)) return;
  pinned_cpu_ = -1;
  batched_ = true;
}

int SpreadCpu(const cpu_set_t& allowed, uint64_t ordinal) {
  const int count = CPU_COUNT(&allowed);
  if (count == 0) return -1;
  uint64_t skip = ordinal % static_cast<uint64_t>(count);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (skip == 0) return cpu;
    --skip;
  }
  return -1;
}

int LastCpuOf(pid_t tid) {
  if (tid <= 0) return -1;
  const std::string path = "/proc/" + std::to_string(tid) + "/stat";
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  char buf[1024];
  const ssize_t n = read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  // The name (field 2) is in parentheses and may hold spaces and
  // parentheses itself; the fields after it start at the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return -1;
  // A space precedes each field from 3 (state) on; "processor" is field 39.
  for (int field = 3; field <= 39; ++field) {
    p = std::strchr(p + 1, ' ');
    if (p == nullptr) return -1;
  }
  char* end = nullptr;
  const long cpu = std::strtol(p + 1, &end, 10);
  if (end == p + 1 || cpu < 0 || cpu >= CPU_SETSIZE) return -1;
  return static_cast<int>(cpu);
}

}  // namespace localvol::fuse
