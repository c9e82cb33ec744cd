// fsx: a seeded random-operation file exerciser.
//
// Run() creates a few files in a directory, keeps an in-memory model (bytes
// and size) of each, and applies a random sequence of operations to the files:
// pwrite/pread, ftruncate, fallocate (plain, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE),
// MAP_SHARED mmap reads and writes, copy_file_range, fsync/fdatasync,
// close+reopen, SEEK_DATA/SEEK_HOLE, and optionally O_DIRECT I/O. Every result
// is checked against the model. The whole sequence is a pure function of the
// seed (and of which optional features the filesystem supports), so a failure
// replays exactly with the same seed.
//
// Run() is not reentrant across threads: while it runs it owns the process's
// SIGBUS handler (a faulting mmap access is reported as a failure rather than
// killing the process). Everything else is local to the call.
#pragma once

#include <signal.h>
#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace localvol::fsx {

// What a test hook sees before each operation. `paths` and `sizes` are
// indexed by file number; sizes are the model's, i.e. what the file must be.
struct HookContext {
  uint64_t op = 0;  // index of the operation about to run, from 0
  std::vector<std::string> paths;
  std::vector<uint64_t> sizes;
};

struct Options {
  std::string dir;    // where the files are created; must exist
  uint64_t seed = 0;  // the whole run is a function of this
  // Stop after this many operations (0: no limit). At least one of max_ops
  // and seconds must bound the run; when both are set, the first one wins.
  uint64_t max_ops = 10000;
  double seconds = 0;             // stop after this much wall time (0: no limit)
  uint64_t file_size = 16 << 20;  // no operation makes a file larger; >= 16 KiB
  int files = 2;                  // number of files exercised, >= 1
  bool mmap = true;               // MAP_SHARED reads and writes
  bool fallocate = true;          // all fallocate modes
  bool direct = false;            // O_DIRECT reads and writes on a second fd
  // ENOSPC/EDQUOT from a space-consuming operation is tolerated: the model
  // takes exactly the bytes the call reported and the run goes on. mmap
  // writes are then off, because a fault cannot say how much it wrote.
  bool allow_enospc = false;

  // Test hooks; both optional.
  // Called before each operation; may change the files behind fsx's back.
  std::function<void(const HookContext&)> before_op;
  // Called with each operation's description as it is chosen (op index and
  // parameters only, no results), so two runs can be compared.
  std::function<void(uint64_t op, const std::string& description)> on_op;
};

struct Report {
  bool ok = false;
  uint64_t seed = 0;
  uint64_t ops = 0;  // operations completed (on failure: including the failed one)
  double seconds = 0;
  uint64_t bytes_verified = 0;                // bytes read back and compared
  uint64_t space_errors = 0;                  // ENOSPC/EDQUOT tolerated (--allow-enospc)
  std::map<std::string, uint64_t> op_counts;  // by operation name
  std::vector<std::string> disabled;          // features the filesystem lacks
  // On failure: what failed, the seed, the last operations and a replay
  // command, as multi-line text ready to print. Empty on success.
  std::string failure;
  std::vector<std::string> files_left;  // files kept for inspection on failure
};

// Runs the exerciser. Returns an error Status only if the run could not start
// (bad options, missing directory, files not creatable); a filesystem that
// misbehaves yields a Report with ok == false. Feature fallbacks (EOPNOTSUPP)
// are logged once at info, and each operation at trace, on `log`.
Result<Report> Run(const Options& options, spdlog::logger& log);

// While alive, owns the process's SIGBUS handler so that GuardedCopy can
// catch faults; restores the previous handler on destruction. Run() holds one.
// A SIGBUS outside GuardedCopy still kills the process as usual.
class SigbusTrap {
 public:
  SigbusTrap();
  ~SigbusTrap();
  SigbusTrap(const SigbusTrap&) = delete;
  SigbusTrap& operator=(const SigbusTrap&) = delete;

 private:
  struct sigaction old_ = {};
};

// memcpy that returns false instead of crashing when an access to a mapping
// raises SIGBUS (then an unknown prefix of dst was written). Needs a live
// SigbusTrap; safe to call from several threads.
bool GuardedCopy(void* dst, const void* src, size_t n);

// The command line that replays `options` with localvol-fsx, stopping after
// `ops` operations.
std::string ReplayCommand(const Options& options, uint64_t ops);

}  // namespace localvol::fsx
