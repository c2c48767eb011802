//! Every op of the GPU engine's `Backend` against the CPU engine (f32), one at
//! a time, forward and backward, on every executor of `executors(...)` (the
//! simulator in index order and in reversed thread order; the GPU when there
//! is one). `tests/engine_gpu_model.rs` checks the ops composed into a model;
//! this file pins each op down on its own, so a wrong index, stride or
//! missing term shows up at the op that has it.
//!
//! Inputs (activations and parameters) are rounded to bf16 first, so both
//! engines see the same values. Results are compared by relative L2 error
//! `||got - want|| / ||want||` (and cosine `>= 1 - tol`). bf16 keeps 8
//! significant bits: rounding to nearest is off by at most `u = 2^-8`
//! relative (half a step of 2^-7), about 0.4 u RMS on our data. Tolerances:
//!
//! - `EXACT` (0, equal values): copies (`to_host`, `zeros`, `scalar`, the
//!   embedding forward, which gathers bf16-exact table rows).
//! - `FP32` (1e-4): results the GPU engine keeps in fp32 and computes from
//!   the same bf16 values as the CPU, differing only in summation order
//!   (parameter gradients `dW`, `db`, `dtable`, `dgain`; RMSNorm's rstd; the
//!   cross-entropy and load-balancing losses): about 1e-7 measured; 1e-4
//!   leaves room for cancellation.
//! - `ONE` (`u`): one bf16 rounding of an fp32 result (add, SwiGLU, GELU,
//!   RMSNorm, linear `y` and `dx`, mean pooling, `dlogits`, and the LM-head
//!   loss, whose logits are rounded once): every element is off by at most
//!   `u` relative, so the relative L2 error is at most `u` (0.2 to 0.45 u
//!   measured). Elementwise ops are also checked element by element
//!   (`|err| <= u |want|` plus an fp32 floor of 1e-6 of the largest value).
//! - `CHAIN` (`4u = 2^-6`): composites that round intermediates to bf16
//!   (attention: roped Q and K, the probabilities for P·V, the output; MoE:
//!   gate|up pre-activations, the SwiGLU output, expert outputs, the combine;
//!   the fused LM head: the logits, then dlogits): two to four roundings in a
//!   row, each at most `u`. Measured errors stay at about `u` (a factor of
//!   four below; `cargo test --release --test engine_gpu_ops -- --nocapture`
//!   prints them), while a wrong term, index or stride gives errors of
//!   order 1.
//!
//! Routing must not flip between engines: the MoE inputs carry a permutation
//! of (1.5, 0.5, -0.5, -1.5) on the first four coordinates and the router
//! reads expert e's logit from coordinate e, so the top-2 are decided by gaps
//! of 1, and the chosen experts must be equal. A second layer has every
//! token pick experts 0 and 1 (37 tokens): idle experts, empty plan segments.

use std::rc::Rc;

use anyhow::{Context, Result, ensure};
use half::bf16;
use traffic_moe::autograd::{Backend, ParamStore};
use traffic_moe::backend::cpu::Cpu;
use traffic_moe::backend::gpu::engine::{Gpu, GpuParam, GpuParams, GpuTensor};
use traffic_moe::backend::gpu::ops::{gemm, moe_permute};
use traffic_moe::backend::gpu::testing::executors;
use traffic_moe::engine::{AttnDims, FfnDims, MoeDims, Param};

const U: f64 = 1.0 / 256.0;
const EXACT: f64 = 0.0;
const FP32: f64 = 1e-4;
const ONE: f64 = U;
const CHAIN: f64 = 4.0 * U;

const IGNORE: u32 = u32::MAX;

// ---------------------------------------------------------------- helpers

/// Deterministic values (xorshift), rounded to bf16.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in [-scale, scale), rounded to bf16.
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| bf(scale * self.uniform())).collect()
    }
}

fn bf(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// A bf16 activation on the engine's device.
fn up(g: &Gpu, x: &[f32]) -> Result<GpuTensor> {
    let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    Ok(GpuTensor::Bf16(Rc::new(g.executor().upload(&h)?)))
}

fn host(g: &Gpu, x: &GpuTensor) -> Result<Vec<f32>> {
    Ok(g.to_host(x)?)
}

fn param(name: &str, shape: Vec<usize>, value: Vec<f32>) -> Param {
    Param::new(name, shape, value, 1).expect("shape matches")
}

/// Runs `f` on the GPU views of `params` (values, and gradients starting at
/// zero); returns its result and the gradients downloaded (`Param::grad`).
fn with_store<T>(
    g: &Gpu,
    params: &[Param],
    f: impl FnOnce(Vec<&GpuParam>, Vec<&mut GpuParam>) -> Result<T>,
) -> Result<(T, Vec<Param>)> {
    let mut store = GpuParams::upload(g.executor(), params)?;
    let out = {
        let (v, gr) = store.split();
        f(v, gr)?
    };
    Ok((out, store.download_grads()?))
}

fn zeros_like(params: &[Param]) -> Vec<Vec<f32>> {
    params.iter().map(|p| vec![0.0; p.numel()]).collect()
}

fn rel_l2(got: &[f32], want: &[f32]) -> (f64, f64) {
    let (mut e, mut w, mut g, mut dot) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in got.iter().zip(want) {
        let (a, b) = (a as f64, b as f64);
        e += (a - b) * (a - b);
        w += b * b;
        g += a * a;
        dot += a * b;
    }
    if w == 0.0 && g == 0.0 {
        return (0.0, 1.0);
    }
    (
        (e / w.max(1e-30)).sqrt(),
        dot / (g.sqrt() * w.sqrt()).max(1e-30),
    )
}

/// Relative L2 error and cosine within `tol`; prints the measurement.
fn check(g: &Gpu, what: &str, got: &[f32], want: &[f32], tol: f64) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    ensure!(!want.is_empty(), "{what}: nothing to compare");
    ensure!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite values"
    );
    let (e, cos) = rel_l2(got, want);
    println!(
        "{:<12} {what:<32} rel L2 {e:.3e}  cos {cos:.8}  tol {tol:.1e}",
        g.executor().name()
    );
    if tol == 0.0 {
        ensure!(got == want, "{what}: not the same values");
    }
    ensure!(
        e <= tol && (tol == 0.0 || cos >= 1.0 - tol),
        "{what}: rel L2 {e:.3e}, cos {cos:.8} (tol {tol:.1e})"
    );
    Ok(())
}

