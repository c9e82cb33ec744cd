// BufferPool: page-aligned I/O buffers for the data path, recycled.
//
// Every read reply and every write payload needs a buffer that outlives the
// FUSE worker (the I/O completes later) and that is page-aligned (O_DIRECT on
// the backing file). Allocating 1 MiB per request would mmap/munmap and fault
// every page each time, so buffers are kept in per-size free lists.
// Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "base/thread_annotations.h"

namespace localvol::fuse {

class BufferPool;

// Move-only owner of one pooled buffer; returns it to the pool on destruction.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&& o) noexcept { *this = std::move(o); }
  PooledBuffer& operator=(PooledBuffer&& o) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer();

  // A view of `capacity` bytes at `data` that belong to someone else (a FUSE
  // ring entry), who keeps them valid and unused until this is destroyed.
  // Destroying it frees nothing.
  static PooledBuffer Borrow(char* data, size_t capacity);

  char* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  friend class BufferPool;
  BufferPool* pool_ = nullptr;
  char* data_ = nullptr;
  size_t capacity_ = 0;
  int size_class_ = 0;  // kUnpooled, kBorrowed, or an index into the pool's lists
  static constexpr int kUnpooled = -1;
  static constexpr int kBorrowed = -2;
};

class BufferPool {
 public:
  static constexpr size_t kMinSize = 4096;
  static constexpr size_t kMaxPooledSize = 1 << 20;

  BufferPool() = default;
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of at least `size` bytes (at least 1), 4096-aligned. Sizes above
  // kMaxPooledSize are allocated and freed without pooling. Aborts on OOM like
  // operator new.
  PooledBuffer Get(size_t size);

 private:
  friend class PooledBuffer;
  static constexpr int kClasses = 9;           // 4 KiB .. 1 MiB
  static constexpr size_t kKeepPerClass = 64;  // bounds idle memory per class
  void Put(char* data, int size_class);

  Mutex mu_;
  std::vector<char*> free_[kClasses] GUARDED_BY(mu_);
};

}  // namespace localvol::fuse
