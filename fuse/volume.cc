#include "fuse/volume.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "base/logging.h"
#include "base/mount_table.h"
#include "base/scope_guard.h"
#include "base/size.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "fuse/filesystem.h"
#include "fuse/kernel_ring.h"
#include "fuse/passthrough.h"
#include "fuse/protocol_extensions.h"
#include "fuse/quota.h"
#include "fuse/usage_store.h"
#include "iopath/engine.h"

namespace localvol::fuse {
namespace {

// How long Unmount() lets processes that still use a detached mount finish
// before it aborts the FUSE connection (they then get ENOTCONN).
constexpr auto kBusyUnmountGrace = std::chrono::seconds(10);

Result<std::string> RealPath(const std::string& path, const char* what) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) {
    int err = errno;
    if (err == ENOTCONN) {
      return Status::Error(err, std::string(what) + " " + path +
                                    " is a stale FUSE mount (its server died); clear it with "
                                    "'umount -l " +
                                    path + "'");
    }
    return Status::Error(err, std::string(what) + " " + path);
  }
  return std::string(buf);
}

// The server holds one O_PATH fd per inode the kernel has looked up, so the
// default soft limit of 1024 would cap a volume at about a thousand cached
// files. Raise the soft limit to the hard limit (and the hard one to
// fs.nr_open when we may), once per process.
void RaiseOpenFileLimit() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    std::ifstream nr_open_file("/proc/sys/fs/nr_open");
    rlim_t nr_open = 0;
    if (nr_open_file >> nr_open && nr_open > lim.rlim_max) {
      struct rlimit raised = {nr_open, nr_open};
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
    }
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      GetLogger("fuse")->warn("could not raise the open file limit: {}", std::strerror(errno));
    }
  });
}

// Owns a fuse_session.
struct SessionDeleter {
  void operator()(fuse_session* session) const { fuse_session_destroy(session); }
};
using SessionPtr = std::unique_ptr<fuse_session, SessionDeleter>;

}  // namespace

unsigned DefaultWorkerThreads() {
  return std::max(4u, 2 * std::max(1u, std::thread::hardware_concurrency()));
}

uint64_t DefaultInodeLimit(uint64_t capacity_bytes) {
  return std::clamp<uint64_t>(capacity_bytes / (16 * 1024), 1024, kMaxInodeLimit);
}

struct Volume::Impl {
  VolumeOptions options;
  std::string mountpoint;  // canonical
  UniqueFd root_dir_fd;    // O_RDONLY | O_DIRECTORY: state xattr and fsync
  std::unique_ptr<Quota> quota;
  std::unique_ptr<iopath::IoQueue> queue;
  std::unique_ptr<Filesystem> fs;
  std::unique_ptr<protocol::Connection> connection;  // the session's userdata
  SessionPtr session;
  unsigned connection_id = 0;  // minor of the FUSE device: /sys/fs/fuse/connections/<id>
  std::thread loop_thread;

  Mutex mu;
  std::condition_variable_any loop_done_cv;  // notified when loop_done is set
  bool loop_done GUARDED_BY(mu) = false;
  bool torn_down GUARDED_BY(mu) = false;
  std::unique_ptr<KernelRing> kernel_ring GUARDED_BY(mu);  // set by the init callback

  void RunLoop(unsigned max_threads) {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int rc = fuse_session_loop_mt(session.get(), config);
    fuse_loop_cfg_destroy(config);
    if (rc != 0) GetLogger("fuse")->warn("volume {}: FUSE loop ended with {}", options.name, rc);
    MutexLock lock(mu);
    loop_done = true;
    loop_done_cv.notify_all();
  }

  // ---- The steps of Volume::Mount.
  // Opens the backing root (root_dir_fd and, O_PATH, `*root_path_fd`) and
  // reads what the Filesystem needs of it.
  Status OpenSource(const std::string& source, struct stat* root_stat, UniqueFd* root_path_fd,
                    uint64_t* block_size);
  FilesystemConfig MakeFilesystemConfig(uint64_t block_size);
  // From the init callback, when the kernel granted FUSE over io_uring.
  void StartKernelRing(size_t payload);
  // Creates the session over `connection`, mounts it and installs the
  // protocol layer; nothing stays mounted on failure.
  Status MountSession(uint32_t max_write);

