#!/usr/bin/env python3
"""Traffic-MoE rebuilt in PyTorch, as a second opinion on the Rust engine.

Two jobs:

  check  loads a classifier checkpoint (safetensors, written by `tmoe`),
         runs the batch that `tmoe dump-logits` wrote beside its logits, and
         exits non-zero when the two disagree beyond the tolerance.
  bench  times the classifier forward (or, with --train, a training step:
         cross entropy + 0.02 x aux loss, backward, clipping, AdamW), eager
         and torch.compile, in f32 or bf16 (--dtype), at the shapes of `tmoe
         bench model`, and writes a JSON report with the same row fields, so
         the two reports can be read side by side.

The network follows src/model/net.rs and the CPU reference ops in
src/backend/cpu/ (rmsnorm, mha, rope, attention, moe, router, swiglu, pool,
act): the parameter names and layouts are the checkpoint's, so the model
loads with a strict state-dict match.

Only torch is needed (the safetensors file is parsed here directly).
"""

import argparse
import json
import math
import os
import platform
import struct
import sys
import time
from datetime import datetime, timezone

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:
    sys.exit(f"torch_reference.py needs PyTorch ({e}): pip install torch, then run it with that python")

RMS_EPS = 1e-6
# tmoe bench model's head size and the paper's batch-64 ratios (MoE / dense).
BENCH_CLASSES = 16
PAPER_BATCH64 = {"batch": 64, "throughput": 1.3745, "mean_latency": 1.0 - 0.2725,
                 "peak_memory": 1.0 - 0.2704}
NAMED = {  # d, layers, heads, shared_ff, vocab (src/model/config.rs)
    "tiny": (128, 4, 4, 256, 8192),
    "small": (384, 6, 6, 1024, 65541),
    "base": (768, 12, 12, 2048, 65541),
}


def named_config(name, ffn):
    d, layers, heads, shared_ff, vocab = NAMED[name]
    return {"name": name, "ffn": ffn, "d": d, "layers": layers, "heads": heads,
            "n_experts": 8, "top_k": 2, "shared_ff": shared_ff, "vocab": vocab,
            "max_seq": 512, "rope_theta": 10000.0, "aux_weight": 0.02,
            "n_classes": BENCH_CLASSES}


