// The interposed symbols. Each hook is a thin classifier: calls that are not ours go straight to the
// real function (the pass-through path: a flag test and a tail call); huge-page, pinned and
// lifecycle calls go to the Runtime. Hooks never throw and keep errno exactly as the kernel's on
// every path the shim does not own.
#include <errno.h>
#include <stdarg.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "shim/real.h"
#include "shim/runtime.h"
#include "shim/stats_store.h"

#define DMASHIM_HOOK extern "C" __attribute__((visibility("default")))

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef SHM_HUGE_SHIFT
#define SHM_HUGE_SHIFT 26
#endif

using dmashim::Family;
using dmashim::Guarded;
using dmashim::PassCall;
using dmashim::PoolEntry;
using dmashim::Runtime;
using dmashim::ShimGuard;
namespace real = dmashim::real;

namespace {

constexpr size_t kHuge2M = size_t{2} << 20;

inline Runtime* Rt() {
  if (ShimGuard::Active()) return nullptr;
  return Runtime::Get();
}

// The runtime for a call the shim wants to handle: initializes on first need.
inline Runtime* RtInit() {
  if (ShimGuard::Active()) return nullptr;
  Runtime* rt = Runtime::Get();
  return rt ? rt : Runtime::Init();
}

inline void Count(Runtime* rt, PassCall c) { rt->CountPassthrough(c); }

// Huge page size of the hugetlbfs file behind fd, or 0 when it is not one.
size_t HugetlbfsPageSize(int fd) {
  struct statfs st;
  if (fd < 0 || fstatfs(fd, &st) != 0) return 0;
  if (static_cast<unsigned long>(st.f_type) != HUGETLBFS_MAGIC) return 0;
  return static_cast<size_t>(st.f_bsize);
}

size_t PageFromFlags(int flags) {
  const int code = (flags >> MAP_HUGE_SHIFT) & 0x3f;
  return code == 30 ? (size_t{1} << 30) : kHuge2M;
}

// Every mmap call that is not an anonymous MAP_HUGETLB request a pool can serve at once: huge-page
// files, MAP_FIXED, the pool's misses and requests of another shape, and calls made before the
// runtime is up. `pool_tried`: the caller already asked MmapFromPool, under a ShimGuard of its own
// (released), and the request was not one a pool serves.
__attribute__((noinline)) void* MmapSlow(void* addr, size_t len, int prot, int flags, int fd,
                                         off_t off, const void* caller, bool pool_tried) {
  Runtime* rt = RtInit();
  if (rt == nullptr || !rt->intercepts(Family::kMmap)) {
    return real::mmap(addr, len, prot, flags, fd, off);
  }
  if (!pool_tried) rt->NoteHookFired(Family::kMmap);  // else MmapHook did
  ShimGuard guard;
  const bool fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
  const bool anon = (flags & MAP_ANONYMOUS) != 0;
  if (fixed) rt->ReleaseRange(addr, len);  // a pooled-but-free element must not be in the way

  size_t page = 0;
  if (flags & MAP_HUGETLB) {
    page = PageFromFlags(flags);
    if (anon && !fixed && !pool_tried) {
      bool handled = false;
      int err = 0;
      void* p = rt->MmapFromPool(len, prot, flags, caller, &handled, &err);
      if (handled) {
        if (p == nullptr) {
          errno = err;
          return MAP_FAILED;
        }
        return p;
      }
    }
  } else if (!anon) {
    page = HugetlbfsPageSize(fd);  // DPDK's hugetlbfs files and memfd_create(MFD_HUGETLB)
  }
  if (page == 0) {
    Count(rt, PassCall::kMmap);
    return real::mmap(addr, len, prot, flags, fd, off);
  }
  PoolEntry* e = rt->RouteHuge(Family::kMmap, page, (flags & MAP_SHARED) != 0, caller);
  void* out = MAP_FAILED;
  Guarded g = rt->Guard(e, len, [&] {
    out = real::mmap(addr, len, prot, flags, fd, off);
    return out != MAP_FAILED;
  });
  if (!g.ok) {
    errno = g.err;
    return MAP_FAILED;
  }
  return out;
}

// The two hot paths stay in the hook itself, with nothing of the slow path's frame: a call that is
// not ours (a flag test and a tail call), and an anonymous MAP_HUGETLB request served by a pool.
inline __attribute__((always_inline)) void* MmapHook(void* addr, size_t len, int prot, int flags,
                                                     int fd, off_t off, const void* caller) {
  const bool fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
  const bool anon = (flags & MAP_ANONYMOUS) != 0;
  if (!(flags & MAP_HUGETLB)) {
    if ((anon || fd < 0) && !fixed) {
      // Not ours: the pass-through path.
      if (Runtime* rt = Rt()) Count(rt, PassCall::kMmap);
      return real::mmap(addr, len, prot, flags, fd, off);
    }
  } else if (anon && !fixed) {
    Runtime* rt = Rt();
    if (rt != nullptr && rt->intercepts(Family::kMmap)) {
      rt->NoteHookFired(Family::kMmap);
      bool handled = false;
      int err = 0;
      void* p;
      {
        ShimGuard guard;
        p = rt->MmapFromPool(len, prot, flags, caller, &handled, &err);
      }
      if (handled) {
        if (p == nullptr) {
          errno = err;
          return MAP_FAILED;
        }
        return p;
      }
      return MmapSlow(addr, len, prot, flags, fd, off, caller, /*pool_tried=*/true);
    }
  }
  return MmapSlow(addr, len, prot, flags, fd, off, caller, /*pool_tried=*/false);
}

// The hugetlbfs sizing calls: fallocate allocates the pages (ENOSPC when they run out).
template <typename Call>
int GuardFileSizing(int fd, off_t bytes, Call&& call) {
  Runtime* rt = Rt();
  if (rt == nullptr || !rt->intercepts(Family::kMmap)) return call();
  const size_t page = HugetlbfsPageSize(fd);
  if (page == 0) return call();
  rt->NoteHookFired(Family::kMmap);
  ShimGuard guard;
  PoolEntry* e = rt->RouteHuge(Family::kMmap, page, true, __builtin_return_address(0));
  int rc = -1;
  Guarded g = rt->Guard(e, static_cast<size_t>(bytes > 0 ? bytes : 0), [&] {
    rc = call();
    return rc == 0;
  });
  if (!g.ok) {
    errno = g.err;
    return -1;
  }
  return rc;
}

template <typename Call>
int GuardMlock(size_t len, const void* caller, Call&& call) {
  Runtime* rt = RtInit();
  if (rt == nullptr || !rt->intercepts(Family::kMlock)) return call();
  rt->NoteHookFired(Family::kMlock);
  ShimGuard guard;
  PoolEntry* e = rt->RoutePinned(caller);
  Guarded g = rt->Guard(e, len, [&] { return call() == 0; });
  if (!g.ok) {
    errno = g.err;
    return -1;
  }
  return 0;
}

}  // namespace

