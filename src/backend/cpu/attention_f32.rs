//! The training attention's blocks (one batch row and head, head-major
//! `[S, hd]`) in f32 on the inference attention's vector loops
//! (`cpu_bf16::attention`: R query rows at once against a transposed
//! operand, the masked softmax on 16-lane chunks), in place of
//! [`super::attention`]'s `gemm` calls: two per block forward and four
//! backward, on products of 64 x 64 x 32 at the tiny model's shapes, where
//! the crate's per-call packing and dispatch cost more than the
//! multiply-adds.
//!
//! Same arithmetic as `attention::fwd_block` / `bwd_block` up to the order
//! of the sums and exp's last bits (the vector exp of `exp_f32`), and the
//! same conventions: query i sees key j when `j <= i` and the key is not
//! masked, the probabilities `a [S, S]` are kept with zeros where a query
//! sees no key, and a query that sees none outputs zeros. Taken for f32
//! with `hd` a whole number of 16-lane vectors, on AVX-512F ([`fast`]);
//! the same loops without it (`AVX = false`) are what the tests compare
//! on any CPU.

use std::cell::RefCell;

use crate::backend::cpu_bf16::attention::{Combine, L, R, combine_block, softmax_row};
use crate::engine::float::dot_lanes;

/// Whether [`fwd_block`] and [`bwd_block`] take a head of `hd`.
pub fn supports(hd: usize) -> bool {
    hd > 0 && hd.is_multiple_of(L)
}

/// Whether the vector loops run on AVX-512F here (otherwise the `gemm`
/// blocks of `attention.rs` are faster than these loops compiled for the
/// baseline target).
pub fn fast() -> bool {
    super::simd::avx512()
}

/// Per-thread buffers, grown as needed and never cleared: every element a
/// block reads it wrote first, except the transposed operand's padding
/// columns past S (scores there land in lanes the softmax replaces with
/// -inf, or in columns never read).
#[derive(Default)]
struct Scratch {
    /// Kᵀ (forward) or Vᵀ (backward), `[hd][sp]`.
    t: Vec<f32>,
    /// R rows of scores or of dP, `[R][sp]`.
    rows: Vec<f32>,
    /// The mask as 0 or -inf per key, -inf past S, `[sp]`.
    bias: Vec<f32>,
    /// R output rows `[R][hd]` (forward); R rows of dS `[R][sp]` (backward).
    big1: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn fit(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// `dst [cols][rows] = src [rows][cols]ᵀ` (`dst` row stride `ld`).
#[inline(always)]
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], ld: usize) {
    // Blocks of 16 x 16 so both sides stay within a few cache lines.
    for r0 in (0..rows).step_by(L) {
        for c0 in (0..cols).step_by(L) {
            for r in r0..(r0 + L).min(rows) {
                let row = &src[r * cols..][..cols];
                for c in c0..(c0 + L).min(cols) {
                    dst[c * ld + r] = row[c];
                }
            }
        }
    }
}

/// `out [r][sp]`'s first `keys` columns (and the rest of their last
/// 16-lane chunk) = `r` rows of `a` (`[·][hd]`) times a `[hd][sp]`
/// transposed operand: scores `Q·Kᵀ` forward, `dO·Vᵀ` backward.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn against_transposed<const AVX: bool>(
    out: &mut [f32],
    sp: usize,
    r: usize,
    keys: usize,
    a: &[f32],
    hd: usize,
    xt: &[f32],
) {
    combine_block::<AVX>(Combine {
        out,
        os: sp,
        r,
        n: keys.next_multiple_of(L),
        a,
        as_: hd,
        count: hd,
        x: xt,
        xs: sp,
    });
}

