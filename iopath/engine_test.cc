#include "iopath/engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "iopath/engine_testing.h"

namespace localvol::iopath {

// For EXPECT_EQ on results (here, not in the anonymous namespace, so that
// argument-dependent lookup finds them).
bool operator==(const IoResult& a, const IoResult& b) {
  return a.bytes == b.bytes && a.err == b.err;
}
void PrintTo(const IoResult& r, std::ostream* os) {
  *os << "{bytes=" << r.bytes << ", err=" << r.err;
  if (r.err != 0) *os << " (" << std::strerror(r.err) << ")";
  *os << "}";
}

namespace {

using namespace std::chrono_literals;

constexpr auto kWaitTimeout = 5s;
constexpr int kTimedOut = -1;  // IoResult::err reported by RunOne() on timeout

// ---------------------------------------------------------------------------
// Fixtures and helpers

// A file under /tmp with a unique name, unlinked and closed when the test ends,
// pass or fail.
class TempFile {
 public:
  TempFile() {
    std::string path = "/tmp/localvol_iopath_test_XXXXXX";
    const int fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd < 0) {
      ADD_FAILURE() << "mkostemp " << path << ": " << std::strerror(errno);
      return;
    }
    fd_.Reset(fd);
    path_ = path;
  }
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

  // Fills the file with `data` (pwrite, not the engine).
  void Fill(const std::vector<char>& data) {
    ASSERT_EQ(::pwrite(fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  }
  // The file's bytes [offset, offset + len), read with pread (the kernel's view).
  std::vector<char> Contents(uint64_t offset, size_t len) const {
    std::vector<char> out(len);
    const ssize_t n = ::pread(fd(), out.data(), len, static_cast<off_t>(offset));
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }
  struct stat Stat() const {
    struct stat st {};
    EXPECT_EQ(::fstat(fd(), &st), 0) << std::strerror(errno);
    return st;
  }

 private:
  UniqueFd fd_;
  std::string path_;
};

struct Pipe {
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return;
    }
    read_end.Reset(fds[0]);
    write_end.Reset(fds[1]);
  }
  UniqueFd read_end;
  UniqueFd write_end;
};

// Deterministic bytes for `seed`.
std::vector<char> Pattern(size_t len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<char> out(len);
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Counts down from n; Wait() returns false on timeout instead of hanging.
class Countdown {
 public:
  explicit Countdown(int n) : n_(n) {}
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  bool Wait(std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return n_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

class CallbackRequest : public IoRequest {
 public:
  using Callback = std::function<void(IoResult)>;
  explicit CallbackRequest(Callback callback) : callback_(std::move(callback)) {}
  void Complete(IoResult result) noexcept override { callback_(result); }

 private:
  Callback callback_;
};

std::unique_ptr<IoRequest> MakeRequest(IoOp op, int fd, uint64_t offset, void* buf, size_t len,
                                       CallbackRequest::Callback callback, int fallocate_mode = 0) {
  auto r = std::make_unique<CallbackRequest>(std::move(callback));
  r->op = op;
  r->fd = fd;
  r->offset = offset;
  r->buf = static_cast<char*>(buf);
  r->len = len;
  r->fallocate_mode = fallocate_mode;
  return r;
}

// Submits one request and waits for its result; err is kTimedOut (and the
// test fails) if it does not complete in time.
IoResult RunOne(Engine& engine, IoQueue& queue, IoOp op, int fd, uint64_t offset, void* buf,
                size_t len, int fallocate_mode = 0) {
  auto done = std::make_shared<std::promise<IoResult>>();
  std::future<IoResult> result = done->get_future();
  engine.Submit(queue, MakeRequest(
                           op, fd, offset, buf, len, [done](IoResult r) { done->set_value(r); },
                           fallocate_mode));
  if (result.wait_for(kWaitTimeout) != std::future_status::ready) {
    ADD_FAILURE() << IoOpName(op) << " did not complete within the timeout";
    return IoResult{0, kTimedOut};
  }
  return result.get();
}

// Reads `len` bytes at offset 0 of `fd` into `buf` through SubmitOrRun()
// (`or_run`) or Submit(); the future holds the thread Complete() ran on, and
// `ran_here` (if given) what SubmitOrRun() returned.
std::future<std::thread::id> ReadOnSomeThread(Engine& engine, IoQueue& queue, bool or_run, int fd,
                                              void* buf, size_t len, bool* ran_here = nullptr) {
  auto where = std::make_shared<std::promise<std::thread::id>>();
  std::future<std::thread::id> future = where->get_future();
  auto request = MakeRequest(IoOp::kRead, fd, 0, buf, len,
                             [where](IoResult) { where->set_value(std::this_thread::get_id()); });
  if (or_run) {
    const bool here = engine.SubmitOrRun(queue, std::move(request));
    if (ran_here != nullptr) *ran_here = here;
  } else {
    engine.Submit(queue, std::move(request));
  }
  return future;
}

// Whether Complete() ran on another thread than this one; fails the test if
// it did not run in time.
bool CompletedElsewhere(std::future<std::thread::id> where) {
  if (where.wait_for(kWaitTimeout) != std::future_status::ready) {
    ADD_FAILURE() << "the request did not complete within the timeout";
    return false;
  }
  return where.get() != std::this_thread::get_id();
}

bool LacksKernelSupport(int err) { return err == ENOSYS || err == EPERM || err == EOPNOTSUPP; }

// Declares `var` as a std::unique_ptr<Engine> built by `expr`; skips the test
// when the kernel lacks io_uring or something the engine needs.
#define ENGINE_OR_SKIP(var, expr)                                                      \
  auto var##_or = (expr);                                                              \
  if (!var##_or.ok() && LacksKernelSupport(var##_or.err())) {                          \
    GTEST_SKIP() << "kernel lacks io_uring support: " << var##_or.status().ToString(); \
  }                                                                                    \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status().ToString();                          \
  std::unique_ptr<Engine> var = std::move(*var##_or)  // NOLINT(bugprone-macro-parentheses): a name

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = Engine::Create();
    if (!engine.ok() && LacksKernelSupport(engine.err())) {
      GTEST_SKIP() << "kernel lacks io_uring support: " << engine.status().ToString();
    }
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(*engine);
    queue_ = engine_->CreateQueue("test");
  }

  IoResult Run(IoOp op, int fd, uint64_t offset, void* buf, size_t len, int mode = 0) {
    return RunOne(*engine_, *queue_, op, fd, offset, buf, len, mode);
  }

  // Declared in this order so the queue goes first.
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<IoQueue> queue_;
  TempFile file_;
};

// ---------------------------------------------------------------------------
// Setup

// I/O past the engine (read passthrough) is allowed only while nothing is
// shared fairly: one queue, or the fifo policy.
TEST(EngineCreate, SharedFairlyWithTwoQueuesUnderTheFairPolicyOnly) {
  ENGINE_OR_SKIP(fair, Engine::Create(EngineOptions{.ring_entries = 8, .max_in_flight = 8}));
  EXPECT_FALSE(fair->SharedFairly());
  auto a = fair->CreateQueue("a");
  EXPECT_FALSE(fair->SharedFairly()) << "a volume alone shares nothing";
  {
    auto b = fair->CreateQueue("b");
    EXPECT_TRUE(fair->SharedFairly());
  }
  EXPECT_FALSE(fair->SharedFairly()) << "the second volume is gone";
  a.reset();
  ENGINE_OR_SKIP(fifo, Engine::Create(EngineOptions{
                           .ring_entries = 8, .max_in_flight = 8, .policy = IoPolicy::kFifo}));
  auto c = fifo->CreateQueue("c");
  auto d = fifo->CreateQueue("d");
  EXPECT_FALSE(fifo->SharedFairly()) << "fifo shares nothing fairly";
}

TEST(EngineCreate, RejectsZeroSizes) {
  auto no_ring = Engine::Create(EngineOptions{.ring_entries = 0, .max_in_flight = 8});
  ASSERT_FALSE(no_ring.ok());
  EXPECT_EQ(no_ring.err(), EINVAL);
  EXPECT_NE(no_ring.status().context().find("ring_entries"), std::string::npos)
      << no_ring.status().ToString();

  auto no_slots = Engine::Create(EngineOptions{.ring_entries = 8, .max_in_flight = 0});
  ASSERT_FALSE(no_slots.ok());
  EXPECT_EQ(no_slots.err(), EINVAL);
  EXPECT_NE(no_slots.status().context().find("max_in_flight"), std::string::npos)
      << no_slots.status().ToString();
}

TEST(EngineCreate, ShutdownDoesNotWaitForTheIdleTimeout) {
  // ~Engine wakes the completion thread with a NOP; without it each
  // destruction would wait for what is left of the thread's idle timeout
  // (kIdleWakeupNs), far above the bound below. Only the destructions are
  // timed, and the fastest of five counts, so a loaded machine (a sanitizer
  // build, other jobs) does not make the test fail.
  auto fastest = std::chrono::steady_clock::duration::max();
  for (int i = 0; i < 5; ++i) {
    ENGINE_OR_SKIP(engine, Engine::Create(EngineOptions{.ring_entries = 8, .max_in_flight = 8}));
    std::this_thread::sleep_for(5ms);  // let the thread reach its wait
    const auto start = std::chrono::steady_clock::now();
    engine.reset();
    fastest = std::min(fastest, std::chrono::steady_clock::now() - start);
  }
  EXPECT_LT(fastest, 50ms);
}

// ---------------------------------------------------------------------------
// Data path

class EngineReadWriteTest : public EngineTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(EngineReadWriteTest, WriteThenReadBack) {
  const size_t size = GetParam();
  const uint64_t offset = 12345;  // deliberately unaligned
  std::vector<char> data = Pattern(size, static_cast<uint32_t>(size));

  EXPECT_EQ(Run(IoOp::kWrite, file_.fd(), offset, data.data(), size), (IoResult{size, 0}));
  EXPECT_EQ(file_.Contents(offset, size), data);  // the kernel agrees
  EXPECT_EQ(static_cast<uint64_t>(file_.Stat().st_size), offset + size);

  std::vector<char> back(size, 0);
  EXPECT_EQ(Run(IoOp::kRead, file_.fd(), offset, back.data(), size), (IoResult{size, 0}));
  EXPECT_EQ(back, data);
}

INSTANTIATE_TEST_SUITE_P(Sizes, EngineReadWriteTest,
                         ::testing::Values(1, 511, 4096, 65536 + 7, 1 << 20),
                         [](const auto& info) { return std::to_string(info.param); });

TEST_F(EngineTest, ZeroLengthReadAndWriteSucceedWithZeroBytes) {
  char c = 0;
  EXPECT_EQ(Run(IoOp::kWrite, file_.fd(), 0, &c, 0), (IoResult{0, 0}));
  EXPECT_EQ(Run(IoOp::kRead, file_.fd(), 0, &c, 0), (IoResult{0, 0}));
}

TEST_F(EngineTest, ReadPastEofReturnsBytesUpToEof) {
  const std::vector<char> data = Pattern(1000, 1);
  file_.Fill(data);
  std::vector<char> buf(4096, 0);
  EXPECT_EQ(Run(IoOp::kRead, file_.fd(), 600, buf.data(), buf.size()), (IoResult{400, 0}));
  EXPECT_EQ(std::vector<char>(buf.begin(), buf.begin() + 400),
            std::vector<char>(data.begin() + 600, data.end()));
}

TEST_F(EngineTest, ReadAtOrBeyondEofReturnsZeroBytes) {
  file_.Fill(Pattern(1000, 2));
  std::vector<char> buf(4096, 0);
  EXPECT_EQ(Run(IoOp::kRead, file_.fd(), 1000, buf.data(), buf.size()), (IoResult{0, 0}));
  EXPECT_EQ(Run(IoOp::kRead, file_.fd(), 50000, buf.data(), buf.size()), (IoResult{0, 0}));
}

TEST_F(EngineTest, BadFileDescriptorGivesPositiveEbadf) {
  char buf[16] = {};
  EXPECT_EQ(Run(IoOp::kRead, -1, 0, buf, sizeof buf), (IoResult{0, EBADF}));
  EXPECT_EQ(Run(IoOp::kFsync, -1, 0, nullptr, 0), (IoResult{0, EBADF}));

  // A real fd opened read-only: writing is EBADF as with pwrite(2).
  auto read_only = OpenAt(AT_FDCWD, file_.path(), O_RDONLY);
  ASSERT_TRUE(read_only.ok()) << read_only.status().ToString();
  EXPECT_EQ(Run(IoOp::kWrite, read_only->get(), 0, buf, sizeof buf), (IoResult{0, EBADF}));
  EXPECT_EQ(queue_->stats().errors.load(), 3u);
}

TEST_F(EngineTest, FsyncAndFdatasyncSucceed) {
  std::vector<char> data = Pattern(8192, 3);
  ASSERT_EQ(Run(IoOp::kWrite, file_.fd(), 0, data.data(), data.size()), (IoResult{8192, 0}));
  EXPECT_EQ(Run(IoOp::kFsync, file_.fd(), 0, nullptr, 0), (IoResult{0, 0}));
  EXPECT_EQ(Run(IoOp::kFdatasync, file_.fd(), 0, nullptr, 0), (IoResult{0, 0}));
}

TEST_F(EngineTest, FallocateAllocatesAndPunchHoleFrees) {
  constexpr size_t kLen = 1 << 20;
  ASSERT_EQ(file_.Stat().st_blocks, 0);

  const IoResult allocated = Run(IoOp::kFallocate, file_.fd(), 0, nullptr, kLen, 0);
  if (allocated.err == EOPNOTSUPP) GTEST_SKIP() << "the filesystem of /tmp has no fallocate";
  ASSERT_EQ(allocated, (IoResult{0, 0}));
  const struct stat after_alloc = file_.Stat();
  EXPECT_EQ(after_alloc.st_size, static_cast<off_t>(kLen));
  EXPECT_GE(after_alloc.st_blocks, static_cast<blkcnt_t>(kLen / 512));  // st_blocks: 512 B units

  const IoResult punched = Run(IoOp::kFallocate, file_.fd(), 0, nullptr, kLen,
                               FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  if (punched.err == EOPNOTSUPP) GTEST_SKIP() << "the filesystem of /tmp cannot punch holes";
  ASSERT_EQ(punched, (IoResult{0, 0}));
  const struct stat after_punch = file_.Stat();
  EXPECT_EQ(after_punch.st_size, static_cast<off_t>(kLen));  // KEEP_SIZE
  EXPECT_LT(after_punch.st_blocks, after_alloc.st_blocks);
  EXPECT_EQ(file_.Contents(0, 4096), std::vector<char>(4096, 0));
}

TEST_F(EngineTest, DirectIoWithAlignedBuffersWorks) {
  auto direct = OpenAt(AT_FDCWD, file_.path(), O_RDWR | O_DIRECT);
  if (!direct.ok() && direct.err() == EINVAL) {
    GTEST_SKIP() << "the filesystem of /tmp does not support O_DIRECT";
  }
  ASSERT_TRUE(direct.ok()) << direct.status().ToString();

  constexpr size_t kAlign = 4096;
  constexpr size_t kLen = 64 * 1024;
  auto aligned = [] {
    return std::unique_ptr<char, decltype(&std::free)>(
        static_cast<char*>(std::aligned_alloc(kAlign, kLen + kAlign)), &std::free);
  };
  auto out = aligned();
  auto in = aligned();
  ASSERT_TRUE(out && in);
  const std::vector<char> data = Pattern(kLen, 4);
  std::memcpy(out.get(), data.data(), kLen);
  std::memset(in.get(), 0, kLen + kAlign);

  EXPECT_EQ(Run(IoOp::kWrite, direct->get(), kAlign, out.get(), kLen), (IoResult{kLen, 0}));
  EXPECT_EQ(Run(IoOp::kRead, direct->get(), kAlign, in.get(), kLen), (IoResult{kLen, 0}));
  EXPECT_EQ(std::memcmp(in.get(), data.data(), kLen), 0);
  EXPECT_EQ(file_.Contents(kAlign, kLen), data);

  // Proof that the fd really bypasses the page cache: a misaligned buffer is
  // refused, which buffered I/O would accept.
  EXPECT_EQ(Run(IoOp::kRead, direct->get(), kAlign, in.get() + 1, kAlign), (IoResult{0, EINVAL}));
}

// ---------------------------------------------------------------------------
// Concurrency, queues, completion contract

class CountingRequest : public IoRequest {
 public:
  CountingRequest(size_t index, std::vector<std::atomic<int>>& completions,
                  std::vector<std::atomic<int>>& destructions, std::atomic<int>& bad_results,
                  std::atomic<int>& on_submitter_thread, Countdown& all_done,
                  std::thread::id submitter)
      : index_(index),
        completions_(completions),
        destructions_(destructions),
        bad_results_(bad_results),
        on_submitter_thread_(on_submitter_thread),
        all_done_(all_done),
        submitter_(submitter) {}
  ~CountingRequest() override { destructions_[index_].fetch_add(1); }

  void Complete(IoResult result) noexcept override {
    completions_[index_].fetch_add(1);
    if (!(result == IoResult{len, 0})) bad_results_.fetch_add(1);
    if (std::this_thread::get_id() == submitter_) on_submitter_thread_.fetch_add(1);
    all_done_.Done();
  }

 private:
  const size_t index_;
  std::vector<std::atomic<int>>& completions_;
  std::vector<std::atomic<int>>& destructions_;
  std::atomic<int>& bad_results_;
  std::atomic<int>& on_submitter_thread_;
  Countdown& all_done_;
  const std::thread::id submitter_;
};

TEST(EngineConcurrency, ManyRequestsFromTwoThreadsAcrossQueuesCompleteExactlyOnce) {
  constexpr size_t kRequests = 10'000;
  constexpr size_t kBlock = 512;
  constexpr int kThreads = 2;
  constexpr int kQueues = 4;
  // A small ring so requests pile up in the queues and the dispatcher works.
  ENGINE_OR_SKIP(engine, Engine::Create(EngineOptions{.ring_entries = 64, .max_in_flight = 32}));
  std::vector<std::unique_ptr<IoQueue>> queues;
  for (int q = 0; q < kQueues; ++q)
    queues.push_back(engine->CreateQueue("vol" + std::to_string(q)));
  TempFile file;

  std::vector<char> expected(kRequests * kBlock);
  for (size_t i = 0; i < kRequests; ++i) {
    const std::vector<char> block = Pattern(kBlock, static_cast<uint32_t>(i));
    std::memcpy(expected.data() + i * kBlock, block.data(), kBlock);
  }
  std::vector<char> actual(expected.size(), 0);

  // Phase 0 writes every block, phase 1 reads every block back.
  for (IoOp op : {IoOp::kWrite, IoOp::kRead}) {
    SCOPED_TRACE(IoOpName(op));
    std::vector<std::atomic<int>> completions(kRequests);
    std::vector<std::atomic<int>> destructions(kRequests);
    std::atomic<int> bad_results{0};
    std::atomic<int> on_submitter_thread{0};
    Countdown all_done(kRequests);
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t) {
      submitters.emplace_back([&, t] {
        for (size_t i = t; i < kRequests; i += kThreads) {
          auto r = std::make_unique<CountingRequest>(i, completions, destructions, bad_results,
                                                     on_submitter_thread, all_done,
                                                     std::this_thread::get_id());
          r->op = op;
          r->fd = file.fd();
          r->offset = i * kBlock;
          r->buf = (op == IoOp::kWrite ? expected.data() : actual.data()) + i * kBlock;
          r->len = kBlock;
          engine->Submit(*queues[(i / kThreads) % kQueues], std::move(r));
        }
      });
    }
    for (auto& t : submitters) t.join();
    ASSERT_TRUE(all_done.Wait()) << "not every request completed";
    // ~IoQueue waits until every request is destroyed; a fresh set of queues
    // per phase makes the destruction counts final.
    uint64_t ops = 0;
    for (auto& q : queues) {
      ops += op == IoOp::kWrite ? q->stats().write_ops.load() : q->stats().read_ops.load();
    }
    EXPECT_EQ(ops, kRequests);
    for (auto& q : queues) q = engine->CreateQueue(q->name());

    int wrong_count = 0;
    for (size_t i = 0; i < kRequests; ++i) {
      if (completions[i].load() != 1 || destructions[i].load() != 1) ++wrong_count;
    }
    EXPECT_EQ(wrong_count, 0) << "requests not completed and destroyed exactly once";
    EXPECT_EQ(bad_results.load(), 0);
    EXPECT_EQ(on_submitter_thread.load(), 0) << "Complete() ran on a submitting thread";
  }
  EXPECT_TRUE(actual == expected) << "data read back differs from data written";
  EXPECT_TRUE(file.Contents(0, expected.size()) == expected) << "file content differs";
}

TEST(EngineConcurrency, ASubmitterLeavesItsSqesToTheThreadAlreadyEntering) {
  // The first submitter is held right before its io_uring_enter. A second
  // Submit() meanwhile must not enter (the kernel would make it wait for the
  // first); the first enters again for it once released.
  std::mutex mu;
  std::condition_variable cv;
  std::thread::id held_thread;
  bool holding = false;
  bool released = false;
  std::vector<std::thread::id> enters;
  EngineTestHooks hooks;
  hooks.before_enter = [&] {
    std::unique_lock<std::mutex> lock(mu);
    enters.push_back(std::this_thread::get_id());
    if (std::this_thread::get_id() != held_thread) return;
    holding = true;
    cv.notify_all();
    cv.wait_for(lock, kWaitTimeout, [&] { return released; });
  };
  ENGINE_OR_SKIP(engine, EngineTestPeer::Create(EngineOptions{}, std::move(hooks)));
  auto queue = engine->CreateQueue("combine");
  TempFile file;
  file.Fill(Pattern(8192, 11));
  std::vector<char> first_buf(4096), second_buf(4096);
  Countdown both_done(2);
  std::atomic<int> second_done{0};

  std::thread first([&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      held_thread = std::this_thread::get_id();
    }
    engine->Submit(*queue, MakeRequest(IoOp::kRead, file.fd(), 0, first_buf.data(), 4096,
                                       [&](IoResult) { both_done.Done(); }));
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kWaitTimeout, [&] { return holding; }))
        << "the first Submit() never reached io_uring_enter";
  }
  engine->Submit(*queue,
                 MakeRequest(IoOp::kRead, file.fd(), 4096, second_buf.data(), 4096, [&](IoResult) {
                   second_done.fetch_add(1);
                   both_done.Done();
                 }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(second_done.load(), 0) << "the second request was submitted by its own thread";
  {
    std::lock_guard<std::mutex> lock(mu);
    released = true;
  }
  cv.notify_all();
  first.join();
  ASSERT_TRUE(both_done.Wait()) << "a request left to the entering thread never completed";
  EXPECT_EQ(second_buf, file.Contents(4096, 4096));

  std::lock_guard<std::mutex> lock(mu);
  EXPECT_GE(std::count(enters.begin(), enters.end(), held_thread), 2)
      << "the entering thread did not enter again for the second request";
  EXPECT_EQ(std::count(enters.begin(), enters.end(), std::this_thread::get_id()), 0)
      << "the second submitter entered itself";
}

TEST_F(EngineTest, CompleteCanChainAnotherSubmit) {
  // Each write's Complete() submits the next one, then a final read; this would
  // deadlock if Complete() ran under the engine lock.
  constexpr int kChain = 50;
  constexpr size_t kBlock = 100;
  const std::vector<char> data = Pattern(kChain * kBlock, 5);
  std::vector<char> back(data.size(), 0);
  std::promise<IoResult> final_result;
  std::function<void(int)> submit_step = [&](int step) {
    if (step < kChain) {
      engine_->Submit(*queue_, MakeRequest(IoOp::kWrite, file_.fd(), step * kBlock,
                                           const_cast<char*>(data.data()) + step * kBlock, kBlock,
                                           [&, step](IoResult r) {
                                             if (r.err != 0) {
                                               final_result.set_value(r);
                                               return;
                                             }
                                             submit_step(step + 1);
                                           }));
    } else {
      engine_->Submit(*queue_, MakeRequest(IoOp::kRead, file_.fd(), 0, back.data(), back.size(),
                                           [&](IoResult r) { final_result.set_value(r); }));
    }
  };
  std::future<IoResult> done = final_result.get_future();
  submit_step(0);
  ASSERT_EQ(done.wait_for(kWaitTimeout), std::future_status::ready);
  EXPECT_EQ(done.get(), (IoResult{data.size(), 0}));
  EXPECT_EQ(back, data);
  EXPECT_EQ(queue_->stats().write_ops.load(), static_cast<uint64_t>(kChain));
}

TEST_F(EngineTest, IoQueueDestructorWaitsForOutstandingRequests) {
  auto queue = engine_->CreateQueue("volume");
  Pipe pipe;
  char buf[5] = {};
  std::atomic<bool> completed{false};
  std::atomic<bool> destroyed{false};
  IoResult result;
  // A read from an empty pipe stays in the ring until the pipe is written. (It
  // asks for exactly what will be written: the engine continues short reads.)
  engine_->Submit(
      *queue, MakeRequest(IoOp::kRead, pipe.read_end.get(), 0, buf, sizeof buf, [&](IoResult r) {
        // Slow callback: ~IoQueue must wait for
        // it to return, not just for the CQE.
        std::this_thread::sleep_for(50ms);
        result = r;
        completed = true;
      }));
  std::thread destroyer([&] {
    queue.reset();
    destroyed = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(destroyed.load()) << "~IoQueue returned with a request outstanding";
  EXPECT_FALSE(completed.load());

  ASSERT_EQ(::write(pipe.write_end.get(), "hello", 5), 5);
  destroyer.join();
  EXPECT_TRUE(completed.load()) << "~IoQueue returned before Complete() did";
  EXPECT_EQ(result, (IoResult{5, 0}));
  EXPECT_EQ(std::string(buf, 5), "hello");
}

TEST_F(EngineTest, CompleteRunsOnTheCompletionThread) {
  char c = 0;
  EXPECT_TRUE(CompletedElsewhere(ReadOnSomeThread(*engine_, *queue_, false, file_.fd(), &c, 1)));
}

TEST_F(EngineTest, StatsCountOpsAndBytesPerQueue) {
  auto other = engine_->CreateQueue("other");
  std::vector<char> data = Pattern(300, 6);
  std::vector<char> buf(300, 0);
  Run(IoOp::kWrite, file_.fd(), 0, data.data(), 100);
  Run(IoOp::kWrite, file_.fd(), 100, data.data() + 100, 200);
  Run(IoOp::kRead, file_.fd(), 150, buf.data(), 300);  // 150 bytes, then EOF
  Run(IoOp::kRead, -1, 0, buf.data(), 10);             // EBADF
  Run(IoOp::kFsync, file_.fd(), 0, nullptr, 0);
  Run(IoOp::kFallocate, file_.fd(), 0, nullptr, 4096);
  RunOne(*engine_, *other, IoOp::kRead, file_.fd(), 0, buf.data(), 10);

  const IoQueueStats& s = queue_->stats();
  EXPECT_EQ(s.write_ops.load(), 2u);
  EXPECT_EQ(s.write_bytes.load(), 300u);
  EXPECT_EQ(s.read_ops.load(), 2u);
  EXPECT_EQ(s.read_bytes.load(), 150u);
  EXPECT_EQ(s.other_ops.load(), 2u);
  EXPECT_EQ(s.errors.load(), 1u);

  const IoQueueStats& o = other->stats();
  EXPECT_EQ(o.read_ops.load(), 1u);
  EXPECT_EQ(o.read_bytes.load(), 10u);
  EXPECT_EQ(o.write_ops.load() + o.write_bytes.load() + o.other_ops.load() + o.errors.load(), 0u);
}

TEST(EngineScheduling, EqualWeightsAlternateBetweenQueues) {
  ENGINE_OR_SKIP(engine, Engine::Create(EngineOptions{.ring_entries = 8, .max_in_flight = 1}));
  auto blocker_queue = engine->CreateQueue("blocker");
  auto a = engine->CreateQueue("a");
  auto b = engine->CreateQueue("b");
  TempFile file;
  file.Fill(Pattern(64, 7));

  // Hold the only in-flight slot with a pipe read, so everything below waits
  // in the queues and the dispatcher alone decides the order.
  Pipe pipe;
  char pipe_buf[1];
  Countdown done(1 + 8);
  engine->Submit(*blocker_queue, MakeRequest(IoOp::kRead, pipe.read_end.get(), 0, pipe_buf, 1,
                                             [&](IoResult) { done.Done(); }));

  std::mutex mu;
  std::string order;
  char bufs[8];
  for (int i = 0; i < 8; ++i) {
    const char name = i < 4 ? 'a' : 'b';  // all of a's requests first, then b's
    engine->Submit(i < 4 ? *a : *b,
                   MakeRequest(IoOp::kRead, file.fd(), i, &bufs[i], 1, [&, name](IoResult) {
                     {
                       std::lock_guard<std::mutex> lock(mu);
                       order += name;
                     }
                     done.Done();
                   }));
  }
  ASSERT_EQ(::write(pipe.write_end.get(), "x", 1), 1);
  ASSERT_TRUE(done.Wait());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(order == "abababab" || order == "babababa") << order;
}

// ---------------------------------------------------------------------------
// Limits, the wait bound and per-queue statistics. The scheduler's accuracy is
// tested with a manual clock in scheduler_test.cc; these check the wiring with
// real I/O and tolerant timings.

IoLimits ReadIops(uint64_t rate) {
  IoLimits l;
  l.read_iops.rate = rate;
  return l;
}

// Submits `n` one-byte reads of `file` on `queue`; `done` counts them down and
// `results` collects their errors.
void SubmitReads(Engine& engine, IoQueue& queue, const TempFile& file, int n, Countdown& done,
                 std::vector<int>* errors, std::mutex* mu) {
  static char sink[1];
  for (int i = 0; i < n; ++i) {
    engine.Submit(queue,
                  MakeRequest(IoOp::kRead, file.fd(), 0, sink, 1, [&, errors, mu](IoResult r) {
                    {
                      std::lock_guard<std::mutex> lock(*mu);
                      errors->push_back(r.err);
                    }
                    done.Done();
                  }));
  }
}

// ---------------------------------------------------------------------------
// SubmitOrRun: the I/O of an idle disk on the caller's thread

TEST_F(EngineTest, SubmitOrRunOnAnIdleDiskCompletesOnTheCallersThread) {
  const std::vector<char> data = Pattern(4096, 3);
  file_.Fill(data);
  std::vector<char> buf(4096, 0);
  std::thread::id where;
  IoResult result{0, kTimedOut};
  const bool ran_here = engine_->SubmitOrRun(
      *queue_, MakeRequest(IoOp::kRead, file_.fd(), 0, buf.data(), buf.size(), [&](IoResult r) {
        where = std::this_thread::get_id();
        result = r;
      }));
  // Complete() ran before SubmitOrRun returned, on this thread.
  EXPECT_EQ(where, std::this_thread::get_id());
  EXPECT_TRUE(ran_here) << "SubmitOrRun says where the request ran";
  EXPECT_EQ(result, (IoResult{4096, 0}));
  EXPECT_EQ(buf, data);
  const IoStatsSnapshot s = queue_->stats().Snapshot();
  EXPECT_EQ(s.read_ops, 1u);
  EXPECT_EQ(s.read_bytes, 4096u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(std::accumulate(s.latency_count.begin(), s.latency_count.end(), uint64_t{0}), 1u);
}

TEST_F(EngineTest, SubmitOrRunSendsLargeRequestsThroughTheRing) {
  const std::vector<char> data = Pattern(128 << 10, 6);
  file_.Fill(data);
  std::vector<char> buf(data.size(), 0);
  bool ran_here = true;
  EXPECT_TRUE(CompletedElsewhere(
      ReadOnSomeThread(*engine_, *queue_, true, file_.fd(), buf.data(), buf.size(), &ran_here)))
      << "a 128 KiB read held the caller";
  EXPECT_FALSE(ran_here);
  EXPECT_EQ(buf, data);
}

TEST_F(EngineTest, SubmitOrRunUsesTheRingWhileOtherIoIsInFlight) {
  file_.Fill(Pattern(16, 4));
  Pipe pipe;
  char pipe_buf[1];
  std::promise<IoResult> blocker;
  engine_->Submit(*queue_, MakeRequest(IoOp::kRead, pipe.read_end.get(), 0, pipe_buf, 1,
                                       [&](IoResult r) { blocker.set_value(r); }));
  char c = 0;
  bool ran_here = true;
  EXPECT_TRUE(
      CompletedElsewhere(ReadOnSomeThread(*engine_, *queue_, true, file_.fd(), &c, 1, &ran_here)))
      << "ran here although the disk was busy";
  EXPECT_FALSE(ran_here);
  ASSERT_EQ(::write(pipe.write_end.get(), "x", 1), 1);
  auto unblocked = blocker.get_future();
  ASSERT_EQ(unblocked.wait_for(kWaitTimeout), std::future_status::ready);
}

TEST_F(EngineTest, SubmitOrRunLeavesAThrottledRequestInItsQueue) {
  file_.Fill(Pattern(16, 5));
  // A full bucket holds a tenth of a second: one op goes at once, the next
  // 0.4 s later.
  ASSERT_TRUE(queue_->SetLimits(ReadIops(2)).ok());
  char c = 0;
  Run(IoOp::kRead, file_.fd(), 0, &c, 1);
  const auto start = std::chrono::steady_clock::now();
  auto where = ReadOnSomeThread(*engine_, *queue_, true, file_.fd(), &c, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30ms) << "SubmitOrRun waited for the limit";
  EXPECT_TRUE(CompletedElsewhere(std::move(where)));
  EXPECT_EQ(queue_->stats().read_ops.load(), 2u);
}

TEST_F(EngineTest, ThrottledRequestsWaitInTheQueueNotInSubmit) {
  file_.Fill(Pattern(16, 1));
  ASSERT_TRUE(queue_->SetLimits(ReadIops(20)).ok());  // 2 ops of credit, then one per 50 ms
  Countdown done(12);
  std::vector<int> errors;
  std::mutex mu;
  const auto start = std::chrono::steady_clock::now();
  SubmitReads(*engine_, *queue_, file_, 12, done, &errors, &mu);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 100ms) << "Submit() waited for the limit";
  EXPECT_GE(queue_->stats().queued.load(), 5u);
  ASSERT_TRUE(done.Wait());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 400ms);  // 9 ops beyond the credit at 20/s: 450 ms
  EXPECT_EQ(queue_->stats().queued.load(), 0u);
  EXPECT_EQ(queue_->stats().read_ops.load(), 12u);
  EXPECT_GE(queue_->stats().throttled_ns.load(), 300'000'000u);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), 0), 12);
}

TEST_F(EngineTest, UnlimitedQueueIsNotHeldBackByAThrottledOne) {
  file_.Fill(Pattern(16, 2));
  ASSERT_TRUE(queue_->SetLimits(ReadIops(1)).ok());
  auto free_queue = engine_->CreateQueue("free");
  Countdown throttled_done(5);
  Countdown free_done(200);
  std::vector<int> errors;
  std::mutex mu;
  SubmitReads(*engine_, *queue_, file_, 5, throttled_done, &errors, &mu);
  const auto start = std::chrono::steady_clock::now();
  SubmitReads(*engine_, *free_queue, file_, 200, free_done, &errors, &mu);
  ASSERT_TRUE(free_done.Wait());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_GE(queue_->stats().queued.load(), 3u);     // still held back
  ASSERT_TRUE(queue_->SetLimits(IoLimits{}).ok());  // release them before teardown
  EXPECT_TRUE(throttled_done.Wait());
}

TEST_F(EngineTest, RaisingTheLimitReleasesQueuedRequestsAtOnce) {
  file_.Fill(Pattern(16, 3));
  ASSERT_TRUE(queue_->SetLimits(ReadIops(1)).ok());
  Countdown done(6);
  std::vector<int> errors;
  std::mutex mu;
  SubmitReads(*engine_, *queue_, file_, 6, done, &errors, &mu);
  std::this_thread::sleep_for(50ms);
  EXPECT_GE(queue_->stats().queued.load(), 4u);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(queue_->SetLimits(ReadIops(100'000)).ok());
  ASSERT_TRUE(done.Wait());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  EXPECT_EQ(queue_->limits(), ReadIops(100'000));
}

TEST_F(EngineTest, DestroyingAThrottledQueueDoesNotWaitForItsLimit) {
  file_.Fill(Pattern(16, 6));
  ASSERT_TRUE(queue_->SetLimits(ReadIops(1)).ok());
  Countdown done(6);
  std::vector<int> errors;
  std::mutex mu;
  SubmitReads(*engine_, *queue_, file_, 6, done, &errors, &mu);
  const auto start = std::chrono::steady_clock::now();
  queue_.reset();  // at 1 op/s the five queued reads would take 5 s
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  ASSERT_TRUE(done.Wait());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), 0), 6) << "every read is still served";
}

TEST_F(EngineTest, InvalidLimitsAreRefusedAndChangeNothing) {
  ASSERT_TRUE(queue_->SetLimits(ReadIops(50)).ok());
  IoLimits bad = ReadIops(50);
  bad.read_iops.burst_rate = 10;  // below the rate
  Status s = queue_->SetLimits(bad);
  EXPECT_EQ(s.err(), EINVAL);
  EXPECT_EQ(queue_->limits(), ReadIops(50));
}

// While two queues have requests outstanding, the ring takes no more than
// contended_in_flight_cost, except one request of a queue with none in it; a
// queue alone is not capped.
TEST(EngineInFlightCap, CapsTheRingOnlyWhileQueuesContend) {
  for (const IoPolicy policy : {IoPolicy::kFair, IoPolicy::kFifo}) {
    ENGINE_OR_SKIP(engine,
                   Engine::Create(EngineOptions{.contended_in_flight_cost = kDefaultOpCostBytes + 1,
                                                .policy = policy}));
    auto a = engine->CreateQueue("a");
    auto b = engine->CreateQueue("b");
    Pipe pipe;
    char bufs[8];
    Countdown done(8);
    auto read_pipe = [&](IoQueue& q, int i) {
      engine->Submit(q, MakeRequest(IoOp::kRead, pipe.read_end.get(), 0, &bufs[i], 1,
                                    [&](IoResult) { done.Done(); }));
    };
    // Alone: all four blocking reads go into the ring.
    for (int i = 0; i < 4; ++i) read_pipe(*a, i);
    EXPECT_EQ(a->stats().in_flight.load(), 4u);
    // Contended and over the cap: b, with nothing in the ring, still gets one
    // request in; the rest wait.
    for (int i = 4; i < 8; ++i) read_pipe(*b, i);
    if (policy == IoPolicy::kFair) {
      EXPECT_EQ(b->stats().in_flight.load(), 1u);
      EXPECT_EQ(b->stats().queued.load(), 3u);
    } else {
      EXPECT_EQ(b->stats().in_flight.load(), 4u) << "fifo has no cap";
    }
    ASSERT_EQ(::write(pipe.write_end.get(), "12345678", 8), 8);
    EXPECT_TRUE(done.Wait());
  }
}

TEST(EngineWaitBound, RequestsQueuedLongerThanTheBoundFailWithEtimedout) {
  ENGINE_OR_SKIP(engine, Engine::Create(EngineOptions{.max_queue_wait_ns = 300'000'000}));
  auto queue = engine->CreateQueue("slow");
  TempFile file;
  file.Fill(Pattern(16, 4));
  ASSERT_TRUE(queue->SetLimits(ReadIops(1)).ok());  // 0.1 op of credit: one read, then 1 s each
  Countdown done(3);
  std::vector<int> errors;
  std::mutex mu;
  const auto start = std::chrono::steady_clock::now();
  SubmitReads(*engine, *queue, file, 3, done, &errors, &mu);
  ASSERT_TRUE(done.Wait());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 300ms);
  EXPECT_LT(elapsed, 900ms);  // the bound plus the 100 ms check interval, with slack
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), 0), 1);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), ETIMEDOUT), 2);
  EXPECT_EQ(queue->stats().timed_out.load(), 2u);
  EXPECT_EQ(queue->stats().errors.load(), 2u);
  EXPECT_EQ(queue->stats().queued.load(), 0u);
}

