#include "exporter/stat.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "exporter/summary.h"
#include "exporter/symbolize.h"

namespace dmashim {
namespace {

uint64_t Load(const Counter& c) { return c.load(std::memory_order_relaxed); }
int64_t Load(const Gauge& g) { return g.load(std::memory_order_relaxed); }

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      absl::StrAppendFormat(&out, "\\u%04x", c);  // bytes, not UTF-8: keep the output valid
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

const char* State(const Snapshot& s, const std::string& proc_root) {
  if (s.exited) return "exited";
  return ProcessAlive(s.pid, s.start_time_ticks, proc_root) ? "running" : "killed";
}

// The default record (index 0, "default") counts guarded calls no pool matched: no reserve.
bool IsRealPool(const Snapshot& s, size_t i) {
  return !(i == 0 && std::string(s.pools[i]->name) == "default");
}

struct SiteView {
  std::string pool;
  uint64_t count, wait_ns, failures;
  std::vector<Frame> frames;
};

std::vector<SiteView> Sites(const Snapshot& s, const StatOptions& o) {
  std::vector<const SiteSnapshot*> order;
  for (const SiteSnapshot& site : s.sites) order.push_back(&site);
  std::sort(order.begin(), order.end(), [](const SiteSnapshot* a, const SiteSnapshot* b) {
    if (a->wait_ns != b->wait_ns) return a->wait_ns > b->wait_ns;
    if (a->failures != b->failures) return a->failures > b->failures;
    return a->count > b->count;
  });
  if (order.size() > o.top_sites) order.resize(o.top_sites);
  std::vector<SiteView> out;
  if (order.empty()) return out;
  Symbolizer sym(s.pid, s.start_time_ticks, o.proc_root);
  for (const SiteSnapshot* site : order) {
    SiteView v{s.pools[site->pool_index]->name, site->count, site->wait_ns, site->failures, {}};
    for (uint64_t pc : site->pcs) v.frames.push_back(sym.Lookup(pc));
    out.push_back(std::move(v));
  }
  return out;
}

std::string FramesText(const std::vector<Frame>& frames) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < frames.size() && i < 4; ++i) parts.push_back(frames[i].ToString());
  return parts.empty() ? "(no stack)" : absl::StrJoin(parts, " <- ");
}

std::string Text(const std::vector<Snapshot>& snaps, const StatOptions& o) {
  std::string out = FormatSummary(snaps);
  if (o.sites) {
    for (const Snapshot& s : snaps) {
      std::vector<SiteView> sites = Sites(s, o);
      absl::StrAppendFormat(&out, "call sites of pid %d (%s) that waited or failed%s:\n", s.pid,
                            s.comm, sites.empty() ? ": none" : "");
      if (sites.empty()) continue;
      absl::StrAppendFormat(&out, "  %-14s %7s %9s %8s  %s\n", "pool", "events", "waited_s",
                            "failures", "site (innermost first)");
      for (const SiteView& v : sites) {
        absl::StrAppendFormat(&out, "  %-14s %7d %9.3f %8d  %s\n", v.pool, v.count,
                              static_cast<double>(v.wait_ns) / 1e9, v.failures, FramesText(v.frames));
      }
      if (s.sites_dropped > 0)
        absl::StrAppendFormat(&out, "  (%d events not recorded: call-site table full)\n", s.sites_dropped);
    }
  }
  if (o.advise) {
    out += "suggested reserve = high-water of elements in use + 25% headroom (at least +1):\n";
    for (const Snapshot& s : snaps) {
      for (size_t i = 0; i < s.pools.size(); ++i) {
        if (!IsRealPool(s, i)) continue;
        const PoolStats& p = *s.pools[i];
        const int64_t hw = Load(p.high_water), cur = Load(p.reserve_target);
        const int64_t sug = SuggestReserve(hw);
        const uint64_t waits = Load(p.wait_count);
        const uint64_t fails = Load(p.fail_fast) + Load(p.fail_timeout) + Load(p.fail_interrupted);
        absl::StrAppendFormat(&out, "  pid %d (%s) pool %s: high-water %d, reserve %d, %d waits, %d failures -> reserve = %d%s\n",
                              s.pid, s.comm, p.name, hw, cur, waits, fails, sug,
                              hw == 0 ? " (never used)" : sug == cur ? " (keep)" : "");
      }
    }
  }
  return out;
}

