//! Causal attention with RoPE for inference, straight from the fused QKV
//! projection `[B·S, 3·H·hd]` to `[B·S, H·hd]`: one task per sequence, and
//! per head the roped Q, the roped K transposed, and V copied into a small
//! scratch (S·hd each), so scores and outputs are contiguous multiply-adds,
//! done for R = 4 queries at once (each key or value vector loaded serves
//! four rows), and the softmax runs over whole 16-lane chunks. Same arithmetic as the reference
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

/// The per-call RoPE table, as `rope.rs`: cos and sin per (position,
/// pair), in two arrays so the rotation is plain vector arithmetic.
struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn rope_table(s: usize, hd: usize, theta: f64) -> RopeTable {
    let half = hd / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    let ang = |k: usize| (k / half) as f64 * inv[k % half];
    RopeTable {
        cos: (0..s * half).map(|k| ang(k).cos() as f32).collect(),
        sin: (0..s * half).map(|k| ang(k).sin() as f32).collect(),
    }
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
pub(crate) const L: usize = 16;

/// Query rows computed together: each key (or value) vector loaded is used
/// by R rows' multiply-adds instead of one (one row at a time, the loads
/// matched the multiply-adds one for one).
pub(crate) const R: usize = 4;
const _: () = assert!(L.is_multiple_of(R));

/// Per-sequence scratch, padded to whole chunks with zeros: Q and V
/// `[S][hp]`, Kᵀ `[hd][sp]`; a block's scores `[R][sp]` and outputs `[R][hp]`.
struct Scratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    /// One roped key row, before its transposed store.
    k: Vec<f32>,
    /// The mask as 0 or -inf per key, -inf past S.
    bias: Vec<f32>,
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
            k: vec![0.0; hd],
            bias: vec![f32::NEG_INFINITY; sp],
            p: vec![0.0; R * sp],
            acc: vec![0.0; R * hp],
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
    table: &RopeTable,
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
    table: &RopeTable,
    scr: &mut Scratch,
    o: &mut [MaybeUninit<f32>],
) {
    head_attention::<true>(x, m, d, head, table, scr, o)
}

/// One query row's scores `sc` (whole chunks of L) to unnormalised
/// probabilities: scaled, plus the mask's bias, -inf after key `i`
/// (causal), then `e^(x - max)`. Returns 1 / their sum; a row that sees no
/// key becomes zeros and returns 0 (the reference's zeros).
#[inline(always)]
pub(crate) fn softmax_row<const AVX: bool>(
    sc: &mut [f32],
    bias: &[f32],
    i: usize,
    scale: f32,
) -> f32 {
    assert!(sc.len().is_multiple_of(L) && bias.len() == sc.len());
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` is only set by `head_avx512`, whose CPU has
        // AVX-512F; whole chunks, as asserted.
        return unsafe { softmax_row_avx512(sc, bias, i, scale) };
    }
    for (c, (a, &b)) in sc.iter_mut().zip(bias).enumerate() {
        *a = if c <= i {
            *a * scale + b
        } else {
            f32::NEG_INFINITY
        };
    }
    let mx = max_lanes(sc);
    if mx == f32::NEG_INFINITY {
        sc.fill(0.0);
        return 0.0;
    }
    for a in sc.iter_mut() {
        *a = exp_f32(*a - mx);
    }
    1.0 / sum_lanes(sc)
}

/// [`softmax_row`] on 16-lane vectors: the max and the sum reduce across
/// lanes once per row (in 8 lanes, with the tail folds, they were a fifth
/// of the attention's samples at S = 64).
///
/// # Safety
/// AVX-512F; `sc` and `bias` of one length, a multiple of L.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn softmax_row_avx512(sc: &mut [f32], bias: &[f32], i: usize, scale: f32) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F (this function's contract); every load and store is
    // a whole chunk of L inside `sc` or `bias`.
    unsafe {
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (ninf, vscale) = (_mm512_set1_ps(f32::NEG_INFINITY), _mm512_set1_ps(scale));
        let mut mx = ninf;
        for c in (0..sc.len()).step_by(L) {
            let at = sc.as_mut_ptr().add(c);
            // Lanes with key c + l <= i (i - c as a signed lane limit).
            let seen = _mm512_cmple_epi32_mask(lane, _mm512_set1_epi32(i as i32 - c as i32));
            let v = _mm512_add_ps(
                _mm512_mul_ps(_mm512_loadu_ps(at), vscale),
                _mm512_loadu_ps(bias.as_ptr().add(c)),
            );
            let v = _mm512_mask_blend_ps(seen, ninf, v);
            _mm512_storeu_ps(at, v);
            mx = _mm512_max_ps(mx, v);
        }
        let m = _mm512_reduce_max_ps(mx);
        if m == f32::NEG_INFINITY {
            sc.fill(0.0);
            return 0.0;
        }
        let (vm, mut sum) = (_mm512_set1_ps(m), _mm512_setzero_ps());
        for c in (0..sc.len()).step_by(L) {
            let at = sc.as_mut_ptr().add(c);
            let e = super::avx512::exp(_mm512_sub_ps(_mm512_loadu_ps(at), vm));
            _mm512_storeu_ps(at, e);
            sum = _mm512_add_ps(sum, e);
        }
        1.0 / _mm512_reduce_add_ps(sum)
    }
}

/// For each of `r` rows j: `out[j·os ..][..n] = sum over c < count of
/// a[j·as_ + c] · x[c·xs ..][..n]`, n a multiple of L: a block's scores
/// (a = its queries, x = Kᵀ) and outputs (a = its probabilities, x = V).
pub(crate) struct Combine<'a> {
    pub out: &'a mut [f32],
    pub os: usize,
    pub r: usize,
    pub n: usize,
    pub a: &'a [f32],
    pub as_: usize,
    pub count: usize,
    pub x: &'a [f32],
    pub xs: usize,
}