/// Element by element: one bf16 rounding of the CPU's value, `|err| <= u
/// |want|` plus an fp32 floor relative to the largest value.
/// Every parameter gradient of a composite op at CHAIN (named `op dNAME`,
/// NAME without `prefix`).
fn check_grads(g: &Gpu, op: &str, prefix: &str, got: &[Param], want: &[Vec<f32>]) -> Result<()> {
    for (p, want) in got.iter().zip(want) {
        let what = format!("{op} d{}", p.name.trim_start_matches(prefix));
        check(g, &what, &p.grad, want, CHAIN)?;
    }
    Ok(())
}

/// `f`'s result and the most pool bytes in use during it, above those in
/// use before.
fn peak_bytes<T>(g: &Gpu, f: impl FnOnce() -> Result<T>) -> Result<(usize, T)> {
    let pool = g.executor().pool().context("the engine's caching pool")?;
    let before = pool.stats().in_use;
    pool.reset_peak();
    let out = f()?;
    Ok((pool.stats().peak_in_use - before, out))
}

fn check_elems(what: &str, got: &[f32], want: &[f32]) -> Result<()> {
    let scale = want.iter().fold(0f64, |m, &w| m.max((w as f64).abs()));
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - b as f64).abs();
        let tol = U * (b as f64).abs() + 1e-6 * scale;
        ensure!(
            err <= tol,
            "{what}[{i}]: got {a}, expected {b} (|err| {err:.3e} > {tol:.3e})"
        );
    }
    Ok(())
}

/// Runs `f` with a GPU engine on every executor; a failure names the executor.
fn on_gpus(test: &str, f: impl Fn(&Gpu) -> Result<()>) {
    for ex in executors(test) {
        let g = Gpu::new(&ex);
        if let Err(e) = f(&g) {
            panic!("{test} on {}: {e:#}", ex.name());
        }
    }
}

