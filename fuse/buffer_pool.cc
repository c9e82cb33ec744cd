#include "fuse/buffer_pool.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace localvol::fuse {
namespace {

char* AllocateAligned(size_t size) {
  void* p = std::aligned_alloc(BufferPool::kMinSize, size);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<char*>(p);
}

}  // namespace

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& o) noexcept {
  if (this != &o) {
    this->~PooledBuffer();
    pool_ = std::exchange(o.pool_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    size_class_ = o.size_class_;
  }
  return *this;
}

PooledBuffer PooledBuffer::Borrow(char* data, size_t capacity) {
  PooledBuffer view;
  view.data_ = data;
  view.capacity_ = capacity;
  view.size_class_ = kBorrowed;
  return view;
}

PooledBuffer::~PooledBuffer() {
  if (data_ == nullptr || size_class_ == kBorrowed) return;
  if (size_class_ >= 0 && pool_ != nullptr) {
    pool_->Put(data_, size_class_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
}

BufferPool::~BufferPool() {
  MutexLock lock(mu_);
  for (auto& list : free_) {
    for (char* p : list) std::free(p);
    list.clear();
  }
}

PooledBuffer BufferPool::Get(size_t size) {
  PooledBuffer buffer;
  buffer.pool_ = this;
  if (size > kMaxPooledSize) {
    buffer.capacity_ = (size + kMinSize - 1) / kMinSize * kMinSize;
    buffer.data_ = AllocateAligned(buffer.capacity_);
    buffer.size_class_ = PooledBuffer::kUnpooled;
    return buffer;
  }
  int size_class = 0;
  size_t class_size = kMinSize;
  while (class_size < size) {
    class_size <<= 1;
    ++size_class;
  }
  buffer.size_class_ = size_class;
  buffer.capacity_ = class_size;
  {
    MutexLock lock(mu_);
    if (!free_[size_class].empty()) {
      buffer.data_ = free_[size_class].back();
      free_[size_class].pop_back();
      return buffer;
    }
  }
  buffer.data_ = AllocateAligned(class_size);
  return buffer;
}

void BufferPool::Put(char* data, int size_class) {
  {
    MutexLock lock(mu_);
    if (free_[size_class].size() < kKeepPerClass) {
      free_[size_class].push_back(data);
      return;
    }
  }
  std::free(data);
}

}  // namespace localvol::fuse
