#!/usr/bin/env python3
"""Training checked against an independent implementation (JAX, float64).

`cargo run --example dump_train_steps` runs a few steps of `train_step` (the
step `tmoe pretrain` and `tmoe finetune` take) on a small random model and
writes the initial weights, each step's batch, loss, aux loss, every
parameter's gradient and the weights after the step. This tool redoes every
step from the same weights and batch with its own model, written from the
design (../shared/DESIGN.md, the paper) and PyTorch's documented
algorithms rather than from our Rust:

  loss      next-token cross entropy (mean over the targets whose position
            and the next are real tokens; LM logits = h · tok_embed^T, tied),
            or the classifier's (masked mean pool -> Linear, GELU(tanh),
            Linear -> cross entropy, mean over the batch);
            plus aux_weight x the mean over MoE layers of
            N · sum_e load_e · prob_e over the real tokens (load_e: share of
            the k·T routed slots, a constant; prob_e: mean softmax prob.).
  grads     jax.grad of that loss, in float64.
  clipping  torch.nn.utils.clip_grad_norm_: coef = max/(norm + 1e-6),
            clamped to 1.
  AdamW     torch.optim.AdamW's pseudocode: p *= 1 - lr·wd, then the
            bias-corrected Adam step, eps outside the square root.
  groups    fine-tuning's layer-wise lr decay lr_l = xi^(L-l)·lr_0 with
            l = 0 the embedding, l = 1..L the blocks, the final norm and
            the head at lr_0; pretraining: every tensor at lr_0.
  decay     no decay for vectors (norm gains, biases) as PyTorch recipes
            do, nor (our documented choice, src/engine/param.rs) for the
            token embedding and the shared-expert gate.
  schedule  linear warm-up to base_lr over warmup_steps steps (the first
            at base/warmup), then cosine to min_lr_ratio·base_lr.

The optimizer replay is fed our gradients, so an optimizer error and a
gradient error cannot hide each other; the gradients are checked on their
own.

Errors, per tensor: gradients max|ours - ref| / max|ref|; weights after a
step max|ours - ref| / max|ref - before| (relative to the step's update,
the only part of the weight the step computes). Tolerance (--rtol 1e-4):
ours is float32, the reference float64, so the error is ours alone. An f32
sum of n terms errs by about sqrt(n)·2^-24 ≈ 6e-8·sqrt(n) of its scale
(n ≤ 128 here: ≈ 7e-7); a gradient passes through ~20 such products and
softmax/norm backwards in 3 layers, which compound to a few 1e-6. 1e-4
leaves a factor > 10 over that, while any wrong formula (a missing factor,
a multiplier off by one layer xi = 0.5, an eps in the wrong place, decay on
the wrong tensor) moves a tensor by 1e-2 or more. A routing decision that
flips between the two (a top-k near-tie) would differ legitimately: the
tool reports the smallest top-k margin it saw (1e-5 has passed at f32).

A GPU-engine dump (--device sim or cuda), or a CPU one with --precision
bf16, multiplies bf16 operands (8-bit
mantissa, 2^-9 relative per rounding) with f32 sums: its losses and
gradients are held to --bf16-rtol 6e-2 (observed at most 3e-2, on the
shared-expert gate, a [1, d] gradient summed over every token, where
bf16 errors of the terms stand out against the cancelling sum; medians 5e-3 to
9e-3 per step), its weights after a step to the
same 1e-4 (the optimizer is f32 there too, and is fed its own gradients).
Its router also decides on bf16 products, so a top-k near-tie (a margin of
3e-5 in one run) can choose another expert than an f64 router would (one
such flip made a router gradient differ by 29 %): for those dumps the
reference decides the top-k from bf16-rounded z and W_r, as the engine does.
That reproduces a flip caused by the router's own rounding, not one caused
by bf16 noise upstream of it: past 3 steps such flips and the drift make
a GPU-engine dump fail the gradient bound (6 steps: a router gradient 14 %
off at step 4), so keep those dumps short; the optimizer part of them
stays exact.

--self-test then reruns every dump that passed with each of MUTANTS, a
known-wrong formula each, and fails unless each is caught by some dump:
give it f32 CPU dumps (under the bf16 bound the erf-GELU mutant, a 1e-3
change, hides).

Usage:
  cargo run --example dump_train_steps -- --task lm --ffn moe --out /tmp/d.safetensors
  python3 tools/train_reference.py [--self-test] /tmp/d.safetensors ...
Needs only `pip install "jax[cpu]"` (numpy comes with it): JAX, not
PyTorch, because PyPI's torch wheel brings some GB of CUDA libraries.
"""

