#!/usr/bin/env python3
"""Markdown tables of one same-run comparison with PyTorch.

Reads the JSON files `tools/classify-figures.sh torch` (or `train`) wrote
into one folder (same-run-{tmoe,torch}-CFG[-bf16|-f32|-train|-train-bf16].json,
and from `tools/classify-figures.sh lm`, same-run-{tmoe,torch}-CFG-{lm,pretrain}-{f32,bf16}.json)
and prints, per config, flows/s side by side and the ratios issue 8's CPU
goal (>= 1.5x PyTorch eager) is judged on:
  inference: ours / PyTorch eager at the same precision (and / the better of
             eager and torch.compile), and ours bf16 / their f32;
  training:  ours f32 / their f32 eager, and the best of ours / the better of
             their f32 eager and autocast bf16;
  LM forward with its loss, and pretraining's step: tokens/s, ours / PyTorch
             eager at the same precision (and / the better of eager and
             compile), and our MoE / our dense twin.
A ratio >= 1.5 is bold. Usage: tools/same-run-table.py DIR
"""
import json
import os
import sys


def rows(path, field="flows_per_s"):
    """{(ffn, batch): {engine: field}} of one report, or None."""
    if not os.path.exists(path):
        return None
    out = {}
    for r in json.load(open(path))["rows"]:
        out.setdefault((r["ffn"], r["batch"]), {})[r.get("engine", "ours")] = r[field]
    return out


def ratio(a, b):
    if a is None or b is None:
        return "n/a"
    x = a / b
    s = f"x{x:.2f}"
    return f"**{s}**" if x >= 1.5 else s


def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def versus(ours, theirs, key, show):
    """The f32 and bf16 cells of one row: ours vs their eager (ratio; against
    the better of eager and compile), numbers written by `show`."""
    cells = []
    for p in ("f32", "bf16"):
        o = ours[p][key]["ours"]
        t = theirs[p].get(key, {})
        best = max(t.values()) if t else None
        cells.append(f"{show(o)} vs {show(t.get('eager'))}: {ratio(o, t.get('eager'))} ({ratio(o, best)})")
    return cells


def inference(d, cfg):
    ours = {p: rows(f"{d}/same-run-tmoe-{cfg}-{p}.json") for p in ("f32", "bf16")}
    theirs = {"f32": rows(f"{d}/same-run-torch-{cfg}.json"),
              "bf16": rows(f"{d}/same-run-torch-{cfg}-bf16.json")}
    if not all(ours.values()) or not all(theirs.values()):
        return
    print(f"\nInference ({cfg}), flows/s: ours vs PyTorch eager (ratio; against the better of eager and compile)\n")
    print("| model | batch | f32 | bf16 | ours bf16 / their f32 eager |")
    print("|---|---|---|---|---|")
    for key in sorted(ours["f32"], key=lambda k: (k[0] != "moe", k[1])):
        cells = versus(ours, theirs, key, fmt)
        cross = ratio(ours["bf16"][key]["ours"], theirs["f32"][key].get("eager"))
        name = "Traffic-MoE" if key[0] == "moe" else "dense twin"
        print(f"| {name} | {key[1]} | {cells[0]} | {cells[1]} | {cross} |")


def training(d, cfg):
    ours32 = rows(f"{d}/same-run-tmoe-{cfg}-train.json")
    ours16 = rows(f"{d}/same-run-tmoe-{cfg}-train-bf16.json")
    t32 = rows(f"{d}/same-run-torch-{cfg}-train.json")
    t16 = rows(f"{d}/same-run-torch-{cfg}-train-bf16.json")
    if not (ours32 and t32):
        return
    print(f"\nTraining step ({cfg}), flows/s\n")
    print("| model | batch | ours f32 | ours bf16 | PyTorch f32 eager / compile | PyTorch autocast bf16 | ours f32 / their f32 eager | best of ours / better of their eager and autocast |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(ours32, key=lambda k: (k[0] != "moe", k[1])):
        o32 = ours32[key]["ours"]
        o16 = ours16[key]["ours"] if ours16 else None
        e32 = t32[key].get("eager")
        c32 = t32[key].get("compile")
        a16 = t16[key].get("eager") if t16 else None
        best_ours = max(v for v in (o32, o16) if v is not None)
        best_theirs = max(v for v in (e32, a16) if v is not None)
        name = "Traffic-MoE" if key[0] == "moe" else "dense twin"
        print(f"| {name} | {key[1]} | {fmt(o32)} | {fmt(o16)} | {fmt(e32)} / {fmt(c32)} | {fmt(a16)} "
              f"| {ratio(o32, e32)} | {ratio(best_ours, best_theirs)} |")


def lm(d, cfg, mode):
    """mode: "lm" (the LM forward with its loss) or "pretrain" (the step)."""
    ours = {p: rows(f"{d}/same-run-tmoe-{cfg}-{mode}-{p}.json", "tokens_per_s") for p in ("f32", "bf16")}
    theirs = {p: rows(f"{d}/same-run-torch-{cfg}-{mode}-{p}.json", "tokens_per_s") for p in ("f32", "bf16")}
    if not all(ours.values()) or not all(theirs.values()):
        return
    what = "LM forward with its loss" if mode == "lm" else "Pretraining step"
    print(f"\n{what} ({cfg}), tokens/s: ours vs PyTorch eager (ratio; against the better of eager and compile)\n")
    print("| model | batch | f32 | bf16 | MoE / dense, ours (f32, bf16) |")
    print("|---|---|---|---|---|")
    for key in sorted(ours["f32"], key=lambda k: (k[0] != "moe", k[1])):
        cells = versus(ours, theirs, key, lambda v: "n/a" if v is None else f"{v:,.0f}")
        moe_dense = ""
        if key[0] == "moe" and ("dense", key[1]) in ours["f32"]:
            moe_dense = ", ".join(
                f"x{ours[p][key]['ours'] / ours[p][('dense', key[1])]['ours']:.2f}" for p in ("f32", "bf16"))
        name = "Traffic-MoE" if key[0] == "moe" else "dense twin"
        print(f"| {name} | {key[1]} | {cells[0]} | {cells[1]} | {moe_dense} |")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    for cfg in ("tiny", "small"):
        inference(d, cfg)
        training(d, cfg)
        lm(d, cfg, "lm")
        lm(d, cfg, "pretrain")


if __name__ == "__main__":
    main()
