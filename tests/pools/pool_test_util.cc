#include "tests/pools/pool_test_util.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

namespace dmashim::testing {
namespace {

void* FaultyMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  Faults& f = TheFaults();
  f.mmap_calls.fetch_add(1);
  if (const int us = f.mmap_delay_us.load()) usleep(static_cast<useconds_t>(us));
  bool fail = f.fail_mmap.load();
  if (!fail) {
    long b = f.budget.load();
    while (b >= 0) {
      if (b == 0) {
        fail = true;
        break;
      }
      if (f.budget.compare_exchange_weak(b, b - 1)) break;
    }
  }
  if (fail) {
    f.mmap_failed.fetch_add(1);
    errno = f.err.load();
    return MAP_FAILED;
  }
  return RealSysCalls().mmap(addr, len, prot, flags, fd, off);
}
int RealMunmap(void* a, size_t l) { return RealSysCalls().munmap(a, l); }
int RealMadvise(void* a, size_t l, int adv) { return RealSysCalls().madvise(a, l, adv); }
int RealMlock(const void* a, size_t l) { return RealSysCalls().mlock(a, l); }
int RealMunlock(const void* a, size_t l) { return RealSysCalls().munlock(a, l); }

const SysCalls kFaulty = {FaultyMmap, RealMunmap, RealMadvise, RealMlock, RealMunlock};

}  // namespace

void Faults::Reset() {
  fail_mmap = false;
  budget = -1;
  err = ENOMEM;
  mmap_calls = 0;
  mmap_failed = 0;
  mmap_delay_us = 0;
}

Faults& TheFaults() {
  static Faults f;
  return f;
}

const SysCalls* FaultySysCalls() { return &kFaulty; }

std::unique_ptr<Mempool> MakePool(MempoolOptions o, const SysCalls* sys) {
  auto pool = Mempool::Create(std::move(o), nullptr, sys);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? std::move(*pool) : nullptr;
}

MempoolOptions HugeOptions(const char* name, size_t reserve, Mode mode) {
  MempoolOptions o;
  o.name = name;
  o.source.kind = SourceKind::kHuge2M;
  o.reserve = reserve;
  o.policy.mode = mode;
  if (mode == Mode::kTimeout) o.policy.timeout = absl::Milliseconds(200);
  return o;
}

std::unique_ptr<Mempool> FilledPool(const char* name, size_t reserve, ZeroMode zero) {
  auto o = HugeOptions(name, reserve, Mode::kFailFast);
  o.zero = zero;
  auto pool = MakePool(o);
  if (pool == nullptr) return nullptr;
  const size_t held = pool->Prefill();
  EXPECT_EQ(held, reserve) << name << ": filled only " << held;
  return held == reserve ? std::move(pool) : nullptr;
}

// Word by word through memcpy: a DmaPool block may be only 4-byte aligned (UBSan).
void FillPattern(void* p, size_t len, uint64_t seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (size_t i = 0; i < len / 8; ++i) {
    const uint64_t v = seed * 0x9e3779b97f4a7c15ull + i;
    memcpy(b + 8 * i, &v, 8);
  }
}

bool HasPattern(const void* p, size_t len, uint64_t seed) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < len / 8; ++i) {
    uint64_t v;
    memcpy(&v, b + 8 * i, 8);
    if (v != seed * 0x9e3779b97f4a7c15ull + i) return false;
  }
  return true;
}

bool AllZero(const void* p, size_t len) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < len; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

}  // namespace dmashim::testing
