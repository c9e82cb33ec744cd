#include "tools/fsx/fsx.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <signal.h>
#include <spdlog/fmt/fmt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string_view>
#include <utility>

#include "base/scope_guard.h"
#include "base/unique_fd.h"

namespace localvol::fsx {
namespace {

constexpr uint64_t kBlock = 4096;            // O_DIRECT alignment and the boundary ops aim at
constexpr uint64_t kMaxIo = 1 << 20;         // largest single read, write, copy or mapping
constexpr uint64_t kMinFileSize = 16 << 10;  // room for several O_DIRECT blocks
constexpr int kMaxFiles = 256;
constexpr size_t kRingSize = 64;  // operations shown in a failure report

enum class OpKind {
  kRead,
  kWrite,
  kMapRead,
  kMapWrite,
  kTruncate,
  kFallocate,
  kCopyRange,
  kFsync,
  kFdatasync,
  kReopen,
  kVerify,
  kSeekData,
  kDirectRead,
  kDirectWrite,
  kCount,
};
constexpr size_t kOpCount = static_cast<size_t>(OpKind::kCount);

struct OpInfo {
  const char* name;
  uint64_t weight;
};
// Relative frequencies. Reads and writes find most bugs, so they dominate.
// fsync, reopen and verify are slow (the last two read back a whole file), so
// they are rare; they still catch damage that no random read happened to
// touch before a later write or truncate hid it.
constexpr std::array<OpInfo, kOpCount> kOpInfo = {{
    {"read", 200},
    {"write", 200},
    {"mapread", 50},
    {"mapwrite", 50},
    {"truncate", 50},
    {"fallocate", 80},
    {"copy_range", 60},
    {"fsync", 2},
    {"fdatasync", 2},
    {"reopen", 2},
    {"verify", 2},
    {"seek_data", 40},
    {"direct_read", 60},
    {"direct_write", 60},
}};

const OpInfo& Info(OpKind kind) { return kOpInfo[static_cast<size_t>(kind)]; }

struct FallocMode {
  int flags;
  const char* name;
};
constexpr std::array<FallocMode, 5> kFallocModes = {{
    {0, "0"},
    {FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"},
    {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "PUNCH_HOLE|KEEP_SIZE"},
    {FALLOC_FL_ZERO_RANGE, "ZERO_RANGE"},
    {FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "ZERO_RANGE|KEEP_SIZE"},
}};

uint64_t Mix64(uint64_t z) {  // the splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// xoshiro256** seeded through splitmix64. Spelled out rather than taken from
// <random>, whose distributions differ between standard libraries: a seed must
// replay the same run wherever the tool was built.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9e3779b97f4a7c15ULL;
      s = Mix64(seed);
    }
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n); n > 0. The multiply-shift bias is below 2^-40 for our n.
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  bool OneIn(uint64_t n) { return Below(n) == 0; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// The bytes operation `op` writes at file offset `off`: a hash of both. Data at
// the wrong offset, stale data and another operation's data all differ from
// the model, and a mismatch report can tell which recent operation wrote the
// bytes that were read.
void FillPattern(uint64_t op, uint64_t off, uint8_t* out, uint64_t len) {
  const uint64_t op_key = Mix64(op + 1);
  uint64_t i = 0;
  while (i < len) {
    const uint64_t pos = off + i;
    const uint64_t word = Mix64(op_key ^ (pos >> 3));
    if constexpr (std::endian::native == std::endian::little) {
      // Fast path, same bytes: a whole aligned word is its little-endian image.
      if ((pos & 7) == 0 && len - i >= 8) {
        std::memcpy(out + i, &word, 8);
        i += 8;
        continue;
      }
    }
    for (uint64_t b = pos & 7; b < 8 && i < len; ++b, ++i) {
      out[i] = static_cast<uint8_t>(word >> (8 * b));
    }
  }
}

// The first non-zero byte in [p, p + n), or p + n. Compares in blocks against
// zeros first, because hole checks scan megabytes.
const uint8_t* FindNonZero(const uint8_t* p, uint64_t n) {
  static const uint8_t kZeros[kBlock] = {};
  const uint8_t* end = p + n;
  while (end - p >= static_cast<ptrdiff_t>(kBlock) && std::memcmp(p, kZeros, kBlock) == 0) {
    p += kBlock;
  }
  return std::find_if(p, end, [](uint8_t b) { return b != 0; });
}

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : fmt::format("errno {}", err);
}

std::string HexBytes(const uint8_t* p, uint64_t n) {
  std::string out;
  for (uint64_t i = 0; i < n; ++i) out += fmt::format("{}{:02x}", i == 0 ? "" : " ", p[i]);
  return out;
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789/._-+=:,@") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Owns one mmap(2) region.
class Mapping {
 public:
  Mapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_ != nullptr) ::munmap(addr_, len_);
  }
  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  // Unmaps now; returns 0 or the errno, which the destructor could not report.
  int Unmap() {
    int err = ::munmap(addr_, len_) < 0 ? errno : 0;
    addr_ = nullptr;
    return err;
  }

 private:
  void* addr_;
  size_t len_;
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

struct File {
  std::string name;            // inside the directory; empty until created
  UniqueFd fd;                 // O_RDWR
  UniqueFd direct_fd;          // O_RDWR | O_DIRECT, when direct I/O is on
  std::vector<uint8_t> model;  // what the file must hold; size() is its size
};

struct LogEntry {
  uint64_t op;
  OpKind kind;
  int file;
  uint64_t off;
  uint64_t len;
  std::string text;
};

// One run. Every operation makes all of its random choices first, records
// itself with Begin(), then does the syscalls and checks. So the random stream
// never depends on timing, and on results only through the feature fallbacks
// and tolerated space errors, which repeat on the same filesystem.
class Exerciser {
 public:
  Exerciser(const Options& options, spdlog::logger& log)
      : o_(options), log_(log), rng_(options.seed) {
    falloc_ok_.fill(options.fallocate);
  }
  Exerciser(const Exerciser&) = delete;
  Exerciser& operator=(const Exerciser&) = delete;

  Status Setup();
  Report Execute();

