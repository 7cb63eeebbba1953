// RDMA memory registration hooks. See shim/ibverbs.h.
#include "shim/ibverbs.h"

#include <dlfcn.h>
#include <errno.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "pools/lock.h"
#include "pools/maintenance.h"
#include "pools/sys.h"
#include "shim/real.h"
#include "shim/runtime.h"

#define DMASHIM_HOOK extern "C" __attribute__((visibility("default")))

namespace dmashim::ibverbs {
namespace {

using RegMrFn = void* (*)(void* pd, void* addr, size_t len, int access);
using RegMrIovaFn = void* (*)(void* pd, void* addr, size_t len, uint64_t iova, int access);
using RegMrIova2Fn = void* (*)(void* pd, void* addr, size_t len, uint64_t iova, unsigned access);
using DeregMrFn = int (*)(void* mr);

template <typename Fn>
Fn Resolve(std::atomic<Fn>* slot, const char* name) {
  Fn f = slot->load(std::memory_order_acquire);
  if (f != nullptr) return f;
  ShimGuard guard;  // dlsym may allocate
  f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  if (f != nullptr) slot->store(f, std::memory_order_release);
  return f;
}
std::atomic<RegMrFn> g_reg_mr{nullptr};
std::atomic<RegMrIovaFn> g_reg_mr_iova{nullptr};
std::atomic<RegMrIova2Fn> g_reg_mr_iova2{nullptr};
std::atomic<DeregMrFn> g_dereg_mr{nullptr};

// Registered regions: mr → (pool, bytes), to take the bytes off at ibv_dereg_mr.
struct Mr {
  PoolEntry* entry;
  size_t len;
};
// A leaf lock (only the table is touched under it), held across fork like the pools' locks
// (pools/maintenance.h): a child must be able to deregister what it inherited.
FutexLock g_mu;
absl::flat_hash_map<uintptr_t, Mr>* g_mrs ABSL_GUARDED_BY(g_mu) = nullptr;

std::atomic<bool> g_mu_held{false};
void HoldTableLockAcrossFork() {
  HoldAcrossForkOnce(&g_mu, ForkLockOrder::kLeaf, &g_mu_held);
}

void Publish(PoolEntry* e, int64_t delta_mrs, int64_t delta_bytes) {
  PoolStats* s = e->stats;
  const int64_t n = s->in_use.fetch_add(delta_mrs, std::memory_order_relaxed) + delta_mrs;
  s->bytes_in_use.fetch_add(delta_bytes, std::memory_order_relaxed);
  s->requested_bytes_in_use.fetch_add(delta_bytes, std::memory_order_relaxed);
  s->elements_total.store(n, std::memory_order_relaxed);
  RaiseHighWater(s, n);
}

Runtime* Rt() {
  if (ShimGuard::Active()) return nullptr;
  Runtime* rt = Runtime::Get();
  if (rt == nullptr) rt = Runtime::Init();
  if (rt == nullptr || !rt->intercepts(Family::kIbverbs)) return nullptr;
  return rt;
}

// The guarded, timed registration; `call` returns the mr or null with errno set.
template <typename Call>
void* Register(const void* caller, size_t len, Call&& call) {
  Runtime* rt = Rt();
  if (rt == nullptr) return call();
  rt->NoteHookFired(Family::kIbverbs);
  ShimGuard guard;
  HoldTableLockAcrossFork();
  PoolEntry* e = rt->RouteDevice(CallFamily::kIbverbs, caller);
  void* mr = nullptr;
  Guarded g = rt->Guard(e, len, [&] {
    const uint64_t t0 = MonotonicNs();
    mr = call();
    const int err = errno;
    e->stats->source_ns.fetch_add(MonotonicNs() - t0, std::memory_order_relaxed);
    e->stats->source_calls.fetch_add(1, std::memory_order_relaxed);
    if (mr == nullptr) {
      e->stats->source_failures.fetch_add(1, std::memory_order_relaxed);
      errno = err != 0 ? err : ENOMEM;
    }
    return mr != nullptr;
  });
  if (!g.ok) {
    errno = g.err;
    return nullptr;
  }
  {
    FutexLockGuard l(&g_mu);
    if (g_mrs == nullptr) g_mrs = new absl::flat_hash_map<uintptr_t, Mr>;
    (*g_mrs)[reinterpret_cast<uintptr_t>(mr)] = Mr{e, len};
  }
  Publish(e, 1, static_cast<int64_t>(len));
  return mr;
}

}  // namespace
}  // namespace dmashim::ibverbs

namespace ib = dmashim::ibverbs;

DMASHIM_HOOK void* ibv_reg_mr(void* pd, void* addr, size_t len, int access) {
  auto f = ib::Resolve(&ib::g_reg_mr, "ibv_reg_mr");
  if (f == nullptr) {
    errno = ENOSYS;
    return nullptr;
  }
  return ib::Register(__builtin_return_address(0), len, [&] { return f(pd, addr, len, access); });
}

DMASHIM_HOOK void* ibv_reg_mr_iova(void* pd, void* addr, size_t len, uint64_t iova, int access) {
  auto f = ib::Resolve(&ib::g_reg_mr_iova, "ibv_reg_mr_iova");
  if (f == nullptr) {
    errno = ENOSYS;
    return nullptr;
  }
  return ib::Register(__builtin_return_address(0), len,
                      [&] { return f(pd, addr, len, iova, access); });
}

DMASHIM_HOOK void* ibv_reg_mr_iova2(void* pd, void* addr, size_t len, uint64_t iova,
                                    unsigned int access) {
  auto f = ib::Resolve(&ib::g_reg_mr_iova2, "ibv_reg_mr_iova2");
  if (f == nullptr) {
    errno = ENOSYS;
    return nullptr;
  }
  return ib::Register(__builtin_return_address(0), len,
                      [&] { return f(pd, addr, len, iova, access); });
}

DMASHIM_HOOK int ibv_dereg_mr(void* mr) {
  auto f = ib::Resolve(&ib::g_dereg_mr, "ibv_dereg_mr");
  if (f == nullptr) return ENOSYS;
  if (dmashim::ShimGuard::Active() || dmashim::Runtime::Get() == nullptr) return f(mr);
  dmashim::ShimGuard guard;
  ib::HoldTableLockAcrossFork();
  ib::Mr m{nullptr, 0};
  {
    // Forgotten before the real call: once it returns, another thread may get the same address.
    dmashim::FutexLockGuard l(&ib::g_mu);
    if (ib::g_mrs != nullptr) {
      auto it = ib::g_mrs->find(reinterpret_cast<uintptr_t>(mr));
      if (it != ib::g_mrs->end()) {
        m = it->second;
        ib::g_mrs->erase(it);
      }
    }
  }
  const int rc = f(mr);  // rdma-core returns an errno value, 0 on success
  if (m.entry != nullptr) {
    if (rc == 0) {
      m.entry->stats->frees.fetch_add(1, std::memory_order_relaxed);
      ib::Publish(m.entry, -1, -static_cast<int64_t>(m.len));
      dmashim::NotifyFreed(m.entry);  // a registration waiting in this pool's mode retries now
    } else {
      dmashim::FutexLockGuard l(&ib::g_mu);
      (*ib::g_mrs)[reinterpret_cast<uintptr_t>(mr)] = m;
    }
  }
  return rc;
}
