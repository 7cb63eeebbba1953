// A small futex mutex for the pools' hot paths (after Drepper, "Futexes Are Tricky", mutex #2):
// uncontended lock and unlock are one atomic instruction each, where absl::Mutex — as Debian builds
// it, without NDEBUG — spends over a hundred instructions per lock. Not recursive, not fair; a
// contended lock spins briefly, then sleeps in the kernel.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "pools/sys.h"

namespace dmashim {

// One round of waiting for another thread's short piece of work: a pause for the first `spins`
// rounds, then the CPU yielded (the other thread may need it).
inline void SpinOrYield(int round, int spins) {
  if (round < spins) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  } else {
    sched_yield();
  }
}

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

// A FutexLock biased to the thread that takes it most (a pool's allocating thread): while the bias
// stands, that thread's Lock() and Unlock() are plain stores — no atomic read-modify-write, which
// on a pool hit (two critical sections) cost a quarter of the hit. Any other thread's Lock() takes
// the futex lock and revokes the bias: it clears it, runs a HeavyBarrier() (membarrier: the owner's
// "I am inside" store, which it follows with only a compiler barrier, is then visible, or the
// owner sees the bias gone — an asymmetric Dekker), and waits for the owner to leave. The owner
// biases the lock to itself again after 8 futex acquisitions in a row by itself, and not within
// 1 ms of the last revocation — 2, 4 … up to 1,000 ms after each revocation by an application
// thread of a bias that served fewer than 1,024 acquisitions (back to 1 ms after one that served
// more): threads that alternate pay one barrier a second at most, and a thread that keeps the pool
// to itself between the maintenance thread's visits keeps its bias coming back.
// Without membarrier (EnableHeavyBarrier: an old kernel, valgrind, a process under a seccomp filter
// when the first bias is due), and under ThreadSanitizer (which cannot see the barrier), it is a
// FutexLock.
class ABSL_LOCKABLE BiasedLock {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    const uintptr_t self = ThreadTag();
    if (bias_.load(std::memory_order_relaxed) == self) {
      owner_in_.store(1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the revoker's membarrier is the rest
      if (bias_.load(std::memory_order_acquire) == self) {
        by_owner_ = true;
        ++served_;
        return;
      }
      owner_in_.store(0, std::memory_order_release);  // revoked meanwhile
    }
    LockSlow(self);
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (by_owner_) {
      by_owner_ = false;
      owner_in_.store(0, std::memory_order_release);
      return;
    }
    lock_.Unlock();
  }
  // For fork, in the child, by its only thread, which holds the lock (taken before the fork): drops
  // the bias, so that nothing in the child revokes it before the barrier is registered again.
  // Unlock() still releases the lock as it was taken.
  void DropBiasInForkChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    bias_.store(0, std::memory_order_relaxed);
    last_ = 0;
    run_ = 0;
  }
  // The calling thread never takes a bias: a helper thread (the pool maintenance thread) that
  // takes locks in runs of its own, which would otherwise win the bias and then have it revoked by
  // the thread the lock is for, with a barrier on the latter's path.
  static void NeverBiasThisThread() { t_never_bias = true; }
  // This lock is never biased (before any thread takes it).
  void DisallowBias() { biasable_ = false; }
  // For tests: whether the calling thread holds the bias; how many biases were revoked; whether
  // this build biases at all (not under ThreadSanitizer).
  bool BiasedToMe() const { return bias_.load(std::memory_order_relaxed) == ThreadTag(); }
  uint64_t revocations() const { return revocations_.load(std::memory_order_relaxed); }
  // Only while no thread takes the lock.
  uint64_t rebias_gap_ns() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return rebias_gap_ns_; }
  static constexpr bool Biasable() { return kBiasable; }

 private:
  static uintptr_t ThreadTag() { return reinterpret_cast<uintptr_t>(__builtin_thread_pointer()); }
  // Out of line: inlined, its frame (the registers it saves) would be paid by every biased Lock().
  __attribute__((noinline)) void LockSlow(uintptr_t self) ABSL_EXCLUSIVE_LOCK_FUNCTION()
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    lock_.Lock();
    if (bias_.load(std::memory_order_relaxed) != 0) {
      bias_.store(0, std::memory_order_relaxed);
      if (!HeavyBarrier()) {
        // A seccomp filter came since the bias, or the kernel refused (no lock is biased from now
        // on). The owner's store buffer drains within nanoseconds, and a switch away from its
        // thread is a full barrier: after a millisecond its "inside" store shows, or its next
        // Lock() saw the bias gone. Not a guarantee of the memory model, as the barrier is; the
        // last resort for the one revocation of each bias set before the filter.
        for (const uint64_t until = MonotonicNs() + 1'000'000; MonotonicNs() < until;) sched_yield();
      }
      // After 1,000 pauses the owner was preempted inside: the CPU is yielded to it.
      for (int spin = 0; owner_in_.load(std::memory_order_acquire) != 0; ++spin) {
        SpinOrYield(spin, 1000);
      }
      revoked_ns_ = MonotonicNs();
      revocations_.fetch_add(1, std::memory_order_relaxed);
      // An application thread paid for this revocation on its own path (≈ 10 µs): a bias that
      // served too little to be worth it waits twice as long before it comes back. The
      // maintenance thread's revocations leave the wait alone: they cost no application thread's
      // path, only the owner a stall when it is running then (29–41 µs here, the barrier's
      // interrupt in a VM; bench/RESULTS.md) — at most once a millisecond, against 20–40 ns the
      // bias saves on each of a busy owner's hits.
      if (served_ >= kServedWorth) {
        rebias_gap_ns_ = kMinRebiasGapNs;
      } else if (!t_never_bias) {
        rebias_gap_ns_ = std::min(rebias_gap_ns_ * 2, kMaxRebiasGapNs);
      }
    }
    if (last_ != self) {
      last_ = self;
      run_ = 1;
    } else if (++run_ % kRebiasAfter == 0 && kBiasable && biasable_ && !t_never_bias &&
               MonotonicNs() - revoked_ns_ >= rebias_gap_ns_ && EnableHeavyBarrier()) {
      served_ = 0;
      bias_.store(self, std::memory_order_relaxed);  // from this thread's next Lock()
    }
  }

