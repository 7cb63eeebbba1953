/* rx_ring: the bundled example workload — a DPDK-like receive path that does not know dmashim.
 *
 * RX threads each take 2 MiB huge-page buffers with mmap(MAP_HUGETLB), fill them ("receive"), hold
 * them briefly and unmap them: that path must never fail. A read-ahead thread takes buffers through
 * libreadahead.so, an optional path that may fail. Meanwhile a hog process (hugepage_hog, spawned
 * with posix_spawn) takes every free huge page on the node for a moment, as another program would.
 *
 * Exits 0 when no RX allocation failed and every buffer came back zero-filled; prints its own counts
 * so they can be compared with the shim's. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "readahead.h"

#define BUF_SIZE (2u << 20)

extern char** environ;

static atomic_long rx_ok, rx_failed, rx_dirty, ra_ok, ra_failed;
static atomic_int stop;
static unsigned hold_us = 2000;

static void* rx_thread(void* arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  while (!atomic_load(&stop)) {
    unsigned char* buf =
        mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (buf == MAP_FAILED) {
      atomic_fetch_add(&rx_failed, 1);
      usleep(1000);
      continue;
    }
    for (size_t i = 0; i < BUF_SIZE; i += 4096) {
      if (buf[i] != 0) {
        atomic_fetch_add(&rx_dirty, 1);
        break;
      }
    }
    for (size_t i = 0; i < BUF_SIZE; i += 64) buf[i] = (unsigned char)(seed + i);  /* "receive" */
    usleep(hold_us);
    munmap(buf, BUF_SIZE);
    atomic_fetch_add(&rx_ok, 1);
  }
  return NULL;
}

static void* readahead_thread(void* arg) {
  (void)arg;
  while (!atomic_load(&stop)) {
    if (readahead_fetch(hold_us) == 0) {
      atomic_fetch_add(&ra_ok, 1);
    } else {
      atomic_fetch_add(&ra_failed, 1);  /* optional work: skipped, not retried */
    }
    usleep(hold_us);  /* read-ahead is paced: the page it just gave back is free for others */
  }
  return NULL;
}

/* The hog runs without the shim: it stands for an unrelated program on the same node. */
static pid_t spawn_hog(const char* path, int after_ms, int hold_ms) {
  char after[32], hold[32];
  snprintf(after, sizeof after, "%d", after_ms);
  snprintf(hold, sizeof hold, "%d", hold_ms);
  char* argv[] = {(char*)path, after, hold, NULL};
  size_t n = 0;
  while (environ[n]) n++;
  char** env = calloc(n + 1, sizeof *env);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0) env[k++] = environ[i];
  }
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path, NULL, NULL, argv, env);
  free(env);
  if (rc != 0) {
    fprintf(stderr, "rx_ring: cannot spawn %s: %s\n", path, strerror(rc));
    return -1;
  }
  return pid;
}

int main(int argc, char** argv) {
  int threads = 4, seconds = 3;
  const char* hog = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hold-us") && i + 1 < argc) hold_us = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hog") && i + 1 < argc) hog = argv[++i];
    else {
      fprintf(stderr, "usage: rx_ring [--threads N] [--seconds S] [--hold-us U] [--hog PATH]\n");
      return 2;
    }
  }
  pid_t hog_pid = hog ? spawn_hog(hog, 500, seconds * 1000 / 2) : -1;
  pthread_t t[64], ra;
  if (threads > 64) threads = 64;
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, rx_thread, (void*)(uintptr_t)i);
  pthread_create(&ra, NULL, readahead_thread, NULL);
  sleep((unsigned)seconds);
  atomic_store(&stop, 1);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  pthread_join(ra, NULL);
  if (hog_pid > 0) waitpid(hog_pid, NULL, 0);
  printf("rx_ring: rx buffers %ld, rx failed %ld, rx not zero-filled %ld; read-ahead %ld, "
         "read-ahead failed %ld\n",
         atomic_load(&rx_ok), atomic_load(&rx_failed), atomic_load(&rx_dirty), atomic_load(&ra_ok),
         atomic_load(&ra_failed));
  return atomic_load(&rx_failed) == 0 && atomic_load(&rx_dirty) == 0 ? 0 : 1;
}