/// Forward of one block: `q`, `k`, `v` and `o` are `[S, hd]`, `a` the
/// probabilities `[S, S]`, `m` the row's key mask `[S]`; `o` and `a`
/// overwritten. `hd` must be [`supports`]ed.
#[allow(clippy::too_many_arguments)]
pub fn fwd_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    m: &[u8],
    hd: usize,
    o: &mut [f32],
    a: &mut [f32],
) {
    SCRATCH.with_borrow_mut(|scr| {
        #[cfg(target_arch = "x86_64")]
        if fast() {
            // SAFETY: the CPU has AVX-512F (`fast`).
            return unsafe { fwd_avx512(q, k, v, m, hd, o, a, scr) };
        }
        fwd_impl::<false>(q, k, v, m, hd, o, a, scr)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_avx512(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    m: &[u8],
    hd: usize,
    o: &mut [f32],
    a: &mut [f32],
    scr: &mut Scratch,
) {
    fwd_impl::<true>(q, k, v, m, hd, o, a, scr)
}

/// Scores four query rows at a time, their softmax into `a`, then `P·V`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_impl<const AVX: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    m: &[u8],
    hd: usize,
    o: &mut [f32],
    a: &mut [f32],
    scr: &mut Scratch,
) {
    let s = m.len();
    let sp = s.next_multiple_of(L);
    assert!(supports(hd) && [q, k, v].iter().all(|x| x.len() == s * hd));
    assert!(o.len() == s * hd && a.len() == s * s);
    let Scratch {
        t,
        rows,
        bias,
        big1,
        ..
    } = scr;
    let (kt, p, bias, acc) = (
        fit(t, hd * sp),
        fit(rows, R * sp),
        fit(bias, sp),
        fit(big1, R * hd),
    );
    transpose(k, s, hd, kt, sp);
    for (b, &mj) in bias.iter_mut().zip(m) {
        *b = if mj != 0 { 0.0 } else { f32::NEG_INFINITY };
    }
    bias[s..].fill(f32::NEG_INFINITY);
    let scale = 1.0 / (hd as f32).sqrt();
    for i0 in (0..s).step_by(R) {
        // Queries i0 .. i0 + r see keys 0 .. i0 + r at most (causal).
        let r = R.min(s - i0);
        let keys = i0 + r;
        against_transposed::<AVX>(p, sp, r, keys, &q[i0 * hd..], hd, kt);
        for j in 0..r {
            let i = i0 + j;
            let ni = (i + 1).next_multiple_of(L);
            let pr = &mut p[j * sp..][..ni];
            let inv = softmax_row::<AVX>(pr, &bias[..ni], i, scale);
            let (seen, after) = a[i * s..][..s].split_at_mut(i + 1);
            for (x, &e) in seen.iter_mut().zip(pr.iter()) {
                *x = e * inv;
            }
            after.fill(0.0);
        }
        combine_block::<AVX>(Combine {
            out: acc,
            os: hd,
            r,
            n: hd,
            a: &a[i0 * s..],
            as_: s,
            count: keys,
            x: v,
            xs: hd,
        });
        o[i0 * hd..][..r * hd].copy_from_slice(&acc[..r * hd]);
    }
}

/// Backward of [`fwd_block`]: `a` is the block's probabilities `[S, S]`,
/// `dob` the output's gradient `[S, hd]`; `dq`, `dk`, `dv` overwritten.
#[allow(clippy::too_many_arguments)]
pub fn bwd_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    dob: &[f32],
    hd: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    SCRATCH.with_borrow_mut(|scr| {
        let g = Grads { dq, dk, dv };
        #[cfg(target_arch = "x86_64")]
        if fast() {
            // SAFETY: the CPU has AVX-512F (`fast`).
            return unsafe { bwd_avx512(q, k, v, a, dob, hd, g, scr) };
        }
        bwd_impl::<false>(q, k, v, a, dob, hd, g, scr)
    })
}

/// The backward's outputs.
struct Grads<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_avx512(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    dob: &[f32],
    hd: usize,
    g: Grads,
    scr: &mut Scratch,
) {
    bwd_impl::<true>(q, k, v, a, dob, hd, g, scr)
}

/// `dP = dO·Vᵀ`, `dS = P ⊙ (dP - rowsum(P ⊙ dP)) · scale`, `dQ = dS·K`,
/// a block of R query rows at a time; `dV = Pᵀ·dO` and `dK = dSᵀ·Q` as
/// rank-R updates from the same rows ([`rank_update`]), so neither `[S, S]`
/// matrix is transposed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_impl<const AVX: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    dob: &[f32],
    hd: usize,
    g: Grads,
    scr: &mut Scratch,
) {
    let Grads { dq, dk, dv } = g;
    let s = q.len() / hd;
    let sp = s.next_multiple_of(L);
    assert!(supports(hd) && [q, k, v, dob].iter().all(|x| x.len() == s * hd));
    assert!(a.len() == s * s);
    assert!([&dq, &dk, &dv].iter().all(|x| x.len() == s * hd));
    let Scratch { t, rows, big1, .. } = scr;
    let (vt, dp, ds) = (fit(t, hd * sp), fit(rows, R * sp), fit(big1, R * sp));
    transpose(v, s, hd, vt, sp);
    dv.fill(0.0);
    dk.fill(0.0);
    let scale = 1.0 / (hd as f32).sqrt();
    for i0 in (0..s).step_by(R) {
        let r = R.min(s - i0);
        let keys = i0 + r;
        against_transposed::<AVX>(dp, sp, r, keys, &dob[i0 * hd..], hd, vt);
        for j in 0..r {
            let i = i0 + j;
            let (pr, dpr) = (&a[i * s..][..=i], &dp[j * sp..][..=i]);
            let dot = dot_lanes(pr, dpr);
            let (seen, after) = ds[j * sp..][..keys].split_at_mut(i + 1);
            for ((x, &p), &d) in seen.iter_mut().zip(pr).zip(dpr) {
                *x = p * (d - dot) * scale;
            }
            after.fill(0.0);
        }
        combine_block::<AVX>(Combine {
            out: &mut dq[i0 * hd..],
            os: hd,
            r,
            n: hd,
            a: ds,
            as_: sp,
            count: keys,
            x: k,
            xs: hd,
        });
        rank_update::<AVX>(dv, keys, &a[i0 * s..], s, r, &dob[i0 * hd..], hd);
        rank_update::<AVX>(dk, keys, ds, sp, r, &q[i0 * hd..], hd);
    }
}

