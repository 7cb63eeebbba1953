#include "pools/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace dmashim {
namespace {

// ThreadSanitizer learns of mappings from its mmap/munmap interceptors, which these raw system
// calls bypass (they must: the shim's own mmap hooks sit in front of libc's). An address one thread
// unmapped and another thread's pool mapped again would keep the first thread's accesses, and the
// second thread's would read as a race with them. What orders the two is the kernel: a mapping
// returns an address only after the unmap that freed it is done. Told to TSan as a release before
// each unmap and an acquire after each map, on one address (no-ops in other builds).
#if defined(__SANITIZE_THREAD__)
char g_tsan_address_space;
void UnmapHappensBeforeLaterMaps() { __tsan_release(&g_tsan_address_space); }
void MapHappensAfterEarlierUnmaps() { __tsan_acquire(&g_tsan_address_space); }
#else
void UnmapHappensBeforeLaterMaps() {}
void MapHappensAfterEarlierUnmaps() {}
#endif

void* RawMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  if (r == -1) return MAP_FAILED;
  MapHappensAfterEarlierUnmaps();
  return reinterpret_cast<void*>(r);
}
int RawMunmap(void* addr, size_t len) {
  UnmapHappensBeforeLaterMaps();
  return static_cast<int>(syscall(SYS_munmap, addr, len));
}
int RawMadvise(void* addr, size_t len, int advice) {
  return static_cast<int>(syscall(SYS_madvise, addr, len, advice));
}
int RawMlock(const void* addr, size_t len) {
  return static_cast<int>(syscall(SYS_mlock, addr, len));
}
int RawMunlock(const void* addr, size_t len) {
  return static_cast<int>(syscall(SYS_munlock, addr, len));
}

const SysCalls kReal = {RawMmap, RawMunmap, RawMadvise, RawMlock, RawMunlock};

}  // namespace

const SysCalls& RealSysCalls() { return kReal; }

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

int FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
  timespec ts;
  timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1'000'000'000;
    ts.tv_nsec = timeout_ns % 1'000'000'000;
    tsp = &ts;
  }
  // A relative timeout makes the kernel return EINTR (not restart) when a handler runs.
  long r = syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, tsp,
                   nullptr, 0);
  if (r == 0) return 0;
  if (errno == EAGAIN) return 0;
  return errno;
}

void FutexWake(std::atomic<uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
          nullptr, 0);
}

namespace {
// 0: not registered yet, 1: registered, -1: refused.
std::atomic<int> g_heavy_barrier{0};

// Whether this process runs under a seccomp filter (/proc/self/status "Seccomp:" not 0). Such a
// sandbox may kill a process for a system call it does not expect, so it gets no membarrier.
// Unknown (no /proc) counts as filtered.
bool UnderSeccomp() {
  const int fd = static_cast<int>(
      syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC, 0));
  if (fd < 0) return true;
  char buf[4096];
  size_t n = 0;
  for (long r; n < sizeof(buf) - 1 && (r = syscall(SYS_read, fd, buf + n, sizeof(buf) - 1 - n)) > 0;)
    n += static_cast<size_t>(r);
  syscall(SYS_close, fd);
  buf[n] = '\0';
  const char* s = strstr(buf, "\nSeccomp:");
  if (s == nullptr) return false;  // a kernel without seccomp
  s += strlen("\nSeccomp:");
  while (*s == ' ' || *s == '\t') ++s;
  return *s != '0';
}
}  // namespace

bool EnableHeavyBarrier() {
  int state = g_heavy_barrier.load(std::memory_order_acquire);
  if (state == 0) {
    const int saved = errno;  // a refusal is not the application's error
    state = !UnderSeccomp() &&
                    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0
                ? 1
                : -1;
    g_heavy_barrier.store(state, std::memory_order_release);
    errno = saved;
  }
  return state == 1;
}

bool HeavyBarrier() {
  const int saved = errno;
  // A fork child registers again first (EnableHeavyBarrier), which looks for a filter itself. A
  // filter installed since the registration (a sandbox set up in main(), after the shim's
  // start-up) might kill the process for the call: looked for first, each time (≈ 10 µs; a
  // revocation is at most once a millisecond per lock). Only a filter installed between this read
  // and the call can still do so.
  const bool registering = g_heavy_barrier.load(std::memory_order_acquire) == 0;
  const bool ok = EnableHeavyBarrier() && (registering || !UnderSeccomp()) &&
                  syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
  if (!ok) g_heavy_barrier.store(-1, std::memory_order_relaxed);  // no further biases
  errno = saved;
  return ok;
}

void HeavyBarrierForkChild() { g_heavy_barrier.store(0, std::memory_order_relaxed); }

}  // namespace dmashim
