// FUSE over io_uring (fuse/kernel_ring.h) on an in-process volume: requests
// really come through the ring, replies sent later from the I/O completion
// thread reach their entries, read and write data use the entries' buffers
// intact, and unmounting with the ring in use neither hangs nor leaks.
// The POSIX suites cover the rest over the ring (FsMode::kLocalvolRing).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/fuse_uring_switch.h"
#include "tests/support/in_process_volume.h"
#include "tests/support/mounts.h"

namespace localvol::testing {
namespace {

// A page-aligned buffer for O_DIRECT, freed when it goes out of scope.
using AlignedBuffer = std::unique_ptr<char, decltype(&std::free)>;
AlignedBuffer Aligned(size_t bytes) {
  return AlignedBuffer(static_cast<char*>(std::aligned_alloc(4096, bytes)), &std::free);
}

class KernelRingTest : public InProcessVolumeTest {
 protected:
  void SetUp() override {
    auto on = FuseUringSwitch::Acquire();
    ASSERT_TRUE(on.ok()) << on.status().ToString();
    switch_ = std::move(*on);
    fuse_io_uring_ = true;
    InProcessVolumeTest::SetUp();
  }
  void TearDown() override {
    InProcessVolumeTest::TearDown();
    switch_.reset();
  }
  // The volume alone, without the ring switch: for tests that change an
  // option and mount again.
  void UnmountVolume() { InProcessVolumeTest::TearDown(); }
  void RemountVolume() {
    InProcessVolumeTest::TearDown();
    InProcessVolumeTest::SetUp();
  }
  std::string Mounted(const std::string& name) { return volume_->mountpoint() + "/" + name; }
  uint64_t RingRequests() { return volume_->volume().KernelRingRequests(); }

  // Pattern byte of `offset` in file `seed`: every 4 KiB block differs.
  static char PatternAt(int seed, size_t offset) {
    return static_cast<char>((offset / 4096 * 7 + seed * 13 + offset % 251) & 0xff);
  }

  // Fills `out` with pattern `seed` and writes it at offset 0 of `fd` (an
  // O_DIRECT file) in 1 MiB requests.
  static void FillAndWriteDirect(int fd, char* out, size_t size, int seed) {
    for (size_t i = 0; i < size; ++i) out[i] = PatternAt(seed, i);
    constexpr size_t kRequest = 1 << 20;
    for (size_t off = 0; off < size; off += kRequest) {
      ASSERT_EQ(pwrite(fd, out + off, kRequest, off), static_cast<ssize_t>(kRequest))
          << strerror(errno);
    }
  }

