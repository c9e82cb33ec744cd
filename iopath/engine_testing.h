// Private to iopath and its tests: a fault-injection seam for Engine.
//
// Production code builds engines with Engine::Create(). Tests that need the
// kernel to misbehave (short transfers, -EAGAIN, a write that fails halfway)
// build one with EngineTestPeer::Create() and hooks that bend what the engine
// asks of, or hears from, the ring. The data still goes through real io_uring.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "base/status.h"
#include "iopath/engine.h"

namespace localvol::iopath {

struct EngineTestHooks {
  // Caps the bytes asked of one read/write SQE, so every request larger than
  // this is split into short transfers that the engine must continue. 0: no
  // cap beyond the engine's own.
  size_t max_bytes_per_sqe = 0;

  // Sees every CQE of a request (res as the kernel reported it, -errno on
  // failure) and returns the res the engine acts on. Runs on the completion
  // thread with no engine lock held; must not throw. Empty: res is used as is.
  std::function<int(const IoRequest& request, int res)> cqe_res_filter;

  // Runs on the thread about to call io_uring_enter to submit, right before
  // each such call, with no engine lock held. Empty: nothing runs.
  std::function<void()> before_enter;
};

class EngineTestPeer {
 public:
  // Engine::Create() with hooks. Same failures.
  static Result<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                EngineTestHooks hooks);
};

}  // namespace localvol::iopath
