#!/usr/bin/env python3
"""Writes the packaged /etc/dmashim/dmashim.toml from the key table (`dmashim-config-doc` prints it
as Markdown on stdin). Every key is commented out, so the file as shipped is pure telemetry: no pool,
every intercepted call behaves as without the shim, and the stats segment is written. Key lines are
"#key = value" (no space), prose lines "# ..."; stripping the "#" from every key line gives a valid
configuration (tests/packaging checks it).

usage: dmashim-config-doc | gen_default_config.py OUT
"""
import html
import re
import sys
import textwrap

EXAMPLE = {  # values for keys whose default is "unset", in the example pool
    "match": '{ call = "mmap", hugetlb = true, size = "2MiB" }',
}


def rows(markdown):
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        key, env, typ, default, desc = (html.unescape(c.replace("`", "")) for c in cells)
        yield key, env, typ, default, desc


def comment(text, indent="# "):
    return "\n".join(indent + l for l in textwrap.wrap(text, 96 - len(indent)))


def main(out):
    table = list(rows(sys.stdin.read()))
    if len(table) < 10:
        sys.exit(f"gen_default_config: only {len(table)} keys read from dmashim-config-doc")
    top = [r for r in table if "." not in r[0]]
    intercept = [r for r in table if r[0].startswith("intercept.")]
    pool = [r for r in table if r[0].startswith("pool.NAME.") and r[0].count(".") == 2]
    match_sub = [r for r in table if r[0].startswith("pool.NAME.match.")]
    lines = [
        "# /etc/dmashim/dmashim.toml: the configuration libdmashim.so reads at start-up",
        "# (DMASHIM_CONFIG=FILE or `dmashim run --config FILE` use another file; single keys can be",
        "# overridden with the DMASHIM_* environment variables named below).",
        "#",
        "# As shipped, every key is commented out and no pool is defined: the shim only counts",
        "# (pure telemetry for dmashim-exporter) and every call behaves as without it. Uncomment",
        "# and adapt the example pool at the end to route allocations through a pool.",
        "# Generated from the key table (dmashim-config-doc); the defaults shown are the built-in ones.",
        "",
    ]
    for key, env, typ, default, desc in top:
        lines += [comment(desc), comment(f"{typ}; environment: {env}"), f"#{key} = {default}", ""]
    lines += ["# Which call families are interposed.", "#[intercept]"]
    for key, env, typ, default, desc in intercept:
        lines += [comment(desc), comment(f"{typ}; environment: {env}"),
                  f"#{key.split('.', 1)[1]} = {default}"]
    lines += ["", "# A pool: [pool.NAME], NAME as it appears in metrics (label pool) and in",
              "# DMASHIM_POOL_<NAME>_* variables. Example, as in examples/rx_ring.toml:",
              "#[pool.rx-buffers]"]
    for key, env, typ, default, desc in pool:
        name = key.split(".", 2)[2]
        value = EXAMPLE.get(name, default)
        if value == "unset" or value.startswith("max("):
            continue
        lines += [comment(desc), comment(f"{typ}; environment: {env}")]
        if name == "match":
            for k, _, t, d, ds in match_sub:
                lines.append(comment(f"match.{k.rsplit('.', 1)[1]}: {ds} ({t}; default {d})", "#   "))
        lines.append(f"#{name} = {value}")
    lines.append("")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
