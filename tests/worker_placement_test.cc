// Where the /dev/fuse workers of a volume run (fuse/thread_placement.h):
// while a lone caller sends small reads one at a time, the workers pin
// themselves together to the CPU it ran on when they decided, and stay there;
// once small requests come together they spread over the CPUs, one CPU each,
// in turn, and large ones or other requests send them back to every CPU; the
// next lone caller brings them together on its CPU again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "iopath/engine.h"
#include "tests/support/in_process_volume.h"

namespace localvol::testing {
namespace {

// Reads done one at a time per phase: every worker libfuse starts (4 on this
// volume) gets at least one whole decision window of 1,024 requests.
constexpr int kRequestsPerPhase = 8 * 1024;
// Just above the largest read the engine runs on a worker.
constexpr size_t kLargeRead = iopath::Engine::kRunHereMaxBytes + 4096;

pid_t ThisThread() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// Threads of this process, except `except`, that may run on `cpu` alone.
int ThreadsPinnedTo(int cpu, pid_t except) {
  int pinned = 0;
  const std::string want = std::to_string(cpu);
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == std::to_string(except)) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0 &&
          line.substr(line.find_first_not_of(" \t", 18)) == want) {
        ++pinned;
      }
    }
  }
  return pinned;
}

bool PinThisThread(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(0, sizeof one, &one) == 0;
}

