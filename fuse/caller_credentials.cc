#include "fuse/caller_credentials.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace localvol::fuse {
namespace {

// fsuid/fsgid switches succeed silently or not at all; setfsuid returns the
// previous value, so a second call tells whether the first took effect.
bool SetFsUid(uid_t uid) {
  syscall(SYS_setfsuid, uid);
  return static_cast<uid_t>(syscall(SYS_setfsuid, -1)) == uid;
}
bool SetFsGid(gid_t gid) {
  syscall(SYS_setfsgid, gid);
  return static_cast<gid_t>(syscall(SYS_setfsgid, -1)) == gid;
}
int SetThreadGroups(size_t n, const gid_t* groups) {
  return static_cast<int>(syscall(SYS_setgroups, n, groups));
}

thread_local bool thread_prepared = false;

}  // namespace

Status PrepareThreadForCredentialSwitch() {
  if (thread_prepared) return Status::Ok();
  if (unshare(CLONE_FS) != 0) return Status::FromErrno("unshare(CLONE_FS) for a FUSE worker");
  umask(0);  // the state CallerCredentials starts from and returns to
  thread_prepared = true;
  return Status::Ok();
}

CallerCredentials::CallerCredentials(fuse_req_t req, bool with_groups) {
  status_ = PrepareThreadForCredentialSwitch();
  if (!status_.ok()) return;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  // Between switches a worker thread is root, with no supplementary groups
  // and umask 0. Only what differs from that is switched, and switched back:
  // each switch costs a syscall or two, and a create is a handful of them.
  // Root's groups never matter: it passes every permission check anyway.
  std::vector<gid_t> groups;
  if (with_groups && ctx->uid != 0) {
    gid_t small[32];
    int n = fuse_req_getgroups(req, 32, small);
    if (n > 32) {
      groups.resize(n);
      n = fuse_req_getgroups(req, n, groups.data());
    }
    if (n < 0) {
      // The caller may have exited; fall back to no supplementary groups.
      n = 0;
    }
    if (n <= 32) groups.assign(small, small + n);
    groups.resize(static_cast<size_t>(n));
  }
  if (!groups.empty()) {
    restore_groups_ = true;
    if (SetThreadGroups(groups.size(), groups.data()) != 0) {
      status_ = Status::FromErrno("setgroups for caller");
      return;
    }
  }
  if (ctx->gid != 0) {
    restore_gid_ = true;
    if (!SetFsGid(ctx->gid)) {
      status_ = Status::Error(EPERM, "switch fsgid to caller");
      return;
    }
  }
  if (ctx->uid != 0) {
    restore_uid_ = true;
    if (!SetFsUid(ctx->uid)) {
      status_ = Status::Error(EPERM, "switch fsuid to caller");
      return;
    }
  }
  if (ctx->umask != 0) {
    restore_umask_ = true;
    umask(ctx->umask);
  }
}

CallerCredentials::~CallerCredentials() {
  // Going back to root cannot fail for a process that could leave it.
  if (restore_uid_) syscall(SYS_setfsuid, 0);
  if (restore_gid_) syscall(SYS_setfsgid, 0);
  if (restore_groups_) SetThreadGroups(0, nullptr);
  if (restore_umask_) umask(0);
}

}  // namespace localvol::fuse
