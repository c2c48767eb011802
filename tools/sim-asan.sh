#!/usr/bin/env bash
# Runs the simulator, kernel and GPU-engine tests with the simulator (runtime + every kernel)
# compiled with AddressSanitizer (and UBSan's alignment check: a GPU faults on
# a misaligned vector access), then proves that they catch deliberately
# out-of-bounds kernels (global memory, static and dynamic shared memory) and a
# misaligned 16-byte load (cuda/sim/asan/oob_demo.cu, compiled only here).
# Rebuilds only this crate (TMOE_SIM_ASAN is a build-script input); the next
# normal build rebuilds it back.
#   usage: tools/sim-asan.sh [CARGO TEST ARGS]
# Arguments replace the default test selection (every sim_*, kernel_* and
# engine_gpu_* test), e.g. one kernel family: tools/sim-asan.sh --test kernel_rope
# The demonstrations run either way (they show that the sanitizer is on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TMOE_SIM_ASAN=1
export TMOE_SKIP_NVCC=1   # the GPU build is not under test here
asan_rt="$(gcc -print-file-name=libasan.so)"
[[ -f "$asan_rt" ]] || { echo "error: libasan.so not found (install gcc's libasan)" >&2; exit 1; }
# Test binaries (not cargo or rustc) run with the ASan runtime preloaded.
triple="$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')"
export "CARGO_TARGET_${triple}_RUNNER=env LD_PRELOAD=$asan_rt ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1"

if (($#)); then tests=("$@"); else tests=(--test 'sim_*' --test 'kernel_*' --test 'engine_gpu_*'); fi
echo "== under ASan: cargo test ${tests[*]}"
cargo test "${tests[@]}"

echo "== demonstrations: each out-of-bounds or misaligned access must be caught"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# TMOE_ASAN_DEMO value, kernel (tests/sim_asan.rs, cuda/sim/asan/oob_demo.cu),
# the report expected.
overflow="ERROR: AddressSanitizer: heap-buffer-overflow"
misaligned="runtime error: .*misaligned address"  # a load, or a reference bound to it
for demo in "global:simt_asan_oob:$overflow" "static_smem:simt_asan_static_smem_oob:$overflow" \
            "dyn_smem:simt_asan_dyn_smem_oob:$overflow" "misaligned:simt_asan_misaligned:$misaligned"; do
  IFS=: read -r name kernel report <<<"$demo"
  if TMOE_ASAN_DEMO="$name" cargo test --test sim_asan >"$log" 2>&1; then
    cat "$log"; echo "FAIL: $kernel ran without a sanitizer report" >&2; exit 1
  fi
  if grep -q "$report" "$log" && grep -q "$kernel" "$log"; then
    grep -m1 -A4 "$report" "$log"
    echo "OK: the sanitizer caught the bad access in $kernel"
  else
    cat "$log"; echo "FAIL: the $kernel demo failed without the expected report ($report)" >&2; exit 1
  fi
done
