// CUDA pinned host memory: the hooks and the caching pool. See shim/cuda.h for the behaviour.
//
// Locking: CudaPool::mu_ guards the block table and the cache only; no CUDA call, dlsym or
// DmaPool/Mempool call is made under it — a leaf lock, held across fork after the pools' locks
// (pools/maintenance.h), so a child never inherits it held by another thread. The real functions
// are resolved (dlsym, dlopen NOLOAD) at the first CUDA call, under a resolve lock that no pool
// lock is ever held with.
#include "shim/cuda.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "pools/dma_pool.h"
#include "pools/lock.h"
#include "pools/maintenance.h"
#include "pools/mempool.h"
#include "pools/sys.h"
#include "shim/real.h"
#include "shim/runtime.h"

#define DMASHIM_HOOK extern "C" __attribute__((visibility("default")))

namespace dmashim::cuda {
namespace {

using HostAllocFn = int (*)(void**, size_t, unsigned);
using MallocHostFn = int (*)(void**, size_t);
using FreeHostFn = int (*)(void*);
using RegisterFn = int (*)(void*, size_t, unsigned);
using UnregisterFn = int (*)(void*);
using GetFlagsFn = int (*)(unsigned*, void*);

struct Real {
  HostAllocFn host_alloc = nullptr;
  MallocHostFn malloc_host = nullptr;
  FreeHostFn free_host = nullptr;
  RegisterFn reg = nullptr;
  UnregisterFn unreg = nullptr;
  GetFlagsFn get_flags = nullptr;
};

std::atomic<const Real*> g_real{nullptr};
FutexLock g_resolve_mu;
Real g_real_storage;

void* Lookup(const char* name) {
  if (void* f = dlsym(RTLD_NEXT, name)) return f;
  // A libcudart the program dlopen'ed itself (RTLD_LOCAL) is not in RTLD_NEXT's scope.
  static const char* const kLibs[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12",
                                      "libcudart.so.11.0"};
  for (const char* lib : kLibs) {
    void* h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (h == nullptr) continue;
    void* f = dlsym(h, name);
    dlclose(h);  // drops only the reference NOLOAD took
    if (f != nullptr) return f;
  }
  return nullptr;
}

// The real CUDA runtime, or null while none is loaded (the next call tries again). The caller
// holds a ShimGuard (dlsym may allocate and map).
const Real* Resolve() {
  if (const Real* r = g_real.load(std::memory_order_acquire)) return r;
  FutexLockGuard l(&g_resolve_mu);
  if (const Real* r = g_real.load(std::memory_order_acquire)) return r;
  Real x;
  x.host_alloc = reinterpret_cast<HostAllocFn>(Lookup("cudaHostAlloc"));
  if (x.host_alloc == nullptr) return nullptr;
  x.malloc_host = reinterpret_cast<MallocHostFn>(Lookup("cudaMallocHost"));
  x.free_host = reinterpret_cast<FreeHostFn>(Lookup("cudaFreeHost"));
  x.reg = reinterpret_cast<RegisterFn>(Lookup("cudaHostRegister"));
  x.unreg = reinterpret_cast<UnregisterFn>(Lookup("cudaHostUnregister"));
  x.get_flags = reinterpret_cast<GetFlagsFn>(Lookup("cudaHostGetFlags"));
  g_real_storage = x;
  g_real.store(&g_real_storage, std::memory_order_release);
  return &g_real_storage;
}

int ErrnoOf(int cuda_rc) { return cuda_rc == kErrorMemoryAllocation ? ENOMEM : EINVAL; }

// --- pages for the small-block pools: pinned once with cudaHostRegister ---

// Time the registrations made on this thread by a page source (read by the allocating caller).
thread_local uint64_t t_reg_ns __attribute__((tls_model("initial-exec"))) = 0;
thread_local uint32_t t_reg_calls __attribute__((tls_model("initial-exec"))) = 0;

// The page source's "mlock": cudaHostRegister pins the page (and makes it known to the device).
template <unsigned kFlags>
int RegisterPage(const void* p, size_t len) {
  const Real* r = g_real.load(std::memory_order_acquire);
  if (r == nullptr || r->reg == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const uint64_t t0 = MonotonicNs();
  const int rc = r->reg(const_cast<void*>(p), len, kFlags);  // Portable = 1, Mapped = 2, as alloc
  t_reg_ns += MonotonicNs() - t0;
  ++t_reg_calls;
  if (rc != kSuccess) {
    errno = ErrnoOf(rc);
    return -1;
  }
  return 0;
}
int UnregisterPage(const void* p, size_t) {
  const Real* r = g_real.load(std::memory_order_acquire);
  if (r != nullptr && r->unreg != nullptr) r->unreg(const_cast<void*>(p));
  return 0;
}
template <unsigned kFlags>
const SysCalls* PageSys() {
  static const SysCalls s{RealSysCalls().mmap, RealSysCalls().munmap, RealSysCalls().madvise,
                          &RegisterPage<kFlags>, &UnregisterPage};
  return &s;
}
const SysCalls* PageSysFor(unsigned flags) {
  switch (flags & 3) {
    case 1: return PageSys<1>();
    case 2: return PageSys<2>();
    case 3: return PageSys<3>();
    default: return PageSys<0>();
  }
}

constexpr size_t kDefaultSmallMax = size_t{64} << 10;
constexpr size_t kSmallAlign = 64;
// Large blocks from this size on are pinned by PinByRegister (write-combined ones still come from
// cudaHostAlloc: a registration cannot give that).
constexpr size_t kRegisterMin = size_t{4} << 20;
constexpr size_t kRegisterChunk = size_t{1} << 30;  // one cudaHostRegister call at most
constexpr size_t kPrefaultSlice = size_t{64} << 20;  // a thread faults in at least this much
constexpr size_t kPrefaultThreads = 8;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// Size classes: 8 steps per power of two (waste ≤ 12.5 %); whole 4 KiB pages for large blocks.
size_t ClassOf(size_t s, bool large) {
  size_t c;
  if (s <= 512) {
    c = (std::max<size_t>(s, 1) + 63) & ~size_t{63};
  } else {
    const int k = 63 - __builtin_clzll(static_cast<unsigned long long>(s - 1));  // 2^k < s ≤ 2^(k+1)
    const size_t step = size_t{1} << (k - 3);
    c = (s + step - 1) & ~(step - 1);
  }
  if (large) c = (c + 4095) & ~size_t{4095};
  return c;
}

uint64_t Key(size_t cls, unsigned flags) { return (static_cast<uint64_t>(cls) << 3) | (flags & 7); }

void Add(Counter& c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); }

class CudaPool {
  struct Block;  // below: how one block was obtained and is held

