// The shim's process-wide state: the configuration, the pools built from it, the regions handed out
// from pools, and the routing and guarded-call logic every hook uses. Hooks live in interpose.cc;
// this file knows nothing of symbol interposition.
#pragma once

#include <sys/types.h>

#include <errno.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pools/lock.h"
#include "pools/dma_pool.h"
#include "pools/mempool.h"
#include "pools/page_source.h"
#include "shim/config.h"
#include "shim/stats_segment.h"

namespace dmashim {

// One configured pool (or the stats-only "default" record for guarded calls no pool matches).
struct PoolEntry {
  PoolConfig cfg;
  std::unique_ptr<Mempool> pool;  // null for the default record
  PoolStats* stats = nullptr;
  int index = 0;  // position in the stats segment
  // Notified by NotifyFreed: a guarded wait (Runtime::WaitLoop) sleeps on it between retries, so
  // memory this process frees wakes it at once; memory other processes free is seen by polling.
  WakeSeq freed;
};

// The calling thread's scope (dmashim_scope_begin); null when none.
extern constinit thread_local const WaitPolicy* t_scope_policy
    __attribute__((tls_model("initial-exec")));
// Set while the start-up self-check probes the hooks (Runtime::ReportHookSelfCheck).
extern constinit thread_local bool t_hook_probe __attribute__((tls_model("initial-exec")));

// Memory that `entry`'s guarded waits may be waiting for was freed in this process (a CUDA block
// released, an RDMA registration dropped): they retry now instead of at their next poll.
void NotifyFreed(PoolEntry* entry);

// Hook families, for the self-check and the per-family switches.
enum class Family : int { kMmap = 0, kShm = 1, kMlock = 2, kCuda = 3, kIbverbs = 4 };
inline constexpr int kFamilies = 5;

// Outcome of a guarded call, for the caller to return.
struct Guarded {
  bool ok = false;
  int err = 0;
};

class Runtime {
 public:
  // The runtime once initialized; nullptr before (and while) initialization runs, in which case
  // hooks pass everything through.
  static Runtime* Get() { return ready_.load(std::memory_order_acquire) ? instance_ : nullptr; }
  // Initializes once (constructor, or the first hook that needs it). Thread-safe; a call that
  // races with a running initialization returns at once and the caller passes through.
  static Runtime* Init();

  const Config& config() const { return config_; }
  bool intercepts(Family f) const { return intercept_[static_cast<int>(f)]; }

  // --- mmap family ---
  // Anonymous MAP_HUGETLB request. Returns the element (served from a pool), or nullptr with
  // *handled = false when the request is not one a pool can serve (the caller then makes the
  // guarded real call). `caller` is the return address in the application.
  void* MmapFromPool(size_t len, int prot, int flags, const void* caller, bool* handled, int* err);
  // Which pool guards a huge-page call of this shape (page size from flags or fd), or the default
  // record. Never null.
  PoolEntry* RouteHuge(Family family, size_t page_size, bool shared, const void* caller);
  // Frees a pooled region when [addr, addr+len) is exactly one element; lets go of elements the
  // range only partly covers and evicts free elements it overlaps. Returns true when the region
  // went back to its pool (the caller must not call the real munmap then). For a range
  // MaybePooled() admits: the munmap hook has asked it already, on the way past every other unmap.
  bool OnMunmap(void* addr, size_t len);
  // mremap / madvise / MAP_FIXED over tracked or pooled-free memory: drop or evict first.
  void ReleaseRange(void* addr, size_t len);
  void OnMprotect(void* addr, size_t len, int prot);
  // False when no pool can hold any of [addr, addr+len): lock-free, asked on every munmap.
  bool MaybePooled(const void* addr, size_t len) const {
    uintptr_t lo, hi;
    MappedAddressHull(&lo, &hi);
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    return hi != 0 && a < hi && a + len > lo;
  }

  // Runs `call` (returns true on success, errno on failure) under `entry`'s policy: on a shortage
  // (ENOMEM, EAGAIN, ENOSPC, EPERM) free elements of the entry's pool are released to the kernel
  // and the call retried; then fail-fast fails, block and timeout wait in rounds. Records the
  // outcome in the entry's stats.
  template <typename Call>
  Guarded Guard(PoolEntry* entry, size_t bytes, Call&& call);

  // The policy for an intercepted call: the thread's scope if one is set, else the pool's.
  const WaitPolicy& PolicyFor(const PoolEntry* entry) const {
    return t_scope_policy != nullptr ? *t_scope_policy : entry->cfg.policy;
  }

  // --- pinned ---
  PoolEntry* RoutePinned(const void* caller);
  // The pool for a CUDA or ibverbs call (match.call = "cuda" / "ibverbs"), else the default
  // record. Such pools hold no Mempool: shim/cuda.cc and shim/ibverbs.cc keep their own state and
  // write the pool's stats record.
  PoolEntry* RouteDevice(CallFamily call, const void* caller);

  // --- C API ---
  PoolEntry* FindPool(const char* name);

  // Counts a pass-through call (when count_passthrough) — index into the segment's call table.
  void CountPassthrough(PassCall call);
  // Records that a hook of family `f` ran, while the self-check probes (one thread-local test else).
  void NoteHookFired(Family f) {
    if (__builtin_expect(t_hook_probe, false)) NoteProbeFired(f);
  }
  void ReportHookSelfCheck();
  static void NoteProbeFired(Family f);
  void PrintSummary(int fd) const;

  std::vector<std::unique_ptr<PoolEntry>>& entries() { return entries_; }

 private:
  Runtime() = default;
  void Setup();
  PoolEntry* AddEntry(PoolConfig cfg);
  bool CallerMatches(const PoolConfig& cfg, const void* caller) const;
  Guarded WaitLoop(PoolEntry* entry, size_t bytes, const WaitPolicy& policy, int first_err,
                   bool (*retry)(void*), void* ctx);

  static std::atomic<bool> ready_;
  static Runtime* instance_;

  Config config_;
  bool intercept_[kFamilies] = {true, true, true, true, true};
  bool any_caller_match_ = false;
  std::vector<std::unique_ptr<PoolEntry>> entries_;
  PoolEntry* default_entry_ = nullptr;

  // RouteHuge's answer for anonymous mmap calls when no pool matches on the caller (the answer then
  // depends only on the page size and sharing): [1 GiB page][shared]. Filled once by Setup.
  PoolEntry* mmap_route_[2][2] = {};
  // The regions handed out from pools are tracked by the pools themselves (Mempool::AllocRegion):
  // map and unmap take one lock, the pool's.
};


// Adapts a lambda to the C-style retry callback of WaitLoop.
template <typename Call>
Guarded Runtime::Guard(PoolEntry* entry, size_t bytes, Call&& call) {
  struct Ctx {
    Call* call;
  } ctx{&call};
  auto thunk = [](void* c) -> bool { return (*static_cast<Ctx*>(c)->call)(); };
  if (call()) {
    entry->stats->alloc_source.fetch_add(1, std::memory_order_relaxed);
    return {true, 0};
  }
  const int e = errno;
  return WaitLoop(entry, bytes, PolicyFor(entry), e, thunk, &ctx);
}

}  // namespace dmashim
