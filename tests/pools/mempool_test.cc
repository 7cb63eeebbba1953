// Mempool semantics on real 2 MiB huge pages: wait modes, zeroing, reserve and keep levels, resize.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pools/maintenance.h"
#include "pools/mempool.h"
#include "tests/pools/pool_test_util.h"

namespace dmashim::testing {
namespace {

constexpr size_t k2M = kHugePage2M;

uint64_t Load(const Counter& c) { return c.load(); }
int64_t Load(const Gauge& g) { return g.load(); }

uint64_t HistogramTotal(const PoolStats& s) {
  uint64_t n = 0;
  for (const auto& b : s.wait_buckets) n += b.load();
  return n;
}

// ---- Prefill ------------------------------------------------------------------------------------

class MempoolPrefill : public HugePoolTest {};

// Two threads filling the reserve at once (the shim's start-up prefill and the maintenance thread's
// refill): each returns only when the reserve is held, not while the other is still mapping the
// rest. With a slow source the second caller used to return early, one element short, and the
// shim printed a spurious "got 3 of 4 reserve elements".
TEST_F(MempoolPrefill, ConcurrentCallersBothSeeTheWholeReserve) {
  constexpr size_t kReserve = 4;
  for (int round = 0; round < 3; ++round) {
    auto pool = MakePool(HugeOptions("prefill-race", kReserve, Mode::kFailFast));
    ASSERT_NE(pool, nullptr);
    TheFaults().mmap_delay_us = 20'000;
    std::atomic<size_t> other{0};
    std::thread t([&] { other = pool->Prefill(); });
    usleep(5'000);  // the other thread is inside its first (slow) map
    const size_t mine = pool->Prefill();
    t.join();
    TheFaults().mmap_delay_us = 0;
    EXPECT_EQ(mine, kReserve) << "round " << round;
    EXPECT_EQ(other.load(), kReserve) << "round " << round;
    EXPECT_EQ(Load(pool->stats().source_calls), kReserve) << "no element mapped twice";
  }
}

// The pool lock is biased to a thread that keeps using the pool (its hits then make no atomic
// read-modify-write), unless the pool was made with biased_lock = false (config biased_locks).
TEST_F(MempoolPrefill, TheLockIsBiasedToTheAllocatingThreadUnlessTurnedOff) {
  for (bool biased : {true, false}) {
    MempoolOptions o = HugeOptions(biased ? "biased" : "unbiased", 2, Mode::kFailFast);
    o.biased_lock = biased;
    auto pool = MakePool(std::move(o));
    ASSERT_NE(pool, nullptr);
    ASSERT_EQ(pool->Prefill(), 2u);
    // Runs of 20 hits, 2 ms apart: the maintenance thread's first look at the new pool (which
    // takes its lock) may revoke a bias, and the next comes no sooner than 1 ms after.
    int rounds = 0;
    for (; rounds < 50 && !pool->LockBiasedToCaller(); ++rounds) {
      usleep(2000);
      for (int i = 0; i < 20; ++i) {
        int err = 0;
        void* p = pool->Alloc(k2M, &err);
        ASSERT_NE(p, nullptr) << strerror(err);
        static_cast<char*>(p)[0] = 1;
        ASSERT_TRUE(pool->Free(p));
      }
    }
    EXPECT_EQ(pool->LockBiasedToCaller(), biased && BiasedLock::Biasable()) << "biased_lock " << biased;
    EXPECT_EQ(Load(pool->stats().alloc_reserve), 20u * rounds);
    EXPECT_EQ(Load(pool->stats().frees), 20u * rounds);
  }
}

// The maintenance thread's look at a pool with nothing to do takes no lock, so it does not revoke
// the bias of the thread using the pool; once there is work (a raised reserve) it does.
TEST_F(MempoolPrefill, UpkeepOfAnIdlePoolLeavesTheBiasAlone) {
  if (!BiasedLock::Biasable()) GTEST_SKIP() << "a ThreadSanitizer build never biases";
  MempoolOptions o = HugeOptions("idle-upkeep", 2, Mode::kFailFast);
  o.zero = ZeroMode::kNone;
  auto pool = MakePool(std::move(o));
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 2u);
  auto upkeep = [&] {  // as the maintenance thread calls it
    int worked = 0;
    std::thread([&] {
      BiasedLock::NeverBiasThisThread();
      while (pool->Maintain()) ++worked;
    }).join();
    return worked;
  };
  upkeep();  // whatever the fill left: the pool is idle from here on
  for (int round = 0; round < 50 && !pool->LockBiasedToCaller(); ++round) {
    usleep(2000);  // a bias comes no sooner than 1 ms after the last revocation
    for (int i = 0; i < 20; ++i) {
      int err = 0;
      void* p = pool->Alloc(k2M, &err);
      ASSERT_NE(p, nullptr) << strerror(err);
      ASSERT_TRUE(pool->Free(p));
    }
  }
  ASSERT_TRUE(pool->LockBiasedToCaller());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(upkeep(), 0);
  EXPECT_TRUE(pool->LockBiasedToCaller()) << "an idle pool's upkeep revoked the bias";
  const ResizeResult r = pool->Resize(3);  // a raised reserve: the upkeep looks (a refill?)
  ASSERT_EQ(r.held, 3u);
  upkeep();
  EXPECT_FALSE(pool->LockBiasedToCaller()) << "the upkeep of a pool with work took its lock";
}

// ---- 1. Block mode never fails while the reserve covers the demand -------------------------------

class MempoolBlock : public HugePoolTest {};

TEST_F(MempoolBlock, BlockModeNeverFailsWhileReserveCovers) {
  constexpr size_t kReserve = 4;
  constexpr int kThreads = 8;
  constexpr int kIters = 150;
  auto o = HugeOptions("block-reserve", kReserve, Mode::kBlock);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), kReserve);
  TheFaults().fail_mmap = true;  // from now on the kernel has no huge page for this pool

