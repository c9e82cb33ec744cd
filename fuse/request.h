// Request: what the transport knows about one FUSE request, passed
// explicitly to the handler that serves it (private to fuse/).
//
// A request reaches the server by one of two transports: read(2) on
// /dev/fuse (fuse/protocol_extensions.cc, libfuse's worker threads) or an
// entry of a FUSE-over-io_uring queue (fuse/kernel_ring.cc, a queue thread).
// The transport fills a Request from the raw request before libfuse parses
// it; the trampolines in fuse/lowlevel.cc hand it to the handler. It lives
// while the handler runs on the transport's thread: a reply sent later from
// another thread (the I/O completion thread) must not use it. Whatever such
// a reply needs (a payload buffer) is taken out of it first.
#pragma once

#include <fuse_lowlevel.h>

#include <cstddef>
#include <cstdint>

#include "fuse/buffer_pool.h"

namespace localvol::fuse {

// The protocol features libfuse 3.14 cannot negotiate; the transport asks
// for them in the INIT reply (fuse/protocol_extensions.h).
enum class Feature : uint32_t {
  // FUSE_HANDLE_KILLPRIV_V2 (kernel 5.11): the server clears setuid/setgid
  // when a request says so (kills_suidgid()).
  kKillPrivV2 = 1u << 0,
  // FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6): FOPEN_DIRECT_IO files may still
  // be mapped shared.
  kDirectIoAllowMmap = 1u << 1,
  // FUSE_OVER_IO_URING (kernel 6.14): requests may come through io_uring
  // entries (fuse/kernel_ring.h) instead of read(2) on /dev/fuse.
  kOverIoUring = 1u << 2,
  // FUSE_PASSTHROUGH (kernel 6.9): open replies may name a backing file the
  // kernel then reads directly (fuse/passthrough.h). Granted, the INIT reply
  // also carries passthrough::kMaxStackDepth.
  kPassthrough = 1u << 3,
};

enum class Transport : uint8_t { kDevFuse, kRing };

class Request {
 public:
  Request() = default;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  // ---- Filled by the transport.
  // Starts a request from its first `length` bytes (the fuse_in_header and,
  // for the opcodes that carry flags the server needs, their op struct).
  void Begin(Transport transport, const char* raw, size_t length);
  // A WRITE whose data the transport received into `payload` (aligned, the
  // data at its start) rather than behind the header.
  void SetWritePayload(PooledBuffer payload) { payload_ = std::move(payload); }
  // A ring request: the entry's payload buffer, `capacity` bytes, which stays
  // untouched until the request is answered. For a WRITE it holds the data;
  // for a READ the reply can be produced in it.
  void SetRingPayload(char* payload, size_t capacity) {
    ring_payload_ = payload;
    ring_payload_capacity_ = capacity;
  }
  // The serving thread has more requests ready behind this one.
  void SetOthersWaiting(bool others_waiting) { others_waiting_ = others_waiting; }

  // ---- For the handler.
  Transport transport() const { return transport_; }
  uint32_t opcode() const { return opcode_; }
  uint64_t unique() const { return unique_; }
  // WRITE, SETATTR, OPEN and CREATE: whether the kernel asks the server to
  // clear setuid/setgid as part of this request (killpriv v2). For writes,
  // truncates and O_TRUNC opens that means the caller lacks CAP_FSETID; for
  // a chown it is always set.
  bool kills_suidgid() const { return kills_suidgid_; }
  // Whether the thread must not wait for the disk because other requests
  // wait for it: a ring queue's thread serves its requests one after the
  // other; a /dev/fuse worker is one of a pool that grows on demand.
  bool others_waiting() const { return others_waiting_; }
  // WRITE: the data, in an aligned buffer of its own; then the `buf` libfuse
  // passes does not hold it. Empty when the data is in libfuse's buffer
  // after all (a write larger than BufferPool::kMaxPooledSize). Once.
  PooledBuffer TakeWritePayload();
  // READ: where the reply's data can be produced so that it needs no copy on
  // its way to the kernel (the ring entry's payload buffer), at least `size`
  // bytes. Empty when there is no such place; then any buffer will do. Once.
  PooledBuffer TakeReplyBuffer(size_t size);

  // ---- INIT only.
  bool KernelOffers(Feature feature) const;
  // Asks for `feature`; granted exactly when offered.
  void Ask(Feature feature);
  // The INIT flags (flags | flags2 << 32) to add to libfuse's reply.
  uint64_t init_granted() const { return init_offered_ & init_asked_; }

  // ---- Set by the handler for the reply amendments of the transport.
  // OPEN and CREATE: the FOPEN_* flags libfuse 3.14 cannot express, to add
  // to the reply.
  void AddOpenFlags(uint32_t flags) { extra_open_flags_ |= flags; }
  uint32_t extra_open_flags() const { return extra_open_flags_; }
  // OPEN and CREATE with FOPEN_PASSTHROUGH: the backing id to reply with.
  void SetBackingId(int32_t id) { backing_id_ = id; }
  int32_t backing_id() const { return backing_id_; }

 private:
  Transport transport_ = Transport::kDevFuse;
  uint32_t opcode_ = 0;
  uint64_t unique_ = 0;
  bool kills_suidgid_ = false;
  bool others_waiting_ = false;
  PooledBuffer payload_;
  char* ring_payload_ = nullptr;
  size_t ring_payload_capacity_ = 0;
  uint64_t init_offered_ = 0;
  uint64_t init_asked_ = 0;
  uint32_t extra_open_flags_ = 0;
  int32_t backing_id_ = 0;
};

}  // namespace localvol::fuse
