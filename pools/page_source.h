// Page sources: where a pool's elements come from. Each Map() obtains one element of
// `element_size` bytes from the kernel and faults it in completely, so an element the source hands
// out is backed by real memory: a missing huge page is an error here, never a SIGBUS later.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "pools/sys.h"

namespace dmashim {

enum class SourceKind : uint32_t {
  kHuge2M = 1,  // MAP_HUGETLB | MAP_HUGE_2MB
  kHuge1G = 2,  // MAP_HUGETLB | MAP_HUGE_1GB (where the node has 1 GiB pages)
  kPinned = 3,  // anonymous 4 KiB pages locked with mlock
  kAnon = 4,    // plain anonymous pages
};

struct SourceSpec {
  SourceKind kind = SourceKind::kHuge2M;
  bool shared = false;  // MAP_SHARED instead of MAP_PRIVATE
};

absl::string_view SourceKindName(SourceKind kind);
// The page size of the kind: 2 MiB, 1 GiB or 4 KiB.
size_t SourcePageSize(SourceKind kind);

class PageSource {
 public:
  // `element_size` must be a positive multiple of SourcePageSize(spec.kind).
  PageSource(SourceSpec spec, size_t element_size, const SysCalls* sys = &RealSysCalls());

  // Maps one element read-write and faults every page in (MADV_POPULATE_WRITE; pinned: mlock).
  // Never blocks beyond the system calls themselves. Returns nullptr with *err set to the kernel's
  // errno on failure: ENOMEM when the huge pages or the lock budget are not there (mmap, populate
  // or mlock), EINVAL for a size the kernel refuses, EPERM/EAGAIN from mlock limits. On failure
  // nothing stays mapped.
  void* Map(int* err) const;

  // Returns an element to the kernel (munlock + munmap). Never fails for an element from Map().
  void Unmap(void* element) const;

  // madvise(MADV_DONTFORK / MADV_DOFORK) on one element; returns 0 or an errno.
  int SetForkInheritance(void* element, bool inherit) const;
  // Makes an element read-write again (after the caller mprotect-ed it); returns 0 or an errno.
  int ResetProtection(void* element) const;

  size_t element_size() const { return element_size_; }
  const SourceSpec& spec() const { return spec_; }
  const SysCalls& sys() const { return *sys_; }

  // False when `p` cannot be an element of this source: it lies outside the lowest and highest
  // addresses Map() has returned. Lock-free (as MappedAddressHull, for this source alone).
  bool MaybeHolds(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    return a >= lo_.load(std::memory_order_acquire) && a < hi_.load(std::memory_order_acquire);
  }

 private:
  SourceSpec spec_;
  size_t element_size_;
  const SysCalls* sys_;
  mutable std::atomic<uintptr_t> lo_{UINTPTR_MAX};
  mutable std::atomic<uintptr_t> hi_{0};
};

namespace page_source_internal {
extern std::atomic<uintptr_t> g_hull_lo;  // widened by Map() before it returns an address
extern std::atomic<uintptr_t> g_hull_hi;
}  // namespace page_source_internal

// The lowest and highest address any PageSource in this process has mapped (0, 0 before the first
// Map()). Lets an interposer skip pool bookkeeping for addresses no pool can hold, without a lock
// (inline: every munmap in the process asks).
inline void MappedAddressHull(uintptr_t* lo, uintptr_t* hi) {
  *hi = page_source_internal::g_hull_hi.load(std::memory_order_acquire);
  *lo = *hi == 0 ? 0 : page_source_internal::g_hull_lo.load(std::memory_order_acquire);
}

// Free pages of a huge page size on this node (sysfs free_hugepages), or -1 if unreadable.
long FreeHugePages(size_t page_size);
long TotalHugePages(size_t page_size);

}  // namespace dmashim
