// Reliability of the pools under contention and signals (issue 7, items 2 and 3), in process, on
// real 2 MiB huge pages. The source is capped by a system-call table that lets only a few mmaps
// succeed, so the pool can never hold more than that: demand is always above what exists, which is
// exactly the situation `block` mode and the reserve are for.
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pools/dma_pool.h"
#include "pools/mempool.h"
#include "pools/sys.h"
#include "tests/common/hugepages.h"

namespace dmashim::testing {
namespace {

// The real calls, but only `budget` mmaps may succeed (then ENOMEM, as an exhausted node says).
std::atomic<long> g_budget{-1};
std::atomic<long> g_refused{0};
void* CappedMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  long b = g_budget.load();
  while (b >= 0) {
    if (b == 0) {
      g_refused.fetch_add(1);
      errno = ENOMEM;
      return MAP_FAILED;
    }
    if (g_budget.compare_exchange_weak(b, b - 1)) break;
  }
  return RealSysCalls().mmap(addr, len, prot, flags, fd, off);
}
int CountedMunmap(void* addr, size_t len) {
  const int r = RealSysCalls().munmap(addr, len);
  if (r == 0 && g_budget.load() >= 0) g_budget.fetch_add(1);  // a page given back can be had again
  return r;
}
const SysCalls* Capped() {
  static const SysCalls table = [] {
    SysCalls t = RealSysCalls();
    t.mmap = CappedMmap;
    t.munmap = CountedMunmap;
    return t;
  }();
  return &table;
}

// Runs `fn` on a thread and fails (then ends the process: a deadlocked pool cannot be cleaned up)
// if it has not returned within `limit`.
template <typename Fn>
void WithinOrDie(std::chrono::seconds limit, const char* what, Fn fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread t([&] {
    fn();
    std::lock_guard<std::mutex> l(mu);
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  if (!cv.wait_for(l, limit, [&] { return done; })) {
    fprintf(stderr, "DEADLOCK: %s did not finish within %lld s\n", what,
            static_cast<long long>(limit.count()));
    ADD_FAILURE() << what << " did not finish within " << limit.count() << " s (deadlock)";
    fflush(nullptr);
    _exit(1);
  }
  l.unlock();
  t.join();
}

class PoolReliability : public ::testing::Test {
 protected:
  void SetUp() override {
    g_budget = -1;
    g_refused = 0;
    DMASHIM_REQUIRE_FREE_HUGE_PAGES(8);
  }
  void TearDown() override { g_budget = -1; }

  std::unique_ptr<Mempool> Make(size_t reserve, Mode mode, bool interruptible = false) {
    MempoolOptions o;
    o.name = "hammered";
    o.reserve = reserve;
    o.keep = 0;  // frees beyond the reserve go back to the (capped) source
    o.policy.mode = mode;
    o.policy.interruptible = interruptible;
    o.zero = ZeroMode::kEager;
    o.retry_interval = absl::Milliseconds(5);
    o.retry_max = absl::Milliseconds(20);
    auto p = Mempool::Create(std::move(o), nullptr, Capped());
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
};

// Item 2: 16 threads, 4 pages in existence, reserve 2, 300 operations each. Every element a thread
// holds carries its tag; another thread seeing it would be a lost (double-handed) element.
TEST_F(PoolReliability, SixteenThreadsOnABlockPoolNeverFailNeverDeadlockAndAccountingCloses) {
  constexpr int kThreads = 16, kOps = 300;
  constexpr long kPages = 4;
  g_budget = kPages;
  auto pool = Make(2, Mode::kBlock);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 2u);

  std::atomic<long> failed{0}, corrupt{0}, ok{0};
  WithinOrDie(std::chrono::seconds(90), "16 threads x 300 block allocations", [&] {
    std::vector<std::thread> t;
    for (int i = 0; i < kThreads; ++i) {
      t.emplace_back([&, i] {
        const uint64_t tag = 0x7a6000 + static_cast<uint64_t>(i);
        for (int k = 0; k < kOps; ++k) {
          int err = 0;
          auto* p = static_cast<uint64_t*>(pool->Alloc(kHugePage2M, &err));
          if (p == nullptr) {
            failed.fetch_add(1);
            continue;
          }
          for (size_t w = 0; w < kHugePage2M / 8; w += 4096) {
            if (p[w] != 0) corrupt.fetch_add(1);  // zeroed on reuse, never someone else's
            p[w] = tag;
          }
          if (k % 8 == 0) std::this_thread::yield();
          for (size_t w = 0; w < kHugePage2M / 8; w += 4096) {
            if (p[w] != tag) corrupt.fetch_add(1);
          }
          if (!pool->Free(p)) corrupt.fetch_add(1);
          ok.fetch_add(1);
        }
      });
    }
    for (auto& th : t) th.join();
  });

  const PoolStats& s = pool->stats();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(corrupt.load(), 0);
  EXPECT_EQ(ok.load(), kThreads * kOps);
  // Accounting closes: every allocation has a result and a free; nothing is in use or waiting.
  const uint64_t allocs = s.alloc_source.load() + s.alloc_reserve.load() + s.alloc_waited.load();
  EXPECT_EQ(allocs, static_cast<uint64_t>(kThreads * kOps));
  EXPECT_EQ(s.frees.load(), static_cast<uint64_t>(kThreads * kOps));
  EXPECT_EQ(s.fail_fast.load() + s.fail_timeout.load() + s.fail_interrupted.load() +
                s.fail_source.load(),
            0u);
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(BytesInUse(s), 0);
  EXPECT_EQ(RequestedBytesInUse(s), 0);
  EXPECT_EQ(s.blocked_now.load(), 0);
  for (const Counter& w : s.waiter_start_ns) EXPECT_EQ(w.load(), 0u);
  EXPECT_LE(s.high_water.load(), kPages);
  // Every page the source handed out is either held by the pool or was given back.
  EXPECT_EQ(s.source_calls.load() - s.source_failures.load(),
            static_cast<uint64_t>(s.elements_total.load()) + s.source_releases.load());
  EXPECT_EQ(s.elements_total.load(), ReserveLevel(s));
  EXPECT_GE(s.elements_total.load(), 2);  // never below the reserve
  // Demand (16) was far above the 4 pages: threads waited, and every wait is in the record.
  EXPECT_GT(s.alloc_waited.load(), 0u);
  EXPECT_EQ(s.wait_count.load(), s.alloc_waited.load());
  uint64_t buckets = 0;
  for (const Counter& b : s.wait_buckets) buckets += b.load();
  EXPECT_EQ(buckets, s.wait_count.load());
  EXPECT_GT(s.wait_sum_ns.load(), 0u);
  EXPECT_GT(g_refused.load(), 0);
}

// Item 2 for the block pool proper (DmaPool over a block-mode Mempool): 16 threads each take two
// 192 KiB blocks, hold them a moment and free them, while only 3 pages (30 blocks) can exist. Peak
// demand (32) is above supply, so threads wait for a page that never comes and are released by a
// freed block instead; a thread waits holding at most one block (16 < 30), so no deadlock is
// possible by construction and one would be the pool's fault.
TEST_F(PoolReliability, SixteenThreadsOnADmaPoolOverABlockMempoolCompleteWithEveryBlockBack) {
  constexpr int kThreads = 16, kRounds = 150, kHold = 2;
  constexpr size_t kBlock = 192 << 10;
  g_budget = 3;
  auto pages = Make(1, Mode::kBlock);
  ASSERT_NE(pages, nullptr);
  auto dma = DmaPool::Create(DmaPoolOptions{"blocks", kBlock, 4096, 0}, pages.get());
  ASSERT_TRUE(dma.ok()) << dma.status();
  DmaPool& d = **dma;
  std::atomic<long> failed{0}, corrupt{0}, allocs{0};
  WithinOrDie(std::chrono::seconds(90), "16 threads on a DmaPool", [&] {
    std::vector<std::thread> t;
    for (int i = 0; i < kThreads; ++i) {
      t.emplace_back([&, i] {
        std::vector<uint64_t*> held;
        for (int r = 0; r < kRounds; ++r) {
          for (int k = 0; k < kHold; ++k) {
            int err = 0;
            auto* b = static_cast<uint64_t*>(d.Alloc(&err));
            if (b == nullptr) {
              failed.fetch_add(1);
              continue;
            }
            allocs.fetch_add(1);
            b[0] = (static_cast<uint64_t>(i) << 32) | static_cast<uint64_t>(held.size());
            b[kBlock / 8 - 1] = b[0];
            held.push_back(b);
          }
          usleep(300);
          for (size_t k = 0; k < held.size(); ++k) {
            const uint64_t want = (static_cast<uint64_t>(i) << 32) | k;
            if (held[k][0] != want || held[k][kBlock / 8 - 1] != want) corrupt.fetch_add(1);
            if (!d.Free(held[k])) corrupt.fetch_add(1);
          }
          held.clear();
        }
      });
    }
    for (auto& th : t) th.join();
  });
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(corrupt.load(), 0);
  EXPECT_EQ(allocs.load(), kThreads * kRounds * kHold);
  const DmaPoolInfo info = d.info();
  EXPECT_EQ(info.active_blocks, 0u);
  EXPECT_EQ(info.pages, 3u);
  EXPECT_EQ(info.total_blocks, info.pages * (kHugePage2M / kBlock));
  const PoolStats& ps = pages->stats();
  EXPECT_EQ(ps.fail_fast.load() + ps.fail_timeout.load() + ps.fail_source.load(), 0u);
  EXPECT_EQ(InUse(ps), 3);
  EXPECT_GT(ps.wait_count.load(), 0u) << "32 blocks wanted of 30: some thread must have waited";
  EXPECT_EQ(ps.blocked_now.load(), 0);
}

// Item 3: a storm of handled signals (SIGUSR1, no SA_RESTART, every 100 µs to every waiter).
std::atomic<long> g_handled{0};
void Handler(int) { g_handled.fetch_add(1); }

struct Storm {
  explicit Storm(std::vector<pthread_t> targets) : targets_(std::move(targets)) {
    struct sigaction sa {};
    sa.sa_handler = Handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGUSR1, &sa, nullptr);  // left installed: a signal still pending must stay harmless
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        for (pthread_t t : targets_) pthread_kill(t, SIGUSR1);
        usleep(100);
      }
    });
  }
  // Stop before any target is joined: pthread_kill on a joined thread is undefined.
  ~Storm() {
    stop_ = true;
    thread_.join();
  }
  std::vector<pthread_t> targets_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Eight waiters on an exhausted pool (2 pages, both held by the test), signalled without pause.
