#!/usr/bin/env bash
# THE main job (README "Quick start"): on a fresh Debian 12 machine, as root, installs the
# dependencies, builds, reserves huge pages, and runs the bundled RX-ring workload under the shim
# while another process takes every free huge page for a moment — first without the shim (to show
# what the program meets on its own), then under `dmashim run --summary`, which prints what each
# pool did. Exits with the workload's status under the shim (0: no RX allocation failed).
#
# Environment: BUILD_DIR (default build), JOBS (default 2), HUGEPAGES (default 128).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${BUILD_DIR:-build}
want_pages=${HUGEPAGES:-128}

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (sudo bash scripts/demo.sh): installing packages and reserving huge pages need it" >&2
  exit 1
fi

bash scripts/install-deps.sh >/dev/null
cmake -S . -B "$build_dir" -G Ninja >/dev/null  # builds only what the demo needs, below
ninja -C "$build_dir" -j"${JOBS:-2}" dmashim dmashim-cli dmashim-exporter rx_ring hugepage_hog readahead >/dev/null

nr=/proc/sys/vm/nr_hugepages
old_pages=$(cat "$nr")
run_dir=$(mktemp -d)  # this run's stats segments, apart from anything else on the machine
trap 'echo "$old_pages" > "$nr"; rm -rf "$run_dir"' EXIT
echo "$want_pages" > "$nr"
echo "demo: node has $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages) free 2 MiB huge pages"

bin=$build_dir/examples
echo
echo "== 1. rx_ring without the shim (a hog takes every free huge page after 0.5 s for 1.5 s)"
"$bin/rx_ring" --hog "$bin/hugepage_hog" || true
echo
echo "== 2. the same under dmashim (examples/rx_ring.toml: rx-buffers reserve 8, block; readahead fail-fast)"
set +e
DMASHIM_RUN_DIR=$run_dir "$build_dir/exporter/dmashim" run --config examples/rx_ring.toml --summary -- \
  "$bin/rx_ring" --hog "$bin/hugepage_hog"
rc=$?
set -e
echo
echo "== 3. what Prometheus scrapes from that run (dmashim-exporter --once over its stats segment)"
"$build_dir/exporter/dmashim-exporter" --once --run-dir "$run_dir" |
  grep -E '^dmashim_(allocations_total|failures_total\{[^}]*reason="fail_fast"|reserve_elements|high_water_elements)' |
  grep -v 'pool="default"' || true
echo
if ((rc == 0)); then
  echo "demo: under the shim no RX allocation failed; read-ahead failures are counted in the summary above"
else
  echo "demo: rx_ring exited with $rc under the shim" >&2
fi
exit $rc
