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
//! bit-identical. Then scaled scores of 1e4 to 1e30 with ties (up to a row of
//! all-equal scores), where a backward that recomputes P from a summed
//! logsumexp loses the row sum.

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

/// Kernel outputs in head-major f64: o, the row statistics `(m, 1/l)` (`[B,
/// H, S, 2]`), dq, dk, dv, and the raw bits.
struct GpuOut {
    o: Vec<f64>,
    stats: Vec<f32>,
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
    let stats_b = ex.alloc_zeroed::<f32>(shape.stats_len())?;
    let [q, k, v] = Rows::qkv(&qkv_b, &shape);
    gattn::fwd(ex, q, k, v, &mask_b, o_view, &stats_b, &shape)?;

    let do_b = ex.upload(dout)?;
    let dqkv_b = ex.alloc_zeroed::<bf16>(rows * 3 * w)?;
    let delta = ex.alloc_zeroed::<f32>(shape.rows())?;
    let saved = AttnSaved {
        q,
        k,
        v,
        out: o_view,
        stats: &stats_b,
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
    let stats = ex.download(&stats_b)?;
    let dqkv = ex.download(&dqkv_b)?;
    let o_f = bf_f64(&o_bits);
    let o = to_heads(&o_f[o_pad..], d, w + o_pad, 0);
    let dqkv_f = bf_f64(&dqkv);
    let grads = [0, 1, 2].map(|p| to_heads(&dqkv_f, d, 3 * w, p));
    Ok(GpuOut {
        o,
        stats: stats.clone(),
        grads,
        bits: (o_bits, stats, dqkv),
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

    // logsumexp of the visible scaled scores, (m + log2 l) ln 2 from the saved
    // row statistics (m, 1/l); exact zeros where required.
    let scale = 1.0 / (hd as f64).sqrt();
    for bh in 0..d.b * h {
        let b = bh / h;
        for i in 0..s {
            let vis: Vec<usize> = (0..s).filter(|&j| visible(&mask, &d, b, i, j)).collect();
            let (m, inv_l) = (
                got.stats[2 * (bh * s + i)] as f64,
                got.stats[2 * (bh * s + i) + 1] as f64,
            );
            let lse = (m - inv_l.log2()) * std::f64::consts::LN_2;
            let row = |t: &[f64], j: usize| t[(bh * s + j) * hd..][..hd].to_vec();
            if vis.is_empty() {
                anyhow::ensure!(
                    m == f64::NEG_INFINITY && inv_l == 0.0,
                    "{what}: (m, 1/l) of an empty row is ({m}, {inv_l})"
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
        "{what}: repeat run stats differ"
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

/// Scaled scores from ~1e4 to ~1e30 (log2 units), with ties: q rows are ±2^e
/// (e from 15 to 100 by row), keys copies of a few {-1, 0, 1} vectors (head 0:
/// three, head 1: one, so that every row of head 1 is all-equal). Every score
/// is then exact (in f64 and in the kernels' fp32), scores of one key vector
/// tie exactly, and any two that differ are thousands apart: P is uniform over
/// a row's visible keys of the highest score, and 0 elsewhere. A backward that
/// takes P = 2^(t - lse2) with lse2 = m + log2(l) summed in fp32 loses log2(l)
/// here (at 1e30 it gives each of l equal keys P = 1 instead of 1/l), so its
/// dV is l times too large. Checked: O, dQ, dK, dV with the FlashAttention
/// rule against f64, and the saved statistics: m the row maximum (to fp32
/// rounding), 1/l exactly that of the number of visible keys at it.
fn check_extreme(ex: &Executor, seed: u64, s: usize, hd: usize) -> anyhow::Result<()> {
    let h = 2;
    let d = Dims { b: 2, h, s, hd };
    let what = format!("extreme scores, B 2 H {h} S {s} hd {hd}");
    let mut rng = rng(seed);
    let w = h * hd;
    let exps = [15, 20, 24, 32, 48, 64, 80, 100];
    // The key vectors of each (b, h), and which one each key copies.
    let base: Vec<Vec<Vec<f64>>> = (0..2 * h)
        .map(|_| {
            (0..3)
                .map(|_| {
                    (0..hd)
                        .map(|_| rng.random_range(-1i32..=1) as f64)
                        .collect()
                })
                .collect()
        })
        .collect();
    let groups = |bh: usize| if bh.is_multiple_of(h) { 3 } else { 1 };
    let mut qkv_f = vec![0.0; 2 * s * 3 * w];
    for b in 0..2 {
        for pos in 0..s {
            for hh in 0..h {
                let bh = b * h + hh;
                let row = (b * s + pos) * 3 * w;
                let qs = 2f64.powi(exps[(pos + hh) % exps.len()]);
                let g = rng.random_range(0..groups(bh));
                for c in 0..hd {
                    let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                    qkv_f[row + hh * hd + c] = sign * qs;
                    qkv_f[row + w + hh * hd + c] = base[bh][g][c];
                    qkv_f[row + 2 * w + hh * hd + c] = r(rng.random_range(-1.0..1.0));
                }
            }
        }
    }
    let qkv: Vec<bf16> = qkv_f.iter().map(|&x| bf16::from_f64(x)).collect();
    anyhow::ensure!(
        qkv.iter().zip(&qkv_f).all(|(a, &b)| a.to_f64() == b),
        "inputs are bf16 values"
    );
    let (dout, dout_f) = bf16_input(&mut rng, 2 * s * w, 1.0);
    let mask = make_mask(&mut rng, s, Second::Holes);
    let x = Heads {
        q: to_heads(&qkv_f, &d, 3 * w, 0),
        k: to_heads(&qkv_f, &d, 3 * w, 1),
        v: to_heads(&qkv_f, &d, 3 * w, 2),
        dout: to_heads(&dout_f, &d, w, 0),
    };
    let n = x.q.len();
    let mut o_ref = vec![0.0; n];
    let mut att = vec![0.0; d.b * h * s * s];
    attention::fwd(&x.q, &x.k, &x.v, &mask, &d, &mut o_ref, &mut att);
    let mut g_ref = [vec![0.0; n], vec![0.0; n], vec![0.0; n]];
    {
        let [dq, dk, dv] = &mut g_ref;
        attention::bwd(&x.q, &x.k, &x.v, &att, &x.dout, &d, dq, dk, dv);
    }
    let naive = naive_bf16(&x, &mask, &d);
    let got = run_gpu(ex, &qkv, &dout, &mask, &d, 0)?;
    check_fa(&format!("attn O ({what})"), &got.o, &o_ref, &naive[0])?;
    for (i, name) in ["dQ", "dK", "dV"].iter().enumerate() {
        check_fa(
            &format!("attn {name} ({what})"),
            &got.grads[i],
            &g_ref[i],
            &naive[i + 1],
        )?;
    }

    // The statistics: exact ties, so l counts the keys at the maximum.
    let scale = 1.0 / (hd as f64).sqrt();
    let (mut tied_rows, mut t_max) = (0, 0f64);
    for bh in 0..d.b * h {
        let b = bh / h;
        for i in 0..s {
            let (m, inv_l) = (got.stats[2 * (bh * s + i)], got.stats[2 * (bh * s + i) + 1]);
            let vis: Vec<usize> = (0..s).filter(|&j| visible(&mask, &d, b, i, j)).collect();
            if vis.is_empty() {
                anyhow::ensure!(
                    m == f32::NEG_INFINITY && inv_l == 0.0,
                    "{what}: (m, 1/l) of an empty row is ({m}, {inv_l})"
                );
                continue;
            }
            let dot = |j: usize| -> f64 {
                (0..hd)
                    .map(|c| x.q[(bh * s + i) * hd + c] * x.k[(bh * s + j) * hd + c])
                    .sum()
            };
            let mx = vis
                .iter()
                .map(|&j| dot(j))
                .fold(f64::NEG_INFINITY, f64::max);
            let at_max = vis.iter().filter(|&&j| dot(j) == mx).count();
            let want_m = mx * scale * std::f64::consts::LOG2_E;
            anyhow::ensure!(
                (m as f64 - want_m).abs() <= 1e-6 * want_m.abs(),
                "{what}: m[{bh}, {i}] = {m:e}, expected {want_m:e}"
            );
            anyhow::ensure!(
                inv_l == 1.0 / at_max as f32,
                "{what}: 1/l[{bh}, {i}] = {inv_l}, expected 1/{at_max} (keys at the maximum, m = {m:e})"
            );
            tied_rows += usize::from(at_max > 1);
            t_max = t_max.max(want_m.abs());
        }
    }
    anyhow::ensure!(
        tied_rows > s && t_max > 1e29,
        "{what}: the case lacks ties ({tied_rows} rows) or large scores ({t_max:e})"
    );
    Ok(())
}

#[test]
fn attention_backward_holds_at_extreme_scores() {
    run_on_executors("attention_extreme", |ex| {
        check_extreme(ex, 7, 70, 64)?;
        check_extreme(ex, 8, 33, 32)
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
    let stats = ex.alloc_zeroed::<f32>(8).unwrap();
    let s = shape(48);
    let [q, k, v] = Rows::qkv(&buf, &s);
    let err = gattn::fwd(&ex, q, k, v, &mask, q, &stats, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head_dim 48 not supported"), "{err}");

    // A view that runs past its buffer, and a misaligned one.
    let s = shape(32);
    let small = ex.alloc_zeroed::<bf16>(4 * 32).unwrap();
    let [q, k, v] = Rows::qkv(&small, &s);
    let err = gattn::fwd(&ex, q, k, v, &mask, q, &stats, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not hold"), "{err}");
    let odd = Rows {
        buf: &buf,
        offset: 3,
        ld: 96,
    };
    let err = gattn::fwd(&ex, odd, odd, odd, &mask, odd, &stats, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 8"), "{err}");
}