 private:
  // Random choices.
  uint64_t PickLength(uint64_t limit);
  uint64_t PickOffset(uint64_t size, uint64_t limit);
  uint64_t PickSize(uint64_t size);
  OpKind PickOp();
  bool Enabled(OpKind kind) const;

  // Operations; false means Fail() was called.
  bool Step();
  bool DoRead(int fi);
  bool DoWrite(int fi);
  bool DoMap(int fi, bool write);
  bool DoTruncate(int fi);
  bool DoFallocate(int fi);
  bool DoCopyRange(int fi);
  bool DoSync(int fi, bool data_only);
  bool DoReopen(int fi);
  bool DoSeekData(int fi);
  bool DoDirect(int fi, bool write);

  // Checks against the model.
  bool CheckSize(int fi);
  bool ReadBack(int fi, int fd, uint64_t off, uint64_t len, bool direct, std::string_view how);
  bool Compare(int fi, uint64_t off, const uint8_t* got, uint64_t n, std::string_view how);
  bool VerifyAll(int fi, std::string_view how);
  bool CheckHole(int fi, uint64_t from, uint64_t to, uint64_t asked_at);
  bool SeekError(int err, std::string_view call, int fi, uint64_t at);
  std::string Hint(int fi, uint64_t off, const uint8_t* want, const uint8_t* got, uint64_t n) const;

  // Changing files and model together.
  bool WriteAll(int fi, int fd, const uint8_t* buf, uint64_t off, uint64_t len,
                std::string_view how);
  bool AdoptAfterSpaceError(int fi, uint64_t off, uint64_t end, uint64_t max_size, bool may_zero);
  void ApplyWrite(int fi, uint64_t off, const uint8_t* data, uint64_t n);
  void ZeroModel(int fi, uint64_t off, uint64_t end);
  Status OpenDirect(File& f);
  void CloseFiles();
  void RemoveFiles();

  // Bookkeeping.
  void Begin(OpKind kind, int fi, uint64_t off, uint64_t len, std::string text);
  void Note(std::string_view note);
  void Disable(std::string feature, int err);
  bool SpaceError(int err);
  bool Fail(std::string what);
  bool FailErrno(int err, std::string_view what);
  std::string Path(const File& f) const;
  std::string FailureReport(uint64_t ops) const;

  const Options& o_;
  spdlog::logger& log_;
  Rng rng_;
  UniqueFd dir_;
  std::vector<File> files_;
  std::unique_ptr<uint8_t, FreeDeleter> buf_;  // kMaxIo bytes, kBlock-aligned for O_DIRECT
  long page_size_ = 4096;
  uint64_t op_ = 0;  // index of the operation running now
  std::deque<LogEntry> ring_;
  std::string failure_;
  uint64_t bytes_verified_ = 0;
  uint64_t space_errors_ = 0;
  std::array<uint64_t, kOpCount> counts_ = {};