std::string Json(const std::vector<Snapshot>& snaps, const StatOptions& o) {
  std::vector<std::string> procs;
  for (const Snapshot& s : snaps) {
    std::vector<std::string> pools;
    for (size_t i = 0; i < s.pools.size(); ++i) {
      const PoolStats& p = *s.pools[i];
      std::string j = absl::StrFormat(
          "{\"name\":%s,\"alloc\":{\"source\":%d,\"reserve\":%d,\"waited\":%d},"
          "\"failures\":{\"fail_fast\":%d,\"timeout\":%d,\"interrupted\":%d,\"source\":%d},"
          "\"waits\":%d,\"wait_seconds\":%.9f,\"blocked_now\":%d,\"reserve_level\":%d,"
          "\"reserve_target\":%d,\"in_use\":%d,\"high_water\":%d,\"element_bytes\":%d",
          JsonString(p.name), Load(p.alloc_source), Load(p.alloc_reserve), Load(p.alloc_waited),
          Load(p.fail_fast), Load(p.fail_timeout), Load(p.fail_interrupted), Load(p.fail_source),
          Load(p.wait_count), static_cast<double>(Load(p.wait_sum_ns)) / 1e9, Load(p.blocked_now),
          ReserveLevel(p), Load(p.reserve_target), InUse(p), Load(p.high_water),
          p.element_size);
      if (o.advise && IsRealPool(s, i))
        absl::StrAppendFormat(&j, ",\"suggested_reserve\":%d", SuggestReserve(Load(p.high_water)));
      pools.push_back(j + "}");
    }
    std::string proc = absl::StrFormat(
        "{\"pid\":%d,\"comm\":%s,\"exe\":%s,\"state\":\"%s\",\"pools\":[%s]", s.pid,
        JsonString(s.comm), JsonString(s.exe), State(s, o.proc_root), absl::StrJoin(pools, ","));
    if (o.sites) {
      std::vector<std::string> sites;
      for (const SiteView& v : Sites(s, o)) {
        std::vector<std::string> frames;
        for (const Frame& f : v.frames) {
          frames.push_back(absl::StrFormat("{\"pc\":\"0x%x\",\"function\":%s,\"object\":%s,\"text\":%s}",
                                           f.pc, JsonString(f.function), JsonString(f.object),
                                           JsonString(f.ToString())));
        }
        sites.push_back(absl::StrFormat(
            "{\"pool\":%s,\"events\":%d,\"wait_seconds\":%.9f,\"failures\":%d,\"frames\":[%s]}",
            JsonString(v.pool), v.count, static_cast<double>(v.wait_ns) / 1e9, v.failures,
            absl::StrJoin(frames, ",")));
      }
      absl::StrAppendFormat(&proc, ",\"sites\":[%s],\"sites_dropped\":%d", absl::StrJoin(sites, ","),
                            s.sites_dropped);
    }
    procs.push_back(proc + "}");
  }
  return absl::StrCat("{\"processes\":[", absl::StrJoin(procs, ","), "]}\n");
}

}  // namespace

int64_t SuggestReserve(int64_t high_water) {
  if (high_water <= 0) return 0;
  return std::max(high_water + 1, (high_water * 5 + 3) / 4);
}

std::string FormatStat(const std::vector<Snapshot>& snapshots, const StatOptions& options) {
  return options.json ? Json(snapshots, options) : Text(snapshots, options);
}

}  // namespace dmashim
