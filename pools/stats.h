// Per-pool statistics record. The pools update it themselves with relaxed atomics; readers (the
// shim's exit summary, the exporter through the stats segment) load it without locks.
//
// The layout is part of the stats-segment ABI: fixed-size, no pointers, only lock-free 64-bit
// atomics, so a record can live in a shared-memory file and be read by another process. Bump
// kPoolStatsVersion whenever a field is added, removed or moved.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/base/config.h"

namespace dmashim {

inline constexpr uint32_t kPoolStatsVersion = 2;

// Upper bounds (inclusive) of the wait-time histogram, in nanoseconds; a last implicit bucket
// holds everything above (+Inf).
inline constexpr uint64_t kWaitBucketBoundsNs[] = {
    10'000,      100'000,     1'000'000,     5'000'000,     10'000'000,
    50'000'000,  100'000'000, 250'000'000,   500'000'000,   1'000'000'000,
    2'500'000'000, 5'000'000'000, 10'000'000'000, 30'000'000'000};
inline constexpr size_t kWaitBuckets = std::size(kWaitBucketBoundsNs) + 1;

// Slots recording when the currently blocked threads started waiting (monotonic ns, 0 = free),
// so a reader can compute the longest current wait. More waiters than slots are still counted in
// blocked_now; only their start times are not kept.
inline constexpr size_t kWaiterSlots = 16;

inline constexpr size_t kPoolNameMax = 48;

enum class PoolKind : uint32_t { kMempool = 1, kDmaPool = 2 };

using Counter = std::atomic<uint64_t>;
using Gauge = std::atomic<int64_t>;

// Adds `n` (mod 2^64) to a counter that only one thread writes at a time (under a lock, or a
// thread's own): no locked add. On x86-64 it is one add to memory — its aligned 8-byte store is
// atomic, so a reader's relaxed load sees the old count or the new one; the relaxed load and store
// GCC emits otherwise cost a bare Mempool Alloc + Free 0.6–1 ns, figure 6's whole budget. TSan
// builds keep the atomic load and store, which it checks.
inline void SingleWriterAdd(Counter& c, uint64_t n) {
#if defined(__x86_64__) && !defined(ABSL_HAVE_THREAD_SANITIZER)
  static_assert(sizeof(Counter) == sizeof(uint64_t) && alignof(Counter) == alignof(uint64_t));
  asm volatile("addq %1, %0" : "+m"(*reinterpret_cast<uint64_t*>(&c)) : "er"(n));
#else
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
#endif
}

struct alignas(64) PoolStats {
  // Identity, written once when the pool is created.
  char name[kPoolNameMax];
  uint32_t kind;          // PoolKind
  uint32_t mode;          // dmashim::Mode at creation
  uint64_t element_size;  // bytes per element (DmaPool: bytes per block)

  // Allocations by result: served by the source at once, from the pool's own free elements, or
  // after a wait.
  Counter alloc_source;
  Counter alloc_reserve;
  Counter alloc_waited;
  // Failures by reason.
  Counter fail_fast;         // mode fail-fast, nothing available
  Counter fail_timeout;      // mode timeout:<d>, bound reached
  Counter fail_interrupted;  // interruptible wait ended by a signal
  Counter fail_source;       // the source failed with an error waiting cannot fix (EINVAL, EPERM…)
  Counter frees;

  // Wait-time histogram (non-cumulative buckets; see kWaitBucketBoundsNs).
  Counter wait_buckets[kWaitBuckets];
  Counter wait_count;
  Counter wait_sum_ns;

  // The source allocator (the kernel): calls, time spent, failures, elements given back.
  Counter source_calls;
  Counter source_ns;
  Counter source_failures;
  Counter source_releases;

  // Gauges.
  Gauge blocked_now;             // threads waiting in this pool right now
  Gauge reserve_target;          // configured reserve (min_nr)
  Gauge reserve_level;           // free elements held by the pool now
  Gauge elements_total;          // elements held (free + in use)
  Gauge in_use;                  // elements handed out
  Gauge bytes_in_use;            // in_use * element_size
  Gauge requested_bytes_in_use;  // what callers asked for; bytes_in_use minus this is waste
  Gauge high_water;              // peak of in_use

  // DmaPool figures, as the kernel's `pools` file has them (zero for a Mempool).
  Gauge dma_active_blocks;
  Gauge dma_total_blocks;
  Gauge dma_pages;

  Counter waiter_start_ns[kWaiterSlots];

  // How the use gauges are kept (written when the record is bound to its pool). With
  // kStatsDerivedUse — a Mempool's record — the pool's hit and free paths write only their counter:
  // in_use, bytes_in_use, requested_bytes_in_use and reserve_level above stay 0 and readers derive
  // them (InUse, BytesInUse, RequestedBytesInUse, ReserveLevel below) from alloc_reserve, frees,
  // use_base and waste_bytes, which the pool keeps exact at every instant it lets go of its lock.
  // Without it (DmaPool, the CUDA caching pool) the four fields hold the values themselves.
  uint32_t flags;
  uint32_t reserved0;
  Gauge use_base;     // in_use − (alloc_reserve − frees)
  Gauge waste_bytes;  // bytes_in_use − requested_bytes_in_use
};

inline constexpr uint32_t kStatsDerivedUse = 1;

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<PoolStats>);
static_assert(sizeof(PoolStats) % 64 == 0);