 public:
  CudaPool(PoolEntry* e, const Real* real) : e_(e), s_(e->stats), real_(real) {
    small_max_ = e->cfg.match.size != 0 ? e->cfg.match.size : kDefaultSmallMax;
    page_size_ = 4096;  // a power of two (the DmaPool's boundary), at least 4 small blocks
    while (page_size_ < small_max_ * 4) page_size_ <<= 1;
    keep_ = e->cfg.keep.value_or(std::max<size_t>(e->cfg.reserve, 8));
    for (unsigned f = 0; f < 4; ++f) {
      MempoolOptions o;
      o.name = e->cfg.name.substr(0, kPoolNameMax - 8) + ".pages";
      o.source = SourceSpec{SourceKind::kPinned, false};
      o.element_size = page_size_;
      o.reserve = f == 0 ? e->cfg.reserve : 0;
      o.keep = o.reserve;
      o.policy = WaitPolicy{};  // fail-fast: the pool's own mode is applied by the Runtime
      o.zero = ZeroMode::kNone;  // cudaHostAlloc does not zero either
      auto p = Mempool::Create(std::move(o), nullptr, PageSysFor(f));
      if (p.ok()) pages_[f] = *std::move(p);
    }
    HoldAcrossFork(&mu_, ForkLockOrder::kLeaf);  // CudaPools live as long as the process
  }

  // The reserve: `reserve` pages of the default flag set, pinned at the first CUDA call.
  void Prefill() {
    if (pages_[0] == nullptr || e_->cfg.reserve == 0) return;
    t_reg_ns = 0;
    t_reg_calls = 0;
    pages_[0]->Prefill();
    TakeRegistrationTime();
  }