TEST_F(EngineTest, LatencyHistogramCountsEveryCompletion) {
  file_.Fill(Pattern(4096, 5));
  std::vector<char> buf(4096);
  for (int i = 0; i < 20; ++i) Run(IoOp::kRead, file_.fd(), 0, buf.data(), buf.size());
  Run(IoOp::kFsync, file_.fd(), 0, nullptr, 0);
  const IoStatsSnapshot s = queue_->stats().Snapshot();
  uint64_t counted = 0;
  for (uint64_t c : s.latency_count) counted += c;
  EXPECT_EQ(counted, 21u);
  EXPECT_GT(s.latency_sum_ns, 0u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.queued, 0u);
}

// ---------------------------------------------------------------------------
// Fault injection through EngineTestHooks

// Counts the CQEs the engine sees and lets a test rewrite their res.
struct CqeScript {
  std::atomic<int> cqes{0};
  // Given the 1-based CQE number and the real res, returns the res to use.
  std::function<int(int n, int res)> rewrite = [](int, int res) { return res; };

  EngineTestHooks Hooks(size_t max_bytes_per_sqe) {
    EngineTestHooks hooks;
    hooks.max_bytes_per_sqe = max_bytes_per_sqe;
    hooks.cqe_res_filter = [this](const IoRequest&, int res) {
      return rewrite(cqes.fetch_add(1) + 1, res);
    };
    return hooks;
  }
};

