#!/usr/bin/env bash
# Interleaved A/B of the bf16 micro-kernels on one `tmoe bench model`
# command: RUNS rounds of bf16 on each KERNELS entry (pinned by
# TMOE_BF16_KERNEL), then the same command in f32, so that a noisy VM's
# drift hits all alike. Raw output with date, machine, load and commands
# goes to stdout (redirect it into bench/results/).
#   tools/ab-bf16-kernels.sh RUNS -- bench-model-args...
# e.g. tools/ab-bf16-kernels.sh 2 -- --config tiny --batch 8,64 --seq 64 --iters 10
# KERNELS: default "avx512-bf16 avx512-fma" (`tmoe bench cpu-gemm` lists
# what this CPU runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 2 ] && [ "$2" = "--" ] || {
  echo "usage: $0 RUNS -- bench-model-args..." >&2
  exit 2
}
runs="$1"
shift 2
cargo build --release --quiet --bin tmoe
tmoe="$(tools/cargo-target-dir.sh)/release/tmoe"
echo "# date: $(date -u +%FT%TZ)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "(cpu family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "model $(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# git: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (uncommitted changes)')"
for r in $(seq "$runs"); do
  for k in ${KERNELS:-avx512-bf16 avx512-fma} f32; do
    if [ "$k" = f32 ]; then
      cmd=("$tmoe" bench model --device cpu --precision f32 "$@")
      echo "# round $r, f32: ${cmd[*]}"
      "${cmd[@]}" 2>&1 | grep -E 'batch .*:' | grep -v '^MoE' | sed "s/^/f32 /"
    else
      cmd=("$tmoe" bench model --device cpu --precision bf16 "$@")
      echo "# round $r, bf16 on $k: TMOE_BF16_KERNEL=$k ${cmd[*]}"
      TMOE_BF16_KERNEL="$k" "${cmd[@]}" 2>&1 | grep -E 'batch .*:|^tmoe bench model' | grep -v '^MoE' | sed "s/^/$k /"
    fi
  done
done
