// fork(2): free reserve elements are MADV_DONTFORK (not in the child), handed-out elements are
// inherited like any mapping of the app's; no pool lock is inherited held by another thread.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pools/dma_pool.h"
#include "pools/mempool.h"
#include "tests/pools/pool_test_util.h"

namespace dmashim::testing {
namespace {

constexpr size_t k2M = kHugePage2M;

// True when `p` is mapped in this process (msync fails with ENOMEM on an unmapped range).
bool IsMapped(void* p) { return msync(p, 4096, MS_ASYNC) == 0; }

// True when `p` lies in a huge-page mapping of this process (smaps: KernelPageSize above 4 kB).
// "Is a free element in the child" must ask this, not IsMapped: a DONTFORK element leaves a hole
// in the child, and the child's own mappings may land in it. Under ThreadSanitizer they do: its
// runtime starts a background thread in every fork child, and that thread's 8 MiB stack was placed
// over the address of the element left behind.
bool IsHugeMapped(void* p) {
  FILE* f = fopen("/proc/self/smaps", "re");
  if (f == nullptr) return IsMapped(p);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  bool inside = false, huge = false;
  char line[512];
  while (fgets(line, sizeof line, f) != nullptr) {
    unsigned long lo = 0, hi = 0, kb = 0;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line; fields follow
      if (inside) break;
      inside = a >= lo && a < hi;
    } else if (inside && sscanf(line, "KernelPageSize: %lu kB", &kb) == 1) {
      huge = kb > 4;
      break;
    }
  }
  fclose(f);
  return huge;
}

enum ChildFailure : int {
  kFreeInherited = 1 << 0,
  kInUseMissing = 1 << 1,
  kInUseContent = 1 << 2,
  kChildReserveNotEmpty = 1 << 3,
  kChildOwnsFree = 1 << 4,
  kChildAllocFailed = 1 << 5,
};

std::string Explain(int bits) {
  std::string s;
  if (bits & kFreeInherited) s += " a free reserve element is mapped in the child;";
  if (bits & kInUseMissing) s += " a handed-out element is not mapped in the child;";
  if (bits & kInUseContent) s += " a handed-out element lost its contents in the child;";
  if (bits & kChildReserveNotEmpty) s += " the child's pool still counts free elements;";
  if (bits & kChildOwnsFree) s += " the child's pool still claims a free element;";
  if (bits & kChildAllocFailed) s += " the child could not rebuild its reserve;";
  return s;
}

// Forks; the child checks `free_elems` are absent and `used` present with pattern `seed`, then exits
// with a bit set per broken rule. Returns the bits (or -1 when the child died otherwise).
int ForkAndCheck(Mempool* pool, const std::vector<void*>& free_elems,
                 const std::vector<void*>& used, uint64_t seed) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int bits = 0;
    for (void* p : free_elems) {
      if (IsHugeMapped(p)) bits |= kFreeInherited;
      if (pool->Owns(p)) bits |= kChildOwnsFree;
    }
    for (void* p : used) {
      if (!IsMapped(p)) {
        bits |= kInUseMissing;
      } else if (!HasPattern(p, k2M, seed + reinterpret_cast<uintptr_t>(p))) {
        bits |= kInUseContent;
      }
    }
    if (ReserveLevel(pool->stats()) != 0) bits |= kChildReserveNotEmpty;
    int err = 0;
    void* fresh = pool->Alloc(k2M, &err);
    if (fresh == nullptr || !AllZero(fresh, k2M)) bits |= kChildAllocFailed;
    _exit(bits);  // never run the parent's atexit handlers or gtest's teardown
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class MempoolFork : public HugePoolTest {};

TEST_F(MempoolFork, FreeReserveElementsAreNotInChildHandedOutAre) {
  auto pool = MakePool(HugeOptions("fork", 4, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 4u);
  int err = 0;
  std::vector<void*> used;
  for (int i = 0; i < 2; ++i) {
    void* p = pool->Alloc(k2M, &err);
    ASSERT_NE(p, nullptr);
    FillPattern(p, k2M, 7 + reinterpret_cast<uintptr_t>(p));
    used.push_back(p);
  }
  // The two elements still free: allocate and free them back to learn their addresses.
  std::vector<void*> free_elems;
  for (int i = 0; i < 2; ++i) free_elems.push_back(pool->Alloc(k2M, &err));
  for (void* p : free_elems) ASSERT_TRUE(pool->Free(p));
  ASSERT_EQ(ReserveLevel(pool->stats()), 2);

  const int bits = ForkAndCheck(pool.get(), free_elems, used, 7);
  EXPECT_EQ(bits, 0) << Explain(bits);
  // The parent is untouched: everything still mapped, counted, and usable.
  for (void* p : free_elems) EXPECT_TRUE(IsMapped(p));
  for (void* p : used) EXPECT_TRUE(HasPattern(p, k2M, 7 + reinterpret_cast<uintptr_t>(p)));
  EXPECT_EQ(ReserveLevel(pool->stats()), 2);
  EXPECT_EQ(InUse(pool->stats()), 2);
  for (void* p : used) EXPECT_TRUE(pool->Free(p));
}

TEST_F(MempoolFork, AChildForkedDuringAnotherThreadsRetryStillFillsItsReserve) {
  auto pool = MakePool(HugeOptions("fork-hold", 2, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 2u);
  // Another thread is in a release-and-retry (it holds the refill) when this one forks: the child
  // has no such thread, and nothing may keep its pool from filling.
  std::atomic<bool> held{false}, done{false};
  std::thread retrying([&] {
    Mempool::RefillHold hold(pool.get());
    held = true;
    while (!done) usleep(1000);
  });
  while (!held) usleep(100);
  const pid_t pid = fork();
  if (pid == 0) _exit(pool->Prefill() == 2 ? 0 : 1);
  done = true;
  retrying.join();
  ASSERT_GT(pid, 0);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's pool stayed empty";
}

TEST_F(MempoolFork, ElementReusedAfterForkIsInheritedAtNextFork) {
  auto pool = MakePool(HugeOptions("fork-reuse", 2, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* a = pool->Alloc(k2M, &err);
  void* b = pool->Alloc(k2M, &err);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  FillPattern(a, k2M, 3 + reinterpret_cast<uintptr_t>(a));
  ASSERT_TRUE(pool->Free(b));
  int bits = ForkAndCheck(pool.get(), {b}, {a}, 3);
  ASSERT_EQ(bits, 0) << "first fork:" << Explain(bits);

  // Swap roles: b (DONTFORK at the first fork) is handed out again, a goes back to the pool.
  void* b2 = pool->Alloc(k2M, &err);
  ASSERT_EQ(b2, b);
  FillPattern(b, k2M, 3 + reinterpret_cast<uintptr_t>(b));
  ASSERT_TRUE(pool->Free(a));
  bits = ForkAndCheck(pool.get(), {a}, {b}, 3);
  EXPECT_EQ(bits, 0) << "second fork:" << Explain(bits);
  pool->Free(b);
}

// Waits up to `ms` for `pid`; kills it when it takes longer. Returns its exit status, -1 for a
// child killed by a signal, or -2 for one that had to be killed (it hung).
int WaitBounded(pid_t pid, int ms) {
  int status = 0;
  for (int waited = 0;; ++waited) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0 && errno != EINTR) return -1;
    if (waited >= ms) break;
    usleep(1000);
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return -2;
}

// Other threads are in the middle of DmaPool allocations and frees (holding the pool's lock part of
// the time), or exiting (detaching their caches under the thread-cache lock), when the process
// forks. Both locks are held across fork, so the child — where those threads do not exist — can
// allocate, free and destroy the pool; a child that inherited a lock held would wait for ever.
TEST_F(MempoolFork, ForkWhileOtherThreadsUseADmaPoolLeavesTheChildAbleToAllocateAndFree) {
  auto pages = MakePool(HugeOptions("fork-dma-pages", 3, Mode::kFailFast), &RealSysCalls());
  ASSERT_NE(pages, nullptr);
  auto created = DmaPool::Create(DmaPoolOptions{"fork-dma", 2048, 64, 4096}, pages.get());
  ASSERT_TRUE(created.ok()) << created.status();
  DmaPool& pool = **created;
  // Three pages' blocks on the free list first: no child needs a new huge page (the child's
  // Mempool has no free elements, and other programs may hold every free huge page meanwhile).
  {
    std::vector<void*> warm;
    for (int i = 0; i < 3 * 1024; ++i) {
      int err = 0;
      void* b = pool.Alloc(&err);
      ASSERT_NE(b, nullptr) << strerror(err);
      warm.push_back(b);
    }
    for (void* b : warm) pool.Free(b);
  }

  std::atomic<bool> stop{false};
  std::atomic<long> rounds{0};
  std::vector<std::thread> hammers;
  for (int t = 0; t < 2; ++t) {
    hammers.emplace_back([&] {
      std::vector<void*> held;
      while (!stop.load(std::memory_order_relaxed)) {
        // More than a thread's cache holds, so the shared list (under the lock) is used each round.
        for (int i = 0; i < 200; ++i) {
          int err = 0;
          if (void* b = pool.Alloc(&err)) held.push_back(b);
        }
        for (void* b : held) pool.Free(b);
        held.clear();
        (void)pool.info();  // takes the lock too
        rounds.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  hammers.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      std::thread brief([&] {  // uses the pool once, so its exit detaches a cache
        int err = 0;
        if (void* b = pool.Alloc(&err)) pool.Free(b);
      });
      brief.join();
    }
  });
  ASSERT_TRUE(WaitFor([&] { return rounds.load() > 0; }, 5000));

  constexpr int kForks = 200;
  constexpr int kChildMs = 5000;  // a child needs milliseconds; one that hangs is killed
  int forks = 0, hung = 0, failed = 0;
  for (; forks < kForks && hung == 0; ++forks) {
    const pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << strerror(errno);
      break;
    }
    if (pid == 0) {
      std::vector<void*> mine;
      for (int i = 0; i < 300; ++i) {
        int err = 0;
        void* b = pool.Alloc(&err);
        if (b == nullptr) _exit(2);
        memset(b, 0x5a, 2048);
        mine.push_back(b);
      }
      for (void* b : mine) {
        if (!pool.Free(b)) _exit(3);
      }
      (void)pool.info();
      // The parent's threads' blocks are still counted in use here, so the destructor says it
      // keeps the pages: not this test's business.
      const int devnull = open("/dev/null", O_WRONLY);
      if (devnull >= 0) dup2(devnull, STDERR_FILENO);
      created->reset();  // takes the thread-cache lock and the pool's
      _exit(0);  // never run the parent's atexit handlers or gtest's teardown
    }
    const int rc = WaitBounded(pid, kChildMs);
    if (rc == -2) {
      ++hung;
    } else if (rc != 0) {
      ++failed;
    }
  }
  stop.store(true);
  for (auto& t : hammers) t.join();
  EXPECT_EQ(hung, 0) << "a child hung (killed after " << kChildMs << " ms) at fork " << forks;
  EXPECT_EQ(failed, 0) << "children that could not allocate or free, of " << forks;
  EXPECT_GT(rounds.load(), 0);
}

}  // namespace
}  // namespace dmashim::testing
