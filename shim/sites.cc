// Slow-path telemetry of the shim: call sites (libunwind), the watchdog and control requests.
// See sites.h for the contract. Everything here runs either on an allocating thread that is on a
// slow path anyway (outside every pool lock, under the recursion guard) or on the maintenance
// thread; the pool-hit path never reaches this file.
#define UNW_LOCAL_ONLY
#include "shim/sites.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libunwind.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pools/maintenance.h"
#include "pools/sys.h"
#include "shim/diag.h"
#include "shim/real.h"
#include "shim/runtime.h"
#include "shim/stats_store.h"

namespace dmashim {
namespace {

// The shim's own mapped object, [lo, hi): frames there are the shim's, not the call site.
uintptr_t g_self_lo = 0;
uintptr_t g_self_hi = 0;

bool InSelf(uintptr_t pc) { return pc >= g_self_lo && pc < g_self_hi; }

int FindSelf(dl_phdr_info* info, size_t, void* data) {
  const uintptr_t probe = *static_cast<uintptr_t*>(data);
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  bool ours = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const uintptr_t a = info->dlpi_addr + ph.p_vaddr, b = a + ph.p_memsz;
    lo = std::min(lo, a);
    hi = std::max(hi, b);
    ours |= probe >= a && probe < b;
  }
  if (!ours) return 0;
  g_self_lo = lo;
  g_self_hi = hi;
  return 1;
}

// The application's part of the current stack: libunwind's and the shim's frames skipped.
int Capture(uintptr_t* out) {
  ShimGuard guard;  // libunwind may mmap/malloc (its caches): straight to the kernel
  void* raw[48];
  const int n = unw_backtrace(raw, 48);
  int i = 0;
  while (i < n && !InSelf(reinterpret_cast<uintptr_t>(raw[i]))) ++i;  // libunwind itself
  while (i < n && InSelf(reinterpret_cast<uintptr_t>(raw[i]))) ++i;   // the shim
  if (i == n) i = 0;  // no shim frame seen: keep everything rather than nothing
  int k = 0;
  for (; i < n && k < static_cast<int>(kSiteMaxPcs); ++i) out[k++] = reinterpret_cast<uintptr_t>(raw[i]);
  return k;
}

void Record(PoolEntry* entry, const uintptr_t* pcs, int n, uint64_t wait_ns, bool failed) {
  StatsSegment* seg = StatsStoreSegment();
  if (seg == nullptr) return;
  const int index = seg->PoolIndex(entry->stats);
  if (index >= 0) seg->RecordSite(index, pcs, n, wait_ns, failed);
}

// Threads waiting now, for the watchdog. A waiter claims a free slot (state 0 → 1), fills it and
// publishes it (state 2); the maintenance thread copies an active slot and keeps the copy only if
// the slot's generation did not change meanwhile (a seqlock without retries).
//
// Ordering without fences (ThreadSanitizer does not model std::atomic_thread_fence, and GCC refuses
// one under -fsanitize=thread): the writer stores each field with release, after bumping `gen`;
// the reader loads each field with acquire, before checking `state` and `gen` again. A field the
// reader saw from a newer writer therefore carries that writer's `gen` bump with it (release →
// acquire), and the re-check, which cannot move above the acquire loads, sees the change. On x86
// both are plain moves, as the relaxed ones were.
struct Waiter {
  std::atomic<uint32_t> state{0};
  std::atomic<uint64_t> gen{0};
  std::atomic<PoolEntry*> entry{nullptr};
  std::atomic<uint64_t> start_ns{0};
  std::atomic<int32_t> tid{0};
  std::atomic<int32_t> npcs{0};
  std::atomic<uintptr_t> pcs[kSiteMaxPcs];
};
constexpr int kWaiters = 64;
Waiter g_waiters[kWaiters];
uint64_t g_warned_gen[kWaiters];  // maintenance thread only

struct ThreadWait {
  bool active;
  int slot;
  int npcs;
  uintptr_t pcs[kSiteMaxPcs];
};
thread_local ThreadWait t_wait __attribute__((tls_model("initial-exec"))) = {};

int ClaimWaiter(PoolEntry* entry, const uintptr_t* pcs, int n) {
  for (int i = 0; i < kWaiters; ++i) {
    Waiter& w = g_waiters[i];
    uint32_t free_state = 0;
    if (!w.state.compare_exchange_strong(free_state, 1, std::memory_order_acquire)) continue;
    w.gen.fetch_add(1, std::memory_order_relaxed);
    w.entry.store(entry, std::memory_order_release);
    w.start_ns.store(MonotonicNs(), std::memory_order_release);
    w.tid.store(static_cast<int32_t>(syscall(SYS_gettid)), std::memory_order_release);
    w.npcs.store(n, std::memory_order_release);
    for (int j = 0; j < n; ++j) w.pcs[j].store(pcs[j], std::memory_order_release);
    w.state.store(2, std::memory_order_release);
    return i;
  }
  return -1;  // more waiters than slots: they are counted, only not watched
}

// "function+0xoff (object)" for a return address, by dladdr. Maintenance thread only.
std::string Symbolize(uintptr_t pc) {
  Dl_info info{};
  // A return address points after the call; pc - 1 is inside the calling function.
  if (dladdr(reinterpret_cast<void*>(pc - 1), &info) == 0 || info.dli_fname == nullptr) {
    return absl::StrFormat("0x%x", pc);
  }
  const char* obj = info.dli_fname[0] != '\0' ? info.dli_fname : "(main program)";
  if (info.dli_sname == nullptr) {
    return absl::StrFormat("%s+0x%x", obj, pc - reinterpret_cast<uintptr_t>(info.dli_fbase));
  }
  int status = -1;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  free(demangled);
  return absl::StrFormat("%s+0x%x (%s)", name, pc - reinterpret_cast<uintptr_t>(info.dli_saddr),
                         obj);
}

void Watchdog() {
  const uint64_t now = MonotonicNs();
  for (int i = 0; i < kWaiters; ++i) {
    Waiter& w = g_waiters[i];
    const uint64_t gen = w.gen.load(std::memory_order_acquire);
    if (w.state.load(std::memory_order_acquire) != 2 || g_warned_gen[i] == gen) continue;
    PoolEntry* entry = w.entry.load(std::memory_order_acquire);
    const uint64_t start = w.start_ns.load(std::memory_order_acquire);
    const int tid = w.tid.load(std::memory_order_acquire);
    int n = w.npcs.load(std::memory_order_acquire);
    uintptr_t pcs[kSiteMaxPcs];
    n = std::clamp(n, 0, static_cast<int>(kSiteMaxPcs));
    for (int j = 0; j < n; ++j) pcs[j] = w.pcs[j].load(std::memory_order_acquire);
    if (w.state.load(std::memory_order_relaxed) != 2 || w.gen.load(std::memory_order_relaxed) != gen ||
        entry == nullptr) {
      continue;  // the wait ended (or the slot was reused) while we looked
    }
    const int64_t limit = absl::ToInt64Nanoseconds(entry->cfg.watchdog);
    if (limit <= 0 || now < start || now - start <= static_cast<uint64_t>(limit)) continue;
    g_warned_gen[i] = gen;
    std::string where = n > 0 ? Symbolize(pcs[0]) : std::string("an unknown call site");
    for (int j = 1; j < n && j < 3; ++j) absl::StrAppend(&where, " <- ", Symbolize(pcs[j]));
    DiagLine(absl::StrFormat(
        "dmashim: watchdog: pool %s: thread %d has waited %.2f s (watchdog %s) at %s",
        entry->cfg.name, tid, static_cast<double>(now - start) / 1e9,
        absl::FormatDuration(entry->cfg.watchdog), where));
  }
}

// `dmashim ctl PID resize POOL N`, applied on the maintenance thread.
constexpr int64_t kMaxReserve = int64_t{1} << 20;

ControlResult ApplyResize(Runtime* rt, const char* name, int64_t value) {
  PoolEntry* e = rt->FindPool(name);
  if (e == nullptr || !e->pool) return {ENOENT, 0};
  const int64_t now = static_cast<int64_t>(e->pool->reserve());
  if (value < 0 || value > kMaxReserve || (e->cfg.max != 0 && static_cast<size_t>(value) > e->cfg.max)) {
    return {EINVAL, now};
  }
  const ResizeResult r = e->pool->Resize(static_cast<size_t>(value));
  if (r.held < r.target) return {EAGAIN, static_cast<int64_t>(r.held)};
  return {0, static_cast<int64_t>(r.target)};
}

void MaintenanceTick() {
  ShimGuard guard;
  Runtime* rt = Runtime::Get();
  if (rt == nullptr) return;  // still initializing
  if (StatsSegment* seg = StatsStoreSegment()) {
    seg->PollControl([rt](ControlCommand, const char* pool, int64_t value) {
      return ApplyResize(rt, pool, value);
    });
  }
  Watchdog();
}

}  // namespace

