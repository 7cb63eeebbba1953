/* libcudart_standin.so — a TEST-ONLY STAND-IN for the CUDA runtime's pinned host memory calls.
 *
 * NOT NVIDIA's libcudart and shares no code with it. CI has no GPU, so the shim's CUDA hooks are
 * tested against this library: it exports the same C ABI entry points (int error codes, unsigned
 * flags) and "pins" the way the driver does in effect — mmap + mlock — with a fixed delay per pin
 * (CUDART_STANDIN_DELAY_US, default 2000 µs: real pinning costs milliseconds). It counts its calls
 * (cudart_standin_count) so tests can assert how many real pins happened, and it can be told to
 * run out of pinnable memory (CUDART_STANDIN_MAX_BYTES) to test the shim's modes.
 * Error values are the CUDA runtime's: 0 success, 1 invalid value, 2 memory allocation,
 * 712 host memory already registered, 713 host memory not registered. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum { kSuccess = 0, kInvalidValue = 1, kMemoryAllocation = 2, kAlreadyRegistered = 712,
       kNotRegistered = 713 };
enum { kKindAlloc = 1, kKindRegister = 2 };
#define kMaxRanges 8192

struct Range {
  uintptr_t addr;
  size_t len;     /* bytes pinned (whole pages) */
  unsigned flags;
  int kind;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct Range g_ranges[kMaxRanges];
static size_t g_pinned;
static unsigned long g_host_alloc, g_free_host, g_register, g_unregister, g_get_flags,
    g_failures;

/* fork: the table is process memory, so a child inherits it, but not the memory of ranges the
 * parent had marked MADV_DONTFORK (a pool's free pages): their registrations are dropped in the
 * child, whose own mappings may reuse those addresses. The lock is taken across fork. */
static void ForkPrepare(void) { pthread_mutex_lock(&g_mu); }
static void ForkParent(void) { pthread_mutex_unlock(&g_mu); }
static void ForkChild(void) {
  for (size_t i = 0; i < kMaxRanges; ++i) {
    struct Range* r = &g_ranges[i];
    if (r->kind == 0) continue;
    const uintptr_t lo = r->addr & ~(uintptr_t)4095;
    if (msync((void*)lo, r->addr + r->len - lo, MS_ASYNC) != 0 && errno == ENOMEM) {
      g_pinned -= r->len;
      r->kind = 0;
    }
  }
  pthread_mutex_unlock(&g_mu);
}
__attribute__((constructor)) static void InstallForkHandlers(void) {
  pthread_atfork(ForkPrepare, ForkParent, ForkChild);
}

static size_t PageUp(size_t n) { return (n + 4095) & ~(size_t)4095; }