import argparse
import json
import math
import struct
import sys

try:
    import numpy as np
    import jax
    import jax.numpy as jnp
except ImportError as e:
    sys.exit(f'train_reference.py needs JAX ({e}): pip install "jax[cpu]", then run it with that python')

jax.config.update("jax_enable_x64", True)

RMS_EPS = 1e-6
# --self-test: each of these wrong formulas must make the check fail (the
# tolerance has teeth); "" is the formula this tool stands for.
MUTANTS = {
    "llrd-beit": "LLRD with the head one step above the top block (xi^(L+1-l))",
    "decay-embed": "weight decay on the token embedding too",
    "decay-vectors": "weight decay on norm gains and biases too",
    "aux-sum": "aux loss summed over layers instead of averaged",
    "aux-all-tokens": "aux loss over padding tokens too",
    "warmup-from-0": "warm-up starting at lr 0 (step/warmup)",
    "clip-unclamped": "clipping coefficient not clamped to 1",
    "adam-l2": "Adam with L2 (decay added to the gradient) instead of AdamW",
    "eps-in-sqrt": "eps inside the square root of the second moment",
    "gelu-erf": "exact (erf) GELU in the head",
    "lm-mean-all": "LM loss averaged over every position, padding included",
}
MUT = ""
# Set per dump: route from bf16-rounded operands (a GPU-engine dump).
BF16_ROUTING = False


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", name
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + lo:8 + n + hi], dtype=np.float32).reshape(t["shape"])
    return out, json.loads(meta["dump"])


def rmsnorm(x, w):
    return x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * w


