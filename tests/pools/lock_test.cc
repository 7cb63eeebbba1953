// BiasedLock (pools/lock.h): the pool lock whose owning thread takes it with plain stores, and
// every other thread revokes that bias with a membarrier before it enters.
#include "pools/lock.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "pools/sys.h"

namespace dmashim {
namespace {

void TakeInARow(BiasedLock* l, int n) {
  for (int i = 0; i < n; ++i) {
    l->Lock();
    l->Unlock();
  }
}

TEST(BiasedLock, AThreadThatTakesItEightTimesInARowGetsTheBias) {
  BiasedLock l;
  TakeInARow(&l, 7);
  EXPECT_FALSE(l.BiasedToMe());
  TakeInARow(&l, 1);
  if (!BiasedLock::Biasable()) {
    EXPECT_FALSE(l.BiasedToMe()) << "a ThreadSanitizer build never biases";
    return;
  }
  ASSERT_TRUE(EnableHeavyBarrier()) << "membarrier(2) PRIVATE_EXPEDITED refused by this kernel";
  EXPECT_TRUE(l.BiasedToMe());
}

TEST(BiasedLock, AnotherThreadsLockRevokesTheBiasAndItReturnsOnlyAfterAMillisecond) {
  if (!BiasedLock::Biasable()) GTEST_SKIP() << "a ThreadSanitizer build never biases";
  BiasedLock l;
  TakeInARow(&l, 8);
  ASSERT_TRUE(l.BiasedToMe());
  std::thread([&] {
    l.Lock();
    l.Unlock();
  }).join();
  EXPECT_FALSE(l.BiasedToMe());
  EXPECT_EQ(l.revocations(), 1u);
  // Eight more in a row right away: still no bias (within 1 ms of the revocation).
  const uint64_t t0 = MonotonicNs();
  TakeInARow(&l, 8);
  if (MonotonicNs() - t0 < 900'000) {
    EXPECT_FALSE(l.BiasedToMe());
  }
  usleep(3000);  // the bias served nothing: the wait doubled to 2 ms
  TakeInARow(&l, 8);
  EXPECT_TRUE(l.BiasedToMe());
}

// The wait before a bias comes back: doubled by an application thread's revocation of a bias that
// served little, left alone by the maintenance thread's, back to 1 ms after a bias that served
// 1,024 acquisitions or more.
TEST(BiasedLock, TheWaitAfterARevocationGrowsOnlyForBiasesNotWorthTheirBarrier) {
  if (!BiasedLock::Biasable()) GTEST_SKIP() << "a ThreadSanitizer build never biases";
  BiasedLock l;
  auto revoke = [&](bool maintenance) {
    std::thread([&] {
      if (maintenance) BiasedLock::NeverBiasThisThread();
      l.Lock();
      l.Unlock();
    }).join();
  };
  auto bias_after = [&](uint64_t wait_ns, int hold) {
    usleep(static_cast<useconds_t>(wait_ns / 1000 + 500));
    TakeInARow(&l, 8);
    ASSERT_TRUE(l.BiasedToMe());
    TakeInARow(&l, hold);
  };
  EXPECT_EQ(l.rebias_gap_ns(), 1'000'000u);
  bias_after(0, 10);
  revoke(false);
  EXPECT_EQ(l.rebias_gap_ns(), 2'000'000u);
  bias_after(l.rebias_gap_ns(), 10);
  revoke(false);
  EXPECT_EQ(l.rebias_gap_ns(), 4'000'000u);
  bias_after(l.rebias_gap_ns(), 10);
  revoke(true);
  EXPECT_EQ(l.rebias_gap_ns(), 4'000'000u) << "the maintenance thread's revocation counted";
  bias_after(l.rebias_gap_ns(), 2000);
  revoke(false);
  EXPECT_EQ(l.rebias_gap_ns(), 1'000'000u) << "a bias that served 2,000 acquisitions";
  EXPECT_EQ(l.revocations(), 4u);
}

TEST(BiasedLock, AThreadMarkedNeverBiasNeverGetsIt) {
  BiasedLock l;
  bool biased = true;
  std::thread([&] {
    BiasedLock::NeverBiasThisThread();
    TakeInARow(&l, 100);
    biased = l.BiasedToMe();
  }).join();
  EXPECT_FALSE(biased);
  EXPECT_EQ(l.revocations(), 0u);
}

void Pause(int n) {
  for (int i = 0; i < n; ++i) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

// Mutual exclusion while the bias is set and revoked over and over: the owner's increments by its
// bias and another thread's must all land. Both read, pause, then write the counter, so an
// increment made by the other thread inside that window would be lost.
TEST(BiasedLock, ExclusionHoldsAcrossRevocations) {
  BiasedLock l;
  uint64_t counter = 0;  // guarded by l
  constexpr int kOtherOps = 300;
  std::atomic<bool> other_done{false};
  uint64_t owner_ops = 0;
  int owner_saw_bias = 0;
  std::thread owner([&] {
    while (!other_done.load(std::memory_order_relaxed)) {
      l.Lock();
      if ((owner_ops & 1023) == 0 && l.BiasedToMe()) ++owner_saw_bias;
      const uint64_t v = counter;
      Pause(40);
      counter = v + 1;
      l.Unlock();
      ++owner_ops;
    }
  });
  std::thread other([&] {
    for (int i = 0; i < kOtherOps; ++i) {
      l.Lock();
      const uint64_t v = counter;
      Pause(200);
      counter = v + 1;
      l.Unlock();
      usleep(i % 2 == 0 ? 1500 : 50);  // past the 1 ms re-bias gap, or within it
    }
    other_done = true;
  });
  owner.join();
  other.join();
  EXPECT_EQ(counter, owner_ops + kOtherOps);
  if (BiasedLock::Biasable()) {
    EXPECT_GT(owner_saw_bias, 0) << "the owner never ran by its bias: the test proves nothing";
    EXPECT_GT(l.revocations(), 100u);
  }
}

// A fork child whose lock is biased to a thread it does not have still takes the lock: the barrier
// works in the child (registered again if it must be) and the absent owner is not inside.
TEST(BiasedLock, AForkChildTakesALockBiasedToAThreadItDoesNotHave) {
  if (!BiasedLock::Biasable()) GTEST_SKIP() << "a ThreadSanitizer build never biases";
  BiasedLock l;
  std::atomic<bool> biased{false}, go{false};
  std::thread t([&] {
    TakeInARow(&l, 8);
    biased = l.BiasedToMe();
    go = true;
  });
  t.join();
  ASSERT_TRUE(go.load());
  ASSERT_TRUE(biased.load());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    HeavyBarrierForkChild();
    l.Lock();
    l.Unlock();
    // Revoked with the barrier, registered again in the child (not the 1 ms fallback, after
    // which no lock would be biased again).
    _exit(l.revocations() == 1 && EnableHeavyBarrier() ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died: signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace dmashim
