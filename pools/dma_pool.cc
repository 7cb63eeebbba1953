#include "pools/dma_pool.h"

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "pools/maintenance.h"

namespace dmashim {
namespace {

#ifndef NDEBUG
constexpr unsigned char kPoisonFree = 0xa7;       // as the kernel's POOL_POISON_FREED
constexpr unsigned char kPoisonAllocated = 0xa9;  // as the kernel's POOL_POISON_ALLOCATED
#endif

bool IsPow2(size_t v) { return v != 0 && std::has_single_bit(v); }

// A free block's first bytes link it to the next. Blocks are only `align`-aligned (4 bytes for
// align = 4, size = 20), so the link is copied, never accessed as an 8-byte-aligned object.
template <typename T>
T* NextFree(const T* block) {
  T* next;
  memcpy(&next, block, sizeof next);
  return next;
}
template <typename T>
void SetNextFree(T* block, T* next) {
  memcpy(block, &next, sizeof next);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DmaPool>> DmaPool::Create(DmaPoolOptions o, Mempool* pages,
                                                         PoolStats* stats) {
  if (pages == nullptr) return absl::InvalidArgumentError("dma pool needs a page mempool");
  const size_t page = pages->element_size();
  if (o.name.empty() || o.name.size() >= kPoolNameMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("dma pool name must be 1..", kPoolNameMax - 1, " bytes"));
  }
  if (o.size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dma pool ", o.name, ": size must be > 0"));
  }
  // Every page starts on a multiple of the source's page size (4 KiB for an anonymous or pinned
  // element of 64 KiB), not of the element size: that is all the alignment carving can build on.
  const size_t page_align = std::min(page, SourcePageSize(pages->options().source.kind));
  if (o.align == 0) o.align = 1;
  if (!IsPow2(o.align) || o.align > page_align) {
    return absl::InvalidArgumentError(absl::StrCat("dma pool ", o.name, ": align ", o.align,
                                                   " must be a power of two no larger than the ",
                                                   page_align, "-byte alignment of its pages"));
  }
  size_t block = std::max(o.size, kDmaMinBlock);
  block = (block + o.align - 1) & ~(o.align - 1);
  if (block > page) {
    return absl::InvalidArgumentError(absl::StrCat("dma pool ", o.name, ": block size ", block,
                                                   " exceeds the ", page, "-byte page"));
  }
  // No boundary: blocks only stay inside their page (which need not be a power of two).
  size_t boundary = page;
  if (o.boundary != 0) {
    if (!IsPow2(o.boundary) || o.boundary < block) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dma pool ", o.name, ": boundary ", o.boundary,
          " must be a power of two no smaller than the ", block, "-byte block"));
    }
    // A boundary is absolute: chunks carved from the page start line up with it only when the
    // start is aligned to it (or the page is one aligned source page, which nothing can cross).
    if (o.boundary > page_align && page != page_align) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dma pool ", o.name, ": boundary ", o.boundary, " exceeds the ", page_align,
          "-byte alignment of its ", page, "-byte pages"));
    }
    boundary = std::min(o.boundary, page);
  }
  return std::unique_ptr<DmaPool>(new DmaPool(std::move(o), pages, stats, block, boundary));
}


namespace {
std::atomic<uint64_t> g_next_pool_id{1};
// Orders a thread's exit against its pools' destruction. Taken before a pool's lock (DetachCache),
// so it is held across fork ahead of the pools' locks (pools/maintenance.h).
FutexLock g_cache_mu;
std::atomic<bool> g_cache_mu_held{false};  // registered with HoldAcrossFork
}  // namespace

// The calling thread's caches, one slot per pool it uses (up to kSlots; more pools go without).
struct DmaThreadCaches {
  static constexpr int kSlots = 8;
  DmaPool::Cache* slots[kSlots] = {};
  ~DmaThreadCaches();
};

