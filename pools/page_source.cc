#include "pools/page_source.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << MAP_HUGE_SHIFT)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace dmashim {

absl::string_view SourceKindName(SourceKind kind) {
  switch (kind) {
    case SourceKind::kHuge2M:
      return "huge-2MiB";
    case SourceKind::kHuge1G:
      return "huge-1GiB";
    case SourceKind::kPinned:
      return "pinned";
    case SourceKind::kAnon:
      return "anon";
  }
  return "unknown";
}

size_t SourcePageSize(SourceKind kind) {
  switch (kind) {
    case SourceKind::kHuge2M:
      return size_t{2} << 20;
    case SourceKind::kHuge1G:
      return size_t{1} << 30;
    case SourceKind::kPinned:
    case SourceKind::kAnon:
      return 4096;
  }
  return 4096;
}

namespace page_source_internal {
std::atomic<uintptr_t> g_hull_lo{UINTPTR_MAX};
std::atomic<uintptr_t> g_hull_hi{0};
}  // namespace page_source_internal

namespace {
using page_source_internal::g_hull_hi;
using page_source_internal::g_hull_lo;

// Widens [*lo_word, *hi_word) to cover [lo, hi).
void ExtendHull(std::atomic<uintptr_t>* lo_word, std::atomic<uintptr_t>* hi_word, uintptr_t lo,
                uintptr_t hi) {
  uintptr_t cur = lo_word->load(std::memory_order_relaxed);
  while (lo < cur && !lo_word->compare_exchange_weak(cur, lo, std::memory_order_release)) {
  }
  cur = hi_word->load(std::memory_order_relaxed);
  while (hi > cur && !hi_word->compare_exchange_weak(cur, hi, std::memory_order_release)) {
  }
}
}  // namespace

PageSource::PageSource(SourceSpec spec, size_t element_size, const SysCalls* sys)
    : spec_(spec), element_size_(element_size), sys_(sys) {}

void* PageSource::Map(int* err) const {
  int flags = MAP_ANONYMOUS | (spec_.shared ? MAP_SHARED : MAP_PRIVATE);
  if (spec_.kind == SourceKind::kHuge2M) flags |= MAP_HUGETLB | MAP_HUGE_2MB;
  if (spec_.kind == SourceKind::kHuge1G) flags |= MAP_HUGETLB | MAP_HUGE_1GB;
  void* p = sys_->mmap(nullptr, element_size_, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    *err = errno;
    return nullptr;
  }
  // Before the element can be seen by anyone: a reader that finds an address outside the hull may
  // rely on no pool holding it.
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  ExtendHull(&g_hull_lo, &g_hull_hi, a, a + element_size_);
  ExtendHull(&lo_, &hi_, a, a + element_size_);
  // Fault everything in now: an error return instead of SIGBUS at first touch.
  if (sys_->madvise(p, element_size_, MADV_POPULATE_WRITE) != 0) {
    *err = errno == EFAULT || errno == EHWPOISON ? ENOMEM : errno;
    sys_->munmap(p, element_size_);
    return nullptr;
  }
  if (spec_.kind == SourceKind::kPinned && sys_->mlock(p, element_size_) != 0) {
    *err = errno;
    sys_->munmap(p, element_size_);
    return nullptr;
  }
  return p;
}

void PageSource::Unmap(void* element) const {
  if (spec_.kind == SourceKind::kPinned) sys_->munlock(element, element_size_);
  sys_->munmap(element, element_size_);
}

int PageSource::SetForkInheritance(void* element, bool inherit) const {
  return sys_->madvise(element, element_size_, inherit ? MADV_DOFORK : MADV_DONTFORK) == 0 ? 0
                                                                                           : errno;
}

int PageSource::ResetProtection(void* element) const {
  // A raw system call, not through the SysCalls table: no fault is injected into it, and every
  // table (tests, the CUDA page source) would otherwise need an entry for it.
  return syscall(SYS_mprotect, element, element_size_, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

namespace {
long ReadHugeSysfs(size_t page_size, const char* file) {
  char path[128];
  snprintf(path, sizeof path, "/sys/kernel/mm/hugepages/hugepages-%zukB/%s", page_size / 1024,
           file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[32] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  return strtol(buf, nullptr, 10);
}
}  // namespace

long FreeHugePages(size_t page_size) { return ReadHugeSysfs(page_size, "free_hugepages"); }
long TotalHugePages(size_t page_size) { return ReadHugeSysfs(page_size, "nr_hugepages"); }

}  // namespace dmashim
