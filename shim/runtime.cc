#include "shim/runtime.h"

#include <dlfcn.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pools/maintenance.h"
#include "pools/sys.h"
#include "shim/diag.h"
#include "shim/real.h"
#include "shim/sites.h"
#include "shim/stats_store.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace dmashim {

std::atomic<bool> Runtime::ready_{false};
Runtime* Runtime::instance_ = nullptr;
constinit thread_local const WaitPolicy* t_scope_policy
    __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {
std::atomic<int> g_init_state{0};  // 0 not started, 1 running, 2 done
constexpr size_t kHuge2M = size_t{2} << 20;
}  // namespace

Runtime* Runtime::Init() {
  int expected = 0;
  if (g_init_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    {
      ShimGuard guard;
      real::ResolveAll();
      instance_ = new Runtime;
      instance_->Setup();
      ready_.store(true, std::memory_order_release);
      g_init_state.store(2, std::memory_order_release);
    }
    instance_->ReportHookSelfCheck();  // unguarded: the probes must reach the hooks
  }
  return Get();
}

void Runtime::Setup() {
  const bool secure = getauxval(AT_SECURE) != 0;
  config_ = LoadConfig(ProcessEnvironment(), secure);
  // One line per problem, saying what happens next: exit under strict, else pass-through.
  for (const std::string& e : config_.errors) {
    DiagLine(absl::StrCat("dmashim: ", e,
                          config_.strict ? " (strict = true: exiting)"
                                         : " (configuration ignored: calls pass through)"));
  }
  if (!config_.errors.empty()) {
    if (config_.strict) _exit(1);
    config_.pools.clear();
  }
  intercept_[static_cast<int>(Family::kMmap)] = config_.intercept_mmap;
  intercept_[static_cast<int>(Family::kShm)] = config_.intercept_shm;
  intercept_[static_cast<int>(Family::kMlock)] = config_.intercept_mlock;
  intercept_[static_cast<int>(Family::kCuda)] = config_.intercept_cuda;
  intercept_[static_cast<int>(Family::kIbverbs)] = config_.intercept_ibverbs;

  StatsStoreOpen(config_, static_cast<int>(config_.errors.size()));
  SitesInit(/*start_thread=*/!config_.pools.empty());  // call sites, watchdog, control requests (before any pool exists)
  // Registered before any pool exists, so in a fork child it runs before the pools' own handlers:
  // the child must have its own segment before the pools publish the child's figures. (The regions
  // handed out live in the pools' element tables, whose locks the pools hold across fork.)
  pthread_atfork(nullptr, nullptr, [] { StatsStoreForkChild(); });
  atexit([] { StatsStoreMarkExited(); });

  PoolConfig def;
  def.name = "default";
  def.policy = config_.default_policy;
  default_entry_ = AddEntry(std::move(def));
  std::vector<PoolConfig> pools = config_.pools;
  for (PoolConfig& pc : pools) {
    if (!pc.match.caller.empty()) any_caller_match_ = true;
    AddEntry(std::move(pc));
  }
  for (int giant = 0; giant < 2; ++giant) {
    for (int shared = 0; shared < 2; ++shared) {
      mmap_route_[giant][shared] = RouteHuge(Family::kMmap, giant ? size_t{1} << 30 : kHuge2M,
                                             shared != 0, nullptr);
    }
  }
  for (auto& e : entries_) {
    if (!e->pool || e->cfg.prefault != Prefault::kStartup) continue;
    const size_t held = e->pool->Prefill();
    if (held < e->cfg.reserve) {
      const std::string line = absl::StrFormat(
          "dmashim: pool %s: prefault = \"startup\" got %d of %d reserve elements (%s)",
          e->cfg.name, held, e->cfg.reserve, strerror(ENOMEM));
      DiagLine(line);
      if (config_.strict) {
        DiagLine("dmashim: strict = true: exiting because the reserve cannot be had");
        _exit(1);
      }
    }
  }
}

