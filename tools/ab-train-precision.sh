#!/usr/bin/env bash
# Interleaved A/B of the CPU training step in f32 and in bf16 mixed
# precision (`tmoe bench model --train`), RUNS rounds of bf16 then f32, so
# a noisy VM's drift hits both alike. Raw output with date, machine, load
# and command goes to stdout (redirect it into bench/results/).
#   tools/ab-train-precision.sh CONFIG [RUNS] [BATCHES]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cfg="${1:?config: tiny or small}"
runs="${2:-2}"
batches="${3:-8,32}"
cargo build --release --quiet --bin tmoe
tmoe="$("$root/tools/cargo-target-dir.sh")/release/tmoe"
echo "# date: $(date -u +%FT%TZ)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# git: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (uncommitted changes)')"
for r in $(seq "$runs"); do
  for p in bf16 f32; do
    echo "# round $r, $p: $tmoe bench model --device cpu --config $cfg --train --precision $p --batch $batches --seq 64 --iters 4"
    "$tmoe" bench model --device cpu --config "$cfg" --train --precision "$p" \
      --batch "$batches" --seq 64 --iters 4 2>&1 | grep -E 'batch .*:' | sed "s/^/$p /"
  done
done
