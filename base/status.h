// Status and Result<T>: how every localvol layer reports failure.
//
// A failure is a positive errno plus a human-readable context naming what was
// being done ("openat data/foo"). Syscall wrappers capture errno on the line
// that failed and return one of these; nothing in localvol throws across a
// layer boundary. Value types, not thread-safe to mutate concurrently.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace localvol {

class [[nodiscard]] Status {
 public:
  Status() = default;  // success
  static Status Ok() { return Status(); }
  // `err` is a positive errno value. `context` says what failed.
  static Status Error(int err, std::string context) { return Status(err, std::move(context)); }
  // Builds an error from the current errno; call it on the line after the failing syscall.
  static Status FromErrno(std::string context) { return Status(errno, std::move(context)); }

  bool ok() const { return err_ == 0; }
  int err() const { return err_; }
  const std::string& context() const { return context_; }
  // "context: strerror(err)", or "ok".
  std::string ToString() const;

 private:
  Status(int err, std::string context) : err_(err == 0 ? EIO : err), context_(std::move(context)) {}
  int err_ = 0;
  std::string context_;
};

// Either a T or a failed Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok()

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  int err() const { return ok() ? 0 : std::get<Status>(v_).err(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

// Retries `op` while it fails with EINTR. `op` returns a value < 0 and sets errno on failure.
template <typename Op>
auto RetryEintr(Op op) {
  decltype(op()) r;
  do {
    r = op();
  } while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace localvol
