#include "fuse/passthrough.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>

#include <algorithm>
#include <array>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "base/unique_fd.h"

namespace localvol::fuse::passthrough {
namespace {

constexpr uint64_t kInode = 42;
constexpr VolumePolicy kOn{.passthrough = true, .queued_reads = false};

OpenRequest File(int flags) { return OpenRequest{.flags = flags, .regular_file = true}; }

// Hands out ids 1, 2, ... and remembers which are registered, as the
// connection's table of backing files does.
class Device {
 public:
  PassthroughTable::Registrar Registrar() {
    return [this]() -> Result<BackingFile> {
      if (fail_) return Status::Error(EPERM, "register");
      registered_.insert(next_id_);
      return BackingFile(-1, next_id_++);
    };
  }
  void Close(const BackingFile& b) {
    if (b.valid()) registered_.erase(b.id());
  }
  bool Registered(int32_t id) const { return registered_.count(id) > 0; }
  size_t registered() const { return registered_.size(); }
  void Fail(bool fail) { fail_ = fail; }

 private:
  std::set<int32_t> registered_;
  int32_t next_id_ = 1;
  bool fail_ = false;
};

TEST(PassthroughTable, ReadersShareOneBackingFileClosedWithTheLast) {
  PassthroughTable t;
  Device dev;
  OpenDecision a = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  OpenDecision b = t.Open(kInode, File(O_RDONLY | O_DIRECT), kOn, dev.Registrar());
  EXPECT_EQ(a.mode, OpenMode::kPassthrough);
  EXPECT_EQ(b.mode, OpenMode::kPassthrough);
  EXPECT_GT(a.backing_id, 0);
  EXPECT_EQ(a.backing_id, b.backing_id) << "the kernel refuses a second backing file per inode";
  EXPECT_EQ(dev.registered(), 1u);
  EXPECT_EQ(t.passthrough_opens(), 2u);
  EXPECT_FALSE(t.Release(kInode, a.mode).valid()) << "b still uses the backing file";
  BackingFile last = t.Release(kInode, b.mode);
  EXPECT_EQ(last.id(), a.backing_id);
  EXPECT_EQ(t.passthrough_opens(), 0u);
  EXPECT_EQ(t.passthrough_opens_total(), 2u);
}

TEST(PassthroughTable, TheModeLastsFromTheFirstPassthroughOpenToItsLastRelease) {
  PassthroughTable t;
  Device dev;
  EXPECT_FALSE(t.InPassthroughMode(kInode));
  OpenDecision r = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  OpenDecision w = t.Open(kInode, File(O_RDWR), kOn, dev.Registrar());
  EXPECT_TRUE(t.InPassthroughMode(kInode));
  EXPECT_FALSE(t.InPassthroughMode(kInode + 1));
  t.Release(kInode, r.mode);
  EXPECT_TRUE(t.InPassthroughMode(kInode)) << "the writer still holds the mode";
  t.Release(kInode, w.mode);
  EXPECT_FALSE(t.InPassthroughMode(kInode));
  // A registrar that refuses (a sparse file) leaves the inode on the server path.
  dev.Fail(true);
  OpenDecision s = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  EXPECT_EQ(s.mode, OpenMode::kServer);
  EXPECT_FALSE(t.InPassthroughMode(kInode));
  t.Release(kInode, s.mode);
}

TEST(PassthroughTable, OpensThatCanAllocateTakeTheServerPath) {
  PassthroughTable t;
  Device dev;
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND}) {
    OpenDecision d = t.Open(kInode, File(flags), kOn, dev.Registrar());
    EXPECT_EQ(d.mode, OpenMode::kServer) << "flags " << flags;
    EXPECT_TRUE(d.keep_cache);
    t.Release(kInode, d.mode);
  }
  EXPECT_EQ(dev.registered(), 0u);
}

