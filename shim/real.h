// The real (next) definitions of the calls the shim interposes, and the per-thread recursion guard.
//
// Each real function is resolved with dlsym(RTLD_NEXT) the first time it is needed, so the shim
// chains correctly behind other interposers. dlsym itself may allocate (its dlerror buffer comes
// from calloc), and an allocator preloaded beside us may call mmap from there: while a resolution is
// in progress, and for any function not resolved yet, the call goes to the kernel directly through
// syscall(2) — the bootstrap path — so resolution can never recurse into itself.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace dmashim::real {

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);
int munmap(void* addr, size_t len);
void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr);
int madvise(void* addr, size_t len, int advice);
int mprotect(void* addr, size_t len, int prot);
int mlock(const void* addr, size_t len);
int mlock2(const void* addr, size_t len, unsigned int flags);
int munlock(const void* addr, size_t len);
int mlockall(int flags);
int munlockall();
int shmget(key_t key, size_t size, int shmflg);
void* shmat(int shmid, const void* shmaddr, int shmflg);
int shmdt(const void* shmaddr);
int shmctl(int shmid, int cmd, void* buf);
int memfd_create(const char* name, unsigned int flags);
int ftruncate(int fd, off_t length);
int fallocate(int fd, int mode, off_t offset, off_t len);

// Resolves every function now (called once at start-up, outside any pool lock).
void ResolveAll();

}  // namespace dmashim::real

namespace dmashim {

// Per-thread recursion guard: while set, intercepted calls made by the shim itself (or by Abseil,
// libunwind, toml++, dlsym on its behalf) go straight to the real functions. Initial-exec TLS: no
// allocation on first access from any thread.
extern constinit thread_local int t_in_shim __attribute__((tls_model("initial-exec")));

class ShimGuard {
 public:
  ShimGuard() { ++t_in_shim; }
  ~ShimGuard() { --t_in_shim; }
  ShimGuard(const ShimGuard&) = delete;
  ShimGuard& operator=(const ShimGuard&) = delete;
  static bool Active() { return t_in_shim != 0; }
};

}  // namespace dmashim