#if defined(__SANITIZE_THREAD__)
  static constexpr bool kBiasable = false;
#else
  static constexpr bool kBiasable = true;
#endif
  static inline thread_local bool t_never_bias __attribute__((tls_model("initial-exec"))) = false;
  static constexpr uint32_t kRebiasAfter = 8;
  static constexpr uint64_t kMinRebiasGapNs = 1'000'000;
  static constexpr uint64_t kMaxRebiasGapNs = 1'000'000'000;
  static constexpr uint32_t kServedWorth = 1024;  // acquisitions ≈ one revocation's cost

  // The owner's fast path reads and writes only these (one line, its own while the bias stands).
  std::atomic<uintptr_t> bias_{0};     // the owner's ThreadTag(); 0: none
  std::atomic<uint32_t> owner_in_{0};  // 1 while the owner holds the lock by its bias
  bool by_owner_ = false;              // the holder took it by its bias (guarded by the lock)
  uint32_t served_ = 0;                // acquisitions by the bias since it was set
  // The rest is written under lock_ only.
  uintptr_t last_ = 0;  // the last thread that took lock_, and how many times in a row
  uint32_t run_ = 0;
  uint64_t revoked_ns_ = 0;  // when a bias was last revoked
  uint64_t rebias_gap_ns_ = kMinRebiasGapNs;  // no new bias sooner after a revocation
  bool biasable_ = true;
  std::atomic<uint64_t> revocations_{0};
  FutexLock lock_;
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

// Holds a FutexLock or a BiasedLock for a scope.
template <typename Lock>
class ABSL_SCOPED_LOCKABLE FutexLockGuard {
 public:
  explicit FutexLockGuard(Lock* l) ABSL_EXCLUSIVE_LOCK_FUNCTION(l) : l_(l) { l_->Lock(); }
  ~FutexLockGuard() ABSL_UNLOCK_FUNCTION() { l_->Unlock(); }
  FutexLockGuard(const FutexLockGuard&) = delete;
  FutexLockGuard& operator=(const FutexLockGuard&) = delete;

 private:
  Lock* l_;
};

}  // namespace dmashim
