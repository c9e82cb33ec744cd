// IoRequest: one data operation against a backing file descriptor, owned by
// the iopath engine from Submit() until its Complete() has returned.
//
// The engine converts io_uring's negative cqe->res to a positive errno exactly
// once (IoResult::err); code above iopath never sees a negative errno.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace localvol::iopath {

class Engine;
class IoQueue;

enum class IoOp : uint8_t {
  kRead,       // pread into buf[0, len) at offset
  kWrite,      // pwrite from buf[0, len) at offset
  kFsync,      // fsync(fd)
  kFdatasync,  // fdatasync(fd)
  kFallocate,  // fallocate(fd, fallocate_mode, offset, len)
};

const char* IoOpName(IoOp op);

// Outcome of a request. For reads and writes `bytes` is the total transferred,
// which may be less than asked only at end of file (reads) or when a later
// chunk of a partially done write failed (writes: err is then 0 and bytes > 0,
// as with a kernel write that stops short). err is a positive errno, 0 on success.
struct IoResult {
  uint64_t bytes = 0;
  int err = 0;
};

// Callers subclass this to carry their reply context (for FUSE: the fuse_req_t
// and the data buffer) and implement Complete().
class IoRequest {
 public:
  virtual ~IoRequest() = default;

  // Called exactly once, without engine locks held: on the engine's
  // completion thread, or, for a request that Engine::SubmitOrRun() ran on
  // the calling thread, on that thread before SubmitOrRun() returns. So it
  // must not take a lock the submitter may hold while submitting. It may call
  // Engine::Submit() to chain another request. It must not block on I/O and
  // must not throw.
  virtual void Complete(IoResult result) noexcept = 0;

  IoOp op = IoOp::kRead;
  int fd = -1;  // borrowed; must stay open until Complete() returns
  uint64_t offset = 0;
  char* buf = nullptr;  // borrowed; read/write only; aligned by the caller if O_DIRECT
  size_t len = 0;       // read/write length, or fallocate length
  int fallocate_mode = 0;

  // Engine bookkeeping: progress of a read/write that completed short and is
  // being continued. Not for callers.
  uint64_t done_bytes = 0;
  uint32_t again_retries = 0;
  uint64_t submit_ns = 0;  // Engine clock at Submit(): wait bound and latency
  IoRequest* next_in_queue = nullptr;

 private:
  friend class Engine;
  IoQueue* queue_ = nullptr;  // set by Engine::Submit
};

}  // namespace localvol::iopath
