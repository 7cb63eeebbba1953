#include "shim/stats_store.h"

#include <stdlib.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "shim/diag.h"

namespace dmashim {
namespace {

StatsSegment g_segment;
bool g_have_segment = false;

// When no segment could be created (run directory missing or not ours): records in the shim's own
// memory, so the pools count the same way and only the export is lost.
constexpr int kLocalPools = kSegmentPoolCapacity;
PoolStats g_local[kLocalPools + 1];
std::atomic<int> g_local_used{0};

}  // namespace

void StatsStoreOpen(const Config& config, int config_errors) {
  if (!config.stats) return;
  const int err = StatsSegment::Create(config.run_dir.c_str(), &g_segment);
  if (err != 0) {
    DiagLine(absl::StrCat("dmashim: no stats segment in run directory \"", config.run_dir,
                          "\" (", strerrordesc_np(err), "); statistics are not exported"));
    return;
  }
  g_have_segment = true;
  g_segment.AddConfigErrors(static_cast<uint64_t>(config_errors));
}

PoolStats* StatsStoreAddPool(const char* name, PoolKind kind) {
  if (g_have_segment) {
    if (PoolStats* s = g_segment.AddPool(name, kind, 0, 0)) return s;
  }
  const int i = g_local_used.fetch_add(1);
  if (i >= kLocalPools) return nullptr;
  InitPoolStats(&g_local[i], name, kind, 0, 0);
  return &g_local[i];
}

PoolStats* StatsStoreFallback() { return &g_local[kLocalPools]; }

void StatsStoreCountPassthrough(PassCall call) { g_segment.CountPassthrough(call); }

void StatsStoreHookState(int family, int state) {
  g_segment.SetHookState(static_cast<HookFamily>(family), static_cast<HookState>(state));
}

void StatsStoreMarkExited() {
  if (g_have_segment) g_segment.MarkExited();
}

void StatsStoreForkChild() {
  if (g_have_segment && g_segment.CreateForChild() != 0) g_have_segment = false;
}

StatsSegment* StatsStoreSegment() { return g_have_segment ? &g_segment : nullptr; }

}  // namespace dmashim
