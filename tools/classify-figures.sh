#!/usr/bin/env bash
# Measures issue 11's and issue 8's CPU figures on this machine and keeps each
# raw output (date, machine, load, command) under bench/results/cpu/:
#   bench-classify-tiny-{f32,bf16}.{txt,json}  tmoe bench classify (end to end
#       from IoT Sentinel and 3,000 one-flow captures; the stream, from memory
#       and as a pcap through a pipe (stream-memory, stream-pipe), unpaced and
#       at 0.5x / 0.9x of its top packet rate), MoE and dense
#   same-run-{tmoe,torch}-CFG.{txt,json}       tmoe bench model (f32, bf16) and
#       PyTorch eager / torch.compile (tools/torch_reference.py) at the same
#       shapes and thread count, one after the other in this run; PyTorch in
#       f32 and in bf16 (same-run-torch-CFG-bf16.*), CFG = tiny and small
#   same-run-{tmoe,torch}-CFG-train.{txt,json}  a training step (f32) on both
#   same-run-{tmoe,torch}-CFG-train-bf16.*     a training step in bf16: ours
#       mixed precision (where the CPU has a bf16 kernel), PyTorch autocast
#   same-run-{tmoe,torch}-CFG-lm-{f32,bf16}.*   pretraining's LM forward with
#       its loss, no tape (PyTorch: inference mode), batch 8 and 32
#   same-run-{tmoe,torch}-CFG-pretrain-{f32,bf16}.*  pretraining's step (bf16:
#       ours mixed precision, PyTorch autocast), batch 8 and 32 (small: 8)
# `tools/classify-figures.sh torch` runs only the same-run comparisons,
# `tools/classify-figures.sh train` only their training steps,
# `tools/classify-figures.sh lm` only the LM forward and pretraining's step,
# `tools/classify-figures.sh classify` only bench classify.
# Tables: tools/same-run-table.py on the folder.
# PYTHON: an interpreter with torch (default python3). RESULTS: write there
# instead of bench/results/cpu (e.g. a folder per machine). Run it on an
# otherwise idle machine (it prints the load average first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${RESULTS:-$root/bench/results/cpu}"
py="${PYTHON:-python3}"
mkdir -p "$out"
cargo build --release --quiet --bin tmoe
tmoe="$("$root/tools/cargo-target-dir.sh")/release/tmoe"
threads="$(nproc)"

header() { # command line
  echo "# date: $(date -u +%FT%TZ)"
  # The model name alone can be just "AMD EPYC": the family and model say which generation.
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "(cpu family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)," \
    "model $(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# command: $*"
}
timed() { # file, command...
  local file="$1"; shift
  { header "$@"; /usr/bin/env time -f "# wall %e s, max RSS %M KiB" "$@" 2>&1; } > "$file" 2>&1
  grep -v '^ \|^{\|^}\|^\]' "$file" | tail -n 20
}

only="${1:-all}"
[ "$only" = torch ] || [ "$only" = train ] || [ "$only" = lm ] || for p in f32 bf16; do
  echo "== bench classify, tiny, $p"
  timed "$out/bench-classify-tiny-$p.txt" "$tmoe" bench classify --device cpu --config tiny \
    --precision "$p" --out "$out/bench-classify-tiny-$p.json" --force