  // Features, switched off for good when the filesystem lacks them.
  bool mmap_ok_ = true;
  bool copy_ok_ = true;
  bool seek_ok_ = true;
  bool seek_worked_ = false;  // once SEEK_DATA has worked, EINVAL is a bug, not a lack
  bool direct_ok_ = false;
  std::array<bool, kFallocModes.size()> falloc_ok_;
  std::vector<std::string> disabled_;
};

// --- Random choices ----------------------------------------------------------

// A length in [1, limit], biased to the sizes where block and page handling
// changes: 1 byte, block boundaries and one byte either side, 128 KiB (a
// common FUSE/readahead unit), and up to 1 MiB.
uint64_t Exerciser::PickLength(uint64_t limit) {
  static constexpr uint64_t kInteresting[] = {1,     2,      511,    512,    513,   4095,
                                              4096,  4097,   8191,   8192,   8193,  65535,
                                              65536, 131071, 131072, 131073, kMaxIo};
  uint64_t len;
  switch (rng_.Below(8)) {
    case 0:
    case 1:
      len = kInteresting[rng_.Below(std::size(kInteresting))];
      break;
    case 2:
    case 3:
    case 4:
      len = 1 + rng_.Below(2 * kBlock);
      break;
    case 5:
    case 6:
      len = 1 + rng_.Below(128 << 10);
      break;
    default:
      len = 1 + rng_.Below(kMaxIo);
      break;
  }
  return std::min(len, limit);
}

// An offset in [0, limit), limit >= 1: inside the file, on or next to a block
// boundary, at EOF, just past EOF (leaving a hole), or anywhere.
uint64_t Exerciser::PickOffset(uint64_t size, uint64_t limit) {
  uint64_t off;
  switch (rng_.Below(8)) {
    case 0:
    case 1:
    case 2:
      off = rng_.Below(std::max<uint64_t>(size, 1));
      break;
    case 3: {
      uint64_t span = rng_.OneIn(2) ? std::max(size, kBlock) : limit;
      off = rng_.Below(span / kBlock + 1) * kBlock + rng_.Below(3);
      off = off > 0 ? off - 1 : 0;
      break;
    }
    case 4:
      off = size + rng_.Below(3);
      off = off > 0 ? off - 1 : 0;
      break;
    case 5:
      off = size + rng_.Below(256 << 10);
      break;
    default:
      off = rng_.Below(limit);
      break;
  }
  return std::min(off, limit - 1);
}

// A new size for truncate, in [0, file_size].
uint64_t Exerciser::PickSize(uint64_t size) {
  uint64_t to;
  switch (rng_.Below(6)) {
    case 0:
      to = rng_.OneIn(4) ? 0 : rng_.Below(size + 1);
      break;
    case 1:
      to = size - std::min(size, PickLength(size + 1));
      break;
    case 2:
      to = size + PickLength(o_.file_size);
      break;
    case 3:
      to = rng_.Below(o_.file_size / kBlock + 1) * kBlock + rng_.Below(3);
      to = to > 0 ? to - 1 : 0;
      break;
    default:
      to = rng_.Below(o_.file_size + 1);
      break;
  }
  return std::min(to, o_.file_size);
}

bool Exerciser::Enabled(OpKind kind) const {
  switch (kind) {
    case OpKind::kMapRead:
      return o_.mmap && mmap_ok_;
    case OpKind::kMapWrite:
      return o_.mmap && mmap_ok_ && !o_.allow_enospc;
    case OpKind::kFallocate:
      return std::find(falloc_ok_.begin(), falloc_ok_.end(), true) != falloc_ok_.end();
    case OpKind::kCopyRange:
      return copy_ok_;
    case OpKind::kSeekData:
      return seek_ok_;
    case OpKind::kDirectRead:
    case OpKind::kDirectWrite:
      return direct_ok_;
    default:
      return true;
  }
}

OpKind Exerciser::PickOp() {
  uint64_t total = 0;
  for (size_t k = 0; k < kOpCount; ++k) {
    if (Enabled(static_cast<OpKind>(k))) total += kOpInfo[k].weight;
  }
  uint64_t r = rng_.Below(total);
  for (size_t k = 0; k < kOpCount; ++k) {
    if (!Enabled(static_cast<OpKind>(k))) continue;
    if (r < kOpInfo[k].weight) return static_cast<OpKind>(k);
    r -= kOpInfo[k].weight;
  }
  return OpKind::kRead;  // not reached: r < total
}

// --- Operations ------------------------------------------------------------------

bool Exerciser::Step() {
  const OpKind kind = PickOp();
  const int fi = static_cast<int>(rng_.Below(files_.size()));
  ++counts_[static_cast<size_t>(kind)];
  switch (kind) {
    case OpKind::kRead:
      return DoRead(fi);
    case OpKind::kWrite:
      return DoWrite(fi);
    case OpKind::kMapRead:
      return DoMap(fi, /*write=*/false);
    case OpKind::kMapWrite:
      return DoMap(fi, /*write=*/true);
    case OpKind::kTruncate:
      return DoTruncate(fi);
    case OpKind::kFallocate:
      return DoFallocate(fi);
    case OpKind::kCopyRange:
      return DoCopyRange(fi);
    case OpKind::kFsync:
      return DoSync(fi, /*data_only=*/false);
    case OpKind::kFdatasync:
      return DoSync(fi, /*data_only=*/true);
    case OpKind::kReopen:
      return DoReopen(fi);
    case OpKind::kVerify:
      Begin(OpKind::kVerify, fi, 0, files_[fi].model.size(),
            fmt::format("verify f{} (size {:#x})", fi, files_[fi].model.size()));
      return VerifyAll(fi, "verify");
    case OpKind::kSeekData:
      return DoSeekData(fi);
    case OpKind::kDirectRead:
      return DoDirect(fi, /*write=*/false);
    case OpKind::kDirectWrite:
      return DoDirect(fi, /*write=*/true);
    case OpKind::kCount:
      break;
  }
  return Fail("internal error: unknown operation");
}

// Reads may run past EOF, which checks that EOF is where the model says.
bool Exerciser::DoRead(int fi) {
  const uint64_t size = files_[fi].model.size();
  const uint64_t off = PickOffset(size, o_.file_size);
  const uint64_t len = PickLength(o_.file_size - off);
  Begin(OpKind::kRead, fi, off, len,
        fmt::format("read f{} off {:#x} len {:#x} (size {:#x})", fi, off, len, size));
  return ReadBack(fi, files_[fi].fd.get(), off, len, /*direct=*/false, "read");
}

// Writes may start past EOF, leaving a hole the model fills with zeros.
bool Exerciser::DoWrite(int fi) {
  const uint64_t size = files_[fi].model.size();
  const uint64_t off = PickOffset(size, o_.file_size);
  const uint64_t len = PickLength(o_.file_size - off);
  Begin(OpKind::kWrite, fi, off, len,
        fmt::format("write f{} off {:#x} len {:#x} (size {:#x})", fi, off, len, size));
  FillPattern(op_, off, buf_.get(), len);
  return WriteAll(fi, files_[fi].fd.get(), buf_.get(), off, len, "pwrite") && CheckSize(fi);
}

// MAP_SHARED access within the current size (a mapping cannot extend a file).
bool Exerciser::DoMap(int fi, bool write) {
  File& f = files_[fi];
  const OpKind kind = write ? OpKind::kMapWrite : OpKind::kMapRead;
  const char* name = Info(kind).name;
  const uint64_t size = f.model.size();
  if (size == 0) {
    Begin(kind, fi, 0, 0, fmt::format("{} f{} skipped: empty file", name, fi));
    return true;
  }
  const uint64_t off = PickOffset(size, size);
  const uint64_t len = PickLength(size - off);
  const bool sync = write && rng_.OneIn(3);
  Begin(kind, fi, off, len,
        fmt::format("{} f{} off {:#x} len {:#x} (size {:#x}){}", name, fi, off, len, size,
                    sync ? " msync" : ""));
  // A file shorter than the model would fault; catch that as a size mismatch.
  if (!CheckSize(fi)) return false;

  const uint64_t map_off = off & ~static_cast<uint64_t>(page_size_ - 1);
  const size_t map_len = off + len - map_off;
  void* addr = ::mmap(nullptr, map_len, PROT_READ | (write ? PROT_WRITE : 0), MAP_SHARED,
                      f.fd.get(), static_cast<off_t>(map_off));
  if (addr == MAP_FAILED) {
    const int err = errno;
    // ENODEV: the filesystem has no shared mmap (e.g. FUSE direct_io).
    if (err == ENODEV || err == EOPNOTSUPP) {
      mmap_ok_ = false;
      Disable("mmap MAP_SHARED", err);
      return true;
    }
    return FailErrno(err, fmt::format("mmap f{} off {:#x} len {:#x}", fi, map_off, map_len));
  }
  Mapping map(addr, map_len);
  uint8_t* p = map.data() + (off - map_off);
  uint8_t* buf = buf_.get();
  if (write) {
    FillPattern(op_, off, buf, len);
    if (!GuardedCopy(p, buf, len)) {
      return Fail(fmt::format("mapwrite f{} off {:#x} len {:#x}: SIGBUS storing to the mapping", fi,
                              off, len));
    }
    ApplyWrite(fi, off, buf, len);
    if (sync && RetryEintr([&] { return ::msync(map.data(), map_len, MS_SYNC); }) < 0) {
      return FailErrno(errno, fmt::format("msync f{} off {:#x} len {:#x}", fi, map_off, map_len));
    }
  } else if (!GuardedCopy(buf, p, len)) {
    // Filesystems that allocate on a read fault (tmpfs fills holes) raise
    // SIGBUS when full. The failed read changed nothing, so with
    // --allow-enospc the run goes on; later reads still check the data.
    if (o_.allow_enospc) {
      Note("SIGBUS, tolerated with --allow-enospc");
      if (int err = map.Unmap(); err != 0) return FailErrno(err, fmt::format("munmap f{}", fi));
      return true;
    }
    return Fail(
        fmt::format("mapread f{} off {:#x} len {:#x}: SIGBUS loading from the mapping (the "
                    "filesystem could not supply a page: I/O error, or no space to fill a hole)",
                    fi, off, len));
  }
  if (int err = map.Unmap(); err != 0) return FailErrno(err, fmt::format("munmap f{}", fi));
  return write ? CheckSize(fi) : Compare(fi, off, buf, len, "mapread");
}

bool Exerciser::DoTruncate(int fi) {
  File& f = files_[fi];
  const uint64_t size = f.model.size();
  const uint64_t to = PickSize(size);
  Begin(OpKind::kTruncate, fi, std::min(size, to), std::max(size, to) - std::min(size, to),
        fmt::format("truncate f{} {:#x} -> {:#x}", fi, size, to));
  if (RetryEintr([&] { return ::ftruncate(f.fd.get(), static_cast<off_t>(to)); }) < 0) {
    const int err = errno;
    if (to > size && SpaceError(err)) {
      Note(ErrnoName(err));
      return CheckSize(fi);  // a refused truncate must leave the size alone
    }
    return FailErrno(err, fmt::format("ftruncate f{} to {:#x}", fi, to));
  }
  f.model.resize(to);  // growing zero-fills, as the file must read
  return CheckSize(fi);
}

bool Exerciser::DoFallocate(int fi) {
  File& f = files_[fi];
  const uint64_t size = f.model.size();
  std::array<size_t, kFallocModes.size()> modes;
  size_t n_modes = 0;
  for (size_t m = 0; m < kFallocModes.size(); ++m) {
    if (falloc_ok_[m]) modes[n_modes++] = m;
  }
  const size_t m = modes[rng_.Below(n_modes)];
  const FallocMode& mode = kFallocModes[m];
  const uint64_t off = PickOffset(size, o_.file_size);
  const uint64_t len = PickLength(o_.file_size - off);
  const uint64_t end = off + len;
  Begin(OpKind::kFallocate, fi, off, len,
        fmt::format("fallocate f{} {} off {:#x} len {:#x} (size {:#x})", fi, mode.name, off, len,
                    size));
  const bool keep_size = mode.flags & FALLOC_FL_KEEP_SIZE;
  const bool zeroes = mode.flags & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
  if (RetryEintr([&] {
        return ::fallocate(f.fd.get(), mode.flags, static_cast<off_t>(off),
                           static_cast<off_t>(len));
      }) < 0) {
    const int err = errno;
    if (err == EOPNOTSUPP) {
      falloc_ok_[m] = false;
      Disable(fmt::format("fallocate {}", mode.name), err);
      return CheckSize(fi);
    }
    if (SpaceError(err)) {
      Note(ErrnoName(err));
      return AdoptAfterSpaceError(fi, off, end, keep_size ? size : std::max(size, end), zeroes);
    }
    return FailErrno(err,
                     fmt::format("fallocate f{} {} off {:#x} len {:#x}", fi, mode.name, off, len));
  }
  if (!keep_size && end > size) f.model.resize(end);
  if (zeroes) ZeroModel(fi, off, std::min<uint64_t>(end, f.model.size()));
  return CheckSize(fi);
}

// Copies between two files (or two disjoint ranges of one, with --files 1).
bool Exerciser::DoCopyRange(int fi) {
  const int src = fi;
  const int dst = files_.size() > 1
                      ? static_cast<int>((fi + 1 + rng_.Below(files_.size() - 1)) % files_.size())
                      : fi;
  const uint64_t src_size = files_[src].model.size();
  if (src_size == 0) {
    Begin(OpKind::kCopyRange, dst, 0, 0,
          fmt::format("copy_range f{} -> f{} skipped: empty source", src, dst));
    return true;
  }
  const uint64_t src_off = PickOffset(src_size, src_size);
  const uint64_t len = PickLength(src_size - src_off);
  uint64_t dst_off = PickOffset(files_[dst].model.size(), o_.file_size - len + 1);
  // The kernel refuses overlapping ranges within one file; move the target aside.
  if (src == dst && dst_off < src_off + len && src_off < dst_off + len) {
    if (src_off + 2 * len <= o_.file_size) {
      dst_off = src_off + len;
    } else if (src_off >= len) {
      dst_off = src_off - len;
    } else {
      Begin(OpKind::kCopyRange, dst, 0, 0,
            fmt::format("copy_range f{} -> f{} skipped: no room for a disjoint range", src, dst));
      return true;
    }
  }
  Begin(OpKind::kCopyRange, dst, dst_off, len,
        fmt::format("copy_range f{} off {:#x} -> f{} off {:#x} len {:#x} (sizes {:#x}, {:#x})", src,
                    src_off, dst, dst_off, len, src_size, files_[dst].model.size()));
  uint64_t done = 0;
  while (done < len) {
    loff_t in = static_cast<loff_t>(src_off + done);
    loff_t out = static_cast<loff_t>(dst_off + done);
    const ssize_t n = RetryEintr([&] {
      return ::copy_file_range(files_[src].fd.get(), &in, files_[dst].fd.get(), &out, len - done,
                               0);
    });
    if (n < 0) {
      const int err = errno;
      if (done == 0 && (err == EOPNOTSUPP || err == ENOSYS || err == EXDEV)) {
        copy_ok_ = false;
        Disable("copy_file_range", err);
        return true;
      }
      if (SpaceError(err)) {
        Note(fmt::format("{} after {:#x} bytes", ErrnoName(err), done));
        break;
      }
      return FailErrno(err, fmt::format("copy_file_range f{} off {:#x} -> f{} off {:#x} after "
                                        "{:#x} of {:#x} bytes",
                                        src, src_off, dst, dst_off, done, len));
    }
    if (n == 0) {
      return Fail(
          fmt::format("copy_file_range f{} -> f{}: hit EOF at source offset {:#x}, but the "
                      "model's source size is {:#x}",
                      src, dst, src_off + done, src_size));
    }
    // Through a copy: with one file, growing the model may move the source bytes.
    std::memcpy(buf_.get(), files_[src].model.data() + src_off + done, n);
    ApplyWrite(dst, dst_off + done, buf_.get(), n);
    done += n;
  }
  return CheckSize(dst);
}

bool Exerciser::DoSync(int fi, bool data_only) {
  const char* name = data_only ? "fdatasync" : "fsync";
  Begin(data_only ? OpKind::kFdatasync : OpKind::kFsync, fi, 0, 0, fmt::format("{} f{}", name, fi));
  const int fd = files_[fi].fd.get();
  if (RetryEintr([&] { return data_only ? ::fdatasync(fd) : ::fsync(fd); }) < 0) {
    return FailErrno(errno, fmt::format("{} f{}", name, fi));
  }
  return true;
}

// Closes and reopens the file, then reads all of it back: data must not live
// only in state tied to the old open file.
bool Exerciser::DoReopen(int fi) {
  File& f = files_[fi];
  Begin(OpKind::kReopen, fi, 0, f.model.size(),
        fmt::format("reopen f{} (size {:#x})", fi, f.model.size()));
  f.direct_fd.Reset();
  f.fd.Reset();
  auto fd = OpenAt(dir_.get(), f.name, O_RDWR);
  if (!fd.ok()) return FailErrno(fd.err(), fd.status().context());
  f.fd = std::move(*fd);
  if (Status s = OpenDirect(f); !s.ok()) return FailErrno(s.err(), s.context());
  return VerifyAll(fi, "read after reopen");
}

// Walks SEEK_DATA/SEEK_HOLE from a random offset to EOF. Filesystems may call
// any range data, but a range reported as a hole must read as zeros, so every
// non-zero model byte has to fall inside reported data.
bool Exerciser::DoSeekData(int fi) {
  File& f = files_[fi];
  const uint64_t size = f.model.size();
  const uint64_t start = size == 0 ? 0 : PickOffset(size, size + 1);
  Begin(OpKind::kSeekData, fi, start, size - start,
        fmt::format("seek_data f{} from {:#x} (size {:#x})", fi, start, size));
  const int fd = f.fd.get();
  if (start >= size) {
    // At or past EOF there is neither data nor a hole to find.
    for (int whence : {SEEK_DATA, SEEK_HOLE}) {
      const char* call = whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE";
      const off_t r = ::lseek(fd, static_cast<off_t>(start), whence);
      if (r >= 0) {
        return Fail(fmt::format("{} f{} at {:#x} (EOF {:#x}) returned {:#x}, expected ENXIO", call,
                                fi, start, size, r));
      }
      if (errno != ENXIO) return SeekError(errno, call, fi, start);
    }
    seek_worked_ = true;
    return true;
  }
  uint64_t pos = start;
  uint64_t extents = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) return SeekError(errno, "SEEK_DATA", fi, pos);
      data = static_cast<off_t>(size);  // no data after pos: the rest is hole
    } else if (static_cast<uint64_t>(data) < pos || static_cast<uint64_t>(data) >= size) {
      return Fail(fmt::format("SEEK_DATA f{} from {:#x} returned {:#x}, outside [{:#x}, {:#x})", fi,
                              pos, data, pos, size));
    }
    seek_worked_ = true;
    if (!CheckHole(fi, pos, data, pos)) return false;
    if (static_cast<uint64_t>(data) == size) break;
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return SeekError(errno, "SEEK_HOLE", fi, data);
    if (hole <= data || static_cast<uint64_t>(hole) > size) {
      return Fail(fmt::format("SEEK_HOLE f{} from {:#x} returned {:#x}, outside ({:#x}, {:#x}]", fi,
                              data, hole, data, size));
    }
    ++extents;
    pos = hole;
  }
  Note(fmt::format("{} data extents", extents));
  return true;
}

