#!/usr/bin/env bash
# Runs the simulator, kernel and GPU-engine tests with the simulator (runtime + every kernel)
# compiled with AddressSanitizer, then proves that ASan catches deliberately
# out-of-bounds kernels (global memory, static and dynamic shared memory;
# cuda/sim/asan/oob_demo.cu, compiled only here).
# Rebuilds only this crate (TMOE_SIM_ASAN is a build-script input); the next
# normal build rebuilds it back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TMOE_SIM_ASAN=1
export TMOE_SKIP_NVCC=1   # the GPU build is not under test here
asan_rt="$(gcc -print-file-name=libasan.so)"
[[ -f "$asan_rt" ]] || { echo "error: libasan.so not found (install gcc's libasan)" >&2; exit 1; }
# Test binaries (not cargo or rustc) run with the ASan runtime preloaded.
triple="$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')"
export "CARGO_TARGET_${triple}_RUNNER=env LD_PRELOAD=$asan_rt ASAN_OPTIONS=detect_leaks=0"

echo "== kernel and simulator tests under ASan"
cargo test --test 'sim_*' --test 'kernel_*' --test 'engine_gpu_*'

echo "== demonstrations: each out-of-bounds kernel must be caught"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# TMOE_ASAN_DEMO value, kernel (tests/sim_asan.rs, cuda/sim/asan/oob_demo.cu).
for demo in global:simt_asan_oob static_smem:simt_asan_static_smem_oob \
            dyn_smem:simt_asan_dyn_smem_oob; do
  name="${demo%%:*}" kernel="${demo#*:}"
  if TMOE_ASAN_DEMO="$name" cargo test --test sim_asan >"$log" 2>&1; then
    cat "$log"; echo "FAIL: $kernel ran without an ASan report" >&2; exit 1
  fi
  if grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$log" && grep -q "$kernel" "$log"; then
    grep -m1 -A4 "ERROR: AddressSanitizer" "$log"
    echo "OK: ASan caught the out-of-bounds access in $kernel"
  else
    cat "$log"; echo "FAIL: the $kernel demo failed without the expected ASan report" >&2; exit 1
  fi
done
