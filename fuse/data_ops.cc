// The operations on open files and their data: open, create's reply,
// release, read, write, fsync, fallocate, copy_file_range and lseek.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "base/logging.h"
#include "fuse/filesystem.h"
#include "fuse/handles.h"
#include "fuse/protocol_extensions.h"
#include "iopath/engine.h"

namespace localvol::fuse {

namespace {

// ---- Data requests: submitted on a FUSE worker, completed on the iopath thread.

class ReadRequest final : public iopath::IoRequest {
 public:
  ReadRequest(fuse_req_t req, PooledBuffer buffer) : req_(req), buffer_(std::move(buffer)) {
    op = iopath::IoOp::kRead;
    buf = buffer_.data();
  }
  void Complete(iopath::IoResult r) noexcept override {
    if (r.err != 0) {
      fuse_reply_err(req_, r.err);
    } else {
      fuse_reply_buf(req_, buffer_.data(), r.bytes);
    }
  }

 private:
  fuse_req_t req_;
  PooledBuffer buffer_;
};

// Writes and fallocate: settle the quota reservation against what the
// backing file really allocated (an overwrite has nothing to settle), then
// reply.
class AllocatingRequest final : public iopath::IoRequest {
 public:
  AllocatingRequest(fuse_req_t req, Space* space, Inode* inode, Reservation reservation,
                    PooledBuffer buffer)
      : req_(req),
        space_(space),
        inode_(inode),
        reservation_(std::move(reservation)),
        buffer_(std::move(buffer)) {
    buf = buffer_.data();
  }
  // The write was admitted by Space::BeginOverwrite.
  void MarkOverwrite() { overwrite_ = true; }
  // Held until the operation (a fallocate) completed and was settled.
  void HoldWhileFreeing(FreeingGuard guard) { freeing_.emplace(std::move(guard)); }

  void Complete(iopath::IoResult r) noexcept override {
    if (overwrite_) {
      space_->EndOverwrite(*inode_);
    } else {
      space_->SettleAllocation(*inode_, fd, reservation_);
      if (op == iopath::IoOp::kWrite) space_->CountSettledWrite(*inode_, fd);
    }
    freeing_.reset();
    if (r.err != 0) {
      fuse_reply_err(req_, r.err);
    } else if (op == iopath::IoOp::kWrite) {
      fuse_reply_write(req_, r.bytes);
    } else {
      fuse_reply_err(req_, 0);
    }
  }

 private:
  fuse_req_t req_;
  Space* space_;
  Inode* inode_;
  Reservation reservation_;
  PooledBuffer buffer_;
  bool overwrite_ = false;
  std::optional<FreeingGuard> freeing_;
};

class SyncRequest final : public iopath::IoRequest {
 public:
  explicit SyncRequest(fuse_req_t req) : req_(req) {}
  void Complete(iopath::IoResult r) noexcept override { fuse_reply_err(req_, r.err); }

 private:
  fuse_req_t req_;
};

// copy_file_range as a chain of reads and writes through the ring, one chunk
// at a time. Not a reflink: a copy always allocates, so the quota sees it.
struct CopyJob {
  fuse_req_t req;
  Space* space;
  iopath::Engine* engine;
  iopath::IoQueue* queue;
  int in_fd;
  int out_fd;
  Inode* out_inode;
  uint64_t in_off;
  uint64_t out_off;
  size_t remaining;  // admitted bytes still to copy
  uint64_t copied = 0;
  Reservation reservation;
  PooledBuffer buffer;
};

constexpr size_t kCopyChunk = 1 << 20;

class CopyStep final : public iopath::IoRequest {
 public:
  // Submits the next read of `job`.
  static void Read(std::unique_ptr<CopyJob> job) {
    const size_t n = std::min(job->remaining, kCopyChunk);
    Next(std::move(job), iopath::IoOp::kRead, n);
  }

  void Complete(iopath::IoResult r) noexcept override {
    if (op == iopath::IoOp::kRead) {
      if (r.err != 0 || r.bytes == 0) return Finish(r.err);
      return Next(std::move(job_), iopath::IoOp::kWrite, r.bytes);
    }
    if (r.err != 0) return Finish(r.err);
    job_->copied += r.bytes;
    job_->in_off += r.bytes;
    job_->out_off += r.bytes;
    job_->remaining -= std::min<size_t>(job_->remaining, r.bytes);
    if (r.bytes < len || job_->remaining == 0) return Finish(0);
    Read(std::move(job_));
  }