def read_safetensors(path):
    """Tensors (f32 only: all tmoe writes) and the string metadata."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        lo, hi = t["data_offsets"]
        # bytearray: torch.frombuffer wants a writable buffer.
        buf = bytearray(blob[base + lo:base + hi])
        tensors[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(t["shape"])
    return tensors, meta


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w


class SwiGLU(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(ff, d))
        self.w_up = nn.Parameter(torch.empty(ff, d))
        self.w_down = nn.Parameter(torch.empty(d, ff))

    def forward(self, x):
        return (F.silu(x @ self.w_gate.T) * (x @ self.w_up.T)) @ self.w_down.T


class Experts(nn.Module):
    """N routed SwiGLU experts stacked on a leading axis ([N, f, d], [N, d, f])."""

    def __init__(self, n, d, f):
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(n, f, d))
        self.w_up = nn.Parameter(torch.empty(n, f, d))
        self.w_down = nn.Parameter(torch.empty(n, d, f))


class Moe(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, n, sf = cfg["d"], cfg["n_experts"], cfg["shared_ff"]
        self.k = cfg["top_k"]
        self.router = nn.Parameter(torch.empty(n, d))
        self.shared_gate = nn.Parameter(torch.empty(1, d))
        self.shared = SwiGLU(d, sf)
        self.experts = Experts(n, d, sf // self.k)

    def forward(self, z, routing=None, aux=None, real=None):
        shape = z.shape
        z = z.reshape(-1, shape[-1])
        n, k = self.router.shape[0], self.k
        probs = torch.softmax((z @ self.router.T).float(), dim=-1)
        # Stable descending sort: equal probabilities keep the lower expert
        # first, as the Rust router does (torch.topk promises no tie order).
        w, idx = torch.sort(probs, dim=-1, descending=True, stable=True)
        w, idx = w[:, :k].to(z.dtype), idx[:, :k]
        if routing is not None:
            routing.append(idx.flatten())
        if aux is not None:
            # N * sum_e load_e * prob_e over the real tokens
            # (src/backend/cpu/router.rs lb_loss); load is a constant.
            r = (torch.ones(z.shape[0], device=z.device) if real is None
                 else real.reshape(-1).float())
            n_real = r.sum().clamp(min=1.0)
            load = (F.one_hot(idx, n).float() * r[:, None, None]).sum((0, 1)) / (n_real * k)
            prob = (probs * r[:, None]).sum(0) / n_real
            aux.append(n * (load.detach() * prob).sum())
        out = torch.sigmoid(z @ self.shared_gate.T) * self.shared(z)
        # Group the (token, slot) pairs by expert so each expert runs two
        # dense products on its own rows (src/backend/cpu/moe_permute.rs).
        flat = idx.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=n).tolist()
        x_rows = z[order // k]
        ex = self.experts
        ys = []
        for e, rows in enumerate(torch.split(x_rows, counts)):
            if counts[e]:
                h = F.silu(rows @ ex.w_gate[e].T) * (rows @ ex.w_up[e].T)
                ys.append(h @ ex.w_down[e].T)
        ys = torch.cat(ys)  # under autocast bf16, whatever x_rows is
        y = torch.empty_like(ys)
        y[order] = ys
        out = out + (y.view(-1, k, z.shape[-1]) * w.unsqueeze(-1)).sum(1)
        return out.reshape(shape)


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.wqkv = nn.Parameter(torch.empty(3 * d, d))
        self.wo = nn.Parameter(torch.empty(d, d))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d"]
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.attn = Attention(d)
        self.ffn_norm = nn.Parameter(torch.ones(d))
        if cfg["ffn"] == "moe":
            self.moe = Moe(cfg)
        else:
            ff = cfg["shared_ff"] + cfg["n_experts"] * (cfg["shared_ff"] // cfg["top_k"])
            self.ffn = SwiGLU(d, ff)


class Head(nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(d, d))
        self.b1 = nn.Parameter(torch.zeros(d))
        self.w2 = nn.Parameter(torch.empty(c, d))
        self.b2 = nn.Parameter(torch.zeros(c))


class Classifier(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg["d"]
        self.tok_embed = nn.Parameter(torch.empty(cfg["vocab"], d))
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["layers"]))
        self.norm_f = nn.Parameter(torch.ones(d))
        # Pretraining's model (n_classes 0) has no head: its loss is the LM's.
        self.head = Head(d, cfg["n_classes"]) if cfg["n_classes"] > 0 else None

    def rope_tables(self, s, device):
        """cos/sin [S, hd] for the half-split rotation, angles pos·theta^(-2i/hd)
        in f64 then rounded, as src/backend/cpu/rope.rs does."""
        hd = self.cfg["d"] // self.cfg["heads"]
        i = torch.arange(hd // 2, dtype=torch.float64, device=device)
        inv_freq = self.cfg["rope_theta"] ** (-2.0 * i / hd)
        ang = torch.arange(s, dtype=torch.float64, device=device)[:, None] * inv_freq
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos().float(), ang.sin().float()

    def forward(self, ids, mask=None, routing=None, aux=None, lm=False):
        """Logits [B, C] of right- or otherwise padded ids [B, S] (mask: 1 = real);
        each MoE layer's aux loss is appended to `aux` when given. mask None:
        every token is real, and attention is causal alone, so SDPA may take
        its fastest kernel (flash attention on a GPU); a boolean mask rules
        that out."""
        b, s = ids.shape
        d, nh = self.cfg["d"], self.cfg["heads"]
        hd = d // nh
        cos, sin = (t.to(self.norm_f.dtype) for t in self.rope_tables(s, ids.device))
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        real = None if mask is None else mask.bool()
        if real is not None:
            # Query i sees key j when j <= i and j is a real token.
            causal = torch.ones(s, s, dtype=torch.bool, device=ids.device).tril()
            visible = causal[None, None] & real[:, None, None, :]
            # A query that sees no key outputs zeros (SDPA would give NaN there).
            sees_any = visible.any(-1, keepdim=True)

        def rope(x):
            x1, x2 = x.chunk(2, dim=-1)
            return x * cos + torch.cat([-x2, x1], dim=-1) * sin

        h = self.tok_embed[ids]
        for blk in self.layers:
            z = rmsnorm(h, blk.attn_norm)
            q, k, v = (z @ blk.attn.wqkv.T).view(b, s, 3, nh, hd).unbind(2)
            q, k, v = (t.transpose(1, 2) for t in (rope(q), rope(k), v))
            if real is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
                a = torch.where(sees_any, a, 0.0)
            a = a.transpose(1, 2).reshape(b, s, d)
            h = h + a @ blk.attn.wo.T
            z = rmsnorm(h, blk.ffn_norm)
            h = h + (blk.moe(z, routing, aux, real) if hasattr(blk, "moe") else blk.ffn(z))
        h = rmsnorm(h, self.norm_f)
        if lm:
            # Pretraining: the final hidden states [B, S, d], for the tied LM head.
            return h
        if real is None:
            pooled = h.mean(1)
        else:
            m = real.unsqueeze(-1).to(h.dtype)
            # clamp: a flow without real tokens pools to zeros, not NaN.
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        head = self.head
        g = F.gelu(pooled @ head.w1.T + head.b1, approximate="tanh")
        return g @ head.w2.T + head.b2


def init_random(model, seed):
    """The Rust init's scales (src/model/net.rs): N(0, 0.02), residual-branch
    outputs N(0, 0.02/sqrt(2L)), norms 1, biases 0. Timing needs plausible
    routing, not these exact values."""
    g = torch.Generator().manual_seed(seed)
    out_std = 0.02 / math.sqrt(2 * model.cfg["layers"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.startswith("head.b"):
                p.zero_()
            else:
                std = out_std if name.endswith(("attn.wo", "w_down")) else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)


def load_classifier(path):
    tensors, meta = read_safetensors(path)
    if meta.get("format") != "traffic-moe":
        sys.exit(f"{path}: not a traffic-moe checkpoint (metadata format {meta.get('format')!r})")
    cfg = json.loads(meta["model_config"])
    if cfg["n_classes"] == 0:
        sys.exit(f"{path}: no classification head (n_classes = 0)")
    model = Classifier(cfg)
    # strict: a name or shape the architecture does not have is an error.
    model.load_state_dict(tensors, strict=True)
    return model.eval(), meta


def cmd_check(a):
    dump = json.load(open(a.logits))
    ckpt = a.checkpoint or dump["checkpoint"]
    model, _ = load_classifier(ckpt)
    dev = torch.device(a.device)
    model.to(dev)
    ids = torch.tensor(dump["ids"], dtype=torch.long, device=dev)
    mask = torch.tensor(dump["mask"], dtype=torch.long, device=dev)
    ours = torch.tensor(dump["logits"], dtype=torch.float32)
    with torch.inference_mode():
        theirs = model(ids, mask).float().cpu()
        # Without padding, the bench's path (no mask: causal-only attention,
        # plain mean pooling) must give the same logits too.
        fast = model(ids).float().cpu() if bool(mask.all()) else None
    diff = (theirs - ours).abs()
    scale = ours.abs().max().item()
    p_diff = (theirs.softmax(-1) - ours.softmax(-1)).abs().max().item()
    agree = (theirs.argmax(-1) == ours.argmax(-1)).sum().item()
    b, s = ids.shape
    tol = a.rtol * max(1.0, scale)
    print(f"checkpoint {ckpt}")
    print(f"batch {b} flows x {s} tokens ({int(mask.sum())} real), {ours.shape[1]} classes, "
          f"torch {torch.__version__} on {a.device}")
    print(f"max |logit| {scale:.4f}; max |logit diff| {diff.max().item():.3e} "
          f"(relative to max |logit|: {diff.max().item() / max(scale, 1e-30):.3e}); "
          f"mean {diff.mean().item():.3e}")
    print(f"max |probability diff| {p_diff:.3e}")
    print(f"argmax agreement {agree}/{b}")
    ok = diff.max().item() <= tol and agree == b
    if fast is not None:
        fast_diff = (fast - ours).abs().max().item()
        print(f"no padding: the unmasked path (causal-only attention) gives max |logit diff| "
              f"{fast_diff:.3e}, argmax agreement {(fast.argmax(-1) == ours.argmax(-1)).sum().item()}/{b}")
        ok = ok and fast_diff <= tol and bool((fast.argmax(-1) == ours.argmax(-1)).all())
    print(f"{'PASS' if ok else 'FAIL'}: tolerance {tol:.3e} = {a.rtol:g} x max(1, max |logit|)")
    return 0 if ok else 1


def percentile(v, p):
    """As tmoe bench model: the ceil(n·p)-th smallest."""
    v = sorted(v)
    return v[min(max(math.ceil(len(v) * p), 1), len(v)) - 1]


def expert_load(routing, n):
    """Share of routed (token, slot) pairs per expert, layer after layer."""
    return [(torch.bincount(r.cpu(), minlength=n).double() / r.numel()).tolist() for r in routing]


def random_batch(b, s, vocab, seed, device):
    """Uniform ids over the non-special tokens, no padding (like tmoe bench
    model), so no mask: the model takes its causal-only attention path."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (b, s), generator=g).to(device)


