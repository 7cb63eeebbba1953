#!/usr/bin/env python3
"""bench/table.py on Google Benchmark JSON written here: figure 1's rows and its limit rows are
computed from the repetitions as documented (per-hit figures = per-batch medians / 32, the limit's
difference against the polled batches not zeroed taken repetition by repetition, the estimate =
zero = "none" row + that difference, for polled batches only), and
figure 6's bare row comes from the crossover benchmark, not from the two separate ones."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TABLE = Path(__file__).resolve().parents[2] / "bench" / "table.py"


def write(directory, name, runs):
    """runs: {run_name: [median_ns per repetition]}"""
    benchmarks = [{"name": n, "run_name": n, "run_type": "iteration", "real_time": t,
                   "time_unit": "ns", "median_ns": t}
                  for n, times in runs.items() for t in times]
    (Path(directory) / name).write_text(json.dumps({"benchmarks": benchmarks}))


def rows(output):
    return {line.split(" | ")[0].strip(): [c.strip() for c in line.split(" | ")[1:]]
            for line in output.splitlines() if " | " in line}


def main():
    with tempfile.TemporaryDirectory() as d:
        write(d, "shim-hit.json", {
            "BM_KernelHugeMapTouch": [63000.0, 66000.0, 64000.0],
            "BM_ShimPollingHugeMapTouch/iterations:200": [2560.0, 2624.0, 2592.0],  # 80, 82, 81 ns
            "BM_HandoffLimit/0/1/iterations:200": [256.0, 288.0, 272.0],  # 8, 9, 8.5 ns
            "BM_HandoffLimit/1/1/iterations:200": [704.0, 736.0, 1024.0],  # 22, 23, 32 ns
            "BM_HandoffLimit/0/0/iterations:200": [640.0, 2880.0, 544.0],  # 20, 90, 17 ns
            "BM_HandoffLimit/1/0/iterations:200": [1664.0, 1920.0, 1760.0],  # 52, 60, 55 ns
        })
        write(d, "shim-zero-none.json", {
            "BM_KernelHugeMapTouch": [64000.0],
            "BM_ShimPollingHugeMapTouch/iterations:200": [1472.0, 1504.0, 1488.0],  # 46, 47, 46.5 ns
        })
        bare = [{"name": "BM_BareHitTelemetry/iterations:400/real_time",
                 "run_name": "BM_BareHitTelemetry/iterations:400/real_time", "run_type": "iteration",
                 "real_time": 66000.0, "time_unit": "ns", "on_ns": on, "off_ns": off, "ratio": r}
                for on, off, r in ((16.2, 15.6, 1.03), (16.4, 15.7, 1.06), (16.3, 15.8, 1.04))]
        separate = [{"name": n, "run_name": n, "run_type": "iteration", "real_time": t,
                     "time_unit": "ns"}
                    for n, times in (("BM_PoolHitStatsOn", (22.0, 24.0, 21.0)),
                                     ("BM_PoolHitStatsOff", (20.0, 20.0, 20.0)))
                    for t in times]
        (Path(d) / "pools.json").write_text(json.dumps({"benchmarks": bare + separate}))
        out = subprocess.run([sys.executable, str(TABLE), d], check=True, capture_output=True,
                             text=True).stdout
    r = rows(out)
    failures = []

    def expect(label, want):
        got = r.get(label)
        if got is None:
            failures.append(f"no row {label!r} in:\n{out}")
        elif got[:len(want)] != want:
            failures.append(f"row {label!r}: {got[:len(want)]} != {want}")

    expect("same, median, the thread polling between batches instead of sleeping",
           ["81.0 ns", "64.00 µs", "790.1x faster", ">= 1000x", "NO"])
    # Differences per repetition: (704-256)/32 = 14, (736-288)/32 = 14, (1024-272)/32 = 23.5.
    expect("(limit) same batches, no pool code: elements zeroed on the other core vs not",
           ["23.0 ns", "8.5 ns", "+14.0 ns per hit", "", "-"])
    # 46.5 ns + 14.0 ns = 60.5 ns against the kernel's 64 µs.
    expect("(limit) zero = \"none\" row + that, vs the kernel: the best with zeroing",
           ["60.5 ns", "64.00 µs", "1,057.9x faster", "", "-"])
    # After a sleep: (1664-256)/32 = 44, (1920-288)/32 = 51, (1760-272)/32 = 46.5 — against the
    # polled batches not zeroed, not the sleeping ones (the no-pool rows are there only as limits).
    expect("(limit) same, sleeping between batches: zeroed, vs polling and not zeroed",
           ["55.0 ns", "8.5 ns", "+46.5 ns per hit", "", "-"])
    # No estimate after a sleep: the sum is no bound there.
    if any("best after a sleep" in label for label in r):
        failures.append(f"an estimate after a sleep is printed:\n{out}")
    # Figure 6's bare row: the median of BM_BareHitTelemetry's own block ratios against 1.05; the
    # two separate benchmarks only beside it, without a target.
    expect("Mempool Alloc+Free alone (no touch, no zeroing), stats on vs off",
           ["16.3 ns", "15.7 ns", "1.040x", "<= 1.05x", "yes"])
    expect("same, as two separate benchmarks (between-pool and between-moment noise)",
           ["22.0 ns", "20.0 ns", "1.100x", "", "-"])
    if failures:
        print("\n".join(failures))
        return 1
    print("table.py: figure 1, its limit rows and figure 6's bare row as documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
