// Figure 4's peer: DPDK's rte_mempool_get/put of 2 KiB objects with its per-lcore cache, EAL
// started with --no-pci --in-memory on huge pages. Google Benchmark threads register with EAL
// (rte_thread_register) so each has an lcore id and therefore a cache.
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>

#include <cstdio>
#include <cstdlib>

#include "benchmark/benchmark.h"

namespace {

rte_mempool* g_pool = nullptr;

void BM_DpdkMempoolGetPut(benchmark::State& state) {
  if (rte_lcore_id() == LCORE_ID_ANY && rte_thread_register() != 0) {
    state.SkipWithError("rte_thread_register failed");
    return;
  }
  for (auto _ : state) {
    void* obj = nullptr;
    if (rte_mempool_get(g_pool, &obj) != 0) abort();
    benchmark::DoNotOptimize(obj);
    rte_mempool_put(g_pool, obj);
  }
}
BENCHMARK(BM_DpdkMempoolGetPut)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  const char* eal_args[] = {"dpdk_bench", "--no-pci", "--in-memory", "--no-telemetry",
                            "--log-level=lib.eal:error", "-l", "0", "-m", "64"};
  if (rte_eal_init(static_cast<int>(std::size(eal_args)), const_cast<char**>(eal_args)) < 0) {
    fprintf(stderr, "dpdk_bench: rte_eal_init failed: %s (are huge pages reserved?)\n",
            rte_strerror(rte_errno));
    return 1;
  }
  g_pool = rte_mempool_create("bench", 8191, 2048, 256, 0, nullptr, nullptr, nullptr, nullptr,
                              SOCKET_ID_ANY, 0);
  if (g_pool == nullptr) {
    fprintf(stderr, "dpdk_bench: rte_mempool_create failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  rte_mempool_free(g_pool);
  rte_eal_cleanup();
  return 0;
}
