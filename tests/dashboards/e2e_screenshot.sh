#!/usr/bin/env bash
# End-to-end: the real dmashim-exporter (HTTP, loopback) + a real Prometheus (loopback, temp dir,
# 1 s scrape, the project's rule files loaded) + the demo workload under the shim, with a pool
# small enough that RX threads really block. Asserts Prometheus returns the blocking-time series
# (rate and p99 of dmashim_wait_seconds, non-zero), that the alert rules loaded, then has headless
# Chromium render Prometheus's classic graph of blocking time: the DOM must show the series, and
# the PNG (kept in the build tree as an artifact) must be a real, non-trivial image.
#
# usage: e2e_screenshot.sh SOURCE_DIR BUILD_DIR PNG_OUT
set -euo pipefail
src=$1 build=$2 png=$3
here=$src/tests/dashboards
. "$here/hugepages.sh"

for tool in prometheus promtool chromium curl python3; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool not installed (scripts/install-deps.sh)"; exit 1; }
done

D=$(mktemp -d "${TMPDIR:-/tmp}/dmashim-e2e.XXXXXX")
mkdir -p "$D/run" "$D/prom" "$(dirname "$png")"
rm -f "$png"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((rc != 0)); then
    echo "--- prometheus log"; tail -n 20 "$D/prom.log" 2>/dev/null || true
    echo "--- exporter log"; tail -n 20 "$D/exporter.log" 2>/dev/null || true
    echo "--- workload log"; tail -n 20 "$D/workload.log" 2>/dev/null || true
  fi
  restore_hugepages
  rm -rf "$D"
  exit $rc
}
trap cleanup EXIT

ensure_free_hugepages 8

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
EP=$(free_port)
PP=$(free_port)
while [[ $PP == "$EP" ]]; do PP=$(free_port); done

# Poll CMD every 0.1 s until it succeeds or SECONDS_MAX pass; never a fixed sleep.
poll() {
  local max=$1; shift
  local deadline=$(( $(date +%s%N) + max * 1000000000 ))
  until "$@"; do
    if (( $(date +%s%N) > deadline )); then return 1; fi
    sleep 0.1
  done
}

"$build/exporter/dmashim-exporter" --listen "127.0.0.1:$EP" --run-dir "$D/run" > "$D/exporter.log" 2>&1 &
pids+=($!)
poll 10 curl -sf -o /dev/null "http://127.0.0.1:$EP/metrics" || { echo "e2e: exporter did not answer"; exit 1; }

cat > "$D/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files:
  - $src/dashboards/rules/dmashim-alerts.yml
  - $src/dashboards/rules/dmashim-recording.yml
scrape_configs:
  - job_name: dmashim
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs: [{targets: ['127.0.0.1:$EP']}]
EOF
promtool check config "$D/prometheus.yml" > /dev/null
prometheus --config.file="$D/prometheus.yml" --storage.tsdb.path="$D/prom" \
  --web.listen-address="127.0.0.1:$PP" --storage.tsdb.retention.time=1h --log.level=warn \
  > "$D/prom.log" 2>&1 &
pids+=($!)
poll 15 curl -sf -o /dev/null "http://127.0.0.1:$PP/-/ready" || { echo "e2e: prometheus not ready"; exit 1; }

# The workload: 4 RX threads on a pool of 2 elements (tests/dashboards/blocking.toml).
DMASHIM_RUN_DIR="$D/run" "$build/exporter/dmashim" run --config "$here/blocking.toml" -- \
  "$build/examples/rx_ring" --seconds 12 > "$D/workload.log" 2>&1 &
wl=$!
pids+=($wl)

