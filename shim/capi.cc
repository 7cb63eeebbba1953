// The opt-in C API (dmashim.h) over the runtime's pools.
#include <errno.h>

#include <memory>

#include "pools/dma_pool.h"
#include "shim/dmashim.h"
#include "shim/real.h"
#include "shim/runtime.h"
#include "shim/stats_store.h"

#define DMASHIM_API extern "C" __attribute__((visibility("default")))

struct dmashim_pool {
  dmashim::PoolEntry entry;  // never instantiated: a dmashim_pool* is a PoolEntry*
};
struct dmashim_dma_pool {
  std::unique_ptr<dmashim::DmaPool> pool;
};

namespace {

dmashim::PoolEntry* Entry(dmashim_pool* p) { return reinterpret_cast<dmashim::PoolEntry*>(p); }

// Translates flags into a policy; `base` is the pool's own. Returns false for bad flags.
bool PolicyFromFlags(int flags, int64_t timeout_ns, const dmashim::WaitPolicy& base,
                     dmashim::WaitPolicy* out) {
  *out = base;
  const bool interruptible = (flags & DMASHIM_INTERRUPTIBLE) != 0;
  switch (flags & 0xff) {
    case DMASHIM_DEFAULT:
      break;
    case DMASHIM_WAIT:
      out->mode = dmashim::Mode::kBlock;
      break;
    case DMASHIM_NOWAIT:
      out->mode = dmashim::Mode::kFailFast;
      break;
    case DMASHIM_TIMEOUT:
      if (timeout_ns <= 0) return false;
      out->mode = dmashim::Mode::kTimeout;
      out->timeout = absl::Nanoseconds(timeout_ns);
      break;
    default:
      return false;
  }
  if ((flags & ~0x1ff) != 0) return false;
  if (interruptible) out->interruptible = true;
  return true;
}

constexpr int kMaxScopes = 16;
thread_local dmashim::WaitPolicy t_scopes[kMaxScopes];
thread_local int t_scope_depth = 0;

}  // namespace

DMASHIM_API dmashim_pool* dmashim_pool_find(const char* name) {
  dmashim::Runtime* rt = dmashim::Runtime::Init();
  dmashim::PoolEntry* e = rt && name ? rt->FindPool(name) : nullptr;
  if (e == nullptr) errno = ENOENT;
  return reinterpret_cast<dmashim_pool*>(e);
}

DMASHIM_API size_t dmashim_pool_element_size(const dmashim_pool* pool) {
  if (pool == nullptr) return 0;
  return reinterpret_cast<const dmashim::PoolEntry*>(pool)->pool->element_size();
}

DMASHIM_API void* dmashim_pool_alloc(dmashim_pool* pool, int flags, int64_t timeout_ns) {
  dmashim::WaitPolicy policy;
  if (pool == nullptr || !PolicyFromFlags(flags, timeout_ns, Entry(pool)->cfg.policy, &policy)) {
    errno = EINVAL;
    return nullptr;
  }
  dmashim::ShimGuard guard;
  dmashim::Mempool* mp = Entry(pool)->pool.get();
  int err = 0;
  void* p = mp->Alloc(mp->element_size(), policy, &err);
  if (p == nullptr) errno = err;
  return p;
}

DMASHIM_API int dmashim_pool_free(dmashim_pool* pool, void* element) {
  dmashim::ShimGuard guard;
  if (pool == nullptr || !Entry(pool)->pool->Free(element)) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

DMASHIM_API dmashim_dma_pool* dmashim_dma_pool_create(const char* name, dmashim_pool* pages,
                                                      size_t size, size_t align, size_t boundary) {
  if (name == nullptr || pages == nullptr) {
    errno = EINVAL;
    return nullptr;
  }
  dmashim::ShimGuard guard;
  dmashim::DmaPoolOptions o{name, size, align, boundary};
  auto pool = dmashim::DmaPool::Create(std::move(o), Entry(pages)->pool.get(),
                                       dmashim::StatsStoreAddPool(name, dmashim::PoolKind::kDmaPool));
  if (!pool.ok()) {
    errno = EINVAL;
    return nullptr;
  }
  return new dmashim_dma_pool{*std::move(pool)};
}

DMASHIM_API void* dmashim_dma_alloc(dmashim_dma_pool* pool, int flags, int64_t timeout_ns) {
  dmashim::WaitPolicy policy;
  if (pool == nullptr) {
    errno = EINVAL;
    return nullptr;
  }
  dmashim::ShimGuard guard;
  if (!PolicyFromFlags(flags, timeout_ns, dmashim::WaitPolicy{}, &policy)) {
    errno = EINVAL;
    return nullptr;
  }
  int err = 0;
  void* p = (flags & 0xff) == DMASHIM_DEFAULT ? pool->pool->Alloc(&err)
                                              : pool->pool->Alloc(policy, &err);
  if (p == nullptr) errno = err;
  return p;
}

DMASHIM_API int dmashim_dma_free(dmashim_dma_pool* pool, void* block) {
  dmashim::ShimGuard guard;
  if (pool == nullptr || !pool->pool->Free(block)) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

DMASHIM_API void dmashim_dma_pool_destroy(dmashim_dma_pool* pool) {
  dmashim::ShimGuard guard;
  delete pool;
}

DMASHIM_API int dmashim_scope_begin(int flags, int64_t timeout_ns) {
  dmashim::WaitPolicy policy;
  if ((flags & 0xff) == DMASHIM_DEFAULT ||
      !PolicyFromFlags(flags, timeout_ns, dmashim::WaitPolicy{}, &policy)) {
    errno = EINVAL;
    return -1;
  }
  if (t_scope_depth >= kMaxScopes) {
    errno = EOVERFLOW;
    return -1;
  }
  t_scopes[t_scope_depth] = policy;
  dmashim::t_scope_policy = &t_scopes[t_scope_depth];
  ++t_scope_depth;
  return 0;
}

DMASHIM_API void dmashim_scope_end(void) {
  if (t_scope_depth == 0) return;
  --t_scope_depth;
  dmashim::t_scope_policy = t_scope_depth > 0 ? &t_scopes[t_scope_depth - 1] : nullptr;
}
