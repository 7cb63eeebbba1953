// The CUDA test program: pinned host memory through the CUDA runtime's C API, linked against the
// stand-in runtime (tests/cuda/cudart_standin.c). Runs with and without libdmashim.so preloaded;
// prints one line of key=value results.
//   loop ITERS          cudaHostAlloc/cudaFreeHost of 8 mixed sizes (4 flag sets) per iteration
//   hold N SIZE FLAGS [keep]  N allocations held, then freed (not with keep): rcK = each cudaHostAlloc's result
//   register SIZE       cudaHostRegister / GetFlags / Unregister of the program's own buffer
//   foreign             cudaFreeHost / cudaHostGetFlags of a pointer no CUDA call returned
//   forkstorm FORKS     two threads allocate and free small and large blocks while the main
//                       thread forks FORKS times; each child allocates and frees, then exits
//   forkinbuild         a thread makes the process's first CUDA call, which builds the pools and
//                       pins their reserve (slowly, with CUDART_STANDIN_DELAY_US), while the main
//                       thread forks once the first page is being pinned; the child allocates
//                       and frees one block
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/child.h"

extern "C" {
int cudaHostAlloc(void** p, size_t size, unsigned int flags);
int cudaMallocHost(void** p, size_t size);
int cudaFreeHost(void* p);
int cudaHostRegister(void* p, size_t size, unsigned int flags);
int cudaHostUnregister(void* p);
int cudaHostGetFlags(unsigned int* flags, void* p);
unsigned long cudart_standin_count(const char* what);
}