// O_DIRECT on a second fd, 4096-aligned offset, length and buffer; mixes with
// buffered I/O and mmap on the same file, so page cache coherence is checked.
bool Exerciser::DoDirect(int fi, bool write) {
  File& f = files_[fi];
  const OpKind kind = write ? OpKind::kDirectWrite : OpKind::kDirectRead;
  const uint64_t size = f.model.size();
  const uint64_t limit = o_.file_size / kBlock * kBlock;
  const uint64_t off = PickOffset(size, limit) / kBlock * kBlock;
  const uint64_t room = limit - off;
  const uint64_t len = std::min((PickLength(room) + kBlock - 1) / kBlock * kBlock, room);
  Begin(
      kind, fi, off, len,
      fmt::format("{} f{} off {:#x} len {:#x} (size {:#x})", Info(kind).name, fi, off, len, size));
  if (!write) return ReadBack(fi, f.direct_fd.get(), off, len, /*direct=*/true, "direct_read");
  FillPattern(op_, off, buf_.get(), len);
  return WriteAll(fi, f.direct_fd.get(), buf_.get(), off, len, "direct pwrite") && CheckSize(fi);
}

// --- Checks ------------------------------------------------------------------------

bool Exerciser::CheckSize(int fi) {
  struct stat st;
  if (::fstat(files_[fi].fd.get(), &st) < 0) return FailErrno(errno, fmt::format("fstat f{}", fi));
  const uint64_t want = files_[fi].model.size();
  if (static_cast<uint64_t>(st.st_size) != want) {
    return Fail(fmt::format("f{} size mismatch: fstat says {:#x}, the model says {:#x}", fi,
                            st.st_size, want));
  }
  return true;
}

