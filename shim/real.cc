#include "shim/real.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace dmashim {

constinit thread_local int t_in_shim __attribute__((tls_model("initial-exec"))) = 0;

namespace real {
namespace {

// One slot per real function: the resolved pointer, or null while unresolved.
template <typename Fn>
struct Slot {
  std::atomic<Fn> fn{nullptr};
  std::atomic<bool> tried{false};
};

// Resolves `name` once. While any resolution runs on this thread, returns null so the caller uses
// the raw system call (the bootstrap path).
template <typename Fn>
Fn Resolve(Slot<Fn>& slot, const char* name) {
  Fn f = slot.fn.load(std::memory_order_acquire);
  if (f != nullptr) return f;
  static thread_local bool resolving __attribute__((tls_model("initial-exec"))) = false;
  if (resolving || slot.tried.load(std::memory_order_relaxed)) return nullptr;
  resolving = true;
  ++t_in_shim;
  f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  --t_in_shim;
  resolving = false;
  slot.fn.store(f, std::memory_order_release);
  slot.tried.store(true, std::memory_order_relaxed);
  return f;
}

#define DMASHIM_SLOT(name, type) \
  Slot<type> slot_##name;        \
  inline type get_##name() { return Resolve(slot_##name, #name); }

using MmapFn = void* (*)(void*, size_t, int, int, int, off_t);
using MunmapFn = int (*)(void*, size_t);
using MremapFn = void* (*)(void*, size_t, size_t, int, ...);
using MadviseFn = int (*)(void*, size_t, int);
using MprotectFn = int (*)(void*, size_t, int);
using MlockFn = int (*)(const void*, size_t);
using Mlock2Fn = int (*)(const void*, size_t, unsigned int);
using MlockallFn = int (*)(int);
using MunlockallFn = int (*)();
using ShmgetFn = int (*)(key_t, size_t, int);
using ShmatFn = void* (*)(int, const void*, int);
using ShmdtFn = int (*)(const void*);
using ShmctlFn = int (*)(int, int, void*);
using MemfdFn = int (*)(const char*, unsigned int);
using FtruncateFn = int (*)(int, off_t);
using FallocateFn = int (*)(int, int, off_t, off_t);

DMASHIM_SLOT(mmap, MmapFn)
DMASHIM_SLOT(munmap, MunmapFn)
DMASHIM_SLOT(mremap, MremapFn)
DMASHIM_SLOT(madvise, MadviseFn)
DMASHIM_SLOT(mprotect, MprotectFn)
DMASHIM_SLOT(mlock, MlockFn)
DMASHIM_SLOT(mlock2, Mlock2Fn)
DMASHIM_SLOT(munlock, MlockFn)
DMASHIM_SLOT(mlockall, MlockallFn)
DMASHIM_SLOT(munlockall, MunlockallFn)
DMASHIM_SLOT(shmget, ShmgetFn)
DMASHIM_SLOT(shmat, ShmatFn)
DMASHIM_SLOT(shmdt, ShmdtFn)
DMASHIM_SLOT(shmctl, ShmctlFn)
DMASHIM_SLOT(memfd_create, MemfdFn)
DMASHIM_SLOT(ftruncate, FtruncateFn)
DMASHIM_SLOT(fallocate, FallocateFn)

long Sys(long r) { return r; }

}  // namespace

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (auto f = get_mmap()) return f(addr, len, prot, flags, fd, off);
  long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}
int munmap(void* addr, size_t len) {
  if (auto f = get_munmap()) return f(addr, len);
  return static_cast<int>(Sys(syscall(SYS_munmap, addr, len)));
}
void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr) {
  if (auto f = get_mremap()) return f(old_addr, old_len, new_len, flags, new_addr);
  long r = syscall(SYS_mremap, old_addr, old_len, new_len, flags, new_addr);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}
int madvise(void* addr, size_t len, int advice) {
  if (auto f = get_madvise()) return f(addr, len, advice);
  return static_cast<int>(syscall(SYS_madvise, addr, len, advice));
}
int mprotect(void* addr, size_t len, int prot) {
  if (auto f = get_mprotect()) return f(addr, len, prot);
  return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}
int mlock(const void* addr, size_t len) {
  if (auto f = get_mlock()) return f(addr, len);
  return static_cast<int>(syscall(SYS_mlock, addr, len));
}
int mlock2(const void* addr, size_t len, unsigned int flags) {
  if (auto f = get_mlock2()) return f(addr, len, flags);
  return static_cast<int>(syscall(SYS_mlock2, addr, len, flags));
}
int munlock(const void* addr, size_t len) {
  if (auto f = get_munlock()) return f(addr, len);
  return static_cast<int>(syscall(SYS_munlock, addr, len));
}
int mlockall(int flags) {
  if (auto f = get_mlockall()) return f(flags);
  return static_cast<int>(syscall(SYS_mlockall, flags));
}
int munlockall() {
  if (auto f = get_munlockall()) return f();
  return static_cast<int>(syscall(SYS_munlockall));
}
int shmget(key_t key, size_t size, int shmflg) {
  if (auto f = get_shmget()) return f(key, size, shmflg);
  return static_cast<int>(syscall(SYS_shmget, key, size, shmflg));
}
void* shmat(int shmid, const void* shmaddr, int shmflg) {
  if (auto f = get_shmat()) return f(shmid, shmaddr, shmflg);
  long r = syscall(SYS_shmat, shmid, shmaddr, shmflg);
  return r == -1 ? reinterpret_cast<void*>(-1) : reinterpret_cast<void*>(r);
}
int shmdt(const void* shmaddr) {
  if (auto f = get_shmdt()) return f(shmaddr);
  return static_cast<int>(syscall(SYS_shmdt, shmaddr));
}
int shmctl(int shmid, int cmd, void* buf) {
  if (auto f = get_shmctl()) return f(shmid, cmd, buf);
  return static_cast<int>(syscall(SYS_shmctl, shmid, cmd, buf));
}
int memfd_create(const char* name, unsigned int flags) {
  if (auto f = get_memfd_create()) return f(name, flags);
  return static_cast<int>(syscall(SYS_memfd_create, name, flags));
}
int ftruncate(int fd, off_t length) {
  if (auto f = get_ftruncate()) return f(fd, length);
  return static_cast<int>(syscall(SYS_ftruncate, fd, length));
}
int fallocate(int fd, int mode, off_t offset, off_t len) {
  if (auto f = get_fallocate()) return f(fd, mode, offset, len);
  return static_cast<int>(syscall(SYS_fallocate, fd, mode, offset, len));
}

void ResolveAll() {
  get_mmap(), get_munmap(), get_mremap(), get_madvise(), get_mprotect();
  get_mlock(), get_mlock2(), get_munlock(), get_mlockall(), get_munlockall();
  get_shmget(), get_shmat(), get_shmdt(), get_shmctl();
  get_memfd_create(), get_ftruncate(), get_fallocate();
}

}  // namespace real
}  // namespace dmashim
