//! cuda/attention.cu (FlashAttention-2 forward and backward on tensor cores)
//! against backend::cpu::attention in f64 on the same bf16 inputs, read from and
//! written to the fused QKV layout `[B·S, 3·H·hd]`.
//!
//! Accuracy is the FlashAttention rule: the kernel's error against the f64
//! reference is at most twice that of a naive bf16 implementation (every
//! stored tensor rounded to bf16: scores, probabilities, O; dP, dS, dQ, dK, dV),
//! in max and in mean. Exact zeros where the semantics demand them: a query
//! that sees no key (O = 0, dQ = 0), a masked key (dK = dV = 0). Sequences of
//! 1..150 (not multiples of the 64/128 blocks), head_dim 32 and 64, masks with
//! padded tails, holes and a fully masked sequence; a repeat run is
//! bit-identical.

mod kernel_util;

use half::bf16;
use kernel_util::*;
use rand::Rng;
use traffic_moe::backend::cpu::attention::{self, Dims};
use traffic_moe::backend::gpu::Executor;
use traffic_moe::backend::gpu::ops::attention::{self as gattn, AttnSaved, AttnShape, Rows};
use traffic_moe::backend::gpu::testing::{assert_close, run_on_executors};

/// The mask of batch element 1 (batch 0 always has a padded tail, the last
/// third, and position 0 masked, so that query 0 sees no key).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Second {
    /// Random holes (30 %).
    Holes,
    /// Every key visible: whole blocks take the kernels' unmasked path.
    All,
    /// Nothing visible: every query sees no key.
    None,
}

/// (heads, seq, head_dim, batch 1's mask); batch 2.
const CASES: [(usize, usize, usize, Second); 9] = [
    (3, 1, 64, Second::Holes),
    (2, 17, 32, Second::Holes),
    (2, 17, 64, Second::None),
    (2, 64, 64, Second::Holes),
    (3, 64, 32, Second::All),
    (2, 100, 32, Second::Holes),
    (3, 100, 64, Second::All),
    (2, 150, 64, Second::Holes),
    (2, 150, 32, Second::All),
];

fn make_mask(rng: &mut rand::rngs::StdRng, s: usize, second: Second) -> Vec<u8> {
    let valid = s - s / 3;
    let mut m: Vec<u8> = (0..s).map(|j| u8::from(j > 0 && j < valid)).collect();
    m.extend((0..s).map(|j| {
        u8::from(match second {
            Second::Holes => j == 0 || rng.random::<f32>() > 0.3,
            Second::All => true,
            Second::None => false,
        })
    }));
    m
}

/// `[B·S, w]` token rows (column block `part` of rows `ld` wide) -> `[B, H, S, hd]`.
fn to_heads(x: &[f64], d: &Dims, ld: usize, part: usize) -> Vec<f64> {
    let mut out = vec![0.0; d.b * d.h * d.s * d.hd];
    for b in 0..d.b {
        for s in 0..d.s {
            for h in 0..d.h {
                let src = (b * d.s + s) * ld + (part * d.h + h) * d.hd;
                let dst = ((b * d.h + h) * d.s + s) * d.hd;
                out[dst..dst + d.hd].copy_from_slice(&x[src..src + d.hd]);
            }
        }
    }
    out
}

fn visible(mask: &[u8], d: &Dims, b: usize, i: usize, j: usize) -> bool {
    j <= i && mask[b * d.s + j] != 0
}

fn r(x: f64) -> f64 {
    bf16::from_f64(x).to_f64()
}

/// Head-major tensors of one case.
struct Heads {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    dout: Vec<f64>,
}

