#!/usr/bin/env python3
"""The README's metrics table, from the exporter's own source (exporter/collector.cc).

    metrics_table.py print   # prints the Markdown rows
    metrics_table.py check   # fails when README.md's table differs from what the exporter emits
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TYPES = {"C": "counter", "G": "gauge", "MetricType": "histogram", "H": "histogram"}


def metrics():
    src = (ROOT / "exporter" / "collector.cc").read_text()
    pattern = re.compile(r'"(dmashim_[a-z_]+)"\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+),\s*([\w:]+)')
    rows = {}
    for name, help_parts, kind in pattern.findall(src):
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', help_parts)).replace("\\\"", '"')
        kind = kind.split("::")[-1]
        kind = {"kCounter": "counter", "kGauge": "gauge", "kHistogram": "histogram"}.get(
            kind, TYPES.get(kind, kind.lower()))
        rows[name] = (kind, text)
    return rows


def table():
    return "\n".join(f"| `{n}` | {k} | {t} |" for n, (k, t) in sorted(metrics().items()))


def main():
    if sys.argv[1:] == ["print"]:
        print(table())
        return 0
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- metrics:begin -->\n.*?\n\| --- \| --- \| --- \|\n(.*?)\n<!-- metrics:end -->",
                  readme, re.S)
    if not m:
        print("README.md has no metrics table between the markers")
        return 1
    if m.group(1).strip() != table():
        print("README.md's metrics table is out of date; regenerate it with:\n"
              "  python3 tests/readme/metrics_table.py print")
        return 1
    print(f"README.md lists all {len(metrics())} metrics the exporter emits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