  std::atomic<int> failures{0}, wrong_content{0};
  std::atomic<int> holding{0}, max_holding{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        int err = 0;
        void* p = pool->Alloc(k2M, &err);
        if (p == nullptr) {
          failures.fetch_add(1);
          continue;
        }
        const int h = holding.fetch_add(1) + 1;
        int m = max_holding.load();
        while (h > m && !max_holding.compare_exchange_weak(m, h)) {
        }
        auto* w = static_cast<uint64_t*>(p);
        if (w[0] != 0 || w[k2M / 8 - 1] != 0) wrong_content.fetch_add(1);
        w[0] = static_cast<uint64_t>(t) + 1;
        w[k2M / 8 - 1] = static_cast<uint64_t>(i) + 1;
        std::this_thread::yield();
        if (w[0] != static_cast<uint64_t>(t) + 1 || w[k2M / 8 - 1] != static_cast<uint64_t>(i) + 1) {
          wrong_content.fetch_add(1);
        }
        holding.fetch_sub(1);
        pool->Free(p);
      }
    });
  }
  for (auto& th : threads) th.join();

  const PoolStats& s = pool->stats();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(wrong_content.load(), 0);
  EXPECT_LE(max_holding.load(), static_cast<int>(kReserve));
  EXPECT_EQ(Load(s.fail_fast) + Load(s.fail_timeout) + Load(s.fail_interrupted) +
                Load(s.fail_source),
            0u);
  const uint64_t allocs = Load(s.alloc_source) + Load(s.alloc_reserve) + Load(s.alloc_waited);
  EXPECT_EQ(allocs, static_cast<uint64_t>(kThreads * kIters));
  EXPECT_EQ(Load(s.alloc_source), 0u);  // the source was failing the whole time
  EXPECT_GT(Load(s.alloc_waited), 0u) << "8 threads on a reserve of 4 should have waited";
  // Every wait is counted: once in wait_count, once in the histogram.
  EXPECT_EQ(Load(s.wait_count), Load(s.alloc_waited));
  EXPECT_EQ(HistogramTotal(s), Load(s.wait_count));
  EXPECT_EQ(Load(s.blocked_now), 0);
  EXPECT_EQ(Load(s.frees), allocs);
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(Load(s.elements_total), static_cast<int64_t>(kReserve));
  EXPECT_EQ(Load(s.high_water), static_cast<int64_t>(kReserve));
}

// ---- 2. Wait modes ---------------------------------------------------------------------------------

class MempoolWait : public HugePoolTest {};

TEST_F(MempoolWait, BlockWaitsForFreeAndWakesWhenItComes) {
  auto o = HugeOptions("block-wake", 1, Mode::kBlock);
  // Source retries far apart: only the free's wake-up can end the wait quickly.
  o.retry_interval = absl::Seconds(20);
  o.retry_max = absl::Seconds(20);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);
  ASSERT_NE(held, nullptr) << strerror(err);
  TheFaults().fail_mmap = true;

  std::atomic<void*> got{nullptr};
  std::atomic<uint64_t> done_ns{0};
  std::thread waiter([&] {
    int e = 0;
    got = pool->Alloc(k2M, &e);
    done_ns = MonotonicNs();
  });
  ASSERT_TRUE(WaitFor([&] { return pool->stats().blocked_now.load() == 1; }, 5000));
  usleep(100'000);
  EXPECT_EQ(got.load(), nullptr) << "the waiter must not complete before the free";
  EXPECT_EQ(pool->stats().waiter_start_ns[0].load() != 0, true);
  const uint64_t freed_ns = MonotonicNs();
  ASSERT_TRUE(pool->Free(held));
  waiter.join();
  EXPECT_EQ(got.load(), held) << "the freed element goes to the waiter";
  EXPECT_LT(done_ns.load() - freed_ns, 1'000'000'000u) << "woken by the free, not a retry";
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.alloc_waited.load(), 1u);
  EXPECT_EQ(s.wait_count.load(), 1u);
  EXPECT_GE(s.wait_sum_ns.load(), 100'000'000u);
  EXPECT_EQ(s.blocked_now.load(), 0);
  EXPECT_EQ(s.waiter_start_ns[0].load(), 0u);
  pool->Free(got.load());
}

TEST_F(MempoolWait, TimeoutFailsAfterAboutItsBoundAndCountsTimeout) {
  auto o = HugeOptions("timeout", 1, Mode::kTimeout);
  o.policy.timeout = absl::Milliseconds(300);
  o.retry_interval = absl::Milliseconds(20);
  o.retry_max = absl::Milliseconds(40);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);
  ASSERT_NE(held, nullptr);
  TheFaults().fail_mmap = true;

  const uint64_t t0 = MonotonicNs();
  err = 0;
  void* p = pool->Alloc(k2M, &err);
  const uint64_t elapsed = MonotonicNs() - t0;
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(err, ENOMEM);
  EXPECT_GE(elapsed, 300'000'000u);
  EXPECT_LT(elapsed, 800'000'000u);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.fail_timeout.load(), 1u);
  EXPECT_EQ(s.fail_fast.load(), 0u);
  EXPECT_EQ(s.wait_count.load(), 1u);
  EXPECT_GT(s.source_failures.load(), 3u) << "the source is retried while waiting";
  EXPECT_EQ(s.blocked_now.load(), 0);

  // A per-call policy overrides the pool's: a 50 ms timeout on the same pool.
  WaitPolicy shorter{Mode::kTimeout, absl::Milliseconds(50), false};
  const uint64_t t1 = MonotonicNs();
  EXPECT_EQ(pool->Alloc(k2M, shorter, &err), nullptr);
  EXPECT_EQ(err, ENOMEM);
  EXPECT_GE(MonotonicNs() - t1, 50'000'000u);
  EXPECT_LT(MonotonicNs() - t1, 300'000'000u);
  EXPECT_EQ(s.fail_timeout.load(), 2u);
  pool->Free(held);
}

TEST_F(MempoolWait, FailFastFailsAtOnceAndCountsFailFast) {
  auto pool = MakePool(HugeOptions("fail-fast", 1, Mode::kFailFast));
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);
  ASSERT_NE(held, nullptr);
  TheFaults().fail_mmap = true;
  for (int i = 0; i < 3; ++i) {
    err = 0;
    const uint64_t t0 = MonotonicNs();
    EXPECT_EQ(pool->Alloc(k2M, &err), nullptr);
    EXPECT_LT(MonotonicNs() - t0, 20'000'000u);
    EXPECT_EQ(err, ENOMEM);
  }
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.fail_fast.load(), 3u);
  EXPECT_EQ(s.fail_timeout.load(), 0u);
  EXPECT_EQ(s.wait_count.load(), 0u);
  EXPECT_EQ(s.source_failures.load(), 3u) << "the source is tried once per call, without waiting";
  // Once an element comes back, fail-fast succeeds from the free list without a system call.
  const long calls = TheFaults().mmap_calls.load();
  ASSERT_TRUE(pool->Free(held));
  void* again = pool->Alloc(k2M, &err);
  EXPECT_EQ(again, held);
  EXPECT_EQ(TheFaults().mmap_calls.load(), calls);
  pool->Free(again);
}

TEST_F(MempoolWait, SourceErrorWaitingCannotFixFailsAtOnce) {
  auto o = HugeOptions("einval", 0, Mode::kBlock);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  TheFaults().fail_mmap = true;
  TheFaults().err = EINVAL;
  int err = 0;
  const uint64_t t0 = MonotonicNs();
  EXPECT_EQ(pool->Alloc(k2M, &err), nullptr);
  EXPECT_EQ(err, EINVAL);
  EXPECT_LT(MonotonicNs() - t0, 20'000'000u);
  EXPECT_EQ(pool->stats().fail_source.load(), 1u);
  EXPECT_EQ(pool->stats().wait_count.load(), 0u);
}

