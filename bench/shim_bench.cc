// Shim-level figures of DESIGN §8. Run under LD_PRELOAD=libdmashim.so with one of bench/configs/
// (scripts/bench.sh does): every "Shim" benchmark calls mmap through the interposed symbol, and its
// kernel peer in the same process goes straight to the kernel with syscall(2) or through libc's own
// mmap (resolved from libc.so.6, past the shim).
//   1. pool hit: 2 MiB MAP_HUGETLB map + first touch + unmap, warm pre-zeroed pool vs the kernel;
//   2. sustained map / write every 4 KiB / unmap loop vs the kernel, with memset(2 MiB) beside it;
//   3. pass-through overhead on 4 KiB anonymous mmap/munmap (shim vs libc).
#include <dlfcn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "benchmark/benchmark.h"

namespace {

using dmashim::bench::AwaitZeroing;
using dmashim::bench::Median;
using dmashim::bench::NowNs;

constexpr size_t kHuge = size_t{2} << 20;
constexpr int kHugeFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;

void* KernelMmap(size_t len, int flags) {
  long r = syscall(SYS_mmap, nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}
void KernelMunmap(void* p, size_t len) { syscall(SYS_munmap, p, len); }

// Figure 1's pair is compared on the medians of the per-iteration times (bench_util.h's Median),
// each side timed the same way (the kernel per call, the shim per batch of 32); figure 3's on the
// medians of its block figures.

void Check(void* p) {
  if (p == MAP_FAILED) {
    fprintf(stderr, "shim_bench: mmap failed: %s (are huge pages reserved?)\n", strerror(errno));
    abort();
  }
}

// 1. The kernel's own path: map, first touch (the fault zeroes the 2 MiB page), unmap.
void BM_KernelHugeMapTouch(benchmark::State& state) {
  std::vector<uint64_t> each;
  each.reserve(1 << 16);
  for (auto _ : state) {
    const uint64_t t0 = NowNs();
    auto* p = static_cast<volatile char*>(KernelMmap(kHuge, kHugeFlags));
    Check(const_cast<char*>(p));
    p[0] = 1;
    KernelMunmap(const_cast<char*>(p), kHuge);
    each.push_back(NowNs() - t0);
  }
  state.counters["median_ns"] = Median(&each);
}
BENCHMARK(BM_KernelHugeMapTouch);

// 1. Under the shim: batches of 32 map + touch + unmap from a warm pool; between batches (not
// timed) the maintenance thread zeroes the returned elements, so every hit finds a zeroed one;
// `poll` as AwaitZeroing (bench_util.h) takes it.
void HitBatches(benchmark::State& state, bool poll) {
  constexpr int kBatch = 32;
  void* held[kBatch];
  std::vector<uint64_t> each;
  each.reserve(state.max_iterations);
  for (auto _ : state) {
    const uint64_t t0 = NowNs();
    for (int i = 0; i < kBatch; ++i) {
      auto* p = static_cast<volatile char*>(mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, kHugeFlags, -1, 0));
      Check(const_cast<char*>(p));
      p[0] = 1;
      held[i] = const_cast<char*>(p);
    }
    for (int i = 0; i < kBatch; ++i) munmap(held[i], kHuge);
    each.push_back(NowNs() - t0);
    state.PauseTiming();
    AwaitZeroing(kBatch, poll);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  // Per batch (table.py divides by 32). The mean (real_time) is also kept: on this VM a few batches
  // in a run stall for milliseconds when a vCPU is held off, which moves the mean, not the median.
  state.counters["median_ns"] = Median(&each);
}
void BM_ShimHugeMapTouch(benchmark::State& state) { HitBatches(state, /*poll=*/false); }
BENCHMARK(BM_ShimHugeMapTouch)->Iterations(200);
void BM_ShimPollingHugeMapTouch(benchmark::State& state) { HitBatches(state, /*poll=*/true); }
BENCHMARK(BM_ShimPollingHugeMapTouch)->Iterations(200);

// 1. (limit) Figure 1's batches with no pool code at all: 48 huge pages mapped past the shim on a
// stack; a hit pops one, prefetches the next four for writing (as the pool's hit does), touches
// it, and the batch pushes them back — at once (arg 0: the elements are not zeroed, as with
// zero = "none"), or onto a list that a second thread zeroes between batches, newest first, and
// stacks again (arg 1: the maintenance thread's part of background zeroing). The difference is
// what a batch pays to reach memory the other core just wrote, whatever a pool does around it.
// Second arg: 1, the thread polls between batches; 0, it sleeps, as figure 1's first row does —
// what that row's batches pay for the sleep with no pool code at all.
void BM_HandoffLimit(benchmark::State& state) {
  const bool zeroed = state.range(0) != 0;
  const bool poll = state.range(1) != 0;
  constexpr int kElements = 48, kBatch = 32, kAhead = 4;
  char* base = static_cast<char*>(KernelMmap(kElements * kHuge, kHugeFlags));
  Check(base);
  memset(base, 0, kElements * kHuge);
  // The zeroing thread writes the stack and its count; the benchmark thread reads them.
  struct alignas(64) Stack {
    char* v[kElements];
    std::atomic<int> n{0};
  };
  auto clean = std::make_unique<Stack>();
  auto dirty = std::make_unique<Stack>();
  for (int i = 0; i < kElements; ++i) clean->v[i] = base + i * kHuge;
  clean->n.store(kElements, std::memory_order_relaxed);
  alignas(64) std::atomic<uint32_t> go{0};
  alignas(64) std::atomic<uint32_t> done{0};
  constexpr uint32_t kStop = ~0u;
  std::thread zeroer([&] {
    for (uint32_t seen = 0;;) {
      go.wait(seen, std::memory_order_acquire);  // sleeps, as the maintenance thread does
      seen = go.load(std::memory_order_acquire);
      if (seen == kStop) return;
      int n = clean->n.load(std::memory_order_relaxed);
      for (int i = dirty->n.load(std::memory_order_relaxed) - 1; i >= 0; --i) {
        memset(dirty->v[i], 0, kHuge);
        clean->v[n++] = dirty->v[i];
      }
      dirty->n.store(0, std::memory_order_relaxed);
      clean->n.store(n, std::memory_order_release);
      done.store(seen, std::memory_order_release);
    }
  });
  std::vector<uint64_t> each;
  each.reserve(state.max_iterations);
  uint32_t round = 0;
  for (auto _ : state) {
    char* held[kBatch];
    const uint64_t t0 = NowNs();
    int n = clean->n.load(std::memory_order_acquire);
    for (int i = 0; i < kBatch; ++i) {
      char* p = clean->v[--n];
      __builtin_prefetch(p, 1, 3);
      for (int k = 1; k <= kAhead && k <= n; ++k) __builtin_prefetch(clean->v[n - k], 1, 3);
      *static_cast<volatile char*>(p) = 1;
      held[i] = p;
    }
    Stack& back = zeroed ? *dirty : *clean;
    int m = zeroed ? 0 : n;
    for (int i = 0; i < kBatch; ++i) back.v[m++] = held[i];
    if (zeroed) clean->n.store(n, std::memory_order_relaxed);
    back.n.store(m, std::memory_order_release);
    each.push_back(NowNs() - t0);
    state.PauseTiming();
    if (zeroed) {
      go.store(++round, std::memory_order_release);
      go.notify_one();
    }
    AwaitZeroing(kBatch, poll);
    while (zeroed && done.load(std::memory_order_acquire) != round) {
    }
    state.ResumeTiming();
  }
  go.store(kStop, std::memory_order_release);
  go.notify_one();
  zeroer.join();
  KernelMunmap(base, kElements * kHuge);
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["median_ns"] = Median(&each);  // per batch, as figure 1's
}
BENCHMARK(BM_HandoffLimit)->Args({0, 1})->Args({1, 1})->Args({0, 0})->Args({1, 0})->Iterations(200);

// 2. Sustained: map, write every 4 KiB page, unmap — as fast as possible, no pauses.
void WriteEveryPage(volatile char* p) {
  for (size_t off = 0; off < kHuge; off += 4096) p[off] = 1;
}
void BM_KernelSustained(benchmark::State& state) {
  for (auto _ : state) {
    auto* p = static_cast<volatile char*>(KernelMmap(kHuge, kHugeFlags));
    Check(const_cast<char*>(p));
    WriteEveryPage(p);
    KernelMunmap(const_cast<char*>(p), kHuge);
  }
}
BENCHMARK(BM_KernelSustained)->MinTime(1.0);

void BM_ShimSustained(benchmark::State& state) {
  for (auto _ : state) {
    auto* p = static_cast<volatile char*>(mmap(nullptr, kHuge, PROT_READ | PROT_WRITE, kHugeFlags, -1, 0));
    Check(const_cast<char*>(p));
    WriteEveryPage(p);
    munmap(const_cast<char*>(p), kHuge);
  }
}
BENCHMARK(BM_ShimSustained)->MinTime(1.0);

// The limit of figure 2 with zeroing kept: one core's memset of 2 MiB.
void BM_Memset2M(benchmark::State& state) {
  void* p = KernelMmap(kHuge, kHugeFlags);
  Check(p);
  for (auto _ : state) {
    memset(p, 0, kHuge);
    benchmark::ClobberMemory();
  }
  KernelMunmap(p, kHuge);
}
BENCHMARK(BM_Memset2M);

// 3. Pass-through: a 4 KiB anonymous map + unmap (two calls), through the shim and through libc.
using MmapFn = void* (*)(void*, size_t, int, int, int, off_t);
using MunmapFn = int (*)(void*, size_t);
MmapFn LibcMmap() {
  static MmapFn f = reinterpret_cast<MmapFn>(dlsym(dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD), "mmap"));
  return f;
}
MunmapFn LibcMunmap() {
  static MunmapFn f =
      reinterpret_cast<MunmapFn>(dlsym(dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD), "munmap"));
  return f;
}