class EngineFaultTest : public ::testing::Test {
 protected:
  // Builds engine_ with the script's hooks. Returns false, having skipped or
  // failed the test, if that is impossible.
  bool Start(size_t max_bytes_per_sqe) {
    StartEngine(max_bytes_per_sqe);
    return engine_ != nullptr;
  }
  void StartEngine(size_t max_bytes_per_sqe) {
    auto engine = EngineTestPeer::Create(EngineOptions{}, script_.Hooks(max_bytes_per_sqe));
    if (!engine.ok() && LacksKernelSupport(engine.err())) {
      GTEST_SKIP() << "kernel lacks io_uring support: " << engine.status().ToString();
    }
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(*engine);
    queue_ = engine_->CreateQueue("faulty");
  }
  IoResult Run(IoOp op, uint64_t offset, void* buf, size_t len) {
    return RunOne(*engine_, *queue_, op, file_.fd(), offset, buf, len);
  }

  CqeScript script_;  // outlives the engine that calls into it
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<IoQueue> queue_;
  TempFile file_;
};

TEST_F(EngineFaultTest, ShortTransfersAreContinuedToCompletion) {
  constexpr size_t kCap = 4096;
  if (!Start(kCap)) return;
  const size_t len = (1 << 20) + 100;
  const uint64_t offset = 10;
  std::vector<char> data = Pattern(len, 8);
  const int expected_cqes = static_cast<int>((len + kCap - 1) / kCap);

  EXPECT_EQ(Run(IoOp::kWrite, offset, data.data(), len), (IoResult{len, 0}));
  EXPECT_EQ(script_.cqes.exchange(0), expected_cqes) << "each SQE should move at most the cap";
  EXPECT_EQ(file_.Contents(offset, len), data);

  std::vector<char> back(len, 0);
  EXPECT_EQ(Run(IoOp::kRead, offset, back.data(), len), (IoResult{len, 0}));
  EXPECT_EQ(script_.cqes.load(), expected_cqes);
  EXPECT_EQ(back, data);
  EXPECT_EQ(queue_->stats().read_bytes.load(), len);
  EXPECT_EQ(queue_->stats().write_bytes.load(), len);
}

