// The agent's boundary with the OS: running programs, the mount table and
// the processes using a filesystem, block devices in sysfs, atomic file
// replacement, and crash points.
//
// CommandRunner is an interface so tests can inject failures (a failing mkfs)
// the way leveldb's EnvWrapper does; CrashPoint() lets a test stop the whole
// process at a chosen step; everything else is plain functions.
// All functions are thread-safe; they hold no state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/mount_table.h"
#include "base/status.h"

namespace localvol::agent {

struct CommandOutput {
  int exit_code = -1;  // valid when the program exited
  int signal = 0;      // non-zero when it was killed
  std::string output;  // stdout and stderr, interleaved
  bool ok() const { return exit_code == 0 && signal == 0; }
};

// Runs programs by argument vector; never through a shell.
class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Runs argv. argv[0] without a '/' is looked up in /usr/sbin, /sbin,
  // /usr/bin and /bin only (not $PATH). The child gets /dev/null as stdin, a
  // default signal mask and dispositions, and is killed after `timeout`.
  // Fails (ENOENT, EAGAIN, ETIMEDOUT...) only when it could not run the
  // program to completion; a non-zero exit is reported in the output.
  virtual Result<CommandOutput> Run(const std::vector<std::string>& argv,
                                    std::chrono::seconds timeout) = 0;
  // Runs argv and turns a non-zero exit into an EIO Status quoting its output.
  Status RunChecked(const std::vector<std::string>& argv, std::chrono::seconds timeout);
};

// The real one.
class PosixCommandRunner : public CommandRunner {
 public:
  Result<CommandOutput> Run(const std::vector<std::string>& argv,
                            std::chrono::seconds timeout) override;
};

// "mkfs.xfs -q -L localvol /dev/loop3", for messages.
std::string JoinArgv(const std::vector<std::string>& argv);

// One mount of a filesystem, in some mount namespace.
struct FsMount {
  std::string mount_point;  // as that namespace sees it
  pid_t ns_pid = 0;         // 0: our own namespace; else a process in the other one
  // "/mnt/x" or "/mnt/x (in the mount namespace of pid 42)".
  std::string Describe() const;
};
// Every mount, in every mount namespace on the host, of the filesystem `dev`
// (compared by device number, whatever the path). Reads
// /proc/<pid>/mountinfo once per namespace.
std::vector<FsMount> MountsOfFilesystem(dev_t dev);

// A process holding something inside a filesystem.
struct ProcessUse {
  pid_t pid = 0;
  std::string command;  // /proc/<pid>/comm
  std::string what;     // "its working directory", "its root directory", "open file /x/y"
  // "pid 42 (sh): its working directory".
  std::string Describe() const;
};
// Every process, in any mount namespace, whose working directory, root
// directory or an open file lies on the filesystem `dev`. Compares device
// numbers with statx(AT_STATX_DONT_SYNC) through /proc/<pid>/{cwd,root,fd/*},
// so it never waits for a filesystem's server (not even a hung one).
// Processes that exit meanwhile are skipped.
std::vector<ProcessUse> ProcessesUsingFilesystem(dev_t dev);

// Block devices the kernel is using: the devices of every mounted filesystem
// (the device behind /, /boot and every other mount), every active swap
// device, and every device holding those up (dm/md slaves), each with the
// whole disk that contains it. A device in this set must never be formatted.
std::set<dev_t> BlockDevicesInUse();

// sysfs facts about a block device.
struct BlockDevice {
  dev_t dev = 0;
  std::string name;  // "loop3", "sdb1"
  std::string path;  // "/dev/loop3"
  bool is_partition = false;
  dev_t whole_disk = 0;  // itself for a whole disk
  uint64_t size_bytes = 0;
  bool read_only = false;
  std::vector<std::string> holders;     // names in /sys/class/block/<name>/holders
  std::vector<std::string> partitions;  // names of its partitions (whole disks only)
};
// Describes the block device at `path` (following symlinks). Fails with
// ENOTBLK if it is not a block device.
Result<BlockDevice> DescribeBlockDevice(const std::string& path);

// Opens a block device exclusively (O_EXCL) and closes it again: fails with
// EBUSY when the kernel holds it (mounted, swap, device-mapper, RAID).
Status CheckNotClaimed(const std::string& device);

// Leftover data without a signature: a device that blkid calls blank may still
// hold someone's data (raw writes, a wiped superblock over old contents). The
// agent samples fixed regions (the first 64 MiB, the last 4 MiB, and 1 MiB at
// every 1/256 of the device) and treats any non-zero byte there as data.
// Returns the offset of the first non-zero byte found, or nullopt.
Result<std::optional<uint64_t>> FindDataInSampledRegions(const std::string& device);
// Zeroes exactly those regions, so a device whose format failed half-way
// looks empty again. Only for a device the agent was formatting.
Status ZeroSampledRegions(const std::string& device);

// Writes `contents` to `path` atomically: a temporary file in the same
// directory, fsync, rename over `path`, fsync of the directory. On failure
// `path` is unchanged and the temporary file is gone. The temporary file is
// `path` + ".tmp." + our pid; a crash may leave one behind. Crash point:
// "<file name>:before-rename".
Status WriteFileAtomic(const std::string& path, const std::string& contents, mode_t mode = 0644);

// Reads a whole file. ENOENT if it does not exist.
Result<std::string> ReadWholeFile(const std::string& path);

// mkdir -p with `mode` for the directories it creates.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// realpath(3), with errno kept.
Result<std::string> CanonicalPath(const std::string& path);

// Undo steps for rollbacks and cleanups. Each returns what went wrong, with
// the errno of the call that failed, so that the caller can log what could
// not be undone; a path that is already gone is not a failure.
// rmdir(2).
Status RemoveDirectory(const std::string& path);
// unlink(2).
Status RemoveFile(const std::string& path);
// umount2(path, 0), then, if that fails and `detach_on_failure`, umount2 with
// MNT_DETACH; then rmdir(path) (which fails too while it is still mounted).
Status UnmountAndRemove(const std::string& path, bool detach_on_failure);

// Crash points, for crash-consistency tests (the way leveldb's EnvWrapper
// lets a test stop at a chosen step). When the environment variable
// LOCALVOL_CRASH_AT names `step` (e.g. "volume-create-after-mkdir"), the
// process kills itself with SIGKILL there, exactly as a crash would stop it:
// no destructor, no unmount, no flush. Unset (always, in production), it does
// nothing. The steps are listed where they are called (grep CrashPoint).
void CrashPoint(const char* step);

}  // namespace localvol::agent
