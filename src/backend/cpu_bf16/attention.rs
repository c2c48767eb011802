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

/// Lanes of one f32 vector on AVX-512: every inner loop runs whole chunks
/// of 16, so each is one vector operation (a loop of runtime length under 64
/// would mostly run in the compiler's scalar remainder).
const L: usize = 16;

/// Per-sequence scratch, padded to whole chunks with zeros: Q and V
/// `[S][hp]`, Kᵀ `[hd][sp]`.
struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
    acc: Vec<f32>,
    hp: usize,
    sp: usize,
}

impl Scratch {
    fn new(s: usize, hd: usize) -> Scratch {
        let (hp, sp) = (hd.next_multiple_of(L), s.next_multiple_of(L));
        Scratch {
            q: vec![0.0; s * hp],
            kt: vec![0.0; hd * sp],
            v: vec![0.0; s * hp],
            p: vec![0.0; sp],
            acc: vec![0.0; hp],
            hp,
            sp,
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
    if kernel.has_avx512f() {
        // SAFETY: the engine only runs this kernel where the CPU has AVX-512F.
        return unsafe { head_avx512(x, m, d, head, table, scr, o) };
    }
    let _ = kernel;
    head_attention::<false>(x, m, d, head, table, scr, o)
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
    head_attention::<true>(x, m, d, head, table, scr, o)
}

/// `out[..n] = sum over c < rows of a[c] · x[c·stride ..][..n]`, n a
/// multiple of L: the scores of a query (x = Kᵀ) and its output (x = V).
/// `AVX`: AVX-512 with the sums in registers (the compiler kept the
/// portable loop scalar, and summing in memory chains stores to loads).
#[inline(always)]
fn combine_rows<const AVX: bool>(out: &mut [f32], a: &[f32], x: &[f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` is only set by `head_avx512`, whose CPU has AVX-512F.
        return unsafe { combine_rows_avx512(out, a, x, stride) };
    }
    out.fill(0.0);
    let n = out.len();
    for (c, &ac) in a.iter().enumerate() {
        for (o, &xv) in out.iter_mut().zip(&x[c * stride..][..n]) {
            *o += ac * xv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn combine_rows_avx512(out: &mut [f32], a: &[f32], x: &[f32], stride: usize) {
    let n = out.len();
    assert!(n.is_multiple_of(L) && (a.is_empty() || x.len() >= (a.len() - 1) * stride + n));
    let mut col = 0;
    while col < n {
        let nv = (n - col) / L;
        // SAFETY (all four): columns col .. col + NV·L lie within `out` and
        // within each row of `x` read (asserted above).
        unsafe {
            match nv {
                1 => columns_avx512::<1>(out, a, x, stride, col),
                2 => columns_avx512::<2>(out, a, x, stride, col),
                3 => columns_avx512::<3>(out, a, x, stride, col),
                _ => columns_avx512::<4>(out, a, x, stride, col),
            }
        }
        col += nv.min(4) * L;
    }
}

/// NV vectors of columns from `col`, in registers: two partial sums (even
/// and odd c) so consecutive FMAs do not wait on each other.
///
/// # Safety
/// AVX-512F; `col + NV·L <= out.len()`, and rows `c < a.len()` of `x` hold
/// those columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn columns_avx512<const NV: usize>(
    out: &mut [f32],
    a: &[f32],
    x: &[f32],
    stride: usize,
    col: usize,
) {
    use std::arch::x86_64::*;
    let xp = x.as_ptr();
    let mut even = [_mm512_setzero_ps(); NV];
    let mut odd = [_mm512_setzero_ps(); NV];
    let mut c = 0;
    // SAFETY: as the function's contract.
    unsafe {
        while c + 1 < a.len() {
            let (a0, a1) = (_mm512_set1_ps(a[c]), _mm512_set1_ps(a[c + 1]));
            let (r0, r1) = (xp.add(c * stride + col), xp.add((c + 1) * stride + col));
            for (v, (e, o)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                *e = _mm512_fmadd_ps(a0, _mm512_loadu_ps(r0.add(v * L)), *e);
                *o = _mm512_fmadd_ps(a1, _mm512_loadu_ps(r1.add(v * L)), *o);
            }
            c += 2;
        }
        if c < a.len() {
            let a0 = _mm512_set1_ps(a[c]);
            let r0 = xp.add(c * stride + col);
            for (v, e) in even.iter_mut().enumerate() {
                *e = _mm512_fmadd_ps(a0, _mm512_loadu_ps(r0.add(v * L)), *e);
            }
        }
        for v in 0..NV {
            _mm512_storeu_ps(
                out.as_mut_ptr().add(col + v * L),
                _mm512_add_ps(even[v], odd[v]),
            );
        }
    }
}

/// One head of one sequence: `x` is the sequence's `[S, 3·H·hd]`, `o` its `[S, H·hd]`.
#[inline(always)]
fn head_attention<const AVX: bool>(
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
    let Scratch {
        q,
        kt,
        v,
        p,
        acc,
        hp,
        sp,
    } = scr;
    let (hp, sp) = (*hp, *sp);
    for i in 0..s {
        let row = &x[i * 3 * w..][..3 * w];
        let (qs, ks, vs) = (
            &row[head * hd..][..hd],
            &row[w + head * hd..][..hd],
            &row[2 * w + head * hd..][..hd],
        );
        let cs = &table[i * half..][..half];
        let qi = &mut q[i * hp..][..hd];
        for (j, &(c, sn)) in cs.iter().enumerate() {
            let (a, bb) = (qs[j], qs[j + half]);
            qi[j] = a * c - bb * sn;
            qi[j + half] = bb * c + a * sn;
            let (a, bb) = (ks[j], ks[j + half]);
            kt[j * sp + i] = a * c - bb * sn;
            kt[(j + half) * sp + i] = bb * c + a * sn;
        }
        v[i * hp..][..hd].copy_from_slice(vs);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    for i in 0..s {
        let out = &mut o[i * w + head * hd..][..hd];
        // Scores of keys 0..=i (and of the rest of their last chunk, unused):
        // sum over c of q[i,c]·kᵀ[c, j].
        let n = (i + 1).next_multiple_of(L);
        let sc = &mut p[..n];
        combine_rows::<AVX>(sc, &q[i * hp..][..hd], kt, sp);
        let sc = &mut sc[..=i];
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
        combine_rows::<AVX>(acc, sc, v, hp);
        for (dst, &a) in out.iter_mut().zip(acc.iter()) {
            *dst = MaybeUninit::new(a * inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the reference composite (`backend::cpu::mha`) in f32, at
    /// lengths off the 16-lane chunks, with padding and a sequence that sees
    /// no key; both loop versions. Same f32 arithmetic up to summation
    /// order, so 1e-5 of the output scale.
    #[test]
    fn matches_the_reference_attention() {
        for (s, hd) in [(50, 32), (7, 8), (64, 34)] {
            let d = AttnDims { b: 3, h: 2, s, hd };
            let qkv: Vec<f32> = (0..d.b * s * 3 * d.h * hd)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
                .collect();
            // Sequence 1 has padding; sequence 2 starts with padding.
            let mask: Vec<u8> = (0..d.b * s)
                .map(|i| match i / s {
                    0 => 1,
                    1 => u8::from(i % s < s / 2),
                    _ => u8::from(i % s > 2),
                })
                .collect();
            let mut want = vec![0f32; d.b * s * d.h * hd];
            crate::backend::cpu::mha::fwd(&qkv, &mask, &d, 1e4, &mut want);
            for kernel in [Kernel::Portable, Kernel::detect()] {
                let got = fwd(kernel, &qkv, &mask, &d, 1e4).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{kernel:?} s {s} hd {hd}: {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