TEST(PassthroughTable, NoPassthroughWhenOffReadLimitedOrNotARegularFile) {
  PassthroughTable t;
  Device dev;
  const VolumePolicy off{.passthrough = false, .queued_reads = false};
  const VolumePolicy limited{.passthrough = true, .queued_reads = true};
  EXPECT_EQ(t.Open(1, File(O_RDONLY), off, dev.Registrar()).mode, OpenMode::kServer);
  EXPECT_EQ(t.Open(2, File(O_RDONLY), limited, dev.Registrar()).mode, OpenMode::kServer);
  EXPECT_EQ(
      t.Open(3, OpenRequest{.flags = O_RDONLY, .regular_file = false}, kOn, dev.Registrar()).mode,
      OpenMode::kServer);
  EXPECT_EQ(dev.registered(), 0u);
}

TEST(PassthroughTable, ReaderOfAnInodeOpenOnTheServerPathStaysThere) {
  // The server's open may be cached (or become so by a shared mmap of a
  // FOPEN_DIRECT_IO open, which the server does not see): a passthrough open
  // would fail with EIO.
  PassthroughTable t;
  Device dev;
  OpenDecision w = t.Open(kInode, File(O_RDWR | O_DIRECT), kOn, dev.Registrar());
  ASSERT_EQ(w.mode, OpenMode::kServer);
  OpenDecision r = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  EXPECT_EQ(r.mode, OpenMode::kServer);
  t.Release(kInode, w.mode);
  t.Release(kInode, r.mode);
  EXPECT_EQ(t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar()).mode, OpenMode::kPassthrough)
      << "with both released the inode may go passthrough";
}

TEST(PassthroughTable, WriterOfAPassthroughInodeWritesThroughTheServer) {
  PassthroughTable t;
  Device dev;
  OpenDecision r = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  ASSERT_EQ(r.mode, OpenMode::kPassthrough);
  for (int flags : {O_WRONLY, O_RDWR | O_DIRECT, O_RDONLY | O_TRUNC}) {
    OpenDecision w = t.Open(kInode, File(flags), kOn, dev.Registrar());
    EXPECT_EQ(w.mode, OpenMode::kPassthroughServerIo) << "flags " << flags;
    EXPECT_EQ(w.backing_id, r.backing_id);
    EXPECT_FALSE(t.Release(kInode, w.mode).valid());
  }
  EXPECT_TRUE(t.Release(kInode, r.mode).valid());
}

TEST(PassthroughTable, AReadLimitSendsLaterReadsThroughTheServer) {
  PassthroughTable t;
  Device dev;
  OpenDecision r = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  const VolumePolicy limited{.passthrough = true, .queued_reads = true};
  OpenDecision later = t.Open(kInode, File(O_RDONLY), limited, dev.Registrar());
  EXPECT_EQ(later.mode, OpenMode::kPassthroughServerIo) << "still passthrough mode, reads limited";
  EXPECT_EQ(later.backing_id, r.backing_id);
  EXPECT_EQ(t.Open(kInode + 1, File(O_RDONLY), limited, dev.Registrar()).mode, OpenMode::kServer);
}

TEST(PassthroughTable, FailedRegistrationFallsBackToTheServerPath) {
  PassthroughTable t;
  Device dev;
  dev.Fail(true);
  OpenDecision d = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  EXPECT_EQ(d.mode, OpenMode::kServer);
  EXPECT_EQ(d.backing_id, 0);
  dev.Fail(false);
  EXPECT_EQ(t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar()).mode, OpenMode::kServer)
      << "the failed open is still open on the server path";
  t.Release(kInode, d.mode);
}

TEST(PassthroughTable, PageCacheIsDroppedOnceAfterAPassthroughWriter) {
  PassthroughTable t;
  Device dev;
  OpenDecision r = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  OpenDecision w = t.Open(kInode, File(O_RDWR), kOn, dev.Registrar());
  ASSERT_EQ(w.mode, OpenMode::kPassthroughServerIo);
  t.Release(kInode, w.mode);
  t.Release(kInode, r.mode);
  OpenDecision next = t.Open(kInode, File(O_RDWR), kOn, dev.Registrar());
  EXPECT_EQ(next.mode, OpenMode::kServer);
  EXPECT_FALSE(next.keep_cache) << "pages cached before may predate the writer's mmap stores";
  EXPECT_TRUE(t.Open(kInode, File(O_RDWR), kOn, dev.Registrar()).keep_cache);
}

