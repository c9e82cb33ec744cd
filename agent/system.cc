#include "agent/system.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "base/directory.h"
#include "base/logging.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"

extern char** environ;

namespace localvol::agent {
namespace {

std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// The entries of `path`; empty if it cannot be read (a process that exited,
// a device without that sysfs directory).
std::vector<std::string> ListDir(const std::string& path) {
  auto names = ListDirectory(path);
  return names.ok() ? std::move(names).value() : std::vector<std::string>();
}

// sysfs directory of a block device, e.g. /sys/devices/.../block/sdb/sdb1.
std::string SysDirOf(dev_t dev) {
  char buf[PATH_MAX];
  const std::string link =
      "/sys/dev/block/" + std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  if (::realpath(link.c_str(), buf) == nullptr) return "";
  return buf;
}

dev_t DevOfSysDir(const std::string& dir) {
  unsigned maj = 0, min = 0;
  if (std::sscanf(ReadLine(dir + "/dev").c_str(), "%u:%u", &maj, &min) != 2) return 0;
  return makedev(maj, min);
}

// Adds `dev`, its whole disk, and (recursively) every device below it.
void AddWithLowerDevices(dev_t dev, std::set<dev_t>* out, int depth = 0) {
  if (dev == 0 || depth > 16 || !out->insert(dev).second) return;
  const std::string dir = SysDirOf(dev);
  if (dir.empty()) return;
  if (::access((dir + "/partition").c_str(), F_OK) == 0) {
    AddWithLowerDevices(DevOfSysDir(dir.substr(0, dir.rfind('/'))), out, depth + 1);
  }
  for (const auto& slave : ListDir(dir + "/slaves")) {
    AddWithLowerDevices(DevOfSysDir("/sys/class/block/" + slave), out, depth + 1);
  }
}

const char* const kSearchDirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};

Result<std::string> FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : kSearchDirs) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return Status::Error(ENOENT, "program '" + name +
                                   "' not found in /usr/sbin, /sbin, /usr/bin or /bin; install it "
                                   "(scripts/install-deps.sh)");
}

}  // namespace

std::string JoinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

Status CommandRunner::RunChecked(const std::vector<std::string>& argv,
                                 std::chrono::seconds timeout) {
  auto r = Run(argv, timeout);
  if (!r.ok()) return Status::Error(r.err(), JoinArgv(argv) + ": " + r.status().context());
  if (!r->ok()) {
    std::string out = r->output;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (out.size() > 2000) out = out.substr(out.size() - 2000);
    const std::string how = r->signal != 0 ? "was killed by signal " + std::to_string(r->signal)
                                           : "exited with " + std::to_string(r->exit_code);
    return Status::Error(EIO, JoinArgv(argv) + " " + how + (out.empty() ? "" : ": " + out));
  }
  return Status::Ok();
}

Result<CommandOutput> PosixCommandRunner::Run(const std::vector<std::string>& argv,
                                              std::chrono::seconds timeout) {
  if (argv.empty()) return Status::Error(EINVAL, "empty command");
  auto program = FindProgram(argv[0]);
  if (!program.ok()) return program.status();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Status::FromErrno("pipe2");
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  ScopeGuard destroy_actions([&] { posix_spawn_file_actions_destroy(&actions); });
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  ScopeGuard destroy_attr([&] { posix_spawnattr_destroy(&attr); });
  // The daemon blocks SIGTERM & co. for its signal loop; the child must not.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, program->c_str(), &actions, &attr, args.data(), environ);
  if (rc != 0) return Status::Error(rc, "spawn " + *program);
  write_end.Reset();

  CommandOutput out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;  // timeout re-checked above
    ssize_t got = RetryEintr([&] { return ::read(read_end.get(), buf, sizeof buf); });
    if (got <= 0) break;  // EOF: the child (and its children) closed the pipe
    if (out.output.size() < (1 << 20)) out.output.append(buf, static_cast<size_t>(got));
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  if (RetryEintr([&] { return ::waitpid(pid, &status, 0); }) < 0) {
    return Status::FromErrno("waitpid " + *program);
  }
  if (timed_out) {
    return Status::Error(
        ETIMEDOUT, "did not finish within " + std::to_string(timeout.count()) + "s and was killed");
  }
  if (WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
  return out;
}

std::string FsMount::Describe() const {
  if (ns_pid == 0) return mount_point;
  return mount_point + " (in the mount namespace of pid " + std::to_string(ns_pid) + ")";
}

std::vector<FsMount> MountsOfFilesystem(dev_t dev) {
  std::vector<FsMount> out;
  struct stat self_ns;
  const bool have_self = ::stat("/proc/self/ns/mnt", &self_ns) == 0;
  std::set<ino_t> seen;
  if (have_self) seen.insert(self_ns.st_ino);
  for (const auto& m : ReadMountTable()) {
    if (m.dev == dev) out.push_back(FsMount{m.mount_point, 0});
  }
  for (const auto& entry : ListDir("/proc")) {
    if (entry.find_first_not_of("0123456789") != std::string::npos) continue;
    struct stat ns;
    if (::stat(("/proc/" + entry + "/ns/mnt").c_str(), &ns) != 0) continue;
    if (!seen.insert(ns.st_ino).second) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(entry.c_str()));
    for (const auto& m : ReadMountTableOf(pid)) {
      if (m.dev == dev) out.push_back(FsMount{m.mount_point, pid});
    }
  }
  return out;
}

