#!/usr/bin/env bash
# The committed studies (issue 10): `tmoe study` on IoT Sentinel split by
# capture, without and with identifier masking, and on the nDPI captures
# (application labels, split by flow), 3 seeds; every row and few-shot on the first, the
# rows masking can change (and the baselines) on the masked one; and the
# pretraining-budget curve on IoT Sentinel with every other capture in
# ../shared/data added to the pretraining corpus. Each
# study works in target/study/<name>/ (datasets and checkpoints stay there,
# so a second call resumes) and its report, images, per-run results and
# routing counts are copied to bench/results/study/<name>/ with a log (date,
# machine, load, command, wall time).
#   tools/study-figures.sh [iot-sentinel|iot-sentinel-masked|ndpi|iot-sentinel-lp-ft|iot-sentinel-lp-ft-lr3e-4|iot-sentinel-lp-ft-lr1e-4|ndpi-lp-ft|ndpi-lp-ft-lr3e-4|iot-sentinel-budget|iot-sentinel-budget-long|iot-sentinel-budget-10k|iot-sentinel-default|iot-sentinel-budget-lr3e-4|iot-sentinel-budget-lr3e-3]...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${TMOE_DATA:-$root/../shared/data}"
cargo build --release --quiet --bin tmoe
tmoe="$root/target/release/tmoe"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(iot-sentinel iot-sentinel-masked ndpi iot-sentinel-budget iot-sentinel-budget-long iot-sentinel-budget-10k)
for name in "${names[@]}"; do
  case "$name" in
    iot-sentinel) args=("$data/iot-sentinel" --labels folder --fractions 0.01,0.05,0.1,0.25) ;;
    iot-sentinel-masked) args=("$data/iot-sentinel" --labels folder --mask-identifiers
      --rows moe-pretrained,moe-scratch,dense-pretrained,moe-header,moe-payload,moe-probe,appscanner,knn) ;;
    # Split by flow: each nDPI capture is one protocol's sample, so split by
    # file would put most applications in one part only. The probe (slow at
    # 344 classes: smartcore's fits, one L2 strength per core) and its
    # untrained-encoder control came later.
    ndpi) args=("$data/ndpi/pcap" --labels "csv:$data/ndpi/flow_labels.csv:app" --split-by flow
      --rows moe-pretrained,moe-scratch,dense-pretrained,moe-header,moe-payload,appscanner,knn,moe-probe,moe-probe-random) ;;
    iot-sentinel-budget) args=("$data/iot-sentinel" --labels folder --rows moe-scratch
      --budgets 300,1000 --pretrain-extra "$data/corpus" "$data/ndpi/pcap") ;;
    # A longer schedule, and the few-shot regime at each budget.
    iot-sentinel-budget-long) args=("$data/iot-sentinel" --labels folder --rows moe-scratch
      --budgets 1000,3000 --budget-fractions 0.01,0.05,0.25
      --pretrain-extra "$data/corpus" "$data/ndpi/pcap") ;;
    # The default grid alone (every row, no few-shot), to time it on an
    # idle machine; its results must equal iot-sentinel's.
    iot-sentinel-default) args=("$data/iot-sentinel" --labels folder) ;;
    iot-sentinel-budget-10k) args=("$data/iot-sentinel" --labels folder --rows moe-scratch
      --budgets 3000,10000 --budget-fractions 0.01,0.05,0.25
      --pretrain-extra "$data/corpus" "$data/ndpi/pcap") ;;
    # The fine-tuning lr around the default 1e-3, at the 3,000-step budget.
    iot-sentinel-budget-lr3e-4|iot-sentinel-budget-lr3e-3)
      args=("$data/iot-sentinel" --labels folder --rows moe-scratch --lr "${name##*-lr}"
      --budgets 3000 --budget-fractions 0.05,0.25
      --pretrain-extra "$data/corpus" "$data/ndpi/pcap") ;;
    # LP-FT (the head fitted first on the frozen encoder's features) beside
    # plain fine-tuning, pretrained and from scratch.
    iot-sentinel-lp-ft) args=("$data/iot-sentinel" --labels folder
      --rows moe-pretrained,moe-scratch,moe-lp-ft,moe-scratch-lp-ft) ;;
    # LP-FT at a lower fine-tuning rate (the fitted head then moves less).
    iot-sentinel-lp-ft-lr3e-4) args=("$data/iot-sentinel" --labels folder --lr 3e-4
      --rows moe-pretrained,moe-scratch,moe-lp-ft,moe-scratch-lp-ft) ;;
    iot-sentinel-lp-ft-lr1e-4) args=("$data/iot-sentinel" --labels folder --lr 1e-4
      --rows moe-lp-ft,moe-scratch-lp-ft) ;;
    ndpi-lp-ft-lr3e-4) args=("$data/ndpi/pcap" --labels "csv:$data/ndpi/flow_labels.csv:app" --split-by flow
      --lr 3e-4 --rows moe-lp-ft,moe-scratch-lp-ft) ;;
    ndpi-lp-ft) args=("$data/ndpi/pcap" --labels "csv:$data/ndpi/flow_labels.csv:app" --split-by flow
      --rows moe-pretrained,moe-scratch,moe-lp-ft,moe-scratch-lp-ft) ;;
    *) echo "unknown study $name" >&2; exit 2 ;;
  esac
  work="$root/target/study/$name"
  out="$root/bench/results/study/$name"
  mkdir -p "$work" "$out"
  start=$(date +%s)
  {
    echo "# date: $(date -u +%FT%TZ)"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "\$ tmoe study ${args[*]} --out $work --seeds 1,2,3 --quiet"
    "$tmoe" study "${args[@]}" --out "$work" --seeds 1,2,3 --quiet
    echo "# wall time: $(( $(date +%s) - start )) s; load at end $(cut -d' ' -f1-3 /proc/loadavg)"
  } 2>&1 | tee "$out/log.txt"
  rm -rf "$out/runs" "$out/routing"
  cp "$work"/report.md "$work"/report.json "$work"/*.png "$out/"
  mkdir -p "$out/runs"
  cp "$work"/runs/*.json "$out/runs/"
  cp -r "$work/routing" "$out/" 2>/dev/null || true
  # Their heatmaps are moe-pretrained's, the same bits as the ndpi study's (13 MB).
  case "$name" in ndpi-lp-ft*) rm -rf "$out/routing" ;; esac
done
