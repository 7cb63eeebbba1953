/* capi_demo: the opt-in C API (dmashim.h), resolved with dlsym so the program runs with or without
 * the shim. Under the shim it allocates from the pool named on the command line with explicit
 * per-call flags, carves DMA blocks, and marks a stretch of code fail-fast with a scope. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "shim/dmashim.h"

#define LOOKUP(name) __typeof__(&name) p_##name = (__typeof__(&name))dlsym(RTLD_DEFAULT, #name)

int main(int argc, char** argv) {
  const char* pool_name = argc > 1 ? argv[1] : "rx-buffers";
  LOOKUP(dmashim_pool_find);
  LOOKUP(dmashim_pool_alloc);
  LOOKUP(dmashim_pool_free);
  LOOKUP(dmashim_dma_pool_create);
  LOOKUP(dmashim_dma_alloc);
  LOOKUP(dmashim_dma_free);
  LOOKUP(dmashim_dma_pool_destroy);
  LOOKUP(dmashim_scope_begin);
  LOOKUP(dmashim_scope_end);
  if (!p_dmashim_pool_find) {
    printf("capi_demo: dmashim not loaded; using plain mmap\n");
    void* p = mmap(NULL, 2u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    printf("capi_demo: plain huge page %s\n", p == MAP_FAILED ? strerror(errno) : "ok");
    return 0;
  }
  dmashim_pool* pool = p_dmashim_pool_find(pool_name);
  if (!pool) {
    printf("capi_demo: no pool %s: %s\n", pool_name, strerror(errno));
    return 1;
  }
  void* e = p_dmashim_pool_alloc(pool, DMASHIM_WAIT, 0);
  printf("capi_demo: element %s\n", e ? "ok" : strerror(errno));
  dmashim_dma_pool* dma = p_dmashim_dma_pool_create("demo-dma", pool, 2048, 64, 4096);
  int blocks = 0;
  for (int i = 0; dma && i < 100; i++) {
    void* b = p_dmashim_dma_alloc(dma, DMASHIM_NOWAIT, 0);
    if (!b) break;
    if (((uintptr_t)b & 63) != 0 || ((uintptr_t)b & ~4095ul) != (((uintptr_t)b + 2047) & ~4095ul)) {
      printf("capi_demo: block %p breaks align/boundary\n", b);
      return 1;
    }
    blocks++;
    p_dmashim_dma_free(dma, b);
  }
  printf("capi_demo: %d dma blocks ok\n", blocks);
  if (dma) p_dmashim_dma_pool_destroy(dma);
  p_dmashim_scope_begin(DMASHIM_NOWAIT, 0);
  void* ra = mmap(NULL, 2u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  p_dmashim_scope_end();
  printf("capi_demo: fail-fast scope mmap %s\n", ra == MAP_FAILED ? strerror(errno) : "ok");
  if (ra != MAP_FAILED) munmap(ra, 2u << 20);
  if (e) p_dmashim_pool_free(pool, e);
  return 0;
}
