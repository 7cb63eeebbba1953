#!/usr/bin/env bash
# The real-GPU check, run on a machine with an NVIDIA GPU and driver but none of this project's
# Debian packages: uses only build-device/ (made beforehand by tests/device/build.sh). Runs
# cuda_pinned_check without and with libdmashim.so preloaded (a pool with match = { call = "cuda" }),
# prints a table of per-call times and the speed-up, and writes it to $OUT/ when OUT is set.
# ITERS (default 30) sets the loop count. Exit status: non-zero when either run fails its checks.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dev=$root/build-device
iters=${ITERS:-30}
[ -x "$dev/bin/cuda_pinned_check" ] || { echo "run.sh: run tests/device/build.sh first" >&2; exit 2; }
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -m 0700 "$tmp/run"
cat > "$tmp/dmashim.toml" <<'TOML'
[pool.cuda-pinned]
match = { call = "cuda" }
keep  = 64
mode  = "block"
TOML

"$dev/bin/cuda_pinned_check" --iters "$iters" --label plain > "$tmp/plain.txt" 2> "$tmp/plain.err"
rc_plain=$?
DMASHIM_CONFIG=$tmp/dmashim.toml DMASHIM_RUN_DIR=$tmp/run LD_PRELOAD=$dev/lib/libdmashim.so \
  "$dev/bin/cuda_pinned_check" --iters "$iters" --label shim > "$tmp/shim.txt" 2> "$tmp/shim.err"
rc_shim=$?

{
  echo "# cuda_pinned_check: $iters iterations, without and with libdmashim.so ($(date -u +%FT%TZ))"
  grep '^summary' "$tmp/plain.txt" "$tmp/shim.txt" | sed 's/^[^:]*://'
  printf '%10s %5s %14s %14s %9s %13s %13s\n' size flags alloc_us_plain alloc_us_shim speedup \
    free_us_plain free_us_shim
  awk '
    function v(line, key,   m) { return match(line, key "=[^ ]*") ? substr(line, RSTART + length(key) + 1, RLENGTH - length(key) - 1) : "" }
    FNR == NR && /^row/ { k = v($0, "size") "/" v($0, "flags"); pa[k] = v($0, "alloc_us"); pf[k] = v($0, "free_us"); order[++n] = k; next }
    /^row/ { k = v($0, "size") "/" v($0, "flags"); sa[k] = v($0, "alloc_us"); sf[k] = v($0, "free_us") }
    END {
      for (i = 1; i <= n; ++i) {
        k = order[i]; split(k, f, "/")
        printf "%10s %5s %14s %14s %8.1fx %13s %13s\n", f[1], f[2], pa[k], sa[k], (sa[k] > 0 ? pa[k] / sa[k] : 0), pf[k], sf[k]
      }
    }' "$tmp/plain.txt" "$tmp/shim.txt"
  awk '
    function v(line, key) { return match(line, key "=[^ ]*") ? substr(line, RSTART + length(key) + 1, RLENGTH - length(key) - 1) : 0 }
    /^summary/ && /label=plain/ { pa = v($0, "total_alloc_ms"); pf = v($0, "total_free_ms") }
    /^summary/ && /label=shim/ { sa = v($0, "total_alloc_ms"); sf = v($0, "total_free_ms") }
    END { printf "total: alloc %.2f ms -> %.2f ms (%.1fx), free %.2f ms -> %.2f ms\n", pa, sa, (sa > 0 ? pa / sa : 0), pf, sf }
  ' "$tmp/plain.txt" "$tmp/shim.txt"
  echo "exit status: plain $rc_plain, shim $rc_shim"
  [ -s "$tmp/plain.err" ] && { echo "--- plain stderr"; cat "$tmp/plain.err"; }
  [ -s "$tmp/shim.err" ] && { echo "--- shim stderr"; cat "$tmp/shim.err"; }
} | tee "$tmp/table.txt"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$tmp/table.txt" "$OUT/cuda_pinned_check.txt"
  cp "$tmp/plain.txt" "$OUT/cuda_pinned_check.plain.txt"
  cp "$tmp/shim.txt" "$OUT/cuda_pinned_check.shim.txt"
fi
[ "$rc_plain" -eq 0 ] && [ "$rc_shim" -eq 0 ]