PoolEntry* Runtime::AddEntry(PoolConfig cfg) {
  auto entry = std::make_unique<PoolEntry>();
  entry->index = static_cast<int>(entries_.size());
  entry->stats = StatsStoreAddPool(cfg.name.c_str(), PoolKind::kMempool);
  entry->cfg = std::move(cfg);
  // CUDA and ibverbs pools are served by shim/cuda.cc and shim/ibverbs.cc, not by a Mempool.
  const bool device = entry->index != 0 && (entry->cfg.match.call == CallFamily::kCuda ||
                                            entry->cfg.match.call == CallFamily::kIbverbs);
  if (device) {
    if (entry->stats != nullptr) {
      InitPoolStats(entry->stats, entry->cfg.name.c_str(), PoolKind::kMempool,
                    static_cast<uint32_t>(entry->cfg.policy.mode), entry->cfg.element_size);
      entry->stats->reserve_target.store(static_cast<int64_t>(entry->cfg.reserve));
    }
  } else if (entry->cfg.name != "default" || entry->index != 0) {
    MempoolOptions o;
    o.name = entry->cfg.name;
    o.source = SourceSpec{entry->cfg.source, entry->cfg.match.share == Share::kShared};
    o.element_size = entry->cfg.element_size;
    o.reserve = entry->cfg.reserve;
    o.max = entry->cfg.max;
    o.keep = entry->cfg.keep;
    o.policy = entry->cfg.policy;
    o.zero = entry->cfg.zero;
    o.retry_interval = entry->cfg.retry_interval;
    o.retry_max = entry->cfg.retry_max;
    o.record_stats = config_.stats;  // stats = false: no counting on the hit path
    o.biased_lock = config_.biased_locks;
    o.observer = SitesObserver;
    o.observer_ctx = entry.get();
    auto pool = Mempool::Create(std::move(o), entry->stats);
    if (!pool.ok()) {
      DiagLine(absl::StrCat("dmashim: ", pool.status().message(), "; pool disabled"));
      return nullptr;
    }
    entry->pool = *std::move(pool);
  } else if (entry->stats != nullptr) {
    InitPoolStats(entry->stats, "default", PoolKind::kMempool,
                  static_cast<uint32_t>(entry->cfg.policy.mode), 0);
  }
  if (entry->stats == nullptr) entry->stats = StatsStoreFallback();
  entries_.push_back(std::move(entry));
  return entries_.back().get();
}

bool Runtime::CallerMatches(const PoolConfig& cfg, const void* caller) const {
  if (cfg.match.caller.empty()) return true;
  Dl_info info;
  if (caller == nullptr || dladdr(caller, &info) == 0 || info.dli_fname == nullptr) return false;
  const char* path = info.dli_fname;
  const char* base = strrchr(path, '/');
  base = base ? base + 1 : path;
  return fnmatch(cfg.match.caller.c_str(), path, 0) == 0 ||
         fnmatch(cfg.match.caller.c_str(), base, 0) == 0;
}

PoolEntry* Runtime::RouteHuge(Family family, size_t page_size, bool shared, const void* caller) {
  const CallFamily want = family == Family::kShm ? CallFamily::kShm : CallFamily::kMmap;
  const SourceKind kind = page_size == kHuge2M ? SourceKind::kHuge2M : SourceKind::kHuge1G;
  PoolEntry* fallback = nullptr;
  // Pools that name their caller are more specific than those that do not: they are tried first,
  // whatever order the file lists them in.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 1; i < entries_.size(); ++i) {
      PoolEntry* e = entries_[i].get();
      if (e->cfg.match.caller.empty() == (pass == 0)) continue;
      if (!e->pool || e->cfg.source != kind || e->cfg.match.hugetlb == false) continue;
      if (e->cfg.match.call != CallFamily::kMmap && e->cfg.match.call != CallFamily::kShm) continue;
      if (e->cfg.match.share == Share::kShared && !shared) continue;
      if (e->cfg.match.share == Share::kPrivate && shared) continue;
      if (!CallerMatches(e->cfg, caller)) continue;
      if (e->cfg.match.call == want) return e;
      // A SysV request with only mmap pools configured (or the reverse) still gets their reserve.
      if (fallback == nullptr) fallback = e;
    }
  }
  return fallback ? fallback : default_entry_;
}

