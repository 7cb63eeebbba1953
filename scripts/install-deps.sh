#!/usr/bin/env bash
# Installs every Debian package dmashim builds, tests and benchmarks with. Idempotent: packages that
# are already installed are skipped, so a warm machine pays only for the dpkg query.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libabsl-dev libunwind-dev prometheus-cpp-dev libcivetweb-dev libtomlplusplus-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  prometheus curl python3 procps util-linux strace
  python3-yaml chromium dpkg-dev
  postgresql
  libdpdk-dev
  libibverbs-dev
  clang libclang-rt-14-dev
)

# Node.js and npm (tests/dashboards type-checks the dashboards with @grafana/schema): a machine with
# a node/npm of its own (e.g. NodeSource's nodejs, which bundles npm) keeps it; otherwise Debian's.
if ! command -v npm > /dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps: all ${#packages[@]} packages present"
