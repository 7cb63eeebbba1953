#!/usr/bin/env bash
# The benchmark command (README "Performance"): builds the benchmarks, reserves huge pages, runs
# each figure of DESIGN §8 beside its peer in the same run, and prints one table (bench/table.py).
# Benchmarks print, they do not assert: the machine is shared and noisy. Run as root.
#
# Environment: BUILD_DIR (default build-bench), REPS (repetitions, default 5), HUGEPAGES (256).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${BUILD_DIR:-build-bench}
reps=${REPS:-5}
want_pages=${HUGEPAGES:-256}

if [[ $(id -u) -ne 0 ]]; then
  echo "bench.sh: run as root: reserving huge pages needs it" >&2
  exit 1
fi
bash scripts/install-deps.sh >/dev/null
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDMASHIM_BUILD_TESTS=OFF >/dev/null
ninja -C "$build_dir" -j"${JOBS:-2}" dmashim bench_pools bench_shim bench_dpdk bench_exporter_scrape \
  >/dev/null

nr=/proc/sys/vm/nr_hugepages
old_pages=$(cat "$nr")
trap 'echo "$old_pages" > "$nr"; rm -rf "$run_dir"' EXIT
run_dir=$(mktemp -d)
echo "$want_pages" > "$nr"

out=$build_dir/bench-results
mkdir -p "$out"
common=(--benchmark_repetitions="$reps" --benchmark_format=console --benchmark_out_format=json)
b=$build_dir/bench
shim=$(realpath "$build_dir/shim/libdmashim.so")

"$b/bench_pools" "${common[@]}" --benchmark_out="$out/pools.json" >/dev/null
if [[ -x $b/bench_dpdk ]]; then
  "$b/bench_dpdk" "${common[@]}" --benchmark_out="$out/dpdk.json" >/dev/null
fi
under_shim() {  # CONFIG OUT FILTER
  LD_PRELOAD=$shim DMASHIM_CONFIG=$PWD/bench/configs/$1 DMASHIM_RUN_DIR=$run_dir \
    "$b/bench_shim" "${common[@]}" --benchmark_out="$out/$2" --benchmark_filter="$3" >/dev/null
}
under_shim hit.toml shim-hit.json '.'
under_shim hit-nostats.toml shim-nostats.json 'BM_ShimHugeMapTouch/'
under_shim zero-none.toml shim-zero-none.json 'Sustained|BM_ShimPollingHugeMapTouch|BM_KernelHugeMapTouch'
under_shim eager.toml shim-eager.json 'Sustained'
# Figure 7: the scrape as served (text), one HTTP GET of it, and the MetricFamily path it replaced.
"$b/bench_exporter_scrape" --benchmark_repetitions="$reps" --benchmark_format=console \
  --benchmark_out_format=json --benchmark_out="$out/exporter.json" \
  --benchmark_filter='BM_Scrape(|Http|Families)1000x8' >/dev/null

echo "dmashim benchmarks — $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); repetitions: $reps"
echo
python3 bench/table.py "$out"