  int Alloc(Runtime* rt, void** out, size_t size, unsigned flags) {
    if (out == nullptr) return kErrorInvalidValue;
    if (size == 0) return Timed([&] { return real_->host_alloc(out, size, flags); });
    const bool small = size < small_max_ && (flags & kHostAllocWriteCombined) == 0 &&
                       pages_[flags & 3] != nullptr;
    const size_t cls = ClassOf(size, !small);
    void* p = nullptr;
    bool from_cache = false;
    int rc = kSuccess;
    if (TryOnce(size, cls, flags, small, &p, &from_cache, &rc)) {
      Add(from_cache ? s_->alloc_reserve : s_->alloc_source, 1);
      *out = p;
      return kSuccess;
    }
    if (rc != kErrorMemoryAllocation) {
      Add(s_->fail_source, 1);
      return rc;
    }
    // The pool's mode: fail-fast fails now, timeout and block retry in rounds.
    bool first = true;
    Guarded g = rt->Guard(e_, cls, [&] {
      if (first) {
        first = false;
        errno = ENOMEM;
        return false;
      }
      if (TryOnce(size, cls, flags, small, &p, &from_cache, &rc)) return true;
      errno = ErrnoOf(rc);
      return false;
    });
    if (!g.ok) return rc != kSuccess ? rc : kErrorMemoryAllocation;
    *out = p;
    return kSuccess;
  }

  // Returns false when `p` is not a block of this pool.
  bool Free(void* p, int* rc) {
    *rc = kSuccess;
    Block b;
    enum { kGone, kCached, kReleased } what = kGone;
    {
      FutexLockGuard l(&mu_);
      auto it = blocks_.find(reinterpret_cast<uintptr_t>(p));
      if (it == blocks_.end()) return false;
      if (!it->second.in_use) {  // a double free: CUDA's answer
        *rc = kErrorInvalidValue;
        return true;
      }
      b = it->second;
      --in_use_;
      bytes_ -= b.cls;
      requested_ -= b.requested;
      if (b.dma == nullptr && cached_ < keep_) {
        it->second.in_use = false;
        free_[Key(b.cls, b.flags)].push_back(p);
        ++cached_;
        what = kCached;
      } else {
        blocks_.erase(it);
        what = b.dma != nullptr ? kGone : kReleased;
      }
      PublishLocked();
    }
    Add(s_->frees, 1);
    if (b.dma != nullptr) {
      b.dma->Free(p);
    } else if (what == kReleased) {
      ReleaseLarge(p, b);
    }
    NotifyFreed(e_);  // a cudaHostAlloc waiting in this pool's mode retries now
    return true;
  }

  bool GetFlags(void* p, unsigned* flags) {
    FutexLockGuard l(&mu_);
    auto it = blocks_.find(reinterpret_cast<uintptr_t>(p));
    if (it == blocks_.end() || !it->second.in_use) return false;
    *flags = it->second.flags;
    return true;
  }

  // Hands every cached large block back to CUDA (release-and-retry). Returns how many.
  size_t ReleaseCached() {
    std::vector<std::pair<void*, Block>> out;
    {
      FutexLockGuard l(&mu_);
      for (auto& [key, list] : free_) {
        for (void* p : list) {
          auto it = blocks_.find(reinterpret_cast<uintptr_t>(p));
          out.emplace_back(p, it->second);
          blocks_.erase(it);
        }
        list.clear();
      }
      cached_ = 0;
      PublishLocked();
    }
    for (auto& [p, b] : out) ReleaseLarge(p, b);
    return out.size();
  }

  // Gives a large block back: the runtime frees what it allocated; what PinByRegister pinned is
  // unregistered chunk by chunk and unmapped.
  void ReleaseLarge(void* p, const Block& b) {
    if (b.registered) {
      for (size_t off = 0; off < b.cls; off += kRegisterChunk) {
        Timed([&] { return real_->unreg(static_cast<char*>(p) + off); });
      }
      dmashim::RealSysCalls().munmap(p, b.cls);
    } else {
      Timed([&] { return real_->free_host(p); });
    }
    Add(s_->source_releases, 1);
  }

