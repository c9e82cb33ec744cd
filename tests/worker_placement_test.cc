// Where the /dev/fuse workers of a volume run (fuse/thread_placement.h):
// while a lone caller sends small reads one at a time, the workers pin
// themselves to the CPU it runs on and follow it; once requests come
// together they return to every CPU.
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/in_process_volume.h"

namespace localvol::testing {
namespace {

// Reads done one at a time per phase: every worker libfuse starts (4 on this
// volume) gets at least one whole decision window of 1,024 requests.
constexpr int kRequestsPerPhase = 8 * 1024;

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
    ASSERT_EQ(pwrite(fd_, buf_.get(), 4096, 0), 4096);
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

  cpu_set_t allowed_;
  std::vector<int> cpus_;  // the first two CPUs this test may use
  int fd_ = -1;
  std::unique_ptr<char, decltype(&std::free)> buf_{nullptr, &std::free};
};

TEST_F(WorkerPlacementTest, WorkersFollowALoneCallersCpuAndLeaveItUnderLoad) {
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

  ASSERT_TRUE(PinThisThread(b));
  ReadOneAtATime(kRequestsPerPhase);
  EXPECT_GE(ThreadsPinnedTo(b, self), 1) << "no worker followed the caller to CPU " << b;
  EXPECT_EQ(ThreadsPinnedTo(a, self), 0) << "a worker stayed on the caller's old CPU";

  // Eight callers at once, anywhere: most requests find others in progress.
  ASSERT_EQ(sched_setaffinity(0, sizeof allowed_, &allowed_), 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([this] {
      std::unique_ptr<char, decltype(&std::free)> own(
          static_cast<char*>(std::aligned_alloc(4096, 4096)), &std::free);
      for (int i = 0; i < kRequestsPerPhase / 2; ++i) {
        if (pread(fd_, own.get(), 4096, 0) != 4096) return ADD_FAILURE() << strerror(errno);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(ThreadsPinnedTo(a, self), 0) << "a worker stayed pinned under load";
  EXPECT_EQ(ThreadsPinnedTo(b, self), 0) << "a worker stayed pinned under load";
}

}  // namespace
}  // namespace localvol::testing
