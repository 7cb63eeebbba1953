#!/usr/bin/env python3
"""Generates dmashim's Grafana dashboards (dashboards/dmashim.json, dashboards/dmashim-fleet.json).

The JSON files are committed; this script keeps them consistent (ids, grid positions, selectors,
datasource references). After editing it, run

    python3 dashboards/generate.py            # rewrites the JSON next to this script
    python3 dashboards/generate.py --check    # exits 1 if the committed JSON is out of date (a test)

Every query uses only metrics dmashim-exporter emits (tests/dashboards checks that against a live
scrape) and works without the recording rules loaded.
"""
import json
import os
import sys

SCHEMA_VERSION = 42  # @grafana/schema 13.2 (tests/dashboards/package.json)
DS = {"type": "prometheus", "uid": "${datasource}"}

# The selector every per-process query carries; in the repeated pool row $pool is one pool.
SEL = 'instance=~"$instance", comm=~"$comm", pool=~"$pool"'
PROC_SEL = 'instance=~"$instance", comm=~"$comm"'
NODE_SEL = 'instance=~"$instance"'
FLEET_SEL = 'job=~"$job"'
RATE = "$__rate_interval"


class Ids:
    def __init__(self):
        self.next = 1

    def __call__(self):
        self.next += 1
        return self.next - 1


def target(expr, legend="", ref="A", **extra):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "range": True,
         "refId": ref}
    t.update(extra)
    return t


def targets(*pairs):
    return [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(pairs)]


def thresholds(*steps):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in (((None, steps[0]),) + steps[1:])]}


def timeseries(ids, title, desc, tgts, unit="short", pos=None, stack=False, overrides=None,
               minimum=None):
    custom = {
        "drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 1, "fillOpacity": 10,
        "showPoints": "never", "spanNulls": False, "axisPlacement": "auto",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "id": ids(), "type": "timeseries", "title": title, "description": desc, "datasource": DS,
        "gridPos": pos, "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                       "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(ids, title, desc, tgts, unit="short", pos=None, steps=("green",), reduce="lastNotNull"):
    return {
        "id": ids(), "type": "stat", "title": title, "description": desc, "datasource": DS,
        "gridPos": pos, "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, "color": {"mode": "thresholds"},
                                     "thresholds": thresholds(*steps)},
                        "overrides": []},
        "options": {
            "reduceOptions": {"calcs": [reduce], "fields": "", "values": False},
            "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
            "orientation": "auto",
        },
    }