std::atomic<int> g_signals{0};
void CountSignal(int) { g_signals.fetch_add(1); }

void InstallHandler() {
  struct sigaction sa = {};
  sa.sa_handler = CountSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART
  ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
}

TEST_F(MempoolWait, InterruptibleWaitEndsWithEintrOnSignal) {
  InstallHandler();
  auto o = HugeOptions("interruptible", 1, Mode::kBlock);
  o.policy.interruptible = true;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);
  ASSERT_NE(held, nullptr);
  TheFaults().fail_mmap = true;

  std::atomic<bool> done{false};
  std::atomic<void*> got{reinterpret_cast<void*>(1)};
  std::atomic<int> got_err{0};
  std::thread waiter([&] {
    int e = 0;
    got = pool->Alloc(k2M, &e);
    got_err = e;
    done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return pool->stats().blocked_now.load() == 1; }, 5000));
  const int before = g_signals.load();
  ASSERT_EQ(pthread_kill(waiter.native_handle(), SIGUSR1), 0);
  EXPECT_TRUE(WaitFor([&] { return done.load(); }, 2000));
  waiter.join();
  EXPECT_EQ(g_signals.load(), before + 1);
  EXPECT_EQ(got.load(), nullptr);
  EXPECT_EQ(got_err.load(), EINTR);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.fail_interrupted.load(), 1u);
  EXPECT_EQ(s.blocked_now.load(), 0);
  EXPECT_EQ(s.wait_count.load(), 1u);
  pool->Free(held);
}

TEST_F(MempoolWait, UninterruptibleWaitSurvivesSignal) {
  InstallHandler();
  auto o = HugeOptions("uninterruptible", 1, Mode::kBlock);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);
  ASSERT_NE(held, nullptr);
  TheFaults().fail_mmap = true;

  std::atomic<bool> done{false};
  std::atomic<void*> got{nullptr};
  std::thread waiter([&] {
    int e = 0;
    got = pool->Alloc(k2M, &e);
    done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return pool->stats().blocked_now.load() == 1; }, 5000));
  const int before = g_signals.load();
  ASSERT_EQ(pthread_kill(waiter.native_handle(), SIGUSR1), 0);
  ASSERT_TRUE(WaitFor([&] { return g_signals.load() == before + 1; }, 2000));
  usleep(100'000);
  EXPECT_FALSE(done.load()) << "a signal must not end an uninterruptible wait";
  ASSERT_TRUE(pool->Free(held));
  waiter.join();
  EXPECT_EQ(got.load(), held);
  EXPECT_EQ(pool->stats().fail_interrupted.load(), 0u);
  EXPECT_EQ(pool->stats().alloc_waited.load(), 1u);
  pool->Free(got.load());
}

// ---- 4. Zero on reuse --------------------------------------------------------------------------------

class MempoolZero : public HugePoolTest {
 protected:
  static std::unique_ptr<Mempool> ZeroPool(const char* name, size_t reserve, Mode mode,
                                           ZeroMode zero) {
    auto o = HugeOptions(name, reserve, mode);
    o.zero = zero;
    return MakePool(o);
  }
  // Allocates an element, checks that it comes zeroed and fills it: the element, or nullptr after
  // a failed assertion.
  static void* UseOnceHeld(Mempool* pool, int round) {
    int err = 0;
    void* a = pool->Alloc(k2M, &err);
    EXPECT_NE(a, nullptr) << "round " << round << ": " << strerror(err);
    if (a == nullptr) return nullptr;
    EXPECT_TRUE(AllZero(a, k2M)) << "round " << round << ": handed out dirty";
    memset(a, 0x40 + round % 64, k2M);
    return a;
  }
  // One use of an element: allocate it, check that it comes zeroed, fill it with `fill`, free it.
  // Returns the element (still the pool's), or nullptr after a failed assertion.
  static void* UseOnce(Mempool* pool, int fill, int round) {
    int err = 0;
    void* a = pool->Alloc(k2M, &err);
    EXPECT_NE(a, nullptr) << "round " << round << ": " << strerror(err);
    if (a == nullptr) return nullptr;
    EXPECT_TRUE(AllZero(a, k2M)) << "round " << round << ": handed out dirty";
    memset(a, fill, k2M);
    EXPECT_TRUE(pool->Free(a)) << "round " << round;
    return a;
  }
};

TEST_F(MempoolZero, RecycledElementsAreZeroInEagerMode) {
  auto pool = ZeroPool("zero-eager", 2, Mode::kFailFast, ZeroMode::kEager);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  for (int round = 0; round < 3; ++round) {
    void* a = pool->Alloc(k2M, &err);
    void* b = pool->Alloc(k2M, &err);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_TRUE(AllZero(a, k2M)) << "round " << round;
    EXPECT_TRUE(AllZero(b, k2M)) << "round " << round;
    memset(a, 0x5a, k2M);
    memset(b, 0xa5, k2M);
    pool->Free(a);
    // Eager: zeroed by the time Free returns.
    EXPECT_TRUE(AllZero(a, k2M));
    pool->Free(b);
  }
  EXPECT_EQ(pool->stats().source_calls.load(), 2u) << "elements were recycled, not remapped";
}

