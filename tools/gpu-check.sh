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
#   runs every GPU test with TMOE_REQUIRE_GPU=1 (a skip is a failure) and
#   `tmoe bench kernels --json`, writing results to $OUT (or bench/results/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/tools/install-cuda-toolchain.sh" >/dev/null
# Every kernel test, plus the simulator self-tests that also run on the GPU (a
# GPU run confirms the simulator's shuffle and fragment layouts on hardware).
tests=(sim_block sim_warp sim_tensor executor_copy)
for f in tests/kernel_*.rs; do tests+=("$(basename "$f" .rs)"); done
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
for t in "$here"/tests/*; do
  echo "== $(basename "$t")"
  timeout 120 "$t" --test-threads=1 2>&1 | tee -a "$out/gpu-tests.log" | grep -E "^test |test result|SKIP|panicked" || true
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
timeout 240 "$here/tmoe" bench kernels --exec cuda --out "$out/bench-kernels.json" 2>&1 | tee "$out/bench-kernels.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
echo "gpu-check: $([[ $status -eq 0 ]] && echo PASS || echo FAIL); results in $out"
exit $status
RUN
chmod +x "$bundle/run.sh"
du -sh "$bundle"
tar -cJf "$bundle.tar.xz" -C "$root/target" gpu-bundle
du -sh "$bundle.tar.xz"
echo "bundle: $bundle.tar.xz  (there: tar -xJf target/gpu-bundle.tar.xz -C target && target/gpu-bundle/run.sh)"
