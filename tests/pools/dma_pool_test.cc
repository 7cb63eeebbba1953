// DmaPool: alignment, boundary and overlap over many (size, align, boundary) combinations on real
// huge pages and on 4 KiB / 64 KiB pages; argument validation; guaranteed allocation from a reserve.
#include <errno.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pools/dma_pool.h"
#include "pools/mempool.h"
#include "tests/pools/pool_test_util.h"

namespace dmashim::testing {
namespace {

constexpr size_t k2M = kHugePage2M;

class DmaPoolTest : public HugePoolTest {};

struct Combo {
  size_t size, align, boundary;
};

std::string Describe(const Combo& c, size_t element) {
  return absl::StrCat("size=", c.size, " align=", c.align, " boundary=", c.boundary,
                      " page=", element);
}

// Allocates up to `count` blocks, checking every contract, frees half, allocates again, frees all.
void Exercise(Mempool* pages, const Combo& c, size_t count) {
  const std::string what = Describe(c, pages->element_size());
  DmaPoolOptions o{"combo", c.size, c.align, c.boundary};
  auto created = DmaPool::Create(o, pages);
  ASSERT_TRUE(created.ok()) << what << ": " << created.status();
  DmaPool& pool = **created;
  const size_t bs = pool.block_size();
  EXPECT_GE(bs, std::max(c.size, kDmaMinBlock)) << what;
  EXPECT_EQ(bs % c.align, 0u) << what;
  // An explicit boundary is absolute (it is about the addresses a device sees). The default only
  // keeps blocks inside their page, which is checkable here where pages are aligned to their size.
  const size_t element = pages->element_size();
  const bool aligned_pages = element == SourcePageSize(pages->options().source.kind);
  const size_t boundary = c.boundary != 0 ? c.boundary : aligned_pages ? element : 0;

  std::vector<uintptr_t> live;
  auto alloc_some = [&](size_t n) {
    for (size_t i = 0; i < n; ++i) {
      int err = 0;
      void* b = pool.Alloc(&err);
      ASSERT_NE(b, nullptr) << what << ": " << strerror(err);
      const uintptr_t a = reinterpret_cast<uintptr_t>(b);
      ASSERT_EQ(a % c.align, 0u) << what << " block " << b;
      // [a, a + block size) must not cross a multiple of the boundary.
      if (boundary != 0) {
        ASSERT_EQ(a / boundary, (a + bs - 1) / boundary) << what << " block " << b;
      }
      FillPattern(b, bs & ~size_t{7}, a);
      live.push_back(a);
    }
  };
  auto check_all = [&] {
    std::vector<uintptr_t> sorted = live;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < sorted.size(); ++i) {
      ASSERT_GE(sorted[i], sorted[i - 1] + bs) << what << ": blocks overlap";
    }
    for (uintptr_t a : live) {
      ASSERT_TRUE(HasPattern(reinterpret_cast<void*>(a), bs & ~size_t{7}, a))
          << what << ": block " << a << " was overwritten";
    }
    const DmaPoolInfo info = pool.info();
    EXPECT_EQ(info.active_blocks, live.size()) << what;
    EXPECT_EQ(info.block_size, bs) << what;
    EXPECT_GE(info.total_blocks, live.size()) << what;
    EXPECT_EQ(pool.stats().dma_active_blocks.load(), static_cast<int64_t>(live.size()));
    EXPECT_EQ(pool.stats().dma_pages.load(), static_cast<int64_t>(info.pages));
  };

  alloc_some(count);
  check_all();
  // Free every other block, then allocate that many again: recycled blocks obey the rules too.
  std::vector<uintptr_t> keep;
  for (size_t i = 0; i < live.size(); ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(pool.Free(reinterpret_cast<void*>(live[i]))) << what;
    } else {
      keep.push_back(live[i]);
    }
  }
  const size_t freed = live.size() - keep.size();
  live = keep;
  const size_t pages_before = pool.info().pages;
  alloc_some(freed);
  check_all();
  EXPECT_EQ(pool.info().pages, pages_before) << what << ": freed blocks were not reused";
  for (uintptr_t a : live) ASSERT_TRUE(pool.Free(reinterpret_cast<void*>(a))) << what;
  EXPECT_EQ(pool.info().active_blocks, 0u);
}

