// `dmashim stat [--sites] [--advise] [--json]`: what every process under the shim is doing, from
// its stats segment — the pool table, the call sites that waited or failed (symbolized from the
// process's maps and ELF symbol tables), and suggested reserves from observed high-water marks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "exporter/segment_reader.h"

namespace dmashim {

struct StatOptions {
  bool sites = false;
  bool advise = false;
  bool json = false;
  size_t top_sites = 10;  // per process
  std::string proc_root = "/proc";
};

// The suggested reserve for a pool whose elements in use peaked at `high_water`: the peak plus
// 25 % headroom, at least one element more; 0 for a pool never used.
int64_t SuggestReserve(int64_t high_water);

std::string FormatStat(const std::vector<Snapshot>& snapshots, const StatOptions& options);

}  // namespace dmashim