TEST_F(MempoolZero, RecycledElementsAreZeroedAheadOfTimeInBackgroundMode) {
  auto pool = ZeroPool("zero-background", 2, Mode::kFailFast, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* a = pool->Alloc(k2M, &err);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(AllZero(a, k2M));
  memset(a, 0x77, k2M);
  const size_t zeroed_before = pool->free_zeroed();  // the reserve's other, never used element
  pool->Free(a);
  EXPECT_TRUE(WaitFor([] { return MaintenanceThreadsRunning() == 1; }, 2000))
      << "background zeroing starts the maintenance thread";
  // The maintenance thread zeroes the freed element while it sits on the free list. The element is
  // the pool's until the pool reports it zeroed: reading it before then would race with the zeroing
  // (ThreadSanitizer reported exactly that when this test polled the element's last byte).
  EXPECT_TRUE(WaitFor([&] { return pool->free_zeroed() == zeroed_before + 1; }, 3000))
      << "the maintenance thread did not zero the freed element";
  EXPECT_TRUE(AllZero(a, k2M)) << "counted as zeroed but still dirty";

  // Dirty elements taken before the thread got to them are zeroed inline: never dirty on reuse.
  for (int i = 0; i < 20; ++i) ASSERT_NE(UseOnce(pool.get(), 0x11 + i, i), nullptr);
  EXPECT_EQ(MaintenanceThreadsRunning(), 1) << "one maintenance thread, however many frees";
}

// A run of background frees kicks the maintenance thread once (the first onto an empty dirty list:
// a kick per free cost every hit's unmap a locked add): the thread, woken from its sleep by that
// kick, zeroes the whole run without another. A lost wake-up would leave the run to the thread's
// 100 ms tick, so each round must finish well inside it.
TEST_F(MempoolZero, ARunOfFreesIsZeroedAfterOneKickFromASleepingThread) {
  constexpr int kRun = 4;
  auto pool = ZeroPool("zero-run", kRun, Mode::kFailFast, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), size_t{kRun});
  for (int round = 0; round < 3; ++round) {
    void* held[kRun];
    int err = 0;
    for (void*& p : held) {
      p = pool->Alloc(k2M, &err);
      ASSERT_NE(p, nullptr) << strerror(err);
      memset(p, 0x42 + round, k2M);
    }
    // Past the thread's 200 ms of polling after its last work: it sleeps until kicked.
    usleep(350'000);
    const uint64_t t0 = MonotonicNs();
    for (void* p : held) ASSERT_TRUE(pool->Free(p));
    ASSERT_TRUE(WaitFor([&] { return pool->free_zeroed() == kRun; }, 2000))
        << "round " << round << ": the run was not zeroed";
    const uint64_t took_ms = (MonotonicNs() - t0) / 1'000'000;
    EXPECT_LT(took_ms, 60u) << "round " << round << ": zeroed only after " << took_ms
                            << " ms (the thread's tick, not a kick?)";
    for (void* p : held) EXPECT_TRUE(AllZero(p, k2M)) << "round " << round;
  }
}

// Eager zeroing of a freed 2 MiB element is shared with the maintenance thread (DESIGN §8, the
// sustained cycle): the freeing thread asks it to help and both zero 64 KiB chunks. Every byte is
// still zero when Free returns, whichever core wrote it.
TEST_F(MempoolZero, EagerZeroingIsSharedWithTheMaintenanceThread) {
  auto pool = ZeroPool("zero-shared", 1, Mode::kFailFast, ZeroMode::kEager);
  ASSERT_NE(pool, nullptr);
  // The maintenance thread helps when it is on a CPU within the ≈ 30 µs a zeroing takes: on a busy
  // machine some rounds are done alone, so run until it has helped (bounded).
  for (int round = 0; round < 2000 && pool->zero_chunks_shared() == 0; ++round) {
    void* a = UseOnce(pool.get(), 0x5a, round);
    ASSERT_NE(a, nullptr);
    ASSERT_TRUE(AllZero(a, k2M)) << "round " << round << ": not all zero when Free returned";
  }
  EXPECT_GT(pool->zero_chunks_shared(), 0u) << "the maintenance thread never helped zero";
  EXPECT_EQ(pool->stats().source_calls.load(), 1u);
}

// Background zeroing under a sustained loop on a one-element pool: when the maintenance thread is
// zeroing the only free element, the allocator takes it and helps finish it instead of mapping a
// new page from the kernel (it used to: the pool grew past its reserve and the loop slowed to the
// kernel's pace).
TEST_F(MempoolZero, AllocatorJoinsTheZeroingOfTheOnlyFreeElement) {
  auto pool = ZeroPool("zero-join", 1, Mode::kBlock, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  for (int round = 0; round < 300; ++round) ASSERT_NE(UseOnce(pool.get(), 0x3c, round), nullptr);
  EXPECT_EQ(pool->stats().source_calls.load(), 1u)
      << "an allocation mapped a new page while the only element was being zeroed";
  EXPECT_GT(pool->zero_chunks_shared(), 0u) << "no allocation joined a zeroing under way";
}

// The maintenance thread watches for requests on the CPU for a while after its work, which pays
// when they come every few tens of microseconds (a sustained stream). When they come further apart
// the watch shrinks: background frees 2 ms apart must not keep a core spinning 100 µs after each
// zeroing (300 frees: 30 ms of spinning with a fixed watch; about 1.5 ms with the adaptive one).
TEST_F(MempoolZero, MaintenanceThreadDoesNotSpinBetweenSparseRequests) {
  auto pool = ZeroPool("zero-sparse", 1, Mode::kFailFast, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  constexpr int kFrees = 300;
  const uint64_t before = MaintenanceSpinNs();
  for (int round = 0; round < kFrees; ++round) {
    ASSERT_NE(UseOnce(pool.get(), 1, round), nullptr);
    usleep(2000);
  }
  const uint64_t spun = MaintenanceSpinNs() - before;
  EXPECT_GT(spun, 0u) << "the thread never watched after its work";
  EXPECT_LT(spun, 10'000'000u) << "spun " << spun / 1000 << " us over " << kFrees
                               << " frees 2 ms apart";
}

// Background zeroing of elements freed while the pool still has clean ones goes through a queue
// the maintenance thread works on without the pool lock: the thread that keeps using the pool keeps
// its lock's bias (the lock used to be taken, and the bias revoked with a membarrier — an interrupt
// on the owner's CPU — for every element zeroed), and every element still comes back zeroed.
TEST_F(MempoolZero, BackgroundZeroingLeavesTheLockBiasAlone) {
  if (!BiasedLock::Biasable()) GTEST_SKIP() << "a ThreadSanitizer build never biases";
  constexpr size_t kReserve = 8, kBatch = 4;
  auto pool = ZeroPool("zero-bias", kReserve, Mode::kFailFast, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), kReserve);
  auto batch = [&](int round) {
    void* held[kBatch];
    for (void*& p : held) {
      p = UseOnceHeld(pool.get(), round);
      if (p == nullptr) return false;
    }
    for (void* p : held) EXPECT_TRUE(pool->Free(p));
    // The maintenance thread zeroes the batch (the pool counts an element zeroed only then).
    return WaitFor([&] { return pool->free_zeroed() == kReserve; }, 3000);
  };
  // The first batch's kick starts the maintenance thread, whose first look at a new pool takes its
  // lock (it may need a refill). Then batches 2 ms apart until the lock is biased to this thread (a
  // bias comes no sooner than 1 ms after a revocation).
  ASSERT_TRUE(batch(0)) << "the first batch was not zeroed";
  int round = 1;
  for (; round < 50 && !pool->LockBiasedToCaller(); ++round) {
    usleep(2000);
    ASSERT_TRUE(batch(round)) << "round " << round << ": the batch was not zeroed";
  }
  ASSERT_TRUE(pool->LockBiasedToCaller());
  for (int i = 0; i < 20; ++i, ++round) {
    ASSERT_TRUE(batch(round)) << "round " << round << ": the batch was not zeroed";
    ASSERT_TRUE(pool->LockBiasedToCaller()) << "round " << round << ": the zeroing revoked the bias";
  }
  EXPECT_EQ(pool->stats().source_calls.load(), kReserve) << "elements were recycled, not remapped";
  EXPECT_EQ(pool->stats().elements_total.load(), static_cast<int64_t>(kReserve));
}

// An allocation that finds nothing free but elements still queued for zeroing zeroes one itself
// (or waits for the thread zeroing it) instead of mapping a new page — with `max` reached, the
// fail-fast pool would fail instead. Elements freed and taken back at once, round after round:
// most of them before the maintenance thread got to them.
TEST_F(MempoolZero, AnAllocationTakesAnElementStillQueuedForZeroing) {
  auto o = HugeOptions("zero-queued-take", 2, Mode::kFailFast);
  o.zero = ZeroMode::kBackground;
  o.max = 2;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 2u);
  for (int round = 0; round < 200; ++round) {
    int err = 0;
    void* a = pool->Alloc(k2M, &err);  // the other element stays clean: a's free is queued
    ASSERT_NE(a, nullptr) << "round " << round << ": " << strerror(err);
    memset(a, 0x6b, k2M);
    ASSERT_TRUE(pool->Free(a));
    void* b = pool->Alloc(k2M, &err);
    void* c = pool->Alloc(k2M, &err);
    ASSERT_NE(b, nullptr) << "round " << round << ": " << strerror(err);
    ASSERT_NE(c, nullptr) << "round " << round << ": " << strerror(err)
                          << " (the queued element was not taken)";
    EXPECT_TRUE(AllZero(b, k2M) && AllZero(c, k2M)) << "round " << round << ": handed out dirty";
    ASSERT_TRUE(pool->Free(b));
    ASSERT_TRUE(pool->Free(c));
    ASSERT_TRUE(WaitFor([&] { return pool->free_zeroed() == 2; }, 3000)) << "round " << round;
  }
  EXPECT_EQ(pool->stats().source_calls.load(), 2u) << "an allocation mapped a new page";
  EXPECT_EQ(pool->stats().fail_fast.load(), 0u);
}

// A munmap(MAP_FIXED) range over an element queued for zeroing (ReleaseRange) waits for its
// zeroing, then evicts it: unmapped, no longer the pool's, and its queue position skipped — the
// pool never hands the address out from the queue again, and still counts its other elements.
TEST_F(MempoolZero, ReleaseRangeEvictsAnElementQueuedForZeroing) {
  auto pool = ZeroPool("zero-queued-evict", 3, Mode::kFailFast, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 3u);
  int err = 0;
  void* a = pool->Alloc(k2M, &err);
  void* b = pool->Alloc(k2M, &err);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  memset(a, 0x2d, k2M);
  ASSERT_TRUE(pool->Free(a));  // queued: one clean element is left
  const RangeReleased r = pool->ReleaseRange(a, k2M);
  EXPECT_EQ(r.evicted, 1u);
  EXPECT_FALSE(pool->Owns(a));
  EXPECT_EQ(pool->free_zeroed(), 1u) << "the evicted element still counted as free";
  EXPECT_EQ(pool->stats().elements_total.load(), 2);
  EXPECT_EQ(pool->stats().source_releases.load(), 1u);
  // The remaining clean element, then (the evicted position skipped) a new page from the source.
  void* c = pool->Alloc(k2M, &err);
  ASSERT_NE(c, nullptr) << strerror(err);
  void* d = pool->Alloc(k2M, &err);
  ASSERT_NE(d, nullptr) << strerror(err);
  EXPECT_TRUE(AllZero(c, k2M) && AllZero(d, k2M));
  EXPECT_EQ(pool->stats().source_calls.load(), 4u);
  for (void* p : {b, c, d}) EXPECT_TRUE(pool->Free(p));
}

// A pool destroyed with elements in its zeroing queue — zeroed and not taken yet, or not zeroed
// yet — returns them to the kernel (the maintenance thread has let go of the pool by then).
TEST_F(MempoolZero, DestroyingAPoolReturnsItsQueuedElements) {
  constexpr size_t kReserve = 6;
  for (bool zeroed : {false, true}) {
    auto pool = ZeroPool("zero-queued-gone", kReserve, Mode::kFailFast, ZeroMode::kBackground);
    ASSERT_NE(pool, nullptr);
    ASSERT_EQ(pool->Prefill(), kReserve);
    std::vector<void*> held;
    int err = 0;
    for (size_t i = 0; i + 1 < kReserve; ++i) {
      held.push_back(pool->Alloc(k2M, &err));
      ASSERT_NE(held.back(), nullptr) << strerror(err);
    }
    for (void* p : held) ASSERT_TRUE(pool->Free(p));  // queued behind the one clean element
    if (zeroed) {
      ASSERT_TRUE(WaitFor([&] { return pool->free_zeroed() == kReserve; }, 3000));
    }
    const long free_before = FreeHugePages2M();
    pool.reset();
    EXPECT_GE(FreeHugePages2M() - free_before, static_cast<long>(kReserve) - 1)
        << (zeroed ? "zeroed" : "not yet zeroed");
  }
}

TEST_F(MempoolZero, NoneModeKeepsPreviousContents) {
  auto pool = ZeroPool("zero-none", 1, Mode::kFailFast, ZeroMode::kNone);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* a = pool->Alloc(k2M, &err);
  ASSERT_NE(a, nullptr);
  FillPattern(a, k2M, 42);
  pool->Free(a);
  void* b = pool->Alloc(k2M, &err);
  ASSERT_EQ(b, a);
  EXPECT_TRUE(HasPattern(b, k2M, 42)) << "zero = none is the explicit opt-out of zeroing";
  pool->Free(b);
}

// ---- 5. Reserve and keep levels, resize --------------------------------------------------------------

class MempoolLevels : public HugePoolTest {};

TEST_F(MempoolLevels, NeverDropsBelowReserve) {
  auto o = HugeOptions("below-reserve", 6, Mode::kFailFast);
  o.keep = 2;  // keep fewer free than the reserve: the reserve still wins
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->Prefill(), 6u);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(ReserveLevel(s), 6);
  EXPECT_EQ(s.reserve_target.load(), 6);
  std::vector<void*> held;
  int err = 0;
  for (int i = 0; i < 10; ++i) {
    void* p = pool->Alloc(k2M, &err);
    ASSERT_NE(p, nullptr) << strerror(err);
    held.push_back(p);
    EXPECT_GE(s.elements_total.load(), 6);
  }
  EXPECT_EQ(s.alloc_reserve.load(), 6u);
  EXPECT_EQ(s.alloc_source.load(), 4u);
  EXPECT_EQ(s.elements_total.load(), 10);
  for (void* p : held) {
    ASSERT_TRUE(pool->Free(p));
    EXPECT_GE(s.elements_total.load(), 6) << "dropped below the reserve";
  }
  EXPECT_EQ(s.elements_total.load(), 6);
  EXPECT_EQ(ReserveLevel(s), 6);
  EXPECT_EQ(s.source_releases.load(), 4u);
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(s.high_water.load(), 10);
  EXPECT_FALSE(pool->Free(held[0])) << "a double free is refused";
}