TEST_F(EngineFaultTest, SubmitOrRunContinuesShortTransfersLikeTheRing) {
  constexpr size_t kCap = 4096;
  if (!Start(kCap)) return;
  const size_t len = (60 << 10) + 100;
  std::vector<char> data = Pattern(len, 9);
  IoResult result{0, kTimedOut};
  engine_->SubmitOrRun(*queue_, MakeRequest(IoOp::kWrite, file_.fd(), 0, data.data(), len,
                                            [&](IoResult r) { result = r; }));
  EXPECT_EQ(result, (IoResult{len, 0}));
  EXPECT_EQ(script_.cqes.load(), static_cast<int>((len + kCap - 1) / kCap))
      << "each call should move at most the cap, through the same result filter";
  EXPECT_EQ(file_.Contents(0, len), data);
  // A failure midway ends it as the ring would: a short write.
  script_.cqes = 0;
  script_.rewrite = [](int n, int res) { return n == 3 ? -EIO : res; };
  engine_->SubmitOrRun(*queue_, MakeRequest(IoOp::kWrite, file_.fd(), 0, data.data(), len,
                                            [&](IoResult r) { result = r; }));
  EXPECT_EQ(result, (IoResult{2 * kCap, 0}));
}

TEST_F(EngineFaultTest, ContinuedReadStopsAtEof) {
  if (!Start(4096)) return;
  const std::vector<char> data = Pattern(10000, 9);
  file_.Fill(data);
  std::vector<char> back(65536, 0);
  EXPECT_EQ(Run(IoOp::kRead, 0, back.data(), back.size()), (IoResult{10000, 0}));
  EXPECT_EQ(script_.cqes.load(), 4);  // 4096 + 4096 + 1808, then 0 (EOF)
  EXPECT_EQ(std::vector<char>(back.begin(), back.begin() + 10000), data);
}

