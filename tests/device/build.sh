#!/usr/bin/env bash
# Builds the real-GPU check on a machine with the CUDA toolkit and this project's build dependencies
# (no GPU needed here), into build-device/: bin/cuda_pinned_check (nvcc, shared CUDA runtime) and
# lib/ holding libdmashim.so and every shared library it and the check need that is not glibc's —
# Debian's Abseil, toml++, libunwind, libstdc++, libcudart — so tests/device/run.sh runs on a GPU
# machine with none of this project's Debian packages installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-device
build=${DMASHIM_DEVICE_BUILD_DIR:-$root/build-device-cmake}
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
cuda_lib=${CUDA_LIB:-/usr/local/cuda/lib64}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDMASHIM_BUILD_BENCH=OFF > /dev/null
ninja -C "$build" -j"${JOBS:-1}" dmashim > /dev/null

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
"$nvcc" -O2 -std=c++17 -cudart shared -o "$out/bin/cuda_pinned_check" \
  "$root/tests/device/cuda_pinned_check.cpp" -ldl
cp "$build/shim/libdmashim.so" "$out/lib/"

# glibc's own libraries are the GPU machine's; everything else travels.
is_glibc() {
  case "$(basename "$1")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libresolv.so.*) return 0 ;;
  esac
  return 1
}
copy_deps() {
  LD_LIBRARY_PATH="$cuda_lib" ldd "$1" | awk '/=> \// {print $3}' | while read -r lib; do
    is_glibc "$lib" && continue
    [ -e "$out/lib/$(basename "$lib")" ] || cp -L "$lib" "$out/lib/"
  done
}
copy_deps "$out/lib/libdmashim.so"
copy_deps "$out/bin/cuda_pinned_check"
strip --strip-debug "$out"/lib/*.so* 2> /dev/null || true

# Every dependency resolves from lib/ alone.
if LD_LIBRARY_PATH="$out/lib" ldd "$out/lib/libdmashim.so" | grep -q "not found"; then
  echo "build.sh: libdmashim.so has unresolved libraries" >&2
  LD_LIBRARY_PATH="$out/lib" ldd "$out/lib/libdmashim.so" >&2
  exit 1
fi
echo "build.sh: $(du -sh "$out" | cut -f1) in $out ($(ls "$out/lib" | wc -l) libraries)"