TEST_F(MempoolLevels, KeepsAtMostKeepFree) {
  auto o = HugeOptions("keep", 2, Mode::kFailFast);
  o.keep = 4;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->keep(), 4u);
  std::vector<void*> held;
  int err = 0;
  for (int i = 0; i < 12; ++i) {
    void* p = pool->Alloc(k2M, &err);
    ASSERT_NE(p, nullptr) << strerror(err);
    held.push_back(p);
  }
  const long free_before = FreeHugePages2M();
  for (void* p : held) {
    pool->Free(p);
    EXPECT_LE(ReserveLevel(pool->stats()), 4);
  }
  const PoolStats& s = pool->stats();
  EXPECT_EQ(ReserveLevel(s), 4);
  EXPECT_EQ(s.elements_total.load(), 4);
  EXPECT_EQ(s.source_releases.load(), 8u);
  // The 8 released pages really went back to the kernel (other processes may move this a little).
  EXPECT_GE(FreeHugePages2M() - free_before, 6);

  // The default keep is max(reserve, 8).
  auto dflt = MakePool(HugeOptions("keep-default", 3, Mode::kFailFast));
  ASSERT_NE(dflt, nullptr);
  EXPECT_EQ(dflt->keep(), 8u);
}

TEST_F(MempoolLevels, ResizeGrowPartialSaysHowFar) {
  auto o = HugeOptions("resize-partial", 2, Mode::kFailFast);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 2u);
  TheFaults().budget = 3;  // the kernel has 3 more pages for us, then none
  ResizeResult r = pool->Resize(8);
  EXPECT_EQ(r.target, 8u);
  EXPECT_EQ(r.held, 5u);
  EXPECT_EQ(r.err, ENOMEM);
  EXPECT_EQ(pool->reserve(), 8u);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.reserve_target.load(), 8);
  EXPECT_EQ(s.elements_total.load(), 5);
  // When pages come back, growing again completes.
  TheFaults().budget = -1;
  r = pool->Resize(8);
  EXPECT_EQ(r.held, 8u);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(ReserveLevel(s), 8);
}