  std::unique_ptr<FuseUringSwitch> switch_;
};

TEST_F(KernelRingTest, RequestsComeThroughTheRing) {
  // The kernel switches to the ring once every CPU queue has an entry; the
  // first requests after the mount may still take /dev/fuse.
  const std::string path = Mounted("f");
  for (int i = 0; i < 50; ++i) {
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(write(fd, "hello", 5), 5);
    ASSERT_EQ(close(fd), 0);
  }
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 5);
  EXPECT_GT(RingRequests(), 100u) << "the volume was asked for FUSE over io_uring";
}

TEST_F(KernelRingTest, LargeAndSmallDirectIoKeepTheirData) {
  // 1 MiB requests fill an entry's payload buffer; reads are produced in it
  // and writes consumed from it (no copy), so a mix-up between entries or a
  // buffer reused before its reply would show as wrong bytes.
  constexpr size_t kFile = 8 << 20;
  AlignedBuffer out_buffer = Aligned(kFile), in_buffer = Aligned(kFile);
  char* out = out_buffer.get();
  char* in = in_buffer.get();
  int fd = open(Mounted("big").c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_NO_FATAL_FAILURE(FillAndWriteDirect(fd, out, kFile, 1));
  for (size_t off = 0; off < kFile; off += 4096) {
    ASSERT_EQ(pread(fd, in + off, 4096, off), 4096) << strerror(errno);
  }
  EXPECT_EQ(std::memcmp(in, out, kFile), 0);
  std::memset(in, 0, kFile);
  ASSERT_EQ(pread(fd, in, kFile, 0), static_cast<ssize_t>(kFile));
  EXPECT_EQ(std::memcmp(in, out, kFile), 0);
  ASSERT_EQ(close(fd), 0);
  EXPECT_GT(RingRequests(), 0u);
}

TEST_F(KernelRingTest, ConcurrentRequestsAnsweredFromOtherThreads) {
  // With several direct reads and writes in flight, the engine completes
  // them on its own thread, which hands each reply to its ring's thread.
  constexpr int kThreads = 8;
  constexpr size_t kPerThread = 2 << 20;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string path = Mounted("c" + std::to_string(t));
      int fd = open(path.c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
      if (fd < 0) return (void)(errors[t] = std::string("open: ") + strerror(errno));
      AlignedBuffer buffer = Aligned(65536);
      char* buf = buffer.get();
      for (int round = 0; round < 2 && errors[t].empty(); ++round) {
        for (size_t off = 0; off < kPerThread; off += 65536) {
          for (size_t i = 0; i < 65536; ++i) buf[i] = PatternAt(t + round, off + i);
          if (pwrite(fd, buf, 65536, off) != 65536) {
            errors[t] = std::string("pwrite: ") + strerror(errno);
            break;
          }
        }
        for (size_t off = 0; off < kPerThread && errors[t].empty(); off += 4096) {
          if (pread(fd, buf, 4096, off) != 4096) {
            errors[t] = std::string("pread: ") + strerror(errno);
            break;
          }
          for (size_t i = 0; i < 4096; ++i) {
            if (buf[i] != PatternAt(t + round, off + i)) {
              errors[t] = "wrong byte at " + std::to_string(off + i);
              break;
            }
          }
        }
      }
      close(fd);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  EXPECT_GT(RingRequests(), 0u);
}

TEST_F(KernelRingTest, QuotaStillRefusesWritesThatDoNotFit) {
  // Writes over the ring are admitted by the same quota.
  capacity_bytes_ = 8 << 20;
  RemountVolume();
  int fd = open(Mounted("full").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::vector<char> chunk(1 << 20, 'q');
  ssize_t n = 0;
  size_t written = 0;
  while ((n = write(fd, chunk.data(), chunk.size())) > 0) written += static_cast<size_t>(n);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_LE(written, static_cast<size_t>(8 << 20));
  close(fd);
  EXPECT_GT(RingRequests(), 0u);
}

TEST_F(KernelRingTest, UnmountAndMountAgain) {
  int fd = open(Mounted("keep").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "kept", 4), 4);
  ASSERT_EQ(close(fd), 0);
  ASSERT_TRUE(volume_->Remount().ok());
  char buf[8] = {};
  fd = open(Mounted("keep").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(read(fd, buf, sizeof buf), 4);
  EXPECT_STREQ(buf, "kept");
  close(fd);
  EXPECT_GT(RingRequests(), 0u);
}

TEST_F(KernelRingTest, IdleQueuesGiveTheirMemoryBack) {
  // 1 MiB requests make entries' buffers resident. A queue with no request
  // for the idle period drops them; requests afterwards fault them in again
  // and still carry the right data (the kernel copies into the buffers as
  // they are mapped now, it does not keep pages of its own).
  fuse_io_uring_idle_release_ = std::chrono::milliseconds(1000);
  RemountVolume();
  constexpr size_t kChunk = 1 << 20;
  constexpr size_t kFile = 4 * kChunk;
  AlignedBuffer out_buffer = Aligned(kFile), in_buffer = Aligned(kFile);
  char* out = out_buffer.get();
  char* in = in_buffer.get();
  int fd = open(Mounted("idle").c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_NO_FATAL_FAILURE(FillAndWriteDirect(fd, out, kFile, 3));
  // Right after a 1 MiB request its entry is resident. Retried because a
  // stall longer than the idle period would let the queue release it first.
  uint64_t busy = 0;
  for (int attempt = 0; attempt < 5 && busy < kChunk; ++attempt) {
    ASSERT_EQ(pread(fd, in, kChunk, 0), static_cast<ssize_t>(kChunk)) << strerror(errno);
    busy = volume_->volume().KernelRingResidentBytes();
  }
  EXPECT_GE(busy, kChunk);

  uint64_t idle = busy;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (idle > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    idle = volume_->volume().KernelRingResidentBytes();
  }
  EXPECT_EQ(idle, 0u) << "resident while busy: " << busy;

  std::memset(in, 0, kFile);
  for (size_t off = 0; off < kFile; off += kChunk) {
    ASSERT_EQ(pread(fd, in + off, kChunk, off), static_cast<ssize_t>(kChunk)) << strerror(errno);
  }
  EXPECT_EQ(std::memcmp(in, out, kFile), 0);
  ASSERT_NO_FATAL_FAILURE(FillAndWriteDirect(fd, out, kFile, 4));
  ASSERT_EQ(close(fd), 0);
  fd = open(Mounted("idle").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::memset(in, 0, kFile);
  ASSERT_EQ(pread(fd, in, kFile, 0), static_cast<ssize_t>(kFile));
  EXPECT_EQ(std::memcmp(in, out, kFile), 0);
  close(fd);
}

// "Cpus_allowed_list" of each thread of this process named fuse-ring-<N>, by N.
std::map<int, std::string> RingThreadCpus() {
  std::map<int, std::string> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (!std::getline(comm, name) || name.rfind("fuse-ring-", 0) != 0) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0) {
        out[std::stoi(name.substr(10))] = line.substr(line.find_first_not_of(" \t", 18));
      }
    }
  }
  return out;
}

TEST_F(KernelRingTest, RequestsOneAtATimePinTheQueueThreadToItsCpu) {
  // fuse/thread_placement.h: a queue whose requests come one per wake-up runs
  // its thread on the queue's CPU.
  cpu_set_t mine;
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  if (CPU_COUNT(&mine) < 2) GTEST_SKIP() << "needs 2 CPUs to pin to one";
  for (const auto& [queue, cpus] : RingThreadCpus()) {
    EXPECT_NE(cpus, std::to_string(queue)) << "queue " << queue << " pinned before any request";
  }
  int fd = open(Mounted("seq").c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  AlignedBuffer buffer = Aligned(4096);
  char* buf = buffer.get();
  std::memset(buf, 'p', 4096);
  ASSERT_EQ(pwrite(fd, buf, 4096, 0), 4096);
  // Each queue decides every 1,024 requests; the test thread may move
  // between CPUs, so give every queue a chance at a whole window.
  const int requests = static_cast<int>(CPU_COUNT(&mine)) * 2 * 1024 + 1024;
  for (int i = 0; i < requests; ++i) ASSERT_EQ(pread(fd, buf, 4096, 0), 4096);
  close(fd);
  int pinned = 0;
  for (const auto& [queue, cpus] : RingThreadCpus()) {
    if (cpus == std::to_string(queue)) ++pinned;
  }
  EXPECT_GE(pinned, 1) << "no fuse-ring thread runs on its queue's CPU alone";
}

TEST_F(KernelRingTest, NegativeIdlePeriodIsRefused) {
  UnmountVolume();
  ASSERT_NO_FATAL_FAILURE(MakeVolumeDirs(&dirs_));
  fuse_io_uring_idle_release_ = std::chrono::milliseconds(-1);
  auto volume = InProcessVolume::Mount(Options());
  ASSERT_FALSE(volume.ok());
  EXPECT_EQ(volume.err(), EINVAL) << volume.status().ToString();
  EXPECT_FALSE(IsMountPoint(dirs_.mountpoint));
}

}  // namespace
}  // namespace localvol::testing
