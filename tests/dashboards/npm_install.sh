#!/usr/bin/env bash
# Installs the dashboard checker's npm packages (@grafana/schema, typescript) exactly as
# tests/dashboards/package-lock.json pins them, into CACHE_DIR (inside the build tree). Skipped when
# CACHE_DIR already holds an install of this very lock file.
# usage: npm_install.sh CACHE_DIR SOURCE_TESTS_DIR
set -euo pipefail
cache=$1 here=$2
command -v npm >/dev/null || { echo "npm_install: npm not installed (scripts/install-deps.sh)"; exit 1; }
mkdir -p "$cache"
want=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ -f $cache/.stamp && $(cat "$cache/.stamp") == "$want" && -x $cache/node_modules/typescript/bin/tsc ]]; then
  echo "npm_install: $cache is up to date"
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$cache/"
rm -f "$cache/.stamp"
(cd "$cache" && npm ci --no-audit --no-fund --loglevel=error --cache "$cache/.npm-cache")
test -f "$cache/node_modules/@grafana/schema/package.json"
echo "$want" > "$cache/.stamp"
echo "npm_install: @grafana/schema $(node -p 'require(process.argv[1]).version' "$cache/node_modules/@grafana/schema/package.json"), typescript $(node -p 'require(process.argv[1]).version' "$cache/node_modules/typescript/package.json")"
