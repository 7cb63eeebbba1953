/* libibverbs_standin.so — a TEST-ONLY STAND-IN for rdma-core's memory registration calls.
 *
 * NOT rdma-core's libibverbs. This sandbox (and CI) has no RDMA device and cannot load the rdma_rxe
 * software provider (no kernel module, no netlink), so the shim's ibverbs hooks are tested against
 * this library: it exports ibv_reg_mr (the entry point behind rdma-core's ibv_reg_mr() macro),
 * ibv_reg_mr_iova, ibv_reg_mr_iova2, ibv_dereg_mr, ibv_fork_init and ibv_is_fork_initialized with
 * rdma-core's ABI (struct ibv_mr from <infiniband/verbs.h>). Registration pins with mlock and a
 * fixed delay (IBVERBS_STANDIN_DELAY_US, default 1000 µs); IBVERBS_STANDIN_MAX_BYTES bounds the
 * bytes registered at once (ENOMEM beyond, as a driver's lock budget would). ibv_fork_init() marks
 * registered ranges MADV_DONTFORK as rdma-core does, unless IBVERBS_STANDIN_FORK_UNNEEDED=1, which
 * stands for a kernel that copies pinned pages on fork (ibv_is_fork_initialized() ==
 * IBV_FORK_UNNEEDED). */
#define _GNU_SOURCE
#include <errno.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))
/* verbs.h makes ibv_reg_mr and ibv_reg_mr_iova function-like macros: the definitions below put
   the names in parentheses so they define the exported functions themselves. */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_registered;
static unsigned long g_reg_calls, g_dereg_calls;
static int g_fork_enabled;

/* Fork-safe like a real library has to be: the lock is held across fork, so a child of a
   multi-threaded program never inherits it held (the shim's fork test measures the shim). */
static void LockForFork(void) { pthread_mutex_lock(&g_mu); }
static void UnlockAfterFork(void) { pthread_mutex_unlock(&g_mu); }
__attribute__((constructor)) static void InstallForkHandlers(void) {
  pthread_atfork(LockForFork, UnlockAfterFork, UnlockAfterFork);
}

static void Range(void* addr, size_t len, uintptr_t* lo, size_t* plen) {
  *lo = (uintptr_t)addr & ~(uintptr_t)4095;
  *plen = (((uintptr_t)addr + len + 4095) & ~(uintptr_t)4095) - *lo;
}

static void Delay(void) {
  const char* e = getenv("IBVERBS_STANDIN_DELAY_US");
  long us = e ? strtol(e, NULL, 10) : 1000;
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (us > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static struct ibv_mr* Reg(struct ibv_pd* pd, void* addr, size_t len) {
  pthread_mutex_lock(&g_mu);
  ++g_reg_calls;
  const char* max = getenv("IBVERBS_STANDIN_MAX_BYTES");
  if (max != NULL && g_registered + len > (size_t)strtoull(max, NULL, 10)) {
    pthread_mutex_unlock(&g_mu);
    errno = ENOMEM;
    return NULL;
  }
  g_registered += len;
  const int fork_enabled = g_fork_enabled;
  pthread_mutex_unlock(&g_mu);
  uintptr_t lo;
  size_t plen;
  Range(addr, len, &lo, &plen);
  struct ibv_mr* mr = calloc(1, sizeof *mr);
  int err = 0;
  if (mr == NULL) err = ENOMEM;
  else if (fork_enabled && madvise((void*)lo, plen, MADV_DONTFORK) != 0) err = errno;
  else if (mlock((void*)lo, plen) != 0) err = errno;
  Delay();
  if (err != 0) {
    free(mr);
    pthread_mutex_lock(&g_mu);
    g_registered -= len;
    pthread_mutex_unlock(&g_mu);
    errno = err;
    return NULL;
  }
  mr->pd = pd;
  mr->addr = addr;
  mr->length = len;
  mr->lkey = mr->rkey = (uint32_t)(lo >> 12);
  return mr;
}

EXPORT struct ibv_mr* (ibv_reg_mr)(struct ibv_pd* pd, void* addr, size_t length, int access) {
  (void)access;
  return Reg(pd, addr, length);
}
EXPORT struct ibv_mr* (ibv_reg_mr_iova)(struct ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                      int access) {
  (void)iova, (void)access;
  return Reg(pd, addr, length);
}
EXPORT struct ibv_mr* ibv_reg_mr_iova2(struct ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                       unsigned int access) {
  (void)iova, (void)access;
  return Reg(pd, addr, length);
}

EXPORT int ibv_dereg_mr(struct ibv_mr* mr) {
  if (mr == NULL) return EINVAL;
  uintptr_t lo;
  size_t plen;
  Range(mr->addr, mr->length, &lo, &plen);
  munlock((void*)lo, plen);
  pthread_mutex_lock(&g_mu);
  ++g_dereg_calls;
  g_registered -= mr->length;
  if (g_fork_enabled) madvise((void*)lo, plen, MADV_DOFORK);
  pthread_mutex_unlock(&g_mu);
  free(mr);
  return 0;
}

static int ForkUnneeded(void) {
  const char* e = getenv("IBVERBS_STANDIN_FORK_UNNEEDED");
  return e != NULL && strcmp(e, "1") == 0;
}

EXPORT int ibv_fork_init(void) {
  pthread_mutex_lock(&g_mu);
  if (!ForkUnneeded()) g_fork_enabled = 1;
  pthread_mutex_unlock(&g_mu);
  return 0;
}

EXPORT enum ibv_fork_status ibv_is_fork_initialized(void) {
  if (ForkUnneeded()) return IBV_FORK_UNNEEDED;
  return g_fork_enabled ? IBV_FORK_ENABLED : IBV_FORK_DISABLED;
}

EXPORT unsigned long ibverbs_standin_count(const char* what) {
  pthread_mutex_lock(&g_mu);
  unsigned long v = strcmp(what, "reg") == 0     ? g_reg_calls
                    : strcmp(what, "dereg") == 0 ? g_dereg_calls
                    : strcmp(what, "bytes") == 0 ? g_registered
                                                 : 0;
  pthread_mutex_unlock(&g_mu);
  return v;
}
