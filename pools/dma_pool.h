// DmaPool: small fixed-size blocks with an alignment and a boundary no block crosses, carved from
// pages that come from a Mempool — after the kernel's mm/dmapool.c. Because the pages come from a
// mempool, a reserve there makes block allocation guaranteed in `block` mode.
//
// Pages are never returned to the Mempool before the DmaPool is destroyed (as in the kernel): a
// device may still address a block's page after the last block on it is freed.
#pragma once

#include <string.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <atomic>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "pools/lock.h"
#include "pools/mempool.h"
#include "pools/stats.h"

namespace dmashim {

inline constexpr size_t kDmaMinBlock = 16;

struct DmaPoolOptions {
  std::string name;
  size_t size = 0;      // bytes per block; rounded up to at least 16 and to a multiple of align
  size_t align = 16;    // power of two, ≤ the page size
  size_t boundary = 0;  // power of two ≥ the block size, or 0 = the page size; no block crosses it
};

// The kernel `pools` file's four figures.
struct DmaPoolInfo {
  size_t active_blocks = 0;
  size_t total_blocks = 0;
  size_t block_size = 0;
  size_t pages = 0;
};

class DmaPool {
 public:
  // Validates the options against `pages` (which must outlive this pool). Errors name the argument
  // and the rule it breaks (InvalidArgument).
  static absl::StatusOr<std::unique_ptr<DmaPool>> Create(DmaPoolOptions options, Mempool* pages,
                                                         PoolStats* stats = nullptr);
  // Returns every page to the Mempool. Blocks still in use are reported as a leak on stderr and
  // their pages are kept (never freed under a live block).
  ~DmaPool();

  DmaPool(const DmaPool&) = delete;
  DmaPool& operator=(const DmaPool&) = delete;

  // O(1) from the pool's free list. When it is empty a page is taken from the Mempool with
  // `policy` (default: the Mempool's), so this may block exactly as Mempool::Alloc does and fails
  // as it does (nullptr, *err = ENOMEM / EINTR / the source's errno).
  void* Alloc(int* err) {
    if (void* b = AllocFromCache()) return b;
    return AllocOutOfLine(nullptr, err);
  }
  void* Alloc(const WaitPolicy& policy, int* err) {
    if (void* b = AllocFromCache()) return b;
    return AllocOutOfLine(&policy, err);
  }

  // O(1). Returns false (and does nothing) for a pointer that is not a block of this pool, or one
  // that is already free (a double free).
  bool Free(void* block) {
    // The fast path, inline like DPDK's rte_mempool_put: this thread's cache for this pool, a
    // page it has seen (pages are never returned before the pool dies, so it is this pool's), no
    // thread waiting for a page (it must see the block: then it goes to the shared list), room in
    // the cache. Anything else takes the out-of-line path, which checks under the lock.
    Cache* c = t_dma_last_cache;
    const uintptr_t p = reinterpret_cast<uintptr_t>(block);
    const uintptr_t base = p & ~(page_size_ - 1);
    if (c != nullptr && c->pool_id == id_ && free_gate_.load(std::memory_order_relaxed) == 0 &&
        c->KnowsPage(base) && c->count < Cache::kCapacity) [[likely]] {
      if (!CanFree(block, p - base)) return false;
      PushToCache(c, block);
      return true;
    }
    return FreeOutOfLine(block);
  }

  // The figures and the stats record, with the per-thread caches folded in first.
  DmaPoolInfo info() const;
  const PoolStats& stats() const;
  size_t block_size() const { return block_size_; }
  size_t boundary() const { return boundary_; }

  // Folds the per-thread caches' counts into the stats record (the maintenance thread calls it
  // every tick, so the exporter sees current figures). Never blocks on a wait.
  void Fold() const;

  // fork(2) support, called by the pool registry's pthread_atfork handlers (lock order in
  // pools/maintenance.h): the pool's lock is held across fork. In the child the other threads'
  // caches are left as they were: their blocks stay allocated there, counted as active.
  void ForkPrepare();
  void ForkParent();
  void ForkChild();

  // Per-thread caches: like DPDK's per-lcore mempool cache, a thread allocates from and frees to a
  // small stack of its own without locks or shared writes, and trades blocks with the pool's list in
  // batches. A free block is recognised by a cookie in its second word (a double free is refused).
  // Only the owning thread touches `objs`, `count` and `pages`; `allocs` and `frees` are written by
  // it alone (plain stores) and read by Fold.
  struct Cache {
    static constexpr uint32_t kCapacity = 64;
    static constexpr uint32_t kBatch = 32;
    std::atomic<DmaPool*> pool;  // null once the pool is destroyed
    uint64_t pool_id;
    uint32_t count = 0;
    void* objs[kCapacity];
    uintptr_t pages[4] = {};  // pages of this pool seen by this thread: Free needs no lock for them
    uint32_t next_page = 0;
    std::atomic<uint64_t> allocs{0};
    std::atomic<uint64_t> frees{0};

    bool KnowsPage(uintptr_t base) const {
      return pages[0] == base || pages[1] == base || pages[2] == base || pages[3] == base;
    }
    void RememberPage(uintptr_t base) { pages[next_page++ & 3] = base; }
    // The thread's own counter. A relaxed load and store, not SingleWriterAdd's add to memory:
    // that read 3.10–3.13 against 3.02–3.11 ns (1 thread), 1.57–1.63 against 1.53–1.54 (2).
    static void Bump(std::atomic<uint64_t>& c) {
      c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
  };
  // The cache the calling thread used last (of whichever pool): one TLS load and a compare on the
  // fast paths.
  // Defined here, constant-initialized: every user reads it directly, with no TLS wrapper call.
  static inline thread_local Cache* t_dma_last_cache __attribute__((tls_model("initial-exec"))) =
      nullptr;