PoolEntry* Runtime::RoutePinned(const void* caller) {
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 1; i < entries_.size(); ++i) {
      PoolEntry* e = entries_[i].get();
      if (e->cfg.match.caller.empty() == (pass == 0)) continue;
      if (e->pool && e->cfg.match.call == CallFamily::kMlock && CallerMatches(e->cfg, caller)) {
        return e;
      }
    }
  }
  return default_entry_;
}

PoolEntry* Runtime::RouteDevice(CallFamily call, const void* caller) {
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 1; i < entries_.size(); ++i) {
      PoolEntry* e = entries_[i].get();
      if (e->cfg.match.caller.empty() == (pass == 0)) continue;
      if (e->cfg.match.call == call && CallerMatches(e->cfg, caller)) return e;
    }
  }
  return default_entry_;
}

PoolEntry* Runtime::FindPool(const char* name) {
  for (size_t i = 1; i < entries_.size(); ++i) {
    if (entries_[i]->pool && entries_[i]->cfg.name == name) return entries_[i].get();
  }
  return nullptr;
}

void* Runtime::MmapFromPool(size_t len, int prot, int flags, const void* caller, bool* handled,
                            int* err) {
  *handled = false;
  const int size_code = (flags >> MAP_HUGE_SHIFT) & 0x3f;
  const size_t page = size_code == 30 ? (size_t{1} << 30) : kHuge2M;
  const bool shared = (flags & MAP_SHARED) != 0;
  PoolEntry* e = any_caller_match_ ? RouteHuge(Family::kMmap, page, shared, caller)
                                   : mmap_route_[page != kHuge2M][shared];
  if (!e->pool) return nullptr;
  const size_t rounded = (len + page - 1) & ~(page - 1);
  const bool pool_shared = e->cfg.match.share == Share::kShared;
  constexpr int kUnsupported = MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK;
  if (rounded != e->pool->element_size() || shared != pool_shared || (flags & kUnsupported) ||
      len == 0) {
    return nullptr;
  }
  *handled = true;
  void* p = e->pool->AllocRegion(len, PolicyFor(e), err);
  if (p == nullptr) return nullptr;
  if (prot != (PROT_READ | PROT_WRITE)) {
    real::mprotect(p, rounded, prot);
    e->pool->MarkProtectionChanged(p, rounded);
  }
  if (flags & MAP_LOCKED) real::mlock(p, rounded);
  return p;
}

bool Runtime::OnMunmap(void* addr, size_t len) {
  // A whole region goes back to its pool; anything else (partial, foreign, double) is handled as a
  // range below and then reaches the kernel.
  for (size_t i = 1; i < entries_.size(); ++i) {
    Mempool* pool = entries_[i]->pool.get();
    if (pool != nullptr && pool->MaybeHolds(addr) && pool->FreeRegion(addr, len)) return true;
  }
  ReleaseRange(addr, len);
  return false;
}

void Runtime::ReleaseRange(void* addr, size_t len) {
  if (!MaybePooled(addr, len)) return;
  for (size_t i = 1; i < entries_.size(); ++i) {
    if (Mempool* pool = entries_[i]->pool.get()) pool->ReleaseRange(addr, len);
  }
}

void Runtime::OnMprotect(void* addr, size_t len, int prot) {
  if (!MaybePooled(addr, len) || prot == (PROT_READ | PROT_WRITE)) return;
  for (size_t i = 1; i < entries_.size(); ++i) {
    if (Mempool* pool = entries_[i]->pool.get()) pool->MarkProtectionChanged(addr, len);
  }
}

void NotifyFreed(PoolEntry* entry) {
  if (entry == nullptr) return;
  entry->freed.Notify(INT32_MAX);
}

