#include "fuse/kernel_ring.h"

#include <linux/fuse.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/logging.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/protocol_extensions.h"
#include "fuse/thread_placement.h"
#include "iopath/uring.h"

namespace localvol::fuse {
namespace {

// The FUSE-over-io_uring ABI (protocol 7.42), newer than Debian 12's
// <linux/fuse.h>. Field names follow the kernel's.
constexpr uint32_t kCmdRegister = 1;
constexpr uint32_t kCmdCommitAndFetch = 2;
constexpr size_t kHeaderAreaSize = 128;  // fuse_in_header / fuse_out_header
constexpr size_t kOpAreaSize = 128;      // the opcode's own struct (fuse_write_in, ...)

struct RingEntInOut {
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;  // bytes of the payload buffer in use, either direction
  uint32_t padding;
  uint64_t reserved;
};
struct RingReqHeader {
  char in_out[kHeaderAreaSize];
  char op_in[kOpAreaSize];
  RingEntInOut ring_ent_in_out;
};
// Lives in the 80-byte command area of a 128-byte SQE.
struct RingCmdReq {
  uint64_t flags;
  uint64_t commit_id;  // the unique of the request being answered
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingEntInOut) == 32 && sizeof(RingReqHeader) == 288 &&
              sizeof(RingCmdReq) == 24);

constexpr size_t kPage = 4096;
constexpr size_t kHeaderSlot = kPage;  // each entry's header buffer, page-aligned

// Highest possible CPU + 1: the kernel makes one queue per possible CPU and
// serves no request until every queue has an entry.
Result<unsigned> PossibleCpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string list;
  if (!std::getline(in, list) || list.empty()) {
    return Status::Error(ENOENT, "read /sys/devices/system/cpu/possible");
  }
  // "0-N" or "0,2-5": the last number is the highest.
  size_t end = list.find_last_of("0123456789");
  size_t start = end;
  while (start > 0 && std::isdigit(static_cast<unsigned char>(list[start - 1]))) --start;
  if (end == std::string::npos) return Status::Error(EINVAL, "parse CPU list '" + list + "'");
  return static_cast<unsigned>(std::stoul(list.substr(start, end - start + 1))) + 1;
}

// Anonymous memory for the entries of one queue, unmapped on destruction.
// Pages are touched only as requests use them.
class EntryMemory {
 public:
  static Result<EntryMemory> Map(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return Status::FromErrno("mmap FUSE ring buffers");
    EntryMemory m;
    m.base_ = static_cast<char*>(p);
    m.bytes_ = bytes;
    return m;
  }
  EntryMemory() = default;
  EntryMemory(EntryMemory&& o) noexcept { *this = std::move(o); }
  EntryMemory& operator=(EntryMemory&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~EntryMemory() {
    if (base_ != nullptr) munmap(base_, bytes_);
  }
  char* base() const { return base_; }

  // Drops every page; the next touch of each reads zeros.
  void Release() {
    if (base_ != nullptr) (void)madvise(base_, bytes_, MADV_DONTNEED);
  }

  uint64_t ResidentBytes() const {
    if (base_ == nullptr) return 0;
    std::vector<unsigned char> pages((bytes_ + kPage - 1) / kPage);
    if (mincore(base_, bytes_, pages.data()) != 0) return 0;
    uint64_t n = 0;
    for (unsigned char p : pages) n += p & 1;
    return n * kPage;
  }

 private:
  char* base_ = nullptr;
  size_t bytes_ = 0;
};

struct Entry {
  KernelRing::Queue* queue = nullptr;
  RingReqHeader* header = nullptr;
  char* payload = nullptr;
  iovec iov[2] = {};        // what REGISTER hands the kernel: header, payload
  bool registered = false;  // the kernel accepted the REGISTER
  // Queue thread only: a request was taken from the entry and its commit is
  // not prepared yet, so its buffers are in use.
  bool held = false;
};

}  // namespace

// Requests taken from the ring's entries and not yet answered, by unique.
// Replies come from any thread, so this is how a reply finds its entry.
struct KernelRing::InFlight {
  Mutex mu;
  std::unordered_map<uint64_t, Entry*> entries GUARDED_BY(mu);
};