def swiglu(x, wg, wu, wd):
    return (jax.nn.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def rope(x, theta):
    """x [B, S, H, hd]; half-split rotation, angle pos · theta^(-2i/hd)."""
    s, hd = x.shape[1], x.shape[-1]
    inv = theta ** (-2.0 * np.arange(hd // 2) / hd)
    ang = np.arange(s)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[None, :, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + jnp.concatenate([-x2, x1], -1) * sin


def moe(p, pre, z, real, cfg, margins):
    """Shared expert gated by sigmoid(z·w_D) + top-k routed experts weighted
    by their (not renormalised) softmax probabilities; and the layer's
    load-balancing loss over the real tokens."""
    n, k = cfg["n_experts"], cfg["top_k"]
    probs = jax.nn.softmax(z @ p[pre + "router"].T, axis=-1)
    # Top-k, ties to the lower index: a stable sort of -probs.
    pn = np.asarray(jax.lax.stop_gradient(probs))
    if BF16_ROUTING:
        # The GPU engine's router multiplies bf16 operands: a top-k near-tie
        # can go the other way there, so the choice is made as it makes it
        # (the weights of the chosen experts stay float64 probabilities).
        def bf16(x):
            return np.asarray(jax.lax.stop_gradient(x)).astype(jnp.bfloat16).astype(np.float32)
        lg = bf16(z) @ bf16(p[pre + "router"]).T
        pn = np.exp(lg - lg.max(-1, keepdims=True))
        pn = pn / pn.sum(-1, keepdims=True)
    idx = np.argsort(-pn, axis=-1, kind="stable")[:, :k]
    srt = -np.sort(-pn, axis=-1)
    margins.append(float((srt[:, k - 1] - srt[:, k]).min()))
    w = jnp.take_along_axis(probs, idx, axis=-1)  # [T, k]
    out = jax.nn.sigmoid(z @ p[pre + "shared_gate"].T) * swiglu(
        z, p[pre + "shared.w_gate"], p[pre + "shared.w_up"], p[pre + "shared.w_down"])
    # Every expert on every token, then the chosen ones picked: exact, simple.
    eg, eu, ed = p[pre + "experts.w_gate"], p[pre + "experts.w_up"], p[pre + "experts.w_down"]
    hid = jax.nn.silu(jnp.einsum("td,nfd->tnf", z, eg)) * jnp.einsum("td,nfd->tnf", z, eu)
    y_all = jnp.einsum("tnf,ndf->tnd", hid, ed)  # [T, N, d]
    y = jnp.take_along_axis(y_all, idx[:, :, None], axis=1)  # [T, k, d]
    out = out + (w[:, :, None] * y).sum(1)
    r = np.ones(real.shape) if MUT == "aux-all-tokens" else real.astype(np.float64)
    n_real = max(r.sum(), 1.0)
    onehot = np.zeros((z.shape[0], n))
    for j in range(k):
        onehot[np.arange(z.shape[0]), idx[:, j]] += 1.0
    load = (onehot * r[:, None]).sum(0) / (n_real * k)  # a constant
    prob = (probs * r[:, None]).sum(0) / n_real
    return out, n * jnp.sum(load * prob)


def forward(p, cfg, task, ids, mask, labels, aux_weight, margins):
    """(total loss, task loss, mean aux loss)."""
    b, s = ids.shape
    d, nh, L = cfg["d"], cfg["heads"], cfg["layers"]
    hd = d // nh
    real = mask.astype(bool)
    vis = np.tril(np.ones((s, s), bool))[None, None] & real[:, None, None, :]
    h = p["tok_embed"][ids]
    auxes = []
    for i in range(L):
        pre = f"layers.{i}."
        z = rmsnorm(h, p[pre + "attn_norm"])
        qkv = (z @ p[pre + "attn.wqkv"].T).reshape(b, s, 3, nh, hd)
        q, kk, v = rope(qkv[:, :, 0], cfg["rope_theta"]), rope(qkv[:, :, 1], cfg["rope_theta"]), qkv[:, :, 2]
        sc = jnp.einsum("bqhe,bkhe->bhqk", q, kk) / math.sqrt(hd)
        sc = jnp.where(vis, sc, -jnp.inf)
        att = jax.nn.softmax(sc, axis=-1)
        att = jnp.where(vis.any(-1, keepdims=True), att, 0.0)
        a = jnp.einsum("bhqk,bkhe->bqhe", att, v).reshape(b, s, d)
        h = h + a @ p[pre + "attn.wo"].T
        z = rmsnorm(h, p[pre + "ffn_norm"]).reshape(b * s, d)
        if cfg["ffn"] == "moe":
            y, aux = moe(p, pre + "moe.", z, real.reshape(-1), cfg, margins)
            auxes.append(aux)
        else:
            y = swiglu(z, p[pre + "ffn.w_gate"], p[pre + "ffn.w_up"], p[pre + "ffn.w_down"])
        h = h + y.reshape(b, s, d)
    h = rmsnorm(h, p["norm_f"])
    if task == "lm":
        logits = h.reshape(b * s, d) @ p["tok_embed"].T
        tgt = np.full((b, s), -1)
        ok = real[:, :-1] & real[:, 1:]
        tgt[:, :-1] = np.where(ok, ids[:, 1:], -1)
        tgt = tgt.reshape(-1)
        sel = np.nonzero(tgt >= 0)[0]
        lse = jax.nn.logsumexp(logits[sel], axis=-1)
        task_loss = jnp.mean(lse - logits[sel, tgt[sel]])
        if MUT == "lm-mean-all":
            task_loss = task_loss * len(sel) / (b * s)
    else:
        m = real[:, :, None].astype(np.float64)
        pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1.0)
        g = jax.nn.gelu(pooled @ p["head.w1"].T + p["head.b1"], approximate=MUT != "gelu-erf")
        logits = g @ p["head.w2"].T + p["head.b2"]
        lse = jax.nn.logsumexp(logits, axis=-1)
        task_loss = jnp.mean(lse - logits[np.arange(b), labels])
    aux = jnp.mean(jnp.stack(auxes)) if auxes else jnp.float64(0.0)
    if MUT == "aux-sum" and auxes:
        aux = aux * len(auxes)
    return task_loss + aux_weight * aux, (task_loss, aux)


def lr_multiplier(name, cfg, task, xi):
    """Fine-tuning: lr_l = xi^(L-l)·lr_0, l = 0 the embedding, 1..L the
    blocks; the final norm and the head at lr_0 (the highest)."""
    if task != "cls":
        return 1.0
    L = cfg["layers"] + (MUT == "llrd-beit")
    if name == "tok_embed":
        return xi ** L
    if name.startswith("layers."):
        return xi ** (L - (int(name.split(".")[1]) + 1))
    return 1.0


def decays(name, shape):
    if MUT == "decay-embed" and name == "tok_embed":
        return True
    if MUT == "decay-vectors" and len(shape) == 1:
        return True
    return len(shape) >= 2 and name != "tok_embed" and not name.endswith("moe.shared_gate")


def schedule(s, sc):
    base, w, total, floor = sc["base_lr"], sc["warmup_steps"], sc["total_steps"], sc["base_lr"] * sc["min_lr_ratio"]
    if s < w:
        return base * (s + (MUT != "warmup-from-0")) / w
    if s >= total:
        return floor
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w)))


