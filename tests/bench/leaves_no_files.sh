#!/usr/bin/env bash
# bench_exporter_scrape builds 1,000 stand-in segments and /proc entries (59 MB) for figure 7: it
# makes them under $TMPDIR and removes them when its benchmarks are done. Before, every run of
# scripts/bench.sh left its 59 MB in /tmp.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
before=$(ls -d /tmp/dmashim-bench-* 2>/dev/null | sort || true)

out=$(TMPDIR=$tmp "$bin" --benchmark_filter='BM_Scrape1000x8/' 2>&1)
echo "$out"
grep -q 'BM_Scrape1000x8/.*samples=333' <<<"$out" || { echo "FAIL: the scrape benchmark did not run"; exit 1; }

left=$(ls -A "$tmp")
[[ -z $left ]] || { echo "FAIL: left in \$TMPDIR: $left"; exit 1; }
after=$(ls -d /tmp/dmashim-bench-* 2>/dev/null | sort || true)
new=$(comm -13 <(echo "$before") <(echo "$after"))
[[ -z $new ]] || { echo "FAIL: left in /tmp: $new"; exit 1; }
echo "PASS: nothing left behind"