TEST_F(EngineFaultTest, EagainAndEintrAreRetried) {
  script_.rewrite = [](int n, int res) { return n == 1 ? -EAGAIN : n == 2 ? -EINTR : res; };
  if (!Start(0)) return;
  const std::vector<char> data = Pattern(5000, 10);
  file_.Fill(data);
  std::vector<char> back(5000, 0);
  EXPECT_EQ(Run(IoOp::kRead, 0, back.data(), back.size()), (IoResult{5000, 0}));
  EXPECT_EQ(script_.cqes.load(), 3);
  EXPECT_EQ(back, data);
}

// The kernel cancels a request whose issuing thread exited while it waited in
// that thread's io-wq; it never ran, so the engine issues it again.
TEST_F(EngineFaultTest, CanceledWriteIsIssuedAgain) {
  script_.rewrite = [](int n, int res) { return n == 1 ? -ECANCELED : res; };
  if (!Start(0)) return;
  const std::vector<char> data = Pattern(5000, 13);
  std::vector<char> copy = data;
  EXPECT_EQ(Run(IoOp::kWrite, 0, copy.data(), copy.size()), (IoResult{5000, 0}));
  EXPECT_EQ(script_.cqes.load(), 2);
  EXPECT_EQ(file_.Contents(0, 5000), data);
}

