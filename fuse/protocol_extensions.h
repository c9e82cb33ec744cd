// Protocol extensions: FUSE features newer than libfuse 3.14, negotiated on
// the raw /dev/fuse channel underneath it.
//
// libfuse 3.14 (Debian 12) cannot ask the kernel for three things that decide
// how fast writes are, and it drops the request flags that come with them:
//
//  - FUSE_HANDLE_KILLPRIV_V2 (kernel 5.11). Without it the kernel must find
//    out before every write whether the file carries security.capability,
//    which for FUSE is a GETXATTR round trip to this server, taken while the
//    inode lock is held. With it the server clears setuid/setgid itself when
//    the kernel says so (FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID,
//    FUSE_OPEN_KILL_SUIDGID), and the backing filesystem drops the
//    capability when the backing file is written.
//  - FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6): files opened with
//    FOPEN_DIRECT_IO may still be mapped shared, and the kernel keeps their
//    page cache coherent with direct writes.
//  - FOPEN_PARALLEL_DIRECT_WRITES (kernel 6.2): direct writes to one file
//    inside its size run concurrently instead of one at a time.
//
// It also receives each WRITE's data straight into a page-aligned buffer the
// server can hand to the backing file as it is, O_DIRECT included, where
// libfuse would put it right behind the 80-byte request header (unaligned),
// to be copied once more. TakeWritePayload() gives the Write handler that
// buffer.
//
// The layer is libfuse's custom I/O hook (fuse_session_custom_io): it reads
// each request's header before libfuse does, and amends the INIT and OPEN/
// CREATE replies on their way out. Everything it learns about a request lives
// in thread-local state for the duration of that request: libfuse's loop reads
// a request and calls the handler on the same thread, so a handler may ask
// about "its" request. A reply sent later from another thread (the I/O
// completion thread) is never amended; OPEN, CREATE and INIT are answered
// synchronously.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>

#include "base/status.h"
#include "fuse/buffer_pool.h"

namespace localvol::fuse::protocol {

enum class Feature : uint32_t {
  kKillPrivV2 = 1u << 0,
  kDirectIoAllowMmap = 1u << 1,
  // FUSE_OVER_IO_URING (kernel 6.14): requests may come through io_uring
  // entries (fuse/kernel_ring.h) instead of read(2) on /dev/fuse.
  kOverIoUring = 1u << 2,
};

// Puts the layer under `session`, which must be mounted and not yet served.
Status Install(fuse_session* session);

// Inside the init callback only: whether the kernel offers `feature`, and
// asking for it (granted exactly when offered).
bool KernelOffers(Feature feature);
void Request(Feature feature);

// Inside a WRITE, SETATTR, OPEN or CREATE callback only: whether the kernel
// asks the server to clear setuid/setgid as part of this request. For writes,
// truncates and O_TRUNC opens that means the caller lacks CAP_FSETID; for a
// chown it is always set.
bool RequestKillsSuidgid();

// Inside a WRITE callback only: the request's data, received into an aligned
// buffer of its own (the `buf` libfuse passes does not hold it then). Empty
// when the data is in libfuse's buffer after all (a write larger than
// BufferPool::kMaxPooledSize).
PooledBuffer TakeWritePayload();

// Inside a READ callback only: where the reply's data can be produced so that
// it needs no copy on its way to the kernel (the payload buffer of the ring
// entry the request came in), at least `size` bytes. Empty when there is no
// such place (the request came from /dev/fuse); then any buffer will do.
PooledBuffer TakeReplyBuffer(size_t size);

// For KernelRing, before it hands a request from a ring entry to libfuse:
// `request` holds the fuse_in_header and the opcode's struct (`header_len`
// bytes). `payload` is the entry's payload buffer, which stays untouched
// until the request is answered; for a WRITE it holds the data, which is then
// not behind the header. `others_waiting`: the ring thread has more requests
// ready behind this one.
void BeginRingRequest(const char* request, size_t header_len, char* payload,
                      size_t payload_capacity, bool others_waiting);

// Inside any callback: whether the request came from a ring entry (its
// thread is a ring queue's) rather than from /dev/fuse (a worker's).
bool RequestFromRing();

// Inside any callback: whether the thread must not wait for the disk because
// other requests wait for it. A ring queue's thread serves its requests one
// after the other; a /dev/fuse worker is one of a pool that grows on demand.
bool ThreadHasOthersWaiting();

}  // namespace localvol::fuse::protocol