/// The naive bf16 implementation (PyTorch eager in bf16: every stored tensor
/// rounded, fp32-or-better arithmetic inside each op): [o, dq, dk, dv].
fn naive_bf16(x: &Heads, mask: &[u8], d: &Dims) -> [Vec<f64>; 4] {
    let (s, hd) = (d.s, d.hd);
    let scale = 1.0 / (hd as f64).sqrt();
    let n = x.q.len();
    let mut res = [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]];
    let dotp = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for bh in 0..d.b * d.h {
        let b = bh / d.h;
        let row = |t: &[f64], i: usize| t[(bh * s + i) * hd..][..hd].to_vec();
        let mut p = vec![0.0; s * s];
        let mut ds = vec![0.0; s * s];
        for i in 0..s {
            let sc: Vec<f64> = (0..s)
                .map(|j| r(r(dotp(&row(&x.q, i), &row(&x.k, j))) * scale))
                .collect();
            let vis: Vec<usize> = (0..s).filter(|&j| visible(mask, d, b, i, j)).collect();
            if vis.is_empty() {
                continue;
            }
            let mx = vis.iter().map(|&j| sc[j]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = vis.iter().map(|&j| (sc[j] - mx).exp()).sum();
            for &j in &vis {
                p[i * s + j] = r((sc[j] - mx).exp() / sum);
            }
            let dp: Vec<f64> = (0..s)
                .map(|j| r(dotp(&row(&x.dout, i), &row(&x.v, j))))
                .collect();
            let dot: f64 = vis.iter().map(|&j| p[i * s + j] * dp[j]).sum();
            for &j in &vis {
                ds[i * s + j] = r(r(p[i * s + j] * (dp[j] - dot)) * scale);
            }
        }
        for i in 0..s {
            for c in 0..hd {
                let at = |t: &[f64], j: usize| t[(bh * s + j) * hd + c];
                let o: f64 = (0..s).map(|j| p[i * s + j] * at(&x.v, j)).sum();
                let dq: f64 = (0..s).map(|j| ds[i * s + j] * at(&x.k, j)).sum();
                let dk: f64 = (0..s).map(|j| ds[j * s + i] * at(&x.q, j)).sum();
                let dv: f64 = (0..s).map(|j| p[j * s + i] * at(&x.dout, j)).sum();
                let idx = (bh * s + i) * hd + c;
                for (t, val) in res.iter_mut().zip([o, dq, dk, dv]) {
                    t[idx] = r(val);
                }
            }
        }
    }
    res
}

/// The FlashAttention rule, plus the usual no-bias check through assert_close.
fn check_fa(what: &str, got: &[f64], want: &[f64], naive: &[f64]) -> anyhow::Result<()> {
    let verbose = std::env::var("TMOE_ATTN_VERBOSE").is_ok();
    let stats = |x: &[f64]| {
        let e: Vec<f64> = x.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
        let max = e.iter().cloned().fold(0.0, f64::max);
        (max, e.iter().sum::<f64>() / e.len() as f64)
    };
    let (kmax, kmean) = stats(got);
    let (nmax, nmean) = stats(naive);
    // Inputs are O(1): an absolute floor far below a bf16 ulp for cancellations
    // the naive path gets exactly (S = 1: dQ = 0, fp32 sums in another order).
    let floor = 1e-6;
    if verbose {
        println!("{what}: max {kmax:.3e} mean {kmean:.3e}; naive max {nmax:.3e} mean {nmean:.3e}");
    }
    anyhow::ensure!(
        kmax <= 2.0 * nmax + floor && kmean <= 2.0 * nmean + floor,
        "{what}: error vs f64 max {kmax:.3e} mean {kmean:.3e}; naive bf16 max {nmax:.3e} mean {nmean:.3e}"
    );
    assert_close(what, got, want, 2.0 * nmax + floor, 0.0)?;
    Ok(())
}

/// Kernel outputs in head-major f64: o, lse, dq, dk, dv, and the raw bits.
struct GpuOut {
    o: Vec<f64>,
    lse: Vec<f32>,
    grads: [Vec<f64>; 3],
    bits: (Vec<bf16>, Vec<f32>, Vec<bf16>),
}