/// `out[j] += sum over rows i < r of w[i·ws + j] · x[i·hd ..][..hd]` for
/// keys `j < count` (`out` and `x` rows of `hd`, a multiple of L).
#[inline(always)]
fn rank_update<const AVX: bool>(
    out: &mut [f32],
    count: usize,
    w: &[f32],
    ws: usize,
    r: usize,
    x: &[f32],
    hd: usize,
) {
    assert!((1..=R).contains(&r) && hd.is_multiple_of(L));
    assert!(out.len() >= count * hd && x.len() >= r * hd);
    assert!(count == 0 || w.len() >= (r - 1) * ws + count);
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` is only set under AVX-512F (`fwd_avx512`,
        // `bwd_avx512`); the bounds were asserted above.
        return unsafe { rank_update_avx512(out, count, w, ws, r, x, hd) };
    }
    for j in 0..count {
        let o = &mut out[j * hd..][..hd];
        for i in 0..r {
            let wi = w[i * ws + j];
            for (o, &xv) in o.iter_mut().zip(&x[i * hd..][..hd]) {
                *o += wi * xv;
            }
        }
    }
}

/// [`rank_update`] with the r rows of `x` in registers, 64 columns at a time.
///
/// # Safety
/// AVX-512F, and the bounds [`rank_update`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rank_update_avx512(
    out: &mut [f32],
    count: usize,
    w: &[f32],
    ws: usize,
    r: usize,
    x: &[f32],
    hd: usize,
) {
    let mut col = 0;
    while col < hd {
        let nv = ((hd - col) / L).min(4);
        // SAFETY (all): as this function's contract; nv vectors from col
        // lie within hd.
        unsafe {
            match (r, nv) {
                (1, 1) => rank_cols::<1, 1>(out, count, w, ws, x, hd, col),
                (1, 2) => rank_cols::<1, 2>(out, count, w, ws, x, hd, col),
                (1, 3) => rank_cols::<1, 3>(out, count, w, ws, x, hd, col),
                (1, _) => rank_cols::<1, 4>(out, count, w, ws, x, hd, col),
                (2, 1) => rank_cols::<2, 1>(out, count, w, ws, x, hd, col),
                (2, 2) => rank_cols::<2, 2>(out, count, w, ws, x, hd, col),
                (2, 3) => rank_cols::<2, 3>(out, count, w, ws, x, hd, col),
                (2, _) => rank_cols::<2, 4>(out, count, w, ws, x, hd, col),
                (3, 1) => rank_cols::<3, 1>(out, count, w, ws, x, hd, col),
                (3, 2) => rank_cols::<3, 2>(out, count, w, ws, x, hd, col),
                (3, 3) => rank_cols::<3, 3>(out, count, w, ws, x, hd, col),
                (3, _) => rank_cols::<3, 4>(out, count, w, ws, x, hd, col),
                (_, 1) => rank_cols::<4, 1>(out, count, w, ws, x, hd, col),
                (_, 2) => rank_cols::<4, 2>(out, count, w, ws, x, hd, col),
                (_, 3) => rank_cols::<4, 3>(out, count, w, ws, x, hd, col),
                (_, _) => rank_cols::<4, 4>(out, count, w, ws, x, hd, col),
            }
        }
        col += nv * L;
    }
}

/// RR rows of `x`, NV vectors of columns from `col`, held in registers; per
/// key j, NV loads and stores of `out` serve RR·NV multiply-adds.
///
/// # Safety
/// As [`rank_update_avx512`], with `col + NV·L <= hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn rank_cols<const RR: usize, const NV: usize>(
    out: &mut [f32],
    count: usize,
    w: &[f32],
    ws: usize,
    x: &[f32],
    hd: usize,
    col: usize,
) {
    use std::arch::x86_64::*;
    let (op, wp, xp) = (out.as_mut_ptr(), w.as_ptr(), x.as_ptr());
    // SAFETY: as the function's contract.
    unsafe {
        let mut xv = [[_mm512_setzero_ps(); NV]; RR];
        for (i, xi) in xv.iter_mut().enumerate() {
            for (c, v) in xi.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(xp.add(i * hd + col + c * L));
            }
        }
        for j in 0..count {
            let o = op.add(j * hd + col);
            let mut acc = [_mm512_setzero_ps(); NV];
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(o.add(c * L));
            }
            for (i, xi) in xv.iter().enumerate() {
                let wi = _mm512_set1_ps(*wp.add(i * ws + j));
                for (a, &xc) in acc.iter_mut().zip(xi) {
                    *a = _mm512_fmadd_ps(wi, xc, *a);
                }
            }
            for (c, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(o.add(c * L), a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::attention;

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// A sequence's outputs are the same bits alone and beside another
    /// sequence in a batch padded past its end (masked keys): what keeps a
    /// flow's training forward independent of its batch.
    #[test]
    fn a_sequence_does_not_depend_on_its_batch_or_padding() {
        use crate::backend::cpu::attention::Dims;
        use crate::backend::cpu::mha;
        if !fast() {
            println!("SKIP: no AVX-512F here; the gemm blocks' sums follow the padded length");
            return;
        }
        let (h, hd, len) = (2, 32, 13);
        let w = 3 * h * hd;
        let qkv = vals(len * w, 1);
        let alone = Dims {
            b: 1,
            h,
            s: len,
            hd,
        };
        let (want, _) = mha::fwd(&qkv, &[1; 13], &alone, 1e4);
        for s in [16, 29, 64] {
            let mut batch = qkv.clone();
            batch.extend(vals((s - len) * w, 5));
            batch.extend(vals(s * w, 6));
            let mut mask: Vec<u8> = (0..s).map(|j| u8::from(j < len)).collect();
            mask.extend(vec![1; s]);
            let (got, _) = mha::fwd(&batch, &mask, &Dims { b: 2, h, s, hd }, 1e4);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[..len * h * hd]), bits(&want), "padded to {s}");
        }
    }

    /// Both loop versions against the `gemm` blocks, forward and backward,
    /// at lengths on and off the 16-lane chunks, with masked keys and a
    /// sequence whose first queries see no key. Same f32 arithmetic up to
    /// summation order and exp's last bits: 2e-5 of the scale.
    #[test]
    fn blocks_match_the_gemm_blocks() {
        for (s, hd) in [(64, 32), (50, 16), (7, 64), (33, 32)] {
            let masks: [Vec<u8>; 3] = [
                vec![1; s],
                (0..s).map(|j| u8::from(j % 5 != 3)).collect(),
                (0..s).map(|j| u8::from(j > 2)).collect(),
            ];
            for (mi, m) in masks.iter().enumerate() {
                let (q, k, v, dob) = (
                    vals(s * hd, 1 + mi),
                    vals(s * hd, 2 + mi),
                    vals(s * hd, 3 + mi),
                    vals(s * hd, 4 + mi),
                );
                let (mut o, mut a) = (vec![0.0; s * hd], vec![0.0; s * s]);
                attention::fwd_block_gemm(&q, &k, &v, m, hd, &mut o, &mut a);
                let [mut dq, mut dk, mut dv] = [(); 3].map(|_| vec![0.0; s * hd]);
                attention::bwd_block_gemm(&q, &k, &v, &a, &dob, hd, &mut dq, &mut dk, &mut dv);
                let want = [&o, &a, &dq, &dk, &dv];
                for avx in [false, true] {
                    if avx && !fast() {
                        println!("no AVX-512F here: the portable loops only");
                        continue;
                    }
                    let mut scr = Scratch::default();
                    let (mut o2, mut a2) = (vec![f32::NAN; s * hd], vec![f32::NAN; s * s]);
                    let [mut dq2, mut dk2, mut dv2] = [(); 3].map(|_| vec![f32::NAN; s * hd]);
                    let g = Grads {
                        dq: &mut dq2,
                        dk: &mut dk2,
                        dv: &mut dv2,
                    };
                    if avx {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `fast` said the CPU has AVX-512F.
                        unsafe {
                            fwd_avx512(&q, &k, &v, m, hd, &mut o2, &mut a2, &mut scr);
                            bwd_avx512(&q, &k, &v, &a2, &dob, hd, g, &mut scr);
                        }
                    } else {
                        fwd_impl::<false>(&q, &k, &v, m, hd, &mut o2, &mut a2, &mut scr);
                        bwd_impl::<false>(&q, &k, &v, &a2, &dob, hd, g, &mut scr);
                    }
                    let got = [&o2, &a2, &dq2, &dk2, &dv2];
                    for (name, (g, w)) in ["o", "a", "dq", "dk", "dv"]
                        .iter()
                        .zip(got.iter().zip(want))
                    {
                        for (i, (x, y)) in g.iter().zip(w.iter()).enumerate() {
                            assert!(
                                (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                                "s {s} hd {hd} mask {mi} avx {avx}: {name}[{i}] {x} vs {y}"
                            );
                        }
                    }
                    // Hidden and masked keys get exactly zero probability.
                    for i in 0..s {
                        for j in 0..s {
                            if j > i || m[j] == 0 {
                                assert_eq!(a2[i * s + j], 0.0, "a[{i}, {j}]");
                            }
                        }
                    }
                }
            }
        }
    }
}
