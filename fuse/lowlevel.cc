// The libfuse low-level operation table: C trampolines into Filesystem.
#include <cstring>
#include <new>

#include "base/logging.h"
#include "fuse/filesystem.h"
#include "fuse/protocol_extensions.h"

namespace localvol::fuse {

namespace {

// The session's userdata is its protocol::Connection, which names the server.
Filesystem* Fs(void* userdata) { return static_cast<protocol::Connection*>(userdata)->server(); }
Filesystem* Fs(fuse_req_t req) { return Fs(fuse_req_userdata(req)); }

// What the transport knows about the request being dispatched on this thread
// (fuse/protocol_extensions.h, "the hand-off"). Only the trampolines read
// the hand-off slot; handlers are given the Request.
Request& Handed() { return protocol::HandedOff(); }

// No exception may cross into libfuse's C frames: answer EIO instead.
template <typename Fn>
void GuardData(fuse_req_t req, Fn fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    if (req != nullptr) fuse_reply_err(req, ENOMEM);
  } catch (...) {
    GetLogger("fuse")->error("unexpected exception in a FUSE operation");
    if (req != nullptr) fuse_reply_err(req, EIO);
  }
}

// Runs the handler of a request other than a read or write, which places
// the worker the way such requests do (Filesystem::PlaceWorker), then the
// handler as GuardData does.
template <typename Fn>
void Guard(fuse_req_t req, Fn fn) {
  GuardData(req, [&] {
    if (req != nullptr) Fs(req)->PlaceWorkerForOtherRequest(Handed(), req);
    fn();
  });
}

fuse_lowlevel_ops MakeOperations() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = [](void* userdata, fuse_conn_info* conn) { Fs(userdata)->Init(Handed(), conn); };
  ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Lookup(req, parent, name); });
  };
  ops.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    Guard(nullptr, [&] { Fs(req)->Forget(ino, nlookup); });
    fuse_reply_none(req);
  };
  ops.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Guard(nullptr, [&] {
      for (size_t i = 0; i < count; ++i) Fs(req)->Forget(forgets[i].ino, forgets[i].nlookup);
    });
    fuse_reply_none(req);
  };
  ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->GetAttr(req, ino, fi); });
  };
  ops.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                   fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->SetAttr(Handed(), req, ino, attr, to_set, fi); });
  };
  ops.readlink = [](fuse_req_t req, fuse_ino_t ino) {
    Guard(req, [&] { Fs(req)->ReadLink(req, ino); });
  };
  ops.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    Guard(req, [&] { Fs(req)->MkNod(req, parent, name, mode, rdev); });
  };
  ops.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    Guard(req, [&] { Fs(req)->MkDir(req, parent, name, mode); });
  };
  ops.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Unlink(req, parent, name); });
  };
  ops.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->RmDir(req, parent, name); });
  };
  ops.symlink = [](fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Symlink(req, target, parent, name); });
  };
  ops.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                  const char* newname, unsigned int flags) {
    Guard(req, [&] { Fs(req)->Rename(req, parent, name, newparent, newname, flags); });
  };
  ops.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    Guard(req, [&] { Fs(req)->Link(req, ino, parent, name); });
  };
  ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Open(Handed(), req, ino, fi); });
  };
  ops.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    GuardData(req, [&] { Fs(req)->Read(Handed(), req, ino, size, off, fi); });
  };
  ops.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                 fuse_file_info* fi) {
    GuardData(req, [&] { Fs(req)->Write(Handed(), req, ino, buf, size, off, fi); });
  };
  ops.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Release(req, ino, fi); });
  };
  ops.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Fsync(req, ino, datasync, fi); });
  };
  ops.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->OpenDir(req, ino, fi); });
  };
  ops.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReadDir(req, ino, size, off, fi, false); });
  };
  ops.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReadDir(req, ino, size, off, fi, true); });
  };
  ops.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->ReleaseDir(req, ino, fi); });
  };
  ops.fsyncdir = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->FsyncDir(req, ino, datasync, fi); });
  };
  ops.statfs = [](fuse_req_t req, fuse_ino_t ino) {
    Guard(req, [&] { Fs(req)->StatFs(req, ino); });
  };
  ops.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    size_t size, int flags) {
    Guard(req, [&] { Fs(req)->SetXattr(req, ino, name, value, size, flags); });
  };
  ops.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Guard(req, [&] { Fs(req)->GetXattr(req, ino, name, size); });
  };
  ops.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
    Guard(req, [&] { Fs(req)->ListXattr(req, ino, size); });
  };
  ops.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
    Guard(req, [&] { Fs(req)->RemoveXattr(req, ino, name); });
  };
  ops.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                  fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Create(Handed(), req, parent, name, mode, fi); });
  };
  ops.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Fallocate(req, ino, mode, offset, length, fi); });
  };
  ops.copy_file_range = [](fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                           fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                           int flags) {
    Guard(req, [&] {
      Fs(req)->CopyFileRange(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
    });
  };
  ops.lseek = [](fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
    Guard(req, [&] { Fs(req)->Lseek(req, ino, off, whence, fi); });
  };
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& Filesystem::Operations() {
  static const fuse_lowlevel_ops ops = MakeOperations();
  return ops;
}

}  // namespace localvol::fuse