// Returns per-waiter errno (0 = got an element) once the held pages are freed after `release_ms`.
std::vector<int> WaitUnderStorm(Mempool* pool, int release_ms, long* done_before_release) {
  constexpr int kWaiters = 8;
  int e1 = 0, e2 = 0;
  void* a = pool->Alloc(kHugePage2M, &e1);
  void* b = pool->Alloc(kHugePage2M, &e2);
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
  std::vector<int> result(kWaiters, -1);
  std::atomic<long> done{0};
  std::vector<std::thread> waiters;
  std::vector<pthread_t> handles;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i] {
      int err = 0;
      void* p = pool->Alloc(kHugePage2M, &err);
      result[i] = p ? 0 : err;
      if (p != nullptr) {
        memset(p, 0x33, 4096);
        usleep(2000);
        pool->Free(p);
      }
      done.fetch_add(1);
    });
    handles.push_back(waiters.back().native_handle());
  }
  {
    Storm storm(handles);
    usleep(static_cast<useconds_t>(release_ms) * 1000);
    *done_before_release = done.load();
    pool->Free(a);
    pool->Free(b);
    for (int i = 0; i < 60'000 && done.load() < kWaiters; ++i) usleep(1000);
  }
  for (auto& w : waiters) w.join();
  return result;
}

