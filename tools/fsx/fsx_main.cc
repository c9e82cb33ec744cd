// localvol-fsx: runs the fsx exerciser (tools/fsx/fsx.h) on a directory.
//
// stdout gets the seed at start and the summary at the end; diagnostics and
// the failure report go to stderr through the "fsx" logger.
#include <spdlog/fmt/fmt.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

#include "base/logging.h"
#include "base/size.h"
#include "tools/fsx/fsx.h"

namespace {

constexpr char kUsage[] = R"(usage: localvol-fsx DIR [options]

Creates a few files in DIR and applies a seeded random sequence of operations
(pwrite, pread, ftruncate, fallocate, mmap, copy_file_range, fsync, reopen,
SEEK_DATA/SEEK_HOLE, optionally O_DIRECT), checking every result against an
in-memory model. The seed is printed first; --seed replays a run exactly.

options:
  --seed N          seed of the run (default: random)
  --ops N           stop after N operations (default 10000)
  --seconds S       stop after S seconds (instead of --ops 10000)
  --file-size SIZE  largest size a file reaches, e.g. 64Mi (default 16Mi, min 16Ki)
  --files N         number of files (default 2)
  --no-mmap         no mmap reads or writes
  --no-fallocate    no fallocate
  --direct          also O_DIRECT reads and writes, 4096-aligned, on a second fd
  --allow-enospc    ENOSPC/EDQUOT from a write is not a failure; the model must
                    still match exactly (also turns mmap writes off)
  --verbose         log every operation

exit status: 0 all checks passed; 1 a check failed (files are kept, a replay
command is printed); 2 bad usage or the run could not start
)";

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

std::optional<uint64_t> ParseU64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<double> ParseSeconds(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v > 0)) return std::nullopt;
  return v;
}

uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof(seed), 0) == sizeof(seed)) return seed;
  return static_cast<uint64_t>(std::time(nullptr)) * 1000003u ^ static_cast<uint64_t>(::getpid());
}

int Usage(const std::string& problem) {
  localvol::GetLogger("fsx")->error("{} (see localvol-fsx --help)", problem);
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = localvol::GetLogger("fsx");
  log->set_pattern("fsx: %^%l%$: %v");
  localvol::fsx::Options options;
  bool seed_given = false;
  bool ops_given = false;
  bool verbose = false;

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg.resize(eq);
        has_inline_value = true;
      }
    }
    // Fetches the flag's value, from "--flag=value" or the next argument.
    auto take_value = [&]() -> std::optional<std::string> {
      if (has_inline_value) return value;
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    if (arg == "-h" || arg == "--help") {
      return std::fputs(kUsage, stdout) == EOF ? 1 : 0;
    } else if (arg == "--seed" || arg == "--ops" || arg == "--files") {
      auto text = take_value();
      if (!text) return Usage(arg + " needs a number");
      auto n = ParseU64(*text);
      if (!n) return Usage(arg + " " + *text + ": not a non-negative integer");
      if (arg == "--seed") {
        options.seed = *n;
        seed_given = true;
      } else if (arg == "--ops") {
        if (*n == 0) return Usage("--ops 0: give at least 1");
        options.max_ops = *n;
        ops_given = true;
      } else {
        if (*n < 1 || *n > 256) return Usage("--files " + *text + ": give 1 to 256");
        options.files = static_cast<int>(*n);
      }
    } else if (arg == "--seconds") {
      auto text = take_value();
      if (!text) return Usage("--seconds needs a number");
      auto s = ParseSeconds(*text);
      if (!s) return Usage("--seconds " + *text + ": give a positive number, e.g. 10 or 0.5");
      options.seconds = *s;
    } else if (arg == "--file-size") {
      auto text = take_value();
      if (!text) return Usage("--file-size needs a size, e.g. 16Mi");
      auto size = localvol::ParseSize(*text);
      if (!size.ok()) return Usage("--file-size " + *text + ": " + size.status().ToString());
      options.file_size = *size;
    } else if (has_inline_value) {
      return Usage(arg + " takes no value");
    } else if (arg == "--no-mmap") {
      options.mmap = false;
    } else if (arg == "--no-fallocate") {
      options.fallocate = false;
    } else if (arg == "--direct") {
      options.direct = true;
    } else if (arg == "--allow-enospc") {
      options.allow_enospc = true;
    } else if (arg == "--verbose" || arg == "-v") {
      verbose = true;
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage("unknown option " + arg);
    } else if (options.dir.empty()) {
      options.dir = arg;
    } else {
      return Usage("one directory only (got " + options.dir + " and " + arg + ")");
    }
  }
  if (options.dir.empty()) return Usage("give the directory to exercise");
  // --seconds alone means a timed run; with --ops too, whichever ends first.
  if (options.seconds > 0 && !ops_given) options.max_ops = 0;
  if (!seed_given) options.seed = RandomSeed();

  if (verbose) log->set_level(spdlog::level::trace);

  // Printed before anything can go wrong, so even a crash or hang replays.
  fmt::print("fsx: seed {}\n", options.seed);
  if (std::fflush(stdout) != 0)
    log->warn("fsx: the seed may not have reached stdout: {}", std::strerror(errno));

  auto report = localvol::fsx::Run(options, *log);
  if (!report.ok()) {
    log->error("{}", report.status().ToString());
    return kExitUsage;
  }
  if (!report->ok) {
    log->error("{}", report->failure);
    return kExitFailed;
  }
  std::string space;
  if (options.allow_enospc) space = fmt::format(", {} space errors", report->space_errors);
  fmt::print("fsx: {} ops ok, seed {} ({:.1f}s, {:.0f} ops/s, {} verified{})\n", report->ops,
             report->seed, report->seconds, report->ops / std::max(report->seconds, 1e-9),
             localvol::FormatSize(report->bytes_verified), space);
  if (verbose) {
    std::string counts;
    for (const auto& [name, n] : report->op_counts) counts += fmt::format(" {}={}", name, n);
    log->info("operations:{}", counts);
  }
  for (const std::string& d : report->disabled) log->info("not exercised: {}", d);
  return 0;
}