  // Large requests that need no write-combining are pinned the way the field learned to pin big
  // buffers (PyTorch, RMM, LMCache): map ordinary pages, fault them in from several threads at
  // once, then cudaHostRegister them in chunks — rather than one cudaHostAlloc that faults and
  // pins gigabytes serially while holding the driver's locks. Returns a CUDA error code.
  int PinByRegister(void** out, size_t len, unsigned flags) {
    const SysCalls& sys = dmashim::RealSysCalls();
    void* m = sys.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return kErrorMemoryAllocation;
    const size_t slices = std::clamp<size_t>(len / kPrefaultSlice, 1, kPrefaultThreads);
    const size_t per = (len / slices + 4095) & ~size_t{4095};
    std::vector<pthread_t> threads;
    struct Slice {
      char* p;
      size_t n;
    };
    std::vector<Slice> work;
    for (size_t off = 0; off < len; off += per) work.push_back({static_cast<char*>(m) + off, std::min(per, len - off)});
    auto populate = [](void* arg) -> void* {
      auto* w = static_cast<Slice*>(arg);
      if (dmashim::RealSysCalls().madvise(w->p, w->n, MADV_POPULATE_WRITE) != 0) {
        for (size_t i = 0; i < w->n; i += 4096) w->p[i] = 0;  // older kernels: touch instead
      }
      return nullptr;
    };
    // Helper threads take no signals (the application's handlers expect its own threads).
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (size_t i = 1; i < work.size(); ++i) {
      pthread_t t;
      if (pthread_create(&t, nullptr, populate, &work[i]) == 0) threads.push_back(t);
      else populate(&work[i]);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    populate(&work[0]);
    for (pthread_t t : threads) pthread_join(t, nullptr);
    const unsigned reg_flags = flags & 3;  // Portable and Mapped mean the same for a registration
    for (size_t off = 0; off < len; off += kRegisterChunk) {
      const int rc = real_->reg(static_cast<char*>(m) + off, std::min(kRegisterChunk, len - off),
                                reg_flags);
      if (rc != kSuccess) {
        for (size_t undo = 0; undo < off; undo += kRegisterChunk) {
          real_->unreg(static_cast<char*>(m) + undo);
        }
        sys.munmap(m, len);
        return rc;
      }
    }
    *out = m;
    return kSuccess;
  }

  void NoteRegistered(void* p, size_t size) {
    FutexLockGuard l(&mu_);
    registered_[reinterpret_cast<uintptr_t>(p)] = size;
    reg_bytes_ += size;
    PublishLocked();
  }
  void NoteUnregistered(void* p) {
    FutexLockGuard l(&mu_);
    auto it = registered_.find(reinterpret_cast<uintptr_t>(p));
    if (it == registered_.end()) return;
    reg_bytes_ -= it->second;
    registered_.erase(it);
    PublishLocked();
  }

  // A timed real call: source_calls / source_ns / source_failures.
  template <typename Fn>
  int Timed(Fn&& fn) {
    const uint64_t t0 = MonotonicNs();
    const int rc = fn();
    Add(s_->source_ns, MonotonicNs() - t0);
    Add(s_->source_calls, 1);
    if (rc != kSuccess) Add(s_->source_failures, 1);
    return rc;
  }

  PoolEntry* entry() const { return e_; }

 private:
  struct Block {
    size_t cls = 0;
    size_t requested = 0;
    unsigned flags = 0;
    DmaPool* dma = nullptr;  // small: the DmaPool it came from
    bool in_use = true;      // false: a large block held in the cache
    bool registered = false;  // large, pinned by PinByRegister (unregister + munmap to free)
  };

  void TakeRegistrationTime() {
    if (t_reg_calls != 0) {
      Add(s_->source_calls, t_reg_calls);
      Add(s_->source_ns, t_reg_ns);
    }
  }

  // One attempt without waiting. On failure *rc is the CUDA error (2 for a shortage or `max`).
  bool TryOnce(size_t size, size_t cls, unsigned flags, bool small, void** out, bool* from_cache,
               int* rc) {
    *from_cache = false;
    void* p = nullptr;
    DmaPool* dma = nullptr;
    bool via_register = false;
    {
      FutexLockGuard l(&mu_);
      if (e_->cfg.max != 0 && in_use_ + pending_ >= e_->cfg.max) {
        *rc = kErrorMemoryAllocation;
        return false;
      }
      ++pending_;
      if (!small) {
        auto it = free_.find(Key(cls, flags));
        if (it != free_.end() && !it->second.empty()) {
          p = it->second.back();
          it->second.pop_back();
          --cached_;
          *from_cache = true;
        }
      } else {
        auto it = dma_.find(Key(cls, flags));
        if (it != dma_.end()) dma = it->second.get();
      }
    }
    if (small) {
      if (dma == nullptr) dma = MakeDma(cls, flags);
      if (dma != nullptr) {
        t_reg_ns = 0;
        t_reg_calls = 0;
        int err = 0;
        p = dma->Alloc(WaitPolicy{}, &err);
        *from_cache = p != nullptr && t_reg_calls == 0;
        TakeRegistrationTime();
        if (p == nullptr) *rc = err == ENOMEM || err == EAGAIN ? kErrorMemoryAllocation : err;
      } else {
        *rc = kErrorMemoryAllocation;
      }
    } else if (p == nullptr) {
      via_register = cls >= kRegisterMin && (flags & kHostAllocWriteCombined) == 0 &&
                     real_->reg != nullptr && real_->unreg != nullptr;
      auto pin = [&] {
        return via_register ? PinByRegister(&p, cls, flags) : real_->host_alloc(&p, cls, flags);
      };
      *rc = Timed(pin);
      if (*rc == kErrorMemoryAllocation && ReleaseCached() > 0) *rc = Timed(pin);
      if (*rc != kSuccess) p = nullptr;
    }
    FutexLockGuard l(&mu_);
    --pending_;
    if (p == nullptr) {
      if (*rc == kSuccess) *rc = kErrorMemoryAllocation;
      return false;
    }
    Block& b = blocks_[reinterpret_cast<uintptr_t>(p)];
    b.cls = cls;
    b.requested = size;
    b.flags = flags;
    b.dma = small ? dma : nullptr;
    b.in_use = true;
    if (small) {
      b.registered = false;
    } else if (!*from_cache) {
      b.registered = via_register;  // a cached block keeps how it was pinned
    }
    ++in_use_;
    bytes_ += cls;
    requested_ += size;
    PublishLocked();
    *out = p;
    *rc = kSuccess;
    return true;
  }

  DmaPool* MakeDma(size_t cls, unsigned flags) {
    DmaPoolOptions o;
    o.name = e_->cfg.name;
    o.size = cls;
    o.align = kSmallAlign;
    auto d = DmaPool::Create(std::move(o), pages_[flags & 3].get());
    if (!d.ok()) return nullptr;
    FutexLockGuard l(&mu_);
    auto& slot = dma_[Key(cls, flags)];
    if (slot == nullptr) slot = *std::move(d);
    return slot.get();  // a racing creator's pool is dropped unused
  }

  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t in_use = static_cast<int64_t>(in_use_);
    s_->in_use.store(in_use, std::memory_order_relaxed);
    s_->bytes_in_use.store(static_cast<int64_t>(bytes_ + reg_bytes_), std::memory_order_relaxed);
    s_->requested_bytes_in_use.store(static_cast<int64_t>(requested_ + reg_bytes_),
                                     std::memory_order_relaxed);
    s_->reserve_level.store(static_cast<int64_t>(cached_), std::memory_order_relaxed);
    s_->elements_total.store(static_cast<int64_t>(in_use_ + cached_), std::memory_order_relaxed);
    RaiseHighWater(s_, in_use);
  }