/// [`Combine`]'s sums; `AVX`: AVX-512 with the sums in registers.
#[inline(always)]
pub(crate) fn combine_block<const AVX: bool>(op: Combine) {
    let Combine {
        r,
        n,
        os,
        as_,
        count,
        xs,
        ..
    } = op;
    assert!(
        r <= R
            && n.is_multiple_of(L)
            && (r == 0
                || (op.out.len() >= (r - 1) * os + n && op.a.len() >= (r - 1) * as_ + count))
            && (count == 0 || op.x.len() >= (count - 1) * xs + n)
    );
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` is only set by `head_avx512`, whose CPU has AVX-512F;
        // the bounds were asserted above.
        return unsafe { combine_block_avx512(op) };
    }
    for j in 0..r {
        let o = &mut op.out[j * os..][..n];
        o.fill(0.0);
        for (c, &ac) in op.a[j * as_..][..count].iter().enumerate() {
            for (o, &xv) in o.iter_mut().zip(&op.x[c * xs..][..n]) {
                *o += ac * xv;
            }
        }
    }
}

/// # Safety
/// AVX-512F, and the bounds [`combine_block`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn combine_block_avx512(mut op: Combine) {
    let mut col = 0;
    while col < op.n {
        let nv = ((op.n - col) / L).min(4);
        // SAFETY (all four): as this function's contract; nv vectors from
        // col lie within n.
        unsafe {
            match op.r {
                1 => columns_of_rows::<1>(&mut op, col, nv),
                2 => columns_of_rows::<2>(&mut op, col, nv),
                3 => columns_of_rows::<3>(&mut op, col, nv),
                _ => columns_of_rows::<4>(&mut op, col, nv),
            }
        }
        col += nv * L;
    }
}

/// [`columns_avx512`] with `nv` (1 to 4) vectors of columns.
///
/// # Safety
/// As [`columns_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn columns_of_rows<const RR: usize>(op: &mut Combine, col: usize, nv: usize) {
    // SAFETY (all four): as this function's contract.
    unsafe {
        match nv {
            1 => columns_avx512::<RR, 1>(op, col),
            2 => columns_avx512::<RR, 2>(op, col),
            3 => columns_avx512::<RR, 3>(op, col),
            _ => columns_avx512::<RR, 4>(op, col),
        }
    }
}

/// RR rows x NV vectors of columns from `col`, in registers: per c, NV
/// loads of x serve RR·NV multiply-adds.
///
/// # Safety
/// AVX-512F; the bounds [`combine_block`] asserts, with RR <= its `r` and
/// `col + NV·L <= n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn columns_avx512<const RR: usize, const NV: usize>(op: &mut Combine, col: usize) {
    use std::arch::x86_64::*;
    let (xp, ap, op_out) = (op.x.as_ptr(), op.a.as_ptr(), op.out.as_mut_ptr());
    let (os, as_, xs) = (op.os, op.as_, op.xs);
    let mut acc = [[_mm512_setzero_ps(); NV]; RR];
    // SAFETY: as the function's contract.
    unsafe {
        for c in 0..op.count {
            let row = xp.add(c * xs + col);
            let mut xv = [_mm512_setzero_ps(); NV];
            for (v, w) in xv.iter_mut().enumerate() {
                *w = _mm512_loadu_ps(row.add(v * L));
            }
            for (j, accj) in acc.iter_mut().enumerate() {
                let aj = _mm512_set1_ps(*ap.add(j * as_ + c));
                for (s, &w) in accj.iter_mut().zip(&xv) {
                    *s = _mm512_fmadd_ps(aj, w, *s);
                }
            }
        }
        for (j, accj) in acc.iter().enumerate() {
            for (v, &s) in accj.iter().enumerate() {
                _mm512_storeu_ps(op_out.add(j * os + col + v * L), s);
            }
        }
    }
}

