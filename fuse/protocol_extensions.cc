#include "fuse/protocol_extensions.h"

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "fuse/kernel_ring.h"

namespace localvol::fuse::protocol {
namespace {

// Newer than Debian 12's <linux/fuse.h> (protocol 7.38); the value is ABI.
constexpr uint64_t kInitDirectIoAllowMmap = 1ull << 36;  // protocol 7.39
constexpr uint64_t kInitOverIoUring = 1ull << 41;        // protocol 7.42

// Every request starts with these; a WRITE's data follows them directly.
constexpr size_t kWriteHeaderSize = sizeof(fuse_in_header) + sizeof(fuse_write_in);

// Where write payloads are received. Process-wide and never destroyed: a
// worker thread's spare buffer (below) may outlive any one volume's objects.
BufferPool& PayloadPool() {
  static BufferPool* pool = new BufferPool;
  return *pool;
}

// The buffer this thread's next request is read into after its first 80
// bytes. A WRITE keeps it (TakeWritePayload); any other request is moved back
// behind its header, where libfuse expects it.
thread_local PooledBuffer spare_payload;

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

// What the layer knows about the request this thread is handling.
struct CurrentRequest {
  uint32_t opcode = 0;
  uint64_t unique = 0;
  bool kill_suidgid = false;
  bool payload_in_spare = false;  // a WRITE whose data is in spare_payload
  uint64_t init_offered = 0;      // FUSE_INIT: the kernel's flags | flags2 << 32
  uint64_t init_requested = 0;    // FUSE_INIT: what the init callback asked for
  // A request from a ring entry: the entry's payload buffer (a WRITE's data
  // is in it), handed out at most once.
  char* ring_payload = nullptr;
  size_t ring_payload_capacity = 0;
  bool from_ring = false;
  bool others_waiting = false;  // a ring request with more behind it on this thread
};
thread_local CurrentRequest current;

uint64_t InitFlag(Feature feature) {
  switch (feature) {
    case Feature::kKillPrivV2:
      return FUSE_HANDLE_KILLPRIV_V2;
    case Feature::kDirectIoAllowMmap:
      return kInitDirectIoAllowMmap;
    case Feature::kOverIoUring:
      return kInitOverIoUring;
  }
  return 0;
}

// Reads a field of the request body, if the request is long enough to hold it.
template <typename T>
bool BodyField(const char* request, size_t length, size_t offset, T* out) {
  if (length < sizeof(fuse_in_header) + offset + sizeof(T)) return false;
  std::memcpy(out, request + sizeof(fuse_in_header) + offset, sizeof(T));
  return true;
}

void Inspect(const char* request, size_t length) {
  current = CurrentRequest{};
  if (length < sizeof(fuse_in_header)) return;
  fuse_in_header header;
  std::memcpy(&header, request, sizeof header);
  current.opcode = header.opcode;
  current.unique = header.unique;
  uint32_t flags = 0;
  for (const KillFlag& k : kKillFlags) {
    if (k.opcode == header.opcode && BodyField(request, length, k.offset, &flags)) {
      current.kill_suidgid = (flags & k.bit) != 0;
    }
  }
  if (header.opcode == FUSE_INIT) {
    uint32_t flags2 = 0;
    if (BodyField(request, length, offsetof(fuse_init_in, flags), &flags)) {
      current.init_offered = flags;
    }
    if ((flags & FUSE_INIT_EXT) &&
        BodyField(request, length, offsetof(fuse_init_in, flags2), &flags2)) {
      current.init_offered |= static_cast<uint64_t>(flags2) << 32;
    }
  }
}

// The reply payload (everything after the header) when libfuse sent it as
// one buffer, as it does for INIT, OPEN and CREATE.
char* Payload(iovec* iov, int count, size_t* length) {
  if (count != 2) return nullptr;
  *length = iov[1].iov_len;
  return static_cast<char*>(iov[1].iov_base);
}

void AmendInitReply(iovec* iov, int count) {
  const uint64_t granted = current.init_offered & current.init_requested;
  size_t length = 0;
  char* out = Payload(iov, count, &length);
  if (granted == 0 || out == nullptr) return;
  // libfuse writes flags2 only when the kernel sent FUSE_INIT_EXT, and every
  // flag above bit 31 is offered only with it.
  uint32_t flags, flags2;
  if (length < offsetof(fuse_init_out, flags2) + sizeof flags2) return;
  std::memcpy(&flags, out + offsetof(fuse_init_out, flags), sizeof flags);
  std::memcpy(&flags2, out + offsetof(fuse_init_out, flags2), sizeof flags2);
  flags |= static_cast<uint32_t>(granted);
  flags2 |= static_cast<uint32_t>(granted >> 32);
  std::memcpy(out + offsetof(fuse_init_out, flags), &flags, sizeof flags);
  std::memcpy(out + offsetof(fuse_init_out, flags2), &flags2, sizeof flags2);
}

// OPEN replies carry a fuse_open_out; CREATE replies a fuse_entry_out and then
// the fuse_open_out: either way it is the last thing in the payload.
void AmendOpenReply(iovec* iov, int count) {
  size_t length = 0;
  char* out = Payload(iov, count, &length);
  if (out == nullptr || length < sizeof(fuse_open_out)) return;
  char* open_out = out + length - sizeof(fuse_open_out);
  uint32_t open_flags;
  std::memcpy(&open_flags, open_out + offsetof(fuse_open_out, open_flags), sizeof open_flags);
  // The server handles concurrent writes to one file (the backing filesystem
  // orders them); the kernel still serializes those that extend the file.
  if (open_flags & FOPEN_DIRECT_IO) open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
  std::memcpy(open_out + offsetof(fuse_open_out, open_flags), &open_flags, sizeof open_flags);
}

ssize_t ReadRequest(int fd, void* buf, size_t len, void* /*userdata*/) {
  char* head = static_cast<char*>(buf);
  if (len <= kWriteHeaderSize) {
    ssize_t n = read(fd, buf, len);
    current = CurrentRequest{};
    if (n > 0) Inspect(head, static_cast<size_t>(n));
    return n;
  }
  // Header and write_in into libfuse's buffer, what follows into the spare
  // buffer, and anything beyond its capacity into the rest of libfuse's
  // buffer: together exactly `len` bytes, the size the kernel requires.
  const size_t spare_len = std::min(len - kWriteHeaderSize, BufferPool::kMaxPooledSize);
  if (spare_payload.capacity() < spare_len) spare_payload = PayloadPool().Get(spare_len);
  iovec iov[3] = {{head, kWriteHeaderSize},
                  {spare_payload.data(), spare_len},
                  {head + kWriteHeaderSize + spare_len, len - kWriteHeaderSize - spare_len}};
  const ssize_t n = readv(fd, iov, iov[2].iov_len > 0 ? 3 : 2);
  current = CurrentRequest{};
  if (n <= 0) return n;
  const size_t got = static_cast<size_t>(n);
  // Every field Inspect reads lies within the first 80 bytes.
  Inspect(head, std::min(got, kWriteHeaderSize));
  if (got <= kWriteHeaderSize) return n;
  const size_t in_spare = std::min(got - kWriteHeaderSize, spare_len);
  if (current.opcode == FUSE_WRITE && got - kWriteHeaderSize <= spare_len) {
    current.payload_in_spare = true;
  } else {
    // Not a write, or a write too large for the spare buffer: put the bytes
    // back in one piece behind the header.
    std::memcpy(head + kWriteHeaderSize, spare_payload.data(), in_spare);
  }
  return n;
}

ssize_t WriteReply(int fd, iovec* iov, int count, void* /*userdata*/) {
  if (count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    fuse_out_header header;
    std::memcpy(&header, iov[0].iov_base, sizeof header);
    // unique 0 is a notification, never a reply.
    if (header.unique != 0 && header.unique == current.unique && header.error == 0) {
      if (current.opcode == FUSE_INIT) {
        AmendInitReply(iov, count);
      } else if (current.opcode == FUSE_OPEN || current.opcode == FUSE_CREATE) {
        AmendOpenReply(iov, count);
      }
    }
  }
  ssize_t written = 0;
  if (KernelRing::TryCommit(fd, iov, count, &written)) return written;
  return writev(fd, iov, count);
}

}  // namespace

Status Install(fuse_session* session) {
  static const fuse_custom_io kIo = {
      .writev = WriteReply,
      .read = ReadRequest,
      .splice_receive = nullptr,
      .splice_send = nullptr,
  };
  const int fd = fuse_session_fd(session);
  if (int rc = fuse_session_custom_io(session, &kIo, fd); rc != 0) {
    return Status::Error(-rc, "install FUSE protocol extensions");
  }
  return Status::Ok();
}

bool KernelOffers(Feature feature) {
  return current.opcode == FUSE_INIT && (current.init_offered & InitFlag(feature)) != 0;
}

void Request(Feature feature) {
  if (current.opcode == FUSE_INIT) current.init_requested |= InitFlag(feature);
}

bool RequestKillsSuidgid() { return current.kill_suidgid; }

// The ring entry's payload buffer, once, if the current request has one.
PooledBuffer TakeRingPayload() {
  if (current.ring_payload == nullptr) return PooledBuffer();
  return PooledBuffer::Borrow(std::exchange(current.ring_payload, nullptr),
                              current.ring_payload_capacity);
}

PooledBuffer TakeWritePayload() {
  if (current.opcode == FUSE_WRITE && current.ring_payload != nullptr) return TakeRingPayload();
  if (!current.payload_in_spare) return PooledBuffer();
  current.payload_in_spare = false;
  return std::move(spare_payload);
}

PooledBuffer TakeReplyBuffer(size_t size) {
  if (current.opcode != FUSE_READ || size > current.ring_payload_capacity) return PooledBuffer();
  return TakeRingPayload();
}

void BeginRingRequest(const char* request, size_t header_len, char* payload,
                      size_t payload_capacity, bool others_waiting) {
  Inspect(request, header_len);
  current.ring_payload = payload;
  current.ring_payload_capacity = payload_capacity;
  current.from_ring = true;
  current.others_waiting = others_waiting;
}

bool RequestFromRing() { return current.from_ring; }

bool ThreadHasOthersWaiting() { return current.others_waiting; }

}  // namespace localvol::fuse::protocol