struct KernelRing::Queue {
  KernelRing::InFlight* in_flight = nullptr;  // the ring's
  uint16_t qid = 0;
  int fuse_fd = -1;
  fuse_session* session = nullptr;
  size_t payload_size = 0;
  // The entries, then the buffer a request is assembled in for libfuse.
  EntryMemory memory;
  std::vector<Entry> entries;
  char* request_buffer = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0};
  std::thread thread;
  // Set by the queue thread before it takes any request: a reply sent on it
  // is prepared directly, one from elsewhere handed over (CommitFromElsewhere).
  std::thread::id serving_thread;
  bool thread_placement = true;

  // The ring is the queue thread's alone (IORING_SETUP_SINGLE_ISSUER with
  // DEFER_TASKRUN): it registers the entries, reaps requests and commits
  // replies, so the kernel never contends for the ring's lock and the next
  // request's hand-over runs on this thread only when it waits. A reply sent
  // from another thread (the I/O completion thread) is put in `foreign` and
  // the thread woken through `wake_fd`, whose read stays armed in the ring.
  iopath::Uring ring;
  UniqueFd wake_fd;
  uint64_t wake_count = 0;  // the armed read's buffer
  // The idle tick's period (zero: no tick); its address is the tick's user_data.
  __kernel_timespec idle_period{};

  Mutex foreign_mu;
  std::vector<std::pair<Entry*, uint64_t>> foreign GUARDED_BY(foreign_mu);  // entry, unique
  bool wake_pending GUARDED_BY(foreign_mu) = false;

  // Queue thread only: prepares a command; the loop submits it.
  void PrepareCommand(Entry& entry, uint32_t cmd_op, uint64_t commit_id) {
    // The SQ has room for every entry, the wake-up read and the idle tick,
    // each with at most one command prepared at a time, so it is never full.
    io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
    if (sqe == nullptr) {
      GetLogger("fuse")->error("FUSE ring queue {}: submission queue full", qid);
      return;
    }
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // the 128-byte SQE
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = cmd_op;
    if (cmd_op == kCmdRegister) {
      sqe->addr = reinterpret_cast<uint64_t>(entry.iov);
      sqe->len = 2;
    }
    RingCmdReq req{};
    req.qid = qid;
    req.commit_id = commit_id;
    std::memcpy(sqe->cmd, &req, sizeof req);
    io_uring_sqe_set_data(sqe, &entry);
    if (cmd_op == kCmdCommitAndFetch) entry.held = false;
  }

  void ArmWakeRead() {
    io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
    if (sqe == nullptr) return;
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    io_uring_prep_read(sqe, wake_fd.get(), &wake_count, sizeof wake_count, 0);
    io_uring_sqe_set_data(sqe, nullptr);
  }

  // A timer CQE every idle_period, if set: one SQE per period. A timeout on
  // every wait instead would arm a timer each time the thread sleeps, a cost
  // on every small request.
  void ArmIdleTick() {
    if (idle_period.tv_sec == 0 && idle_period.tv_nsec == 0) return;
    io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
    if (sqe == nullptr) return;
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    io_uring_prep_timeout(sqe, &idle_period, 0, 0);
    io_uring_sqe_set_data(sqe, &idle_period);
  }

  // Any thread.
  void Wake() {
    const uint64_t one = 1;
    (void)!write(wake_fd.get(), &one, sizeof one);
  }

  // From a thread other than the queue's: hand the commit to the queue thread.
  void CommitFromElsewhere(Entry& entry, uint64_t unique) {
    bool wake;
    {
      MutexLock lock(foreign_mu);
      foreign.emplace_back(&entry, unique);
      wake = !std::exchange(wake_pending, true);
    }
    if (wake) Wake();
  }

  // Runs on the queue thread: creates the ring (it must be created by its
  // single issuer), then serves until the connection ends or Stop.
  void Serve(std::promise<Status> started) {
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    auto created = iopath::Uring::Create(static_cast<unsigned>(entries.size()) + 3, params);
    if (!created.ok()) {
      started.set_value(created.status());
      return;
    }
    ring = std::move(created).value();
    serving_thread = std::this_thread::get_id();
    started.set_value(Status::Ok());

    for (Entry& e : entries) PrepareCommand(e, kCmdRegister, 0);
    ArmWakeRead();
    size_t live = entries.size();
    const auto register_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::vector<Entry*> retry_register;
    bool touched_since_release = false;
    uint64_t served_at_tick = 0;
    ArmIdleTick();
    // On the queue's CPU while requests come one at a time, anywhere while
    // they come in batches (fuse/thread_placement.h).
    ThreadPlacement placement(ThreadPlacement::CurrentAffinity());
    while (live > 0 && !stop.load(std::memory_order_acquire)) {
      {
        MutexLock lock(foreign_mu);
        for (auto [entry, unique] : foreign) PrepareCommand(*entry, kCmdCommitAndFetch, unique);
        foreign.clear();
        wake_pending = false;
      }
      int rc = io_uring_submit_and_wait(ring.get(), 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        GetLogger("fuse")->error("FUSE ring queue {}: submit: {}", qid, std::strerror(-rc));
        break;
      }
      io_uring_cqe* cqe = nullptr;
      size_t taken = 0;
      while (io_uring_peek_cqe(ring.get(), &cqe) == 0) {
        void* const tag = io_uring_cqe_get_data(cqe);
        const int res = cqe->res;
        io_uring_cqe_seen(ring.get(), cqe);
        if (tag == nullptr) {  // the wake-up read
          ArmWakeRead();
          continue;
        }
        if (tag == &idle_period) {
          const uint64_t served_now = served.load(std::memory_order_relaxed);
          // Released only after a whole period without a request, with no
          // entry held. The kernel touches the buffers only in this thread's
          // io_uring_enter (the copy of a request into an entry, and of a
          // reply out of it, run as its task work or submission), so then
          // nothing can be using them.
          if (touched_since_release && served_now == served_at_tick && NoEntryHeld()) {
            memory.Release();
            touched_since_release = false;
          }
          served_at_tick = served_now;
          ArmIdleTick();
          continue;
        }
        auto* entry = static_cast<Entry*>(tag);
        if (res == 0) {
          entry->registered = true;
          touched_since_release = true;
          ++taken;
          Process(*entry);
        } else if (res == -EAGAIN && !entry->registered &&
                   std::chrono::steady_clock::now() < register_deadline) {
          retry_register.push_back(entry);  // the kernel has not taken the INIT reply yet
        } else {
          // The connection ended (ENOTCONN, ECANCELED) or the kernel refused
          // the entry; it takes no more requests.
          --live;
          if (res != -ENOTCONN && res != -ECANCELED && res != -ECONNABORTED) {
            GetLogger("fuse")->warn("FUSE ring queue {}: entry {}: {}", qid,
                                    entry->registered ? "commit" : "register", std::strerror(-res));
          }
        }
      }
      if (thread_placement) placement.Observe(taken, [this] { return static_cast<int>(qid); });
      if (!retry_register.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (Entry* e : retry_register) PrepareCommand(*e, kCmdRegister, 0);
        retry_register.clear();
      }
    }
  }

  bool NoEntryHeld() const {
    for (const Entry& e : entries) {
      if (e.held) return false;
    }
    return true;
  }

  void Process(Entry& e) {
    char* const request = request_buffer;
    e.held = true;
    fuse_in_header in;
    std::memcpy(&in, e.header->in_out, sizeof in);
    RingEntInOut ring_in;
    std::memcpy(&ring_in, &e.header->ring_ent_in_out, sizeof ring_in);
    const size_t payload = ring_in.payload_sz;
    // The op struct's size is what is left of the request's length.
    if (payload > payload_size || in.len < sizeof in + payload ||
        in.len - sizeof in - payload > kOpAreaSize) {
      GetLogger("fuse")->error("FUSE ring queue {}: malformed request (opcode {}, len {})", qid,
                               in.opcode, in.len);
      fuse_out_header out{sizeof(fuse_out_header), -EIO, in.unique};
      std::memcpy(e.header->in_out, &out, sizeof out);
      e.header->ring_ent_in_out.payload_sz = 0;
      PrepareCommand(e, kCmdCommitAndFetch, in.unique);
      return;
    }
    const size_t op_size = in.len - sizeof in - payload;
    std::memcpy(request, &in, sizeof in);
    std::memcpy(request + sizeof in, e.header->op_in, op_size);
    if (in.opcode != FUSE_WRITE) std::memcpy(request + sizeof in + op_size, e.payload, payload);
    {
      MutexLock lock(in_flight->mu);
      in_flight->entries[in.unique] = &e;
    }
    Request context;
    context.Begin(Transport::kRing, request, sizeof in + op_size);
    context.SetRingPayload(e.payload, payload_size);
    context.SetOthersWaiting(io_uring_cq_ready(ring.get()) > 0);
    fuse_buf buf{};
    buf.size = in.len;
    buf.mem = request;
    protocol::HandOff(&context);
    fuse_session_process_buf(session, &buf);
    protocol::HandOff(nullptr);
    served.fetch_add(1, std::memory_order_relaxed);
  }
};