TEST(PassthroughTable, ClearHandsBackEveryBackingFile) {
  PassthroughTable t;
  Device dev;
  t.Open(1, File(O_RDONLY), kOn, dev.Registrar());
  t.Open(1, File(O_RDONLY), kOn, dev.Registrar());
  t.Open(2, File(O_RDONLY), kOn, dev.Registrar());
  t.Open(3, File(O_RDWR), kOn, dev.Registrar());
  std::vector<BackingFile> left = t.Clear();
  ASSERT_EQ(left.size(), 2u);
  for (const BackingFile& b : left) dev.Close(b);
  EXPECT_EQ(dev.registered(), 0u);
  EXPECT_EQ(t.passthrough_opens(), 0u);
  EXPECT_EQ(t.Open(3, File(O_RDONLY), kOn, dev.Registrar()).mode, OpenMode::kPassthrough)
      << "nothing is left open";
}

TEST(PassthroughTable, AbandonedAnswerIsReleasedLikeAnOpen) {
  // fuse_reply_open fails when the opener is gone; the server releases the
  // decision itself and the kernel never saw it.
  PassthroughTable t;
  Device dev;
  OpenDecision d = t.Open(kInode, File(O_RDONLY), kOn, dev.Registrar());
  BackingFile b = t.Release(kInode, d.mode);
  dev.Close(b);
  EXPECT_EQ(dev.registered(), 0u);
  EXPECT_EQ(t.passthrough_opens(), 0u);
}

// ---- The kernel's side, as fs/fuse/iomode.c and file.c (Linux 6.18) decide
// it, to check the table's answers against every order of events.

constexpr uint32_t kPassthroughMask =
    kOpenPassthrough | FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES | FOPEN_NOFLUSH;

struct KernelInode {
  int iocachectr = 0;   // > 0: opens in cached mode; < 0: passthrough opens
  int32_t backing = 0;  // the inode's backing file while in passthrough mode
  int data_version = 0;
  int cache_version = -1;  // the data the FUSE page cache holds; -1 none
};

enum class IoMode { kNone, kCached, kUncached };

struct KernelFile {
  uint32_t open_flags = 0;
  IoMode iomode = IoMode::kNone;
};

// fuse_file_io_open; 0 or the errno the opener sees.
int KernelOpen(KernelInode& in, KernelFile& f, int32_t backing_id, const Device& dev) {
  const uint32_t fl = f.open_flags;
  if (in.backing != 0 && !(fl & kOpenPassthrough)) return EIO;
  if ((fl & FOPEN_DIRECT_IO) && !(fl & kOpenPassthrough)) return 0;
  if (fl & kOpenPassthrough) {
    if (fl & ~kPassthroughMask) return EIO;
    if (!dev.Registered(backing_id)) return EIO;
    if (in.backing != 0 && in.backing != backing_id) return EIO;
    if (in.iocachectr > 0) return EIO;
    --in.iocachectr;
    in.backing = backing_id;
    f.iomode = IoMode::kUncached;
    return 0;
  }
  if (in.backing != 0) return EIO;
  ++in.iocachectr;
  f.iomode = IoMode::kCached;
  // fuse_finish_open drops the page cache unless FOPEN_KEEP_CACHE.
  if (!(fl & FOPEN_KEEP_CACHE)) in.cache_version = -1;
  return 0;
}

// fuse_file_mmap of a shared mapping; 0 or the errno mmap(2) returns.
int KernelMmapShared(KernelInode& in, KernelFile& f) {
  if (f.open_flags & kOpenPassthrough) return 0;  // the backing file's mapping
  if (in.backing != 0) return ENODEV;
  if ((f.open_flags & FOPEN_DIRECT_IO) && f.iomode == IoMode::kNone) {
    ++in.iocachectr;
    f.iomode = IoMode::kCached;
  }
  return 0;
}

// fuse_file_io_release, when the file's last reference goes.
void KernelRelease(KernelInode& in, KernelFile& f) {
  if (f.iomode == IoMode::kUncached) {
    if (++in.iocachectr == 0) in.backing = 0;
  } else if (f.iomode == IoMode::kCached) {
    --in.iocachectr;
  }
  f.iomode = IoMode::kNone;
}

