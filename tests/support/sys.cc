#include "tests/support/sys.h"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "base/unique_fd.h"

namespace localvol::testing {

std::string ErrnoName(int err) {
  if (err == 0) return "ok";
  // strerrorname_np is glibc >= 2.32; Debian 12 has 2.36.
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "errno " + std::to_string(err);
}

std::string Describe(const SysResult& r) {
  if (r.ok()) return "ok (" + std::to_string(r.ret) + ")";
  return ErrnoName(r.err) + " (" + std::strerror(r.err) + ")";
}

void PrintTo(const SysResult& r, std::ostream* os) { *os << Describe(r); }

std::string UniqueName(std::string_view tag) {
  static std::atomic<unsigned> counter{0};
  std::string test = "notest";
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    test = info->name();
  }
  std::string clean;
  for (char c : test) {
    if (clean.size() >= 20) break;
    clean += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
  }
  return std::string(tag) + "-" + clean + "-" + std::to_string(getpid()) + "-" +
         std::to_string(counter.fetch_add(1));
}

uint64_t SeedFromEnvOr(uint64_t fallback) {
  if (const char* env = std::getenv("LOCALVOL_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  return fallback;
}

uint64_t RandomSeed() {
  if (const char* env = std::getenv("LOCALVOL_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

std::string RandomBytes(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  size_t i = 0;
  while (i + 8 <= n) {
    uint64_t v = rng();
    std::memcpy(&out[i], &v, 8);
    i += 8;
  }
  uint64_t v = rng();
  std::memcpy(&out[i], &v, n - i);
  return out;
}

SysResult PwriteAll(int fd, std::string_view data, off_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysResult{static_cast<long>(done), errno};
    }
    if (n == 0) return SysResult{static_cast<long>(done), EIO};
    done += n;
  }
  return SysResult{static_cast<long>(done), 0};
}

Status WriteFile(const std::string& path, std::string_view data, int flags, mode_t mode) {
  auto fd = OpenAt(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | flags, mode);
  if (!fd.ok()) return fd.status();
  SysResult r = PwriteAll(fd->get(), data, 0);
  if (!r.ok()) return Status::Error(r.err, "pwrite " + path);
  if (::close(fd->Release()) != 0) return Status::FromErrno("close " + path);
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + path);
    }
    if (n == 0) break;
    out.append(buf, n);
  }
  return out;
}

Result<struct stat> Lstat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno("lstat " + path);
  return st;
}

Result<struct stat> Stat(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path);
  return st;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool KernelHasFusePassthrough() {
  struct utsname u;
  if (uname(&u) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  if (major < 6 || (major == 6 && minor < 9)) return false;
  // zcat is there wherever /proc/config.gz is worth reading.
  FILE* config = ::popen("zcat /proc/config.gz 2>/dev/null", "r");
  if (config == nullptr) return true;
  bool told = false, enabled = false;
  char line[256];
  while (std::fgets(line, sizeof line, config) != nullptr) {
    told = true;
    if (std::strncmp(line, "CONFIG_FUSE_PASSTHROUGH=y", 25) == 0) enabled = true;
  }
  ::pclose(config);
  return !told || enabled;
}

}  // namespace localvol::testing