Guarded Runtime::WaitLoop(PoolEntry* entry, size_t bytes, const WaitPolicy& policy, int first_err,
                          bool (*retry)(void*), void* ctx) {
  PoolStats* s = entry->stats;
  if (!IsShortageErrno(first_err)) {
    s->fail_source.fetch_add(1, std::memory_order_relaxed);
    SitesEvent(entry, SlowPath::kFailure, 0, first_err);
    return {false, first_err};
  }
  Mempool* pool = entry->pool.get();
  const size_t need = pool ? (bytes + pool->element_size() - 1) / pool->element_size() : 0;
  // Release-and-retry: the pages the process set aside are handed back for this call (and not
  // taken back by the reserve's refill before the retry is done).
  if (pool != nullptr) {
    Mempool::RefillHold hold(pool);
    if (pool->ReleaseFree(need) > 0) {
      if (retry(ctx)) {
        pool->CountServedByReserve();
        return {true, 0};
      }
      first_err = errno;
    }
  }
  if (policy.mode == Mode::kFailFast) {
    s->fail_fast.fetch_add(1, std::memory_order_relaxed);
    SitesEvent(entry, SlowPath::kFailure, 0, first_err);
    return {false, first_err};
  }
  const uint64_t start = MonotonicNs();
  WaitRounds rounds(policy, start, entry->cfg.retry_interval, entry->cfg.retry_max);
  const int slot = BeginWait(s, start);
  SitesEvent(entry, SlowPath::kWaitBegin, 0, 0);
  Guarded out{false, first_err};
  uint32_t seen = entry->freed.Seen();
  for (;;) {
    const int64_t sleep = rounds.Cap(rounds.retry_ns(), static_cast<int64_t>(MonotonicNs()));
    if (sleep > 0 && entry->freed.Wait(seen, sleep) == EINTR && policy.interruptible) {
      s->fail_interrupted.fetch_add(1, std::memory_order_relaxed);
      out.err = EINTR;
      break;
    }
    bool ok;
    {
      Mempool::RefillHold hold(pool);
      if (pool != nullptr) pool->ReleaseFree(need);
      seen = entry->freed.Seen();  // a free after this wakes the next sleep
      ok = retry(ctx);
      if (!ok) out.err = errno;
    }
    if (ok) {
      out = {true, 0};
      s->alloc_waited.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (!IsShortageErrno(out.err)) {
      s->fail_source.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (rounds.Expired(static_cast<int64_t>(MonotonicNs()))) {
      s->fail_timeout.fetch_add(1, std::memory_order_relaxed);
      out.err = ENOMEM;
      break;
    }
    rounds.BackOff();
  }
  const uint64_t waited = MonotonicNs() - start;
  EndWait(s, slot, waited);
  SitesEvent(entry, SlowPath::kWaitEnd, waited, out.ok ? 0 : out.err);
  return out;
}

void Runtime::CountPassthrough(PassCall call) {
  if (config_.count_passthrough) StatsStoreCountPassthrough(call);
}

constinit thread_local bool t_hook_probe __attribute__((tls_model("initial-exec"))) = false;

namespace {
std::atomic<int> g_hook_fired[kFamilies];
}  // namespace

void Runtime::NoteProbeFired(Family f) {
  g_hook_fired[static_cast<int>(f)].store(1, std::memory_order_relaxed);
}

void Runtime::ReportHookSelfCheck() {
  // Call each family through the global symbol scope, as the application would. If another
  // interposer shadows ours without chaining, our hook never sees the probe.
  using MunmapFn = int (*)(void*, size_t);
  using ShmdtFn = int (*)(const void*);
  using MunlockFn = int (*)(const void*, size_t);
  t_hook_probe = true;
  if (auto f = reinterpret_cast<MunmapFn>(dlsym(RTLD_DEFAULT, "munmap"))) f(nullptr, 0);
  if (auto f = reinterpret_cast<ShmdtFn>(dlsym(RTLD_DEFAULT, "shmdt"))) f(nullptr);
  if (auto f = reinterpret_cast<MunlockFn>(dlsym(RTLD_DEFAULT, "munlock"))) f(nullptr, 0);
  t_hook_probe = false;
  const char* names[] = {"mmap", "shm", "mlock"};
  for (int i = 0; i < 3; ++i) {
    const bool fired = g_hook_fired[i].load() != 0;
    StatsStoreHookState(i, !intercept_[i] ? 0 : fired ? 1 : 2);
    if (intercept_[i] && !fired) {
      DiagLine(absl::StrCat("dmashim: self-check: the ", names[i],
                            " hooks do not fire (another interposer shadows them); that family "
                            "passes through unguarded"));
    }
  }
}

}  // namespace dmashim