DMASHIM_HOOK void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return MmapHook(addr, len, prot, flags, fd, off, __builtin_return_address(0));
}
DMASHIM_HOOK void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return MmapHook(addr, len, prot, flags, fd, off, __builtin_return_address(0));
}

DMASHIM_HOOK int munmap(void* addr, size_t len) {
  Runtime* rt = Rt();
  if (rt == nullptr) return real::munmap(addr, len);
  rt->NoteHookFired(Family::kMmap);
  Count(rt, PassCall::kMunmap);
  if (!rt->MaybePooled(addr, len)) return real::munmap(addr, len);
  ShimGuard guard;
  if (rt->OnMunmap(addr, len)) return 0;
  return real::munmap(addr, len);
}

DMASHIM_HOOK void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  if (Runtime* rt = Rt()) {
    Count(rt, PassCall::kMremap);
    ShimGuard guard;
    rt->ReleaseRange(old_addr, old_len);
    if (flags & MREMAP_FIXED) rt->ReleaseRange(new_addr, new_len);
  }
  return real::mremap(old_addr, old_len, new_len, flags, new_addr);
}

DMASHIM_HOOK int madvise(void* addr, size_t len, int advice) {
  if (Runtime* rt = Rt()) {
    Count(rt, PassCall::kMadvise);
    switch (advice) {
      case MADV_NORMAL:
      case MADV_RANDOM:
      case MADV_SEQUENTIAL:
      case MADV_WILLNEED:
        break;  // advisory only: the element stays the pool's
      default: {
        ShimGuard guard;
        rt->ReleaseRange(addr, len);
      }
    }
  }
  return real::madvise(addr, len, advice);
}