// The derived gauges are computed in unsigned arithmetic, which wraps: a reader may be handed a
// damaged or forged segment (the exporter reads any file in the run directory), and its fields
// must not make the arithmetic undefined.
inline int64_t Wrap(uint64_t v) { return static_cast<int64_t>(v); }
inline uint64_t Bits(const Gauge& g, std::memory_order order = std::memory_order_relaxed) {
  return static_cast<uint64_t>(g.load(order));
}

// Elements handed out now. Derived (kStatsDerivedUse): the pool counts every element it hands out
// from its free list in alloc_reserve and every one it takes back in frees, and use_base holds the
// rest (elements from the source or after a wait, regions forgotten; alloc_source and alloc_waited
// also count calls the shim passed to the kernel, which are not the pool's elements). The frees
// are read before the allocations, so a reader racing the pool sees at most the allocations made
// meanwhile; a derived count below zero (a damaged record) reads as zero.
inline int64_t InUse(const PoolStats& s) {
  if ((s.flags & kStatsDerivedUse) == 0) return s.in_use.load(std::memory_order_relaxed);
  const uint64_t frees = s.frees.load(std::memory_order_acquire);
  const uint64_t allocs = s.alloc_reserve.load(std::memory_order_acquire);
  const int64_t n = Wrap(Bits(s.use_base, std::memory_order_acquire) + allocs - frees);
  return n > 0 ? n : 0;
}

inline int64_t BytesInUse(const PoolStats& s) {
  if ((s.flags & kStatsDerivedUse) == 0) return s.bytes_in_use.load(std::memory_order_relaxed);
  return Wrap(static_cast<uint64_t>(InUse(s)) * s.element_size);
}

inline int64_t RequestedBytesInUse(const PoolStats& s) {
  if ((s.flags & kStatsDerivedUse) == 0) {
    return s.requested_bytes_in_use.load(std::memory_order_relaxed);
  }
  return Wrap(static_cast<uint64_t>(BytesInUse(s)) - Bits(s.waste_bytes));
}

// Free elements held: zeroed, waiting to be zeroed, or being zeroed. Derived, it is read in two
// parts (elements_total, then InUse) that a pool mapping a new element for a caller moves
// together: a reader between them could find one more in use than held, which reads as zero free.
inline int64_t ReserveLevel(const PoolStats& s) {
  if ((s.flags & kStatsDerivedUse) == 0) return s.reserve_level.load(std::memory_order_relaxed);
  const int64_t n = Wrap(Bits(s.elements_total) - static_cast<uint64_t>(InUse(s)));
  return n > 0 ? n : 0;
}

// Index of the histogram bucket for a wait of `ns` nanoseconds.
inline size_t WaitBucketFor(uint64_t ns) {
  size_t i = 0;
  while (i < std::size(kWaitBucketBoundsNs) && ns > kWaitBucketBoundsNs[i]) ++i;
  return i;
}

// Sets the identity fields and zeroes every counter. Not thread-safe: call before the record is
// shared.
void InitPoolStats(PoolStats* s, const char* name, PoolKind kind, uint32_t mode,
                   uint64_t element_size);

// Records a wait of `ns` nanoseconds in the histogram.
inline void RecordWait(PoolStats* s, uint64_t ns) {
  s->wait_buckets[WaitBucketFor(ns)].fetch_add(1, std::memory_order_relaxed);
  s->wait_count.fetch_add(1, std::memory_order_relaxed);
  s->wait_sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

// A thread starts waiting in the pool: counts it in blocked_now and records its start time in a
// free waiter slot. Returns the slot, or -1 when all are taken (the wait still counts).
inline int BeginWait(PoolStats* s, uint64_t start_ns) {
  s->blocked_now.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kWaiterSlots; ++i) {
    uint64_t zero = 0;
    if (s->waiter_start_ns[i].compare_exchange_strong(zero, start_ns, std::memory_order_relaxed)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

// The matching end of BeginWait: frees the slot, uncounts the thread and records the wait of
// `waited_ns` in the histogram.
inline void EndWait(PoolStats* s, int slot, uint64_t waited_ns) {
  if (slot >= 0) s->waiter_start_ns[slot].store(0, std::memory_order_relaxed);
  s->blocked_now.fetch_sub(1, std::memory_order_relaxed);
  RecordWait(s, waited_ns);
}

// Raises high_water to at least `v`.
inline void RaiseHighWater(PoolStats* s, int64_t v) {
  int64_t cur = s->high_water.load(std::memory_order_relaxed);
  while (v > cur && !s->high_water.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace dmashim