def time_runs(fn, warmup, iters, sync):
    for _ in range(warmup):
        fn()
    sync()
    lat = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        lat.append((time.perf_counter() - t) * 1e3)
    return lat


def train_step_fn(a, cfg, model, ids):
    """One training step as `tmoe bench model --train` times it: classifier
    cross entropy on fixed labels (with --objective lm: next-token cross
    entropy through the tied LM head, as `--objective lm`) + 0.02 x the
    mean aux loss over MoE layers,
    backward, global-norm clipping at 1.0, AdamW (lr 1e-4). With --dtype bf16
    the forward runs under autocast (fp32 weights and optimizer state, bf16
    products), PyTorch's own mixed precision, as the GPU engine trains."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    amp = torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    lm = a.objective == "lm"
    if not lm:
        labels = torch.randint(0, cfg["n_classes"], (ids.shape[0],), generator=g).to(ids.device)
    # The tied table, reached through the compiled wrapper's original module.
    table = getattr(model, "_orig_mod", model).tok_embed

    def step():
        aux = []
        with amp:
            out = model(ids, aux=aux, lm=lm)
            if lm:
                # Next-token loss through the tied LM head: position t predicts t + 1.
                logits = out[:, :-1] @ table.T
        if lm:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
        else:
            loss = F.cross_entropy(out.float(), labels)
        if aux:
            loss = loss + cfg["aux_weight"] * torch.stack(aux).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def lm_forward_fn(model, ids):
    """Pretraining's loss without a backward, as `tmoe bench model
    --objective lm` without --train times it: the forward, the tied LM head
    (in the model's dtype) and the next-token cross entropy (in fp32), under
    inference mode; the loss is read back, as ours is."""
    table = getattr(model, "_orig_mod", model).tok_embed

    def run():
        with torch.inference_mode():
            out = model(ids, lm=True)
            logits = out[:, :-1] @ table.T
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
            return loss.item()

    return run


def bench_model(a, cfg, model, dev, rows, errors):
    on_cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    engines = [("eager", model)]
    if not a.no_compile:
        engines.append(("compile", torch.compile(model)))
    for b in a.batch:
        ids = random_batch(b, a.seq, cfg["vocab"], b, dev)
        routing = []
        with torch.inference_mode():
            model(ids, routing=routing, lm=a.objective == "lm")
        load = expert_load(routing, cfg["n_experts"]) if cfg["ffn"] == "moe" else []
        for engine, m in engines:
            if on_cuda:
                torch.cuda.empty_cache()
                weight_bytes = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()

            if a.train:
                run = train_step_fn(a, cfg, m, ids)
            elif a.objective == "lm":
                run = lm_forward_fn(m, ids)
            else:
                def run(m=m):
                    with torch.inference_mode():
                        m(ids)

            t0 = time.perf_counter()
            try:
                # The first call compiles; it is kept out of the warm-up count.
                run()
                sync()
            except Exception as e:  # noqa: BLE001 - any compile failure is a result to record
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                errors.append({"ffn": cfg["ffn"], "batch": b, "engine": engine, "error": msg})
                print(f"{cfg['ffn']:>5} batch {b:>3} {engine}: failed ({msg})", file=sys.stderr)
                continue
            first_s = time.perf_counter() - t0
            lat = time_runs(run, a.warmup, a.iters, sync)
            mean = sum(lat) / len(lat)
            row = {
                "ffn": cfg["ffn"], "engine": engine, "batch": b, "seq": a.seq,
                "iters": a.iters, "dtype": a.dtype,
                "flows_per_s": b / (mean / 1e3),
                "tokens_per_s": b * a.seq / (mean / 1e3),
                "mean_latency_ms": mean,
                "p99_latency_ms": percentile(lat, 0.99),
                "peak_bytes": torch.cuda.max_memory_allocated() if on_cuda else None,
                "weight_bytes": weight_bytes if on_cuda else None,
                "expert_load": load,
                "first_call_s": first_s,
            }
            rows.append(row)
            peak = f"{row['peak_bytes'] / 2**20:.1f} MiB" if on_cuda else "n/a"
            print(f"{cfg['ffn']:>5} batch {b:>3} {engine:>7}: {row['flows_per_s']:>10.1f} flows/s "
                  f"{row['tokens_per_s']:>12.0f} tokens/s  mean {mean:>9.3f} ms  "
                  f"p99 {row['p99_latency_ms']:>9.3f} ms  peak {peak}  (first call {first_s:.1f} s)",
                  file=sys.stderr)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def cmd_bench(a):
    if a.out and os.path.exists(a.out) and not a.force:
        sys.exit(f"{a.out} exists; pass --force to replace it")
    dev = torch.device(a.device)
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if a.checkpoint:
        model, _ = load_classifier(a.checkpoint)
        models = [(model.cfg, model)]
        config = model.cfg["name"]
    else:
        config = a.config
        ffns = ["moe", "dense"] if a.ffn == "both" else [a.ffn]
        models = []
        for ffn in ffns:
            cfg = named_config(config, ffn)
            cfg["max_seq"] = max(cfg["max_seq"], a.seq)
            if a.objective == "lm":
                cfg["n_classes"] = 0
            m = Classifier(cfg)
            init_random(m, 0)
            models.append((cfg, m.eval()))
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    if a.train:
        # Training keeps fp32 weights; bf16 means autocast (train_step_fn).
        models = [(cfg, m.train()) for cfg, m in models]
    else:
        models = [(cfg, m.to(dtype)) for cfg, m in models]
    if a.objective == "lm" and a.checkpoint:
        sys.exit("--objective lm times pretraining's model on random weights: give no --checkpoint")
    mode = "training step" if a.train else "inference (classifier forward)"
    if a.objective == "lm":
        vocab = models[0][0]["vocab"]
        mode = (f"pretraining step (next-token loss over {vocab} vocabulary entries)" if a.train
                else f"LM forward with its loss, inference mode (next-token loss over {vocab} vocabulary entries)")
    if a.train and a.dtype == "bf16":
        mode += ", autocast bf16 over fp32 weights"
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    print(f"torch_reference bench: {config} on {a.device} ({device_name}), torch {torch.__version__}, "
          f"{threads} threads, sequence {a.seq}, {a.dtype}, {mode}", file=sys.stderr)
    rows, errors, params = [], [], {}
    for cfg, model in models:
        params[cfg["ffn"]] = sum(p.numel() for p in model.parameters())
        bench_model(a, cfg, model.to(dev), dev, rows, errors)
    ratios = []
    for engine in ("eager", "compile"):
        for b in a.batch:
            m = next((r for r in rows if (r["ffn"], r["engine"], r["batch"]) == ("moe", engine, b)), None)
            d = next((r for r in rows if (r["ffn"], r["engine"], r["batch"]) == ("dense", engine, b)), None)
            if m and d:
                peak = m["peak_bytes"] / d["peak_bytes"] if m["peak_bytes"] else None
                ratios.append({"engine": engine, "batch": b,
                               "throughput": m["flows_per_s"] / d["flows_per_s"],
                               "mean_latency": m["mean_latency_ms"] / d["mean_latency_ms"],
                               "peak_memory": peak})
                print(f"MoE/dense {engine:>7} at batch {b:>3}: throughput x{ratios[-1]['throughput']:.3f}, "
                      f"latency x{ratios[-1]['mean_latency']:.3f}", file=sys.stderr)
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": a.device,
        "device_name": device_name,
        "config": config,
        "mode": (("pretrain" if a.objective == "lm" else "train") if a.train
                 else ("lm-forward" if a.objective == "lm" else "inference")),
        "dtype": a.dtype,
        "autocast": a.train and a.dtype == "bf16",
        "params_moe": params.get("moe", 0),
        "params_dense": params.get("dense", 0),
        "rows": rows,
        "ratios": ratios,
        "paper_batch64": PAPER_BATCH64,
        "command": " ".join(sys.argv),
        "implementation": "pytorch",
        "torch_version": torch.__version__,
        "threads": threads,
        "compile_errors": errors,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare logits with `tmoe dump-logits` output")
    c.add_argument("--logits", required=True, help="JSON written by `tmoe dump-logits`")
    c.add_argument("--checkpoint", help="classifier (default: the one named in --logits)")
    c.add_argument("--device", default="cpu")
    # f32 on both sides with different summation orders: observed differences
    # are ~4e-7 of the logit scale; 1e-4 leaves room for that and for routing
    # near-ties, while any modelling mistake (norm eps, RoPE pairing, gate,
    # pooling) moves logits by far more.
    c.add_argument("--rtol", type=float, default=1e-4,
                   help="fail when max |logit diff| > rtol x max(1, max |logit|) (default 1e-4)")
    b = sub.add_parser("bench", help="time the classifier forward, eager and torch.compile")
    b.add_argument("--config", choices=sorted(NAMED), default="tiny")
    b.add_argument("--ffn", choices=["moe", "dense", "both"], default="both")
    b.add_argument("--checkpoint", help="time this classifier instead of random weights")
    b.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[8])
    b.add_argument("--seq", type=int, default=64)
    b.add_argument("--iters", type=int, default=5, help="timed runs per batch size")
    b.add_argument("--warmup", type=int, default=2, help="untimed runs after the first call")
    b.add_argument("--device", default="cpu")
    b.add_argument("--train", action="store_true",
                   help="time a training step (fwd + bwd + clipping + AdamW) instead of inference")
    b.add_argument("--objective", choices=["classify", "lm"], default="classify",
                   help="the classifier's, or pretraining's model and loss (lm: next-token loss "
                        "through the tied LM head, no classifier head; without --train the loss "
                        "alone in inference mode), as tmoe bench model's")
    b.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                   help="inference: weights and activations (bf16: the model cast to bfloat16); "
                        "--train: bf16 runs the forward under autocast over fp32 weights")
    b.add_argument("--threads", type=int, help="torch threads (default: the cores this process may use)")
    b.add_argument("--no-compile", action="store_true", help="eager only")
    b.add_argument("--out", help="write the JSON report here (refuses to overwrite without --force)")
    b.add_argument("--force", action="store_true")
    a = p.parse_args()
    sys.exit(cmd_check(a) if a.cmd == "check" else cmd_bench(a))


if __name__ == "__main__":
    main()