std::string ProcessUse::Describe() const {
  return "pid " + std::to_string(pid) + " (" + command + "): " + what;
}

std::vector<ProcessUse> ProcessesUsingFilesystem(dev_t dev) {
  // statx without a sync: the device number comes from the superblock, and no
  // request reaches a filesystem's server.
  const auto on_dev = [dev](const std::string& path) {
    struct statx stx;
    if (::statx(AT_FDCWD, path.c_str(), AT_STATX_DONT_SYNC, STATX_TYPE, &stx) != 0) return false;
    return makedev(stx.stx_dev_major, stx.stx_dev_minor) == dev;
  };
  std::vector<ProcessUse> out;
  for (const auto& entry : ListDir("/proc")) {
    if (entry.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string dir = "/proc/" + entry;
    const pid_t pid = static_cast<pid_t>(std::atol(entry.c_str()));
    std::vector<std::string> uses;
    if (on_dev(dir + "/cwd")) uses.push_back("its working directory");
    if (on_dev(dir + "/root")) uses.push_back("its root directory");
    for (const auto& fd : ListDir(dir + "/fd")) {
      const std::string link = dir + "/fd/" + fd;
      if (!on_dev(link)) continue;
      char target[PATH_MAX];
      const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      uses.push_back("open file " +
                     (n > 0 ? std::string(target, static_cast<size_t>(n)) : "fd " + fd));
    }
    for (auto& what : uses)
      out.push_back(ProcessUse{pid, ReadLine(dir + "/comm"), std::move(what)});
  }
  return out;
}

std::set<dev_t> BlockDevicesInUse() {
  std::set<dev_t> in_use;
  for (const auto& m : ReadMountTable()) {
    if (major(m.dev) != 0) AddWithLowerDevices(m.dev, &in_use);
    // btrfs and others report an anonymous st_dev; the source names the device.
    if (!m.source.empty() && m.source[0] == '/') {
      struct stat st;
      if (::stat(m.source.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
        AddWithLowerDevices(st.st_rdev, &in_use);
      }
    }
  }
  std::ifstream swaps("/proc/swaps");
  std::string line;
  std::getline(swaps, line);  // header
  while (std::getline(swaps, line)) {
    std::string path = line.substr(0, line.find_first_of(" \t"));
    struct stat st;
    if (::stat(UnescapeProcPath(path).c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      AddWithLowerDevices(st.st_rdev, &in_use);
    }
  }
  return in_use;
}

Result<BlockDevice> DescribeBlockDevice(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path);
  if (!S_ISBLK(st.st_mode)) return Status::Error(ENOTBLK, path + " is not a block device");
  BlockDevice d;
  d.dev = st.st_rdev;
  const std::string dir = SysDirOf(d.dev);
  if (dir.empty()) return Status::Error(ENODEV, path + ": no sysfs entry for the device");
  d.name = dir.substr(dir.rfind('/') + 1);
  d.path = "/dev/" + d.name;
  d.is_partition = ::access((dir + "/partition").c_str(), F_OK) == 0;
  d.whole_disk = d.is_partition ? DevOfSysDir(dir.substr(0, dir.rfind('/'))) : d.dev;
  d.size_bytes = std::strtoull(ReadLine(dir + "/size").c_str(), nullptr, 10) * 512;
  d.read_only = ReadLine(dir + "/ro") == "1";
  d.holders = ListDir(dir + "/holders");
  if (!d.is_partition) {
    for (const auto& sub : ListDir(dir)) {
      if (::access((dir + "/" + sub + "/partition").c_str(), F_OK) == 0)
        d.partitions.push_back(sub);
    }
  }
  return d;
}

Status CheckNotClaimed(const std::string& device) {
  auto fd = OpenAt(AT_FDCWD, device, O_RDONLY | O_EXCL);
  if (!fd.ok()) {
    if (fd.err() == EBUSY) {
      return Status::Error(EBUSY, device +
                                      " is in use by the kernel (mounted, active swap, or a "
                                      "device-mapper/RAID member)");
    }
    return Status::Error(fd.err(), "open " + device + " exclusively");
  }
  return Status::Ok();
}

namespace {

// [offset, length) pairs, within a device of `size` bytes.
std::vector<std::pair<uint64_t, uint64_t>> SampledRegions(uint64_t size) {
  // Where data usually is: the start (labels, partition tables, superblocks,
  // a database's header), the end (backup GPT, RAID superblocks), and 1 MiB
  // at every 1/256 of the device in between.
  constexpr uint64_t kHead = 64 << 20, kTail = 4 << 20, kSample = 1 << 20;
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.emplace_back(0, std::min(size, kHead));
  if (size > kHead) {
    const uint64_t tail = std::min(size - kHead, kTail);
    out.emplace_back(size - tail, tail);
  }
  for (int i = 1; i < 256; ++i) {
    uint64_t off = (size / 256) * i;
    off -= off % 4096;
    if (off >= kHead && off + kSample <= size - std::min(size, kTail))
      out.emplace_back(off, kSample);
  }
  return out;
}

Result<uint64_t> DeviceSize(int fd, const std::string& device) {
  off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) return Status::FromErrno("size of " + device);
  return static_cast<uint64_t>(end);
}

}  // namespace

Result<std::optional<uint64_t>> FindDataInSampledRegions(const std::string& device) {
  auto fd = OpenAt(AT_FDCWD, device, O_RDONLY);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + device);
  auto size = DeviceSize(fd->get(), device);
  if (!size.ok()) return size.status();
  std::vector<char> buf(1 << 20);
  for (const auto& region : SampledRegions(*size)) {
    const uint64_t off = region.first, len = region.second;
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = RetryEintr([&] {
        return ::pread(fd->get(), buf.data(), std::min<uint64_t>(buf.size(), len - done),
                       static_cast<off_t>(off + done));
      });
      if (n < 0) return Status::FromErrno("read " + device);
      if (n == 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[static_cast<size_t>(i)] != 0)
          return std::optional<uint64_t>(off + done + static_cast<uint64_t>(i));
      }
      done += static_cast<uint64_t>(n);
    }
  }
  return std::optional<uint64_t>();
}

