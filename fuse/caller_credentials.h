// CallerCredentials: act on the backing filesystem as the FUSE caller.
//
// The server runs as root, but a file a pod creates must belong to the pod's
// uid and gid, with setgid directories, the sgid-stripping rules and POSIX
// default ACLs applied exactly as a kernel filesystem applies them. The
// simplest way to get all of that right is to let the backing filesystem do
// it: for the duration of one create/mkdir/mknod/symlink, this guard switches
// the calling *thread's* fsuid, fsgid, supplementary groups and umask to the
// caller's, and switches them back when it leaves scope.
//
// Only the current thread is affected: raw syscalls are used because glibc's
// setgroups() would apply to every thread, and each FUSE worker thread gets
// its own fs_struct (unshare(CLONE_FS)) so umask is per thread. Not movable.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <vector>

#include "base/status.h"

namespace localvol::fuse {

class CallerCredentials {
 public:
  // Switches to the caller of `req`. With `with_groups` the caller's
  // supplementary groups are read from /proc (costly); without, the thread
  // has no supplementary groups. `umask` is the caller's umask.
  CallerCredentials(fuse_req_t req, bool with_groups);
  ~CallerCredentials();
  CallerCredentials(const CallerCredentials&) = delete;
  CallerCredentials& operator=(const CallerCredentials&) = delete;

  // Whether the switch happened; if not, the operation must fail with err().
  bool ok() const { return status_.ok(); }
  int err() const { return status_.err(); }

 private:
  Status status_;
  // What the constructor changed, and the destructor puts back.
  bool restore_groups_ = false;
  bool restore_gid_ = false;
  bool restore_uid_ = false;
  bool restore_umask_ = false;
};

// Prepares the calling thread for CallerCredentials (its own fs_struct).
// Idempotent and cheap after the first call on a thread.
Status PrepareThreadForCredentialSwitch();

}  // namespace localvol::fuse