// What Filesystem answers for a decision (O_DIRECT opens get FOPEN_DIRECT_IO
// on the server path, as with FUSE_DIRECT_IO_ALLOW_MMAP).
uint32_t ReplyFlags(const OpenDecision& d, int flags) {
  switch (d.mode) {
    case OpenMode::kServer:
      if (flags & O_DIRECT) return FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
      return d.keep_cache ? FOPEN_KEEP_CACHE : 0;
    case OpenMode::kPassthrough:
      return kOpenPassthrough;
    case OpenMode::kPassthroughServerIo:
      return kOpenPassthrough | FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
  }
  return 0;
}

constexpr std::array<int, 5> kOpeners = {O_RDONLY, O_RDONLY | O_DIRECT, O_WRONLY, O_RDWR | O_DIRECT,
                                         O_RDONLY | O_TRUNC};

// One file's life, in the order it must happen: the server answers, the
// kernel takes the answer (and maps the file shared, writing through the
// mapping if it may), the kernel drops its last reference, the server handles
// RELEASE.
enum Step { kDecide, kFinish, kKernelRelease, kServerRelease, kSteps };

struct Run {
  PassthroughTable table;
  Device dev;
  KernelInode inode;
  std::vector<KernelFile> files;
  std::vector<OpenDecision> decisions;
  std::string failure;
};

void Apply(Run& run, size_t file, Step step, int flags, const VolumePolicy& policy) {
  KernelFile& f = run.files[file];
  OpenDecision& d = run.decisions[file];
  const std::string who = "file " + std::to_string(file) + " (flags " + std::to_string(flags) + ")";
  switch (step) {
    case kDecide:
      d = run.table.Open(kInode, File(flags), policy, run.dev.Registrar());
      f.open_flags = ReplyFlags(d, flags);
      break;
    case kFinish: {
      if (int err = KernelOpen(run.inode, f, d.backing_id, run.dev); err != 0) {
        run.failure = who + ": open failed with errno " + std::to_string(err);
        return;
      }
      if (int err = KernelMmapShared(run.inode, f); err != 0) {
        run.failure = who + ": shared mmap failed with errno " + std::to_string(err);
        return;
      }
      const bool cached = !(f.open_flags & (FOPEN_DIRECT_IO | kOpenPassthrough));
      if (cached) {
        // Reads through the page cache must see the file's data.
        if (run.inode.cache_version >= 0 && run.inode.cache_version != run.inode.data_version) {
          run.failure = who + ": page cache kept across a write it did not see";
          return;
        }
        run.inode.cache_version = run.inode.data_version;
      }
      // Stores through a shared mapping of the backing file, past the FUSE
      // page cache.
      if ((f.open_flags & kOpenPassthrough) && (flags & O_ACCMODE) != O_RDONLY) {
        ++run.inode.data_version;
      }
      break;
    }
    case kKernelRelease:
      KernelRelease(run.inode, f);
      break;
    case kServerRelease:
      run.dev.Close(run.table.Release(kInode, d.mode));
      break;
    case kSteps:
      break;
  }
}

// Every interleaving of the steps of `openers.size()` files.
void Interleave(const std::vector<int>& openers, const VolumePolicy& policy,
                std::vector<int>& next_step, std::vector<std::pair<size_t, Step>>& order,
                const std::function<void(const std::vector<std::pair<size_t, Step>>&)>& visit) {
  if (::testing::Test::HasFatalFailure()) return;
  bool done = true;
  for (size_t i = 0; i < openers.size(); ++i) {
    if (next_step[i] == kSteps) continue;
    done = false;
    order.emplace_back(i, static_cast<Step>(next_step[i]++));
    Interleave(openers, policy, next_step, order, visit);
    --next_step[i];
    order.pop_back();
  }
  if (done) visit(order);
}

std::string Describe(const std::vector<int>& openers,
                     const std::vector<std::pair<size_t, Step>>& order) {
  static const char* kNames[] = {"decide", "finish+mmap", "kernel-release", "server-release"};
  std::string s = "openers:";
  for (int f : openers) s += " " + std::to_string(f);
  s += "; order:";
  for (auto [file, step] : order) s += " " + std::to_string(file) + ":" + kNames[step];
  return s;
}