class WorkerPlacementTest : public InProcessVolumeTest {
 protected:
  void SetUp() override {
    InProcessVolumeTest::SetUp();
    ASSERT_EQ(sched_getaffinity(0, sizeof allowed_, &allowed_), 0);
    for (int cpu = 0; cpu < CPU_SETSIZE && cpus_.size() < 2; ++cpu) {
      if (CPU_ISSET(cpu, &allowed_)) cpus_.push_back(cpu);
    }
    const std::string path = volume_->mountpoint() + "/placement";
    fd_ = open(path.c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
    ASSERT_GE(fd_, 0) << strerror(errno);
    buf_.reset(static_cast<char*>(std::aligned_alloc(4096, 4096)));
    std::memset(buf_.get(), 'w', 4096);
    for (size_t off = 0; off < kLargeRead; off += 4096) {
      ASSERT_EQ(pwrite(fd_, buf_.get(), 4096, static_cast<off_t>(off)), 4096);
    }
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    sched_setaffinity(0, sizeof allowed_, &allowed_);
    InProcessVolumeTest::TearDown();
  }
  // `count` 4 KiB direct reads, each after the last one returned.
  void ReadOneAtATime(int count) {
    for (int i = 0; i < count; ++i) ASSERT_EQ(pread(fd_, buf_.get(), 4096, 0), 4096);
  }
  // `callers` threads at once, anywhere, each doing `count` direct reads of
  // `size` bytes: most requests find others in progress.
  void ReadTogether(int callers, size_t size, int count) {
    ASSERT_EQ(sched_setaffinity(0, sizeof allowed_, &allowed_), 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < callers; ++t) {
      threads.emplace_back([this, size, count] {
        std::unique_ptr<char, decltype(&std::free)> own(
            static_cast<char*>(std::aligned_alloc(4096, size)), &std::free);
        for (int i = 0; i < count; ++i) {
          if (pread(fd_, own.get(), size, 0) != static_cast<ssize_t>(size)) {
            return ADD_FAILURE() << "short or failed read: " << strerror(errno);
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }

  cpu_set_t allowed_;
  std::vector<int> cpus_;  // the first two CPUs this test may use
  int fd_ = -1;
  std::unique_ptr<char, decltype(&std::free)> buf_{nullptr, &std::free};
};

TEST_F(WorkerPlacementTest, WorkersJoinALoneCallersCpuAndSpreadUnderLoad) {
  if (cpus_.size() < 2) GTEST_SKIP() << "needs 2 CPUs to pin to one";
  const pid_t self = ThisThread();
  const int a = cpus_[0];
  const int b = cpus_[1];
  ASSERT_EQ(ThreadsPinnedTo(a, self), 0) << "a thread was pinned before any request";
  ASSERT_EQ(ThreadsPinnedTo(b, self), 0) << "a thread was pinned before any request";

  ASSERT_TRUE(PinThisThread(a));
  ReadOneAtATime(kRequestsPerPhase);
  EXPECT_GE(ThreadsPinnedTo(a, self), 1) << "no worker moved to the caller's CPU " << a;
  EXPECT_EQ(ThreadsPinnedTo(b, self), 0);

  // The caller moves, still one request at a time: the workers stay
  // together where they are rather than chase it.
  ASSERT_TRUE(PinThisThread(b));
  ReadOneAtATime(kRequestsPerPhase);
  EXPECT_GE(ThreadsPinnedTo(a, self), 1);
  EXPECT_EQ(ThreadsPinnedTo(b, self), 0) << "a worker left the others to chase the caller";

  // Eight callers at once, anywhere: most requests find others in progress.
  // The first two workers to serve a request take the first two CPUs in batches,
  // and the volume's workers are then pinned, each to one CPU, on both.
  ReadTogether(8, 4096, kRequestsPerPhase / 2);
  EXPECT_GE(ThreadsPinnedTo(a, self), 1) << "no worker spread to CPU " << a << " under load";
  EXPECT_GE(ThreadsPinnedTo(b, self), 1) << "no worker spread to CPU " << b << " under load";

  // Eight callers of large reads, which the engine never runs on a worker:
  // batches, but not spread; the workers go back to every CPU.
  ReadTogether(8, kLargeRead, kRequestsPerPhase / 2);
  EXPECT_EQ(ThreadsPinnedTo(a, self), 0) << "a worker stayed pinned under large reads";
  EXPECT_EQ(ThreadsPinnedTo(b, self), 0) << "a worker stayed pinned under large reads";

  // Spread again, then requests other than reads and writes, one at a time
  // (a missing extended attribute, which the kernel asks the server for each
  // time): these, too, send the workers back to every CPU.
  ReadTogether(8, 4096, kRequestsPerPhase / 2);
  ASSERT_GE(ThreadsPinnedTo(a, self), 1);
  const std::string path = volume_->mountpoint() + "/placement";
  char value[16];
  for (int i = 0; i < kRequestsPerPhase; ++i) {
    ASSERT_LT(getxattr(path.c_str(), "user.localvol-placement-test", value, sizeof value), 0);
  }
  EXPECT_EQ(ThreadsPinnedTo(a, self), 0) << "a worker stayed pinned for other requests";
  EXPECT_EQ(ThreadsPinnedTo(b, self), 0) << "a worker stayed pinned for other requests";

  // One at a time again, from CPU b: the workers gather there this time.
  ASSERT_TRUE(PinThisThread(b));
  ReadOneAtATime(kRequestsPerPhase);
  EXPECT_GE(ThreadsPinnedTo(b, self), 1);
  EXPECT_EQ(ThreadsPinnedTo(a, self), 0) << "a worker did not join the new caller's CPU " << b;
}

// The heuristic is easy to turn off (fuse.thread_placement false, the
// agent's fuse_thread_placement): then no worker is ever pinned.
class WorkerPlacementOffTest : public WorkerPlacementTest {
 protected:
  void SetUp() override {
    thread_placement_ = false;
    WorkerPlacementTest::SetUp();
  }
};

TEST_F(WorkerPlacementOffTest, NoWorkerIsPinnedWhenPlacementIsOff) {
  if (cpus_.size() < 2) GTEST_SKIP() << "needs 2 CPUs to pin to one";
  const pid_t self = ThisThread();
  ASSERT_TRUE(PinThisThread(cpus_[0]));
  ReadOneAtATime(kRequestsPerPhase);
  EXPECT_EQ(ThreadsPinnedTo(cpus_[0], self), 0) << "a worker was pinned with placement off";
  ReadTogether(8, 4096, kRequestsPerPhase / 2);
  EXPECT_EQ(ThreadsPinnedTo(cpus_[0], self), 0) << "a worker was pinned with placement off";
  EXPECT_EQ(ThreadsPinnedTo(cpus_[1], self), 0) << "a worker was pinned with placement off";
}

}  // namespace
}  // namespace localvol::testing