DmaThreadCaches::~DmaThreadCaches() {
  {
    for (DmaPool::Cache*& c : slots) {
      if (c == nullptr) continue;
      {
        FutexLockGuard g(&g_cache_mu);
        if (DmaPool* pool = c->pool.load(std::memory_order_acquire)) pool->DetachCache(c);
      }
      delete c;
      c = nullptr;
    }
  }
  DmaPool::t_dma_last_cache = nullptr;
}
thread_local DmaThreadCaches t_dma_caches;

DmaPool::DmaPool(DmaPoolOptions options, Mempool* pages, PoolStats* stats, size_t block_size,
                 size_t boundary)
    : id_(g_next_pool_id.fetch_add(1)),
      salt_(0x9e3779b97f4a7c15ULL * (g_next_pool_id.load() | 1) ^ reinterpret_cast<uintptr_t>(this)),
      page_size_(pages->element_size()),
      block_size_(block_size),
      boundary_(boundary),
      pow2_sizes_(IsPow2(block_size) && IsPow2(boundary)),
      options_(std::move(options)),
      pages_(pages),
      stats_(stats ? stats : &own_stats_) {
  InitPoolStats(stats_, options_.name.c_str(), PoolKind::kDmaPool,
                static_cast<uint32_t>(pages_->policy().mode), block_size_);
  HoldAcrossForkOnce(&g_cache_mu, ForkLockOrder::kOuter, &g_cache_mu_held);
  RegisterDmaPool(this);
}

DmaPool::~DmaPool() {
  UnregisterDmaPool(this);
  {
    FutexLockGuard g(&g_cache_mu);
    FutexLockGuard l(&mu_);
    for (Cache* c : caches_) c->pool.store(nullptr, std::memory_order_release);
    FoldLocked();
  }
  FutexLockGuard l(&mu_);
  const int64_t active = stats_->dma_active_blocks.load(std::memory_order_relaxed);
  if (active != 0) {
    fprintf(stderr, "dmashim: dma pool %s destroyed with %lld blocks in use; keeping its pages\n",
            options_.name.c_str(), static_cast<long long>(active));
    return;
  }
  for (auto& [addr, unused] : pages_by_addr_) pages_->Free(reinterpret_cast<void*>(addr));
}

void DmaPool::DetachCache(Cache* c) {
  FutexLockGuard l(&mu_);
  FlushLocked(c, 0);
  FoldLocked();
  list_allocs_ += c->allocs.load(std::memory_order_relaxed);
  list_frees_ += c->frees.load(std::memory_order_relaxed);
  std::erase(caches_, c);
}

uintptr_t DmaPool::PageOfLocked(uintptr_t p) const {
  auto it = pages_by_addr_.upper_bound(p);
  if (it == pages_by_addr_.begin()) return 0;
  --it;
  return p - it->first < page_size_ ? it->first : 0;
}


void DmaPool::PoisonFree(void* b) const {
#ifndef NDEBUG
  memset(b, kPoisonFree, block_size_);
#else
  (void)b;
#endif
}

void DmaPool::CheckPoisonAndMarkAllocated(void* b) const {
#ifndef NDEBUG
  const auto* bytes = static_cast<const unsigned char*>(b);
  for (size_t i = 2 * sizeof(void*); i < block_size_; ++i) {
    if (bytes[i] != kPoisonFree) {
      fprintf(stderr, "dmashim: dma pool %s: free block %p corrupted at byte %zu\n",
              options_.name.c_str(), b, i);
      break;
    }
  }
  memset(b, kPoisonAllocated, block_size_);
#else
  (void)b;
#endif
}

