/* hugepage_hog AFTER_MS HOLD_MS: after AFTER_MS, takes every free 2 MiB huge page on the node
 * (mapped and faulted in), holds them HOLD_MS, then gives them back. Stands for another program
 * competing for the node's huge pages. Prints how many it took. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: hugepage_hog AFTER_MS HOLD_MS\n");
    return 2;
  }
  usleep((useconds_t)atoi(argv[1]) * 1000);
  const size_t size = 2u << 20;
  static void* pages[65536];
  int n = 0;
  /* Keep taking for the whole hold: a page someone frees meanwhile is taken too, as a real
   * competing program that keeps allocating would. */
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  const long hold_ms = atol(argv[2]);
  int first_round = 1;
  for (;;) {
    while (n < 65536) {
      void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
      if (p == MAP_FAILED) break;
      if (madvise(p, size, MADV_POPULATE_WRITE) != 0) {
        munmap(p, size);
        break;
      }
      pages[n++] = p;
    }
    if (first_round) fprintf(stderr, "hugepage_hog: took %d free huge pages for %ld ms\n", n, hold_ms);
    first_round = 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 >= hold_ms) break;
    usleep(200);
  }
  fprintf(stderr, "hugepage_hog: releasing %d huge pages\n", n);
  for (int i = 0; i < n; i++) munmap(pages[i], size);
  return 0;
}
