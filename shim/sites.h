// Call sites, the watchdog and control requests: the shim's slow-path telemetry (DESIGN §7).
//
// A slow path (a wait, a failure, a source call slower than slow_source_ns) captures the
// application's stack with libunwind — never on a pool hit, never under a pool lock — and files it
// in the stats segment's call-site table. A thread that starts waiting registers in a small table
// the maintenance thread scans: a wait longer than its pool's `watchdog` prints one line naming the
// pool, the time waited and the symbolized call site (dladdr, on the maintenance thread). The same
// thread answers `dmashim ctl` requests (resize) written into the segment.
#pragma once

#include <cstdint>

#include "pools/mempool.h"

namespace dmashim {

struct PoolEntry;

// Once, at start-up, after the stats segment is open and before any pool exists: finds the shim's
// own text (frames there are skipped), warms libunwind up, installs the maintenance hook, and
// starts the maintenance thread when there is a segment (so control requests are answered).
// Takes no pool lock; may allocate.
void SitesInit(bool start_thread);

// A slow-path event of `entry` (PoolEntry of the runtime), on the allocating thread, outside every
// pool lock. kWaitBegin must be followed by kWaitEnd on the same thread. Never throws; does not
// allocate (unwinding may, under the shim's recursion guard).
void SitesEvent(PoolEntry* entry, SlowPath what, uint64_t ns, int err);

// Adapter for MempoolOptions::observer, with observer_ctx = the pool's PoolEntry.
void SitesObserver(void* ctx, const Mempool& pool, SlowPath what, uint64_t ns, int err);

}  // namespace dmashim
