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
# STUDY_REDRAW=1: redraw a committed study's report and charts from its
# stored runs (copied into target/study-redraw/<name>/ first, with its
# routing counts and the rows its report lists)
# without making any run again; its log goes to log-redraw-DATE.txt and its
# runs and routing heatmaps (drawn by the runs themselves) stay as they are.
#   tools/study-figures.sh [iot-sentinel|iot-sentinel-masked|ndpi|iot-sentinel-lp-ft|iot-sentinel-lp-ft-lr3e-4|iot-sentinel-lp-ft-lr1e-4|ndpi-lp-ft|ndpi-lp-ft-lr3e-4|iot-sentinel-budget|iot-sentinel-budget-long|iot-sentinel-budget-10k|iot-sentinel-default|iot-sentinel-budget-lr3e-4|iot-sentinel-budget-lr3e-3]...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${TMOE_DATA:-$root/../shared/data}"
cargo build --release --quiet --bin tmoe
tmoe="$("$root/tools/cargo-target-dir.sh")/release/tmoe"
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
    # idle machine; made with the same code, its rows equal iot-sentinel's.
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
  mkdir -p "$out"
  log="$out/log.txt"
  if [ -z "${STUDY_REDRAW:-}" ]; then
    mkdir -p "$work"
  else
    case "$name" in ndpi-lp-ft*)
      echo "$name: its routing counts were not committed, so its report cannot be redrawn whole; skipped" >&2
      continue ;;
    esac
    [ -d "$out/runs" ] || { echo "$name: no stored runs in $out to redraw from" >&2; exit 2; }
    # A folder of its own: the study's own (its datasets and checkpoints) is left alone.
    work="$root/target/study-redraw/$name"
    rm -rf "$work"
    mkdir -p "$work/runs"
    cp "$out"/runs/*.json "$work/runs/"
    [ -d "$out/routing" ] && cp -r "$out/routing" "$work/"
    # The rows of the stored report, in its order: a study whose --rows is
    # the default would otherwise run the rows added to it since.
    if [[ " ${args[*]} " != *" --rows "* ]]; then
      rows=$(awk '/^\| row \| seeds/ {t=1; next} t && /^\|---/ {next} t && /^\| / {printf "%s%s", sep, $2; sep=","; next} t {exit}' "$out/report.md")
      args+=(--rows "$rows")
    fi
    log="$out/log-redraw-$(date -u +%F).txt"
  fi
  start=$(date +%s)
  {
    echo "# date: $(date -u +%FT%TZ)"
    echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "\$ tmoe study ${args[*]} --out $work --seeds 1,2,3 --quiet"
    "$tmoe" study "${args[@]}" --out "$work" --seeds 1,2,3 --quiet
    echo "# wall time: $(( $(date +%s) - start )) s; load at end $(cut -d' ' -f1-3 /proc/loadavg)"
  } 2>&1 | tee "$log"
  if [ -n "${STUDY_REDRAW:-}" ]; then
    grep -q "^This call ran 0 runs" "$work/report.md" || {
      echo "$name: the redraw made runs (its stored ones are not all there?): nothing copied" >&2; exit 1; }
  fi
  cp "$work"/report.md "$work"/report.json "$work"/*.png "$out/"
  # A redraw keeps the stored runs and routing counts it was drawn from.
  if [ -z "${STUDY_REDRAW:-}" ]; then
    rm -rf "$out/runs" "$out/routing"
    mkdir -p "$out/runs"
    cp "$work"/runs/*.json "$out/runs/"
    cp -r "$work/routing" "$out/" 2>/dev/null || true
  fi
  # Their heatmaps (13 MB, moe-pretrained's, as in the ndpi study) are not
  # kept: the report says so where it linked them (the tables stay).
  case "$name" in ndpi-lp-ft*)
    rm -rf "$out/routing"
    sed -i -E -e 's#^!\[([^]]*)\]\(routing/[^)]*\)$#(\1: the heatmap is not committed, 13 MB with the counts; the table above gives each layer)#' \
      -e 's#^Per class: \[routing/.*$#(Per class: not committed.)#' "$out/report.md" ;;
  esac
done