// Blocks of 2,000 map + unmap pairs through the shim and through libc, alternating, in one
// process: each figure is a median over block pairs, so the machine's drift over a run (the kernel's
// own 4 KiB map + unmap moved by 5 % from one second to the next here) falls on both sides. A pair
// is a block of each side in both orders (four blocks): the block that runs second finds the kernel's
// structures warmer.
void BM_Passthrough(benchmark::State& state) {
  constexpr int kCalls = 2000;
  MmapFn libc_mmap = LibcMmap();
  MunmapFn libc_munmap = LibcMunmap();
  auto block = [&](bool shim) {
    const uint64_t t0 = NowNs();
    for (int i = 0; i < kCalls; ++i) {
      void* p = shim ? mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : libc_mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                 -1, 0);
      benchmark::DoNotOptimize(p);
      if (shim) {
        munmap(p, 4096);
      } else {
        libc_munmap(p, 4096);
      }
    }
    return static_cast<double>(NowNs() - t0) / (2 * kCalls);  // per call
  };
  std::vector<double> shim_ns, libc_ns, diff_ns, ratio;
  for (auto _ : state) {
    const double s1 = block(true), l1 = block(false);
    const double l2 = block(false), s2 = block(true);
    const double s = (s1 + s2) / 2, l = (l1 + l2) / 2;
    shim_ns.push_back(s);
    libc_ns.push_back(l);
    diff_ns.push_back(s - l);
    ratio.push_back(s / l);
  }
  state.counters["shim_ns"] = Median(&shim_ns);
  state.counters["libc_ns"] = Median(&libc_ns);
  state.counters["diff_ns"] = Median(&diff_ns);
  state.counters["ratio"] = Median(&ratio);
}
BENCHMARK(BM_Passthrough)->Iterations(150)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
