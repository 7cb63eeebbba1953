#!/usr/bin/env bash
# THE test command (README "Quick start"): on a fresh Debian 12 machine, as root, installs the
# dependencies, configures with warnings as errors, builds, reserves 2 MiB huge pages and runs the
# whole suite. Exits non-zero on any failure. CI=true (set by .ci/run) is passed through to the tests:
# there a missing huge page is a failure, not a skip.
#
# Environment: BUILD_DIR (default build), JOBS (default 2), HUGEPAGES (default 256), ASAN (default 1:
# a second stage builds build-asan with ASan+UBSan and runs the in-process tests there; 0 skips it),
# ASAN_BUILD_DIR (default build-asan), TSAN (default 1: a third stage, the same tests under
# ThreadSanitizer in build-tsan; 0 skips it), TSAN_BUILD_DIR (default build-tsan).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-2}
want_pages=${HUGEPAGES:-256}

if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: run as root (sudo bash scripts/test.sh): installing packages and reserving huge pages need it" >&2
  exit 1
fi

bash scripts/install-deps.sh

cmake -S . -B "$build_dir" -G Ninja -DDMASHIM_WERROR=ON -DDMASHIM_BUILD_TESTS=ON -DDMASHIM_BUILD_BENCH=ON
ninja -C "$build_dir" -j"$jobs"

# Reserve huge pages for the run; put the old value back however the script ends.
nr=/proc/sys/vm/nr_hugepages
old_pages=$(cat "$nr")
if ((old_pages < want_pages)); then
  restore_pages() { echo "$old_pages" > "$nr" || true; }
  trap restore_pages EXIT
  echo "$want_pages" > "$nr" || true
fi
echo "test.sh: huge pages: nr_hugepages=$(cat "$nr") free=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages) (was $old_pages)"

export CI="${CI:-}"
ctest --test-dir "$build_dir" --output-on-failure

# Second stage (issue 7 item 9): the unit and in-process integration tests again under ASan+UBSan
# (ASAN=0 skips it). Only the labels below run there: tests that LD_PRELOAD libdmashim.so into
# another program (labels shim, telemetry, preload) cannot, because an ASan-built shim has to come
# after libasan in the program's initial library list, and the programs it is preloaded into
# (postgres, the probes and their fork/exec children) are not ASan builds; those tests run in the
# stage above. fuzz.bounded is an ASan build of its own.
if [[ ${ASAN:-1} != 0 ]]; then
  asan_dir=${ASAN_BUILD_DIR:-build-asan}
  cmake -S . -B "$asan_dir" -G Ninja -DDMASHIM_WERROR=ON -DDMASHIM_SANITIZE=address \
    -DDMASHIM_BUILD_BENCH=OFF
  # Only what the stage runs (the shim and the preload tests are not needed here).
  ninja -C "$asan_dir" -j"$jobs" dmashim_pools_test dmashim_config_test dmashim_exporter_test \
    reliability_pools_test
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$asan_dir" --output-on-failure -L 'pools|config|exporter|reliability' \
    -LE 'preload|fuzz'
fi

# Third stage (TSAN=0 skips it): the same in-process tests under ThreadSanitizer, with zero reports
# allowed (halt_on_error: the first report fails its test). The shim is built too, so it keeps
# compiling under -fsanitize=thread with warnings as errors, but it is not preloaded anywhere: a
# TSan-built shim needs libtsan loaded first in the program, as with ASan above. No suppressions:
# Debian's uninstrumented Abseil is made visible to TSan by tests/sanitizers/tsan_absl_mutex.cc.
if [[ ${TSAN:-1} != 0 ]]; then
  tsan_dir=${TSAN_BUILD_DIR:-build-tsan}
  cmake -S . -B "$tsan_dir" -G Ninja -DDMASHIM_WERROR=ON -DDMASHIM_SANITIZE=thread \
    -DDMASHIM_BUILD_BENCH=OFF
  ninja -C "$tsan_dir" -j"$jobs" dmashim dmashim_pools_test dmashim_config_test \
    dmashim_exporter_test reliability_pools_test
  # Left out here (it runs in the two stages above): MempoolFork.ForkWhileOtherThreadsUseADmaPool…
  # forks 200 times while three threads hammer a DmaPool, and under Debian's libtsan (GCC 12) a
  # child now and then spins for ever inside TSan's own runtime — gdb on one, 1 run in 28 here:
  # operator delete → __tsan::MetaMap::FreeRange → DenseSlabAlloc<ClockBlock>::Drain, waiting on
  # a spin lock that a parent thread held at the fork, which that runtime does not take around
  # fork(). No dmashim lock is held there.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir "$tsan_dir" --output-on-failure -L 'pools|config|exporter|reliability' \
    -LE 'preload|fuzz' -E 'MempoolFork\.ForkWhileOtherThreadsUseADmaPool'
fi