void DmaPool::CarveLocked(char* page) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(page);
  pages_by_addr_[base] = true;
  // The lock-free free path finds a block's page by masking: only for naturally aligned pages of
  // a power-of-two size (2 MiB huge pages always are).
  if (!IsPow2(page_size_) || base % page_size_ != 0) {
    free_gate_.fetch_or(kUnaligned, std::memory_order_relaxed);
  }
  // Push in descending address order so the free list hands blocks out ascending.
  size_t count = 0;
  for (size_t chunk = page_size_; chunk > 0; chunk -= boundary_) {
    const size_t start = chunk - boundary_;
    const size_t per_chunk = boundary_ / block_size_;
    for (size_t i = per_chunk; i > 0; --i) {
      auto* b = reinterpret_cast<FreeBlock*>(page + start + (i - 1) * block_size_);
      MarkFree(b);
      SetNextFree(b, free_);
      free_ = b;
      ++count;
    }
  }
  total_ += count;
  have_free_.store(free_ != nullptr, std::memory_order_release);
  stats_->dma_total_blocks.store(static_cast<int64_t>(total_), std::memory_order_relaxed);
  stats_->dma_pages.store(static_cast<int64_t>(pages_by_addr_.size()), std::memory_order_relaxed);
}


DmaPool::Cache* DmaPool::ThisThreadsCache() {
  Cache* last = DmaPool::t_dma_last_cache;
  if (last != nullptr && last->pool_id == id_) return last;
  last = FindThreadsCache();
  DmaPool::t_dma_last_cache = last;
  return last;
}

DmaPool::Cache* DmaPool::FindThreadsCache() {
  DmaThreadCaches& tc = t_dma_caches;
  int empty = -1;
  for (int i = 0; i < DmaThreadCaches::kSlots; ++i) {
    Cache* c = tc.slots[i];
    if (c == nullptr) {
      if (empty < 0) empty = i;
      continue;
    }
    if (c->pool_id == id_) return c;
    if (c->pool.load(std::memory_order_acquire) == nullptr) {  // its pool is gone: reuse the slot
      if (DmaPool::t_dma_last_cache == c) DmaPool::t_dma_last_cache = nullptr;
      delete c;
      tc.slots[i] = nullptr;
      if (empty < 0) empty = i;
    }
  }
  if (empty < 0) return nullptr;
  auto* c = new Cache;
  c->pool.store(this, std::memory_order_relaxed);
  c->pool_id = id_;
  {
    FutexLockGuard l(&mu_);
    caches_.push_back(c);
  }
  tc.slots[empty] = c;
  return c;
}

void* DmaPool::AllocOutOfLine(const WaitPolicy* policy, int* err) {
  Cache* c = ThisThreadsCache();
  // The cache, found now (another pool's was the last used).
  if (c != nullptr && c->count > 0) return PopFromCache(c);
  return AllocSlow(policy != nullptr ? *policy : pages_->policy(), err, c);
}

void* DmaPool::AllocSlow(const WaitPolicy& policy, int* err, Cache* c) {
  bool from_new_page = false;
  FutexLockGuard l(&mu_);
  while (free_ == nullptr) {
    // Wait for a page in the mempool — but a block freed here meanwhile ends that wait.
    free_gate_.fetch_add(1, std::memory_order_acq_rel);
    mu_.Unlock();
    void* page = pages_->Alloc(
        page_size_, policy, err,
        [](void* self) {
          return static_cast<DmaPool*>(self)->have_free_.load(std::memory_order_acquire);
        },
        this);
    mu_.Lock();
    free_gate_.fetch_sub(1, std::memory_order_acq_rel);
    if (page == nullptr && *err == EALREADY) continue;  // a block came back: take it
    if (page == nullptr) {
      Counter& reason = *err == EINTR                    ? stats_->fail_interrupted
                        : *err != ENOMEM                 ? stats_->fail_source
                        : policy.mode == Mode::kTimeout  ? stats_->fail_timeout
                        : policy.mode == Mode::kFailFast ? stats_->fail_fast
                                                         : stats_->fail_source;
      reason.fetch_add(1, std::memory_order_relaxed);
      FoldLocked();
      return nullptr;
    }
    CarveLocked(static_cast<char*>(page));
    from_new_page = true;
  }
  FreeBlock* b = free_;
  free_ = NextFree(b);
  // Refill this thread's cache with a batch, so the next allocations take no lock.
  while (c != nullptr && free_ != nullptr && c->count < Cache::kBatch) {
    FreeBlock* x = free_;
    free_ = NextFree(x);
    c->objs[c->count++] = x;
  }
  have_free_.store(free_ != nullptr, std::memory_order_release);
  MarkAllocated(b);
  ++(from_new_page ? source_allocs_ : list_allocs_);
  FoldLocked();
  return b;
}

