// What the benchmark programs share: the clock, the median, and the pause between figure 1's
// batches of pool hits.
#pragma once

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dmashim::bench {

inline uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The middle value (the upper one of an even count); reorders `v`. 0 when empty.
template <typename T>
double Median(std::vector<T>* v) {
  if (v->empty()) return 0;
  std::nth_element(v->begin(), v->begin() + v->size() / 2, v->end());
  return static_cast<double>((*v)[v->size() / 2]);
}

// Between two batches of `batch` pool hits (not timed): the maintenance thread zeroes the returned
// elements meanwhile — ≈ 190 µs per element here (they come back cold, from DRAM), so 400 µs each
// leaves the pool fully zeroed for the next batch. `poll`: the thread waits on the CPU, as a polling
// data plane (a DPDK lcore) does, instead of sleeping; while it sleeps, the maintenance thread may
// zero the batch on its core, and the next batch's first map and unmap find their code and data
// gone from the caches.
inline void AwaitZeroing(int batch, bool poll) {
  if (poll) {
    const uint64_t until = NowNs() + static_cast<uint64_t>(batch) * 400'000;
    while (NowNs() < until) {
    }
  } else {
    usleep(static_cast<useconds_t>(batch) * 400);
  }
}

}  // namespace dmashim::bench
