#!/usr/bin/env bash
# Measures docs/figures.md's CPU figures and keeps each raw output, with the date,
# the machine, the load and the command, under bench/results/cpu/:
#   demo.txt                    cargo run --release -- demo (wall time, test macro-F1)
#   bench-model-inference.*     tmoe bench model --device cpu (MoE vs dense, classifier forward)
#   bench-model-train.*         the same, a full training step
#   bench-cpu-gemm.{txt,json}   tmoe bench cpu-gemm (packed bf16 / f32 GEMM, gemm crate, peaks)
#   capture.txt                 cargo run --release --example capture_throughput (all of ../shared/data)
#   tokenize.txt                tmoe tokenize over ../shared/data with a fixed vocabulary
# Run it on an otherwise idle machine (it prints the load average first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/bench/results/cpu"
data="${TMOE_DATA:-$root/../shared/data}"
mkdir -p "$out"
cargo build --release --quiet --bin tmoe --example capture_throughput
release="$("$root/tools/cargo-target-dir.sh")/release"
tmoe="$release/tmoe"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

header() { # command line
  echo "# date: $(date -u +%FT%TZ)"
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# command: $*"
}
timed() { # file, command...
  local file="$1"; shift
  { header "$@"; /usr/bin/env time -f "# wall %e s, max RSS %M KiB" "$@" 2>&1; } > "$file" 2>&1
  tail -n 3 "$file"
}

echo "== demo"
timed "$out/demo.txt" "$tmoe" demo --out "$scratch/demo" --quiet
echo "== bench model (inference, training step)"
timed "$out/bench-model-inference.txt" "$tmoe" bench model --device cpu --config tiny \
  --batch 8,32 --seq 64 --iters 20 --out "$out/bench-model-inference.json" --force
timed "$out/bench-model-train.txt" "$tmoe" bench model --device cpu --config tiny \
  --batch 8 --seq 64 --iters 3 --train --out "$out/bench-model-train.json" --force
echo "== bench cpu-gemm"
timed "$out/bench-cpu-gemm.txt" "$tmoe" bench cpu-gemm --out "$out/bench-cpu-gemm.json" --force
if [[ -d "$data" ]]; then
  echo "== capture reading over $data"
  timed "$out/capture.txt" "$release/examples/capture_throughput" "$data"
  echo "== tokenize over $data (fixed vocabulary, warm cache)"
  "$tmoe" vocab "$data/corpus" --out "$scratch/vocab.txt" --size 4096 >/dev/null 2>&1
  cat "$data"/corpus/* "$data"/ndpi/* >/dev/null 2>&1 || true
  timed "$out/tokenize.txt" "$tmoe" tokenize "$data/corpus" "$data/ndpi" "$data/iot-sentinel" \
    --out "$scratch/tok" --vocab "$scratch/vocab.txt" --quiet
else
  echo "no data at $data: capture and tokenize figures skipped"
fi
echo "results in $out"