// Reads [off, off+len) and compares with the model, including where EOF falls.
bool Exerciser::ReadBack(int fi, int fd, uint64_t off, uint64_t len, bool direct,
                         std::string_view how) {
  const uint64_t size = files_[fi].model.size();
  const uint64_t want = off < size ? std::min(len, size - off) : 0;
  uint8_t* buf = buf_.get();
  uint64_t got = 0;
  while (got < len) {
    const ssize_t n = RetryEintr([&] { return ::pread(fd, buf + got, len - got, off + got); });
    if (n < 0) {
      return FailErrno(errno, fmt::format("{} f{} off {:#x} len {:#x}, after {:#x} bytes", how, fi,
                                          off, len, got));
    }
    if (n == 0) break;
    got += n;
    // O_DIRECT cannot go on from an unaligned offset; a partial block is EOF.
    if (direct && got % kBlock != 0) break;
  }
  if (got != want) {
    struct stat st = {};
    ::fstat(fd, &st);
    return Fail(
        fmt::format("{} f{} off {:#x} len {:#x}: read returned {:#x} bytes, the model "
                    "expects {:#x} (model size {:#x}, fstat size {:#x})",
                    how, fi, off, len, got, want, size, st.st_size));
  }
  return Compare(fi, off, buf, got, how);
}

