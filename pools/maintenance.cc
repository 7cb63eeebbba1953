#include "pools/maintenance.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "pools/mempool.h"
#include "pools/sys.h"

namespace dmashim {
namespace {

struct Registry {
  absl::Mutex mu;  // held while the maintenance thread works on a pool, and across fork
  std::vector<Mempool*> pools ABSL_GUARDED_BY(mu);
  std::function<void()> hook;
  std::atomic<uint32_t> kick{0};
  std::atomic<bool> started{false};
  std::atomic<int> running{0};
};

Registry& Reg() {
  static Registry* r = new Registry;  // never destroyed: pools may outlive static destructors
  return *r;
}

constexpr int64_t kTickNs = 100'000'000;

void* ThreadMain(void*) {
  Registry& r = Reg();
  r.running.fetch_add(1);
  for (;;) {
    uint32_t seen = r.kick.load(std::memory_order_acquire);
    bool busy = false;
    {
      absl::MutexLock l(&r.mu);
      for (Mempool* p : r.pools) busy |= p->Maintain();
    }
    if (r.hook) r.hook();
    if (!busy) FutexWait(&r.kick, seen, kTickNs);
  }
  return nullptr;
}

void StartThread() {
  Registry& r = Reg();
  bool expected = false;
  if (!r.started.compare_exchange_strong(expected, true)) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // the new thread inherits the full mask
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, ThreadMain, nullptr) == 0) {
    pthread_setname_np(t, "dmashim-maint");
  } else {
    r.started.store(false);
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void AtforkPrepare() {
  Registry& r = Reg();
  r.mu.Lock();
  for (Mempool* p : r.pools) p->ForkPrepare();
}
void AtforkParent() {
  Registry& r = Reg();
  for (Mempool* p : r.pools) p->ForkParent();
  r.mu.Unlock();
}
void AtforkChild() {
  Registry& r = Reg();
  for (Mempool* p : r.pools) p->ForkChild();
  // The maintenance thread does not exist in the child; the next request starts a new one.
  r.started.store(false);
  r.running.store(0);
  r.mu.Unlock();
}

}  // namespace

void RegisterPool(Mempool* pool) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild); });
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  r.pools.push_back(pool);
}

void UnregisterPool(Mempool* pool) {
  Registry& r = Reg();
  absl::MutexLock l(&r.mu);
  std::erase(r.pools, pool);
}

void WakeMaintenance() {
  Registry& r = Reg();
  if (!r.started.load(std::memory_order_acquire)) StartThread();
  r.kick.fetch_add(1, std::memory_order_release);
  FutexWake(&r.kick, 1);
}

void SetMaintenanceHook(std::function<void()> hook) { Reg().hook = std::move(hook); }

int MaintenanceThreadsRunning() { return Reg().running.load(); }

}  // namespace dmashim
