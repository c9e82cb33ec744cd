// The transport seam: the /dev/fuse transport under libfuse 3.14, the
// hand-off of each request's Request (fuse/request.h) to its handler, and the
// protocol features newer than libfuse 3.14, negotiated and applied here.
//
// libfuse 3.14 (Debian 12) cannot ask the kernel for the features that
// decide how fast writes are, and it drops the request flags that come with
// them (fuse/request.h, Feature):
//
//  - FUSE_HANDLE_KILLPRIV_V2 (kernel 5.11). Without it the kernel must find
//    out before every write whether the file carries security.capability,
//    which for FUSE is a GETXATTR round trip to this server, taken while the
//    inode lock is held. With it the server clears setuid/setgid itself when
//    the kernel says so (Request::kills_suidgid), and the backing filesystem
//    drops the capability when the backing file is written.
//  - FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6): files opened with
//    FOPEN_DIRECT_IO may still be mapped shared, and the kernel keeps their
//    page cache coherent with direct writes.
//  - FOPEN_PARALLEL_DIRECT_WRITES (kernel 6.2): direct writes to one file
//    inside its size run concurrently instead of one at a time. Added to
//    every FOPEN_DIRECT_IO open reply.
//  - FUSE_OVER_IO_URING (kernel 6.14): the second transport
//    (fuse/kernel_ring.h). Its replies leave through the reply hook here too.
//
// The layer is libfuse's custom I/O hook (fuse_session_custom_io). Its read
// hook receives each request: the header into libfuse's buffer and what
// follows into a page-aligned buffer, so that a WRITE's data can go to the
// backing file as it is, O_DIRECT included, where libfuse would put it right
// behind the 80-byte header (unaligned), to be copied once more. Its reply
// hook amends the INIT and OPEN/CREATE replies on their way out, with what
// the handler decided (Request::Ask, Request::AddOpenFlags), and routes the
// replies of ring requests into their ring entries.
//
// The hand-off: libfuse's dispatcher (fuse_session_process_buf) gives a
// handler only a fuse_req_t, with no room for a pointer of ours, but it
// dispatches a request on the thread that received it, before that thread
// receives another. So the transport parks the Request in its thread's
// hand-off slot right before libfuse dispatches, and the trampolines in
// fuse/lowlevel.cc (and nothing else) take it from there and pass it to the
// handler. INIT, OPEN and CREATE are answered synchronously, so their replies
// find their Request in the slot too; a reply sent later from another thread
// is never amended.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>

#include "base/status.h"
#include "fuse/request.h"

namespace localvol::fuse {
class Filesystem;
class KernelRing;
}  // namespace localvol::fuse

namespace localvol::fuse::protocol {

// One FUSE connection's transport state. It is the session's userdata
// (fuse_session_new), since that is all libfuse hands the hooks.
class Connection {
 public:
  explicit Connection(Filesystem* server) : server_(server) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Filesystem* server() const { return server_; }

  // The ring transport of this connection, set once it runs (from the init
  // callback) and cleared before it is destroyed, which is only after the
  // connection ended and every ring request was answered.
  void AttachRing(KernelRing* ring) { ring_.store(ring, std::memory_order_release); }
  KernelRing* ring() const { return ring_.load(std::memory_order_acquire); }

 private:
  Filesystem* const server_;
  std::atomic<KernelRing*> ring_{nullptr};
};

// Puts the layer under `session`, which must be mounted and not yet served,
// and whose userdata is a Connection.
Status Install(fuse_session* session);

// For a transport, around libfuse's dispatch of a request it received on
// this thread: parks `request` in the hand-off slot (nullptr clears it).
void HandOff(Request* request);

// For the trampolines (fuse/lowlevel.cc) only: the Request libfuse is
// dispatching on this thread.
Request& HandedOff();

}  // namespace localvol::fuse::protocol