namespace {

uint64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

int Loop(int iters) {
  const size_t sizes[] = {1000, 4096, 20000, 60000, 100000, 300000, size_t{1} << 20, 3u << 20};
  const unsigned flags[] = {0, 1, 2, 4};  // Default, Portable, Mapped, WriteCombined
  const unsigned long before = cudart_standin_count("calls");
  int flags_ok = 1, data_ok = 1, rc_ok = 1;
  uint64_t sum = 0, alloc_us = 0;
  const uint64_t t0 = NowUs();
  for (int it = 0; it < iters; ++it) {
    void* p[8] = {};
    for (int i = 0; i < 8; ++i) {
      const unsigned f = flags[i % 4];
      const uint64_t a = NowUs();
      int rc = i == 4 ? cudaMallocHost(&p[i], sizes[i])
                                : cudaHostAlloc(&p[i], sizes[i], f);
      alloc_us += NowUs() - a;
      if (rc != 0 || p[i] == nullptr) {
        rc_ok = 0;
        continue;
      }
      unsigned got = 99;
      if (cudaHostGetFlags(&got, p[i]) != 0 || got != f) flags_ok = 0;
      memset(p[i], (it * 8 + i) & 0xff, sizes[i]);
    }
    for (int i = 0; i < 8; ++i) {
      if (p[i] == nullptr) continue;
      const unsigned char* b = static_cast<const unsigned char*>(p[i]);
      const unsigned char want = static_cast<unsigned char>((it * 8 + i) & 0xff);
      if (b[0] != want || b[sizes[i] - 1] != want || b[sizes[i] / 2] != want) data_ok = 0;
      sum += b[sizes[i] - 1] + sizes[i];
      if (cudaFreeHost(p[i]) != 0) rc_ok = 0;
    }
  }
  const uint64_t elapsed = NowUs() - t0;
  printf("before=%lu pins=%lu host_alloc=%lu register=%lu free_host=%lu rc_ok=%d flags_ok=%d "
         "data_ok=%d checksum=%llu elapsed_us=%llu alloc_us=%llu\n",
         before, cudart_standin_count("pins"), cudart_standin_count("cudaHostAlloc"),
         cudart_standin_count("cudaHostRegister"), cudart_standin_count("cudaFreeHost"), rc_ok,
         flags_ok, data_ok, static_cast<unsigned long long>(sum),
         static_cast<unsigned long long>(elapsed), static_cast<unsigned long long>(alloc_us));
  return 0;
}

int Hold(int n, size_t size, unsigned f, bool free_them) {
  std::vector<void*> ps;
  std::string line;
  for (int i = 0; i < n; ++i) {
    void* p = nullptr;
    const uint64_t a = NowUs();
    const int rc = cudaHostAlloc(&p, size, f);
    line += " rc" + std::to_string(i) + "=" + std::to_string(rc) + " us" + std::to_string(i) +
            "=" + std::to_string(NowUs() - a);
    if (rc == 0) ps.push_back(p);
  }
  int frees_ok = 1;
  if (free_them) {
    for (void* p : ps) frees_ok &= cudaFreeHost(p) == 0;
  }
  printf("held=%zu frees_ok=%d pins=%lu host_alloc=%lu register=%lu unregister=%lu%s\n",
         ps.size(), frees_ok, cudart_standin_count("pins"), cudart_standin_count("cudaHostAlloc"),
         cudart_standin_count("cudaHostRegister"), cudart_standin_count("cudaHostUnregister"),
         line.c_str());
  return 0;
}

// `held` blocks of `size` bytes (the pool's max), then one more, which waits; another thread
// frees one of the held blocks after `delay_ms`. Prints how long the extra allocation took.
int Handoff(int held, size_t size, int delay_ms) {
  std::vector<void*> ps(static_cast<size_t>(held), nullptr);
  for (void*& p : ps) {
    if (cudaHostAlloc(&p, size, 0) != 0) return 3;
  }
  const uint64_t t0 = NowUs();
  std::thread freer([&] {
    usleep(static_cast<useconds_t>(delay_ms) * 1000);
    cudaFreeHost(ps[0]);
  });
  void* extra = nullptr;
  const int rc = cudaHostAlloc(&extra, size, 0);
  const uint64_t waited = NowUs() - t0;
  freer.join();
  if (rc == 0) cudaFreeHost(extra);
  for (size_t i = 1; i < ps.size(); ++i) cudaFreeHost(ps[i]);
  printf("rc=%d waited_us=%llu\n", rc, static_cast<unsigned long long>(waited));
  return 0;
}

int Register(size_t size) {
  void* buf = aligned_alloc(4096, size);
  const int reg = cudaHostRegister(buf, size, 2 /* Mapped */);
  unsigned f = 99;
  const int gf = cudaHostGetFlags(&f, buf);
  const int unreg = cudaHostUnregister(buf);
  const int unreg2 = cudaHostUnregister(buf);
  printf("register=%d getflags=%d flags=%u unregister=%d unregister_again=%d pins=%lu\n", reg, gf,
         f, unreg, unreg2, cudart_standin_count("pins"));
  free(buf);
  return 0;
}

int Foreign() {
  void* m = malloc(4096);
  unsigned f = 99;
  const int gf = cudaHostGetFlags(&f, m);
  const int fr = cudaFreeHost(m);
  void* p = nullptr;
  cudaHostAlloc(&p, 5000, 0);
  const int fr1 = cudaFreeHost(p);
  const int fr2 = cudaFreeHost(p);  // double free
  const int null_free = cudaFreeHost(nullptr);
  printf("foreign_getflags=%d foreign_free=%d free=%d double_free=%d null_free=%d\n", gf, fr, fr1,
         fr2, null_free);
  free(m);
  return 0;
}

// One round of what the threads and the children do: small blocks (a DmaPool under the shim) and
// one large block (the shim's cache). Returns false when a call failed.
bool SmallAndLarge(int small) {
  std::vector<void*> ps;
  bool ok = true;
  for (int i = 0; i < small + 1; ++i) {
    void* p = nullptr;
    const size_t size = i < small ? 1000 : 100000;
    if (cudaHostAlloc(&p, size, 0) != 0 || p == nullptr) {
      ok = false;
      continue;
    }
    memset(p, 0x5a, size);
    ps.push_back(p);
  }
  for (void* p : ps) ok &= cudaFreeHost(p) == 0;
  return ok;
}

// A child that has not exited after 5 s is counted as hung and killed.
int ForkStorm(int forks) {
  return dmashim::testing::ForkStorm(
      forks, 20,  // by then pages are pinned and large blocks cached: no new pins
      [](const std::atomic<bool>& stop, std::atomic<long>& rounds) {
        while (!stop.load(std::memory_order_relaxed)) {
          SmallAndLarge(100);
          rounds.fetch_add(1, std::memory_order_relaxed);
        }
      },
      [] { return SmallAndLarge(50); });
}

// Prints the pins done when the fork came (it must land inside the build) and how the child
// ended: a child that inherited the build's lock held by the other thread would hang.
int ForkInBuild() {
  std::thread first([] {
    void* p = nullptr;
    if (cudaHostAlloc(&p, 4096, 0) == 0) cudaFreeHost(p);
  });
  // Fork once the build has pinned its first reserve page (each pin takes the stand-in's delay).
  for (int ms = 0; ms < 5000 && cudart_standin_count("cudaHostRegister") == 0; ++ms) usleep(1000);
  const unsigned long pins_at_fork = cudart_standin_count("cudaHostRegister");
  const pid_t pid = fork();
  if (pid == 0) {
    void* p = nullptr;
    _exit(cudaHostAlloc(&p, 4096, 0) == 0 && cudaFreeHost(p) == 0 ? 0 : 1);
  }
  using dmashim::testing::ChildEnd;
  const ChildEnd end = pid < 0 ? ChildEnd::kFailed : dmashim::testing::WaitChildOrKill(pid, 5000);
  first.join();
  printf("pins_at_fork=%lu child=%s\n", pins_at_fork,
         end == ChildEnd::kOk ? "ok" : end == ChildEnd::kHung ? "hung" : "failed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string mode = argv[1];
  if (mode == "loop" && argc == 3) return Loop(atoi(argv[2]));
  if (mode == "hold" && (argc == 5 || argc == 6)) {
    return Hold(atoi(argv[2]), strtoull(argv[3], nullptr, 10),
                static_cast<unsigned>(atoi(argv[4])), argc == 5);
  }
  if (mode == "handoff" && argc == 5) {
    return Handoff(atoi(argv[2]), strtoull(argv[3], nullptr, 10), atoi(argv[4]));
  }
  if (mode == "register" && argc == 3) return Register(strtoull(argv[2], nullptr, 10));
  if (mode == "foreign") return Foreign();
  if (mode == "forkstorm" && argc == 3) return ForkStorm(atoi(argv[2]));
  if (mode == "forkinbuild") return ForkInBuild();
  fprintf(stderr,
          "usage: cuda_loop loop N | hold N SIZE FLAGS [keep] | register SIZE | foreign | "
          "forkstorm FORKS | forkinbuild\n");
  return 2;
}
