#include "fuse/request.h"

#include <linux/fuse.h>

#include <cstring>
#include <utility>

#include "fuse/passthrough.h"

namespace localvol::fuse {
namespace {

// Newer than Debian 12's <linux/fuse.h> (protocol 7.38); the values are ABI.
constexpr uint64_t kInitDirectIoAllowMmap = 1ull << 36;  // protocol 7.39
constexpr uint64_t kInitOverIoUring = 1ull << 41;        // protocol 7.42

uint64_t InitFlag(Feature feature) {
  switch (feature) {
    case Feature::kKillPrivV2:
      return FUSE_HANDLE_KILLPRIV_V2;
    case Feature::kDirectIoAllowMmap:
      return kInitDirectIoAllowMmap;
    case Feature::kOverIoUring:
      return kInitOverIoUring;
    case Feature::kPassthrough:
      return passthrough::kInitPassthrough;
  }
  return 0;
}

// Where the requests that can ask the server to clear setuid/setgid say so.
struct KillFlag {
  uint32_t opcode;
  size_t offset;  // of the flags word in the request body
  uint32_t bit;
};
constexpr KillFlag kKillFlags[] = {
    {FUSE_WRITE, offsetof(fuse_write_in, write_flags), FUSE_WRITE_KILL_SUIDGID},
    {FUSE_SETATTR, offsetof(fuse_setattr_in, valid), FATTR_KILL_SUIDGID},
    {FUSE_OPEN, offsetof(fuse_open_in, open_flags), FUSE_OPEN_KILL_SUIDGID},
    {FUSE_CREATE, offsetof(fuse_create_in, open_flags), FUSE_OPEN_KILL_SUIDGID},
};

// Reads a field of the request body, if the request is long enough to hold it.
template <typename T>
bool BodyField(const char* raw, size_t length, size_t offset, T* out) {
  if (length < sizeof(fuse_in_header) + offset + sizeof(T)) return false;
  std::memcpy(out, raw + sizeof(fuse_in_header) + offset, sizeof(T));
  return true;
}

}  // namespace

void Request::Begin(Transport transport, const char* raw, size_t length) {
  transport_ = transport;
  if (length < sizeof(fuse_in_header)) return;
  fuse_in_header header;
  std::memcpy(&header, raw, sizeof header);
  opcode_ = header.opcode;
  unique_ = header.unique;
  uint32_t flags = 0;
  for (const KillFlag& k : kKillFlags) {
    if (k.opcode == header.opcode && BodyField(raw, length, k.offset, &flags)) {
      kills_suidgid_ = (flags & k.bit) != 0;
    }
  }
  if (header.opcode == FUSE_INIT) {
    uint32_t flags2 = 0;
    if (BodyField(raw, length, offsetof(fuse_init_in, flags), &flags)) init_offered_ = flags;
    if ((flags & FUSE_INIT_EXT) &&
        BodyField(raw, length, offsetof(fuse_init_in, flags2), &flags2)) {
      init_offered_ |= static_cast<uint64_t>(flags2) << 32;
    }
  }
}

PooledBuffer Request::TakeWritePayload() {
  if (opcode_ != FUSE_WRITE) return PooledBuffer();
  if (ring_payload_ != nullptr) {
    return PooledBuffer::Borrow(std::exchange(ring_payload_, nullptr), ring_payload_capacity_);
  }
  return std::move(payload_);
}

PooledBuffer Request::TakeReplyBuffer(size_t size) {
  if (opcode_ != FUSE_READ || ring_payload_ == nullptr || size > ring_payload_capacity_) {
    return PooledBuffer();
  }
  return PooledBuffer::Borrow(std::exchange(ring_payload_, nullptr), ring_payload_capacity_);
}

bool Request::KernelOffers(Feature feature) const {
  return opcode_ == FUSE_INIT && (init_offered_ & InitFlag(feature)) != 0;
}

void Request::Ask(Feature feature) {
  if (opcode_ == FUSE_INIT) init_asked_ |= InitFlag(feature);
}

}  // namespace localvol::fuse