Status ZeroSampledRegions(const std::string& device) {
  auto fd = OpenAt(AT_FDCWD, device, O_WRONLY);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + device);
  auto size = DeviceSize(fd->get(), device);
  if (!size.ok()) return size.status();
  const std::vector<char> zeros(1 << 20, 0);
  for (const auto& region : SampledRegions(*size)) {
    const uint64_t off = region.first, len = region.second;
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = RetryEintr([&] {
        return ::pwrite(fd->get(), zeros.data(), std::min<uint64_t>(zeros.size(), len - done),
                        static_cast<off_t>(off + done));
      });
      if (n <= 0) return Status::FromErrno("zero " + device);
      done += static_cast<uint64_t>(n);
    }
  }
  if (::fsync(fd->get()) != 0) return Status::FromErrno("fsync " + device);
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, const std::string& contents, mode_t mode) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto fd = OpenAt(AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (!fd.ok()) return Status::Error(fd.err(), "create " + tmp);
  ScopeGuard remove_tmp([&] {
    if (Status rm = RemoveFile(tmp); !rm.ok()) {
      GetLogger("agent")->warn("could not remove the temporary file of a failed write: {}",
                               rm.ToString());
    }
  });
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = RetryEintr(
        [&] { return ::write(fd->get(), contents.data() + done, contents.size() - done); });
    if (n < 0) return Status::FromErrno("write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd->get(), mode) != 0) return Status::FromErrno("chmod " + tmp);
  if (::fsync(fd->get()) != 0) return Status::FromErrno("fsync " + tmp);
  fd->Reset();
  CrashPoint((path.substr(path.rfind('/') + 1) + ":before-rename").c_str());
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::FromErrno("rename " + tmp + " to " + path);
  remove_tmp.Cancel();
  auto dfd = OpenAt(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY);
  if (!dfd.ok()) return Status::Error(dfd.err(), "open " + dir + " to fsync it");
  if (::fsync(dfd->get()) != 0) return Status::FromErrno("fsync " + dir);
  return Status::Ok();
}

Result<std::string> ReadWholeFile(const std::string& path) {
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY);
  if (!fd.ok()) return Status::Error(fd.err(), "open " + path);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = RetryEintr([&] { return ::read(fd->get(), buf, sizeof buf); });
    if (n < 0) return Status::FromErrno("read " + path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return Status::Error(EINVAL, "empty path");
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string part = path.substr(0, pos);
    if (part.empty()) continue;
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return Status::FromErrno("mkdir " + part);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path);
  if (!S_ISDIR(st.st_mode)) return Status::Error(ENOTDIR, path + " is not a directory");
  return Status::Ok();
}

Result<std::string> CanonicalPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return Status::FromErrno("resolve " + path);
  return std::string(buf);
}

Status RemoveDirectory(const std::string& path) {
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("rmdir " + path);
  return Status::Ok();
}

Status RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("unlink " + path);
  return Status::Ok();
}

Status UnmountAndRemove(const std::string& path, bool detach_on_failure) {
  int err = ::umount2(path.c_str(), 0) == 0 ? 0 : errno;
  if (err != 0 && detach_on_failure) err = ::umount2(path.c_str(), MNT_DETACH) == 0 ? 0 : errno;
  // EINVAL: not a mount point (any more); ENOENT: no such path.
  if (err != 0 && err != EINVAL && err != ENOENT) return Status::Error(err, "umount " + path);
  return RemoveDirectory(path);
}

void CrashPoint(const char* step) {
  static const std::string chosen = [] {
    const char* v = std::getenv("LOCALVOL_CRASH_AT");
    return std::string(v != nullptr ? v : "");
  }();
  if (chosen.empty() || chosen != step) return;
  if (::raise(SIGKILL) != 0) std::abort();  // a crash point must not be passed
}

}  // namespace localvol::agent