bool DmaPool::FreeOutOfLine(void* block) {
  Cache* c = ThisThreadsCache();
  const uintptr_t p = reinterpret_cast<uintptr_t>(block);
  // A thread waiting for a page must see this block: then it goes to the shared list.
  if (c == nullptr || free_gate_.load(std::memory_order_relaxed) != 0) return FreeSlow(block, c);
  // A page this thread has seen is this pool's; anything else is checked under the lock.
  const uintptr_t base = p & ~(page_size_ - 1);
  if (!c->KnowsPage(base)) return FreeSlow(block, c);
  if (!CanFree(block, p - base)) return false;
  if (c->count == Cache::kCapacity) {
    FutexLockGuard l(&mu_);
    FlushLocked(c, Cache::kBatch);
  }
  PushToCache(c, block);
  return true;
}

bool DmaPool::FreeSlow(void* block, Cache* c) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(block);
  FutexLockGuard l(&mu_);
  const uintptr_t base = PageOfLocked(p);
  if (base == 0 || !CanFree(block, p - base)) return false;
  if (c != nullptr && free_gate_.load(std::memory_order_acquire) == 0) {
    c->RememberPage(base);
    if (c->count == Cache::kCapacity) FlushLocked(c, Cache::kBatch);
    PushToCache(c, block);
  } else {
    MarkFree(block);
    auto* b = static_cast<FreeBlock*>(block);
    SetNextFree(b, free_);
    free_ = b;
    have_free_.store(true, std::memory_order_release);
    ++list_frees_;
  }
  FoldLocked();
  if (page_waiters() > 0) pages_->WakeWaiters();
  return true;
}

void DmaPool::FlushLocked(Cache* c, size_t keep) {
  while (c->count > keep) {
    auto* b = static_cast<FreeBlock*>(c->objs[--c->count]);
    SetNextFree(b, free_);
    free_ = b;
  }
  have_free_.store(free_ != nullptr, std::memory_order_release);
  if (page_waiters() > 0) pages_->WakeWaiters();
}

void DmaPool::FoldLocked() const {
  uint64_t allocs = list_allocs_, frees = list_frees_;
  for (const Cache* c : caches_) {
    allocs += c->allocs.load(std::memory_order_relaxed);
    frees += c->frees.load(std::memory_order_relaxed);
  }
  const int64_t active = static_cast<int64_t>(allocs + source_allocs_ - frees);
  stats_->alloc_reserve.store(allocs, std::memory_order_relaxed);
  stats_->alloc_source.store(source_allocs_, std::memory_order_relaxed);
  stats_->frees.store(frees, std::memory_order_relaxed);
  stats_->dma_active_blocks.store(active, std::memory_order_relaxed);
  stats_->in_use.store(active, std::memory_order_relaxed);
  stats_->bytes_in_use.store(active * static_cast<int64_t>(block_size_), std::memory_order_relaxed);
  RaiseHighWater(stats_, active);
}

void DmaPool::ForkPrepare() { mu_.Lock(); }

void DmaPool::ForkParent() { mu_.Unlock(); }

void DmaPool::ForkChild() {
  // The threads waiting for a page are not in the child (the unaligned-pages bit stays).
  free_gate_.fetch_and(kUnaligned, std::memory_order_relaxed);
  mu_.Unlock();
}

void DmaPool::Fold() const {
  FutexLockGuard l(&mu_);
  FoldLocked();
}

const PoolStats& DmaPool::stats() const {
  Fold();
  return *stats_;
}

DmaPoolInfo DmaPool::info() const {
  FutexLockGuard l(&mu_);
  FoldLocked();
  return DmaPoolInfo{static_cast<size_t>(stats_->dma_active_blocks.load()), total_, block_size_,
                     pages_by_addr_.size()};
}

}  // namespace dmashim