  void AbortConnection() {
    // The control filesystem is mounted on most systems (systemd does it);
    // where it is not, mount it now, the one time it is needed.
    const char* control = "/sys/fs/fuse/connections";
    const std::string path = std::string(control) + "/" + std::to_string(connection_id) + "/abort";
    bool mounted_here = false;
    if (access(path.c_str(), W_OK) != 0) {
      mounted_here = mount("fusectl", control, "fusectl", 0, nullptr) == 0;
      if (!mounted_here) {
        GetLogger("fuse")->warn("volume {}: cannot mount {}: {}", options.name, control,
                                std::strerror(errno));
      }
    }
    ScopeGuard unmount_control([&] {
      if (mounted_here) umount2(control, MNT_DETACH);
    });
    std::ofstream abort(path);
    abort << "1" << std::flush;
    if (!abort) GetLogger("fuse")->warn("volume {}: could not abort {}", options.name, path);
  }
};

Volume::Volume(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Volume::~Volume() {
  Status s = Unmount();
  if (!s.ok()) GetLogger("fuse")->error("volume {}: {}", impl_->options.name, s.ToString());
}

const std::string& Volume::mountpoint() const { return impl_->mountpoint; }

namespace {

// Checks the options that need no file system access; fills in the defaults.
Status CheckOptions(VolumeOptions& opt) {
  if (opt.engine == nullptr) return Status::Error(EINVAL, "no iopath engine given");
  if (opt.capacity_bytes == 0) return Status::Error(EINVAL, "capacity must be greater than zero");
  if (opt.cache_timeout_s < 0) return Status::Error(EINVAL, "cache timeout must not be negative");
  if (opt.fuse_io_uring_idle_release.count() < 0) {
    return Status::Error(EINVAL, "FUSE ring idle release period must not be negative");
  }
  if (opt.inode_limit == 0) opt.inode_limit = DefaultInodeLimit(opt.capacity_bytes);
  return iopath::ValidateIoLimits(opt.io_limits);
}

// The mountpoint must be a directory that is not a mountpoint already, and
// not the source itself.
Status CheckMountpoint(const std::string& source, const std::string& mountpoint) {
  struct stat st;
  if (stat(mountpoint.c_str(), &st) != 0) return Status::FromErrno("stat mountpoint");
  if (!S_ISDIR(st.st_mode)) {
    return Status::Error(ENOTDIR, "mountpoint " + mountpoint + " is not a directory");
  }
  if (FindMountAt(mountpoint).has_value()) {
    return Status::Error(EBUSY, "mountpoint " + mountpoint +
                                    " is already a mountpoint; unmount it or choose another");
  }
  if (source == mountpoint) {
    return Status::Error(EINVAL, "source and mountpoint are the same directory");
  }
  return Status::Ok();
}

// The volume's usage: exact from the last clean unmount, otherwise rebuilt
// by a rescan before anything can be written. It must fit the limits.
Result<UsageFigures> LoadUsage(int dir_fd, const VolumeOptions& opt, const std::string& source) {
  auto log = GetLogger("fuse");
  auto stored = ReadCleanUsage(dir_fd);
  if (!stored.ok()) return stored.status();
  UsageFigures usage;
  if (stored->has_value()) {
    usage = **stored;
    log->info("volume {}: usage {} bytes, {} inodes (clean state)", opt.name, usage.used_bytes,
              usage.used_inodes);
  } else {
    const auto start = std::chrono::steady_clock::now();
    auto scanned = ScanUsage(dir_fd);
    if (!scanned.ok()) return scanned.status();
    usage = *scanned;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log->info("volume {}: no clean state, rescanned: {} bytes, {} inodes in {:.3f}s", opt.name,
              usage.used_bytes, usage.used_inodes, secs);
  }
  if (usage.used_bytes > opt.capacity_bytes) {
    return Status::Error(
        ENOSPC, "source " + source + " already holds " + std::to_string(usage.used_bytes) +
                    " bytes (" + FormatSize(usage.used_bytes) + "), more than the capacity " +
                    std::to_string(opt.capacity_bytes) + "; choose a larger capacity");
  }
  if (usage.used_inodes > opt.inode_limit) {
    return Status::Error(ENOSPC, "source " + source + " already holds " +
                                     std::to_string(usage.used_inodes) +
                                     " inodes, more than the inode limit " +
                                     std::to_string(opt.inode_limit) + "; raise --inodes");
  }
  return usage;
}

}  // namespace

Status Volume::Impl::OpenSource(const std::string& source, struct stat* root_stat,
                                UniqueFd* root_path_fd, uint64_t* block_size) {
  auto path_fd = OpenAt(AT_FDCWD, source, O_PATH | O_DIRECTORY);
  if (!path_fd.ok()) {
    return Status::Error(
        path_fd.err(),
        "source " + source + (path_fd.err() == ENOTDIR ? " is not a directory" : ": cannot open"));
  }
  auto dir_fd = OpenAt(AT_FDCWD, source, O_RDONLY | O_DIRECTORY);
  if (!dir_fd.ok()) return dir_fd.status();
  if (fstat(dir_fd->get(), root_stat) != 0) return Status::FromErrno("stat source " + source);
  struct statfs backing;
  if (fstatfs(dir_fd->get(), &backing) != 0) return Status::FromErrno("statfs source " + source);
  *block_size = backing.f_bsize > 0 ? static_cast<uint64_t>(backing.f_bsize) : 4096;
  root_dir_fd = std::move(dir_fd).value();
  *root_path_fd = std::move(path_fd).value();
  return Status::Ok();
}

FilesystemConfig Volume::Impl::MakeFilesystemConfig(uint64_t block_size) {
  FilesystemConfig config;
  config.block_size = block_size;
  config.entry_timeout_s = options.cache_timeout_s;
  config.attr_timeout_s = options.cache_timeout_s;
  config.cache_listings = options.cache_timeout_s > 0;
  config.thread_placement = options.thread_placement;
  config.read_passthrough = options.read_passthrough;
  if (options.fuse_io_uring) {
    const size_t payload = std::max<size_t>(config.max_write, 8192);
    config.start_kernel_ring = [this, payload] { StartKernelRing(payload); };
  }
  return config;
}

void Volume::Impl::StartKernelRing(size_t payload) {
  auto ring = KernelRing::Start(session.get(), options.fuse_io_uring_depth, payload,
                                options.fuse_io_uring_idle_release, options.thread_placement);
  if (!ring.ok()) {
    GetLogger("fuse")->warn("volume {}: FUSE over io_uring: {}; serving /dev/fuse", options.name,
                            ring.status().ToString());
    return;
  }
  MutexLock lock(mu);
  kernel_ring = std::move(ring).value();
  connection->AttachRing(kernel_ring.get());
}

Status Volume::Impl::MountSession(uint32_t max_write) {
  const std::string mount_options =
      "allow_other,default_permissions,fsname=localvol:" + options.name +
      ",subtype=localvol,max_read=" + std::to_string(max_write);
  const char* argv[] = {"localvol-fuse", "-o", mount_options.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  session.reset(fuse_session_new(&args, &Filesystem::Operations(), sizeof(fuse_lowlevel_ops),
                                 connection.get()));
  // fuse_session_new parses `args` into a copy it allocates; the caller owns it.
  fuse_opt_free_args(&args);
  if (!session) return Status::Error(EINVAL, "fuse_session_new failed");
  fs->SetSession(session.get());
  // The path as given: "/proc/self/fd/N" names the open directory itself, so
  // the mount cannot be redirected by a path changed since it was resolved.
  if (fuse_session_mount(session.get(), options.mountpoint.c_str()) != 0) {
    session.reset();
    return Status::Error(EIO, "mount FUSE filesystem at " + mountpoint +
                                  " failed (is /dev/fuse available and are you root?)");
  }
  if (Status s = protocol::Install(session.get()); !s.ok()) {
    fuse_session_unmount(session.get());
    session.reset();
    return s;
  }
  // Read from the mount table: a FUSE mount cannot answer stat() before its
  // server runs. The connection is named by the mount's minor device number.
  if (auto mount = FindMountAt(mountpoint)) connection_id = minor(mount->dev);
  return Status::Ok();
}

Result<std::unique_ptr<Volume>> Volume::Mount(const VolumeOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  VolumeOptions& opt = impl->options;
  if (Status s = CheckOptions(opt); !s.ok()) return s;
  RaiseOpenFileLimit();
  auto source = RealPath(opt.source_dir, "source directory");
  if (!source.ok()) return source.status();
  auto mountpoint = RealPath(opt.mountpoint, "mountpoint");
  if (!mountpoint.ok()) return mountpoint.status();
  impl->mountpoint = *mountpoint;
  if (opt.name.empty()) opt.name = source->substr(source->rfind('/') + 1);
  if (Status s = CheckMountpoint(*source, impl->mountpoint); !s.ok()) return s;

  struct stat root_stat;
  UniqueFd root_path_fd;
  uint64_t block_size = 0;
  if (Status s = impl->OpenSource(*source, &root_stat, &root_path_fd, &block_size); !s.ok()) {
    return s;
  }
  const int dir_fd = impl->root_dir_fd.get();
  if (opt.read_passthrough) {
    if (Status s = passthrough::CheckBackingNotStacked(dir_fd, "source " + *source); !s.ok()) {
      return s;
    }
  }
  auto usage = LoadUsage(dir_fd, opt, *source);
  if (!usage.ok()) return usage.status();
  Status prealloc = DisableSpeculativePreallocation(dir_fd);
  if (!prealloc.ok()) {
    GetLogger("fuse")->warn("volume {}: {}; speculative preallocation may delay space accounting",
                            opt.name, prealloc.ToString());
  }
  if (Status marked = MarkInUse(dir_fd); !marked.ok()) return marked;
  // From here a failure must put the clean state back: nothing was written.
  ScopeGuard restore_state([&] {
    if (Status s = StoreCleanUsage(dir_fd, *usage); !s.ok()) {
      GetLogger("fuse")->error("volume {}: could not restore the clean state: {}", opt.name,
                               s.ToString());
    }
  });

  impl->quota = std::make_unique<Quota>(opt.capacity_bytes, opt.inode_limit, usage->used_bytes,
                                        usage->used_inodes);
  impl->queue = opt.engine->CreateQueue(opt.name);
  if (Status s = impl->queue->SetLimits(opt.io_limits); !s.ok()) return s;
  const FilesystemConfig config = impl->MakeFilesystemConfig(block_size);
  impl->fs = std::make_unique<Filesystem>(std::move(root_path_fd), root_stat, impl->quota.get(),
                                          opt.engine, impl->queue.get(), config);
  impl->connection = std::make_unique<protocol::Connection>(impl->fs.get());
  if (Status s = impl->MountSession(config.max_write); !s.ok()) return s;

  const unsigned threads = std::max(1u, opt.max_threads);
  Impl* raw = impl.get();
  impl->loop_thread = std::thread([raw, threads] { raw->RunLoop(threads); });
  restore_state.Cancel();
  GetLogger("fuse")->info("volume {}: serving {} at {} (capacity {}, {} inodes)", opt.name, *source,
                          impl->mountpoint, FormatSize(opt.capacity_bytes), opt.inode_limit);
  return std::unique_ptr<Volume>(new Volume(std::move(impl)));
}

void Volume::WaitUntilUnmounted() {
  MutexLock lock(impl_->mu);
  while (!impl_->loop_done) impl_->loop_done_cv.wait(impl_->mu);
}

Status Volume::Unmount() {
  Impl& impl = *impl_;
  {
    MutexLock lock(impl.mu);
    if (impl.torn_down) return Status::Ok();
    impl.torn_down = true;
  }
  auto log = GetLogger("fuse");
  bool done;
  {
    MutexLock lock(impl.mu);
    done = impl.loop_done;
  }
  if (!done) {
    // Detach: new lookups fail at once; processes that still use the volume
    // keep working until they let go or the grace period ends.
    if (umount2(impl.mountpoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
      log->warn("volume {}: umount {}: {}", impl.options.name, impl.mountpoint,
                std::strerror(errno));
    }
    const auto deadline = std::chrono::steady_clock::now() + kBusyUnmountGrace;
    {
      MutexLock lock(impl.mu);
      while (!impl.loop_done &&
             impl.loop_done_cv.wait_until(impl.mu, deadline) != std::cv_status::timeout) {
      }
      done = impl.loop_done;
    }
    if (!done) {
      log->warn("volume {}: still in use {}s after unmount; aborting the FUSE connection",
                impl.options.name, kBusyUnmountGrace.count());
      impl.AbortConnection();
    }
  }
  if (impl.loop_thread.joinable()) impl.loop_thread.join();
  // The mount is gone and no worker runs. Let in-flight I/O finish (the queue
  // waits for it), settle every inode, then record the exact usage.
  impl.queue.reset();
  // Every ring request has been answered now, and the connection is gone.
  std::unique_ptr<KernelRing> ring;
  {
    MutexLock lock(impl.mu);
    ring = std::move(impl.kernel_ring);
  }
  impl.connection->AttachRing(nullptr);
  if (ring) {
    log->info("volume {}: {} requests came through FUSE over io_uring", impl.options.name,
              ring->requests_served());
    ring.reset();
  }
  impl.fs->ForgetAll();
  impl.session.reset();
  const QuotaSnapshot q = impl.quota->Snapshot();
  Status stored =
      StoreCleanUsage(impl.root_dir_fd.get(), UsageFigures{q.used_bytes, q.used_inodes});
  if (!stored.ok()) return stored;
  log->info("volume {}: unmounted from {}; usage {} bytes, {} inodes", impl.options.name,
            impl.mountpoint, q.used_bytes, q.used_inodes);
  return Status::Ok();
}

Status Volume::SetLimits(uint64_t capacity_bytes, uint64_t inode_limit) {
  Status s = impl_->quota->SetLimits(capacity_bytes, inode_limit);
  if (s.ok()) {
    GetLogger("fuse")->info("volume {}: limits now {} bytes, {} inodes", impl_->options.name,
                            capacity_bytes, inode_limit);
  }
  return s;
}

Status Volume::SetIoLimits(const iopath::IoLimits& limits) {
  MutexLock lock(impl_->mu);
  if (impl_->torn_down || !impl_->queue) {
    return Status::Error(ESHUTDOWN, "volume " + impl_->options.name + " is unmounted");
  }
  if (Status s = impl_->queue->SetLimits(limits); !s.ok()) return s;
  impl_->options.io_limits = limits;
  GetLogger("fuse")->info("volume {}: I/O limits now {}", impl_->options.name,
                          iopath::FormatIoLimits(limits));
  return Status::Ok();
}

iopath::IoLimits Volume::IoLimits() const {
  MutexLock lock(impl_->mu);
  return impl_->options.io_limits;
}

VolumeIoStats Volume::IoStats() const {
  // Unmount() sets torn_down under mu before it destroys the queue, so the
  // queue is alive whenever this sees torn_down == false.
  MutexLock lock(impl_->mu);
  if (impl_->torn_down || !impl_->queue) return {};
  return impl_->queue->stats().Snapshot();
}

uint64_t Volume::KernelRingRequests() const {
  MutexLock lock(impl_->mu);
  return impl_->kernel_ring ? impl_->kernel_ring->requests_served() : 0;
}

uint64_t Volume::KernelRingResidentBytes() const {
  MutexLock lock(impl_->mu);
  return impl_->kernel_ring ? impl_->kernel_ring->resident_bytes() : 0;
}

bool Volume::ReadPassthrough() const { return impl_->fs->read_passthrough(); }

uint64_t Volume::PassthroughOpenFiles() const { return impl_->fs->passthrough_open_files(); }

uint64_t Volume::PassthroughOpensTotal() const { return impl_->fs->passthrough_opens_total(); }

uint64_t Volume::Overwrites() const {
  return impl_->fs->overwrites();  // the Filesystem lives as long as the Volume
}

VolumeUsage Volume::Usage() const {
  const QuotaSnapshot q = impl_->quota->Snapshot();
  return VolumeUsage{q.capacity_bytes, q.used_bytes, q.inode_limit, q.used_inodes};
}

}  // namespace localvol::fuse