#[allow(clippy::too_many_arguments)]
fn run_gpu(
    ex: &Executor,
    qkv: &[bf16],
    dout: &[bf16],
    mask: &[u8],
    d: &Dims,
    o_pad: usize,
) -> anyhow::Result<GpuOut> {
    let shape = AttnShape {
        batch: d.b,
        seq: d.s,
        heads: d.h,
        head_dim: d.hd,
    };
    let w = d.h * d.hd;
    let rows = d.b * d.s;
    let qkv_b = ex.upload(qkv)?;
    let mask_b = ex.upload(mask)?;
    // O in a strided view when o_pad > 0 (offset o_pad, ld w + o_pad).
    let o_b = ex.alloc_zeroed::<bf16>(rows * (w + o_pad) + o_pad)?;
    let o_view = Rows {
        buf: &o_b,
        offset: o_pad,
        ld: w + o_pad,
    };
    let lse_b = ex.alloc_zeroed::<f32>(shape.rows())?;
    let [q, k, v] = Rows::qkv(&qkv_b, &shape);
    gattn::fwd(ex, q, k, v, &mask_b, o_view, &lse_b, &shape)?;

    let do_b = ex.upload(dout)?;
    let dqkv_b = ex.alloc_zeroed::<bf16>(rows * 3 * w)?;
    let delta = ex.alloc_zeroed::<f32>(shape.rows())?;
    let saved = AttnSaved {
        q,
        k,
        v,
        out: o_view,
        lse: &lse_b,
        mask: &mask_b,
    };
    let [dq, dk, dv] = Rows::qkv(&dqkv_b, &shape);
    gattn::bwd(
        ex,
        &saved,
        Rows::dense(&do_b, &shape),
        dq,
        dk,
        dv,
        &delta,
        &shape,
    )?;
    ex.synchronize()?;

    let o_bits = ex.download(&o_b)?;
    let lse = ex.download(&lse_b)?;
    let dqkv = ex.download(&dqkv_b)?;
    let o_f = bf_f64(&o_bits);
    let o = to_heads(&o_f[o_pad..], d, w + o_pad, 0);
    let dqkv_f = bf_f64(&dqkv);
    let grads = [0, 1, 2].map(|p| to_heads(&dqkv_f, d, 3 * w, p));
    Ok(GpuOut {
        o,
        lse: lse.clone(),
        grads,
        bits: (o_bits, lse, dqkv),
    })
}