TEST_F(EngineFaultTest, EagainRetriesAreBoundedAndEndInEio) {
  script_.rewrite = [](int, int) { return -EAGAIN; };
  if (!Start(0)) return;
  file_.Fill(Pattern(100, 11));
  char buf[100];
  EXPECT_EQ(Run(IoOp::kRead, 0, buf, sizeof buf), (IoResult{0, EIO}));
  EXPECT_EQ(script_.cqes.load(), 101);  // the first try and 100 retries
  EXPECT_EQ(queue_->stats().errors.load(), 1u);
}

TEST_F(EngineFaultTest, WriteFailingAfterPartialProgressIsAShortWrite) {
  script_.rewrite = [](int n, int res) { return n == 3 ? -ENOSPC : res; };
  if (!Start(4096)) return;
  std::vector<char> data = Pattern(16384, 12);
  EXPECT_EQ(Run(IoOp::kWrite, 0, data.data(), data.size()), (IoResult{8192, 0}));
  EXPECT_EQ(script_.cqes.load(), 3);
  EXPECT_EQ(file_.Contents(0, 8192), std::vector<char>(data.begin(), data.begin() + 8192));
}

TEST_F(EngineFaultTest, WriteFailingOnItsFirstChunkReportsTheError) {
  script_.rewrite = [](int, int) { return -ENOSPC; };
  if (!Start(4096)) return;
  std::vector<char> data = Pattern(16384, 13);
  EXPECT_EQ(Run(IoOp::kWrite, 0, data.data(), data.size()), (IoResult{0, ENOSPC}));
  EXPECT_EQ(queue_->stats().errors.load(), 1u);
}

TEST_F(EngineFaultTest, WriteMakingNoProgressEndsShortOrWithEio) {
  // The second chunk of the first write and the first chunk of the second
  // write report 0 bytes written.
  script_.rewrite = [](int n, int res) { return n == 2 || n == 3 ? 0 : res; };
  if (!Start(4096)) return;
  std::vector<char> data = Pattern(16384, 14);
  EXPECT_EQ(Run(IoOp::kWrite, 0, data.data(), data.size()), (IoResult{4096, 0}));
  EXPECT_EQ(Run(IoOp::kWrite, 0, data.data(), data.size()), (IoResult{0, EIO}));
}

TEST_F(EngineFaultTest, ReadFailingMidwayReportsTheError) {
  // A short read without an error would look like end of file to the caller.
  script_.rewrite = [](int n, int res) { return n == 2 ? -EIO : res; };
  if (!Start(4096)) return;
  file_.Fill(Pattern(16384, 15));
  std::vector<char> back(16384, 0);
  const IoResult r = Run(IoOp::kRead, 0, back.data(), back.size());
  EXPECT_EQ(r.err, EIO);
  EXPECT_EQ(r.bytes, 4096u);
}

}  // namespace
}  // namespace localvol::iopath
