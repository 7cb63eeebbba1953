// The process's one maintenance thread and the registry of live pools.
//
// Background zeroing and reserve top-ups run here, on a single thread started lazily the first time
// a pool asks for it, with every signal blocked (applications assume they know which threads take
// their signals). The registry also installs the pthread_atfork handlers that keep fork(2) children
// consistent: free reserve elements are not inherited, handed-out elements are, and no lock is
// inherited held by a thread that does not exist in the child.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "pools/lock.h"

namespace dmashim {

class Mempool;
class DmaPool;

// Adds / removes a pool. Unregister waits until the maintenance thread is not working on it.
void RegisterPool(Mempool* pool);
void UnregisterPool(Mempool* pool);

// Adds / removes a DmaPool whose per-thread counts are folded into its stats record every tick.
void RegisterDmaPool(DmaPool* pool);
void UnregisterDmaPool(DmaPool* pool);

// Asks the maintenance thread to run soon (starting it if needed). Cheap; callable with a pool
// lock held (it takes no pool lock and makes no allocation once the thread runs). With `now`, a
// thread polling between recent pieces of work is woken too (a system call): for work that is
// waited on (a zeroing job to help with), where "within a millisecond" is too late; such a wake
// does not start the thread in a fork child.
void WakeMaintenance(bool now = false);

// Extra periodic work (the shim's watchdog and control requests); run on the maintenance thread
// every tick (≈ 100 ms) and after each wake-up. Set once, before the thread starts.
void SetMaintenanceHook(std::function<void()> hook);

// Number of maintenance threads running in this process (0 or 1); for tests.
int MaintenanceThreadsRunning();
// Time the maintenance thread has spent watching for requests on the CPU after its work; for
// tests.
uint64_t MaintenanceSpinNs();

// fork(2) and locks. A child has only the forking thread, so a lock another thread held at the
// fork would stay locked in the child for ever. The registry's pthread_atfork handlers therefore
// take every lock below before fork and release them after it, in parent and child, in this order
// (which is also the order any thread that holds several of them must take them in):
//
//   registry lock → kOuter locks → each DmaPool's lock → each Mempool's lock → kLeaf locks
//
// The pools' own locks are taken through the pools (DmaPool/Mempool::ForkPrepare); other locks
// are registered here. A kOuter lock may be held while taking pool locks, never while taking the
// registry lock (the DmaPools' thread-cache lock). A kLeaf lock guards its owner's data only: no
// pool, registry or other registered lock is taken while it is held (the CUDA block cache, the
// RDMA registration table). The regions the shim hands out live in the Mempools' element tables.
enum class ForkLockOrder { kOuter, kLeaf };
// Registers `lock` for the rest of the process (it must never be destroyed); registering it again
// does nothing. Takes the registry lock: never call it with a pool lock or a registered lock held.
// Not from a function-local static's initializer: a fork while it waits for the registry lock
// (which the fork's handlers hold) would leave that initialization in progress in the child, and
// the child's first caller waiting on it for ever. In a fork child the handlers run
// after those registered with pthread_atfork before the first call here or to RegisterPool.
void HoldAcrossFork(FutexLock* lock, ForkLockOrder order);
// HoldAcrossFork for a lock registered on first use, made cheap after that: `held` (a namespace-scope
// flag beside the lock, never a function-local static — see above) skips the registry lock once set.
inline void HoldAcrossForkOnce(FutexLock* lock, ForkLockOrder order, std::atomic<bool>* held) {
  if (held->load(std::memory_order_acquire)) return;
  HoldAcrossFork(lock, order);
  held->store(true, std::memory_order_release);
}

}  // namespace dmashim