fn check_case(
    ex: &Executor,
    seed: u64,
    (h, s, hd, second): (usize, usize, usize, Second),
) -> anyhow::Result<()> {
    let d = Dims { b: 2, h, s, hd };
    let what = format!("B 2 H {h} S {s} hd {hd} mask {second:?}");
    let mut rng = rng(seed);
    let w = h * hd;
    let (qkv, qkv_f) = bf16_input(&mut rng, 2 * s * 3 * w, 2.0);
    let (dout, dout_f) = bf16_input(&mut rng, 2 * s * w, 1.0);
    let mask = make_mask(&mut rng, s, second);
    let x = Heads {
        q: to_heads(&qkv_f, &d, 3 * w, 0),
        k: to_heads(&qkv_f, &d, 3 * w, 1),
        v: to_heads(&qkv_f, &d, 3 * w, 2),
        dout: to_heads(&dout_f, &d, w, 0),
    };
    let n = x.q.len();

    // f64 reference.
    let mut o_ref = vec![0.0; n];
    let mut att = vec![0.0; d.b * d.h * s * s];
    attention::fwd(&x.q, &x.k, &x.v, &mask, &d, &mut o_ref, &mut att);
    let mut g_ref = [vec![0.0; n], vec![0.0; n], vec![0.0; n]];
    {
        let [dq, dk, dv] = &mut g_ref;
        attention::bwd(&x.q, &x.k, &x.v, &att, &x.dout, &d, dq, dk, dv);
    }
    let naive = naive_bf16(&x, &mask, &d);

    let o_pad = if s % 2 == 0 { 8 } else { 0 };
    let got = run_gpu(ex, &qkv, &dout, &mask, &d, o_pad)?;
    check_fa(&format!("attn O ({what})"), &got.o, &o_ref, &naive[0])?;
    for (i, name) in ["dQ", "dK", "dV"].iter().enumerate() {
        check_fa(
            &format!("attn {name} ({what})"),
            &got.grads[i],
            &g_ref[i],
            &naive[i + 1],
        )?;
    }

    // logsumexp of the visible scaled scores; exact zeros where required.
    let scale = 1.0 / (hd as f64).sqrt();
    for bh in 0..d.b * h {
        let b = bh / h;
        for i in 0..s {
            let vis: Vec<usize> = (0..s).filter(|&j| visible(&mask, &d, b, i, j)).collect();
            let lse = got.lse[bh * s + i] as f64;
            let row = |t: &[f64], j: usize| t[(bh * s + j) * hd..][..hd].to_vec();
            if vis.is_empty() {
                anyhow::ensure!(
                    lse == f64::NEG_INFINITY,
                    "{what}: lse of an empty row is {lse}"
                );
                anyhow::ensure!(
                    row(&got.o, i)
                        .iter()
                        .chain(&row(&got.grads[0], i))
                        .all(|&v| v == 0.0),
                    "{what}: query {i} (b {b}) sees no key but has a nonzero O or dQ"
                );
                continue;
            }
            let sc: Vec<f64> = vis
                .iter()
                .map(|&j| {
                    row(&x.q, i)
                        .iter()
                        .zip(row(&x.k, j))
                        .map(|(a, c)| a * c)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let want = mx + sc.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            anyhow::ensure!(
                (lse - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{what}: lse[{bh}, {i}] = {lse}, expected {want}"
            );
        }
        for j in 0..s {
            if mask[b * s + j] == 0 {
                let k_row = &got.grads[1][(bh * s + j) * hd..][..hd];
                let v_row = &got.grads[2][(bh * s + j) * hd..][..hd];
                anyhow::ensure!(
                    k_row.iter().chain(v_row).all(|&v| v == 0.0),
                    "{what}: masked key {j} (b {b}) has a nonzero dK or dV"
                );
            }
        }
    }

    // A repeat run gives the same bits.
    let again = run_gpu(ex, &qkv, &dout, &mask, &d, o_pad)?;
    anyhow::ensure!(
        again.bits.0 == got.bits.0 && again.bits.2 == got.bits.2,
        "{what}: repeat run differs"
    );
    anyhow::ensure!(
        again
            .bits
            .1
            .iter()
            .zip(&got.bits.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: repeat run lse differs"
    );
    Ok(())
}

#[test]
fn attention_matches_reference_fa_rule() {
    run_on_executors("attention", |ex| {
        for (i, &case) in CASES.iter().enumerate() {
            check_case(ex, 100 + i as u64, case)?;
        }
        Ok(())
    });
}

#[test]
fn attention_rejects_bad_shapes() {
    let ex = Executor::sim();
    let shape = |hd| AttnShape {
        batch: 1,
        seq: 4,
        heads: 1,
        head_dim: hd,
    };
    let buf = ex.alloc_zeroed::<bf16>(4 * 3 * 48).unwrap();
    let mask = ex.alloc_zeroed::<u8>(4).unwrap();
    let lse = ex.alloc_zeroed::<f32>(4).unwrap();
    let s = shape(48);
    let [q, k, v] = Rows::qkv(&buf, &s);
    let err = gattn::fwd(&ex, q, k, v, &mask, q, &lse, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head_dim 48 not supported"), "{err}");

    // A view that runs past its buffer, and a misaligned one.
    let s = shape(32);
    let small = ex.alloc_zeroed::<bf16>(4 * 32).unwrap();
    let [q, k, v] = Rows::qkv(&small, &s);
    let err = gattn::fwd(&ex, q, k, v, &mask, q, &lse, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not hold"), "{err}");
    let odd = Rows {
        buf: &buf,
        offset: 3,
        ld: 96,
    };
    let err = gattn::fwd(&ex, odd, odd, odd, &mask, odd, &lse, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 8"), "{err}");
}
