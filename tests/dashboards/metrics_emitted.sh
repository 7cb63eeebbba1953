#!/usr/bin/env bash
# Every metric the dashboards, rules and rule tests use is one dmashim-exporter really emits: runs
# the demo workload (rx_ring, a blocking pool and a fail-fast one) and capi_demo (a DMA pool) under
# the shim into a temp run directory, scrapes it once with the real exporter, and compares.
# usage: metrics_emitted.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
. "$src/tests/dashboards/hugepages.sh"
D=$(mktemp -d "${TMPDIR:-/tmp}/dmashim-metrics.XXXXXX")
trap 'restore_hugepages; rm -rf "$D"' EXIT
ensure_free_hugepages 8

export DMASHIM_RUN_DIR=$D/run
"$build/exporter/dmashim" run --config "$src/tests/dashboards/blocking.toml" -- \
  "$build/examples/rx_ring" --seconds 1
"$build/exporter/dmashim" run --config "$src/examples/rx_ring.toml" -- \
  "$build/examples/capi_demo" rx-buffers
"$build/exporter/dmashim-exporter" --once --run-dir "$D/run" > "$D/scrape.txt"
echo "scrape: $(grep -vc '^#' "$D/scrape.txt") samples from $(ls "$D/run" | wc -l) segments"
promtool check metrics < "$D/scrape.txt"
python3 "$src/tests/dashboards/lint.py" metrics "$src" "$D/scrape.txt"
