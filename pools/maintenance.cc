#include "pools/maintenance.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "pools/dma_pool.h"
#include "pools/lock.h"
#include "pools/mempool.h"
#include "pools/sys.h"

namespace dmashim {
namespace {

struct Registry {
  absl::Mutex mu;  // held while the maintenance thread works on a pool, and across fork
  std::vector<Mempool*> pools ABSL_GUARDED_BY(mu);
  std::vector<DmaPool*> dma_pools ABSL_GUARDED_BY(mu);
  std::vector<FutexLock*> outer_locks ABSL_GUARDED_BY(mu);  // held across fork, see maintenance.h
  std::vector<FutexLock*> leaf_locks ABSL_GUARDED_BY(mu);
  std::function<void()> hook;
  // Bumped by WakeMaintenance. The thread sleeps on it announced (a kick wakes it) after a quiet
  // while, unannounced while polling (only an urgent kick makes the system call then).
  WakeSeq kick;
  std::atomic<bool> started{false};
  std::atomic<bool> forked{false};  // this process is a fork child of a process with pools
  std::atomic<int> running{0};
  std::atomic<uint64_t> spun_ns{0};  // time spent watching `kick` on the CPU
};

Registry& Reg() {
  static Registry* r = new Registry;  // never destroyed: pools may outlive static destructors
  return *r;
}

constexpr int64_t kTickNs = 100'000'000;
constexpr int64_t kPollNs = 1'000'000;
constexpr uint64_t kSpinNs = 100'000;
constexpr uint64_t kMinSpinNs = 5'000;
constexpr int kPollRounds = 200;  // 200 ms of polling after the last piece of work
constexpr size_t kStackBytes = 256 << 10;

void* ThreadMain(void*) {
  Registry& r = Reg();
  BiasedLock::NeverBiasThisThread();  // the pools' locks are the allocating threads'
  r.running.fetch_add(1);
  int idle_polls = kPollRounds;
  uint64_t spin_until = 0;
  // How long to watch `kick` after work: doubled (up to kSpinNs) after a watch that a request
  // ended, halved (down to kMinSpinNs) after one that saw none — a program whose requests come
  // further apart than that does not keep a core spinning for nothing.
  uint64_t spin_ns = kSpinNs;
  for (;;) {
    uint32_t seen = r.kick.Seen();
    bool busy = false;
    {
      absl::MutexLock l(&r.mu);
      for (Mempool* p : r.pools) busy |= p->Maintain();
      for (DmaPool* d : r.dma_pools) d->Fold();
    }
    if (r.hook) r.hook();
    if (busy) {
      idle_polls = 0;
      spin_until = MonotonicNs() + spin_ns;
    } else if (MonotonicNs() < spin_until) {
      // Just after work, watch `kick` on the CPU for a short while before sleeping: a thread that
      // zeroes an element asks for help (Mempool::ZeroShared) and needs it within microseconds,
      // and waking a sleeping thread on an idle (virtual) CPU takes tens of them.
      const uint64_t spin_start = MonotonicNs();
      while (r.kick.Seen() == seen && MonotonicNs() < spin_until) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      r.spun_ns.fetch_add(MonotonicNs() - spin_start, std::memory_order_relaxed);
      if (r.kick.Seen() != seen) {
        spin_ns = std::min(spin_ns * 2, kSpinNs);
      } else {
        spin_ns = std::max(spin_ns / 2, kMinSpinNs);
        spin_until = 0;
      }
    } else if (idle_polls < kPollRounds) {
      // Recently busy: poll every millisecond for a while instead of sleeping until woken, so
      // the frees of a busy program queue dirty elements without a wake-up system call each.
      ++idle_polls;
      r.kick.Poll(seen, kPollNs);
    } else {
      if (r.kick.Wait(seen, kTickNs) == 0) idle_polls = 0;
    }
  }
  return nullptr;
}

void StartThread() {
  Registry& r = Reg();
  bool expected = false;
  if (!r.started.compare_exchange_strong(expected, true)) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // the new thread inherits the full mask
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  // A small stack instead of glibc's default (RLIMIT_STACK, 8 MiB here): the thread's work is flat
  // (pool upkeep, control requests, the watchdog line), and its stack is address space the
  // application did not ask for — mlockall(MCL_CURRENT) is refused when the whole address space
  // exceeds RLIMIT_MEMLOCK, and with CAP_IPC_LOCK it would pin all of it.
  pthread_attr_setstacksize(&attr, kStackBytes);
  if (pthread_create(&t, &attr, ThreadMain, nullptr) == 0) {
    pthread_setname_np(t, "dmashim-maint");
  } else {
    r.started.store(false);
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// The lock order of maintenance.h, taken before fork and released after it in both processes.
void AtforkPrepare() {
  Registry& r = Reg();
  r.mu.Lock();
  for (FutexLock* l : r.outer_locks) l->Lock();
  for (DmaPool* d : r.dma_pools) d->ForkPrepare();
  for (Mempool* p : r.pools) p->ForkPrepare();
  for (FutexLock* l : r.leaf_locks) l->Lock();
}
void AtforkParent() {
  Registry& r = Reg();
  for (FutexLock* l : r.leaf_locks) l->Unlock();
  for (Mempool* p : r.pools) p->ForkParent();
  for (DmaPool* d : r.dma_pools) d->ForkParent();
  for (FutexLock* l : r.outer_locks) l->Unlock();
  r.mu.Unlock();
}
void AtforkChild() {
  Registry& r = Reg();
  HeavyBarrierForkChild();
  for (FutexLock* l : r.leaf_locks) l->Unlock();
  for (Mempool* p : r.pools) p->ForkChild();
  for (DmaPool* d : r.dma_pools) d->ForkChild();
  for (FutexLock* l : r.outer_locks) l->Unlock();
  // The maintenance thread does not exist in the child; the next request starts a new one.
  r.started.store(false);
  r.forked.store(true);
  r.running.store(0);
  r.mu.Unlock();
}

void InstallForkHandlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Debian's Abseil is built without NDEBUG, so every Mutex::Lock would feed a lock-order graph
    // (GraphCycles) — about half of a pool hit's instructions. The pools' lock order is fixed and
    // small (maintenance.h); the checker buys nothing here.
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild);
  });
}

}  // namespace