Result<std::unique_ptr<KernelRing>> KernelRing::Start(fuse_session* session, unsigned depth,
                                                      size_t payload_size,
                                                      std::chrono::milliseconds idle_release,
                                                      bool thread_placement) {
  if (depth == 0 || depth > 1024) return Status::Error(EINVAL, "FUSE ring depth must be 1..1024");
  auto cpus = PossibleCpus();
  if (!cpus.ok()) return cpus.status();
  payload_size = (payload_size + kPage - 1) / kPage * kPage;
  std::unique_ptr<KernelRing> kr(new KernelRing);
  kr->in_flight_ = std::make_unique<InFlight>();
  // One thread per queue: two threads sharing a queue's entries were slower
  // (docs/performance.md, "Levers measured").
  for (unsigned qid = 0; qid < *cpus; ++qid) {
    auto q = std::make_unique<Queue>();
    q->in_flight = kr->in_flight_.get();
    q->qid = static_cast<uint16_t>(qid);
    q->fuse_fd = fuse_session_fd(session);
    q->session = session;
    q->payload_size = payload_size;
    q->thread_placement = thread_placement;
    if (idle_release.count() > 0) {
      q->idle_period.tv_sec = idle_release.count() / 1000;
      q->idle_period.tv_nsec = idle_release.count() % 1000 * 1000000;
    }
    const size_t slot = kHeaderSlot + payload_size;
    // The request as libfuse's dispatcher wants it: header, op struct and
    // payload in one buffer. A WRITE's data stays in its entry instead.
    const size_t request_bytes = sizeof(fuse_in_header) + kOpAreaSize + payload_size;
    auto memory = EntryMemory::Map(slot * depth + request_bytes);
    if (!memory.ok()) return memory.status();
    q->memory = std::move(memory).value();
    q->entries.resize(depth);
    for (unsigned i = 0; i < depth; ++i) {
      Entry& e = q->entries[i];
      char* base = q->memory.base() + slot * i;
      e.queue = q.get();
      e.header = reinterpret_cast<RingReqHeader*>(base);
      e.payload = base + kHeaderSlot;
      e.iov[0] = {e.header, sizeof(RingReqHeader)};
      e.iov[1] = {e.payload, payload_size};
    }
    q->request_buffer = q->memory.base() + slot * depth;
    q->wake_fd = UniqueFd(eventfd(0, EFD_CLOEXEC));
    if (!q->wake_fd.valid()) return Status::FromErrno("eventfd for a FUSE ring queue");
    kr->queues_.push_back(std::move(q));
  }
  for (auto& q : kr->queues_) {
    Queue* raw = q.get();
    const unsigned qid = q->qid;
    std::promise<Status> started;
    std::future<Status> result = started.get_future();
    q->thread = std::thread([raw, p = std::move(started)]() mutable { raw->Serve(std::move(p)); });
    // Named for top -H and for the tests: "fuse-ring-<queue>".
    pthread_setname_np(q->thread.native_handle(), ("fuse-ring-" + std::to_string(qid)).c_str());
    // On failure the destructor stops the threads already started; no queue
    // is complete, so the kernel never routes a request to the ring.
    if (Status s = result.get(); !s.ok()) return s;
  }
  GetLogger("fuse")->info("FUSE over io_uring: {} queues of {} entries", kr->queues_.size(), depth);
  return kr;
}

