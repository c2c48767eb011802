#!/bin/bash
# Traffic2Token against tools/tokens-reference.py on ../shared/data: every
# capture file, default settings and the variants below (views, vocabularies
# that split words or lack pieces so [UNK] appears, truncation, K, payload
# bytes, --mask-identifiers), then three `tmoe tokenize` datasets read back from their shards, then
# dpkt's second opinion on the packet bytes. Prints what it compares; exits
# non-zero on a difference.
# Usage: tools/tokens-check.sh [DATA_DIR] (PYTHON: an interpreter with
# `tokenizers` and `dpkt`, default python3; WORK: scratch folder)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PY=${PYTHON:-python3}
"$PY" -c 'import tokenizers, dpkt' 2>/dev/null || {
    echo "tools/tokens-check.sh: $PY cannot import tokenizers and dpkt (pip install tokenizers dpkt, then PYTHON=/path/to/that/python)" >&2
    exit 2
}
W=${WORK:-$(mktemp -d)}
cargo build -q --bin tmoe --example dump_tokens
debug="$(tools/cargo-target-dir.sh)/debug"
TMOE=$debug/tmoe
DUMP=$debug/examples/dump_tokens
REF=tools/tokens-reference.py
find "$DATA/ndpi/pcap" "$DATA/iot-sentinel" "$DATA/corpus" -type f \
    \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' -o -name '*.pcap[0-9]*' -o -path '*ndpi/pcap/*' \) |
    sort >"$W/every.lst"
find "$DATA/iot-sentinel" -name '*.pcap' | sort | awk 'NR%5==0' >"$W/iot.lst"
find "$DATA/ndpi/pcap" -type f | sort >"$W/ndpi.lst"
echo "captures: $(wc -l <"$W/every.lst") files under $DATA"
# Vocabularies: 65,536 learned (most words one piece), 4,096 and 64 (words
# split into ## pieces), and the 64 one without `5` and `##5` ([UNK]).
$TMOE vocab $(cat "$W/iot.lst" "$W/ndpi.lst") --out "$W/v65536.txt" --force 2>&1 | tail -1
$TMOE vocab $(cat "$W/iot.lst") --out "$W/v4096.txt" --size 4096 --force 2>&1 | tail -1
$TMOE vocab $(awk 'NR%3==0' "$W/iot.lst") $(awk 'NR%6==0' "$W/ndpi.lst") --out "$W/v64.txt" --size 64 --force 2>&1 | tail -1
grep -v -x -e '5' -e '##5' "$W/v64.txt" >"$W/vunk.txt"
fail=0
run() { # NAME VOCAB [OPTIONS..]
    local name=$1 vname=$2 v=$W/$2
    shift 2
    $DUMP --vocab "$v" "$@" $(cat "$W/every.lst") >"$W/ours-$name.txt" 2>/dev/null
    $PY $REF --vocab "$v" "$@" $(cat "$W/every.lst") >"$W/ref-$name.txt" 2>"$W/ref-$name.err"
    echo "== $name: vocab $vname ${*:-(defaults: --seq-len 512 --packets 10 --payload-bytes 40 --view full)}"
    grep vocab "$W/ref-$name.err"
    $PY $REF --compare "$W/ours-$name.txt" "$W/ref-$name.txt" | head -30 || fail=1
}
run full v65536.txt
run header v65536.txt --view header
run payload v65536.txt --view payload
run v4096 v4096.txt
run v64 v64.txt
run v64-header v64.txt --view header
run unk vunk.txt
run unk-payload vunk.txt --view payload
run short v64.txt --seq-len 40 --packets 3 --payload-bytes 3
run long v4096.txt --seq-len 2000 --packets 25 --payload-bytes 100
run tiny v65536.txt --seq-len 2 --packets 1 --payload-bytes 0
run pb1 v4096.txt --payload-bytes 1 --view payload
run pay64 v64.txt --view payload --seq-len 64 --packets 4 --payload-bytes 30
run mask v65536.txt --mask-identifiers
run mask-payload v4096.txt --mask-identifiers --view payload --payload-bytes 100
dataset() { # NAME REFNAME VOCAB [OPTIONS..]: tmoe tokenize, its shards against the reference
    local name=$1 ref=$2 vname=$3 v=$W/$3
    shift 3
    rm -rf "$W/ds-$name"
    $TMOE tokenize $(cat "$W/every.lst") --out "$W/ds-$name" --vocab "$v" "$@" >/dev/null 2>&1
    $DUMP --dataset "$W/ds-$name" >"$W/ours-ds-$name.txt"
    echo "== tmoe tokenize ${*:-(defaults)} --vocab $vname: shards against ref-$ref"
    $PY $REF --compare "$W/ours-ds-$name.txt" "$W/ref-$ref.txt" --dataset | head -30 || fail=1
}
dataset full full v65536.txt
dataset pay64 pay64 v64.txt --view payload --seq-len 64 --packets 4 --payload-bytes 30
dataset mask mask v65536.txt --mask-identifiers
echo "== dpkt beside flow-reference.py, packet by packet (Ethernet pcap files)"
$PY -W ignore $REF --dpkt $(cat "$W/every.lst")
exit $fail
