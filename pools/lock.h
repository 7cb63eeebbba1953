// A small futex mutex for the pools' hot paths (after Drepper, "Futexes Are Tricky", mutex #2):
// uncontended lock and unlock are one atomic instruction each, where absl::Mutex — as Debian builds
// it, without NDEBUG — spends over a hundred instructions per lock. Not recursive, not fair; a
// contended lock spins briefly, then sleeps in the kernel.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "pools/sys.h"

namespace dmashim {

class ABSL_LOCKABLE FutexLock {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    uint32_t c = 0;
    if (word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    LockSlow(c);
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (word_.fetch_sub(1, std::memory_order_release) != 1) {
      word_.store(0, std::memory_order_release);
      FutexWake(&word_, 1);
    }
  }
  // For fork: the child has only the forking thread, so whatever state the word was left in by
  // threads that no longer exist is cleared. Returns whether the lock was held (in a fork child
  // handler: by a thread the child does not have, in the middle of what the lock guards).
  bool ResetAfterFork() { return word_.exchange(0, std::memory_order_relaxed) != 0; }

 private:
  void LockSlow(uint32_t c) {
    for (int spin = 0; spin < 100; ++spin) {
      if (c == 0 && word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      c = word_.load(std::memory_order_relaxed);
    }
    if (c != 2) c = word_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      FutexWait(&word_, 2, -1);
      c = word_.exchange(2, std::memory_order_acquire);
    }
  }

  std::atomic<uint32_t> word_{0};  // 0 free, 1 locked, 2 locked with (possible) waiters
};

// A sequence word to sleep on until something changes, for the "check, then sleep unless it
// changed" waits (a pool's waiters, the maintenance thread, the shim's guarded waits). A waiter reads
// Seen(), checks its condition, then sleeps in Wait(seen, …), which returns at once if Notify()
// came after Seen(). Notify() makes the wake-up system call only while a thread sleeps in Wait():
// both sides are sequentially consistent, so a notifier that reads no sleeper bumped the word before
// the sleeper's futex compared it. Poll() sleeps unannounced: only a forced Notify() wakes it early.
class WakeSeq {
 public:
  uint32_t Seen() const { return seq_.load(std::memory_order_seq_cst); }

  // Sleeps until a Notify() after `seen`, `timeout_ns` (-1: no limit), or a signal handler ran
  // (EINTR). Returns 0 when woken or already changed, else FutexWait's errno (ETIMEDOUT, EINTR).
  int Wait(uint32_t seen, int64_t timeout_ns) {
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    const int r = FutexWait(&seq_, seen, timeout_ns);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return r;
  }
  int Poll(uint32_t seen, int64_t timeout_ns) { return FutexWait(&seq_, seen, timeout_ns); }

  // Wakes up to `count` threads sleeping in Wait(); with `force` the system call is made even when
  // none is, which also wakes a Poll().
  void Notify(int count, bool force = false) {
    seq_.fetch_add(1, std::memory_order_seq_cst);
    if (force || sleepers_.load(std::memory_order_seq_cst) > 0) FutexWake(&seq_, count);
  }

 private:
  std::atomic<uint32_t> seq_{0};
  std::atomic<int> sleepers_{0};
};

class ABSL_SCOPED_LOCKABLE FutexLockGuard {
 public:
  explicit FutexLockGuard(FutexLock* l) ABSL_EXCLUSIVE_LOCK_FUNCTION(l) : l_(l) { l_->Lock(); }
  ~FutexLockGuard() ABSL_UNLOCK_FUNCTION() { l_->Unlock(); }
  FutexLockGuard(const FutexLockGuard&) = delete;
  FutexLockGuard& operator=(const FutexLockGuard&) = delete;

 private:
  FutexLock* l_;
};

}  // namespace dmashim