TEST_F(DmaPoolTest, AlignmentBoundaryAndNoOverlapOverManyCombinations) {
  auto huge = MakePool(HugeOptions("dma-huge", 0, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(huge, nullptr);
  MempoolOptions small_o;
  small_o.name = "dma-4k";
  small_o.source.kind = SourceKind::kAnon;
  small_o.policy.mode = Mode::kFailFast;
  auto small = MakePool(small_o, &RealSysCalls());
  ASSERT_NE(small, nullptr);
  MempoolOptions big_o = small_o;
  big_o.name = "dma-64k";
  big_o.element_size = 64 << 10;
  auto big = MakePool(big_o, &RealSysCalls());
  ASSERT_NE(big, nullptr);
  MempoolOptions odd_o = small_o;  // an element size that is not a power of two
  odd_o.name = "dma-12k";
  odd_o.element_size = 12 << 10;
  auto odd = MakePool(odd_o, &RealSysCalls());
  ASSERT_NE(odd, nullptr);

  const size_t sizes[] = {1, 16, 24, 40, 64, 100, 256, 1000, 1024, 3000, 4096};
  const size_t aligns[] = {1, 8, 16, 64, 256, 4096, 16384};
  const size_t boundaries[] = {0, 1024, 4096, 8192, 65536};
  int exercised = 0;
  for (Mempool* pages : {huge.get(), small.get(), big.get(), odd.get()}) {
    const size_t page = pages->element_size();
    // Page starts are aligned to the source page size only (4 KiB for anonymous elements).
    const size_t page_align = std::min(page, SourcePageSize(pages->options().source.kind));
    for (size_t size : sizes) {
      for (size_t align : aligns) {
        for (size_t boundary : boundaries) {
          const Combo c{size, align, boundary};
          size_t block = std::max(size, kDmaMinBlock);
          block = (block + align - 1) / align * align;
          const bool valid =
              align <= page_align && block <= page &&
              (boundary == 0 || (boundary >= block && (boundary <= page_align || page == page_align)));
          auto created = DmaPool::Create({"probe", size, align, boundary}, pages);
          if (!valid) {
            EXPECT_FALSE(created.ok()) << Describe(c, page) << " should be rejected";
            continue;
          }
          ASSERT_TRUE(created.ok()) << Describe(c, page) << ": " << created.status();
          created->reset();
          // Enough blocks to span several pages where pages are small, bounded where they are huge.
          const size_t per_page = page / block;
          Exercise(pages, c, std::min<size_t>(per_page * 3 + 1, 1500));
          if (HasFatalFailure()) return;
          ++exercised;
        }
      }
    }
  }
  EXPECT_GT(exercised, 300);
}

TEST_F(DmaPoolTest, CreateRejectsInvalidArgumentsNamingThem) {
  auto pages = MakePool(HugeOptions("dma-validate", 0, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pages, nullptr);
  auto bad = [&](DmaPoolOptions o, const char* word, Mempool* m) {
    auto r = DmaPool::Create(std::move(o), m);
    ASSERT_FALSE(r.ok()) << word;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find(word), std::string::npos) << r.status();
  };
  bad({"x", 0, 16, 0}, "size", pages.get());
  bad({"x", 64, 3, 0}, "align", pages.get());
  bad({"x", 64, 48, 0}, "align", pages.get());
  bad({"x", 64, 4 << 20, 0}, "align", pages.get());
  bad({"x", (2 << 20) + 1, 16, 0}, "block size", pages.get());
  bad({"x", 64, 16, 3000}, "boundary", pages.get());
  bad({"x", 512, 16, 256}, "boundary", pages.get());
  bad({"", 64, 16, 0}, "name", pages.get());
  bad({"x", 64, 16, 0}, "mempool", nullptr);
  EXPECT_TRUE(DmaPool::Create({"x", 64, 16, 0}, pages.get()).ok());
}

TEST_F(DmaPoolTest, FreeRejectsForeignAndDoubleFrees) {
  auto pages = MakePool(HugeOptions("dma-free", 1, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pages, nullptr);
  auto pool = DmaPool::Create({"free", 100, 32, 0}, pages.get());
  ASSERT_TRUE(pool.ok()) << pool.status();
  int err = 0;
  char* b = static_cast<char*>((*pool)->Alloc(&err));
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE((*pool)->Free(b + 16)) << "not a block start";
  int local = 0;
  EXPECT_FALSE((*pool)->Free(&local)) << "not the pool's memory";
  EXPECT_TRUE((*pool)->Free(b));
  EXPECT_FALSE((*pool)->Free(b)) << "double free";
  EXPECT_EQ((*pool)->stats().frees.load(), 1u);
}

TEST_F(DmaPoolTest, InfoReportsKernelPoolsFigures) {
  auto pages = MakePool(HugeOptions("dma-info", 0, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pages, nullptr);
  auto pool = DmaPool::Create({"info", 2048, 64, 0}, pages.get());
  ASSERT_TRUE(pool.ok());
  DmaPoolInfo info = (*pool)->info();
  EXPECT_EQ(info.active_blocks, 0u);
  EXPECT_EQ(info.pages, 0u);
  EXPECT_EQ(info.block_size, 2048u);
  std::vector<void*> blocks;
  int err = 0;
  for (size_t i = 0; i < k2M / 2048 + 1; ++i) {
    blocks.push_back((*pool)->Alloc(&err));
    ASSERT_NE(blocks.back(), nullptr);
  }
  info = (*pool)->info();
  EXPECT_EQ(info.active_blocks, k2M / 2048 + 1);
  EXPECT_EQ(info.pages, 2u);
  EXPECT_EQ(info.total_blocks, 2 * (k2M / 2048));
  EXPECT_EQ(InUse(pages->stats()), 2);
  for (void* b : blocks) (*pool)->Free(b);
  EXPECT_EQ((*pool)->info().active_blocks, 0u);
  EXPECT_EQ((*pool)->info().pages, 2u) << "pages stay with the dma pool until it is destroyed";
  pool->reset();
  EXPECT_EQ(InUse(pages->stats()), 0) << "destroying the dma pool returns its pages";
}

TEST_F(DmaPoolTest, GuaranteedAllocationWithReserve) {
  auto o = HugeOptions("dma-guaranteed", 2, Mode::kBlock);
  auto pages = MakePool(o);
  ASSERT_NE(pages, nullptr);
  ASSERT_EQ(pages->Prefill(), 2u);
  TheFaults().fail_mmap = true;  // the kernel has nothing more: only the reserve can serve
  auto pool = DmaPool::Create({"guaranteed", 512 << 10, 4096, 0}, pages.get());
  ASSERT_TRUE(pool.ok());
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) {  // 2 reserve pages × 4 blocks of 512 KiB
    int err = 0;
    const uint64_t t0 = MonotonicNs();
    void* b = (*pool)->Alloc(&err);
    ASSERT_NE(b, nullptr) << "block " << i << ": " << strerror(err);
    EXPECT_LT(MonotonicNs() - t0, 50'000'000u) << "served from the reserve, without waiting";
    blocks.push_back(b);
  }
  EXPECT_EQ(pages->stats().alloc_reserve.load(), 2u);
  EXPECT_EQ(pages->stats().wait_count.load(), 0u);
  // Beyond the reserve, the per-call policy applies: fail-fast fails and is counted.
  int err = 0;
  EXPECT_EQ((*pool)->Alloc(WaitPolicy{Mode::kFailFast, absl::ZeroDuration(), false}, &err),
            nullptr);
  EXPECT_EQ(err, ENOMEM);
  EXPECT_EQ((*pool)->stats().fail_fast.load(), 1u);
  EXPECT_EQ((*pool)->stats().dma_active_blocks.load(), 8);
  // A freed block is served again without a new page.
  ASSERT_TRUE((*pool)->Free(blocks.back()));
  void* again = (*pool)->Alloc(&err);
  EXPECT_EQ(again, blocks.back());
  EXPECT_EQ((*pool)->info().pages, 2u);
  for (void* b : blocks) (*pool)->Free(b);
}

// KNOWN BUG (disabled so CI stays meaningful; enable once fixed): a block-mode DmaPool::Alloc that
// needs a new page waits inside Mempool::Alloc, which only a Mempool free or a source retry ends. A
// DmaPool::Free of a block never wakes it, and the DmaPool keeps its pages until it is destroyed, so
// with the page source exhausted the waiter hangs although a block is free.
TEST_F(DmaPoolTest, BlockedAllocationCompletesWhenABlockIsFreed) {
  auto o = HugeOptions("dma-wake", 1, Mode::kBlock);
  o.retry_interval = absl::Milliseconds(20);
  o.retry_max = absl::Milliseconds(50);
  auto pages = MakePool(o);
  ASSERT_NE(pages, nullptr);
  ASSERT_EQ(pages->Prefill(), 1u);
  TheFaults().fail_mmap = true;
  auto pool = DmaPool::Create({"wake", 1 << 20, 4096, 0}, pages.get());
  ASSERT_TRUE(pool.ok());
  int err = 0;
  void* a = (*pool)->Alloc(&err);
  void* b = (*pool)->Alloc(&err);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::atomic<void*> got{nullptr};
  std::thread waiter([&] {
    int e = 0;
    got = (*pool)->Alloc(&e);
  });
  ASSERT_TRUE(WaitFor([&] { return pages->stats().blocked_now.load() == 1; }, 5000));
  ASSERT_TRUE((*pool)->Free(a));
  const bool completed = WaitFor([&] { return got.load() != nullptr; }, 2000);
  if (!completed) TheFaults().fail_mmap = false;  // rescue the waiter so the test can end
  waiter.join();
  EXPECT_TRUE(completed) << "a block-mode dma allocation must complete when a block is freed";
  EXPECT_EQ(got.load(), a);
  (*pool)->Free(got.load());
  (*pool)->Free(b);
}

}  // namespace
}  // namespace dmashim::testing
