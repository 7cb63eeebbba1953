// Regions: the element bookkeeping an interposer relies on for munmap, partial unmaps, mprotect and
// double unmaps (Mempool::AllocRegion and friends), on real 2 MiB huge pages.
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "gtest/gtest.h"
#include "pools/maintenance.h"
#include "pools/mempool.h"
#include "tests/pools/pool_test_util.h"

namespace dmashim::testing {
namespace {

constexpr size_t k2M = kHugePage2M;

class MempoolRegion : public HugePoolTest {
 protected:
  WaitPolicy FailFast() const { return WaitPolicy{Mode::kFailFast, absl::ZeroDuration(), false}; }

  // A filled pool of `reserve` elements with two regions (AllocRegion) and one plain element
  // (Alloc) handed out; null members after a failure.
  struct Held {
    std::unique_ptr<Mempool> pool;
    char* a = nullptr;
    char* b = nullptr;
    char* plain = nullptr;
  };
  Held TwoRegionsAndAnElement(const char* name, size_t reserve) const {
    Held h;
    h.pool = MakePool(HugeOptions(name, reserve, Mode::kFailFast));
    if (h.pool == nullptr || h.pool->Prefill() != reserve) return Held{};
    int err = 0;
    h.a = static_cast<char*>(h.pool->AllocRegion(k2M, FailFast(), &err));
    h.b = static_cast<char*>(h.pool->AllocRegion(k2M, FailFast(), &err));
    h.plain = static_cast<char*>(h.pool->Alloc(k2M, &err));
    return h;
  }
};

TEST_F(MempoolRegion, FreeRegionTakesOnlyALengthThatRoundsToTheWholeElement) {
  auto o = HugeOptions("region-len", 2, Mode::kFailFast);
  o.element_size = 2 * k2M;  // two huge pages: half of it is a partial unmap
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  auto* p = static_cast<char*>(pool->AllocRegion(2 * k2M, FailFast(), &err));
  ASSERT_NE(p, nullptr) << strerror(err);
  EXPECT_TRUE(pool->MaybeHolds(p));
  EXPECT_FALSE(pool->FreeRegion(p, k2M)) << "half the element is a partial unmap";
  EXPECT_FALSE(pool->FreeRegion(p + k2M, k2M)) << "not the element's start";
  EXPECT_FALSE(pool->FreeRegion(p, 3 * k2M)) << "more than the element";
  EXPECT_FALSE(pool->FreeRegion(p, 0));
  EXPECT_EQ(InUse(pool->stats()), 1);
  EXPECT_TRUE(pool->FreeRegion(p, k2M + 1)) << "rounded up to whole huge pages, as the kernel does";
  EXPECT_FALSE(pool->FreeRegion(p, 2 * k2M)) << "a double unmap is refused";
  const PoolStats& s = pool->stats();
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(s.frees.load(), 1u);
  EXPECT_EQ(ReserveLevel(s), s.elements_total.load());
}

TEST_F(MempoolRegion, FreeRegionLeavesElementsHandedOutOtherwiseAlone) {
  auto pool = MakePool(HugeOptions("region-plain", 1, Mode::kFailFast));
  ASSERT_NE(pool, nullptr);
  int err = 0;
  void* p = pool->Alloc(k2M, &err);
  ASSERT_NE(p, nullptr) << strerror(err);
  EXPECT_FALSE(pool->FreeRegion(p, k2M)) << "an element from Alloc() is not an mmap region";
  EXPECT_EQ(pool->ForgetRegions(p, k2M), 0u);
  EXPECT_EQ(InUse(pool->stats()), 1);
  EXPECT_TRUE(pool->Free(p));
  // Free() of a region takes it back too, and the region mark does not outlive it.
  void* r = pool->AllocRegion(k2M, FailFast(), &err);
  ASSERT_EQ(r, p);
  EXPECT_TRUE(pool->Free(r));
  void* q = pool->Alloc(k2M, &err);
  ASSERT_EQ(q, p);
  EXPECT_FALSE(pool->FreeRegion(q, k2M));
  EXPECT_TRUE(pool->Free(q));
}

TEST_F(MempoolRegion, ForgetRegionsDropsTheRegionsInUseTheRangeOverlaps) {
  auto [pool, a, b, plain] = TwoRegionsAndAnElement("region-forget", 4);
  ASSERT_TRUE(pool && a && b && plain);
  const PoolStats& s = pool->stats();
  EXPECT_EQ(InUse(s), 3);
  EXPECT_EQ(pool->ForgetRegions(a + 4096, 4096), 1u) << "one page inside `a`";
  EXPECT_EQ(InUse(s), 2);
  EXPECT_EQ(s.elements_total.load(), 3);
  EXPECT_EQ(ReserveLevel(s), 1) << "free elements are not the caller's";
  EXPECT_FALSE(pool->FreeRegion(a, k2M)) << "forgotten: the caller owns it";
  EXPECT_FALSE(pool->Owns(a));
  EXPECT_TRUE(pool->Owns(b));
  EXPECT_TRUE(pool->FreeRegion(b, k2M));
  EXPECT_TRUE(pool->Free(plain));
  EXPECT_EQ(InUse(s), 0);
  EXPECT_EQ(RequestedBytesInUse(s), 0);
  EXPECT_EQ(ReserveLevel(s), s.elements_total.load());
  munmap(a, k2M);  // the forgotten element is the caller's to unmap
}

// What the shim does before the real call on a range it does not own (MAP_FIXED, mremap, a partial
// munmap): in one call, regions in use the range overlaps are forgotten and free elements it
// overlaps are unmapped; elements handed out by Alloc() stay the pool's.
TEST_F(MempoolRegion, ReleaseRangeForgetsRegionsAndEvictsFreeElements) {
  auto [pool, a, b, plain] = TwoRegionsAndAnElement("region-release", 5);
  ASSERT_TRUE(pool && a && b && plain);
  int err = 0;
  const PoolStats& s = pool->stats();
  ASSERT_EQ(ReserveLevel(s), 2);
  // A range over every element the pool holds (and whatever lies between them).
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (char* p : {a, b, plain}) {
    lo = std::min(lo, reinterpret_cast<uintptr_t>(p));
    hi = std::max(hi, reinterpret_cast<uintptr_t>(p) + k2M);
  }
  // The two free elements: hand them out and back to learn where they are.
  void* f1 = pool->Alloc(k2M, &err);
  void* f2 = pool->Alloc(k2M, &err);
  ASSERT_TRUE(f1 && f2);
  for (void* p : {f1, f2}) {
    lo = std::min(lo, reinterpret_cast<uintptr_t>(p));
    hi = std::max(hi, reinterpret_cast<uintptr_t>(p) + k2M);
  }
  ASSERT_TRUE(pool->Free(f1));
  ASSERT_TRUE(pool->Free(f2));
  ASSERT_EQ(ReserveLevel(s), 2);
  const uint64_t releases = s.source_releases.load();

  const RangeReleased r = pool->ReleaseRange(reinterpret_cast<void*>(lo), hi - lo);
  EXPECT_EQ(r.forgotten, 2u) << "the two regions";
  EXPECT_EQ(r.evicted, 2u) << "the two free elements";
  EXPECT_EQ(s.source_releases.load() - releases, 2u);
  EXPECT_EQ(InUse(s), 1) << "the Alloc()ed element is still the pool's";
  EXPECT_EQ(s.elements_total.load(), 1);
  EXPECT_EQ(ReserveLevel(s), 0);
  EXPECT_TRUE(pool->Owns(plain));
  EXPECT_FALSE(pool->Owns(a));
  EXPECT_FALSE(pool->Owns(f1));
  EXPECT_FALSE(pool->FreeRegion(a, k2M)) << "forgotten: the caller owns it";
  EXPECT_TRUE(pool->Free(plain));
  munmap(a, k2M);  // the forgotten regions are the caller's to unmap
  munmap(b, k2M);
}

// A range inside the second huge page of a two-page element still finds the element (it starts a
// page before the range): the lookup by page, used when the range covers fewer pages than the pool
// has elements, and the scan of the whole table agree.
TEST_F(MempoolRegion, RangesFindElementsThatStartBeforeThem) {
  auto o = HugeOptions("region-two-page", 4, Mode::kFailFast);
  o.element_size = 2 * k2M;
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 4u);
  int err = 0;
  auto* a = static_cast<char*>(pool->AllocRegion(2 * k2M, FailFast(), &err));
  auto* b = static_cast<char*>(pool->AllocRegion(2 * k2M, FailFast(), &err));
  ASSERT_TRUE(a && b) << strerror(err);
  EXPECT_EQ(pool->ForgetRegions(a + k2M + 4096, 4096), 1u) << "by page: 2 pages, 4 elements";
  EXPECT_FALSE(pool->Owns(a));
  // A range over 2 GiB of pages around `b` is wider than the table: scanned.
  EXPECT_EQ(pool->ForgetRegions(b + k2M - (size_t{1} << 30), size_t{1} << 31), 1u);
  EXPECT_FALSE(pool->Owns(b));
  EXPECT_EQ(InUse(pool->stats()), 0);
  munmap(a, 2 * k2M);
  munmap(b, 2 * k2M);
}

// After a range took free elements from the pool (the caller is about to map there itself), the
// maintenance thread does not top the reserve up at once: the kernel would hand it the address just
// freed, and the caller's MAP_FIXED_NOREPLACE there failed with EEXIST (1 run in 30 of
// TransparencyTest.FixedNoreplaceOnAFreedElementsAddressSucceeds). It does so a retry_interval later.
TEST_F(MempoolRegion, ReserveIsNotToppedUpIntoARangeJustReleased) {
  auto o = HugeOptions("region-refill", 1, Mode::kFailFast);
  o.zero = ZeroMode::kNone;
  o.retry_interval = absl::Milliseconds(300);
  o.retry_max = absl::Seconds(1);
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(pool->Prefill(), 1u);
  int err = 0;
  auto* p = static_cast<char*>(pool->AllocRegion(k2M, FailFast(), &err));
  ASSERT_NE(p, nullptr) << strerror(err);
  ASSERT_TRUE(pool->FreeRegion(p, k2M));
  const uint64_t maps = pool->stats().source_calls.load();
  ASSERT_EQ(pool->ReleaseRange(p, k2M).evicted, 1u);
  WakeMaintenance();
  usleep(50'000);
  EXPECT_EQ(pool->stats().source_calls.load(), maps) << "topped up right after the release";
  EXPECT_TRUE(WaitFor([&] { return pool->stats().source_calls.load() == maps + 1; }, 3000))
      << "the reserve was never topped up again";
}

// A range over an element the maintenance thread is zeroing in the background waits for that
// zeroing to end: unmapped under it, the zeroing would fault, or write into what the caller maps at
// the address next. Here the caller maps the address again at once, fills it and looks again a
// millisecond later; the pause before the range moves it over the zeroing from round to round.
TEST_F(MempoolRegion, ARangeOverAnElementBeingZeroedWaitsForTheZeroing) {
  auto pool = FilledPool("region-zeroing", 1, ZeroMode::kBackground);
  ASSERT_NE(pool, nullptr);
  constexpr uint64_t kPattern = 0xabababababababab;
  for (int round = 0; round < 60; ++round) {
    int err = 0;
    auto* p = static_cast<char*>(pool->AllocRegion(k2M, FailFast(), &err));
    ASSERT_NE(p, nullptr) << strerror(err);
    p[0] = 1;
    ASSERT_TRUE(pool->FreeRegion(p, k2M));  // dirty: the maintenance thread zeroes it now
    if (round % 6 != 0) usleep(round % 6 * 8);
    ASSERT_EQ(pool->ReleaseRange(p, k2M).evicted, 1u) << "round " << round;
    void* q = mmap(p, k2M, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_FIXED_NOREPLACE, -1, 0);
    ASSERT_EQ(q, static_cast<void*>(p)) << strerror(errno) << ", round " << round;
    auto* w = static_cast<uint64_t*>(q);
    for (size_t i = 0; i < k2M / 8; ++i) w[i] = kPattern;
    usleep(1000);
    size_t changed = 0;
    for (size_t i = 0; i < k2M / 8; ++i) changed += w[i] != kPattern;
    EXPECT_EQ(changed, 0u) << "words overwritten after the range returned, round " << round;
    ASSERT_EQ(munmap(q, k2M), 0);
  }
}

TEST_F(MempoolRegion, ARegionWhoseProtectionChangedComesBackReadWrite) {
  auto o = HugeOptions("region-prot", 1, Mode::kFailFast);
  o.zero = ZeroMode::kEager;  // zeroing writes the element: a read-only one would fault
  auto pool = MakePool(o);
  ASSERT_NE(pool, nullptr);
  int err = 0;
  auto* p = static_cast<char*>(pool->AllocRegion(k2M, FailFast(), &err));
  ASSERT_NE(p, nullptr) << strerror(err);
  p[0] = 7;
  ASSERT_EQ(syscall(SYS_mprotect, p, k2M, PROT_READ), 0);
  pool->MarkProtectionChanged(p + 8192, 1);
  ASSERT_TRUE(pool->FreeRegion(p, k2M));
  auto* q = static_cast<char*>(pool->AllocRegion(k2M, FailFast(), &err));
  ASSERT_EQ(q, p);
  EXPECT_EQ(q[0], 0) << "recycled elements are zero";
  q[k2M - 1] = 1;  // writable again
  EXPECT_TRUE(pool->FreeRegion(q, k2M));
}

TEST_F(MempoolRegion, MaybeHoldsOnlyAddressesTheSourceMapped) {
  auto pool = MakePool(HugeOptions("region-hull", 2, Mode::kFailFast));
  ASSERT_NE(pool, nullptr);
  int x = 0;
  EXPECT_FALSE(pool->MaybeHolds(&x)) << "nothing mapped yet";
  ASSERT_EQ(pool->Prefill(), 2u);
  int err = 0;
  auto* p = static_cast<char*>(pool->AllocRegion(k2M, FailFast(), &err));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(pool->MaybeHolds(p));
  EXPECT_TRUE(pool->MaybeHolds(p + k2M - 1));
  EXPECT_FALSE(pool->MaybeHolds(nullptr));
  EXPECT_TRUE(pool->FreeRegion(p, k2M));
}

}  // namespace
}  // namespace dmashim::testing