def heatmap(ids, title, desc, expr, pos):
    return {
        "id": ids(), "type": "heatmap", "title": title, "description": desc, "datasource": DS,
        "gridPos": pos,
        "targets": [target(expr, "{{le}}", "A", format="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False,
                                                             "viz": False}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": "s", "axisPlacement": "left"},
            "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                      "exponent": 0.5, "fill": "dark-orange", "steps": 64, "reverse": False},
            "cellGap": 1,
            "rowsFrame": {"layout": "auto"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def table(ids, title, desc, tgts, pos):
    return {
        "id": ids(), "type": "table", "title": title, "description": desc, "datasource": DS,
        "gridPos": pos, "targets": tgts,
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "organize",
             "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}},
        ],
    }


def text(ids, title, content, pos):
    return {"id": ids(), "type": "text", "title": title, "gridPos": pos,
            "options": {"mode": "markdown", "content": content}}


def row(ids, title, y, repeat=None):
    r = {"id": ids(), "type": "row", "title": title, "collapsed": False, "panels": [],
         "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
    if repeat:
        r["repeat"] = repeat
    return r


def grid(x, y, w=8, h=8):
    return {"h": h, "w": w, "x": x, "y": y}


def query_var(name, label, query, include_all=True):
    v = {
        "name": name, "label": label, "type": "query", "datasource": DS, "query": query,
        "refresh": 2, "includeAll": include_all, "multi": include_all, "allValue": ".*",
        "sort": 1, "hide": 0, "options": [], "regex": "", "skipUrlSync": False,
    }
    if include_all:
        v["current"] = {"text": "All", "value": "$__all"}
    return v


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "refresh": 1, "hide": 0, "includeAll": False, "multi": False,
            "regex": "", "options": [], "skipUrlSync": False}


def dashboard(uid, title, desc, variables, panels, links):
    return {
        "uid": uid, "title": title, "description": desc, "tags": ["dmashim"],
        "editable": True, "graphTooltip": 1, "timezone": "browser", "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "fiscalYearStartMonth": 0,
        "liveNow": False, "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": variables},
        "links": links, "panels": panels,
    }


def link(title, uid_tags):
    return {"title": title, "type": "dashboards", "tags": uid_tags, "asDropdown": False,
            "icon": "dashboard", "includeVars": False, "keepTime": True, "targetBlank": False,
            "tooltip": ""}


def main_dashboard():
    ids = Ids()
    p = []
    # Overview: the node and the processes, not repeated.
    p.append(row(ids, "Node and processes", 0))
    y = 1
    p.append(stat(ids, "Processes under the shim",
                  "Live processes whose stats segment the exporter reads (dmashim_process_alive).",
                  targets((f"sum(dmashim_process_alive{{{PROC_SEL}}})", "alive")),
                  pos=grid(0, y, 4, 4)))
    p.append(stat(ids, "Threads blocked now",
                  "Threads waiting in a pool right now, all pools (dmashim_blocked_threads).",
                  targets((f"sum(dmashim_blocked_threads{{{PROC_SEL}}})", "blocked")),
                  pos=grid(4, y, 4, 4), steps=("green", (1, "orange"))))
    p.append(stat(ids, "Allocation failures in range",
                  "Failed intercepted allocations over the dashboard's time range, all reasons.",
                  targets((f"sum(increase(dmashim_failures_total{{{PROC_SEL}}}[$__range]))",
                           "failures")),
                  pos=grid(8, y, 4, 4), steps=("green", (1, "red"))))
    p.append(stat(ids, "Configuration errors",
                  "Problems found in the configuration at start-up (the process runs with the "
                  "pools that did parse). See the process's stderr or `dmashim run`.",
                  targets((f"sum(dmashim_config_errors_total{{{PROC_SEL}}})", "errors")),
                  pos=grid(12, y, 4, 4), steps=("green", (1, "red"))))
    p.append(stat(ids, "Hook families firing",
                  "Interception families that have seen at least one call (dmashim_hooks_firing).",
                  targets((f"count(dmashim_hooks_firing{{{PROC_SEL}}} > 0)", "families")),
                  pos=grid(16, y, 4, 4)))
    p.append(stat(ids, "Exporter segments",
                  "Stats segments the exporter read at the last scrape; segment errors in red.",
                  targets((f"sum(dmashim_exporter_segments{{{NODE_SEL}}})", "segments"),
                          (f"sum(increase(dmashim_exporter_segment_errors_total{{{NODE_SEL}}}"
                           f"[$__range]))", "errors")),
                  pos=grid(20, y, 4, 4)))
    y += 4
    p.append(timeseries(ids, "Node huge pages free",
                        "Free and total huge pages per page size on each node (sysfs).",
                        targets((f"dmashim_node_hugepages_free{{{NODE_SEL}}}",
                                 "{{instance}} free {{size}}"),
                                (f"dmashim_node_hugepages{{{NODE_SEL}}}",
                                 "{{instance}} total {{size}}")),
                        pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Pass-through calls",
                        "Intercepted calls no pool matched, per second, by call.",
                        targets((f"sum by (call) (rate(dmashim_passthrough_calls_total"
                                 f"{{{PROC_SEL}}}[{RATE}]))", "{{call}}")),
                        unit="ops", pos=grid(8, y)))
    p.append(table(ids, "Processes",
                   "One line per process under the shim (dmashim_process_info).",
                   [target(f"dmashim_process_info{{{PROC_SEL}}}", "", "A", format="table",
                           instant=True, range=False)],
                   pos=grid(16, y)))
    y += 8
    p.append(text(ids, "Top call sites",
                  "Call sites are kept in each process's stats segment, not exported as labels "
                  "(their cardinality is unbounded). On the host run\n\n"
                  "    dmashim stat --sites\n\n"
                  "for the top waiting and failing call sites, symbolized. The graph to the right "
                  "counts slow-path events the call-site table had no room for.",
                  grid(0, y, 12, 6)))
    p.append(timeseries(ids, "Call-site events dropped",
                        "Slow-path events not recorded because the call-site table was full.",
                        targets((f"sum by (comm) (rate(dmashim_call_sites_dropped_total"
                                 f"{{{PROC_SEL}}}[{RATE}]))", "{{comm}}")),
                        unit="ops", pos=grid(12, y, 12, 6)))
    y += 6

    # One row per pool.
    p.append(row(ids, "Pool $pool", y, repeat="pool"))
    y += 1
    p.append(timeseries(ids, "Threads blocked now",
                        "Threads waiting for an element of this pool, per process.",
                        targets((f"sum by (instance, comm) (dmashim_blocked_threads{{{SEL}}})",
                                 "{{comm}} @ {{instance}}")),
                        pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Longest current wait",
                        "How long the longest waiting thread has been blocked (0: nobody waits). "
                        "The DmashimWaitBeyondWatchdog alert fires above the pool's watchdog "
                        "(10 s by default).",
                        targets((f"max by (instance, comm) (dmashim_longest_wait_seconds{{{SEL}}})",
                                 "{{comm}} @ {{instance}}")),
                        unit="s", pos=grid(8, y), minimum=0))
    p.append(timeseries(ids, "Blocking time quantiles",
                        "p50 and p99 of the time allocations spent blocked (waited allocations "
                        "only), and the mean.",
                        targets((f"histogram_quantile(0.5, sum by (le) (rate("
                                 f"dmashim_wait_seconds_bucket{{{SEL}}}[{RATE}])))", "p50"),
                                (f"histogram_quantile(0.99, sum by (le) (rate("
                                 f"dmashim_wait_seconds_bucket{{{SEL}}}[{RATE}])))", "p99"),
                                (f"sum(rate(dmashim_wait_seconds_sum{{{SEL}}}[{RATE}])) / "
                                 f"sum(rate(dmashim_wait_seconds_count{{{SEL}}}[{RATE}]))",
                                 "mean")),
                        unit="s", pos=grid(16, y), minimum=0))
    y += 8
    p.append(heatmap(ids, "Blocking time heatmap",
                     "Waited allocations per blocking-time bucket and interval.",
                     f"sum by (le) (increase(dmashim_wait_seconds_bucket{{{SEL}}}[{RATE}]))",
                     grid(0, y)))
    p.append(timeseries(ids, "Failures by reason",
                        "Failed allocations per second: fail_fast (mode = fail-fast, expected "
                        "for optional users), timeout, interrupted, source (the kernel refused "
                        "and no reserve was left).",
                        targets((f"sum by (reason) (rate(dmashim_failures_total{{{SEL}}}"
                                 f"[{RATE}]))", "{{reason}}")),
                        unit="ops", pos=grid(8, y), stack=True, minimum=0))
    p.append(timeseries(ids, "Allocations by result",
                        "Allocations per second served from the source allocator, the reserve, "
                        "or after waiting; and frees.",
                        targets((f"sum by (result) (rate(dmashim_allocations_total{{{SEL}}}"
                                 f"[{RATE}]))", "{{result}}"),
                                (f"sum(rate(dmashim_frees_total{{{SEL}}}[{RATE}]))", "frees")),
                        unit="ops", pos=grid(16, y), minimum=0))
    y += 8
    p.append(timeseries(ids, "Reserve level vs target",
                        "Elements set aside in the reserve and the configured target.",
                        targets((f"sum(dmashim_reserve_elements{{{SEL}}})", "reserve"),
                                (f"sum(dmashim_reserve_target_elements{{{SEL}}})", "target")),
                        pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Reserve drain rate",
                        "How fast the reserve changes, elements per second (negative: draining).",
                        targets((f"sum(deriv(dmashim_reserve_elements{{{SEL}}}[{RATE}]))",
                                 "change/s")),
                        unit="short", pos=grid(8, y)))
    p.append(stat(ids, "Reserve headroom",
                  "Lowest reserve level as a fraction of its target across the selected "
                  "processes (the DmashimReserveHeadroomLow alert fires below 25 %).",
                  targets((f"min(dmashim_reserve_elements{{{SEL}}} / "
                           f"(dmashim_reserve_target_elements{{{SEL}}} > 0))", "headroom")),
                  unit="percentunit", pos=grid(16, y),
                  steps=("red", (0.25, "orange"), (0.5, "green"))))
    y += 8
    p.append(timeseries(ids, "Elements in use, held and high-water",
                        "Elements handed out now, elements the pool holds (in use + reserve + "
                        "cached), and the most ever in use at once.",
                        targets((f"sum(dmashim_in_use_elements{{{SEL}}})", "in use"),
                                (f"sum(dmashim_elements_held{{{SEL}}})", "held"),
                                (f"max(dmashim_high_water_elements{{{SEL}}})", "high-water")),
                        pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Bytes in use and rounding waste",
                        "Bytes handed out, and bytes held beyond what callers asked for "
                        "(requests rounded up to the element size).",
                        targets((f"sum(dmashim_in_use_bytes{{{SEL}}})", "in use"),
                                (f"sum(dmashim_rounding_waste_bytes{{{SEL}}})", "rounding waste")),
                        unit="bytes", pos=grid(8, y), minimum=0))
    p.append(timeseries(ids, "Source allocator",
                        "Mean time per call into the source allocator (the kernel's mmap/shm, "
                        "cudaHostAlloc, …); failures and releases on the right axis.",
                        targets((f"sum(rate(dmashim_source_seconds_total{{{SEL}}}[{RATE}])) / "
                                 f"sum(rate(dmashim_source_calls_total{{{SEL}}}[{RATE}]))",
                                 "time per call"),
                                (f"sum(rate(dmashim_source_failures_total{{{SEL}}}[{RATE}]))",
                                 "failures/s"),
                                (f"sum(rate(dmashim_source_releases_total{{{SEL}}}[{RATE}]))",
                                 "releases/s")),
                        unit="s", pos=grid(16, y), minimum=0,
                        overrides=[{"matcher": {"id": "byRegexp", "options": "failures/s|releases/s"},
                                    "properties": [{"id": "unit", "value": "ops"},
                                                   {"id": "custom.axisPlacement",
                                                    "value": "right"}]}]))
    y += 8
    p.append(timeseries(ids, "DMA blocks and pages",
                        "Small DMA blocks carved from this pool's pages (C API dma pools).",
                        targets((f"sum(dmashim_dma_active_blocks{{{SEL}}})", "active blocks"),
                                (f"sum(dmashim_dma_total_blocks{{{SEL}}})", "total blocks"),
                                (f"sum(dmashim_dma_pages{{{SEL}}})", "pages")),
                        pos=grid(0, y, 12, 8), minimum=0))
    p.append(stat(ids, "Element size",
                  "Bytes per element of this pool.",
                  targets((f"max(dmashim_element_bytes{{{SEL}}})", "element")),
                  unit="bytes", pos=grid(12, y, 12, 8)))

    variables = [
        datasource_var(),
        query_var("instance", "Instance", "label_values(dmashim_exporter_segments, instance)"),
        query_var("comm", "Process",
                  'label_values(dmashim_process_info{instance=~"$instance"}, comm)'),
        query_var("pool", "Pool",
                  'label_values(dmashim_reserve_target_elements{instance=~"$instance", '
                  'comm=~"$comm"}, pool)'),
    ]
    return dashboard(
        "dmashim-overview", "dmashim",
        "Huge-page and pinned-memory pools under dmashim: blocking, failures, reserves, "
        "memory in use, per pool (one row each) and per node.",
        variables, p, [link("dmashim fleet", ["dmashim"])])


def fleet_dashboard():
    ids = Ids()
    p = []
    S = FLEET_SEL
    p.append(row(ids, "Fleet", 0))
    y = 1
    p.append(stat(ids, "Exporters up",
                  "Scrape targets of the selected jobs that answered the last scrape.",
                  targets((f"sum(up{{{S}}})", "up"), (f"count(up{{{S}}})", "targets")),
                  pos=grid(0, y, 6, 4)))
    p.append(stat(ids, "Processes under the shim",
                  "Live processes under the shim across the fleet.",
                  targets((f"sum(dmashim_process_alive{{{S}}})", "processes")),
                  pos=grid(6, y, 6, 4)))
    p.append(stat(ids, "Threads blocked now",
                  "Threads waiting in any pool anywhere.",
                  targets((f"sum(dmashim_blocked_threads{{{S}}})", "blocked")),
                  pos=grid(12, y, 6, 4), steps=("green", (1, "orange"))))
    p.append(stat(ids, "Failures in range",
                  "Failed allocations across the fleet over the time range.",
                  targets((f"sum(increase(dmashim_failures_total{{{S}}}[$__range]))", "failures")),
                  pos=grid(18, y, 6, 4), steps=("green", (1, "red"))))
    y += 4
    p.append(timeseries(ids, "Exporter up by instance",
                        "1: the exporter answered; 0: down (DmashimExporterDown).",
                        targets((f"up{{{S}}}", "{{instance}}")), pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Threads blocked by instance",
                        "Threads waiting in a pool, per instance.",
                        targets((f"sum by (instance) (dmashim_blocked_threads{{{S}}})",
                                 "{{instance}}")),
                        pos=grid(8, y), minimum=0))
    p.append(timeseries(ids, "p99 blocking time by instance",
                        "99th percentile of the time waited allocations blocked, per instance.",
                        targets((f"histogram_quantile(0.99, sum by (instance, le) (rate("
                                 f"dmashim_wait_seconds_bucket{{{S}}}[{RATE}])))",
                                 "{{instance}}")),
                        unit="s", pos=grid(16, y), minimum=0))
    y += 8
    p.append(timeseries(ids, "Failures by instance and reason",
                        "Failed allocations per second.",
                        targets((f"sum by (instance, reason) (rate(dmashim_failures_total{{{S}}}"
                                 f"[{RATE}]))", "{{instance}} {{reason}}")),
                        unit="ops", pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Lowest reserve headroom by instance",
                        "Lowest reserve level / target of any pool with a reserve, per instance.",
                        targets((f"min by (instance) (dmashim_reserve_elements{{{S}}} / "
                                 f"(dmashim_reserve_target_elements{{{S}}} > 0))", "{{instance}}")),
                        unit="percentunit", pos=grid(8, y), minimum=0))
    p.append(timeseries(ids, "Huge pages free by instance",
                        "Free huge pages on each node, per page size.",
                        targets((f"max by (instance, size) (dmashim_node_hugepages_free{{{S}}})",
                                 "{{instance}} {{size}}")),
                        pos=grid(16, y), minimum=0))
    y += 8
    p.append(timeseries(ids, "Bytes in use by instance",
                        "Pool bytes handed out, per instance.",
                        targets((f"sum by (instance) (dmashim_in_use_bytes{{{S}}})",
                                 "{{instance}}")),
                        unit="bytes", pos=grid(0, y), minimum=0))
    p.append(timeseries(ids, "Segment errors and reaping by instance",
                        "Stats segments the exporter could not read, per reason; and segments "
                        "of exited processes removed after their last scrape.",
                        targets((f"sum by (instance, reason) (rate("
                                 f"dmashim_exporter_segment_errors_total{{{S}}}[{RATE}]))",
                                 "{{instance}} {{reason}}"),
                                (f"sum by (instance) (rate("
                                 f"dmashim_exporter_segments_reaped_total{{{S}}}[{RATE}]))",
                                 "{{instance}} reaped")),
                        unit="ops", pos=grid(8, y), minimum=0))
    p.append(timeseries(ids, "Exporter scrape duration",
                        "Time the exporter took to read all segments, per instance.",
                        targets((f"max by (instance) (dmashim_exporter_scrape_duration_seconds"
                                 f"{{{S}}})", "{{instance}}")),
                        unit="s", pos=grid(16, y), minimum=0))
    y += 8
    p.append(table(ids, "Pools across the fleet",
                   "Every pool of every process: elements in use now.",
                   [target(f"sum by (instance, comm, pool) (dmashim_in_use_elements{{{S}}})", "",
                           "A", format="table", instant=True, range=False)],
                   grid(0, y, 24, 8)))
    variables = [datasource_var(),
                 query_var("job", "Job", "label_values(dmashim_exporter_segments, job)")]
    return dashboard(
        "dmashim-fleet", "dmashim fleet",
        "Every instance running dmashim-exporter: exporters up, blocking, failures, reserve "
        "headroom and huge pages per instance. Drill down with the dmashim dashboard.",
        variables, p, [link("dmashim", ["dmashim"])])


def render(d):
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    out = {"dmashim.json": main_dashboard(), "dmashim-fleet.json": fleet_dashboard()}
    check = "--check" in argv
    stale = []
    for name, d in out.items():
        path = os.path.join(here, name)
        text_ = render(d)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text_:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text_)
    if stale:
        print("out of date (run python3 dashboards/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
