#!/usr/bin/env bash
# Builds the libFuzzer targets with Debian's clang in a build directory of their own and runs each
# for a bounded time on a scratch copy of the checked-in seed corpus (new inputs the fuzzer finds go
# to the scratch copy, never into the source tree). Any crash, leak, sanitizer report or timeout
# fails; the reproducer is left in BUILD_DIR/artifacts.
#
#   run_fuzzers.sh SOURCE_DIR BUILD_DIR SECONDS [EXTRA_LIBFUZZER_FLAGS...]
#
# Without clang: exit 77 (ctest: skipped) — except under CI=true, where it is a failure
# (scripts/install-deps.sh installs clang and libclang-rt-14-dev).
set -euo pipefail
src=$1
build=$2
seconds=$3
shift 3

cc=$(command -v clang || true)
cxx=$(command -v clang++ || true)
if [[ -z $cc || -z $cxx ]]; then
  echo "run_fuzzers: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
  [[ ${CI:-} == true || ${CI:-} == 1 ]] && exit 1
  exit 77
fi

if [[ ! -f $build/build.ninja ]]; then
  CC=$cc CXX=$cxx cmake -S "$src" -B "$build" -G Ninja -DDMASHIM_FUZZ=ON \
    -DDMASHIM_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    exit 1
  }
fi
ninja -C "$build" -j"${JOBS:-2}" fuzz_config fuzz_segment

mkdir -p "$build/artifacts"
status=0
for target in config segment; do
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/tests/fuzz/corpus/$target/." "$work/"
  echo "run_fuzzers: fuzz_$target for ${seconds}s on $(ls "$work" | wc -l) seeds"
  if ! "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" "$@" "$work" 2>"$build/fuzz_$target.log"; then
    echo "run_fuzzers: fuzz_$target FAILED; reproducer in $build/artifacts:" >&2
    tail -n 60 "$build/fuzz_$target.log" >&2
    status=1
  else
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$build/fuzz_$target.log" || true
  fi
  rm -rf "$work"
  trap - EXIT
done
exit $status