/// RoPE: `out = x` rotated pair-wise (first half with second half).
#[inline(always)]
fn rotate(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (o1, o2) = out.split_at_mut(half);
    let (x1, x2) = x.split_at(half);
    // Zipped slices of one length: no bounds checks, so the loop
    // vectorises (indexed, it ran scalar: a quarter of the attention's time).
    let sin = &sin[..half];
    for ((((a, b), (&p, &q)), &c), &s) in o1
        .iter_mut()
        .zip(&mut o2[..half])
        .zip(x1.iter().zip(&x2[..half]))
        .zip(cos)
        .zip(sin)
    {
        *a = p * c - q * s;
        *b = q * c + p * s;
    }
}

/// One head of one sequence: `x` is the sequence's `[S, 3·H·hd]`, `o` its `[S, H·hd]`.
#[inline(always)]
fn head_attention<const AVX: bool>(
    x: &[f32],
    m: &[u8],
    d: &AttnDims,
    head: usize,
    table: &RopeTable,
    scr: &mut Scratch,
    o: &mut [MaybeUninit<f32>],
) {
    let (s, hd, w) = (d.s, d.hd, d.h * d.hd);
    let half = hd / 2;
    let Scratch {
        q,
        kt,
        v,
        k,
        bias,
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
        let (cos, sin) = (
            &table.cos[i * half..][..half],
            &table.sin[i * half..][..half],
        );
        rotate(&mut q[i * hp..][..hd], qs, cos, sin);
        rotate(k, ks, cos, sin);
        for (c, &kc) in k.iter().enumerate() {
            kt[c * sp + i] = kc;
        }
        v[i * hp..][..hd].copy_from_slice(vs);
    }
    for (b, &mj) in bias.iter_mut().zip(m) {
        *b = if mj != 0 { 0.0 } else { f32::NEG_INFINITY };
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut i0 = 0;
    while i0 < s {
        // Queries i0 .. i0 + r see keys 0 .. i0 + r at most (causal).
        let r = R.min(s - i0);
        let keys = i0 + r;
        // Scores of those keys (and of the rest of their last chunk, unused):
        // sum over c of q[i,c]·kᵀ[c, j].
        let n = keys.next_multiple_of(L);
        combine_block::<AVX>(Combine {
            out: &mut p[..],
            os: sp,
            r,
            n,
            a: &q[i0 * hp..],
            as_: hp,
            count: hd,
            x: kt,
            xs: sp,
        });
        let mut inv = [0f32; R];
        for (j, inv) in inv.iter_mut().enumerate().take(r) {
            let i = i0 + j;
            // Whole chunks of L (vector loops without a scalar remainder):
            // keys after i and masked keys get -inf, whose e^x is 0.
            // The block's P·V reads `keys` of each row: all inside its
            // chunks, as blocks start at multiples of R, which divides L.
            let ni = (i + 1).next_multiple_of(L);
            debug_assert!(keys <= ni);
            *inv = softmax_row::<AVX>(&mut p[j * sp..][..ni], &bias[..ni], i, scale);
        }
        combine_block::<AVX>(Combine {
            out: &mut acc[..],
            os: hp,
            r,
            n: hp,
            a: p,
            as_: sp,
            count: keys,
            x: v,
            xs: hp,
        });
        for (j, &inv) in inv.iter().enumerate().take(r) {
            let i = i0 + j;
            let out = &mut o[i * w + head * hd..][..hd];
            for (dst, &a) in out.iter_mut().zip(&acc[j * hp..][..hd]) {
                *dst = MaybeUninit::new(a * inv);
            }
        }
        i0 += r;
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
            let (want, _) = crate::backend::cpu::mha::fwd(&qkv, &mask, &d, 1e4);
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