KernelRing::~KernelRing() {
  for (auto& q : queues_) {
    q->stop.store(true, std::memory_order_release);
    q->Wake();
  }
  for (auto& q : queues_) {
    if (q->thread.joinable()) q->thread.join();
  }
}

uint64_t KernelRing::requests_served() const {
  uint64_t n = 0;
  for (const auto& q : queues_) n += q->served.load(std::memory_order_relaxed);
  return n;
}

uint64_t KernelRing::resident_bytes() const {
  uint64_t n = 0;
  for (const auto& q : queues_) n += q->memory.ResidentBytes();
  return n;
}

bool KernelRing::TryCommit(const iovec* iov, int count, ssize_t* written) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique == 0) return false;  // a notification: /dev/fuse only
  Entry* e;
  {
    MutexLock lock(in_flight_->mu);
    auto it = in_flight_->entries.find(out.unique);
    if (it == in_flight_->entries.end()) return false;
    e = it->second;
    in_flight_->entries.erase(it);
  }
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  Queue& q = *e->queue;
  size_t body = total - sizeof out;
  if (body > q.payload_size) {
    // No reply of a well-formed request is larger than max_pages; fail it
    // rather than leave the caller waiting.
    GetLogger("fuse")->error("FUSE ring queue {}: reply of {} bytes does not fit", q.qid, total);
    out.error = -EIO;
    out.len = sizeof out;
    body = 0;
  } else {
    // Everything after the out header goes to the payload buffer, except
    // data a handler already produced there (TakeReplyBuffer).
    char* dst = e->payload;
    for (int i = 0; i < count && body > 0; ++i) {
      const char* src = static_cast<const char*>(iov[i].iov_base);
      size_t len = iov[i].iov_len;
      if (i == 0) {
        src += sizeof out;
        len -= sizeof out;
      }
      if (src != dst) std::memcpy(dst, src, len);
      dst += len;
    }
  }
  std::memcpy(e->header->in_out, &out, sizeof out);
  RingEntInOut ring_out{};
  ring_out.payload_sz = static_cast<uint32_t>(body);
  std::memcpy(&e->header->ring_ent_in_out, &ring_out, sizeof ring_out);
  if (std::this_thread::get_id() == q.serving_thread) {
    q.PrepareCommand(*e, kCmdCommitAndFetch, out.unique);  // submitted by the loop
  } else {
    q.CommitFromElsewhere(*e, out.unique);
  }
  *written = static_cast<ssize_t>(total);
  return true;
}

}  // namespace localvol::fuse
