#!/usr/bin/env bash
# Pre-flight for a GPU run, without a GPU: `tmoe bench model --device cuda`
# at the real shapes (base, sequence 512), and the other benchmarks
# tools/gpu-check.sh runs, on the fake CUDA driver in dry mode
# (cuda/sim/fake_driver.cpp: nothing executes; every launch is checked
# against a GPU's limits and device memory is counted against an H200's
# 143,771 MiB). What it measures is the engine's device memory (the caching
# pool's high-water mark and the weights), which does not depend on the
# device; its times are the host's alone and mean nothing.
#
#   tools/gpu-dry-run.sh [OUT_DIR]     (default bench/results/gpu-dry)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-$root/bench/results/gpu-dry}"
mkdir -p "$out"
"$root/tools/install-cuda-toolchain.sh" >/dev/null
export PATH="$root/.cuda-toolchain/bin:$PATH"
cargo build --release --quiet --features cuda --bin tmoe
# A copy, so that a build started meanwhile (without the cuda feature)
# cannot swap the binary under the later runs.
bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
cp "$("$root/tools/cargo-target-dir.sh")/release/tmoe" "$bin_dir/tmoe"
export TMOE_FAKE_CUDA=1 TMOE_FAKE_CUDA_DRY=1
run() { # name, model|classify, then its arguments
  local name="$1" what="$2"; shift 2
  {
    echo "# date: $(date -u +%FT%TZ)"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); fake CUDA driver, dry (no execution): only memory figures mean anything"
    echo "\$ TMOE_FAKE_CUDA=1 TMOE_FAKE_CUDA_DRY=1 tmoe bench $what --device cuda $* --out $name.json"
    "$bin_dir/tmoe" bench "$what" --device cuda "$@" --out "$out/$name.json" --force 2>&1 >/dev/null
  } | tee "$out/$name.txt"
  # The charts would show the host's times as if they were the device's.
  rm -f "$out/$name.png"
}
run bench-model-base-dry model --config base --seq 512 --batch 8,16,32,64 --iters 1
# --profile as tools/gpu-check.sh runs it (the kernel profile's events; its
# times are the host's here).
run bench-model-base-b64-profile-dry model --config base --seq 512 --batch 64 --iters 1 --profile
run bench-model-base-train-dry model --config base --seq 512 --batch 8,16 --train --iters 1 --profile
# Pretraining's model at base (the LM head over 65,541 entries, in row
# blocks): its step and its forward with the loss, as gpu-check.sh runs them.
run bench-model-base-pretrain-dry model --config base --seq 512 --batch 8,16 --train --objective lm --iters 1
run bench-model-base-lm-dry model --config base --seq 512 --batch 8,16 --objective lm --iters 1
# The other shapes tools/gpu-check.sh runs on a GPU: their launches are
# checked here too (tiny at its GPU batch sizes; classification end to end
# at its GPU batch, 1,024 flows, on small synthesised sets; the classify
# rows' times and memory are the host's alone).
run bench-model-tiny-dry model --config tiny --seq 64 --batch 64,256,1024 --iters 1
run bench-classify-tiny-dry classify --config tiny --one-flow-files 300 --synth-flows 20000 \
  --work "$out/work-classify"
run bench-classify-base-dry classify --config base --no-stream --one-flow-files 300 \
  --synth-flows 20000 --work "$out/work-classify"
rm -rf "$out/work-classify"
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, sys
out = sys.argv[1]
for name in ("bench-model-base-dry", "bench-model-base-train-dry",
             "bench-model-base-pretrain-dry", "bench-model-base-lm-dry"):
    r = json.load(open(f"{out}/{name}.json"))
    print(f"== {name}: peak device memory (pool high-water mark, weights included)")
    rows = {(x["ffn"], x["batch"]): x for x in r["rows"]}
    for b in sorted({x["batch"] for x in r["rows"]}):
        m, d = rows.get(("moe", b)), rows.get(("dense", b))
        if m and d:
            gib = lambda x: x / 2**30
            print(f"batch {b:3}: MoE {gib(m['peak_bytes']):.2f} GiB (weights {gib(m['weight_bytes']):.2f}), "
                  f"dense {gib(d['peak_bytes']):.2f} GiB (weights {gib(d['weight_bytes']):.2f}), "
                  f"MoE/dense {m['peak_bytes'] / d['peak_bytes']:.3f}")
PY
