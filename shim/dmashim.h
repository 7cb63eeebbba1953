/* dmashim.h — the opt-in C API of libdmashim.so.
 *
 * Programs that can be changed use it to "pass the flags down" (DESIGN §4): allocate from a named
 * pool saying, per call, whether they may wait; carve small DMA blocks from a pool's pages; and mark a
 * stretch of code (read-ahead, say) as fail-fast for the intercepted calls it makes.
 *
 * The functions exist only while libdmashim.so is loaded: resolve them with dlsym(RTLD_DEFAULT, …)
 * to run with or without the shim (see examples/capi_demo.c).
 *
 * Errors: functions returning a pointer return NULL and set errno; those returning int return 0 or
 * -1 with errno. ENOMEM: nothing available under the chosen flags (a timeout that expired is
 * reported as ENOMEM too); EINTR: an interruptible wait was ended by a signal; EINVAL: bad argument;
 * ENOENT: no such pool. */
#ifndef DMASHIM_H_
#define DMASHIM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* flags: how a call may wait when the pool has nothing free and the kernel has nothing either. */
#define DMASHIM_DEFAULT 0 /* the pool's configured mode */
#define DMASHIM_WAIT 1    /* block until an element comes back: never fails for want of memory */
#define DMASHIM_NOWAIT 2  /* fail at once with ENOMEM */
#define DMASHIM_TIMEOUT 3 /* wait at most timeout_ns, then fail with ENOMEM */
#define DMASHIM_INTERRUPTIBLE 0x100 /* or-ed in: a signal handler run ends a wait with EINTR */

typedef struct dmashim_pool dmashim_pool;
typedef struct dmashim_dma_pool dmashim_dma_pool;

/* The configured pool [pool.NAME], or NULL (ENOENT). Never blocks. */
dmashim_pool* dmashim_pool_find(const char* name);
/* Bytes per element of the pool. */
size_t dmashim_pool_element_size(const dmashim_pool* pool);
/* One element (zeroed, read-write). May block as `flags` says. */
void* dmashim_pool_alloc(dmashim_pool* pool, int flags, int64_t timeout_ns);
/* Returns an element from dmashim_pool_alloc. Never blocks on a wait. EINVAL if not one. */
int dmashim_pool_free(dmashim_pool* pool, void* element);

/* A DMA block pool over the pages of `pages`: blocks of `size` bytes, aligned to `align` (power of
 * two), never crossing `boundary` (power of two ≥ size, or 0 = the page). EINVAL names nothing
 * further: the rules are the kernel's dma_pool_create's. */
dmashim_dma_pool* dmashim_dma_pool_create(const char* name, dmashim_pool* pages, size_t size,
                                          size_t align, size_t boundary);
void* dmashim_dma_alloc(dmashim_dma_pool* pool, int flags, int64_t timeout_ns);
int dmashim_dma_free(dmashim_dma_pool* pool, void* block);
/* Blocks still in use keep their pages (reported on stderr). */
void dmashim_dma_pool_destroy(dmashim_dma_pool* pool);

/* Until the matching dmashim_scope_end(), intercepted calls made by this thread use this mode
 * instead of their pool's (like the kernel's memalloc_noio_save()). Scopes nest up to 16 deep.
 * Returns 0, or -1 with EINVAL (bad flags) or EOVERFLOW (too deep). */
int dmashim_scope_begin(int flags, int64_t timeout_ns);
void dmashim_scope_end(void);

#ifdef __cplusplus
}
#endif

#endif /* DMASHIM_H_ */