/// A padding mask `[b, s]` with `lens[i]` real tokens in sequence i.
fn mask(s: usize, lens: &[usize]) -> Vec<u8> {
    (0..lens.len() * s)
        .map(|i| u8::from(i % s < lens[i / s]))
        .collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn tensors_zeros_scalar_to_host() {
    let x = Rng::new(1).vec(77, 3.0);
    on_gpus("tensors", |g| {
        let t = up(g, &x)?;
        ensure!(g.len(&t) == 77, "len {}", g.len(&t));
        check(g, "to_host bf16", &host(g, &t)?, &x, EXACT)?;
        ensure!(host(g, &t)? == x, "to_host is not the uploaded bf16 values");
        let z = g.zeros(45)?;
        let zh = host(g, &z)?;
        let zc = Backend::<f32>::zeros(&Cpu::EXACT, 45)?;
        ensure!(zh == zc, "zeros: {zh:?}");
        // Not a bf16 value: the scalar stays fp32.
        let v = 1.234_567_9f32;
        let s = g.scalar(v)?;
        ensure!(
            host(g, &s)? == Cpu::EXACT.scalar(v)?,
            "scalar: {:?}",
            host(g, &s)?
        );
        Ok(())
    });
}

#[test]
fn add_and_add_assign() {
    let n = 37 * 24;
    let mut r = Rng::new(2);
    let (a, b) = (r.vec(n, 2.0), r.vec(n, 1.0));
    let want = Cpu::EXACT.add(&a, &b).unwrap();
    // The shared path adds to the GPU's bf16 sum: start from it rounded.
    let mut want2: Vec<f32> = want.iter().map(|&v| bf(v)).collect();
    Cpu::EXACT.add_assign(&mut want2, &a).unwrap();
    on_gpus("add", |g| {
        let (ta, tb) = (up(g, &a)?, up(g, &b)?);
        let sum = g.add(&ta, &tb)?;
        let got = host(g, &sum)?;
        check(g, "add", &got, &want, ONE)?;
        check_elems("add", &got, &want)?;
        // In place (the accumulator is not shared).
        let mut acc = up(g, &a)?;
        g.add_assign(&mut acc, &tb)?;
        let got = host(g, &acc)?;
        check(g, "add_assign (in place)", &got, &want, ONE)?;
        check_elems("add_assign", &got, &want)?;
        // Shared accumulator: a fresh sum, the other holder unchanged.
        let mut acc = sum.clone();
        g.add_assign(&mut acc, &ta)?;
        let got = host(g, &acc)?;
        check(g, "add_assign (shared)", &got, &want2, ONE)?;
        check_elems("add_assign (shared)", &got, &want2)?;
        ensure!(
            host(g, &sum)? == host(g, &g.add(&ta, &tb)?)?,
            "add_assign wrote into a shared tensor"
        );
        Ok(())
    });
}

#[test]
fn embedding_with_repeated_ids() {
    let (vocab, d) = (50, 48);
    let mut r = Rng::new(3);
    let table = param("tok_embed", vec![vocab, d], r.vec(vocab * d, 1.0));
    // 37 ids over 13 distinct values: most rows repeat.
    let ids: Vec<u32> = (0..37u32).map(|i| (i * 7) % 13 * 3).collect();
    let dy = r.vec(ids.len() * d, 1.0);
    let want_y = Cpu::EXACT.embedding_fwd(&ids, &table.value, d).unwrap();
    let mut want_dt = vec![0.0; vocab * d];
    Cpu::EXACT
        .embedding_bwd(&ids, &dy, d, &mut want_dt)
        .unwrap();
    Cpu::EXACT
        .embedding_bwd(&ids, &dy, d, &mut want_dt)
        .unwrap();
    on_gpus("embedding", |g| {
        let params = [table.clone()];
        let (y, grads) = with_store(g, &params, |v, mut gr| {
            let y = g.embedding_fwd(&ids, v[0], d)?;
            let tdy = up(g, &dy)?;
            // Twice: the table's gradient accumulates.
            g.embedding_bwd(&ids, &tdy, d, &mut *gr[0])?;
            g.embedding_bwd(&ids, &tdy, d, &mut *gr[0])?;
            host(g, &y)
        })?;
        check(g, "embedding_fwd", &y, &want_y, EXACT)?;
        check(
            g,
            "embedding_bwd dtable (x2)",
            &grads[0].grad,
            &want_dt,
            FP32,
        )
    });
}

#[test]
fn rmsnorm() {
    let (rows, d) = (37, 96);
    let mut r = Rng::new(4);
    let x = r.vec(rows * d, 2.0);
    let w: Vec<f32> = r.vec(d, 0.5).iter().map(|v| bf(1.0 + v)).collect();
    let dy = r.vec(rows * d, 1.0);
    let (want_y, want_rstd) = Cpu::EXACT.rmsnorm_fwd(&x, &w, d).unwrap();
    let mut want_dw = vec![0.0; d];
    let want_dx = Cpu::EXACT
        .rmsnorm_bwd(&x, &w, &want_rstd, &dy, d, &mut want_dw)
        .unwrap();
    let p = [param("norm.weight", vec![d], w.clone())];
    on_gpus("rmsnorm", |g| {
        let ((y, rstd, dx), grads) = with_store(g, &p, |v, mut gr| {
            let tx = up(g, &x)?;
            let (y, rstd) = g.rmsnorm_fwd(&tx, v[0], d)?;
            ensure!(matches!(rstd, GpuTensor::F32(_)), "rstd is not fp32");
            let dx = g.rmsnorm_bwd(&tx, v[0], &rstd, &up(g, &dy)?, d, &mut *gr[0])?;
            Ok((host(g, &y)?, host(g, &rstd)?, host(g, &dx)?))
        })?;
        check(g, "rmsnorm_fwd y", &y, &want_y, ONE)?;
        check(g, "rmsnorm_fwd rstd (fp32)", &rstd, &want_rstd, FP32)?;
        check(g, "rmsnorm_bwd dx", &dx, &want_dx, ONE)?;
        check(g, "rmsnorm_bwd dw", &grads[0].grad, &want_dw, FP32)
    });
}

/// `y = x·Wᵀ (+ b)` and its backward, run twice (dW and db accumulate).
fn linear(rows: usize, din: usize, dout: usize, bias: bool, seed: u64) {
    let mut r = Rng::new(seed);
    let x = r.vec(rows * din, 1.0);
    let w = r.vec(dout * din, 1.0 / (din as f32).sqrt());
    let b = r.vec(dout, 0.5);
    let dy = r.vec(rows * dout, 1.0);
    let mut params = vec![param("lin.weight", vec![dout, din], w.clone())];
    if bias {
        params.push(param("lin.bias", vec![dout], b.clone()));
    }
    let want_y = Cpu::EXACT
        .linear_fwd(&x, &w, bias.then_some(&b[..]), rows, din, dout)
        .unwrap();
    let (mut want_dw, mut want_db) = (vec![0.0; dout * din], vec![0.0; dout]);
    let mut want_dx = Vec::new();
    for _ in 0..2 {
        want_dx = Cpu::EXACT
            .linear_bwd(
                &x,
                &w,
                &dy,
                rows,
                din,
                dout,
                &mut want_dw,
                bias.then_some(&mut want_db[..]),
            )
            .unwrap();
    }
    let name = format!(
        "linear {rows}x{din}x{dout}{}",
        if bias { " +b" } else { "" }
    );
    on_gpus(&name, |g| {
        let ((y, dx), grads) = with_store(g, &params, |v, mut gr| {
            let tx = up(g, &x)?;
            let y = g.linear_fwd(&tx, v[0], v.get(1).copied(), rows, din, dout)?;
            let tdy = up(g, &dy)?;
            let mut dx = None;
            for _ in 0..2 {
                let (dw, db) = match &mut gr[..] {
                    [dw] => (&mut **dw, None),
                    [dw, db] => (&mut **dw, Some(&mut **db)),
                    _ => unreachable!(),
                };
                dx = Some(g.linear_bwd(&tx, v[0], &tdy, rows, din, dout, dw, db)?);
            }
            Ok((host(g, &y)?, host(g, &dx.context("no dx")?)?))
        })?;
        check(g, &format!("{name} y"), &y, &want_y, ONE)?;
        check(g, &format!("{name} dx"), &dx, &want_dx, ONE)?;
        check(
            g,
            &format!("{name} dW (x2)"),
            &grads[0].grad,
            &want_dw,
            FP32,
        )?;
        if bias {
            check(
                g,
                &format!("{name} db (x2)"),
                &grads[1].grad,
                &want_db,
                FP32,
            )?;
        }
        Ok(())
    });
}

#[test]
fn linear_odd_shape() {
    linear(37, 40, 24, false, 5);
    linear(37, 40, 24, true, 6);
}

#[test]
fn linear_scalar_path() {
    // Widths that are not multiples of 8: the GEMMs' scalar-load path.
    linear(37, 13, 7, false, 7);
    linear(37, 13, 7, true, 8);
}

#[test]
fn linear_vector_path() {
    // Everything a multiple of 8 rows and 16 bytes: the cp.async path.
    linear(64, 64, 128, false, 9);
    linear(64, 64, 128, true, 10);
}

#[test]
fn linear_split_k() {
    // Enough rows that dW splits the reduction (2 splits, the second one
    // with a tail) and sums the workspace deterministically.
    assert_eq!(gemm::dw_splits(24, 16, 2100), 2);
    linear(2100, 16, 24, true, 18);
}

#[test]
fn swiglu() {
    let n = 37 * 24;
    let mut r = Rng::new(11);
    let (gate, upv, dy) = (r.vec(n, 4.0), r.vec(n, 2.0), r.vec(n, 1.0));
    let want_y = Cpu::EXACT.swiglu_fwd(&gate, &upv).unwrap();
    let (want_dg, want_du) = Cpu::EXACT.swiglu_bwd(&gate, &upv, &dy).unwrap();
    on_gpus("swiglu", |g| {
        let (tg, tu) = (up(g, &gate)?, up(g, &upv)?);
        let y = host(g, &g.swiglu_fwd(&tg, &tu)?)?;
        let (dg, du) = g.swiglu_bwd(&tg, &tu, &up(g, &dy)?)?;
        let (dg, du) = (host(g, &dg)?, host(g, &du)?);
        check(g, "swiglu_fwd", &y, &want_y, ONE)?;
        check_elems("swiglu_fwd", &y, &want_y)?;
        check(g, "swiglu_bwd dgate", &dg, &want_dg, ONE)?;
        check_elems("swiglu_bwd dgate", &dg, &want_dg)?;
        check(g, "swiglu_bwd dup", &du, &want_du, ONE)?;
        check_elems("swiglu_bwd dup", &du, &want_du)
    });
}

#[test]
fn gelu() {
    let n = 37 * 24;
    let mut r = Rng::new(12);
    let (x, dy) = (r.vec(n, 4.0), r.vec(n, 1.0));
    let want_y = Cpu::EXACT.gelu_fwd(&x).unwrap();
    let want_dx = Cpu::EXACT.gelu_bwd(&x, &dy).unwrap();
    on_gpus("gelu", |g| {
        let tx = up(g, &x)?;
        let y = host(g, &g.gelu_fwd(&tx)?)?;
        let dx = host(g, &g.gelu_bwd(&tx, &up(g, &dy)?)?)?;
        check(g, "gelu_fwd", &y, &want_y, ONE)?;
        check_elems("gelu_fwd", &y, &want_y)?;
        check(g, "gelu_bwd", &dx, &want_dx, ONE)?;
        check_elems("gelu_bwd", &dx, &want_dx)
    });
}

/// Causal attention with RoPE over sequences of `lens` real tokens.
fn attention(s: usize, lens: &[usize], seed: u64) {
    let dims = AttnDims {
        b: lens.len(),
        h: 2,
        s,
        hd: 32,
    };
    let theta = 10000.0;
    let (t, w) = (dims.b * dims.s, dims.h * dims.hd);
    let mut r = Rng::new(seed);
    let qkv = r.vec(t * 3 * w, 2.0);
    let dy = r.vec(t * w, 1.0);
    let m = mask(dims.s, lens);
    let (want_y, saved) = Cpu::EXACT.attention_fwd(&qkv, &m, &dims, theta).unwrap();
    let want_dqkv = Cpu::EXACT.attention_bwd(&saved, &dy, &dims, theta).unwrap();
    on_gpus(&format!("attention {lens:?}"), |g| {
        let (y, saved) = g.attention_fwd(&up(g, &qkv)?, &m, &dims, theta)?;
        let dqkv = host(g, &g.attention_bwd(&saved, &up(g, &dy)?, &dims, theta)?)?;
        check(g, "attention_fwd", &host(g, &y)?, &want_y, CHAIN)?;
        // Q, K and V columns of the fused gradient, each on its own.
        for (p, part) in ["dq", "dk", "dv"].iter().enumerate() {
            let cols = |v: &[f32]| -> Vec<f32> {
                v.chunks(3 * w)
                    .flat_map(|row| row[p * w..(p + 1) * w].to_vec())
                    .collect()
            };
            check(
                g,
                &format!("attention_bwd {part}"),
                &cols(&dqkv),
                &cols(&want_dqkv),
                CHAIN,
            )?;
        }
        // Sequences without a real token: exactly zero, as the CPU engine.
        let y = host(g, &y)?;
        for (bi, _) in lens.iter().enumerate().filter(|(_, l)| **l == 0) {
            let (a, z) = (bi * dims.s, (bi + 1) * dims.s);
            ensure!(
                y[a * w..z * w].iter().all(|&v| v == 0.0)
                    && dqkv[a * 3 * w..z * 3 * w].iter().all(|&v| v == 0.0),
                "sequence {bi} has no real token but an output or a gradient"
            );
        }
        Ok(())
    });
}

#[test]
fn attention_causal_padded() {
    // S = 40: more than one key block, a partial last one.
    attention(40, &[40, 23], 13);
}

#[test]
fn attention_all_padding_sequence() {
    // A sequence without real tokens: no query sees a key; the CPU engine
    // outputs zeros and no gradient.
    attention(24, &[24, 0, 1], 19);
}

/// An MoE layer's parameters, named and ordered as the model's (so the arena
/// packs the gate|up pairs), with a router that reads expert e's logit from
/// coordinate e.
fn moe_params(dm: &MoeDims, r: &mut Rng) -> Vec<Param> {
    let MoeDims {
        d,
        n,
        shared_ff: sf,
        expert_ff: f,
        ..
    } = *dm;
    let sd = 1.0 / (d as f32).sqrt();
    let mut router = vec![0.0; n * d];
    for e in 0..n {
        router[e * d + e] = 1.0;
    }
    let p =
        |name: &str, shape: Vec<usize>, value| param(&format!("layers.0.moe.{name}"), shape, value);
    vec![
        p("router", vec![n, d], router),
        p("shared_gate", vec![1, d], r.vec(d, sd)),
        p("shared.w_gate", vec![sf, d], r.vec(sf * d, 2.0 * sd)),
        p("shared.w_up", vec![sf, d], r.vec(sf * d, 2.0 * sd)),
        p(
            "shared.w_down",
            vec![d, sf],
            r.vec(d * sf, 2.0 / (sf as f32).sqrt()),
        ),
        p("experts.w_gate", vec![n, f, d], r.vec(n * f * d, 2.0 * sd)),
        p("experts.w_up", vec![n, f, d], r.vec(n * f * d, 2.0 * sd)),
        p(
            "experts.w_down",
            vec![n, d, f],
            r.vec(n * d * f, 2.0 / (f as f32).sqrt()),
        ),
    ]
}

/// An MoE layer over `t` tokens (sequences of `lens` real tokens, `s` each)
/// with routing from the levels: `balanced` spreads the tokens over all
/// permutations, otherwise every token picks experts 0 and 1 (2 and 3 get
/// no rows: empty plan segments).
fn moe(s: usize, lens: &[usize], balanced: bool, seed: u64) {
    let dm = MoeDims {
        t: s * lens.len(),
        d: 64,
        n: 4,
        k: 2,
        shared_ff: 64,
        expert_ff: 32,
    };
    let aux_weight = 0.5;
    let mut r = Rng::new(seed);
    let params = moe_params(&dm, &mut r);
    // Token i's first four coordinates: a permutation of the levels.
    let levels = [1.5f32, 0.5, -0.5, -1.5];
    let mut z = r.vec(dm.t * dm.d, 0.5);
    for (i, row) in z.chunks_mut(dm.d).enumerate() {
        let (mut perm, mut rem) = ([0usize, 1, 2, 3], i % 24);
        if balanced {
            for j in (1..4).rev() {
                perm.swap(j, rem % (j + 1));
                rem /= j + 1;
            }
        } else if i % 2 == 1 {
            perm = [1, 0, 3, 2];
        }
        for (e, &j) in perm.iter().enumerate() {
            row[e] = levels[j];
        }
    }
    let resid = r.vec(dm.t * dm.d, 0.1);
    let dy = r.vec(dm.t * dm.d, 1.0);
    let m = mask(s, lens);

    let vals: Vec<&[f32]> = params.iter().map(|p| &p.value[..]).collect();
    let wc: [&[f32]; 8] = vals.try_into().unwrap();
    let (want_y, saved) = Cpu::EXACT.moe_fwd(&z, &resid, &m, wc, &dm, true).unwrap();
    let want_aux = Cpu::EXACT.moe_aux(&saved).unwrap()[0];
    let want_route = Backend::<f32>::moe_routing(&Cpu::EXACT, &saved).unwrap();
    let mut want_g = zeros_like(&params);
    let gc: [&mut [f32]; 8] = want_g
        .iter_mut()
        .map(|g| &mut g[..])
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let want_dz = Cpu::EXACT
        .moe_bwd(&z, wc, &saved, &dy, aux_weight, &dm, gc)
        .unwrap();
    // The levels decide the top-2 by logit gaps of 1: the routing is the
    // two largest levels' coordinates.
    assert_eq!(want_route.len(), dm.t * dm.k);
    for (i, row) in z.chunks(dm.d).enumerate() {
        let mut top: Vec<u32> = want_route[i * dm.k..(i + 1) * dm.k].to_vec();
        top.sort_unstable();
        let mut exp: Vec<u32> = (0..4u32).filter(|&e| row[e as usize] > 0.0).collect();
        exp.sort_unstable();
        assert_eq!(top, exp, "token {i}: cpu routing");
    }

    on_gpus(&format!("moe t={} balanced={balanced}", dm.t), |g| {
        let ((y, aux, route, dz, y_infer), grads) = with_store(g, &params, |v, gr| {
            let w: [&GpuParam; 8] = v.try_into().map_err(|_| anyhow::anyhow!("8 params"))?;
            let mut gr: [&mut GpuParam; 8] =
                gr.try_into().map_err(|_| anyhow::anyhow!("8 grads"))?;
            let (tz, tr) = (up(g, &z)?, up(g, &resid)?);
            // Inference first: it writes no pre-activations and computes no
            // aux loss, and a backward through it is an error that names the
            // op (and adds no gradient).
            let (infer_bytes, (y_infer, saved)) =
                peak_bytes(g, || Ok(g.moe_fwd(&tz, &tr, &m, w, &dm, false)?))?;
            ensure!(
                g.moe_aux(&saved).is_err(),
                "an inference forward computed the aux loss"
            );
            ensure!(
                g.moe_routing(&saved)? == want_route,
                "inference routing differs"
            );
            let err = g
                .moe_bwd(
                    &tz,
                    w,
                    &saved,
                    &up(g, &dy)?,
                    aux_weight,
                    &dm,
                    gr.each_mut().map(|p| &mut **p),
                )
                .err()
                .context("moe_bwd after an inference forward succeeded")?;
            ensure!(err.to_string().starts_with("moe_bwd:"), "{err}");
            let (train_bytes, (y, saved)) =
                peak_bytes(g, || Ok(g.moe_fwd(&tz, &tr, &m, w, &dm, true)?))?;
            // Inference keeps neither the routed rows' bf16 pre-activations
            // (the plan's rows, tile 64 at these sizes) nor the shared
            // expert's: whatever it holds at its peak, training holds at its
            // end, and these besides.
            let rows = moe_permute::max_rows(dm.t, dm.k, dm.n, 64);
            let pre = (rows * 2 * dm.expert_ff + dm.t * 2 * dm.shared_ff) * 2;
            ensure!(
                train_bytes >= infer_bytes + pre,
                "inference peaks at {infer_bytes} B, training at {train_bytes} B"
            );
            let aux = g.to_host(&g.moe_aux(&saved)?)?[0];
            let route = g.moe_routing(&saved)?;
            let dz = g.moe_bwd(&tz, w, &saved, &up(g, &dy)?, aux_weight, &dm, gr)?;
            Ok((host(g, &y)?, aux, route, host(g, &dz)?, host(g, &y_infer)?))
        })?;
        ensure!(
            y_infer == y,
            "the inference forward's output differs from the training forward's"
        );
        ensure!(
            route == want_route,
            "routing differs: {route:?} vs {want_route:?}"
        );
        let rel = ((aux - want_aux) / want_aux).abs() as f64;
        println!(
            "{:<12} {:<32} rel err {rel:.3e}  tol {FP32:.1e}",
            g.executor().name(),
            "moe aux loss"
        );
        ensure!(rel <= FP32, "aux {aux} vs cpu {want_aux}");
        // The MoE's own contribution (|y - resid| is about 0.9 |y| here, so
        // y's rounding does not dominate it), and y with the residual.
        let delta = |y: &[f32]| -> Vec<f32> { y.iter().zip(&resid).map(|(a, b)| a - b).collect() };
        check(g, "moe_fwd (y - resid)", &delta(&y), &delta(&want_y), CHAIN)?;
        check(g, "moe_fwd y", &y, &want_y, CHAIN)?;
        check(g, "moe_bwd dz", &dz, &want_dz, CHAIN)?;
        // An expert no token chose gets no gradient at all.
        for p in grads.iter().filter(|p| p.name.contains(".experts.")) {
            let per = p.grad.len() / dm.n;
            for e in (0..dm.n as u32).filter(|e| !want_route.contains(e)) {
                let blk = &p.grad[e as usize * per..(e as usize + 1) * per];
                ensure!(
                    blk.iter().all(|&v| v == 0.0),
                    "{}: idle expert {e} has a gradient",
                    p.name
                );
            }
        }
        check_grads(g, "moe_bwd", "layers.0.moe.", &grads, &want_g)
    });
}

#[test]
fn moe_packed_pairs() {
    moe(24, &[24, 15], true, 14);
}

#[test]
fn moe_idle_experts_odd_tokens() {
    // 37 tokens, experts 2 and 3 idle.
    moe(37, &[30], false, 20);
}

/// The dense twin's FFN (`resid + down(silu(gate z) * up z)`): the fused
/// gate|up GEMM with SwiGLU in its epilogue against the CPU's two linear
/// layers, SwiGLU and down; CHAIN, as the experts (pre-activations, SwiGLU
/// output and y are each rounded to bf16). Inference gives the same output
/// bit for bit, without the pre-activations, and no backward.
fn ffn(t: usize, seed: u64) {
    let dm = FfnDims { t, d: 64, ff: 96 };
    let (d, ff) = (dm.d, dm.ff);
    let mut r = Rng::new(seed);
    let sd = 1.0 / (d as f32).sqrt();
    let p = |name: &str, shape, value| param(&format!("layers.0.ffn.{name}"), shape, value);
    let params = vec![
        p("w_gate", vec![ff, d], r.vec(ff * d, 2.0 * sd)),
        p("w_up", vec![ff, d], r.vec(ff * d, 2.0 * sd)),
        p(
            "w_down",
            vec![d, ff],
            r.vec(d * ff, 2.0 / (ff as f32).sqrt()),
        ),
    ];
    let z = r.vec(t * d, 1.0);
    let resid = r.vec(t * d, 0.1);
    let dy = r.vec(t * d, 1.0);
    let vals: Vec<&[f32]> = params.iter().map(|p| &p.value[..]).collect();
    let wc: [&[f32]; 3] = vals.try_into().unwrap();
    let (want_y, saved) = Cpu::EXACT.ffn_fwd(&z, &resid, wc, &dm, true).unwrap();
    let mut want_g = zeros_like(&params);
    let gc: [&mut [f32]; 3] = want_g
        .iter_mut()
        .map(|g| &mut g[..])
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let want_dz = Cpu::EXACT.ffn_bwd(&z, wc, &saved, &dy, &dm, gc).unwrap();
    on_gpus(&format!("ffn t={t}"), |g| {
        let ((y, dz, y_infer), grads) = with_store(g, &params, |v, gr| {
            let w: [&GpuParam; 3] = v.try_into().map_err(|_| anyhow::anyhow!("3 params"))?;
            let mut gr: [&mut GpuParam; 3] =
                gr.try_into().map_err(|_| anyhow::anyhow!("3 grads"))?;
            let (tz, tr) = (up(g, &z)?, up(g, &resid)?);
            let (infer_bytes, (y_infer, saved)) =
                peak_bytes(g, || Ok(g.ffn_fwd(&tz, &tr, w, &dm, false)?))?;
            ensure!(saved.is_none(), "an inference forward kept backward state");
            let err = g
                .ffn_bwd(
                    &tz,
                    w,
                    &saved,
                    &up(g, &dy)?,
                    &dm,
                    gr.each_mut().map(|p| &mut **p),
                )
                .err()
                .context("ffn_bwd after an inference forward succeeded")?;
            ensure!(err.to_string().starts_with("ffn_bwd:"), "{err}");
            let (train_bytes, (y, saved)) =
                peak_bytes(g, || Ok(g.ffn_fwd(&tz, &tr, w, &dm, true)?))?;
            // The bf16 pre-activations `[t, 2ff]` are written only to train.
            let pre = t * 2 * ff * 2;
            ensure!(
                train_bytes >= infer_bytes + pre,
                "inference peaks at {infer_bytes} B, training at {train_bytes} B"
            );
            let dz = g.ffn_bwd(&tz, w, &saved, &up(g, &dy)?, &dm, gr)?;
            Ok((host(g, &y)?, host(g, &dz)?, host(g, &y_infer)?))
        })?;
        ensure!(
            y_infer == y,
            "the inference forward's output differs from the training forward's"
        );
        let delta = |y: &[f32]| -> Vec<f32> { y.iter().zip(&resid).map(|(a, b)| a - b).collect() };
        check(g, "ffn_fwd (y - resid)", &delta(&y), &delta(&want_y), CHAIN)?;
        check(g, "ffn_bwd dz", &dz, &want_dz, CHAIN)?;
        check_grads(g, "ffn_bwd", "layers.0.ffn.", &grads, &want_g)
    });
}

#[test]
fn ffn_fused_pair() {
    ffn(45, 21);
}

#[test]
fn mean_pool_padded() {
    let (b, s, d) = (4, 17, 40);
    let mut r = Rng::new(15);
    let x = r.vec(b * s * d, 2.0);
    let dy = r.vec(b * d, 1.0);
    // A full, a short, an empty (all padding) and a one-token sequence.
    let m = mask(s, &[17, 5, 0, 1]);
    let want_y = Cpu::EXACT.mean_pool_fwd(&x, &m, b, s, d).unwrap();
    let want_dx = Cpu::EXACT.mean_pool_bwd(&dy, &m, b, s, d).unwrap();
    on_gpus("mean_pool", |g| {
        let y = host(g, &g.mean_pool_fwd(&up(g, &x)?, &m, b, s, d)?)?;
        let dx = host(g, &g.mean_pool_bwd(&up(g, &dy)?, &m, b, s, d)?)?;
        check(g, "mean_pool_fwd", &y, &want_y, ONE)?;
        check_elems("mean_pool_fwd", &y, &want_y)?;
        check(g, "mean_pool_bwd", &dx, &want_dx, ONE)?;
        check_elems("mean_pool_bwd", &dx, &want_dx)
    });
}

#[test]
fn xent_with_ignored_targets() {
    let (t, v) = (37, 50);
    let mut r = Rng::new(16);
    let logits = r.vec(t * v, 4.0);
    let targets: Vec<u32> = (0..t as u32)
        .map(|i| {
            if i % 5 == 3 {
                IGNORE
            } else {
                (i * 11) % v as u32
            }
        })
        .collect();
    let dloss = 0.75;
    let want_loss: f32 = Cpu::EXACT.xent_fwd(&logits, &targets, IGNORE).unwrap();
    let want_dl = Cpu::EXACT
        .xent_bwd(&logits, &targets, IGNORE, dloss)
        .unwrap();
    let none = vec![IGNORE; t];
    on_gpus("xent", |g| {
        let tl = up(g, &logits)?;
        let loss = g.xent_fwd(&tl, &targets, IGNORE)?;
        let dl = host(g, &g.xent_bwd(&tl, &targets, IGNORE, dloss)?)?;
        check(g, "xent_fwd loss", &[loss], &[want_loss], FP32)?;
        check(g, "xent_bwd dlogits", &dl, &want_dl, ONE)?;
        let ignored: Vec<f32> = dl
            .chunks(v)
            .zip(&targets)
            .filter(|(_, y)| **y == IGNORE)
            .flat_map(|(row, _)| row.to_vec())
            .collect();
        ensure!(
            ignored.iter().all(|&x| x == 0.0),
            "ignored rows have a gradient"
        );
        // Every target ignored: no loss, no gradient (as the CPU engine).
        let loss0 = g.xent_fwd(&tl, &none, IGNORE)?;
        let want0: f32 = Cpu::EXACT.xent_fwd(&logits, &none, IGNORE).unwrap();
        ensure!(loss0 == want0, "all ignored: loss {loss0} vs cpu {want0}");
        let dl0 = host(g, &g.xent_bwd(&tl, &none, IGNORE, dloss)?)?;
        ensure!(dl0.iter().all(|&x| x == 0.0), "all ignored: a gradient");
        Ok(())
    });
}

/// In one block of rows, and in blocks of 64 rows (the last one partial),
/// as the paper's shapes run (base at batch 64: 16 blocks of 2,048 rows);
/// through the plain forward and through the training pass (which makes
/// the gradients for `dloss = 1` in the forward), for `dloss` 1 and 0.75.
#[test]
fn lm_head_xent_tied_table() {
    let (t, d, vocab) = (150, 64, 75);
    let mut r = Rng::new(17);
    let h = r.vec(t * d, 1.0);
    let table = param("tok_embed", vec![vocab, d], r.vec(vocab * d, 0.5));
    let targets: Vec<u32> = (0..t as u32)
        .map(|i| {
            if i % 4 == 1 {
                IGNORE
            } else {
                (i * 13) % vocab as u32
            }
        })
        .collect();
    let params = [table.clone()];
    for dloss in [1.0, 0.75] {
        let (want_loss, saved) = Cpu::EXACT
            .lm_head_xent_fwd(&h, &table.value, d, &targets, IGNORE)
            .unwrap();
        let mut want_dt = vec![0.0; vocab * d];
        let want_dh = Cpu::EXACT
            .lm_head_xent_bwd(&h, &table.value, d, &targets, &saved, dloss, &mut want_dt)
            .unwrap();
        on_gpus("lm_head_xent", |g| {
            // The default block holds all 150 rows; 64-row blocks make three.
            for (what, g) in [
                ("one block", g.clone()),
                (
                    "blocks of 64 rows",
                    g.clone().with_lm_head_block(64 * vocab),
                ),
            ] {
                for train in [false, true] {
                    let io = (&h[..], &targets[..], &params[..], dloss);
                    let want = (want_loss, &want_dh[..], &want_dt[..]);
                    lm_head_against_cpu(&g, train, io, want)
                        .with_context(|| format!("{what}, training pass {train}, dloss {dloss}"))?;
                }
            }
            Ok(())
        });
    }
}

/// [`lm_head_xent_tied_table`]'s check on one engine (its training pass
/// when `train`): `h`, `targets`, the table and `dloss` in, the CPU engine's
/// loss, `dh` and `dtable` expected.
fn lm_head_against_cpu(
    g: &Gpu,
    train: bool,
    (h, targets, params, dloss): (&[f32], &[u32], &[Param], f32),
    (want_loss, want_dh, want_dt): (f32, &[f32], &[f32]),
) -> Result<()> {
    let d = params[0].shape[1];
    let ((loss, dh), grads) = with_store(g, params, |v, mut gr| {
        let th = up(g, h)?;
        let (loss, saved) = if train {
            g.lm_head_xent_train_fwd(&th, v[0], d, targets, IGNORE)?
        } else {
            g.lm_head_xent_fwd(&th, v[0], d, targets, IGNORE)?
        };
        let dh = g.lm_head_xent_bwd(&th, v[0], d, targets, &saved, dloss, &mut *gr[0])?;
        Ok((loss, host(g, &dh)?))
    })?;
    // The logits are rounded to bf16 before the loss: ONE per logit.
    check(g, "lm_head_xent_fwd loss", &[loss], &[want_loss], ONE)?;
    check(g, "lm_head_xent_bwd dh", &dh, want_dh, CHAIN)?;
    check(g, "lm_head_xent_bwd dtable", &grads[0].grad, want_dt, CHAIN)?;
    let ignored = dh
        .chunks(d)
        .zip(targets)
        .filter(|(_, y)| **y == IGNORE)
        .all(|(row, _)| row.iter().all(|&x| x == 0.0));
    ensure!(ignored, "ignored rows have a gradient");
    Ok(())
}

/// The embedding table's vocabulary padded to a multiple of 8 rows in the
/// arena (the LM head's GEMMs then take the 16-byte path): zero rows on the
/// device, none in what comes back.
#[test]
fn embedding_rows_padded_on_device_only() {
    let (vocab, d) = (13, 8);
    let table = param("tok_embed", vec![vocab, d], Rng::new(3).vec(vocab * d, 1.0));
    let other = param("norm_f", vec![d], vec![1.0; d]);
    let params = [table.clone(), other];
    on_gpus("embedding_padding", |g| {
        let store = GpuParams::upload(g.executor(), &params)?;
        let t = store.values()[0];
        ensure!(t.used == vocab * d, "used {}", t.used);
        ensure!(t.w.len() == 16 * d, "{} elements on the device", t.w.len());
        let dev = g.executor().download(&t.w)?;
        ensure!(dev[..vocab * d] == table.value[..], "the table's rows");
        ensure!(
            dev[vocab * d..].iter().all(|&x| x == 0.0),
            "padding rows not zero"
        );
        let back = store.download()?;
        ensure!(back[0].value == table.value, "downloaded table");
        ensure!(
            back[0].grad.len() == vocab * d,
            "downloaded gradient length"
        );
        Ok(())
    });
}