 private:
  static void Next(std::unique_ptr<CopyJob> job, iopath::IoOp next_op, size_t n) {
    CopyJob& j = *job;
    auto step = std::make_unique<CopyStep>();
    step->op = next_op;
    step->fd = next_op == iopath::IoOp::kRead ? j.in_fd : j.out_fd;
    step->offset = next_op == iopath::IoOp::kRead ? j.in_off : j.out_off;
    step->buf = j.buffer.data();
    step->len = n;
    step->job_ = std::move(job);
    j.engine->Submit(*j.queue, std::move(step));
  }

  void Finish(int err) {
    CopyJob& job = *job_;
    job.space->SettleAllocation(*job.out_inode, job.out_fd, job.reservation);
    if (job.copied > 0 || err == 0) {
      fuse_reply_write(job.req, job.copied);
    } else {
      fuse_reply_err(job.req, err);
    }
  }

  std::unique_ptr<CopyJob> job_;
};

}  // namespace

Result<UniqueFd> Filesystem::Reopen(const Request& request, fuse_req_t req, Inode& inode,
                                    int flags) {
  auto path_fd = Pin(inode);
  if (!path_fd.ok()) return path_fd.status();
  std::optional<FreeingGuard> truncating;
  if (flags & O_TRUNC) truncating.emplace(inode);
  auto fd = OpenAt(proc_self_fd_.get(), std::to_string(path_fd->get()), flags);
  if (fd.ok() && (flags & O_TRUNC)) {
    KillSuidSgidIfAsked(request, req, inode, fd->get());
    space_.ChargeAllocation(inode, fd->get());
  }
  return fd;
}

void Filesystem::Open(Request& request, fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode& inode = GetInode(ino);
  // The kernel resolved the path and checked permissions; reopen the inode
  // itself through /proc (O_NOFOLLOW would refuse that magic link).
  const int flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  auto fd = Reopen(request, req, inode, flags);
  if (!fd.ok()) return (void)fuse_reply_err(req, fd.err());
  auto* handle = new FileHandle{std::move(fd).value(), &inode};
  SetOpenReply(request, fi, handle, flags);
  if (fuse_reply_open(req, fi) != 0) DropFileHandle(handle);
}

void Filesystem::SetOpenReply(Request& request, fuse_file_info* fi, FileHandle* handle, int flags) {
  fi->fh = reinterpret_cast<uint64_t>(handle);
  fi->noflush = 1;
  const passthrough::OpenDecision d = DecidePassthrough(*handle, flags);
  handle->passthrough = d.mode;
  switch (d.mode) {
    case passthrough::OpenMode::kServer:
      // Page cache survives reopen: only this server changes the backing
      // file, except a writer's shared mapping in passthrough mode, after
      // which the decision drops it once.
      fi->keep_cache = d.keep_cache;
      fi->direct_io = direct_io_for_o_direct_ && (flags & O_DIRECT);
      break;
    case passthrough::OpenMode::kPassthrough:
    case passthrough::OpenMode::kPassthroughServerIo:
      // The kernel refuses FOPEN_KEEP_CACHE with FOPEN_PASSTHROUGH (the FUSE
      // page cache is unused); FOPEN_DIRECT_IO keeps reads and writes here.
      fi->keep_cache = 0;
      fi->direct_io = d.mode == passthrough::OpenMode::kPassthroughServerIo;
      request.AddOpenFlags(passthrough::kOpenPassthrough);
      request.SetBackingId(d.backing_id);
      break;
  }
  AddHandle(handle);
}

passthrough::OpenDecision Filesystem::DecidePassthrough(const FileHandle& handle, int flags) {
  if (!passthrough_granted_.load(std::memory_order_acquire)) return {};
  const iopath::IoLimits limits = queue_->limits();
  // Reads go through the queue when it must see them: a read limit, or a disk
  // shared fairly with other volumes, whose shares (weights or equal) only
  // the engine's scheduler can keep (docs/isolation.md, "Read passthrough").
  const passthrough::VolumePolicy policy{.passthrough = true,
                                         .queued_reads = limits.read_iops.limited() ||
                                                         limits.read_bps.limited() ||
                                                         engine_->SharedFairly()};
  const passthrough::OpenRequest open{.flags = flags,
                                      .regular_file = handle.inode->type == S_IFREG};
  auto registrar = [&]() -> Result<passthrough::BackingFile> {
    // Only a dense file may enter passthrough mode (fuse/space.h); a sparse
    // one, or one whose size is changing now, is read through the server.
    if (handle.inode->size_changes.load() != 0) return Status::Error(EBUSY, "size changing");
    auto dense = space_.IsDense(handle.fd.get());
    if (!dense.ok()) return dense.status();
    if (!*dense) return Status::Error(ENODATA, "sparse file");
    auto backing = passthrough::BackingFile::Register(fuse_session_fd(session_), handle.fd.get());
    if (!backing.ok() && !passthrough_refusal_logged_.exchange(true)) {
      GetLogger("fuse")->warn("{}; such opens take the server path", backing.status().ToString());
    }
    return backing;
  };
  return passthrough_.Open(reinterpret_cast<uint64_t>(handle.inode), open, policy, registrar);
}

void Filesystem::DropFileHandle(FileHandle* handle) {
  // Destroyed last, after the handle: closes the id if it was the last open.
  passthrough::BackingFile last =
      passthrough_.Release(reinterpret_cast<uint64_t>(handle->inode), handle->passthrough);
  DropHandle(handle);
}

void Filesystem::Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* handle = HandleOf<FileHandle>(fi);
  Inode* inode = handle->inode;
  DropFileHandle(handle);
  // Closing may trim preallocation past EOF; charge what is really allocated.
  space_.ChargeAllocation(*inode);
  fuse_reply_err(req, 0);
}

