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
  thread_prepared = true;
  return Status::Ok();
}

CallerCredentials::CallerCredentials(fuse_req_t req, bool with_groups) {
  status_ = PrepareThreadForCredentialSwitch();
  if (!status_.ok()) return;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  std::vector<gid_t> groups;
  if (with_groups) {
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
  switched_ = true;  // from here on the destructor restores root
  if (SetThreadGroups(groups.size(), groups.data()) != 0) {
    status_ = Status::FromErrno("setgroups for caller");
    return;
  }
  if (!SetFsGid(ctx->gid) || !SetFsUid(ctx->uid)) {
    status_ = Status::Error(EPERM, "switch fsuid/fsgid to caller");
    return;
  }
  umask(ctx->umask);
}

CallerCredentials::~CallerCredentials() {
  if (!switched_) return;
  SetFsUid(0);
  SetFsGid(0);
  SetThreadGroups(0, nullptr);
  umask(0);
}

}  // namespace localvol::fuse
