// Clang thread-safety annotations (no-ops on other compilers).
// Build with clang and -Wthread-safety to check them.
#pragma once

#include <mutex>

#if defined(__clang__)
#define LV_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LV_THREAD_ANNOTATION(x)
#endif

#define GUARDED_BY(x) LV_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) LV_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) LV_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) LV_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// Lock order, stated once on the mutex it concerns: this mutex is taken
// before (after) the ones named, never while holding them the other way.
// Clang checks the order with -Wthread-safety-beta.
#define ACQUIRED_BEFORE(...) LV_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) LV_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define ACQUIRE(...) LV_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) LV_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CAPABILITY(x) LV_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY LV_THREAD_ANNOTATION(scoped_lockable)
#define NO_THREAD_SAFETY_ANALYSIS LV_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace localvol {

// std::mutex with the capability annotation, so GUARDED_BY can name it.
class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { m_.lock(); }
  void unlock() RELEASE() { m_.unlock(); }
  std::mutex& native() { return m_; }

 private:
  std::mutex m_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() RELEASE() { m_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_;
};

}  // namespace localvol