void Filesystem::Read(Request& request, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      fuse_file_info* fi) {
  PooledBuffer buffer = request.TakeReplyBuffer(size);
  if (buffer.data() == nullptr) buffer = buffers_.Get(size);
  auto io = std::make_unique<ReadRequest>(req, std::move(buffer));
  io->fd = HandleOf<FileHandle>(fi)->fd.get();
  io->offset = static_cast<uint64_t>(off);
  io->len = size;
  SubmitData(request, req, std::move(io));
}

void Filesystem::Write(Request& request, fuse_req_t req, fuse_ino_t ino, const char* buf,
                       size_t size, off_t off, fuse_file_info* fi) {
  FileHandle* handle = HandleOf<FileHandle>(fi);
  const uint64_t offset = static_cast<uint64_t>(off);
  Reservation reservation;
  const bool overwrite = space_.BeginOverwrite(*handle->inode, offset + size);
  const size_t admitted =
      overwrite ? size : space_.AdmitWrite(handle->fd.get(), offset, size, &reservation);
  if (admitted == 0 && size != 0) return (void)fuse_reply_err(req, ENOSPC);
  if (!overwrite) {
    const int err = KeepDense(*handle, offset);
    if (err != 0) return (void)fuse_reply_err(req, err);
  }
  // Before the data changes, as the kernel orders it for its own filesystems.
  KillSuidSgidIfAsked(request, req, *handle->inode, handle->fd.get());
  // The data must outlive this call and be aligned for O_DIRECT: normally it
  // was received into such a buffer; otherwise libfuse reuses `buf` once this
  // returns, so copy it.
  PooledBuffer data = request.TakeWritePayload();
  if (data.data() == nullptr) {
    data = buffers_.Get(admitted);
    std::memcpy(data.data(), buf, admitted);
  }
  auto io = std::make_unique<AllocatingRequest>(req, &space_, handle->inode, std::move(reservation),
                                                std::move(data));
  if (overwrite) io->MarkOverwrite();
  io->op = iopath::IoOp::kWrite;
  io->fd = handle->fd.get();
  io->offset = offset;
  io->len = admitted;
  SubmitData(request, req, std::move(io));
}

