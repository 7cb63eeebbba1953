// CUDA pinned host memory (DESIGN §5, issue 8): cudaHostAlloc / cudaMallocHost / cudaFreeHost /
// cudaHostRegister / cudaHostUnregister / cudaHostGetFlags, interposed through the C ABI only (no
// CUDA headers: int error codes, unsigned int flags).
//
// A pool with match = { call = "cuda" } caches pinned blocks, because pinning costs milliseconds:
//  - sizes are rounded to classes of 1/8-power-of-two steps (≤ 12.5 % waste, reported as
//    bytes_in_use − requested_bytes_in_use), and a freed block is kept per (class, flag set) and
//    handed out again without a CUDA call (counted as alloc_reserve);
//  - requests below the small-block limit (match.size, default 64 KiB; not WriteCombined) are
//    carved from DmaPools over pages of 4 × that limit, pinned once with one cudaHostRegister each
//    (per flag set); `reserve` such pages of the default flag set are pinned at the first CUDA call;
//  - larger requests are allocated with the real cudaHostAlloc (keeps WriteCombined and the flags
//    the runtime reports) and cached on free up to `keep` blocks (default max(reserve, 8));
//  - `max` caps the blocks in use; beyond it, or when the real call runs out of memory (after the
//    cache was handed back to CUDA), the pool's mode applies: fail-fast returns
//    cudaErrorMemoryAllocation (2), timeout/block wait and retry.
// The real functions are resolved at the first call (dlsym RTLD_NEXT, then a libcudart already
// loaded, RTLD_NOLOAD); with no CUDA runtime in the process the hooks return 3
// (cudaErrorInitializationError). Time in the real calls goes to source_calls / source_ns.
#pragma once

namespace dmashim::cuda {

// CUDA runtime values used by the shim (the C ABI; no CUDA headers).
inline constexpr int kSuccess = 0;
inline constexpr int kErrorInvalidValue = 1;
inline constexpr int kErrorMemoryAllocation = 2;
inline constexpr int kErrorInitialization = 3;
inline constexpr unsigned kHostAllocDefault = 0;
inline constexpr unsigned kHostAllocPortable = 1;
inline constexpr unsigned kHostAllocMapped = 2;
inline constexpr unsigned kHostAllocWriteCombined = 4;

}  // namespace dmashim::cuda