void SitesInit(bool start_thread) {
  uintptr_t probe = reinterpret_cast<uintptr_t>(&SitesInit);
  dl_iterate_phdr(FindSelf, &probe);
  uintptr_t warm[kSiteMaxPcs];
  Capture(warm);  // libunwind's first use sets up its caches: not on an application's slow path
  SetMaintenanceHook(MaintenanceTick);
  // Control requests (`dmashim ctl`) are served by the maintenance thread, so a process with pools
  // gets it now. A process without pools gets no thread at all: an extra thread changes how the
  // process drops privileges (glibc runs setuid/setgid in every thread, and per-thread
  // PR_SET_KEEPCAPS then differs — `setpriv --reuid … --regid …` aborts with one).
  if (start_thread && StatsStoreSegment() != nullptr) WakeMaintenance();
}

void SitesEvent(PoolEntry* entry, SlowPath what, uint64_t ns, int err) {
  if (entry == nullptr) return;
  const int saved_errno = errno;
  switch (what) {
    case SlowPath::kWaitBegin:
      if (t_wait.active) break;  // already waiting on this thread (cannot nest; be safe)
      t_wait.active = true;
      t_wait.npcs = Capture(t_wait.pcs);
      t_wait.slot = ClaimWaiter(entry, t_wait.pcs, t_wait.npcs);
      WakeMaintenance();  // the watchdog runs there
      break;
    case SlowPath::kWaitEnd:
      if (!t_wait.active) break;
      t_wait.active = false;
      if (t_wait.slot >= 0) g_waiters[t_wait.slot].state.store(0, std::memory_order_release);
      Record(entry, t_wait.pcs, t_wait.npcs, ns, err != 0);
      break;
    case SlowPath::kFailure:
    case SlowPath::kSlowSource: {
      uintptr_t pcs[kSiteMaxPcs];
      const int n = Capture(pcs);
      Record(entry, pcs, n, what == SlowPath::kSlowSource ? ns : 0, what == SlowPath::kFailure);
      break;
    }
  }
  errno = saved_errno;
}

void SitesObserver(void* ctx, const Mempool&, SlowPath what, uint64_t ns, int err) {
  SitesEvent(static_cast<PoolEntry*>(ctx), what, ns, err);
}

}  // namespace dmashim