void HoldAcrossFork(FutexLock* lock, ForkLockOrder order) {
  InstallForkHandlers();
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  std::vector<FutexLock*>& locks = order == ForkLockOrder::kOuter ? r.outer_locks : r.leaf_locks;
  if (std::find(locks.begin(), locks.end(), lock) == locks.end()) locks.push_back(lock);
}

void RegisterPool(Mempool* pool) {
  InstallForkHandlers();
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  r.pools.push_back(pool);
}

void UnregisterPool(Mempool* pool) {
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  std::erase(r.pools, pool);
}

void RegisterDmaPool(DmaPool* pool) {
  Registry& r = Reg();
  {
    absl::MutexLock l(&r.mu);
    r.dma_pools.push_back(pool);
  }
  WakeMaintenance();  // so the figures keep up even when the caches never touch the shared list
}

void UnregisterDmaPool(DmaPool* pool) {
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  std::erase(r.dma_pools, pool);
}

void WakeMaintenance(bool now) {
  Registry& r = Reg();
  if (!r.started.load(std::memory_order_acquire)) {
    // Help with a zeroing is optional (the caller zeroes alone without it): a fork child, which
    // often only execs, gets no thread started for it.
    if (now && r.forked.load(std::memory_order_relaxed)) return;
    StartThread();
  }
  // Only a sleeping thread needs the system call; a busy one re-reads `kick` before it sleeps, and
  // a polling one looks again within a millisecond unless the request is urgent.
  r.kick.Notify(1, /*force=*/now);
}

void SetMaintenanceHook(std::function<void()> hook) { Reg().hook = std::move(hook); }

int MaintenanceThreadsRunning() { return Reg().running.load(); }

uint64_t MaintenanceSpinNs() { return Reg().spun_ns.load(std::memory_order_relaxed); }

}  // namespace dmashim
