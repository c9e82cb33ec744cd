// KernelRing: FUSE over io_uring, the kernel's second way to hand requests
// to a FUSE server (Linux 6.14, fs/fuse/dev_uring.c), under libfuse 3.14.
//
// On /dev/fuse every request costs the server a read(2) to fetch it and a
// writev(2) to answer it, and any idle worker may be woken for it. Over
// io_uring the kernel keeps one queue per CPU. The server registers "entries"
// (a header buffer and a payload buffer each) with IORING_OP_URING_CMD; the
// kernel copies a request into a free entry of the queue of the CPU the
// calling process runs on and completes the command. The server answers by
// writing the reply into the same entry and submitting COMMIT_AND_FETCH,
// which also hands the entry back for the next request: one io_uring_enter
// commits a batch of replies and waits for the next requests, instead of a
// writev and a read per request.
//
// This class runs one thread per CPU queue ("fuse-ring-<queue>"), each with its own io_uring and
// `depth` entries; a reply sent from another thread is handed to the queue's
// thread, the ring's single issuer. A request
// taken from an entry is handed to libfuse's dispatcher
// (fuse_session_process_buf) like one read from /dev/fuse, so every handler
// runs unchanged. Its reply, sent from whichever thread answers it (a handler
// or the I/O completion thread), reaches the reply hook of the protocol layer,
// which calls TryCommit() to route it into the entry instead of /dev/fuse.
//
// The kernel keeps using /dev/fuse for FORGET and INTERRUPT, for
// notifications, and for everything until every queue has an entry, so
// libfuse's own loop keeps running beside the ring.
//
// The kernel offers FUSE over io_uring only when the fuse module parameter
// enable_uring is set (it is off by default in 6.14-6.18).
#pragma once

#include <fuse_lowlevel.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "base/status.h"

namespace localvol::fuse {

class KernelRing {
 public:
  // Starts serving `session` (mounted, INIT granted FUSE_OVER_IO_URING) over
  // io_uring: one thread and `depth` entries of `payload_size` bytes per CPU
  // queue. `payload_size` must be at least the connection's max_write and
  // max_pages * page size. The threads register their entries once the
  // kernel has taken the INIT reply, so this may be called from the init
  // callback.
  //
  // A queue that has had no request for `idle_release` (0: never) gives its
  // entries' memory back to the system; the next requests fault it in again
  // as zero pages. Entries are made resident only by the requests that use
  // them, so without this a volume keeps what its busiest moment touched.
  //
  // `thread_placement`: whether the queue threads place themselves on CPUs
  // (fuse/thread_placement.h) or are left to the scheduler.
  static Result<std::unique_ptr<KernelRing>> Start(fuse_session* session, unsigned depth,
                                                   size_t payload_size,
                                                   std::chrono::milliseconds idle_release,
                                                   bool thread_placement);

  // Stops the threads and releases the rings and buffers. Call only after the
  // FUSE connection has ended (unmounted or aborted) and every request taken
  // from the ring has been answered: a live connection would keep routing
  // requests to entries nobody serves.
  ~KernelRing();
  KernelRing(const KernelRing&) = delete;
  KernelRing& operator=(const KernelRing&) = delete;

  // Requests taken from the ring so far, all queues together.
  uint64_t requests_served() const;

  // Bytes of the queues' memory (entries' headers and payload buffers, and
  // the buffer requests are assembled in) resident now, all queues together
  // (mincore).
  uint64_t resident_bytes() const;

  // For the protocol layer's reply hook: if the reply in `iov` (a
  // fuse_out_header first) answers a request taken from one of this ring's
  // entries, copies it into that entry, commits it and returns true, with
  // `*written` set as writev would. Returns false for anything else
  // (notifications, requests read from /dev/fuse). Any thread.
  bool TryCommit(const iovec* iov, int count, ssize_t* written);

  struct Queue;

 private:
  struct InFlight;

  KernelRing() = default;
  std::unique_ptr<InFlight> in_flight_;
  std::vector<std::unique_ptr<Queue>> queues_;
};

}  // namespace localvol::fuse
