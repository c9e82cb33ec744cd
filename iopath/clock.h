// Clock: where iopath's throttles and scheduler read the time, so that tests
// can drive them with a ManualClock and no I/O.
//
// Thread-safety: SteadyClock() is safe from any thread. A ManualClock is not
// synchronised; tests advance it from the thread that uses it.
#pragma once

#include <cstdint>

namespace localvol::iopath {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds on a monotonic timeline with an arbitrary origin.
  virtual uint64_t NowNs() const = 0;
};

// CLOCK_MONOTONIC. Never destroyed.
const Clock& SteadyClock();

class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ns = 1'000'000'000) : now_ns_(start_ns) {}
  uint64_t NowNs() const override { return now_ns_; }
  void Advance(uint64_t ns) { now_ns_ += ns; }
  void Set(uint64_t ns) { now_ns_ = ns; }

 private:
  uint64_t now_ns_;
};

}  // namespace localvol::iopath