bool Exerciser::Compare(int fi, uint64_t off, const uint8_t* got, uint64_t n,
                        std::string_view how) {
  const uint8_t* want = files_[fi].model.data() + off;
  if (n == 0 || std::memcmp(want, got, n) == 0) {
    bytes_verified_ += n;
    return true;
  }
  uint64_t first = 0;
  while (want[first] == got[first]) ++first;
  uint64_t last = n - 1;
  while (want[last] == got[last]) --last;
  uint64_t differing = 0;
  for (uint64_t i = first; i <= last; ++i) differing += want[i] != got[i];
  const uint64_t shown = std::min<uint64_t>(16, n - first);
  std::string what = fmt::format(
      "{} f{} off {:#x} len {:#x}: data mismatch at offset {:#x}; {} bytes differ in [{:#x}, "
      "{:#x}]\n  expected: {}\n  got:      {}",
      how, fi, off, n, off + first, differing, off + first, off + last,
      HexBytes(want + first, shown), HexBytes(got + first, shown));
  std::string hint = Hint(fi, off + first, want + first, got + first, shown);
  if (!hint.empty()) what += "\n  " + hint;
  return Fail(std::move(what));
}

// Names the recent operations whose data the expected and the read bytes are,
// which usually tells a lost write from stale or misplaced data.
std::string Exerciser::Hint(int fi, uint64_t off, const uint8_t* want, const uint8_t* got,
                            uint64_t n) const {
  std::vector<std::string> hints;
  if (std::all_of(got, got + n, [](uint8_t b) { return b == 0; })) {
    hints.push_back("the bytes read are zero");
  }
  uint8_t pattern[16];
  for (auto it = ring_.rbegin(); it != ring_.rend(); ++it) {
    const LogEntry& e = *it;
    const bool writes =
        e.kind == OpKind::kWrite || e.kind == OpKind::kMapWrite || e.kind == OpKind::kDirectWrite;
    if (!writes || e.file != fi || off < e.off || off >= e.off + e.len) continue;
    FillPattern(e.op, off, pattern, n);
    if (std::memcmp(pattern, want, n) == 0) {
      hints.push_back(fmt::format("expected bytes were written by #{}", e.op));
    }
    if (std::memcmp(pattern, got, n) == 0) {
      hints.push_back(fmt::format("bytes read were written by #{}", e.op));
    }
  }
  std::string out;
  for (const std::string& h : hints) out += (out.empty() ? "hint: " : "; ") + h;
  return out;
}

bool Exerciser::VerifyAll(int fi, std::string_view how) {
  if (!CheckSize(fi)) return false;
  const uint64_t size = files_[fi].model.size();
  // Each chunk asks for kMaxIo bytes, so the last one also checks EOF.
  for (uint64_t off = 0; off == 0 || off < size; off += kMaxIo) {
    if (!ReadBack(fi, files_[fi].fd.get(), off, kMaxIo, /*direct=*/false, how)) return false;
  }
  return true;
}

// The filesystem reported [from, to) as a hole: the model must be zero there.
bool Exerciser::CheckHole(int fi, uint64_t from, uint64_t to, uint64_t asked_at) {
  const uint8_t* m = files_[fi].model.data();
  const uint8_t* nonzero = FindNonZero(m + from, to - from);
  if (nonzero == m + to) return true;
  const uint64_t at = nonzero - m;
  return Fail(
      fmt::format("SEEK_DATA f{} from {:#x} returned {:#x}, so [{:#x}, {:#x}) is a hole, "
                  "but the model has data at {:#x} (byte {:#04x})",
                  fi, asked_at, to, from, to, at, *nonzero));
}

bool Exerciser::SeekError(int err, std::string_view call, int fi, uint64_t at) {
  if (!seek_worked_ && (err == EINVAL || err == EOPNOTSUPP)) {
    seek_ok_ = false;
    Disable("SEEK_DATA/SEEK_HOLE", err);
    return true;
  }
  return FailErrno(err, fmt::format("lseek {} f{} at {:#x}", call, fi, at));
}

// --- Changing files and model ------------------------------------------------------

// pwrite until done. A short write changes exactly the bytes it reports, so
// the model takes those and the rest is retried; with --allow-enospc a space
// error ends the write and the model keeps what landed.
bool Exerciser::WriteAll(int fi, int fd, const uint8_t* buf, uint64_t off, uint64_t len,
                         std::string_view how) {
  uint64_t done = 0;
  while (done < len) {
    const ssize_t n = RetryEintr([&] { return ::pwrite(fd, buf + done, len - done, off + done); });
    if (n < 0) {
      const int err = errno;
      if (SpaceError(err)) {
        Note(fmt::format("{} after {:#x} bytes", ErrnoName(err), done));
        return true;
      }
      return FailErrno(err, fmt::format("{} f{} off {:#x} len {:#x}, after {:#x} bytes", how, fi,
                                        off, len, done));
    }
    if (n == 0) {
      return Fail(fmt::format("{} f{} off {:#x} len {:#x}: wrote nothing after {:#x} bytes", how,
                              fi, off, len, done));
    }
    ApplyWrite(fi, off + done, buf + done, n);
    done += n;
  }
  return true;
}

