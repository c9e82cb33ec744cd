#include "fuse/protocol_extensions.h"

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <utility>

#include "fuse/kernel_ring.h"
#include "fuse/passthrough.h"

namespace localvol::fuse::protocol {
namespace {

// Every request starts with these; a WRITE's data follows them directly.
constexpr size_t kWriteHeaderSize = sizeof(fuse_in_header) + sizeof(fuse_write_in);

// Where write payloads are received. Process-wide and never destroyed: a
// worker thread's spare buffer (below) may outlive any one volume's objects.
BufferPool& PayloadPool() {
  static BufferPool* pool = new BufferPool;
  return *pool;
}

// The /dev/fuse transport's state of one worker thread. libfuse owns the
// worker threads and calls the read hook with no state of ours, so the
// state is the thread's.
struct Worker {
  // Where the next request is read after its first 80 bytes. A WRITE keeps
  // it (Request::TakeWritePayload); any other request is moved back behind
  // its header, where libfuse expects it.
  PooledBuffer spare;
  // The request received last, dispatched by libfuse right after.
  std::optional<Request> request;

  Request& Begin(const char* raw, size_t length) {
    if (request) {
      // A payload its handler did not take serves as the next spare.
      PooledBuffer left = request->TakeWritePayload();
      if (left.data() != nullptr && spare.data() == nullptr) spare = std::move(left);
    }
    request.emplace();
    request->Begin(Transport::kDevFuse, raw, length);
    return *request;
  }
};
thread_local Worker worker;

// The hand-off slot (see the header).
thread_local Request* handed_off = nullptr;

// The reply payload (everything after the header) when libfuse sent it as
// one buffer, as it does for INIT, OPEN and CREATE.
char* Payload(iovec* iov, int count, size_t* length) {
  if (count != 2) return nullptr;
  *length = iov[1].iov_len;
  return static_cast<char*>(iov[1].iov_base);
}

void AmendInitReply(const Request& request, iovec* iov, int count) {
  const uint64_t granted = request.init_granted();
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
  // Without a max_stack_depth of 1..FILESYSTEM_MAX_STACK_DEPTH the kernel
  // leaves passthrough off even when the flag is set.
  if ((granted & passthrough::kInitPassthrough) &&
      length >= passthrough::kInitOutMaxStackDepthOffset + sizeof(uint32_t)) {
    const uint32_t depth = passthrough::kMaxStackDepth;
    std::memcpy(out + passthrough::kInitOutMaxStackDepthOffset, &depth, sizeof depth);
  }
}

// OPEN replies carry a fuse_open_out; CREATE replies a fuse_entry_out and then
// the fuse_open_out: either way it is the last thing in the payload. Its
// layout since protocol 7.40: fh, open_flags, then backing_id where older
// headers have padding.
void AmendOpenReply(const Request& request, iovec* iov, int count) {
  size_t length = 0;
  char* out = Payload(iov, count, &length);
  if (out == nullptr || length < sizeof(fuse_open_out)) return;
  char* open_out = out + length - sizeof(fuse_open_out);
  uint32_t open_flags;
  std::memcpy(&open_flags, open_out + offsetof(fuse_open_out, open_flags), sizeof open_flags);
  // The server handles concurrent writes to one file (the backing filesystem
  // orders them); the kernel still serializes those that extend the file.
  if (open_flags & FOPEN_DIRECT_IO) open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
  open_flags |= request.extra_open_flags();
  std::memcpy(open_out + offsetof(fuse_open_out, open_flags), &open_flags, sizeof open_flags);
  const int32_t backing_id = request.backing_id();
  if (backing_id != 0) {
    std::memcpy(open_out + offsetof(fuse_open_out, open_flags) + sizeof open_flags, &backing_id,
                sizeof backing_id);
  }
}

ssize_t ReadRequest(int fd, void* buf, size_t len, void* /*userdata*/) {
  char* head = static_cast<char*>(buf);
  handed_off = nullptr;
  if (len <= kWriteHeaderSize) {
    const ssize_t n = read(fd, buf, len);
    if (n > 0) handed_off = &worker.Begin(head, static_cast<size_t>(n));
    return n;
  }
  // Header and write_in into libfuse's buffer, what follows into the spare
  // buffer, and anything beyond its capacity into the rest of libfuse's
  // buffer: together exactly `len` bytes, the size the kernel requires.
  const size_t spare_len = std::min(len - kWriteHeaderSize, BufferPool::kMaxPooledSize);
  PooledBuffer& spare = worker.spare;
  if (spare.capacity() < spare_len) spare = PayloadPool().Get(spare_len);
  iovec iov[3] = {{head, kWriteHeaderSize},
                  {spare.data(), spare_len},
                  {head + kWriteHeaderSize + spare_len, len - kWriteHeaderSize - spare_len}};
  const ssize_t n = readv(fd, iov, iov[2].iov_len > 0 ? 3 : 2);
  if (n <= 0) return n;
  const size_t got = static_cast<size_t>(n);
  // Every field Request::Begin reads lies within the first 80 bytes.
  Request& request = worker.Begin(head, std::min(got, kWriteHeaderSize));
  handed_off = &request;
  if (got <= kWriteHeaderSize) return n;
  const size_t in_spare = std::min(got - kWriteHeaderSize, spare_len);
  if (request.opcode() == FUSE_WRITE && got - kWriteHeaderSize <= spare_len) {
    request.SetWritePayload(std::move(spare));
  } else {
    // Not a write, or a write too large for the spare buffer: put the bytes
    // back in one piece behind the header.
    std::memcpy(head + kWriteHeaderSize, spare.data(), in_spare);
  }
  return n;
}

ssize_t WriteReply(int fd, iovec* iov, int count, void* userdata) {
  fuse_out_header header{};
  if (count >= 1 && iov[0].iov_len >= sizeof header) {
    std::memcpy(&header, iov[0].iov_base, sizeof header);
  }
  // unique 0 is a notification, never a reply. A reply sent on the thread
  // that dispatched its request finds the Request in the slot.
  const Request* request = handed_off;
  if (header.unique != 0 && request != nullptr && header.unique == request->unique() &&
      header.error == 0) {
    if (request->opcode() == FUSE_INIT) {
      AmendInitReply(*request, iov, count);
    } else if (request->opcode() == FUSE_OPEN || request->opcode() == FUSE_CREATE) {
      AmendOpenReply(*request, iov, count);
    }
  }
  if (header.unique != 0) {
    if (KernelRing* ring = static_cast<Connection*>(userdata)->ring()) {
      ssize_t written = 0;
      if (ring->TryCommit(iov, count, &written)) return written;
    }
  }
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

void HandOff(Request* request) { handed_off = request; }

Request& HandedOff() {
  if (handed_off != nullptr) return *handed_off;
  // A callback libfuse runs without a request of ours (none today): an
  // empty Request, which asks for nothing and offers nothing.
  thread_local Request none;
  return none;
}

}  // namespace localvol::fuse::protocol