def rel(ours, ref, scale):
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(scale, 1e-30))


def rel_stored(ours, ref, update):
    """rel() of weights after a step, less one f32 rounding of the stored
    weight (2^-24 of it: a weight of 1 moved by 1e-3 cannot be nearer
    than 6e-8, 6e-5 of the update)."""
    err = np.abs(ours.astype(np.float64) - ref) - 2.0 ** -24 * np.abs(ref)
    return float(max(err.max(), 0.0) / max(update, 1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dumps", nargs="+", help="files written by `cargo run --example dump_train_steps`")
    ap.add_argument("--rtol", type=float, default=1e-4,
                    help="losses, weights after each step, gradients of a CPU (f32) dump")
    ap.add_argument("--bf16-rtol", type=float, default=6e-2,
                    help="losses and gradients of a dump with bf16 products (GPU engine, or --precision bf16)")
    ap.add_argument("--self-test", action="store_true",
                    help="also check that each known-wrong formula (MUTANTS) fails")
    ap.add_argument("--verbose", action="store_true", help="print every tensor, not only the worst")
    a = ap.parse_args()
    global MUT
    ok_all = True
    passed = []
    for path in a.dumps:
        if check(path, a):
            passed.append(path)
        else:
            ok_all = False
    print("ALL PASS" if ok_all else "SOME FAILED")
    if a.self_test and passed:
        print("== self-test: each wrong formula must fail on some dump")
        for mut, what in MUTANTS.items():
            MUT = mut
            caught = [p for p in passed if not check(p, a, quiet=True)]
            print(f"{'caught' if caught else 'MISSED'}: {mut} ({what}) fails on {len(caught)}/{len(passed)} dumps")
            ok_all &= bool(caught)
        MUT = ""
    return 0 if ok_all else 1


def check(path, a, quiet=False):
    t, doc = read_safetensors(path)
    say = (lambda *_, **__: None) if quiet else print
    global BF16_ROUTING
    BF16_ROUTING = doc.get("device", "cpu") != "cpu" or doc.get("precision") == "bf16"
    grad_rtol = a.bf16_rtol if BF16_ROUTING else a.rtol
    cfg, task = doc["model_config"], doc["task"]
    names = [k[len("init."):] for k in t if k.startswith("init.")]
    b1, b2, eps, wd, clip = doc["beta1"], doc["beta2"], doc["eps"], doc["weight_decay"], doc["clip"]
    xi = doc["llrd"]
    say(f"== {path}: device {doc.get('device', 'cpu')} {doc.get('precision', 'f32')}, task {task}, ffn {cfg['ffn']}, d {cfg['d']}, layers {cfg['layers']}, "
          f"N {cfg['n_experts']} k {cfg['top_k']}, lr {doc['schedule']['base_lr']}, wd {wd}, "
          f"clip {clip}, llrd {xi}, aux {doc['aux_weight']}")
    before = {n: t["init." + n].astype(np.float64) for n in names}
    m = {n: np.zeros_like(before[n]) for n in names}
    v = {n: np.zeros_like(before[n]) for n in names}
    ok = True
    for st in doc["steps"]:
        k = st["step"]
        pre = f"step{k}."
        ids = t[pre + "ids"].astype(np.int64)
        mask = t[pre + "mask"].astype(np.int64)
        labels = t[pre + "labels"].astype(np.int64)
        margins = []
        (loss, (task_loss, aux)), grads = jax.value_and_grad(
            lambda p: forward(p, cfg, task, ids, mask, labels, doc["aux_weight"], margins),
            has_aux=True)({n: jnp.asarray(before[n]) for n in names})
        task_loss, aux = float(task_loss), float(aux)
        ours_g = {n: t[pre + "grad." + n] for n in names}
        g_err = {n: rel(ours_g[n], np.asarray(grads[n]), float(np.abs(grads[n]).max())) for n in names}
        loss_err = abs(st["loss"] - task_loss) / abs(task_loss)
        aux_err = abs(st["aux"] - aux) / max(abs(aux), 1e-30)
        # The optimizer, fed our gradients.
        norm = math.sqrt(sum(float((ours_g[n].astype(np.float64) ** 2).sum()) for n in names))
        coef = clip / (norm + 1e-6)
        if MUT != "clip-unclamped":
            coef = min(coef, 1.0)
        lr = schedule(k - 1, doc["schedule"])
        lr_err = abs(st["lr"] - lr) / max(lr, 1e-30)
        w_err = {}
        after = {}
        for n in names:
            g = ours_g[n].astype(np.float64) * coef
            lr_p = lr * lr_multiplier(n, cfg, task, xi)
            wd_p = wd if decays(n, before[n].shape) else 0.0
            if MUT == "adam-l2":
                g, wd_p = g + wd_p * before[n], 0.0
            p = before[n] * (1 - lr_p * wd_p)
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            denom = np.sqrt(v[n]) / math.sqrt(1 - b2 ** k) + eps
            if MUT == "eps-in-sqrt":
                denom = np.sqrt(v[n] / (1 - b2 ** k) + eps)
            p = p - lr_p / (1 - b1 ** k) * m[n] / denom
            ours_after = t[pre + "after." + n]
            w_err[n] = rel_stored(ours_after, p, float(np.abs(p - before[n]).max()))
            after[n] = p
        worst_g = max(g_err, key=g_err.get)
        worst_w = max(w_err, key=w_err.get)
        step_ok = (max(g_err.values()) <= grad_rtol and max(w_err.values()) <= a.rtol
                   and loss_err <= grad_rtol and aux_err <= grad_rtol and lr_err <= 1e-6
                   and abs(st["grad_norm"] - norm) <= a.rtol * norm)
        say(f"step {k}: loss {st['loss']:.6f} vs {task_loss:.6f} (rel {loss_err:.1e}); "
              f"aux {st['aux']:.6f} vs {aux:.6f} (rel {aux_err:.1e}); lr {st['lr']:.6g} vs {lr:.6g}; "
              f"grad norm {st['grad_norm']:.5f} vs {norm:.5f}, clip coef {coef:.4f}"
              + (f"; smallest top-k margin {min(margins):.1e}" if margins else ""))
        say(f"  grads:   worst {g_err[worst_g]:.2e} ({worst_g}); median {np.median(list(g_err.values())):.1e}")
        say(f"  weights: worst {w_err[worst_w]:.2e} ({worst_w}); median {np.median(list(w_err.values())):.1e}")
        for n in names:
            if a.verbose or g_err[n] > grad_rtol or w_err[n] > a.rtol:
                say(f"    {n:32s} grad {g_err[n]:.2e}  after-step {w_err[n]:.2e}"
                      f"  lr x{lr_multiplier(n, cfg, task, xi):.4g} decay {decays(n, before[n].shape)}")
        ok &= step_ok
        # The next step starts from our weights (an error does not compound).
        before = {n: t[pre + "after." + n].astype(np.float64) for n in names}
    say(("PASS" if ok else "FAIL") + f": tolerance {a.rtol:g} (weights after a step), {grad_rtol:g} (losses, gradients)")
    return ok


if __name__ == "__main__":
    sys.exit(main())