static void Delay(void) {
  const char* e = getenv("CUDART_STANDIN_DELAY_US");
  long us = e ? strtol(e, NULL, 10) : 2000;
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (us > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int Budget(size_t more) {
  const char* e = getenv("CUDART_STANDIN_MAX_BYTES");
  return e == NULL || g_pinned + more <= (size_t)strtoull(e, NULL, 10);
}

static struct Range* Find(uintptr_t p, int containing) {
  for (size_t i = 0; i < kMaxRanges; ++i) {
    struct Range* r = &g_ranges[i];
    if (r->kind == 0) continue;
    if (r->addr == p || (containing && p >= r->addr && p < r->addr + r->len)) return r;
  }
  return NULL;
}

static int Insert(uintptr_t p, size_t len, unsigned flags, int kind) {
  for (size_t i = 0; i < kMaxRanges; ++i) {
    if (g_ranges[i].kind == 0) {
      g_ranges[i] = (struct Range){p, len, flags, kind};
      g_pinned += len;
      return 1;
    }
  }
  return 0;
}

EXPORT int cudaHostAlloc(void** p, size_t size, unsigned int flags) {
  if (p == NULL || flags > 7) return kInvalidValue;
  pthread_mutex_lock(&g_mu);
  ++g_host_alloc;
  if (size == 0) {
    *p = NULL;
    pthread_mutex_unlock(&g_mu);
    return kSuccess;
  }
  const size_t len = PageUp(size);
  if (!Budget(len)) {
    ++g_failures;
    pthread_mutex_unlock(&g_mu);
    return kMemoryAllocation;
  }
  g_pinned += len;  /* held while pinning outside the lock */
  pthread_mutex_unlock(&g_mu);
  void* m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int ok = m != MAP_FAILED && mlock(m, len) == 0;
  Delay();
  pthread_mutex_lock(&g_mu);
  g_pinned -= len;
  if (ok) ok = Insert((uintptr_t)m, len, flags, kKindAlloc);
  if (!ok) ++g_failures;
  pthread_mutex_unlock(&g_mu);
  if (!ok) {
    if (m != MAP_FAILED) munmap(m, len);
    return kMemoryAllocation;
  }
  *p = m;
  return kSuccess;
}

EXPORT int cudaMallocHost(void** p, size_t size) { return cudaHostAlloc(p, size, 0); }

EXPORT int cudaFreeHost(void* p) {
  pthread_mutex_lock(&g_mu);
  ++g_free_host;
  if (p == NULL) {
    pthread_mutex_unlock(&g_mu);
    return kSuccess;
  }
  struct Range* r = Find((uintptr_t)p, 0);
  if (r == NULL || r->kind != kKindAlloc) {
    pthread_mutex_unlock(&g_mu);
    return kInvalidValue;
  }
  struct Range x = *r;
  r->kind = 0;
  g_pinned -= x.len;
  pthread_mutex_unlock(&g_mu);
  munlock((void*)x.addr, x.len);
  munmap((void*)x.addr, x.len);
  return kSuccess;
}

EXPORT int cudaHostRegister(void* p, size_t size, unsigned int flags) {
  if (p == NULL || size == 0 || flags > 15) return kInvalidValue;
  const uintptr_t lo = (uintptr_t)p & ~(uintptr_t)4095;
  const size_t len = PageUp((uintptr_t)p + size - lo);
  pthread_mutex_lock(&g_mu);
  ++g_register;
  if (Find((uintptr_t)p, 1) != NULL) {
    pthread_mutex_unlock(&g_mu);
    return kAlreadyRegistered;
  }
  if (!Budget(len)) {
    ++g_failures;
    pthread_mutex_unlock(&g_mu);
    return kMemoryAllocation;
  }
  pthread_mutex_unlock(&g_mu);
  int ok = mlock((void*)lo, len) == 0;
  Delay();
  pthread_mutex_lock(&g_mu);
  if (ok) ok = Insert((uintptr_t)p, size, flags, kKindRegister);
  if (!ok) ++g_failures;
  pthread_mutex_unlock(&g_mu);
  return ok ? kSuccess : kMemoryAllocation;
}

EXPORT int cudaHostUnregister(void* p) {
  pthread_mutex_lock(&g_mu);
  ++g_unregister;
  struct Range* r = Find((uintptr_t)p, 0);
  if (r == NULL || r->kind != kKindRegister) {
    pthread_mutex_unlock(&g_mu);
    return kNotRegistered;
  }
  struct Range x = *r;
  r->kind = 0;
  g_pinned -= x.len;
  pthread_mutex_unlock(&g_mu);
  const uintptr_t lo = x.addr & ~(uintptr_t)4095;
  munlock((void*)lo, PageUp(x.addr + x.len - lo));
  return kSuccess;
}

EXPORT int cudaHostGetFlags(unsigned int* flags, void* p) {
  if (flags == NULL) return kInvalidValue;
  pthread_mutex_lock(&g_mu);
  ++g_get_flags;
  struct Range* r = Find((uintptr_t)p, 1);
  int rc = kInvalidValue;
  if (r != NULL) {
    /* Registered memory reports the register flags; allocated memory its allocation flags. */
    *flags = r->flags;
    rc = kSuccess;
  }
  pthread_mutex_unlock(&g_mu);
  return rc;
}

EXPORT const char* cudaGetErrorString(int e) {
  switch (e) {
    case kSuccess: return "no error (stand-in)";
    case kInvalidValue: return "invalid argument (stand-in)";
    case kMemoryAllocation: return "out of memory (stand-in)";
    case 3: return "initialization error (stand-in)";
    case kAlreadyRegistered: return "part or all of the requested memory range is already mapped (stand-in)";
    case kNotRegistered: return "pointer does not correspond to a registered memory region (stand-in)";
    default: return "unknown error (stand-in)";
  }
}

/* Test hooks: how many times each entry point ran, and bytes pinned now. */
EXPORT unsigned long cudart_standin_count(const char* what) {
  pthread_mutex_lock(&g_mu);
  unsigned long v = 0;
  if (strcmp(what, "cudaHostAlloc") == 0) v = g_host_alloc;
  else if (strcmp(what, "cudaFreeHost") == 0) v = g_free_host;
  else if (strcmp(what, "cudaHostRegister") == 0) v = g_register;
  else if (strcmp(what, "cudaHostUnregister") == 0) v = g_unregister;
  else if (strcmp(what, "cudaHostGetFlags") == 0) v = g_get_flags;
  else if (strcmp(what, "failures") == 0) v = g_failures;
  else if (strcmp(what, "pins") == 0) v = g_host_alloc + g_register;
  else if (strcmp(what, "calls") == 0)
    v = g_host_alloc + g_free_host + g_register + g_unregister + g_get_flags;
  else if (strcmp(what, "pinned_bytes") == 0) v = g_pinned;
  pthread_mutex_unlock(&g_mu);
  return v;
}