TEST_F(PoolReliability, SignalStormUninterruptibleWaitsKeepWaitingAndComplete) {
  g_budget = 2;
  auto pool = Make(2, Mode::kBlock, /*interruptible=*/false);
  ASSERT_NE(pool, nullptr);
  g_handled = 0;
  long early = -1;
  std::vector<int> r;
  WithinOrDie(std::chrono::seconds(60), "uninterruptible waiters under a signal storm",
              [&] { r = WaitUnderStorm(pool.get(), 400, &early); });
  EXPECT_EQ(early, 0) << "a wait ended before anything was freed";
  for (int e : r) EXPECT_EQ(e, 0) << strerror(e);
  EXPECT_GT(g_handled.load(), 100) << "the storm must really have hit the waiters";
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.fail_interrupted.load(), 0u);
  EXPECT_EQ(s.alloc_waited.load(), 8u);
  EXPECT_EQ(s.wait_count.load(), 8u);
  EXPECT_GE(s.wait_sum_ns.load(), 8u * 300'000'000u);  // each waited through the storm
  // No corrupted state: nothing in use, nobody waiting, both pages back and usable.
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(s.blocked_now.load(), 0);
  EXPECT_EQ(s.elements_total.load(), 2);
  int e = 0;
  void* x = pool->Alloc(kHugePage2M, &e);
  void* y = pool->Alloc(kHugePage2M, &e);
  EXPECT_NE(x, nullptr);
  EXPECT_NE(y, nullptr);
  pool->Free(x);
  pool->Free(y);
}

TEST_F(PoolReliability, SignalStormInterruptibleWaitsEndWithEintrAndStateStaysWhole) {
  g_budget = 2;
  auto pool = Make(2, Mode::kBlock, /*interruptible=*/true);
  ASSERT_NE(pool, nullptr);
  g_handled = 0;
  long early = -1;
  std::vector<int> r;
  WithinOrDie(std::chrono::seconds(60), "interruptible waiters under a signal storm",
              [&] { r = WaitUnderStorm(pool.get(), 400, &early); });
  EXPECT_EQ(early, 8) << "every interruptible wait should have ended on a signal before the free";
  for (int e : r) EXPECT_EQ(e, EINTR) << strerror(e);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.fail_interrupted.load(), 8u);
  EXPECT_EQ(s.wait_count.load(), 8u);
  EXPECT_EQ(s.alloc_waited.load(), 0u);
  EXPECT_EQ(s.blocked_now.load(), 0);
  for (const Counter& w : s.waiter_start_ns) EXPECT_EQ(w.load(), 0u);
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(s.elements_total.load(), 2);
  EXPECT_EQ(ReserveLevel(s), 2);
  // Both pages are still there and handed out once each.
  int e = 0;
  void* x = pool->Alloc(kHugePage2M, &e);
  void* y = pool->Alloc(kHugePage2M, &e);
  ASSERT_NE(x, nullptr);
  ASSERT_NE(y, nullptr);
  EXPECT_NE(x, y);
  pool->Free(x);
  pool->Free(y);
}

}  // namespace
}  // namespace dmashim::testing
