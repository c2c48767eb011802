#!/usr/bin/env bash
# IoT Sentinel, split by capture file: pretrained Traffic-MoE vs the same model
# from scratch vs the dense twin, with payload (--view full) and without it
# (--view header: the six packet attributes only, the paper's ablation input and
# our answer to the DHCP-MAC / DNS-vendor shortcuts in the payload).
#
# Leakage rules: the vocabulary is learned on ../shared/data/{corpus,ndpi} only;
# the pretraining corpus is corpus + ndpi + the IoT *training* captures (the
# captures whose flows went to train.tmoe), never a val/test capture.
#
# Usage (from the repository root; one experiment process at a time):
#   cargo build --release && mkdir -p /tmp/study && cp "$(tools/cargo-target-dir.sh)/release/tmoe" /tmp/study/tmoe
#   TMOE=/tmp/study/tmoe tools/iot-sentinel-study.sh [stage ...]
# Stages (default: all; they always run in this order): data pretrain main dense probe lmbase table
# (also, not in the default list: probe100 = fine-tune from a 100-step pretraining,
# densescratch = the dense twin from scratch)
# Knobs (env): REUSE=1 (keep finished pretrainings) TMOE WORK SEQ PT_STEPS PT_BATCH FT_EPOCHS FT_PATIENCE MAXPC LR SEEDS
# Results: bench/results/iot-sentinel/{runs.jsonl,results.json,results.md,pretrain_*.jsonl}
set -euo pipefail

TMOE=${TMOE:-$(tools/cargo-target-dir.sh)/release/tmoe}
WORK=${WORK:-/tmp/iot-study}
DATA=${DATA:-../shared/data}
SEQ=${SEQ:-64}              # tokens per flow (fine-tuning and pretraining)
VOCAB_SIZE=${VOCAB_SIZE:-2048}
PT_STEPS=${PT_STEPS:-300}
PT_BATCH=${PT_BATCH:-32}
PT_LR=${PT_LR:-3e-4}
FT_EPOCHS=${FT_EPOCHS:-6}
FT_PATIENCE=${FT_PATIENCE:-3}
MAXPC=${MAXPC:-40}          # training flows per class (cost cap on 2 CPU cores)
LR=${LR:-1e-3}              # fine-tuning lr_0 (LLRD xi = 0.9)
SEEDS=${SEEDS:-"1 2"}
RES=${RES:-bench/results/iot-sentinel}
VIEWS=${VIEWS:-"full header"}
STAGES=${*:-"data pretrain main dense probe lmbase table"}  # also: probe100 densescratch

