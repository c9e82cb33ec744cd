// ScopeGuard: runs a callable when it leaves scope unless Cancel() was called.
// Multi-step setup rolls back with one of these, cancelled on success.
#pragma once

#include <utility>

namespace localvol {

template <typename F>
class [[nodiscard]] ScopeGuard {
 public:
  explicit ScopeGuard(F f) : f_(std::move(f)) {}
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  ~ScopeGuard() {
    if (armed_) f_();
  }
  void Cancel() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

}  // namespace localvol
