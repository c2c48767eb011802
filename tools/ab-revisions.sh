#!/usr/bin/env bash
# Interleaved A/B of two git revisions on one `tmoe` command: builds `tmoe`
# (release) at each revision in a worktree under target/ab/, then runs the
# command RUNS times with each binary in turn (A, B, A, B, ...), so that a
# noisy VM's drift hits both alike. Prints the lines of the bench's summary
# (`... batch N: ...`) prefixed with the revision, with date, machine, load
# and both commits first: redirect it into bench/results/.
#   tools/ab-revisions.sh REV_A REV_B RUNS -- tmoe-args...
# e.g. tools/ab-revisions.sh HEAD~1 HEAD 4 -- bench model --train \
#        --precision bf16 --config tiny --batch 8,32 --seq 64 --iters 6
# REV may also be WORKTREE: the working tree as it is (uncommitted changes).
# The worktrees stay for the next A/B (an incremental build); after `cargo
# clean`, `git worktree prune` forgets them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 5 ] && [ "$4" = "--" ] || {
  echo "usage: $0 REV_A REV_B RUNS -- tmoe-args..." >&2
  exit 2
}
rev_a="$1" rev_b="$2" runs="$3"
shift 4
target_dir="$("$root/tools/cargo-target-dir.sh")"

build() { # rev -> prints the path of its tmoe binary
  local rev="$1"
  if [ "$rev" = WORKTREE ]; then
    cargo build --release --quiet --bin tmoe >&2
    cp "$target_dir/release/tmoe" "$target_dir/ab/tmoe-worktree"
    echo "$target_dir/ab/tmoe-worktree"
    return
  fi
  local sha dir
  sha="$(git rev-parse --short "$rev")"
  dir="$target_dir/ab/src-$sha"
  [ -d "$dir" ] || git worktree add --detach --quiet "$dir" "$sha" >&2
  # One target dir for both worktrees: only the crate itself rebuilds.
  (cd "$dir" && CARGO_TARGET_DIR="$target_dir/ab/target" cargo build --release --quiet --bin tmoe) >&2
  cp "$target_dir/ab/target/release/tmoe" "$target_dir/ab/tmoe-$sha"
  echo "$target_dir/ab/tmoe-$sha"
}
mkdir -p "$target_dir/ab"
bin_a="$(build "$rev_a")"
bin_b="$(build "$rev_b")"
label() { [ "$1" = WORKTREE ] && echo worktree || git rev-parse --short "$1"; }
a="$(label "$rev_a")" b="$(label "$rev_b")"

echo "# date: $(date -u +%FT%TZ)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# A: $a ($(git log -1 --format=%s "${rev_a/WORKTREE/HEAD}" | cut -c1-100))"
if [ "$rev_b" = WORKTREE ]; then
  echo "# B: worktree (uncommitted changes on $(git rev-parse --short HEAD): $(git diff --stat HEAD | tail -1 | xargs))"
else
  echo "# B: $b ($(git log -1 --format=%s "$rev_b" | cut -c1-100))"
fi
echo "# command: tmoe $*, $runs rounds of A then B"
rows="$(mktemp)"
trap 'rm -f "$rows"' EXIT
for r in $(seq "$runs"); do
  for side in a b; do
    if [ "$side" = a ]; then bin="$bin_a" name="$a"; else bin="$bin_b" name="$b"; fi
    "$bin" "$@" 2>&1 | grep -E 'batch .*:' | sed "s/^/round $r $name /" | tee -a "$rows"
  done
done
# Per row (model and batch), the median flows/s of each side and B / A.
echo "# medians over the rounds, flows/s:"
awk -v a="$a" -v b="$b" '
  $4 ~ /^(moe|dense)$/ && $8 == "flows/s" {
    key = $4 " b" ($6 + 0); v[key, $3, ++n[key, $3]] = $7
    if (!(key in seen)) { seen[key] = 1; order[++keys] = key }
  }
  function median(key, side,   i, j, t, c, x) {
    c = n[key, side]
    for (i = 1; i <= c; i++) x[i] = v[key, side, i]
    for (i = 2; i <= c; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    return c % 2 ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
  }
  END {
    for (k = 1; k <= keys; k++) {
      ma = median(order[k], a); mb = median(order[k], b)
      printf "# %-9s %s %.1f, %s %.1f: x%.3f\n", order[k], a, ma, b, mb, mb / ma
    }
  }' "$rows"
