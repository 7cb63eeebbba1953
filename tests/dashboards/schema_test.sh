#!/usr/bin/env bash
# The dashboards type-check against @grafana/schema (check_schema.mjs), and the check is not
# vacuous: copies with one planted mistake each must fail it.
# usage: schema_test.sh SOURCE_DIR NPM_CACHE_DIR WORK_DIR
set -euo pipefail
src=$1 cache=$2 work=$3
here=$src/tests/dashboards
rm -rf "$work" && mkdir -p "$work/bad"
node "$here/check_schema.mjs" "$cache" "$work/ts" "$src/dashboards/dmashim.json" "$src/dashboards/dmashim-fleet.json"

python3 - "$src/dashboards/dmashim.json" "$work/bad" <<'PY'
import copy, json, sys
d = json.load(open(sys.argv[1]))
ts = next(i for i, p in enumerate(d["panels"]) if p["type"] == "timeseries")
st = next(i for i, p in enumerate(d["panels"]) if p["type"] == "stat")
hm = next(i for i, p in enumerate(d["panels"]) if p["type"] == "heatmap")
mutations = {
    "misspelled_top_level_key": lambda d: d.__setitem__("titel", "x"),
    "missing_schema_version": lambda d: d.pop("schemaVersion"),
    "grid_height_as_string": lambda d: d["panels"][st]["gridPos"].__setitem__("h", "8"),
    "unit_as_number": lambda d: d["panels"][ts]["fieldConfig"]["defaults"].__setitem__("unit", 5),
    "bad_legend_enum": lambda d: d["panels"][ts]["options"]["legend"].__setitem__("displayMode", "lisst"),
    "unknown_stat_option": lambda d: d["panels"][st]["options"].__setitem__("colourMode", "value"),
    "unknown_custom_field": lambda d: d["panels"][ts]["fieldConfig"]["defaults"]["custom"].__setitem__("lineWidht", 1),
    "heatmap_option_type": lambda d: d["panels"][hm]["options"].__setitem__("calculate", "no"),
    "bad_variable_type": lambda d: d["templating"]["list"][1].__setitem__("type", "qurey"),
    "unknown_panel_type": lambda d: d["panels"][ts].__setitem__("type", "graph"),
}
for name, mutate in mutations.items():
    c = copy.deepcopy(d)
    mutate(c)
    json.dump(c, open(f"{sys.argv[2]}/{name}.json", "w"))
PY
# All planted mistakes in one tsc run; each copy must be reported as failing, for its own reason.
rc=0
node "$here/check_schema.mjs" "$cache" "$work/ts-bad" "$work"/bad/*.json > "$work/out.txt" 2>&1 || rc=$?
((rc == 1)) || { echo "the checker accepted dashboards with planted mistakes (rc $rc)"; cat "$work/out.txt"; exit 1; }
fails=0
for f in "$work"/bad/*.json; do
  if grep -qF "$f: FAIL" "$work/out.txt"; then
    echo "caught: $(basename "$f" .json): $(grep -A1 -F "$f: FAIL" "$work/out.txt" | tail -1 | sed 's/^ *dashboard_[0-9]*\.ts([0-9,]*): //' | cut -c1-110)"
  else
    echo "NOT CAUGHT: $(basename "$f" .json)"; fails=$((fails + 1))
  fi
done
((fails == 0))
