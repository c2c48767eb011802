#!/usr/bin/env bash
# The classic baselines on the IoT Sentinel study's own dataset (the same
# vocabulary, tokenizer settings, split by capture and seed as the data stage
# of tools/iot-sentinel-study.sh, so the same test captures); raw output with
# date, machine and commands in bench/results/iot-sentinel/baselines.txt.
# (The baselines read packet sizes and times, never payloads: masking does
# not change them.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${TMOE_DATA:-$root/../shared/data}"
out="$root/bench/results/iot-sentinel"
mkdir -p "$out"
cargo build --release --quiet --bin tmoe
tmoe="$("$root/tools/cargo-target-dir.sh")/release/tmoe"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run() { echo "\$ $*"; "$@"; }
{
  echo "# date: $(date -u +%FT%TZ)"
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
  run "$tmoe" vocab "$data/corpus" "$data/ndpi" --out "$work/vocab.txt" --size 2048 --force --quiet
  run "$tmoe" tokenize "$data/iot-sentinel" --out "$work/iot" --labels folder --split-by file \
    --keep-rare 50 --vocab "$work/vocab.txt" --view full --seq-len 64 --force --quiet | tail -n 3
  run "$tmoe" baseline appscanner --data "$work/iot" --out "$work/appscanner" | sed -n 1,4p
  run "$tmoe" baseline knn --data "$work/iot" --out "$work/knn" | sed -n 1,4p
  run "$tmoe" baseline knn --neighbours 5 --data "$work/iot" --out "$work/knn5" | sed -n 1,4p
} 2>&1 | tee "$out/baselines.txt"