int Filesystem::KeepDense(FileHandle& handle, uint64_t offset) {
  if (handle.passthrough == passthrough::OpenMode::kServer) return 0;
  return space_.AllocateGapTo(*handle.inode, handle.fd.get(), offset);
}

void Filesystem::Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  SubmitSync(req, HandleOf<FileHandle>(fi)->fd.get(), datasync);
}

void Filesystem::SubmitSync(fuse_req_t req, int fd, int datasync) {
  auto request = std::make_unique<SyncRequest>(req);
  request->op = datasync ? iopath::IoOp::kFdatasync : iopath::IoOp::kFsync;
  request->fd = fd;
  engine_->Submit(*queue_, std::move(request));
}

void Filesystem::Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                           fuse_file_info* fi) {
  if (offset < 0 || length <= 0) return (void)fuse_reply_err(req, EINVAL);
  FileHandle* handle = HandleOf<FileHandle>(fi);
  if (handle->passthrough != passthrough::OpenMode::kServer) {
    // Keep the file dense (fuse/space.h): no inserted hole, and a punched
    // range stays allocated, zeroed (to the end of file; past it is no hole).
    if (mode & FALLOC_FL_INSERT_RANGE) return (void)fuse_reply_err(req, EOPNOTSUPP);
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      struct stat st;
      if (fstat(handle->fd.get(), &st) != 0) return (void)fuse_reply_err(req, errno);
      if (offset >= st.st_size) return (void)fuse_reply_err(req, 0);
      length = std::min<off_t>(length, st.st_size - offset);
      mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    }
    if (!(mode & FALLOC_FL_KEEP_SIZE)) {
      const int err = KeepDense(*handle, static_cast<uint64_t>(offset));
      if (err != 0) return (void)fuse_reply_err(req, err);
    }
  }
  // Punching, zeroing (XFS frees and reallocates) and collapsing free blocks;
  // plain allocation and insertion take the same guard, for one rule.
  FreeingGuard freeing(*handle->inode);
  Reservation reservation;
  // All or nothing, as fallocate(2) is.
  if (!(mode & FALLOC_FL_PUNCH_HOLE) &&
      !space_.AdmitAllocation(handle->fd.get(), static_cast<uint64_t>(offset),
                              static_cast<uint64_t>(length), &reservation)) {
    return (void)fuse_reply_err(req, ENOSPC);
  }
  auto request = std::make_unique<AllocatingRequest>(req, &space_, handle->inode,
                                                     std::move(reservation), PooledBuffer());
  request->HoldWhileFreeing(std::move(freeing));
  request->op = iopath::IoOp::kFallocate;
  request->fd = handle->fd.get();
  request->offset = static_cast<uint64_t>(offset);
  request->len = static_cast<size_t>(length);
  request->fallocate_mode = mode;
  engine_->Submit(*queue_, std::move(request));
}

void Filesystem::CopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                               fuse_file_info* fi_out, size_t len, int flags) {
  if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
  FileHandle* in = HandleOf<FileHandle>(fi_in);
  FileHandle* out = HandleOf<FileHandle>(fi_out);
  auto job = std::make_unique<CopyJob>();
  const size_t admitted =
      space_.AdmitWrite(out->fd.get(), static_cast<uint64_t>(off_out), len, &job->reservation);
  if (admitted == 0 && len != 0) return (void)fuse_reply_err(req, ENOSPC);
  if (admitted == 0) return (void)fuse_reply_write(req, 0);
  if (const int err = KeepDense(*out, static_cast<uint64_t>(off_out)); err != 0) {
    return (void)fuse_reply_err(req, err);
  }
  job->req = req;
  job->space = &space_;
  job->engine = engine_;
  job->queue = queue_;
  job->in_fd = in->fd.get();
  job->out_fd = out->fd.get();
  job->out_inode = out->inode;
  job->in_off = static_cast<uint64_t>(off_in);
  job->out_off = static_cast<uint64_t>(off_out);
  job->remaining = admitted;
  job->buffer = buffers_.Get(std::min(admitted, kCopyChunk));
  CopyStep::Read(std::move(job));
}

void Filesystem::Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  off_t res = lseek(HandleOf<FileHandle>(fi)->fd.get(), off, whence);
  if (res < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_lseek(req, res);
}

}  // namespace localvol::fuse