mkdir -p "$WORK" "$RES"
RUNS="$RES/runs.jsonl"
log() { echo "[$(date +%T)] $*" >&2; }
# Runs a command, echoing it (so the log holds the exact commands), and
# appends its wall time to $WORK/walltimes.tsv.
timed() {
    local name=$1
    shift
    log "+ $*"
    local t0
    t0=$(date +%s.%N)
    "$@"
    echo -e "$name\t$(echo "$(date +%s.%N) - $t0" | bc)" >>"$WORK/walltimes.tsv"
}
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
# Shard/JSON helpers (Python standard library only), kept inside this script.
helpers() {
    python3 - "$@" <<'PY'
#!/usr/bin/env python3
"""Small helpers for tools/iot-sentinel-study.sh (standard library only).

train-files DIR         capture paths whose flows are in DIR/train.tmoe
check-disjoint DIR      fail if a capture has flows in two parts (split by file)
thin-log LOG N          every N-th line of a pretrain_log.jsonl (and the last)
record RUN VIEW ARM SEED LR INIT SECONDS   one JSON line for runs.jsonl
lm-baseline SHARD VOCAB held-out next-token loss of unigram and bigram count models
table RUNS.jsonl OUTDIR results.json + results.md (mean and spread over seeds)
"""
import collections
import json
import math
import os
import random
import statistics
import struct
import sys


def shard_file_ids(path):
    """file_id of every row of a .tmoe shard (layout: src/traffic/dataset/shard.rs)."""
    with open(path, "rb") as f:
        b = f.read()
    magic, _ver, seq, n = struct.unpack_from("<8sIIQ", b, 0)
    if magic != b"TMOESHRD":
        sys.exit(f"{path}: not a token shard")
    off = 64 + n * seq * 4
    off += (-off) % 8
    return [struct.unpack_from("<I", b, off + i * 64 + 4)[0] for i in range(n)]


def files_of(d, part):
    info = json.load(open(os.path.join(d, "dataset.json")))
    ids = set(shard_file_ids(os.path.join(d, part + ".tmoe")))
    return {info["files"][i] for i in ids}


def train_files(d):
    for f in sorted(files_of(d, "train")):
        print(f)


def check_disjoint(d):
    parts = {p: files_of(d, p) for p in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = parts[a] & parts[b]
        if both:
            sys.exit(f"{d}: {len(both)} captures in both {a} and {b}, e.g. {sorted(both)[0]}")
    print(
        f"{d}: captures train {len(parts['train'])}, val {len(parts['val'])}, "
        f"test {len(parts['test'])}, disjoint",
        file=sys.stderr,
    )


def thin_log(path, every):
    lines = [l for l in open(path) if l.strip()]
    for i, l in enumerate(lines):
        if i % every == 0 or i == len(lines) - 1:
            sys.stdout.write(l)


def record(run, view, arm, seed, lr, init, secs):
    m = json.load(open(os.path.join(run, "eval", "metrics.json")))
    hist = [json.loads(l) for l in open(os.path.join(run, "finetune_log.jsonl")) if l.strip()]
    best = max(hist, key=lambda h: h["val_macro_f1"])
    print(
        json.dumps(
            {
                "view": view,
                "arm": arm,
                "seed": int(seed),
                "lr": float(lr),
                "init": init or None,
                "epochs_run": len(hist),
                "best_epoch": best["epoch"],
                "val_macro_f1": best["val_macro_f1"],
                "test_accuracy": m["accuracy"],
                "test_macro_f1": m["macro"]["f1"],
                "test_weighted_f1": m["weighted"]["f1"],
                "train_loss_by_epoch": [round(h["train_loss"], 4) for h in hist],
                "val_macro_f1_by_epoch": [round(h["val_macro_f1"], 4) for h in hist],
                "seconds": round(float(secs), 1),
            }
        )
    )


def table(runs_path, out):
    runs = [json.loads(l) for l in open(runs_path) if l.strip()]
    groups = {}
    for r in runs:
        groups.setdefault((r["view"], r["arm"], r["lr"]), []).append(r)
    rows = []
    for (view, arm, lr), rs in sorted(groups.items()):
        def stat(k):
            xs = [r[k] for r in rs]
            return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), xs

        f1, f1sd, f1s = stat("test_macro_f1")
        acc, accsd, _ = stat("test_accuracy")
        vf1, _, _ = stat("val_macro_f1")
        rows.append(
            {
                "view": view,
                "arm": arm,
                "lr": lr,
                "seeds": [r["seed"] for r in rs],
                "test_macro_f1_mean": round(f1, 4),
                "test_macro_f1_sd": round(f1sd, 4),
                "test_macro_f1_per_seed": [round(x, 4) for x in f1s],
                "test_accuracy_mean": round(acc, 4),
                "test_accuracy_sd": round(accsd, 4),
                "val_macro_f1_mean": round(vf1, 4),
                "seconds_mean": round(statistics.mean(r["seconds"] for r in rs), 1),
            }
        )
    json.dump({"rows": rows, "runs": runs}, open(os.path.join(out, "results.json"), "w"), indent=1)
    md = [
        "| view | model | fine-tune lr_0 | seeds | test macro-F1 (mean ± sd) | per seed | test accuracy | best val macro-F1 | s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['view']} | {r['arm']} | {r['lr']:g} | {len(r['seeds'])} | "
            f"{r['test_macro_f1_mean']:.3f} ± {r['test_macro_f1_sd']:.3f} | "
            f"{', '.join(f'{x:.3f}' for x in r['test_macro_f1_per_seed'])} | "
            f"{r['test_accuracy_mean']:.3f} | {r['val_macro_f1_mean']:.3f} | {r['seconds_mean']:.0f} |"
        )
    open(os.path.join(out, "results.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))


def lm_baseline(shard, vocab):
    def rows(path):
        b = open(path,'rb').read()
        _, _, seq, n = struct.unpack_from('<8sIIQ', b, 0)
        off = 64 + n*seq*4; off += (-off) % 8
        out = []
        for i in range(n):
            ntok = struct.unpack_from('<I', b, off + i*64 + 60)[0]
            out.append(list(struct.unpack_from('<%dI' % ntok, b, 64 + i*seq*4)))
        return out
    V = [l.rstrip('\n') for l in open(vocab)]
    R = rows(shard)
    random.Random(0).shuffle(R)
    cut = len(R)*9//10
    tr, te = R[:cut], R[cut:]
    uni = collections.Counter(); big = collections.defaultdict(collections.Counter)
    for r in tr:
        for a, b in zip(r, r[1:]):
            uni[b] += 1; big[a][b] += 1
    N = sum(uni.values()); K = len(V)
    def nll_uni(b): return -math.log((uni[b] + 1) / (N + K))
    def nll_big(a, b):
        c = big[a]; tot = sum(c.values()) if c else 0
        # interpolated with the unigram (Witten-Bell-ish weight)
        lam = tot / (tot + len(c)) if tot else 0.0
        p = lam * (c[b] / tot if tot else 0) + (1 - lam) * (uni[b] + 1) / (N + K)
        return -math.log(p)
    # How often is the next token's first byte fixed by the current token
    # (current token ends a byte that the next bigram word must start with)?
    def last_byte(t):
        s = V[t]
        if s.startswith('['): return None
        s = s[2:] if s.startswith('##') else s
        return s[-2:] if len(s) >= 2 else None
    def first_byte(t):
        s = V[t]
        if s.startswith('['): return None
        s = s[2:] if s.startswith('##') else s
        return s[:2]
    n = su = sb = 0; shared = 0
    for r in te:
        for a, b in zip(r, r[1:]):
            n += 1; su += nll_uni(b); sb += nll_big(a, b)
            if last_byte(a) is not None and last_byte(a) == first_byte(b): shared += 1
    out = {"shard": shard, "train_flows": len(tr), "heldout_flows": len(te), "heldout_transitions": n,
           "uniform_nats": round(math.log(K), 3), "unigram_nats": round(su/n, 3), "bigram_count_model_nats": round(sb/n, 3),
           "frac_next_token_starts_with_current_last_byte": round(shared/n, 3)}
    print(json.dumps(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "train-files":
        train_files(*args)
    elif cmd == "check-disjoint":
        check_disjoint(*args)
    elif cmd == "thin-log":
        thin_log(args[0], int(args[1]))
    elif cmd == "record":
        record(*args)
    elif cmd == "lm-baseline":
        lm_baseline(*args)
    elif cmd == "table":
        table(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
PY
}

# --- data: vocabulary, labelled IoT datasets, pretraining corpora -------------
if has_stage data; then
    timed vocab "$TMOE" vocab "$DATA/corpus" "$DATA/ndpi" --out "$WORK/vocab.txt" \
        --size "$VOCAB_SIZE" --force --quiet
    for view in $VIEWS; do
        timed "tokenize-iot-$view" "$TMOE" tokenize "$DATA/iot-sentinel" --out "$WORK/iot-$view" \
            --labels folder --split-by file --keep-rare 50 --vocab "$WORK/vocab.txt" \
            --view "$view" --seq-len "$SEQ" --force --quiet >"$WORK/iot-$view.summary.txt"
        # IoT captures that hold training flows (file_id of each train.tmoe row).
        helpers train-files "$WORK/iot-$view" >"$WORK/iot-$view.train-files.txt"
        helpers check-disjoint "$WORK/iot-$view"
        mapfile -t train_files <"$WORK/iot-$view.train-files.txt"
        timed "tokenize-corpus-$view" "$TMOE" tokenize "$DATA/corpus" "$DATA/ndpi" "${train_files[@]}" \
            --out "$WORK/pt-$view" --labels none --vocab "$WORK/vocab.txt" \
            --view "$view" --seq-len "$SEQ" --force --quiet >"$WORK/pt-$view.summary.txt"
        log "view $view: $(wc -l <"$WORK/iot-$view.train-files.txt") IoT training captures in the corpus; $(grep '^kept' "$WORK/pt-$view.summary.txt")"
    done
fi

pretrain() { # view ffn [steps] [name]
    local steps=${3:-$PT_STEPS} name=${4:-$1-$2}
    local out="$WORK/pt-$name"
    if [[ ${REUSE:-0} == 1 && -f "$out/model.safetensors" ]]; then
        log "reusing $out (REUSE=1)"
        return
    fi
    rm -rf "$out"
    timed "pretrain-$name" "$TMOE" pretrain --data "$WORK/pt-$1" --ffn "$2" --out "$out" \
        --steps "$steps" --batch "$PT_BATCH" --lr "$PT_LR" --save-every 0 --seed 0 --quiet
    helpers thin-log "$out/pretrain_log.jsonl" 10 >"$RES/pretrain_$name.jsonl"
}

# finetune VIEW ARM SEED [LR] [INIT]: ARM = moe-pt | moe-scratch | dense-pt | dense-scratch | custom label
finetune() {
    local view=$1 arm=$2 seed=$3 lr=${4:-$LR} init=${5:-}
    local tag="$view-$arm-lr$lr-s$seed"
    local out="$WORK/ft-$tag"
    local ffn=${arm%%-*}
    local how=()
    if [[ -n "$init" ]]; then
        how=(--init "$init")
    elif [[ $arm == *-pt ]]; then
        how=(--init "$WORK/pt-$view-$ffn/model.safetensors")
    else
        how=(--from-scratch --config tiny --ffn "$ffn")
    fi
    rm -rf "$out"
    local t0
    t0=$(date +%s.%N)
    timed "finetune-$tag" "$TMOE" finetune --data "$WORK/iot-$view" "${how[@]}" --out "$out" \
        --epochs "$FT_EPOCHS" --patience "$FT_PATIENCE" --batch 32 --lr "$lr" \
        --max-per-class "$MAXPC" --seed "$seed" --quiet | tee "$out.stdout"
    timed "eval-$tag" "$TMOE" eval --checkpoint "$out/classifier.safetensors" --data "$WORK/iot-$view" \
        --split test --seq-len "$SEQ" --out "$out/eval" --quiet >/dev/null
    local secs
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    helpers record "$out" "$view" "$arm" "$seed" "$lr" "${init:-}" "$secs" >>"$RUNS"
}

if has_stage pretrain; then
    for view in $VIEWS; do pretrain "$view" moe; done
fi
if has_stage main; then
    for seed in $SEEDS; do
        for view in $VIEWS; do
            finetune "$view" moe-pt "$seed"
            finetune "$view" moe-scratch "$seed"
        done
    done
fi
if has_stage dense; then
    for view in $VIEWS; do pretrain "$view" dense; done
    for seed in $SEEDS; do
        for view in $VIEWS; do finetune "$view" dense-pt "$seed"; done
    done
fi
# Why (not): the paper's lr_0 = 5e-5 for both arms, and a shorter pretraining.
if has_stage probe; then
    finetune full moe-pt 1 5e-5
    finetune full moe-scratch 1 5e-5
fi
if has_stage probe100; then
    # A 100-step pretraining (its own complete schedule) against the 300-step one.
    pretrain full moe 100 full-moe100
    finetune full moe-pt100 1 "$LR" "$WORK/pt-full-moe100/model.safetensors"
fi
if has_stage densescratch; then
    for seed in $SEEDS; do
        for view in $VIEWS; do finetune "$view" dense-scratch "$seed"; done
    done
fi
# What a lookup table reaches on next-token prediction (compare the LM loss).
if has_stage lmbase; then
    for view in $VIEWS; do
        helpers lm-baseline "$WORK/pt-$view/train.tmoe" "$WORK/vocab.txt"
    done >"$RES/lm_baselines.jsonl"
fi
if has_stage table; then
    helpers table "$RUNS" "$RES"
    cp "$WORK/walltimes.tsv" "$RES/walltimes.tsv"
fi
