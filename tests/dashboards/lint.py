#!/usr/bin/env python3
"""Static checks of dashboards/ (tests/dashboards/CMakeLists.txt runs each subcommand as a test).

  lint.py structure SRC          panel ids unique, datasource references, refIds, grid, variables,
                                 every alert has a firing and a silent promtool case
  lint.py promql SRC WORKDIR     every PromQL expression in the dashboards and rule files parses
                                 (wrapped as recording rules, checked by promtool check rules)
  lint.py metrics SRC SCRAPE     every dmashim_* metric a panel, variable, rule or rule test uses
                                 is in SCRAPE, a live dmashim-exporter --once exposition
"""
import json
import os
import re
import subprocess
import sys

import yaml

DASHBOARDS = ["dmashim.json", "dmashim-fleet.json"]
RULES = ["rules/dmashim-alerts.yml", "rules/dmashim-recording.yml"]
RULE_TESTS = ["rules/tests/alerts_test.yml", "rules/tests/recording_test.yml"]
DS_REF = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's macros and variables, replaced by something PromQL parses.
MACROS = [(r"\$__rate_interval", "1m"), (r"\$__interval", "1m"), (r"\$__range", "1h"),
          (r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "x")]
METRIC = re.compile(r"(?<![\w:])(dmashim_[a-z0-9_]+|up)(?![\w:])")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-z_]+)\)$")


def load_dashboards(src):
    return {name: json.load(open(os.path.join(src, "dashboards", name), encoding="utf-8"))
            for name in DASHBOARDS}


def all_panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(dashboards):
    """(where, expr) for every panel target and every query variable."""
    out = []
    for name, d in dashboards.items():
        for p in all_panels(d):
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"{name} panel {p['id']} '{p.get('title')}' {t['refId']}",
                                t["expr"]))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                m = LABEL_VALUES.match(v["query"])
                # label_values(SELECTOR, label) is Grafana's; its selector is PromQL.
                out.append((f"{name} variable {v['name']}", m.group(1) if m else v["query"]))
    return out


def rule_exprs(src):
    out = []
    for f in RULES:
        doc = yaml.safe_load(open(os.path.join(src, "dashboards", f), encoding="utf-8"))
        for g in doc["groups"]:
            for r in g["rules"]:
                out.append((f"{f} {r.get('alert') or r.get('record')}", r["expr"]))
    return out


def structure(src):
    errors = []
    dashboards = load_dashboards(src)
    for name, d in dashboards.items():
        ids = [p.get("id") for p in all_panels(d)]
        dup = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
        if dup:
            errors.append(f"{name}: duplicate panel ids {dup}")
        if None in ids:
            errors.append(f"{name}: a panel without id")
        names = {v["name"] for v in d["templating"]["list"]}
        if "datasource" not in names:
            errors.append(f"{name}: no datasource variable")
        occupied = {}
        for p in all_panels(d):
            where = f"{name} panel {p.get('id')} '{p.get('title')}'"
            g = p.get("gridPos", {})
            if g.get("x", 0) + g.get("w", 0) > 24:
                errors.append(f"{where}: wider than the grid")
            for dx in range(g.get("w", 0)):
                for dy in range(g.get("h", 0)):
                    cell = (g["x"] + dx, g["y"] + dy)
                    if cell in occupied:
                        errors.append(f"{where}: overlaps panel {occupied[cell]}")
                        break
                    occupied[cell] = p.get("id")
                else:
                    continue
                break
            if p["type"] in ("row", "text"):
                continue
            if p.get("datasource") != DS_REF:
                errors.append(f"{where}: datasource is not ${{datasource}}")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if not refs or len(set(refs)) != len(refs):
                errors.append(f"{where}: missing or duplicate refIds {refs}")
            for t in p.get("targets", []):
                if t.get("datasource") != DS_REF:
                    errors.append(f"{where}: target {t.get('refId')} datasource")
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", json.dumps(d)))
        unknown = {u for u in used if not u.startswith("__")} - names
        if unknown:
            errors.append(f"{name}: undefined variables {sorted(unknown)}")
        repeats = [p for p in d["panels"] if p.get("repeat")]
        for r in repeats:
            if r["repeat"] not in names:
                errors.append(f"{name}: row '{r['title']}' repeats unknown variable {r['repeat']}")

    # Every alert: a promtool case that expects it firing and one that expects it silent.
    alerts = [w.split()[1] for w, _ in rule_exprs(src) if "alerts" in w]
    tests = yaml.safe_load(open(os.path.join(src, "dashboards", RULE_TESTS[0]), encoding="utf-8"))
    fires, silent = set(), set()
    for case in tests["tests"]:
        for a in case.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    for a in alerts:
        if a not in fires:
            errors.append(f"alert {a}: no promtool case where it fires")
        if a not in silent:
            errors.append(f"alert {a}: no promtool case where it stays silent")
    for e in errors:
        print(e)
    print(f"structure: {len(dashboards)} dashboards, {len(alerts)} alerts: "
          f"{'FAIL' if errors else 'OK'}")
    return 1 if errors else 0


def promql(src, workdir):
    exprs = dashboard_exprs(load_dashboards(src)) + rule_exprs(src)
    rules = []
    for i, (where, e) in enumerate(exprs):
        for pat, rep in MACROS:
            e = re.sub(pat, rep, e)
        rules.append({"record": f"check_{i}", "expr": e})
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "promql-check.yml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "promql_check", "rules": rules}]}, f, width=1000)
    r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        for m in re.finditer(r"rule (\d+)", r.stdout + r.stderr):
            where, e = exprs[int(m.group(1)) - 1]
            print(f"  rule {m.group(1)} = {where}: {e}")
        return 1
    print(f"promql: {len(exprs)} expressions parse ({r.stdout.strip().splitlines()[-1].strip()})")
    return 0


def metrics(src, scrape_path):
    scraped = set()
    for line in open(scrape_path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            scraped.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    if not any(m.startswith("dmashim_") for m in scraped):
        print(f"metrics: the scrape {scrape_path} has no dmashim_ metrics")
        return 1
    used = {}
    for where, e in dashboard_exprs(load_dashboards(src)) + rule_exprs(src):
        for m in METRIC.findall(e):
            used.setdefault(m, where)
    for f in RULE_TESTS:
        doc = yaml.safe_load(open(os.path.join(src, "dashboards", f), encoding="utf-8"))
        for case in doc["tests"]:
            for s in case.get("input_series", []):
                m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s["series"]).group(0)
                used.setdefault(m, f"{f} input_series")
    missing = sorted(m for m in used if m != "up" and m not in scraped)
    for m in missing:
        print(f"metrics: {m} (used by {used[m]}) is not emitted by dmashim-exporter")
    unused = sorted(m for m in scraped if m.startswith("dmashim_") and m not in used)
    print(f"metrics: {len(used)} names used, all but {len(missing)} emitted; "
          f"emitted but not used by a panel or rule: {', '.join(unused) or 'none'}")
    return 1 if missing else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "structure":
        return structure(argv[1])
    if len(argv) >= 3 and argv[0] == "promql":
        return promql(argv[1], argv[2])
    if len(argv) >= 3 and argv[0] == "metrics":
        return metrics(argv[1], argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
