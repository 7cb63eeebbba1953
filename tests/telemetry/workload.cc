// telemetry_workload: a scripted program for the telemetry tests. It knows nothing of the stats
// segment: it maps 2 MiB huge pages with plain mmap(MAP_HUGETLB), chooses per call how it may wait
// through the opt-in C API (dlsym, so it also runs without the shim), and prints what it observed.
// Commands, one per line on stdin; each answers one line of key=value pairs on stdout:
//   pid                      pid=P
//   map N                    maps N pages with the pool's own mode and keeps them
//   nowait N                 N maps that must not wait (DMASHIM_NOWAIT)
//   timeout N MS             N maps that wait at most MS milliseconds (DMASHIM_TIMEOUT)
//   wait_free MS             a thread maps (waiting); after MS ms this thread unmaps one page
//   block_call               telemetry_blocking_call() on this thread: waits for a page
//   totals                   what every command so far observed
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr int kNoWait = 2, kTimeout = 3;  // dmashim.h's DMASHIM_NOWAIT / DMASHIM_TIMEOUT

std::vector<void*> g_held;
struct Totals {
  int allocated = 0, failed = 0, nowait_failed = 0, timeout_failed = 0, waited = 0;
} g;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void* MapOne() {
  void* p = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  static_cast<volatile char*>(p)[0] = 1;
  return p;
}

using ScopeBegin = int (*)(int, int64_t);
using ScopeEnd = void (*)();

// Maps `n` pages inside a C-API scope (flags) when the shim is there; returns how many failed.
int MapScoped(int n, int flags, int64_t timeout_ns) {
  auto begin = reinterpret_cast<ScopeBegin>(dlsym(RTLD_DEFAULT, "dmashim_scope_begin"));
  auto end = reinterpret_cast<ScopeEnd>(dlsym(RTLD_DEFAULT, "dmashim_scope_end"));
  if (begin != nullptr) begin(flags, timeout_ns);
  int failed = 0;
  for (int i = 0; i < n; ++i) {
    if (void* p = MapOne()) {
      g_held.push_back(p);
      ++g.allocated;
    } else {
      ++failed;
    }
  }
  if (end != nullptr) end();
  return failed;
}

}  // namespace

// The call site the --sites and watchdog tests look for: exported (the test links -rdynamic) so
// dladdr names it too, and kept out of line so it has a frame of its own.
extern "C" __attribute__((noinline, visibility("default"))) void* telemetry_blocking_call() {
  void* p = MapOne();
  asm volatile("" ::: "memory");  // no tail call: this function stays on the stack
  return p;
}

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "pid") {
      printf("pid=%d\n", getpid());
    } else if (cmd == "map") {
      int n = 0;
      in >> n;
      int ok = 0;
      for (int i = 0; i < n; ++i) {
        if (void* p = MapOne()) {
          g_held.push_back(p);
          ++ok;
        }
      }
      g.allocated += ok;
      g.failed += n - ok;
      printf("mapped=%d failed=%d held=%zu\n", ok, n - ok, g_held.size());
    } else if (cmd == "nowait") {
      int n = 0;
      in >> n;
      const int f = MapScoped(n, kNoWait, 0);
      g.nowait_failed += f;
      printf("nowait_failed=%d held=%zu\n", f, g_held.size());
    } else if (cmd == "timeout") {
      int n = 0, ms = 0;
      in >> n >> ms;
      const int f = MapScoped(n, kTimeout, int64_t{ms} * 1'000'000);
      g.timeout_failed += f;
      printf("timeout_failed=%d held=%zu\n", f, g_held.size());
    } else if (cmd == "wait_free") {
      int ms = 0;
      in >> ms;
      void* got = nullptr;
      std::thread waiter([&] { got = telemetry_blocking_call(); });
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      if (!g_held.empty()) {
        munmap(g_held.back(), kHuge);
        g_held.pop_back();
      }
      waiter.join();
      if (got != nullptr) {
        g_held.push_back(got);
        ++g.allocated;
        ++g.waited;
      }
      printf("waited_ok=%d held=%zu\n", got != nullptr, g_held.size());
    } else if (cmd == "block_call") {
      const int64_t t0 = NowMs();
      void* p = telemetry_blocking_call();
      if (p != nullptr) {
        g_held.push_back(p);
        ++g.allocated;
        ++g.waited;
      }
      printf("blocked_ok=%d ms=%lld held=%zu\n", p != nullptr, static_cast<long long>(NowMs() - t0),
             g_held.size());
    } else if (cmd == "totals") {
      printf("allocated=%d failed=%d nowait_failed=%d timeout_failed=%d waited=%d held=%zu\n",
             g.allocated, g.failed, g.nowait_failed, g.timeout_failed, g.waited, g_held.size());
    } else if (cmd == "exit") {
      break;
    } else {
      printf("error=unknown_command\n");
    }
    fflush(stdout);
  }
  return 0;
}