// After fallocate failed for space, the filesystem may have done part of it:
// grown the size towards the target (the new bytes read as zeros) or zeroed
// part of the range. Accept exactly that and adopt it into the model; anything
// else (shrinking, growing too far, bytes that are neither old nor zero) fails.
bool Exerciser::AdoptAfterSpaceError(int fi, uint64_t off, uint64_t end, uint64_t max_size,
                                     bool may_zero) {
  File& f = files_[fi];
  struct stat st;
  if (::fstat(f.fd.get(), &st) < 0) return FailErrno(errno, fmt::format("fstat f{}", fi));
  const uint64_t old_size = f.model.size();
  const uint64_t now = st.st_size;
  if (now < old_size || now > max_size) {
    return Fail(
        fmt::format("f{} after a refused fallocate: size {:#x}, expected within [{:#x}, "
                    "{:#x}]",
                    fi, now, old_size, max_size));
  }
  f.model.resize(now);
  if (!may_zero) return true;
  uint8_t* buf = buf_.get();
  for (uint64_t pos = off; pos < std::min(end, now); pos += kMaxIo) {
    const uint64_t n = std::min(kMaxIo, std::min(end, now) - pos);
    const ssize_t r = RetryEintr([&] { return ::pread(f.fd.get(), buf, n, pos); });
    if (r < 0) return FailErrno(errno, fmt::format("pread f{} off {:#x}", fi, pos));
    if (static_cast<uint64_t>(r) != n)
      return Fail(fmt::format("short pread f{} off {:#x}", fi, pos));
    for (uint64_t i = 0; i < n; ++i) {
      uint8_t& model = f.model[pos + i];
      if (buf[i] != model && buf[i] != 0) {
        return Fail(
            fmt::format("f{} after a refused fallocate: byte at {:#x} is {:#04x}, expected "
                        "{:#04x} (unchanged) or 0 (zeroed)",
                        fi, pos + i, buf[i], model));
      }
      model = buf[i];
    }
  }
  return true;
}

void Exerciser::ApplyWrite(int fi, uint64_t off, const uint8_t* data, uint64_t n) {
  std::vector<uint8_t>& model = files_[fi].model;
  if (off + n > model.size()) model.resize(off + n);
  std::memcpy(model.data() + off, data, n);
}

void Exerciser::ZeroModel(int fi, uint64_t off, uint64_t end) {
  std::vector<uint8_t>& model = files_[fi].model;
  if (off < end) std::fill(model.begin() + off, model.begin() + end, 0);
}

// Opens the O_DIRECT fd if direct I/O is on. A filesystem that refuses
// O_DIRECT (EINVAL) turns direct I/O off for the rest of the run.
Status Exerciser::OpenDirect(File& f) {
  if (!direct_ok_) return Status::Ok();
  auto fd = OpenAt(dir_.get(), f.name, O_RDWR | O_DIRECT);
  if (fd.ok()) {
    f.direct_fd = std::move(*fd);
    return Status::Ok();
  }
  if (fd.err() != EINVAL) return fd.status();
  direct_ok_ = false;
  for (File& other : files_) other.direct_fd.Reset();
  Disable("O_DIRECT", EINVAL);
  return Status::Ok();
}

void Exerciser::CloseFiles() {
  for (File& f : files_) {
    f.direct_fd.Reset();
    f.fd.Reset();
  }
}

void Exerciser::RemoveFiles() {
  CloseFiles();
  for (File& f : files_) {
    if (f.name.empty()) continue;
    if (::unlinkat(dir_.get(), f.name.c_str(), 0) < 0) {
      log_.warn("could not remove {}: {}", Path(f), std::strerror(errno));
    }
  }
}

// --- Bookkeeping ---------------------------------------------------------------

void Exerciser::Begin(OpKind kind, int fi, uint64_t off, uint64_t len, std::string text) {
  if (o_.on_op) o_.on_op(op_, text);
  log_.trace("#{} {}", op_, text);
  if (ring_.size() == kRingSize) ring_.pop_front();
  ring_.push_back(LogEntry{op_, kind, fi, off, len, std::move(text)});
}

// Adds an outcome to the current operation's line in the history.
void Exerciser::Note(std::string_view note) {
  if (!ring_.empty()) fmt::format_to(std::back_inserter(ring_.back().text), " -> {}", note);
}

void Exerciser::Disable(std::string feature, int err) {
  log_.info("{}: the filesystem says {}; continuing without it", feature, ErrnoName(err));
  Note(fmt::format("{}, {} disabled", ErrnoName(err), feature));
  disabled_.push_back(fmt::format("{} ({})", std::move(feature), ErrnoName(err)));
}

// True if `err` is a tolerated space error; counts it.
bool Exerciser::SpaceError(int err) {
  if (!o_.allow_enospc || (err != ENOSPC && err != EDQUOT)) return false;
  ++space_errors_;
  return true;
}

bool Exerciser::Fail(std::string what) {
  failure_ = std::move(what);
  return false;
}

bool Exerciser::FailErrno(int err, std::string_view what) {
  return Fail(fmt::format("{}: unexpected {} ({})", what, ErrnoName(err), std::strerror(err)));
}

std::string Exerciser::Path(const File& f) const {
  if (!o_.dir.empty() && o_.dir.back() == '/') return o_.dir + f.name;
  return o_.dir + "/" + f.name;
}

std::string Exerciser::FailureReport(uint64_t ops) const {
  std::string out = fmt::format("FAILED at operation #{} (seed {}): {}\n", op_, o_.seed, failure_);
  out += fmt::format("last {} operations, oldest first:\n", ring_.size());
  for (const LogEntry& e : ring_) out += fmt::format("  #{} {}\n", e.op, e.text);
  out += "files left for inspection:";
  for (const File& f : files_) out += " " + Path(f);
  out += fmt::format("\nreplay: {}", ReplayCommand(o_, ops));
  return out;
}

