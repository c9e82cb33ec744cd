#include "tests/support/fuse_uring_switch.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "base/unique_fd.h"

namespace localvol::testing {
namespace {

constexpr const char* kLockPath = "/run/localvol-test-fuse-uring.lock";
// "<holders> <1 if the first holder turned the parameter on>"
constexpr const char* kStatePath = "/run/localvol-test-fuse-uring.state";

struct State {
  long holders = 0;
  int turned_on = 0;
};

State ReadState() {
  State s;
  std::ifstream in(kStatePath);
  in >> s.holders >> s.turned_on;
  if (s.holders < 0) s = State{};
  return s;
}

Status WriteState(const State& s) {
  if (s.holders == 0) {
    if (unlink(kStatePath) != 0 && errno != ENOENT) return Status::FromErrno("unlink state");
    return Status::Ok();
  }
  std::ofstream out(kStatePath, std::ios::trunc);
  out << s.holders << ' ' << s.turned_on << '\n';
  out.flush();
  if (!out) return Status::Error(EIO, std::string("write ") + kStatePath);
  return Status::Ok();
}

Result<bool> ParameterOn() {
  std::ifstream in(FuseUringSwitch::kParameter);
  std::string value;
  if (!std::getline(in, value)) {
    return Status::Error(ENOENT, std::string(FuseUringSwitch::kParameter) +
                                     " is missing: this kernel has no FUSE over io_uring");
  }
  return !value.empty() && (value[0] == 'Y' || value[0] == '1');
}

Status SetParameter(bool on) {
  std::ofstream out(FuseUringSwitch::kParameter);
  out << (on ? "1" : "0");
  out.flush();
  if (!out) return Status::Error(EIO, std::string("write ") + FuseUringSwitch::kParameter);
  return Status::Ok();
}

// Runs `update` on the shared state under the exclusive lock.
template <typename Fn>
Status Locked(Fn update) {
  UniqueFd lock(open(kLockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  if (!lock.valid()) return Status::FromErrno(std::string("open ") + kLockPath);
  if (RetryEintr([&] { return flock(lock.get(), LOCK_EX); }) != 0) {
    return Status::FromErrno(std::string("flock ") + kLockPath);
  }
  return update();  // closing the fd releases the lock
}

}  // namespace

Result<std::unique_ptr<FuseUringSwitch>> FuseUringSwitch::Acquire() {
  Status st = Locked([] {
    State s = ReadState();
    auto on = ParameterOn();
    if (!on.ok()) return on.status();
    if (!*on) {
      if (Status set = SetParameter(true); !set.ok()) return set;
      if (s.holders == 0) s.turned_on = 1;
    }
    ++s.holders;
    return WriteState(s);
  });
  if (!st.ok()) return st;
  return std::unique_ptr<FuseUringSwitch>(new FuseUringSwitch);
}

FuseUringSwitch::~FuseUringSwitch() {
  (void)Locked([] {
    State s = ReadState();
    if (s.holders > 0) --s.holders;
    if (s.holders == 0 && s.turned_on) {
      if (Status off = SetParameter(false); !off.ok()) return off;
    }
    return WriteState(s);
  });
}

}  // namespace localvol::testing
