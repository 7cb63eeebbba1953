// The system calls the pools make, behind a table so tests can inject failures. The real table
// issues raw syscalls (syscall(2)), so a pool never re-enters an interposer that is preloaded in
// the same process — including dmashim's own shim.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <atomic>
#include <cstdint>

namespace dmashim {

struct SysCalls {
  void* (*mmap)(void* addr, size_t len, int prot, int flags, int fd, off_t off);
  int (*munmap)(void* addr, size_t len);
  int (*madvise)(void* addr, size_t len, int advice);
  int (*mlock)(const void* addr, size_t len);
  int (*munlock)(const void* addr, size_t len);
};

// The kernel's calls. Each returns like its libc namesake (-1 / MAP_FAILED with errno set).
const SysCalls& RealSysCalls();

// Monotonic clock in nanoseconds (vDSO, no system call).
uint64_t MonotonicNs();

// futex(2) on a 32-bit word shared by the threads of one process.
// FutexWait returns 0 when woken (or the value had changed), ETIMEDOUT after `timeout_ns`
// (negative = no timeout), or EINTR when a signal handler ran in this thread.
int FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns);
void FutexWake(std::atomic<uint32_t>* word, int count);

// The heavy side of an asymmetric fence (membarrier(2), MEMBARRIER_CMD_PRIVATE_EXPEDITED): when
// HeavyBarrier() returns true, every thread of this process has run a full memory barrier since
// it was called, so the other side needs only a compiler barrier. EnableHeavyBarrier() registers
// the process (once; again in a fork child, see HeavyBarrierForkChild) and says whether the kernel
// allows it — not under an old kernel or valgrind, and not asked for under a seccomp filter (a
// sandbox may kill the process for the call). HeavyBarrier() is for after EnableHeavyBarrier()
// returned true; it returns false, without the call, when a seccomp filter was installed since
// (a sandbox may kill the process for it), or when the kernel refused it, and
// EnableHeavyBarrier() returns false from then on.
bool EnableHeavyBarrier();
bool HeavyBarrier();
// In a fork child: the registration is made again before the next use.
void HeavyBarrierForkChild();

}  // namespace dmashim