 private:
  DmaPool(DmaPoolOptions options, Mempool* pages, PoolStats* stats, size_t block_size,
          size_t boundary);
  // The start of the page holding `p`, or 0 when `p` is not in one of this pool's pages.
  uintptr_t PageOfLocked(uintptr_t p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `offset` into a page is where a block starts.
  bool IsBlockOffset(size_t offset) const {
    if (pow2_sizes_) {  // the common case (2 KiB blocks, 4 KiB boundary): masks, no division
      const size_t in_chunk = offset & (boundary_ - 1);
      return (in_chunk & (block_size_ - 1)) == 0 && in_chunk + block_size_ <= boundary_;
    }
    const size_t in_chunk = offset % boundary_;
    return in_chunk % block_size_ == 0 && in_chunk + block_size_ <= boundary_;
  }
  void CarveLocked(char* page) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uintptr_t Cookie(const void* b) const { return reinterpret_cast<uintptr_t>(b) ^ salt_; }
  // Word 1 of a free block (after the link in word 0) holds the cookie; an allocated block has
  // anything there but, with odds of 2^-64, the cookie.
  bool IsFree(const void* b) const {
    uintptr_t w;
    memcpy(&w, static_cast<const char*>(b) + sizeof(void*), sizeof w);
    return w == Cookie(b);
  }
  void MarkFree(void* b) const {
#ifndef NDEBUG
    PoisonFree(b);
#endif
    const uintptr_t c = Cookie(b);
    memcpy(static_cast<char*>(b) + sizeof(void*), &c, sizeof c);
  }
  void MarkAllocated(void* b) const {
#ifndef NDEBUG
    CheckPoisonAndMarkAllocated(b);  // a free block written to is reported; poisons it
#else
    const uintptr_t zero = 0;
    memcpy(static_cast<char*>(b) + sizeof(void*), &zero, sizeof zero);
#endif
  }
  void PoisonFree(void* b) const;
  void CheckPoisonAndMarkAllocated(void* b) const;
  // The allocation fast path: a block from this thread's cache for this pool, or nullptr.
  void* AllocFromCache() {
    Cache* c = t_dma_last_cache;
    if (c != nullptr && c->pool_id == id_ && c->count > 0) [[likely]] return PopFromCache(c);
    return nullptr;
  }
  // Takes the top block of `c`, which must not be empty.
  void* PopFromCache(Cache* c) const {
    void* b = c->objs[--c->count];
    MarkAllocated(b);
    Cache::Bump(c->allocs);
    return b;
  }
  // Whether `block`, at `offset` into a page of this pool, is a block start that is not already
  // free (false: not a block, or a double free).
  bool CanFree(const void* block, uintptr_t offset) const {
    return IsBlockOffset(offset) && !IsFree(block);
  }
  // Puts `block` (CanFree) on `c`, which must have room.
  void PushToCache(Cache* c, void* block) const {
    MarkFree(block);
    c->objs[c->count++] = block;
    Cache::Bump(c->frees);
  }
  void* AllocOutOfLine(const WaitPolicy* policy, int* err);  // null policy: the Mempool's
  bool FreeOutOfLine(void* block);
  uint32_t page_waiters() const { return free_gate_.load(std::memory_order_acquire) & kWaiterMask; }
  Cache* ThisThreadsCache();
  Cache* FindThreadsCache();
  void* AllocSlow(const WaitPolicy& policy, int* err, Cache* c);
  bool FreeSlow(void* block, Cache* c);
  void FlushLocked(Cache* c, size_t keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FoldLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DetachCache(Cache* c);
  friend struct DmaThreadCaches;

  // Read on every fast-path call: together, ahead of the rest.
  const uint64_t id_;      // never reused: a thread's cache slot names the pool by it
  const uintptr_t salt_;   // mixes the free-block cookie
  size_t page_size_;
  size_t block_size_;
  size_t boundary_;
  bool pow2_sizes_;  // block size and boundary are powers of two
  // Zero when frees may take the fast path. Low bits: threads waiting in pages_ for a new page;
  // kUnaligned: some page is not a naturally aligned power of two (a block's page cannot be found
  // by masking).
  static constexpr uint32_t kUnaligned = 1u << 31;
  static constexpr uint32_t kWaiterMask = kUnaligned - 1;
  std::atomic<uint32_t> free_gate_{0};

  DmaPoolOptions options_;
  Mempool* pages_;
  PoolStats own_stats_;
  PoolStats* stats_;

  mutable FutexLock mu_;
  struct FreeBlock {
    FreeBlock* next;
  };
  FreeBlock* free_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::btree_map<uintptr_t, bool> pages_by_addr_ ABSL_GUARDED_BY(mu_);
  std::vector<Cache*> caches_ ABSL_GUARDED_BY(mu_);
  // Counts made under mu_ (the list path); the caches keep their own and Fold adds them up.
  uint64_t list_allocs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t source_allocs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t list_frees_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> have_free_{false};     // free_ != nullptr, readable without mu_
  size_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dmashim