// Runs every mix of three openers in every order and checks what XFS would
// give: every open and every shared mmap succeeds, no read sees stale pages,
// every backing id an answer names is registered when the kernel takes it,
// and every id is closed once all is released.
void CheckEveryMix(const VolumePolicy& policy) {
  size_t runs = 0;
  // Every multiset of three openers: with every order of their steps tried,
  // which file is which does not matter.
  const size_t n = kOpeners.size();
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a; b < n; ++b) {
      for (size_t c = b; c < n; ++c) {
        const std::vector<int> openers = {kOpeners[a], kOpeners[b], kOpeners[c]};
        std::vector<int> next_step(openers.size(), kDecide);
        std::vector<std::pair<size_t, Step>> order;
        Interleave(openers, policy, next_step, order, [&](const auto& steps) {
          Run run;
          run.files.resize(openers.size());
          run.decisions.resize(openers.size());
          for (auto [file, step] : steps) {
            Apply(run, file, step, openers[file], policy);
            if (!run.failure.empty()) break;
          }
          ++runs;
          if (run.failure.empty() && run.dev.registered() != 0) run.failure = "a backing id leaked";
          if (run.failure.empty() && run.table.passthrough_opens() != 0) {
            run.failure = "passthrough opens left counted";
          }
          ASSERT_TRUE(run.failure.empty()) << run.failure << "\n" << Describe(openers, steps);
        });
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
  // n multichoose 3 mixes, 12! / (4!)^3 orders each.
  EXPECT_EQ(runs, n * (n + 1) * (n + 2) / 6 * 34650u);
}

TEST(PassthroughTableAgainstKernel, EveryMixOfOpensAndReleasesIsAccepted) { CheckEveryMix(kOn); }

TEST(PassthroughTableAgainstKernel, EveryMixWithAReadLimitIsAccepted) {
  CheckEveryMix(VolumePolicy{.passthrough = true, .queued_reads = true});
}

TEST(PassthroughTableAgainstKernel, ModelRejectsWhatTheKernelRejects) {
  // The checks above can fail: answers that ignore the rules are refused.
  Device dev;
  auto registrar = dev.Registrar();
  BackingFile id = registrar().value();
  KernelInode in;
  KernelFile pt{.open_flags = kOpenPassthrough};
  ASSERT_EQ(KernelOpen(in, pt, id.id(), dev), 0);
  KernelFile cached{.open_flags = FOPEN_KEEP_CACHE};
  EXPECT_EQ(KernelOpen(in, cached, 0, dev), EIO);
  KernelFile direct{.open_flags = FOPEN_DIRECT_IO};
  EXPECT_EQ(KernelOpen(in, direct, 0, dev), EIO);
  KernelFile keep{.open_flags = kOpenPassthrough | FOPEN_KEEP_CACHE};
  EXPECT_EQ(KernelOpen(in, keep, id.id(), dev), EIO);
  KernelRelease(in, pt);
  EXPECT_EQ(in.backing, 0);
  ASSERT_EQ(KernelOpen(in, direct, 0, dev), 0);
  EXPECT_EQ(KernelMmapShared(in, direct), 0);
  KernelFile pt2{.open_flags = kOpenPassthrough};
  EXPECT_EQ(KernelOpen(in, pt2, id.id(), dev), EIO) << "a mapped FOPEN_DIRECT_IO open is cached";
}

// ---- The OS side.

TEST(BackingFile, RegisterOnSomethingElseThanAFuseDeviceFails) {
  auto null = OpenAt(AT_FDCWD, "/dev/null", O_RDWR);
  ASSERT_TRUE(null.ok());
  auto b = BackingFile::Register(null->get(), null->get());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.err(), ENOTTY);
  EXPECT_NE(b.status().ToString().find("backing file"), std::string::npos);
}

TEST(BackingFile, MovedFromOwnsNothing) {
  BackingFile a(-1, 7);
  BackingFile b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(b.id(), 7);
}

TEST(CheckBackingNotStacked, PlainDirectoryIsAccepted) {
  // The root of this machine may be anything; /proc never stacks.
  auto proc = OpenAt(AT_FDCWD, "/proc", O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(proc.ok());
  EXPECT_TRUE(CheckBackingNotStacked(proc->get(), "/proc").ok());
}

}  // namespace
}  // namespace localvol::fuse::passthrough
