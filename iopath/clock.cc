#include "iopath/clock.h"

#include <time.h>

namespace localvol::iopath {
namespace {

class MonotonicClock final : public Clock {
 public:
  uint64_t NowNs() const override {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
  }
};

}  // namespace

const Clock& SteadyClock() {
  static const MonotonicClock* const clock = new MonotonicClock;
  return *clock;
}

}  // namespace localvol::iopath