done
# CONFIGS: the model configs of the same-run comparison (default tiny and
# small, the issue's CPU shapes); files are named by config.
# ITERS: timed calls per batch size in the inference rows (default 20; the
# shared 2-core machine is noisy, so fewer gives unstable means).
[ "$only" = classify ] && exit 0
if [ "$only" = lm ]; then
  for cfg in ${CONFIGS:-tiny small}; do
    # small's pretraining step takes a second a batch of 8: batch 8 alone.
    [ "$cfg" = small ] && steps=8 || steps=8,32
    for p in f32 bf16; do
      echo "== same run: LM forward with its loss, $cfg, $p, sequence 64, $threads threads"
      timed "$out/same-run-tmoe-$cfg-lm-$p.txt" "$tmoe" bench model --device cpu --config "$cfg" \
        --objective lm --precision "$p" --batch 8,32 --seq 64 --iters "${ITERS:-20}" \
        --out "$out/same-run-tmoe-$cfg-lm-$p.json" --force
      timed "$out/same-run-torch-$cfg-lm-$p.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
        --objective lm --dtype "$p" --batch 8,32 --seq 64 --iters "${ITERS:-20}" --threads "$threads" \
        --out "$out/same-run-torch-$cfg-lm-$p.json" --force
      echo "== same run: pretraining's step, $cfg, $p"
      timed "$out/same-run-tmoe-$cfg-pretrain-$p.txt" "$tmoe" bench model --device cpu --config "$cfg" \
        --train --objective lm --precision "$p" --batch "$steps" --seq 64 --iters 5 \
        --out "$out/same-run-tmoe-$cfg-pretrain-$p.json" --force
      timed "$out/same-run-torch-$cfg-pretrain-$p.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
        --train --objective lm --dtype "$p" --batch "$steps" --seq 64 --iters 5 --threads "$threads" \
        --out "$out/same-run-torch-$cfg-pretrain-$p.json" --force
    done
  done
  exit 0
fi
for cfg in ${CONFIGS:-tiny small}; do
if [ "$only" != train ]; then
echo "== same run: tmoe bench model (f32, bf16) and PyTorch, $cfg, sequence 64, $threads threads"
for p in f32 bf16; do
  timed "$out/same-run-tmoe-$cfg-$p.txt" "$tmoe" bench model --device cpu --config "$cfg" \
    --precision "$p" --batch 8,64 --seq 64 --iters "${ITERS:-20}" --out "$out/same-run-tmoe-$cfg-$p.json" --force
done
if "$py" -c 'import torch' 2>/dev/null; then
  timed "$out/same-run-torch-$cfg.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
    --batch 8,64 --seq 64 --iters "${ITERS:-20}" --threads "$threads" --out "$out/same-run-torch-$cfg.json" --force
  timed "$out/same-run-torch-$cfg-bf16.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
    --dtype bf16 --batch 8,64 --seq 64 --iters "${ITERS:-20}" --threads "$threads" \
    --out "$out/same-run-torch-$cfg-bf16.json" --force
fi
fi
echo "== same run: a training step (f32), $cfg, batch 8 and 32, sequence 64, $threads threads"
timed "$out/same-run-tmoe-$cfg-train.txt" "$tmoe" bench model --device cpu --config "$cfg" --train \
  --batch 8,32 --seq 64 --iters 5 --out "$out/same-run-tmoe-$cfg-train.json" --force
if "$py" -c 'import torch' 2>/dev/null; then
  timed "$out/same-run-torch-$cfg-train.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
    --train --batch 8,32 --seq 64 --iters 5 --threads "$threads" \
    --out "$out/same-run-torch-$cfg-train.json" --force
else
  echo "no torch for $py: the PyTorch side is skipped (PYTHON=/path/to/python with torch)"
fi
echo "== same run: a training step in bf16 (ours: mixed precision; PyTorch: autocast), $cfg"
timed "$out/same-run-tmoe-$cfg-train-bf16.txt" "$tmoe" bench model --device cpu --config "$cfg" --train \
  --precision bf16 --batch 8,32 --seq 64 --iters 5 --out "$out/same-run-tmoe-$cfg-train-bf16.json" --force \
  || echo "no bf16 kernel on this CPU: bf16 training skipped"
if "$py" -c 'import torch' 2>/dev/null; then
  timed "$out/same-run-torch-$cfg-train-bf16.txt" "$py" tools/torch_reference.py bench --config "$cfg" \
    --train --dtype bf16 --no-compile --batch 8,32 --seq 64 --iters 5 --threads "$threads" \
    --out "$out/same-run-torch-$cfg-train-bf16.json" --force
fi
done