Status Exerciser::Setup() {
  if (o_.dir.empty()) return Status::Error(EINVAL, "no directory given");
  if (o_.files < 1 || o_.files > kMaxFiles) {
    return Status::Error(EINVAL, fmt::format("--files {}: give 1 to {}", o_.files, kMaxFiles));
  }
  if (o_.file_size < kMinFileSize) {
    return Status::Error(
        EINVAL, fmt::format("--file-size {}: give at least {} (16Ki)", o_.file_size, kMinFileSize));
  }
  if (o_.seconds < 0) return Status::Error(EINVAL, "--seconds must not be negative");
  if (o_.max_ops == 0 && o_.seconds == 0) {
    return Status::Error(EINVAL, "the run is unbounded: give --ops or --seconds");
  }
  auto dir = OpenAt(AT_FDCWD, o_.dir, O_RDONLY | O_DIRECTORY);
  if (!dir.ok()) {
    return Status::Error(dir.err(), "directory " + o_.dir + " (give an existing, writable one)");
  }
  dir_ = std::move(*dir);
  buf_.reset(static_cast<uint8_t*>(std::aligned_alloc(kBlock, kMaxIo)));
  if (!buf_) return Status::Error(ENOMEM, "I/O buffer");
  page_size_ = ::sysconf(_SC_PAGESIZE);
  direct_ok_ = o_.direct;

  files_.resize(o_.files);
  // Models grow and shrink all the time; never reallocating keeps that cheap.
  for (File& f : files_) f.model.reserve(o_.file_size);
  ScopeGuard remove_created([this] { RemoveFiles(); });
  for (int i = 0; i < o_.files; ++i) {
    // The pid keeps concurrent runs in one directory apart; the retry suffix
    // steps around leftovers of a failed run that had the same pid.
    for (int attempt = 0;; ++attempt) {
      std::string name = attempt == 0 ? fmt::format("fsx.{}.{}", ::getpid(), i)
                                      : fmt::format("fsx.{}.{}.{}", ::getpid(), i, attempt);
      auto fd = OpenAt(dir_.get(), name, O_RDWR | O_CREAT | O_EXCL, 0644);
      if (fd.ok()) {
        files_[i].name = std::move(name);
        files_[i].fd = std::move(*fd);
        break;
      }
      if (fd.err() != EEXIST || attempt == 100) {
        return Status::Error(fd.err(), "create " + o_.dir + "/" + name);
      }
    }
  }
  for (File& f : files_) {
    if (Status s = OpenDirect(f); !s.ok()) return s;
  }
  remove_created.Cancel();
  return Status::Ok();
}

Report Exerciser::Execute() {
  using Clock = std::chrono::steady_clock;
  SigbusTrap trap;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(o_.seconds));
  bool ok = true;
  for (op_ = 0; o_.max_ops == 0 || op_ < o_.max_ops; ++op_) {
    if (o_.seconds > 0 && Clock::now() >= deadline) break;
    if (o_.before_op) {
      HookContext ctx{op_, {}, {}};
      for (const File& f : files_) {
        ctx.paths.push_back(Path(f));
        ctx.sizes.push_back(f.model.size());
      }
      o_.before_op(ctx);
    }
    if (!Step()) {
      ok = false;
      break;
    }
  }
  const uint64_t ops = ok ? op_ : op_ + 1;
  // A last full read-back catches damage that no later read happened to touch.
  for (int fi = 0; ok && fi < static_cast<int>(files_.size()); ++fi) {
    if (ring_.size() == kRingSize) ring_.pop_front();
    ring_.push_back(
        LogEntry{op_, OpKind::kVerify, fi, 0, files_[fi].model.size(),
                 fmt::format("final check of f{} (size {:#x})", fi, files_[fi].model.size())});
    ok = VerifyAll(fi, "final check");
  }

  Report report;
  report.ok = ok;
  report.seed = o_.seed;
  report.ops = ops;
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  report.bytes_verified = bytes_verified_;
  report.space_errors = space_errors_;
  for (size_t k = 0; k < kOpCount; ++k) {
    if (counts_[k] > 0) report.op_counts[kOpInfo[k].name] = counts_[k];
  }
  report.disabled = disabled_;
  if (ok) {
    RemoveFiles();
  } else {
    CloseFiles();
    report.failure = FailureReport(ops);
    for (const File& f : files_) report.files_left.push_back(Path(f));
  }
  return report;
}

}  // namespace

// --- SIGBUS trap ------------------------------------------------------------
// Touching a MAP_SHARED page past EOF, or one the filesystem fails to supply,
// raises SIGBUS. The handler jumps back into GuardedCopy so such a fault
// becomes an ordinary failure report (with seed and history) rather than a
// dead process.
namespace {

// Atomic so the handler reads it safely, and so the compiler cannot drop the
// store before the memcpy: it may assume memcpy never reads a plain global.
thread_local std::atomic<sigjmp_buf*> tls_sigbus_jump{nullptr};

void OnSigbus(int sig) {
  if (sigjmp_buf* jump = tls_sigbus_jump.load(std::memory_order_relaxed)) siglongjmp(*jump, 1);
  // Not from GuardedCopy: a genuine crash, so die of it the usual way once the
  // handler returns and the access faults again.
  if (::signal(sig, SIG_DFL) == SIG_ERR) _exit(128 + sig);
}

}  // namespace

SigbusTrap::SigbusTrap() {
  struct sigaction action = {};
  action.sa_handler = OnSigbus;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &old_);
}

SigbusTrap::~SigbusTrap() { ::sigaction(SIGBUS, &old_, nullptr); }

bool GuardedCopy(void* dst, const void* src, size_t n) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    tls_sigbus_jump.store(nullptr, std::memory_order_relaxed);
    return false;
  }
  tls_sigbus_jump.store(&jump, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tls_sigbus_jump.store(nullptr, std::memory_order_relaxed);
  return true;
}

Result<Report> Run(const Options& options, spdlog::logger& log) {
  Exerciser exerciser(options, log);
  if (Status s = exerciser.Setup(); !s.ok()) return s;
  return exerciser.Execute();
}

std::string ReplayCommand(const Options& o, uint64_t ops) {
  std::string cmd = fmt::format("localvol-fsx {} --seed {} --ops {} --file-size {} --files {}",
                                ShellQuote(o.dir), o.seed, ops, o.file_size, o.files);
  if (!o.mmap) cmd += " --no-mmap";
  if (!o.fallocate) cmd += " --no-fallocate";
  if (o.direct) cmd += " --direct";
  if (o.allow_enospc) cmd += " --allow-enospc";
  return cmd;
}

}  // namespace localvol::fsx
