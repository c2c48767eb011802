#!/usr/bin/env bash
# GPU check in two halves.
#
#   tools/gpu-check.sh            (here, no GPU needed) builds in release with
#       --features cuda: the kernel and simulator test binaries and `tmoe`,
#       strips them and bundles them with run.sh into target/gpu-bundle/.
#
#   On the GPU machine (device `run` tool, carry ["target/gpu-bundle.tar.xz"]):
#       tar -xJf target/gpu-bundle.tar.xz -C target && target/gpu-bundle/run.sh
#   (every binary embeds the same fatbins, so xz shrinks ~67 MB to ~5 MB, well
#   under the 64 MiB a device call may carry)
#   runs, most important first (a run cut short still answers the main
#   question): `tmoe bench model` at base, batch 64, sequence 512 (MoE vs
#   dense inference), every GPU test with TMOE_REQUIRE_GPU=1 (a skip is a
#   failure: kernels, the GPU engine's ops, the whole model, training), the
#   batch sweep and the training step of `bench model`, `tmoe bench classify`
#   (end to end and the stream under load), and `tmoe bench kernels`, writing
#   results to $OUT (or bench/results/). The whole run keeps to
#   TMOE_GPU_BUDGET_S seconds (default 540, under the device call's 600):
#   steps that no longer fit are skipped and listed in skipped.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/tools/install-cuda-toolchain.sh" >/dev/null
# Every kernel test, plus the simulator self-tests that also run on the GPU (a
# GPU run confirms the simulator's shuffle and fragment layouts on hardware).
tests=(sim_block sim_warp sim_tensor executor_copy)
for f in tests/kernel_*.rs tests/engine_gpu_*.rs; do tests+=("$(basename "$f" .rs)"); done
bundle="$root/target/gpu-bundle"
rm -rf "$bundle" && mkdir -p "$bundle/tests"

args=(--release --features cuda)
for t in "${tests[@]}"; do args+=(--test "$t"); done
echo "== building ${tests[*]} and tmoe (release, --features cuda)"
cargo build --release --features cuda --bin tmoe
# --no-run prints each test executable as JSON; keep the ones we asked for.
cargo test "${args[@]}" --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$bundle/tests/$name"; done
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cp "$target_dir/release/tmoe" "$bundle/tmoe"
strip "$bundle/tmoe" "$bundle"/tests/*

cat > "$bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine: every GPU test must run on the device (no skips),
# then the kernel benchmark. Results go to $OUT (device tool) or bench/results/.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/../../bench/results}"
mkdir -p "$out"
export TMOE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
status=0
# One budget for the whole run (the device call's limit, less a margin to
# write the summary): each step gets at most what is left, and a step with
# under 20 s left is skipped, named, rather than cut off without a trace.
deadline=$(( SECONDS + ${TMOE_GPU_BUDGET_S:-540} ))
limit() { # the step's own limit in s -> the limit it gets, or 0 to skip
  local left=$(( deadline - SECONDS ))
  if (( left < 20 )); then echo 0; elif (( left < $1 )); then echo "$left"; else echo "$1"; fi
}
skipped() { echo "SKIPPED (run budget spent): $*" | tee -a "$out/skipped.txt"; status=1; }
bench_model() { # name, then tmoe bench model arguments
  local name="$1"; shift
  local t; t=$(limit 150)
  (( t > 0 )) || { skipped "bench model $name"; return; }
  timeout "$t" "$here/tmoe" bench model --device cuda "$@" --out "$out/$name.json" --force \
    > /dev/null 2> >(tee "$out/$name.txt" >&2)
  [[ $? -eq 0 ]] || status=1
}
echo "== bench model: base, batch 64, sequence 512, inference (the paper's Figure 8 point)"
bench_model bench-model-base-b64 --config base --batch 64
for t in "$here"/tests/*; do
  echo "== $(basename "$t")"
  lim=$(limit 120)
  (( lim > 0 )) || { skipped "test $(basename "$t")"; continue; }
  timeout "$lim" "$t" --test-threads=1 2>&1 | tee -a "$out/gpu-tests.log" | grep -E "^test |test result|SKIP|panicked" || true
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
echo "== bench model: batch sweep, inference and training step"
bench_model bench-model-base --config base --batch 8,16,32,64
bench_model bench-model-base-train --config base --batch 8,16 --train --iters 5
bench_model bench-model-tiny --config tiny --batch 64,256,1024 --seq 64
bench_classify() { # name, then tmoe bench classify arguments
  local name="$1"; shift
  local t; t=$(limit 200)
  (( t > 0 )) || { skipped "bench classify $name"; return; }
  timeout "$t" "$here/tmoe" bench classify --device cuda "$@" --out "$out/$name.json" --force \
    > /dev/null 2> >(tee "$out/$name.txt" >&2)
  [[ $? -eq 0 ]] || status=1
}
echo "== bench classify: end to end from synthesised captures (tiny: 100k one-flow files, 1M flows), the stream under load; base end to end"
bench_classify bench-classify-tiny --config tiny
bench_classify bench-classify-base --config base --no-stream --one-flow-files 20000 --synth-flows 200000
lim=$(limit 240)
if (( lim > 0 )); then
  timeout "$lim" "$here/tmoe" bench kernels --exec cuda --out "$out/bench-kernels.json" 2>&1 | tee "$out/bench-kernels.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
else
  skipped "bench kernels"
fi
echo "gpu-check: $([[ $status -eq 0 ]] && echo PASS || echo FAIL); results in $out"
exit $status
RUN
chmod +x "$bundle/run.sh"
du -sh "$bundle"
tar -cJf "$bundle.tar.xz" -C "$root/target" gpu-bundle
du -sh "$bundle.tar.xz"
echo "bundle: $bundle.tar.xz  (there: tar -xJf target/gpu-bundle.tar.xz -C target && target/gpu-bundle/run.sh)"
