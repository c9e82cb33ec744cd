// Trash: the data of deleted volumes, removed in the background, and counted
// as allocated on its disk until it is actually gone.
//
// A deleted volume's backing directory is renamed into <disk>/trash/ (a
// rename: the delete returns at once) and one thread removes it there. What an
// entry holds is charged to its disk from the rename until its last file is
// removed, and released file by file as the removal goes: a disk is never
// promised space that deleted data still occupies. At a start, Adopt() queues
// every entry a stopped or crashed predecessor left and charges what each one
// still holds, measured on the disk (the usage a clean unmount stored, else a
// scan), so the count survives restarts. An entry that cannot be removed (an
// I/O error, an immutable file) stays charged until a later start removes it.
//
// Threading: Move(), Adopt(), PendingBytes() and Stop() may be called from any
// thread. One thread (started by Start()) removes entries; it takes only
// `mu_`, briefly, to release what it freed. Lock order: a caller may hold its
// own locks (VolumeManager::mu_) while calling PendingBytes(); the trash never
// calls out while holding `mu_`.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <thread>

#include "agent/disk_manager.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace localvol::agent {

class Trash {
 public:
  Trash() = default;
  // Calls Stop().
  ~Trash();
  Trash(const Trash&) = delete;
  Trash& operator=(const Trash&) = delete;

  // Starts the removal thread (again, after a Stop()).
  void Start() EXCLUDES(mu_);
  // Stops the thread between two files; what is left is resumed by the next
  // Start() and Adopt(). Idempotent.
  void Stop() EXCLUDES(mu_);

  // Renames the directory `path` on `disk` into the disk's trash and queues
  // it, charging `bytes` to the disk. Fails (nothing charged) if the rename
  // fails.
  Status Move(AttachedDisk* disk, const std::string& path, uint64_t bytes) EXCLUDES(mu_);
  // The same, charging what the directory holds, measured.
  Status MoveMeasured(AttachedDisk* disk, const std::string& path) EXCLUDES(mu_);
  // Queues every entry in `disk`'s trash directory, charging what each holds.
  void Adopt(AttachedDisk* disk) EXCLUDES(mu_);

  // Bytes still held by the trash of `disk`, or of every disk.
  uint64_t PendingBytes(const AttachedDisk* disk) const EXCLUDES(mu_);
  uint64_t PendingBytes() const EXCLUDES(mu_);

 private:
  struct Item {
    AttachedDisk* disk = nullptr;
    std::string path;
    uint64_t charged = 0;  // what is still charged to the disk for it
  };
  void Loop() EXCLUDES(mu_);
  // Removes one entry, releasing its charge as it goes; on failure what is
  // left stays charged.
  void Remove(Item item) EXCLUDES(mu_);
  void Release(Item* item, uint64_t bytes) EXCLUDES(mu_);
  void Queue(Item item) EXCLUDES(mu_);

  mutable Mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Item> queue_ GUARDED_BY(mu_);
  std::map<const AttachedDisk*, uint64_t> bytes_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::atomic<bool> abort_{false};  // makes the thread stop between two files
  std::thread thread_;
};

// What the volume directory open at `dir_fd` holds on its disk: the usage its
// last clean unmount stored, else the allocated blocks of its tree.
uint64_t BytesHeldBy(int dir_fd);

}  // namespace localvol::agent