TEST_F(MempoolLevels, ResizeGrowPartialReportsTheSourcesErrno) {
  MempoolOptions o;
  o.name = "resize-errno";
  o.source.kind = SourceKind::kAnon;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  TheFaults().budget = 1;
  TheFaults().err = EPERM;  // e.g. a lock limit: not a plain shortage
  ResizeResult r = pool->Resize(4);
  EXPECT_EQ(r.held, 1u);
  EXPECT_EQ(r.err, EPERM) << "the errno that stopped the grow, not a generic ENOMEM";
}

TEST_F(MempoolLevels, ResizeShrinkReturnsSurplus) {
  auto o = HugeOptions("resize-shrink", 8, Mode::kFailFast);
  o.keep = 2;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 8u);
  int err = 0;
  void* held = pool->Alloc(k2M, &err);  // one in use survives any shrink
  ASSERT_NE(held, nullptr);
  ResizeResult r = pool->Resize(1);
  EXPECT_EQ(r.target, 1u);
  EXPECT_EQ(r.err, 0);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(s.reserve_target.load(), 1);
  EXPECT_EQ(InUse(s), 1);
  EXPECT_LE(ReserveLevel(s), 2) << "at most keep free after a shrink";
  EXPECT_EQ(s.elements_total.load(), 1 + ReserveLevel(s));
  EXPECT_EQ(r.held, static_cast<size_t>(s.elements_total.load()));
  EXPECT_EQ(s.source_releases.load(), static_cast<uint64_t>(8 - s.elements_total.load()));
  EXPECT_TRUE(pool->Free(held));
  EXPECT_EQ(s.elements_total.load(), 2);
}

TEST_F(MempoolLevels, MaxCapsElementsInUse) {
  auto o = HugeOptions("max", 1, Mode::kFailFast);
  o.max = 3;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  std::vector<void*> held;
  int err = 0;
  for (int i = 0; i < 3; ++i) {
    void* p = pool->Alloc(k2M, &err);
    ASSERT_NE(p, nullptr);
    held.push_back(p);
  }
  EXPECT_EQ(pool->Alloc(k2M, &err), nullptr);
  EXPECT_EQ(err, ENOMEM);
  EXPECT_EQ(pool->stats().fail_fast.load(), 1u);
  EXPECT_EQ(InUse(pool->stats()), 3);
  for (void* p : held) pool->Free(p);
}

// Found by the wake-up benchmark: a free landing between an allocation's look at the free list and
// its source call let the pool map a second element beside the free one, past `max`. Two threads
// pass one element back and forth, so nearly every allocation misses while the other thread is
// about to free; waits are bounded so a lost element fails the test instead of hanging it.
TEST(MempoolMaxRace, MaxHoldsWhileFreesRaceWithAllocations) {
  MempoolOptions o;
  o.name = "max-race";
  o.source = SourceSpec{SourceKind::kAnon, false};
  o.reserve = 1;
  o.max = 1;
  o.zero = ZeroMode::kNone;
  o.policy.mode = Mode::kTimeout;
  o.policy.timeout = absl::Seconds(5);
  auto pool = *Mempool::Create(std::move(o));
  ASSERT_EQ(pool->Prefill(), 1u);
  constexpr int kRounds = 50000;
  std::atomic<int> holder{0};  // who may allocate next: 0 main, 1 partner
  std::atomic<int> lost{0};
  std::thread partner([&] {
    int e = 0;
    for (int i = 0; i < kRounds && lost.load() == 0; ++i) {
      while (holder.load() != 1 && lost.load() == 0) {
      }
      void* got = pool->Alloc(4096, &e);
      if (got == nullptr) ++lost;
      holder.store(0);
      if (got != nullptr) pool->Free(got);
    }
  });
  int err = 0;
  for (int i = 0; i < kRounds && lost.load() == 0; ++i) {
    void* got = pool->Alloc(4096, &err);
    if (got == nullptr) ++lost;
    holder.store(1);
    if (got != nullptr) pool->Free(got);
    while (holder.load() != 0 && lost.load() == 0) {
    }
  }
  partner.join();
  EXPECT_EQ(lost.load(), 0);
  EXPECT_EQ(pool->stats().elements_total.load(), 1);
  EXPECT_EQ(pool->stats().high_water.load(), 1);
  EXPECT_EQ(pool->stats().source_calls.load(), 1u);  // the prefill, nothing since
}