  PoolEntry* e_;
  PoolStats* s_;
  const Real* real_;
  size_t small_max_ = kDefaultSmallMax;
  size_t page_size_ = 0;
  size_t keep_ = 8;
  std::unique_ptr<Mempool> pages_[4];  // per flag set Portable|Mapped

  FutexLock mu_;
  absl::flat_hash_map<uintptr_t, Block> blocks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::vector<void*>> free_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<DmaPool>> dma_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uintptr_t, size_t> registered_ ABSL_GUARDED_BY(mu_);
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  size_t cached_ ABSL_GUARDED_BY(mu_) = 0;
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t requested_ ABSL_GUARDED_BY(mu_) = 0;
  size_t reg_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// The CUDA pools, built (and their reserves pinned) at the first CUDA call — never at load time.
std::atomic<int> g_built{0};
FutexLock g_build_mu;
std::vector<CudaPool*>* g_pools = nullptr;  // by entry index; null where not a CUDA pool

// In a fork child only the forking thread exists: a resolution or a build of the pools that
// another thread had under way will never finish there, and its lock would stay held for ever
// (the child's first CUDA call waited on it). A resolution publishes its result last (g_real): the
// child resolves again. A build half done is not the child's to finish or redo — the pages it had
// pinned were the parent's free pages, not inherited (MADV_DONTFORK) — so the child's CUDA calls go
// to the runtime as calls without a pool: timed and counted under the pool's mode.
void ResetLocksInForkChild() {
  g_resolve_mu.ResetAfterFork();
  if (g_build_mu.ResetAfterFork()) {
    g_pools = nullptr;  // PoolOf finds no pool
    g_built.store(2, std::memory_order_release);
  }
}
[[maybe_unused]] const bool g_fork_handler =
    (pthread_atfork(nullptr, nullptr, ResetLocksInForkChild), true);

void Build(Runtime* rt, const Real* real) {
  if (g_built.load(std::memory_order_acquire) == 2) return;
  FutexLockGuard l(&g_build_mu);
  if (g_built.load(std::memory_order_relaxed) == 2) return;
  auto* pools = new std::vector<CudaPool*>(rt->entries().size(), nullptr);
  for (auto& e : rt->entries()) {
    if (e->index == 0 || e->cfg.match.call != CallFamily::kCuda) continue;
    auto* cp = new CudaPool(e.get(), real);
    cp->Prefill();
    (*pools)[static_cast<size_t>(e->index)] = cp;
  }
  g_pools = pools;
  g_built.store(2, std::memory_order_release);
}

CudaPool* PoolOf(PoolEntry* e) {
  if (g_pools == nullptr || e->index <= 0 || static_cast<size_t>(e->index) >= g_pools->size()) {
    return nullptr;
  }
  return (*g_pools)[static_cast<size_t>(e->index)];
}

// A timed real call under the pool's mode (pass-through for the default record or a register).
template <typename Fn>
int GuardedCall(Runtime* rt, PoolEntry* e, CudaPool* cp, size_t bytes, Fn&& fn) {
  int rc = kSuccess;
  Guarded g = rt->Guard(e, bytes, [&] {
    auto timed = [&] {
      const uint64_t t0 = MonotonicNs();
      const int r = fn();
      Add(e->stats->source_ns, MonotonicNs() - t0);
      Add(e->stats->source_calls, 1);
      if (r != kSuccess) Add(e->stats->source_failures, 1);
      return r;
    };
    rc = timed();
    if (rc == kErrorMemoryAllocation && cp != nullptr && cp->ReleaseCached() > 0) rc = timed();
    if (rc == kSuccess) return true;
    errno = ErrnoOf(rc);
    return false;
  });
  if (g.ok) return kSuccess;
  return rc != kSuccess ? rc : kErrorMemoryAllocation;
}

// The state of one hook call: null runtime = pass straight through.
struct Call {
  const Real* real = nullptr;
  Runtime* rt = nullptr;
  PoolEntry* entry = nullptr;
  CudaPool* pool = nullptr;
};

Call Enter(const void* caller) {
  Call c;
  if (ShimGuard::Active()) {
    c.real = g_real.load(std::memory_order_acquire);
    return c;
  }
  {
    ShimGuard guard;
    c.real = Resolve();
  }
  if (c.real == nullptr) return c;
  Runtime* rt = Runtime::Get();
  if (rt == nullptr) rt = Runtime::Init();
  if (rt == nullptr || !rt->intercepts(Family::kCuda)) return c;
  rt->NoteHookFired(Family::kCuda);
  ShimGuard guard;
  Build(rt, c.real);
  c.rt = rt;
  c.entry = rt->RouteDevice(CallFamily::kCuda, caller);
  c.pool = PoolOf(c.entry);
  return c;
}

int HostAlloc(const void* caller, void** p, size_t size, unsigned flags, bool malloc_host) {
  Call c = Enter(caller);
  if (c.real == nullptr) return kErrorInitialization;
  auto real_call = [&] {
    return malloc_host && c.real->malloc_host != nullptr ? c.real->malloc_host(p, size)
                                                         : c.real->host_alloc(p, size, flags);
  };
  if (c.rt == nullptr) return real_call();
  ShimGuard guard;
  if (c.pool != nullptr) return c.pool->Alloc(c.rt, p, size, flags);
  return GuardedCall(c.rt, c.entry, nullptr, size, real_call);
}

}  // namespace
}  // namespace dmashim::cuda

using dmashim::ShimGuard;
namespace cu = dmashim::cuda;

DMASHIM_HOOK int cudaHostAlloc(void** p, size_t size, unsigned int flags) {
  return cu::HostAlloc(__builtin_return_address(0), p, size, flags, false);
}

DMASHIM_HOOK int cudaMallocHost(void** p, size_t size) {
  return cu::HostAlloc(__builtin_return_address(0), p, size, cu::kHostAllocDefault, true);
}

DMASHIM_HOOK int cudaFreeHost(void* p) {
  cu::Call c = cu::Enter(__builtin_return_address(0));
  if (c.real == nullptr || c.real->free_host == nullptr) return cu::kErrorInitialization;
  if (c.rt == nullptr || p == nullptr) return c.real->free_host(p);
  ShimGuard guard;
  // A block of any CUDA pool (the freeing caller need not be the allocating one).
  if (cu::g_pools != nullptr) {
    for (cu::CudaPool* cp : *cu::g_pools) {
      int rc = cu::kSuccess;
      if (cp != nullptr && cp->Free(p, &rc)) return rc;
    }
  }
  const uint64_t t0 = dmashim::MonotonicNs();
  const int rc = c.real->free_host(p);
  cu::Add(c.entry->stats->source_ns, dmashim::MonotonicNs() - t0);
  cu::Add(c.entry->stats->source_calls, 1);
  if (rc == cu::kSuccess) cu::Add(c.entry->stats->frees, 1);
  return rc;
}

DMASHIM_HOOK int cudaHostRegister(void* p, size_t size, unsigned int flags) {
  cu::Call c = cu::Enter(__builtin_return_address(0));
  if (c.real == nullptr || c.real->reg == nullptr) return cu::kErrorInitialization;
  if (c.rt == nullptr) return c.real->reg(p, size, flags);
  ShimGuard guard;
  const int rc = cu::GuardedCall(c.rt, c.entry, c.pool, size,
                                 [&] { return c.real->reg(p, size, flags); });
  if (rc == cu::kSuccess && c.pool != nullptr) c.pool->NoteRegistered(p, size);
  return rc;
}

DMASHIM_HOOK int cudaHostUnregister(void* p) {
  cu::Call c = cu::Enter(__builtin_return_address(0));
  if (c.real == nullptr || c.real->unreg == nullptr) return cu::kErrorInitialization;
  if (c.rt == nullptr) return c.real->unreg(p);
  ShimGuard guard;
  const uint64_t t0 = dmashim::MonotonicNs();
  const int rc = c.real->unreg(p);
  cu::Add(c.entry->stats->source_ns, dmashim::MonotonicNs() - t0);
  cu::Add(c.entry->stats->source_calls, 1);
  if (rc == cu::kSuccess && c.pool != nullptr) c.pool->NoteUnregistered(p);
  return rc;
}

DMASHIM_HOOK int cudaHostGetFlags(unsigned int* flags, void* p) {
  cu::Call c = cu::Enter(__builtin_return_address(0));
  if (c.real == nullptr || c.real->get_flags == nullptr) return cu::kErrorInitialization;
  // The runtime's own answer comes first, so a pooled block reports exactly what the runtime says
  // about its memory (with unified addressing it reports Mapped and drops Portable, whatever was
  // asked). Only where it has none — a small block inside a registered page — does the pool
  // answer with the flags the block was asked for.
  const int rc = c.real->get_flags(flags, p);
  if (rc == cu::kSuccess) return rc;
  if (c.rt != nullptr && flags != nullptr && cu::g_pools != nullptr) {
    ShimGuard guard;
    for (cu::CudaPool* cp : *cu::g_pools) {
      if (cp != nullptr && cp->GetFlags(p, flags)) return cu::kSuccess;
    }
  }
  return rc;
}
