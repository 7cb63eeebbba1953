// Stress: 8 threads × 100,000 mixed operations across four pools (2 MiB huge pages, 4 KiB anonymous
// pages, 64 KiB pinned elements, 256-byte DmaPool blocks on huge pages), with content checks on
// every element and exact accounting at the end.
#include <errno.h>
#include <string.h>

#include <array>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pools/dma_pool.h"
#include "pools/mempool.h"
#include "tests/pools/pool_test_util.h"

namespace dmashim::testing {
namespace {

constexpr int kThreads = 8;
constexpr int kOpsPerThread = 100'000;
constexpr size_t kHoldMax = 32;

enum PoolId { kHuge = 0, kAnon = 1, kPinned = 2, kDma = 3, kPoolCount = 4 };

struct Item {
  PoolId pool;
  void* p;
  size_t len;
  uint64_t tag;
};

// Writes the tag into the first, middle and last word (and every word of small blocks).
void Stamp(const Item& it) {
  auto* w = static_cast<uint64_t*>(it.p);
  const size_t n = it.len / 8;
  if (n <= 64) {
    for (size_t i = 0; i < n; ++i) w[i] = it.tag ^ i;
    return;
  }
  w[0] = it.tag;
  w[n / 2] = it.tag ^ 1;
  w[n - 1] = it.tag ^ 2;
}

bool Intact(const Item& it) {
  const auto* w = static_cast<const uint64_t*>(it.p);
  const size_t n = it.len / 8;
  if (n <= 64) {
    for (size_t i = 0; i < n; ++i) {
      if (w[i] != (it.tag ^ i)) return false;
    }
    return true;
  }
  return w[0] == it.tag && w[n / 2] == (it.tag ^ 1) && w[n - 1] == (it.tag ^ 2);
}

bool ZeroWhereStamped(const Item& it) {
  const auto* w = static_cast<const uint64_t*>(it.p);
  const size_t n = it.len / 8;
  return w[0] == 0 && w[n / 2] == 0 && w[n - 1] == 0;
}

class Stress : public HugePoolTest {};

TEST_F(Stress, EightThreadsMixedOpsAcrossPoolsAccountForEveryElement) {
  MempoolOptions huge_o = HugeOptions("stress-huge", 4, Mode::kBlock);
  huge_o.zero = ZeroMode::kNone;  // 2 MiB memsets would dominate; content is checked by tag
  MempoolOptions anon_o;
  anon_o.name = "stress-anon";
  anon_o.source.kind = SourceKind::kAnon;
  anon_o.reserve = 16;
  anon_o.keep = 64;
  anon_o.policy.mode = Mode::kFailFast;
  MempoolOptions pinned_o;
  pinned_o.name = "stress-pinned";
  pinned_o.source.kind = SourceKind::kPinned;
  pinned_o.element_size = 64 << 10;
  pinned_o.reserve = 8;
  pinned_o.policy.mode = Mode::kBlock;
  pinned_o.zero = ZeroMode::kBackground;
  MempoolOptions dma_pages_o = HugeOptions("stress-dma-pages", 1, Mode::kBlock);

  auto huge = MakePool(huge_o, &RealSysCalls());
  auto anon = MakePool(anon_o, &RealSysCalls());
  auto pinned = MakePool(pinned_o, &RealSysCalls());
  auto dma_pages = MakePool(dma_pages_o, &RealSysCalls());
  ASSERT_TRUE(huge && anon && pinned && dma_pages);
  auto dma_or = DmaPool::Create({"stress-dma", 256, 64, 4096}, dma_pages.get());
  ASSERT_TRUE(dma_or.ok()) << dma_or.status();
  DmaPool& dma = **dma_or;
  Mempool* mempools[3] = {huge.get(), anon.get(), pinned.get()};

  std::array<std::atomic<long>, kPoolCount> allocs{}, frees{}, failures{};
  std::atomic<long> corrupt{0}, not_zero{0};
  std::vector<std::vector<Item>> leftovers(kThreads);

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(0x5eed + t);
      std::vector<Item> held;
      int huge_held = 0;
      uint64_t seq = 0;
      auto release = [&](size_t idx) {
        Item it = held[idx];
        held[idx] = held.back();
        held.pop_back();
        if (!Intact(it)) corrupt.fetch_add(1);
        bool ok = it.pool == kDma ? dma.Free(it.p) : mempools[it.pool]->Free(it.p);
        if (!ok) corrupt.fetch_add(1);
        if (it.pool == kHuge) --huge_held;
        frees[it.pool].fetch_add(1, std::memory_order_relaxed);
      };
      for (int op = 0; op < kOpsPerThread; ++op) {
        const unsigned r = static_cast<unsigned>(rng() % 100);
        if (!held.empty() && (held.size() == kHoldMax || r < 45)) {
          release(rng() % held.size());
          continue;
        }
        // Choose a pool: DMA 40 %, anon 35 %, pinned 20 %, huge 5 % (at most 2 held per thread).
        const unsigned w = static_cast<unsigned>(rng() % 100);
        PoolId id = w < 40 ? kDma : w < 75 ? kAnon : w < 95 ? kPinned : kHuge;
        if (id == kHuge && huge_held >= 2) id = kAnon;
        int err = 0;
        void* p = nullptr;
        size_t len = 0;
        if (id == kDma) {
          p = dma.Alloc(&err);
          len = dma.block_size();
        } else {
          p = mempools[id]->Alloc(mempools[id]->element_size(), &err);
          len = mempools[id]->element_size();
        }
        if (p == nullptr) {
          failures[id].fetch_add(1);
          continue;
        }
        allocs[id].fetch_add(1, std::memory_order_relaxed);
        Item it{id, p, len, (static_cast<uint64_t>(t) << 56) | (++seq << 2) | id};
        if ((id == kAnon || id == kPinned) && !ZeroWhereStamped(it)) not_zero.fetch_add(1);
        if (id == kHuge) ++huge_held;
        Stamp(it);
        held.push_back(it);
      }
      leftovers[t] = std::move(held);
    });
  }
  for (auto& th : threads) th.join();

  EXPECT_EQ(corrupt.load(), 0) << "an element was shared, overwritten, or refused on free";
  EXPECT_EQ(not_zero.load(), 0) << "a recycled element was not zeroed";
  for (int i = 0; i < kPoolCount; ++i) EXPECT_EQ(failures[i].load(), 0) << "pool " << i;

  std::array<long, kPoolCount> still{};
  for (const auto& v : leftovers) {
    for (const Item& it : v) {
      EXPECT_TRUE(Intact(it));
      ++still[it.pool];
    }
  }
  // Every element accounted for: in use + free = obtained from the source - given back.
  auto account = [&](Mempool* m, long in_use_expected, const char* what) {
    const PoolStats& s = m->stats();
    SCOPED_TRACE(what);
    const int64_t obtained = static_cast<int64_t>(s.source_calls.load() - s.source_failures.load());
    EXPECT_EQ(InUse(s), in_use_expected);
    EXPECT_EQ(s.elements_total.load(), InUse(s) + ReserveLevel(s));
    EXPECT_EQ(s.elements_total.load(), obtained - static_cast<int64_t>(s.source_releases.load()));
    EXPECT_EQ(static_cast<int64_t>(s.alloc_source.load() + s.alloc_reserve.load() +
                                   s.alloc_waited.load() - s.frees.load()),
              InUse(s));
    EXPECT_GE(s.elements_total.load(), s.reserve_target.load());
    EXPECT_LE(ReserveLevel(s), static_cast<int64_t>(std::max(m->keep(), m->reserve())));
    EXPECT_EQ(s.fail_fast.load() + s.fail_timeout.load() + s.fail_source.load() +
                  s.fail_interrupted.load(),
              0u);
    EXPECT_EQ(s.blocked_now.load(), 0);
  };
  account(huge.get(), still[kHuge], "huge");
  account(anon.get(), still[kAnon], "anon");
  account(pinned.get(), still[kPinned], "pinned");
  account(dma_pages.get(), static_cast<long>(dma.info().pages), "dma pages");
  for (int i = 0; i < kPoolCount; ++i) {
    EXPECT_EQ(allocs[i].load() - frees[i].load(), still[i]) << "pool " << i;
  }
  const PoolStats& ds = dma.stats();
  EXPECT_EQ(dma.info().active_blocks, static_cast<size_t>(still[kDma]));
  EXPECT_EQ(static_cast<long>(ds.alloc_source.load() + ds.alloc_reserve.load()), allocs[kDma].load());
  EXPECT_EQ(static_cast<long>(ds.frees.load()), frees[kDma].load());
  EXPECT_EQ(dma.info().total_blocks, dma.info().pages * (kHugePage2M / 256));
  EXPECT_GT(allocs[kHuge].load(), 1000);
  EXPECT_GT(allocs[kPinned].load(), 10000);

  // Hand everything back: nothing in use anywhere.
  for (auto& v : leftovers) {
    for (const Item& it : v) {
      ASSERT_TRUE(it.pool == kDma ? dma.Free(it.p) : mempools[it.pool]->Free(it.p));
    }
  }
  for (Mempool* m : mempools) EXPECT_EQ(InUse(m->stats()), 0) << m->name();
  EXPECT_EQ(dma.info().active_blocks, 0u);
}

}  // namespace
}  // namespace dmashim::testing
