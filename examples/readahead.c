#define _GNU_SOURCE
#include "readahead.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int readahead_fetch(unsigned hold_us) {
  const size_t size = 2u << 20;
  void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (p == MAP_FAILED) return -1;
  memset(p, 0x5a, size);
  usleep(hold_us);
  munmap(p, size);
  return 0;
}