// A pool that keeps nothing unmaps an element on its free, and the kernel may hand the same
// address to another pool's next map, in another thread, with nothing between the two threads but
// the kernel's own ordering (no lock in common). The memory is new: zero, and — under
// ThreadSanitizer, which cannot see the pools' raw mmap/munmap system calls — no race with what the
// first thread did at that address (found by the stress test under TSan in CI, once in 30 runs).
TEST(MempoolSource, AnAddressUnmappedByOnePoolAndMappedAgainByAnotherIsNewMemory) {
  auto make = [](const char* name) {
    MempoolOptions o;
    o.name = name;
    o.source = SourceSpec{SourceKind::kAnon, false};
    o.reserve = 0;
    o.keep = 0;
    o.zero = ZeroMode::kNone;
    o.policy.mode = Mode::kFailFast;
    return *Mempool::Create(std::move(o));
  };
  auto one = make("reuse-1"), other = make("reuse-2");
  constexpr int kRounds = 20;
  int reused = 0;
  for (int round = 0; round < kRounds; ++round) {
    int err = 0;
    void* first = one->Alloc(4096, &err);
    ASSERT_NE(first, nullptr) << err;
    // Only a relaxed flag between the threads (the first one's writes come after the second one
    // started): no happens-before edge the race detector sees.
    std::atomic<bool> unmapped{false};
    void* again = nullptr;
    bool fresh = false, written = false;
    std::thread second([&] {
      while (!unmapped.load(std::memory_order_relaxed)) sched_yield();
      int e = 0;
      again = other->Alloc(4096, &e);
      if (again == nullptr) return;
      fresh = AllZero(again, 4096);
      FillPattern(again, 4096, 2);
      written = HasPattern(again, 4096, 2);
      EXPECT_TRUE(other->Free(again));
    });
    FillPattern(first, 4096, 1);
    EXPECT_TRUE(HasPattern(first, 4096, 1));
    EXPECT_TRUE(one->Free(first));  // unmapped (keep = 0)
    unmapped.store(true, std::memory_order_relaxed);
    second.join();
    ASSERT_NE(again, nullptr);
    EXPECT_TRUE(fresh) << "round " << round;
    EXPECT_TRUE(written);
    if (again == first) ++reused;
  }
  EXPECT_GT(reused, 0) << "the kernel never handed the address out again: the test saw nothing";
  for (Mempool* m : {one.get(), other.get()}) {
    EXPECT_EQ(m->stats().source_releases.load(), static_cast<uint64_t>(kRounds));
    EXPECT_EQ(m->stats().elements_total.load(), 0);
  }
}

// ---- Statistics ---------------------------------------------------------------------------------

class MempoolStatsRecord : public HugePoolTest {};

// The hit path's counts (SingleWriterAdd): an add of n, modulo 2^64 — an un-count is an add of
// ~0 — that a reader on another thread sees whole, never a torn or backward value.
TEST(SingleWriterAdd, AddsModulo64BitsAndAReaderSeesEveryCountWhole) {
  Counter c{5};
  SingleWriterAdd(c, 1);
  EXPECT_EQ(c.load(), 6u);
  SingleWriterAdd(c, ~uint64_t{0});
  EXPECT_EQ(c.load(), 5u);
  Counter zero{0};
  SingleWriterAdd(zero, ~uint64_t{0});
  EXPECT_EQ(zero.load(), ~uint64_t{0});

  // Counted from just below 2^32 so that a torn read (one half old, one half new) would show as a
  // jump of 2^32 either way.
  constexpr uint64_t kStart = (uint64_t{1} << 32) - 1000, kAdds = 2'000'000;
  Counter shared{kStart};
  std::atomic<bool> started{false}, done{false};
  uint64_t backward = 0, outside = 0, reads = 0;
  std::thread reader([&] {
    uint64_t last = kStart;
    started.store(true, std::memory_order_release);
    do {
      const uint64_t v = shared.load(std::memory_order_relaxed);
      if (v < last) ++backward;
      if (v < kStart || v > kStart + kAdds) ++outside;
      last = v;
      ++reads;
    } while (!done.load(std::memory_order_acquire));
  });
  while (!started.load(std::memory_order_acquire)) {
  }
  for (uint64_t i = 0; i < kAdds; ++i) SingleWriterAdd(shared, 1);
  done.store(true, std::memory_order_release);
  reader.join();
  EXPECT_EQ(shared.load(), kStart + kAdds);
  EXPECT_EQ(backward, 0u);
  EXPECT_EQ(outside, 0u);
  EXPECT_GT(reads, 0u);
}

// The bytes of the record that differ between two snapshots, as the fields they belong to.
std::vector<size_t> ChangedOffsets(const PoolStats& a, const PoolStats& b) {
  std::vector<size_t> out;
  const auto* x = reinterpret_cast<const unsigned char*>(&a);
  const auto* y = reinterpret_cast<const unsigned char*>(&b);
  for (size_t i = 0; i < sizeof(PoolStats); i += 8) {
    if (memcmp(x + i, y + i, 8) != 0) out.push_back(i);
  }
  return out;
}

void Snapshot(const PoolStats& s, PoolStats* into) {
  memcpy(static_cast<void*>(into), static_cast<const void*>(&s), sizeof s);
}

// What keeps telemetry off the hit path: a hit on a warm pool writes alloc_reserve and nothing
// else in the record, a free writes frees and nothing else, and the readers still see the element
// in use and the reserve level move (in_use, bytes_in_use, reserve_level are derived from them).
TEST_F(MempoolStatsRecord, HitAndFreeWriteOnlyTheirCounter) {
  auto pool = FilledPool("hit-record", 2, ZeroMode::kNone);  // no maintenance thread writing meanwhile
  ASSERT_NE(pool, nullptr);
  const PoolStats& s = pool->stats();
  int err = 0;
  ASSERT_TRUE(pool->Free(pool->Alloc(k2M, &err)));  // the high-water mark is 1 from here
  EXPECT_EQ(s.flags & kStatsDerivedUse, kStatsDerivedUse);

  auto before = std::make_unique<PoolStats>();
  auto after = std::make_unique<PoolStats>();
  Snapshot(s, before.get());
  void* p = pool->Alloc(k2M, &err);
  ASSERT_NE(p, nullptr) << strerror(err);
  Snapshot(s, after.get());
  EXPECT_EQ(ChangedOffsets(*before, *after),
            std::vector<size_t>{offsetof(PoolStats, alloc_reserve)});
  EXPECT_EQ(InUse(s), 1);
  EXPECT_EQ(BytesInUse(s), static_cast<int64_t>(k2M));
  EXPECT_EQ(RequestedBytesInUse(s), static_cast<int64_t>(k2M));
  EXPECT_EQ(ReserveLevel(s), 1);

  Snapshot(s, before.get());
  ASSERT_TRUE(pool->Free(p));
  Snapshot(s, after.get());
  EXPECT_EQ(ChangedOffsets(*before, *after), std::vector<size_t>{offsetof(PoolStats, frees)});
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(ReserveLevel(s), 2);

  // A request for less than an element moves the rounding waste, and takes it back on free.
  p = pool->Alloc(k2M / 2 + 4096, &err);
  ASSERT_NE(p, nullptr) << strerror(err);
  EXPECT_EQ(RequestedBytesInUse(s), static_cast<int64_t>(k2M / 2 + 4096));
  EXPECT_EQ(BytesInUse(s) - RequestedBytesInUse(s), static_cast<int64_t>(k2M / 2 - 4096));
  ASSERT_TRUE(pool->Free(p));
  EXPECT_EQ(RequestedBytesInUse(s), 0);
  // A new peak is published at once.
  void* a = pool->Alloc(k2M, &err);
  void* b = pool->Alloc(k2M, &err);
  ASSERT_TRUE(a != nullptr && b != nullptr);
  EXPECT_EQ(s.high_water.load(), 2);
  EXPECT_EQ(InUse(s), 2);
  EXPECT_EQ(ReserveLevel(s), 0);
  ASSERT_TRUE(pool->Free(a));
  ASSERT_TRUE(pool->Free(b));
}