DMASHIM_HOOK int mprotect(void* addr, size_t len, int prot) {
  if (Runtime* rt = Rt()) {
    Count(rt, PassCall::kMprotect);
    ShimGuard guard;
    rt->OnMprotect(addr, len, prot);
  }
  return real::mprotect(addr, len, prot);
}

DMASHIM_HOOK int mlock(const void* addr, size_t len) {
  return GuardMlock(len, __builtin_return_address(0), [&] { return real::mlock(addr, len); });
}
DMASHIM_HOOK int mlock2(const void* addr, size_t len, unsigned int flags) {
  return GuardMlock(len, __builtin_return_address(0),
                    [&] { return real::mlock2(addr, len, flags); });
}
DMASHIM_HOOK int mlockall(int flags) {
  return GuardMlock(0, __builtin_return_address(0), [&] { return real::mlockall(flags); });
}
DMASHIM_HOOK int munlock(const void* addr, size_t len) {
  if (Runtime* rt = Rt()) {
    rt->NoteHookFired(Family::kMlock);
    Count(rt, PassCall::kMunlock);
  }
  return real::munlock(addr, len);
}
DMASHIM_HOOK int munlockall() {
  if (Runtime* rt = Rt()) Count(rt, PassCall::kMunlockall);
  return real::munlockall();
}

DMASHIM_HOOK int shmget(key_t key, size_t size, int shmflg) {
  Runtime* rt = (shmflg & SHM_HUGETLB) ? RtInit() : Rt();
  if (rt == nullptr || !(shmflg & SHM_HUGETLB) || !rt->intercepts(Family::kShm)) {
    if (rt != nullptr) Count(rt, PassCall::kShmget);
    return real::shmget(key, size, shmflg);
  }
  rt->NoteHookFired(Family::kShm);
  ShimGuard guard;
  const int code = (shmflg >> SHM_HUGE_SHIFT) & 0x3f;
  const size_t page = code == 30 ? (size_t{1} << 30) : kHuge2M;
  PoolEntry* e = rt->RouteHuge(Family::kShm, page, true, __builtin_return_address(0));
  int id = -1;
  Guarded g = rt->Guard(e, size, [&] {
    id = real::shmget(key, size, shmflg);
    return id != -1;
  });
  if (!g.ok) {
    errno = g.err;
    return -1;
  }
  return id;
}
DMASHIM_HOOK void* shmat(int shmid, const void* shmaddr, int shmflg) {
  if (Runtime* rt = Rt()) {
    Count(rt, PassCall::kShmat);
    if (shmaddr != nullptr) {
      ShimGuard guard;
      rt->ReleaseRange(const_cast<void*>(shmaddr), 1);
    }
  }
  return real::shmat(shmid, shmaddr, shmflg);
}
DMASHIM_HOOK int shmdt(const void* shmaddr) {
  if (Runtime* rt = Rt()) {
    rt->NoteHookFired(Family::kShm);
    Count(rt, PassCall::kShmdt);
  }
  return real::shmdt(shmaddr);
}
DMASHIM_HOOK int shmctl(int shmid, int cmd, struct shmid_ds* buf) {
  if (Runtime* rt = Rt()) Count(rt, PassCall::kShmctl);
  return real::shmctl(shmid, cmd, buf);
}

DMASHIM_HOOK int memfd_create(const char* name, unsigned int flags) {
  if (Runtime* rt = Rt()) Count(rt, PassCall::kMemfdCreate);
  return real::memfd_create(name, flags);
}

DMASHIM_HOOK int ftruncate(int fd, off_t length) {
  if (Runtime* rt = Rt()) Count(rt, PassCall::kFtruncate);
  return GuardFileSizing(fd, length, [&] { return real::ftruncate(fd, length); });
}
DMASHIM_HOOK int ftruncate64(int fd, off_t length) { return ftruncate(fd, length); }
DMASHIM_HOOK int fallocate(int fd, int mode, off_t offset, off_t len) {
  if (Runtime* rt = Rt()) Count(rt, PassCall::kFallocate);
  return GuardFileSizing(fd, len, [&] { return real::fallocate(fd, mode, offset, len); });
}
DMASHIM_HOOK int fallocate64(int fd, int mode, off_t offset, off_t len) {
  return fallocate(fd, mode, offset, len);
}

// Initialize at load time, before the application's main(): the reserve is built (prefault =
// startup) and configuration errors are reported before the program starts its work.
__attribute__((constructor)) static void DmashimLoad() { Runtime::Init(); }
