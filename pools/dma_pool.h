// DmaPool: small fixed-size blocks with an alignment and a boundary no block crosses, carved from
// pages that come from a Mempool — after the kernel's mm/dmapool.c. Because the pages come from a
// mempool, a reserve there makes block allocation guaranteed in `block` mode.
//
// Pages are never returned to the Mempool before the DmaPool is destroyed (as in the kernel): a
// device may still address a block's page after the last block on it is freed.
#pragma once

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
  void* Alloc(int* err);
  void* Alloc(const WaitPolicy& policy, int* err);

  // O(1). Returns false (and does nothing) for a pointer that is not a live block of this pool.
  bool Free(void* block);

  DmaPoolInfo info() const;
  size_t block_size() const { return block_size_; }
  size_t boundary() const { return boundary_; }
  const PoolStats& stats() const { return *stats_; }

 private:
  struct Page {
    std::vector<uint64_t> live;  // one bit per block slot: handed out
  };

  DmaPool(DmaPoolOptions options, Mempool* pages, PoolStats* stats, size_t block_size,
          size_t boundary);
  // The page holding `p` and the block's slot index, or nullptr when `p` is not a block start.
  Page* FindBlockLocked(uintptr_t p, size_t* slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t SlotOf(size_t offset) const;
  void CarveLocked(char* page) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DmaPoolOptions options_;
  Mempool* pages_;
  size_t block_size_;
  size_t boundary_;
  PoolStats own_stats_;
  PoolStats* stats_;

  mutable FutexLock mu_;
  struct FreeBlock {
    FreeBlock* next;
  };
  FreeBlock* free_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::btree_map<uintptr_t, Page> pages_by_addr_ ABSL_GUARDED_BY(mu_);
  size_t active_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> have_free_{false};     // free_ != nullptr, readable without mu_
  std::atomic<int> page_waiters_{0};       // threads waiting in pages_ for a new page
  size_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dmashim
