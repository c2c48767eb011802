//! Causal attention with RoPE for inference, straight from the fused QKV
//! projection `[B·S, 3·H·hd]` to `[B·S, H·hd]`: one task per sequence, and
//! per head the roped Q, the roped K transposed, and V copied into a small
//! scratch (S·hd each), so scores and outputs are contiguous multiply-adds
//! the compiler vectorises. Same arithmetic as the reference
//! (`backend::cpu::mha`: rope, scale, masked softmax, P·V) in f32, without
//! its full-size copies (split, rope, head-major transposes) or the kept
//! probabilities `[B, H, S, S]` a backward would need.
//!
//! The loops are compiled twice: for AVX-512 (picked when the engine's
//! kernel is, so the CPU has it) and for the baseline target.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::kernel::Kernel;
use crate::engine::float::{exp_f32, max_lanes, sum_lanes};
use crate::engine::{AttnDims, OpError, OpResult};

/// The per-call RoPE table: `(cos, sin)` per (position, pair), as `rope.rs`.
fn rope_table(s: usize, hd: usize, theta: f64) -> Vec<(f32, f32)> {
    let half = hd / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    (0..s * half)
        .map(|k| {
            let ang = (k / half) as f64 * inv[k % half];
            (ang.cos() as f32, ang.sin() as f32)
        })
        .collect()
}

pub fn fwd(
    kernel: Kernel,
    qkv: &[f32],
    mask: &[u8],
    d: &AttnDims,
    theta: f64,
) -> OpResult<Vec<f32>> {
    let AttnDims { b, h, s, hd } = *d;
    let w = h * hd;
    if qkv.len() != b * s * 3 * w || mask.len() != b * s || hd % 2 != 0 {
        return Err(OpError::msg(
            "attention_fwd (bf16 engine)",
            format!("qkv of {} and mask of {} for {d:?}", qkv.len(), mask.len()),
        ));
    }
    let table = rope_table(s, hd, theta);
    let mut out = Vec::<f32>::with_capacity(b * s * w);
    out.spare_capacity_mut()
        .par_chunks_mut(s * w)
        .enumerate()
        .for_each_init(
            || Scratch::new(s, hd),
            |scr, (bi, o)| {
                let x = &qkv[bi * s * 3 * w..][..s * 3 * w];
                let m = &mask[bi * s..][..s];
                for head in 0..h {
                    sequence(kernel, x, m, d, head, &table, scr, o);
                }
            },
        );
    // SAFETY: every sequence's task wrote all S·H·hd of its elements.
    unsafe { out.set_len(b * s * w) };
    Ok(out)
}

struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
    acc: Vec<f32>,
}

impl Scratch {
    fn new(s: usize, hd: usize) -> Scratch {
        Scratch {
            q: vec![0.0; s * hd],
            kt: vec![0.0; hd * s],
            v: vec![0.0; s * hd],
            p: vec![0.0; s],
            acc: vec![0.0; hd],
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sequence(
    kernel: Kernel,
    x: &[f32],
    m: &[u8],
    d: &AttnDims,
    head: usize,
    table: &[(f32, f32)],
    scr: &mut Scratch,
    o: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Bf16 {
        // SAFETY: the engine only runs this kernel where the CPU has AVX-512F.
        return unsafe { head_avx512(x, m, d, head, table, scr, o) };
    }
    let _ = kernel;
    head_attention(x, m, d, head, table, scr, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn head_avx512(
    x: &[f32],
    m: &[u8],
    d: &AttnDims,
    head: usize,
    table: &[(f32, f32)],
    scr: &mut Scratch,
    o: &mut [MaybeUninit<f32>],
) {
    head_attention(x, m, d, head, table, scr, o)
}

/// One head of one sequence: `x` is the sequence's `[S, 3·H·hd]`, `o` its `[S, H·hd]`.
#[inline(always)]
fn head_attention(
    x: &[f32],
    m: &[u8],
    d: &AttnDims,
    head: usize,
    table: &[(f32, f32)],
    scr: &mut Scratch,
    o: &mut [MaybeUninit<f32>],
) {
    let (s, hd, w) = (d.s, d.hd, d.h * d.hd);
    let half = hd / 2;
    let Scratch { q, kt, v, p, acc } = scr;
    for i in 0..s {
        let row = &x[i * 3 * w..][..3 * w];
        let (qs, ks, vs) = (
            &row[head * hd..][..hd],
            &row[w + head * hd..][..hd],
            &row[2 * w + head * hd..][..hd],
        );
        let cs = &table[i * half..][..half];
        let qi = &mut q[i * hd..][..hd];
        for (j, &(c, sn)) in cs.iter().enumerate() {
            let (a, bb) = (qs[j], qs[j + half]);
            qi[j] = a * c - bb * sn;
            qi[j + half] = bb * c + a * sn;
            let (a, bb) = (ks[j], ks[j + half]);
            kt[j * s + i] = a * c - bb * sn;
            kt[(j + half) * s + i] = bb * c + a * sn;
        }
        v[i * hd..][..hd].copy_from_slice(vs);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for i in 0..s {
        let out = &mut o[i * w + head * hd..][..hd];
        // Scores of the keys this query sees (j <= i): sum over c of q[i,c]·kᵀ[c, j].
        let sc = &mut p[..=i];
        sc.fill(0.0);
        for (c, &qc) in q[i * hd..][..hd].iter().enumerate() {
            for (a, &kv) in sc.iter_mut().zip(&kt[c * s..][..=i]) {
                *a += qc * kv;
            }
        }
        for (a, &mj) in sc.iter_mut().zip(m) {
            *a = if mj != 0 {
                *a * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let mx = max_lanes(sc);
        if mx == f32::NEG_INFINITY {
            // A query that sees no key outputs zeros (as the reference).
            out.iter_mut().for_each(|v| *v = MaybeUninit::new(0.0));
            continue;
        }
        for a in sc.iter_mut() {
            *a = exp_f32(*a - mx);
        }
        let inv = 1.0 / sum_lanes(sc);
        acc.fill(0.0);
        for (j, &pj) in sc.iter().enumerate() {
            for (a, &vv) in acc.iter_mut().zip(&v[j * hd..][..hd]) {
                *a += pj * vv;
            }
        }
        for (dst, &a) in out.iter_mut().zip(acc.iter()) {
            *dst = MaybeUninit::new(a * inv);
        }
    }
}