api="http://127.0.0.1:$PP/api/v1"
rate_q='sum by (pool) (rate(dmashim_wait_seconds_count{job="dmashim",pool="rx-buffers"}[5s]))'
p99_q='histogram_quantile(0.99, sum by (pool, le) (rate(dmashim_wait_seconds_bucket{job="dmashim",pool="rx-buffers"}[5s])))'
query() {  # prints the first sample's value of an instant query, or nothing
  curl -sf -G "$api/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
positive() { local v; v=$(query "$1"); [[ -n $v ]] && python3 -c "import sys; sys.exit(0 if float('$v') > 0 else 1)"; }
# Prometheus's first scrape comes ~6 s after start (its discovery throttle); then a 5 s rate needs
# two samples. Up to 20 s in all on a busy machine.
poll 20 positive "$rate_q" || { echo "e2e: no blocking-time rate in Prometheus: '$(query "$rate_q")'"; exit 1; }
echo "e2e: rate(dmashim_wait_seconds_count) = $(query "$rate_q") waits/s"
poll 5 positive "$p99_q" || { echo "e2e: no p99 blocking time"; exit 1; }
echo "e2e: p99 blocking time = $(query "$p99_q") s"

# A few more points so the graph has a line, not a dot: wait for 4 samples of the rate.
points() {
  local now; now=$(date +%s)
  curl -sf -G "$api/query_range" --data-urlencode "query=$rate_q" --data-urlencode "start=$((now - 60))" \
    --data-urlencode "end=$now" --data-urlencode step=1 |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; sys.exit(0 if r and len(r[0]["values"]) >= 4 else 1)'
}
poll 10 points || { echo "e2e: fewer than 4 points of the rate"; exit 1; }

# The rule files are loaded by the real server, and the alert group (1 s evaluation) evaluates
# without errors against the live series.
rules_ok() {
  curl -sf "$api/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = {r["name"]: r for g in groups for r in g["rules"]}
need = ["DmashimReserveExhausted", "DmashimWaitBeyondWatchdog", "DmashimExporterDown",
        "instance_comm_pool:dmashim_wait_seconds:p99_5m"]
missing = [n for n in need if n not in rules]
alerts = [r for r in rules.values() if r["type"] == "alerting"]
bad = [r["name"] + ": " + r.get("lastError", "") for r in alerts if r.get("health") != "ok"]
sys.exit(0 if not missing and not bad and len(alerts) >= 8 else 1)'
}
poll 10 rules_ok || { echo "e2e: rule files not loaded or alert rules unhealthy"; curl -s "$api/rules" | head -c 2000; exit 1; }

enc() { python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
url="http://127.0.0.1:$PP/classic/graph?g0.expr=$(enc "$p99_q")&g0.tab=0&g0.range_input=30s"
url+="&g1.expr=$(enc "$rate_q")&g1.tab=0&g1.range_input=30s"
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$D/chromium" --window-size=1280,1500 --virtual-time-budget=5000)

# The rendered DOM: both graphs drew the rx-buffers series (Rickshaw legend) with an SVG path.
timeout 60 "${chrome[@]}" --dump-dom "$url" > "$D/dom.html" 2> "$D/chromium.log" || {
  echo "e2e: chromium --dump-dom failed"; tail -5 "$D/chromium.log"; exit 1; }
legends=$(grep -o 'pool="rx-buffers"' "$D/dom.html" | wc -l)
paths=$(grep -o '<path[^>]*class="path"' "$D/dom.html" | wc -l)
echo "e2e: rendered DOM: $legends legend entries for rx-buffers, $paths graph paths"
((legends >= 2)) || { echo "e2e: the graphs do not show the rx-buffers series"; exit 1; }
((paths >= 2)) || { echo "e2e: no graph lines drawn"; exit 1; }

timeout 60 "${chrome[@]}" --screenshot="$png" "$url" 2>> "$D/chromium.log" > /dev/null || {
  echo "e2e: chromium --screenshot failed"; tail -5 "$D/chromium.log"; exit 1; }
python3 - "$png" <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert (w, h) == (1280, 1500), f"unexpected size {w}x{h}"
assert len(data) > 30000, f"only {len(data)} bytes: a blank page?"
# Count distinct colours in the decoded image (blank or error pages have a handful).
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
raw = zlib.decompress(idat)
colours = len(set(raw[i:i + 3] for i in range(1, min(len(raw), 4_000_000), 97)))
assert colours > 50, f"only {colours} colours sampled: nothing drawn?"
print(f"e2e: screenshot {sys.argv[1]}: {w}x{h}, {len(data)} bytes, {colours} sampled colours")
EOF

# The workload ran to its end with no RX failure.
wait "$wl" && wl_rc=0 || wl_rc=$?
cat "$D/workload.log"
((wl_rc == 0)) || { echo "e2e: rx_ring exited with $wl_rc"; exit 1; }
echo "e2e: OK; screenshot kept at $png"
