#include "pools/dma_pool.h"

#include <errno.h>
#include <string.h>

#include <algorithm>
#include <bit>
#include <cstdio>

#include "absl/strings/str_cat.h"

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

DmaPool::DmaPool(DmaPoolOptions options, Mempool* pages, PoolStats* stats, size_t block_size,
                 size_t boundary)
    : options_(std::move(options)),
      pages_(pages),
      block_size_(block_size),
      boundary_(boundary),
      stats_(stats ? stats : &own_stats_) {
  InitPoolStats(stats_, options_.name.c_str(), PoolKind::kDmaPool,
                static_cast<uint32_t>(pages_->policy().mode), block_size_);
}

DmaPool::~DmaPool() {
  FutexLockGuard l(&mu_);
  if (active_ != 0) {
    fprintf(stderr, "dmashim: dma pool %s destroyed with %zu blocks in use; keeping their pages\n",
            options_.name.c_str(), active_);
  }
  for (auto& [addr, page] : pages_by_addr_) {
    bool live = false;
    for (uint64_t w : page.live) live |= w != 0;
    if (!live) pages_->Free(reinterpret_cast<void*>(addr));
  }
}

size_t DmaPool::SlotOf(size_t offset) const {
  const size_t per_chunk = boundary_ / block_size_;
  return (offset / boundary_) * per_chunk + (offset % boundary_) / block_size_;
}

DmaPool::Page* DmaPool::FindBlockLocked(uintptr_t p, size_t* slot) {
  auto it = pages_by_addr_.upper_bound(p);
  if (it == pages_by_addr_.begin()) return nullptr;
  --it;
  const size_t offset = p - it->first;
  if (offset >= pages_->element_size()) return nullptr;
  const size_t in_chunk = offset % boundary_;
  if (in_chunk % block_size_ != 0 || in_chunk + block_size_ > boundary_) return nullptr;
  *slot = SlotOf(offset);
  return &it->second;
}

void DmaPool::CarveLocked(char* page) {
  const size_t page_size = pages_->element_size();
  Page& pg = pages_by_addr_[reinterpret_cast<uintptr_t>(page)];
  const size_t slots = SlotOf(page_size - 1) + 1;
  pg.live.assign((slots + 63) / 64, 0);
  // Push in descending address order so the free list hands blocks out ascending.
  size_t count = 0;
  for (size_t chunk = page_size; chunk > 0; chunk -= boundary_) {
    const size_t base = chunk - boundary_;
    const size_t per_chunk = boundary_ / block_size_;
    for (size_t i = per_chunk; i > 0; --i) {
      auto* b = reinterpret_cast<FreeBlock*>(page + base + (i - 1) * block_size_);
#ifndef NDEBUG
      memset(b, kPoisonFree, block_size_);
#endif
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

void* DmaPool::Alloc(int* err) { return Alloc(pages_->policy(), err); }

void* DmaPool::Alloc(const WaitPolicy& policy, int* err) {
  bool from_new_page = false;
  FutexLockGuard l(&mu_);
  while (free_ == nullptr) {
    // Wait for a page in the mempool — but a block freed here meanwhile ends that wait.
    page_waiters_.fetch_add(1, std::memory_order_acq_rel);
    mu_.Unlock();
    void* page = pages_->Alloc(
        pages_->element_size(), policy, err,
        [](void* self) {
          return static_cast<DmaPool*>(self)->have_free_.load(std::memory_order_acquire);
        },
        this);
    mu_.Lock();
    page_waiters_.fetch_sub(1, std::memory_order_acq_rel);
    if (page == nullptr && *err == EALREADY) continue;  // a block came back: take it
    if (page == nullptr) {
      Counter& reason = *err == EINTR                   ? stats_->fail_interrupted
                        : *err != ENOMEM                ? stats_->fail_source
                        : policy.mode == Mode::kTimeout ? stats_->fail_timeout
                        : policy.mode == Mode::kFailFast ? stats_->fail_fast
                                                         : stats_->fail_source;
      reason.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    CarveLocked(static_cast<char*>(page));
    from_new_page = true;
  }
  FreeBlock* b = free_;
  free_ = NextFree(b);
  have_free_.store(free_ != nullptr, std::memory_order_release);
#ifndef NDEBUG
  {
    const auto* bytes = reinterpret_cast<const unsigned char*>(b);
    for (size_t i = sizeof(FreeBlock); i < block_size_; ++i) {
      if (bytes[i] != kPoisonFree) {
        fprintf(stderr, "dmashim: dma pool %s: free block %p corrupted at byte %zu\n",
                options_.name.c_str(), static_cast<void*>(b), i);
        break;
      }
    }
    memset(b, kPoisonAllocated, block_size_);
  }
#endif
  size_t slot = 0;
  Page* pg = FindBlockLocked(reinterpret_cast<uintptr_t>(b), &slot);
  pg->live[slot / 64] |= uint64_t{1} << (slot % 64);
  ++active_;
  (from_new_page ? stats_->alloc_source : stats_->alloc_reserve)
      .fetch_add(1, std::memory_order_relaxed);
  stats_->dma_active_blocks.store(static_cast<int64_t>(active_), std::memory_order_relaxed);
  stats_->in_use.store(static_cast<int64_t>(active_), std::memory_order_relaxed);
  stats_->bytes_in_use.store(static_cast<int64_t>(active_ * block_size_),
                             std::memory_order_relaxed);
  RaiseHighWater(stats_, static_cast<int64_t>(active_));
  return b;
}

bool DmaPool::Free(void* block) {
  FutexLockGuard l(&mu_);
  size_t slot = 0;
  Page* pg = FindBlockLocked(reinterpret_cast<uintptr_t>(block), &slot);
  const uint64_t bit = uint64_t{1} << (slot % 64);
  if (pg == nullptr || (pg->live[slot / 64] & bit) == 0) return false;  // foreign or double free
  pg->live[slot / 64] &= ~bit;
  auto* b = static_cast<FreeBlock*>(block);
#ifndef NDEBUG
  memset(b, kPoisonFree, block_size_);
#endif
  SetNextFree(b, free_);
  free_ = b;
  have_free_.store(true, std::memory_order_release);
  --active_;
  stats_->frees.fetch_add(1, std::memory_order_relaxed);
  stats_->dma_active_blocks.store(static_cast<int64_t>(active_), std::memory_order_relaxed);
  stats_->in_use.store(static_cast<int64_t>(active_), std::memory_order_relaxed);
  stats_->bytes_in_use.store(static_cast<int64_t>(active_ * block_size_),
                             std::memory_order_relaxed);
  if (page_waiters_.load(std::memory_order_acquire) > 0) pages_->WakeWaiters();
  return true;
}

DmaPoolInfo DmaPool::info() const {
  FutexLockGuard l(&mu_);
  return DmaPoolInfo{active_, total_, block_size_, pages_by_addr_.size()};
}

}  // namespace dmashim
