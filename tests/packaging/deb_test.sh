#!/usr/bin/env bash
# Builds the .deb with cpack, installs it with dpkg -i, runs the demo workload with the installed
# dmashim and libdmashim.so, reads it back with the installed exporter, checks the default config,
# pkg-config and a find_package(dmashim) consumer, then removes and purges the package and checks
# that none of its files is left.
# usage: deb_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
skip() { echo "SKIP: $*"; if [[ ${CI:-} == true ]]; then exit 1; fi; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
deferred=()  # failures that do not stop the remaining checks, reported at the end
soft_fail() { echo "FAIL (continuing): $*"; deferred+=("$*"); }
[[ $(id -u) -eq 0 ]] || skip "dpkg -i needs root"
command -v dpkg-deb >/dev/null && command -v cpack >/dev/null || skip "dpkg-deb or cpack missing"
if dpkg-query -W -f='${Status}' dmashim 2>/dev/null | grep -q 'installed'; then
  skip "a dmashim package is already installed on this machine; not touching it"
fi
. "$src/tests/dashboards/hugepages.sh"

D=$(mktemp -d "${TMPDIR:-/tmp}/dmashim-deb.XXXXXX")
installed=0
cleanup() {
  local rc=$?
  if ((installed)); then dpkg -P dmashim > /dev/null 2>&1 || true; fi
  restore_hugepages
  rm -rf "$D"
  exit $rc
}
trap cleanup EXIT

# 1. Build the package.
rm -f "$build"/packages/dmashim_*.deb
(cd "$build" && cpack -G DEB > "$D/cpack.log" 2>&1) || { cat "$D/cpack.log"; fail "cpack"; }
deb=$(ls "$build"/packages/dmashim_*.deb)
echo "package: $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb -f "$deb" Depends | grep -q libprometheus-cpp-pull || fail "Depends lacks the shared-library dependencies"
dpkg-deb -e "$deb" "$D/control"
grep -qx /etc/dmashim/dmashim.toml "$D/control/conffiles" || fail "dmashim.toml is not a conffile"

# 2. Install it.
dpkg -i "$deb" > "$D/dpkg.log" 2>&1 || { cat "$D/dpkg.log"; fail "dpkg -i"; }
installed=1
dpkg-query -L dmashim > "$D/files.txt"
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
lib=/usr/lib/$arch/libdmashim.so
for f in "$lib" /usr/bin/dmashim /usr/bin/dmashim-exporter /etc/dmashim/dmashim.toml \
         /usr/include/dmashim/dmashim.h /usr/lib/$arch/pkgconfig/dmashim.pc \
         /usr/lib/$arch/cmake/dmashim/dmashimConfig.cmake /usr/lib/systemd/system/dmashim-exporter.service \
         /usr/lib/tmpfiles.d/dmashim.conf /usr/share/dmashim/dashboards/dmashim.json \
         /usr/share/dmashim/dashboards/dmashim-fleet.json /usr/share/dmashim/rules/dmashim-alerts.yml \
         /usr/share/dmashim/rules/dmashim-recording.yml; do
  [[ -f $f ]] || fail "$f not installed"
done
echo "installed: $(grep -c . "$D/files.txt") paths"

# 3. The installed dmashim preloads the installed shim (not the build tree's).
shim=$(/usr/bin/dmashim run -- cat /proc/self/maps | grep -o '/[^ ]*libdmashim\.so$' | sort -u)
# (FindShim in exporter/cli.cc must try the install-relative path before the build tree's.)
[[ $shim == "$lib" ]] || soft_fail "/usr/bin/dmashim preloaded '$shim', not $lib"

# 4. The default config (all commented out: pure telemetry) loads cleanly, even with strict = true,
#    and stays valid with every key uncommented.
DMASHIM_STRICT=true /usr/bin/dmashim run -- true 2> "$D/err.txt" || { cat "$D/err.txt"; fail "default config"; }
[[ ! -s $D/err.txt ]] || { cat "$D/err.txt"; fail "the default config produced messages"; }
grep -qv '^#' /etc/dmashim/dmashim.toml && [[ -n $(grep -v '^#' /etc/dmashim/dmashim.toml | tr -d '[:space:]') ]] &&
  fail "the default config has uncommented lines"
sed 's/^#\([a-z[]\)/\1/' /etc/dmashim/dmashim.toml > "$D/uncommented.toml"
grep -q '^\[pool\.' "$D/uncommented.toml" || fail "no example pool in the default config"
DMASHIM_STRICT=true /usr/bin/dmashim run --config "$D/uncommented.toml" -- true 2> "$D/err.txt" ||
  { cat "$D/err.txt"; fail "the uncommented default config is not valid"; }

# 5. The demo workload from the installed paths; the installed exporter reads its segment.
ensure_free_hugepages 16
DMASHIM_RUN_DIR=$D/run /usr/bin/dmashim run --config "$src/examples/rx_ring.toml" --summary -- \
  "$build/examples/rx_ring" --seconds 1 || fail "rx_ring under the installed dmashim"
/usr/bin/dmashim-exporter --once --run-dir "$D/run" > "$D/scrape.txt"
grep -E '^dmashim_allocations_total\{.*pool="rx-buffers".*\} [1-9]' "$D/scrape.txt" > /dev/null ||
  fail "the installed exporter shows no rx-buffers allocations"

# 6. pkg-config and a C consumer built with its flags.
[[ $(pkg-config --modversion dmashim) == "$(dpkg-deb -f "$deb" Version)" ]] || fail "pkg-config version"
cflags=$(pkg-config --cflags dmashim | xargs)
[[ $cflags == "-I/usr/include/dmashim" ]] || fail "pkg-config --cflags dmashim = '$cflags'"
pkg-config --libs dmashim | grep -q -- '-ldmashim' || fail "pkg-config --libs"
cat > "$D/consumer.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <dmashim.h>
int main(void) {
  __typeof__(&dmashim_pool_find) find = (__typeof__(&dmashim_pool_find))dlsym(RTLD_DEFAULT, "dmashim_pool_find");
  __typeof__(&dmashim_pool_element_size) size =
      (__typeof__(&dmashim_pool_element_size))dlsym(RTLD_DEFAULT, "dmashim_pool_element_size");
  if (!find) { puts("no shim"); return 0; }
  dmashim_pool* p = find("rx-buffers");
  printf("rx-buffers element %zu\n", p ? size(p) : (size_t)0);
  return p ? 0 : 1;
}
C
gcc -Wall -Werror $cflags "$D/consumer.c" -o "$D/consumer" || fail "C consumer with pkg-config flags"
[[ $("$D/consumer") == "no shim" ]] || fail "consumer without the shim"
out=$(DMASHIM_RUN_DIR=$D/run /usr/bin/dmashim run --config "$src/examples/rx_ring.toml" -- "$D/consumer")
[[ $out == "rx-buffers element 2097152" ]] || fail "consumer under the shim said '$out'"

# 7. A CMake consumer: find_package(dmashim) with both targets.
mkdir -p "$D/cm"
cp "$D/consumer.c" "$D/cm/consumer.c"
cat > "$D/cm/linked.c" <<'C'
#include <stdio.h>
#include <dmashim.h>
int main(void) { printf("%s\n", dmashim_pool_find("no-such-pool") ? "found" : "ENOENT"); return 0; }
C
cat > "$D/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(dmashim 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE dmashim::headers ${CMAKE_DL_LIBS})
add_executable(linked linked.c)
target_link_libraries(linked PRIVATE dmashim::dmashim)
CM
cmake -S "$D/cm" -B "$D/cm/build" -G Ninja > "$D/cm.log" 2>&1 && ninja -C "$D/cm/build" >> "$D/cm.log" 2>&1 ||
  { cat "$D/cm.log"; fail "find_package(dmashim) consumer"; }
readelf -d "$D/cm/build/linked" | grep -q 'NEEDED.*libdmashim.so' || fail "linked consumer does not need libdmashim.so"
[[ $(DMASHIM_RUN_DIR=$D/run "$D/cm/build/linked") == ENOENT ]] || fail "linked consumer"
echo "consumers: pkg-config ($cflags) and find_package(dmashim) build and run"

# 8. The systemd unit is well-formed (where systemd-analyze exists; PID 1 need not be systemd).
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/dmashim-exporter.service 2> "$D/verify.txt" || true
  if grep -v -e 'Failed to connect' -e 'Failed to .*bus' -e 'System has not been booted' "$D/verify.txt" |
       grep -q 'dmashim-exporter.service'; then
    cat "$D/verify.txt"; fail "systemd-analyze verify"
  fi
fi
grep -q '^ProtectSystem=strict' /usr/lib/systemd/system/dmashim-exporter.service || fail "unit not hardened"

# 9. Remove keeps the conffile; purge removes everything.
dpkg -r dmashim > "$D/dpkg.log" 2>&1 || { cat "$D/dpkg.log"; fail "dpkg -r"; }
[[ ! -e /usr/bin/dmashim && ! -e $lib ]] || fail "files left after dpkg -r"
[[ -f /etc/dmashim/dmashim.toml ]] || fail "dpkg -r removed the conffile"
dpkg -P dmashim > "$D/dpkg.log" 2>&1 || { cat "$D/dpkg.log"; fail "dpkg -P"; }
installed=0
left=()
while IFS= read -r f; do
  [[ -f $f || -L $f ]] && left+=("$f")
  [[ -d $f && $f == *dmashim* ]] && left+=("$f/")
done < "$D/files.txt"
((${#left[@]} == 0)) || fail "left after purge: ${left[*]}"
dpkg-query -W dmashim > /dev/null 2>&1 && fail "dpkg still knows dmashim"
echo "removed and purged: nothing left"
((${#deferred[@]} == 0)) || fail "${#deferred[@]} check(s) failed: ${deferred[*]}"
