// The process's one maintenance thread and the registry of live pools.
//
// Background zeroing and reserve top-ups run here, on a single thread started lazily the first time
// a pool asks for it, with every signal blocked (applications assume they know which threads take
// their signals). The registry also installs the pthread_atfork handlers that keep fork(2) children
// consistent: free reserve elements are not inherited, handed-out elements are.
#pragma once

#include <functional>

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
// lock held (it takes no pool lock and makes no allocation once the thread runs).
void WakeMaintenance();

// Extra periodic work (the shim's watchdog and control requests); run on the maintenance thread
// every tick (≈ 100 ms) and after each wake-up. Set once, before the thread starts.
void SetMaintenanceHook(std::function<void()> hook);

// Number of maintenance threads running in this process (0 or 1); for tests.
int MaintenanceThreadsRunning();

}  // namespace dmashim
