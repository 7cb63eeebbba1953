// Real-GPU check for the shim's CUDA pinned-memory cache (issue 8). Plain C++ and the CUDA runtime
// API, compiled with nvcc against the SHARED runtime (-cudart shared: a statically linked runtime
// binds the program's calls inside the executable, where no preload can reach them).
//
// cudaHostAlloc / cudaFreeHost in a loop of mixed sizes and flag sets, timing every call; in the
// first and last iteration every block is checked: cudaHostGetFlags has the requested flags,
// cudaPointerGetAttributes says pinned host memory (not "unregistered" pageable memory), and a
// cudaMemcpyAsync to device memory and back returns the same bytes. Prints one "row" line per
// (size, flags) and one "summary" line of key=value pairs; tests/device/run.sh runs it without and
// with the shim and joins the two.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

#define CHECK(call)                                                                  \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

struct Case {
  size_t size;
  unsigned flags;
  uint64_t alloc_ns = 0, free_ns = 0, max_alloc_ns = 0;
  int calls = 0;
};

// Checks one block: flags, pinned, and a round trip through device memory.
bool Verify(void* p, const Case& c, void* dev, cudaStream_t s, int seed, std::string* why) {
  unsigned got = 0;
  // Mapped and WriteCombined must be there as asked; Portable is not reported by the runtime on
  // unified-addressing systems (every allocation is portable there), with or without the shim.
  const unsigned must = c.flags & (cudaHostAllocMapped | cudaHostAllocWriteCombined);
  if (cudaHostGetFlags(&got, p) != cudaSuccess || (got & must) != must) {
    *why = "cudaHostGetFlags " + std::to_string(got) + " for " + std::to_string(c.flags);
    return false;
  }
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess || attr.type != cudaMemoryTypeHost) {
    *why = "cudaPointerGetAttributes: not pinned host memory (type " +
           std::to_string(static_cast<int>(attr.type)) + ")";
    return false;
  }
  unsigned char* h = static_cast<unsigned char*>(p);
  for (size_t i = 0; i < c.size; ++i) h[i] = static_cast<unsigned char>(i * 7 + seed);
  CHECK(cudaMemcpyAsync(dev, p, c.size, cudaMemcpyHostToDevice, s));
  CHECK(cudaStreamSynchronize(s));
  memset(p, 0, c.size);
  CHECK(cudaMemcpyAsync(p, dev, c.size, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamSynchronize(s));
  for (size_t i = 0; i < c.size; ++i) {
    if (h[i] != static_cast<unsigned char>(i * 7 + seed)) {
      *why = "byte " + std::to_string(i) + " differs after the device round trip";
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 30;
  const char* label = "run";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
    if (strcmp(argv[i], "--label") == 0) label = argv[i + 1];
  }
  // Which library answers cudaHostAlloc: the shim when it is preloaded.
  Dl_info info{};
  cudaError_t (*host_alloc)(void**, size_t, unsigned int) = &cudaHostAlloc;  // the C function
  dladdr(reinterpret_cast<void*>(host_alloc), &info);
  const char* answered_by = info.dli_fname ? strrchr(info.dli_fname, '/') : nullptr;
  answered_by = answered_by ? answered_by + 1 : (info.dli_fname ? info.dli_fname : "?");

  CHECK(cudaFree(nullptr));  // create the context now: its cost is not a pinning cost
  int device = 0;
  cudaDeviceProp prop{};
  CHECK(cudaGetDevice(&device));
  CHECK(cudaGetDeviceProperties(&prop, device));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));

  const size_t sizes[] = {1000, 4096, 20000, 60000, 100000, 300000, size_t{1} << 20, 3u << 20,
                          size_t{16} << 20};
  const unsigned flag_sets[] = {cudaHostAllocDefault, cudaHostAllocPortable, cudaHostAllocMapped,
                                cudaHostAllocWriteCombined};
  std::vector<Case> cases;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
    cases.push_back(Case{sizes[i], flag_sets[i % 4]});
  }
  void* dev = nullptr;
  CHECK(cudaMalloc(&dev, size_t{16} << 20));

  bool ok = true;
  std::string why;
  int verified = 0;
  uint64_t total_alloc = 0, total_free = 0;
  std::vector<void*> ptrs(cases.size());
  for (int it = 0; it < iters; ++it) {
    for (size_t k = 0; k < cases.size(); ++k) {
      Case& c = cases[k];
      const uint64_t t0 = NowNs();
      CHECK(cudaHostAlloc(&ptrs[k], c.size, c.flags));
      const uint64_t dt = NowNs() - t0;
      c.alloc_ns += dt;
      c.max_alloc_ns = dt > c.max_alloc_ns ? dt : c.max_alloc_ns;
      total_alloc += dt;
      ++c.calls;
      if ((it == 0 || it == iters - 1) && ok) {
        ok = Verify(ptrs[k], c, dev, stream, it + static_cast<int>(k), &why);
        if (ok) ++verified;
      }
    }
    for (size_t k = 0; k < cases.size(); ++k) {
      const uint64_t t0 = NowNs();
      CHECK(cudaFreeHost(ptrs[k]));
      const uint64_t dt = NowNs() - t0;
      cases[k].free_ns += dt;
      total_free += dt;
    }
  }
  for (const Case& c : cases) {
    printf("row size=%zu flags=%u alloc_us=%.1f max_alloc_us=%.1f free_us=%.1f\n", c.size, c.flags,
           c.alloc_ns / 1e3 / c.calls, c.max_alloc_ns / 1e3, c.free_ns / 1e3 / c.calls);
  }
  printf("summary label=%s gpu=\"%s\" answered_by=%s iters=%d calls=%d total_alloc_ms=%.2f "
         "total_free_ms=%.2f verified=%d pinned_ok=%d%s%s\n",
         label, prop.name, answered_by, iters, iters * static_cast<int>(cases.size()),
         total_alloc / 1e6, total_free / 1e6, verified, ok ? 1 : 0, ok ? "" : " why=",
         ok ? "" : why.c_str());
  cudaFree(dev);
  cudaStreamDestroy(stream);
  return ok ? 0 : 1;
}