// Counting turned off and on again at run time (benchmarks compare both on one pool): while off,
// hits and frees leave the counters alone; back on, the use gauges are exact at once.
TEST_F(MempoolStatsRecord, CountingTurnedOffAndOnKeepsTheUseGaugesExact) {
  auto pool = FilledPool("record-toggle", 3, ZeroMode::kNone);
  ASSERT_NE(pool, nullptr);
  const PoolStats& s = pool->stats();
  int err = 0;
  void* a = pool->Alloc(k2M, &err);
  ASSERT_NE(a, nullptr) << strerror(err);
  const uint64_t hits = s.alloc_reserve.load();
  const uint64_t frees = s.frees.load();

  pool->SetRecordStats(false);
  void* b = pool->Alloc(k2M, &err);
  ASSERT_NE(b, nullptr) << strerror(err);
  void* c = pool->Alloc(k2M, &err);
  ASSERT_NE(c, nullptr) << strerror(err);
  ASSERT_TRUE(pool->Free(c));
  EXPECT_EQ(s.alloc_reserve.load(), hits) << "counted a hit while off";
  EXPECT_EQ(s.frees.load(), frees) << "counted a free while off";

  pool->SetRecordStats(true);
  EXPECT_EQ(InUse(s), 2) << "a and b are in use";
  EXPECT_EQ(ReserveLevel(s), 1);
  void* d = pool->Alloc(k2M, &err);
  ASSERT_NE(d, nullptr) << strerror(err);
  EXPECT_EQ(s.alloc_reserve.load(), hits + 1);
  EXPECT_EQ(InUse(s), 3);
  for (void* p : {a, b, d}) ASSERT_TRUE(pool->Free(p));
  EXPECT_EQ(s.frees.load(), frees + 3);
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(ReserveLevel(s), 3);
}

// Counts that are not the pool's elements leave its in-use figure exact: a call served after the
// pool gave its free elements back (counted in alloc_reserve, no element handed out), and the
// shim's own counting of calls it passed to the kernel (alloc_source, alloc_waited, frees of
// those are not counted). Elements from the source and after a wait count in use.
TEST_F(MempoolStatsRecord, InUseStaysExactWhenCountsAreNotThePoolsElements) {
  auto pool = FilledPool("count-only", 1, ZeroMode::kNone);
  ASSERT_NE(pool, nullptr);
  PoolStats& s = *pool->mutable_stats();
  int err = 0;
  void* a = pool->Alloc(k2M, &err);  // from the reserve
  void* b = pool->Alloc(k2M, &err);  // from the source
  ASSERT_TRUE(a != nullptr && b != nullptr) << strerror(err);
  EXPECT_EQ(s.alloc_source.load(), 1u);
  EXPECT_EQ(InUse(s), 2);
  pool->CountServedByReserve();
  EXPECT_EQ(s.alloc_reserve.load(), 2u);
  EXPECT_EQ(InUse(s), 2) << "a count without an element";
  s.alloc_source.fetch_add(3);  // what Runtime::Guard counts for a call passed to the kernel
  s.alloc_waited.fetch_add(1);
  EXPECT_EQ(InUse(s), 2);
  ASSERT_TRUE(pool->Free(a));
  ASSERT_TRUE(pool->Free(b));
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(ReserveLevel(s), s.elements_total.load());
  EXPECT_GE(ReserveLevel(s), 1);
}

// The readers' side of a derived record (what the exporter reads from a segment): the figures
// follow from the counters, and a record whose counts are inconsistent — a reader between two
// stores of the pool, or a damaged file — gives no negative element count.
TEST(PoolStatsDerived, FiguresFollowTheCountersAndNeverReadNegative) {
  auto s = std::make_unique<PoolStats>();
  InitPoolStats(s.get(), "derived", PoolKind::kMempool, 0, k2M);
  s->flags = kStatsDerivedUse;
  s->elements_total = 5;
  s->use_base = 2;  // two from the source
  s->alloc_reserve = 7;
  s->frees = 6;
  s->waste_bytes = 4096;
  EXPECT_EQ(InUse(*s), 3);
  EXPECT_EQ(BytesInUse(*s), static_cast<int64_t>(3 * k2M));
  EXPECT_EQ(RequestedBytesInUse(*s), static_cast<int64_t>(3 * k2M - 4096));
  EXPECT_EQ(ReserveLevel(*s), 2);
  s->in_use = 99;  // the stored fields are not what a derived record means
  s->reserve_level = 99;
  EXPECT_EQ(InUse(*s), 3);
  EXPECT_EQ(ReserveLevel(*s), 2);
  s->frees = 10;  // more frees than allocations
  EXPECT_EQ(InUse(*s), 0);
  EXPECT_EQ(ReserveLevel(*s), 5);
  s->frees = 6;
  s->elements_total = 2;  // fewer held than in use
  EXPECT_EQ(ReserveLevel(*s), 0);
  s->flags = 0;  // a record that keeps its figures itself
  EXPECT_EQ(InUse(*s), 99);
  EXPECT_EQ(ReserveLevel(*s), 99);
}

TEST(MempoolOptionsTest, CreateRejectsBadOptionsNamingThem) {
  auto bad = [](MempoolOptions o, const char* word) {
    auto r = Mempool::Create(std::move(o));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find(word), std::string::npos) << r.status();
  };
  MempoolOptions o = HugeOptions("ok", 1, Mode::kBlock);
  MempoolOptions x = o;
  x.name = "";
  bad(x, "name");
  x = o;
  x.name = std::string(kPoolNameMax, 'n');
  bad(x, "name");
  x = o;
  x.element_size = 3 << 20;
  bad(x, "element size");
  x = o;
  x.max = 1;
  x.reserve = 2;
  bad(x, "reserve");
  x = o;
  x.policy.mode = Mode::kTimeout;
  x.policy.timeout = absl::ZeroDuration();
  bad(x, "timeout");
  x = o;
  x.retry_interval = absl::ZeroDuration();
  bad(x, "retry_interval");
  EXPECT_TRUE(Mempool::Create(o).ok());
}

}  // namespace
}  // namespace dmashim::testing
