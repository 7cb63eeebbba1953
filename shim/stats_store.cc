#include "shim/stats_store.h"

#include <atomic>

namespace dmashim {
namespace {

// Until a stats segment exists: records in the shim's own memory.
constexpr int kLocalPools = 64;
PoolStats g_local[kLocalPools + 1];
std::atomic<int> g_local_used{0};
std::atomic<uint64_t> g_passthrough[static_cast<int>(PassCall::kCount)];
std::atomic<int> g_hooks[5];

}  // namespace

void StatsStoreOpen(const Config&, int) {}

PoolStats* StatsStoreAddPool(const char* name, PoolKind kind) {
  const int i = g_local_used.fetch_add(1);
  if (i >= kLocalPools) return nullptr;
  InitPoolStats(&g_local[i], name, kind, 0, 0);
  return &g_local[i];
}

PoolStats* StatsStoreFallback() { return &g_local[kLocalPools]; }

void StatsStoreCountPassthrough(int call) {
  if (call >= 0 && call < static_cast<int>(PassCall::kCount)) {
    g_passthrough[call].fetch_add(1, std::memory_order_relaxed);
  }
}

void StatsStoreHookState(int family, int state) {
  if (family >= 0 && family < 5) g_hooks[family].store(state);
}

void StatsStoreMarkExited(int) {}
void StatsStoreForkChild() {}

}  // namespace dmashim
