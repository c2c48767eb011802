//! Run-time AVX-512 dispatch for the f32 elementwise loops. The crate is
//! built for baseline x86-64 (SSE2), so a loop the compiler could run 16
//! lanes wide runs 4 wide unless it is compiled again under
//! `#[target_feature]` and chosen at run time, as here. Their sums run in a
//! fixed order and no multiply-add is fused, so both versions give the
//! same bits.

use std::any::TypeId;
use std::mem::MaybeUninit;

#[cfg(test)]
use crate::engine::float::sum_lanes;
use crate::engine::float::{Float, max_lanes, sigmoid};

/// `s` as f32 when `F` is f32 (the training and inference type; f64 is the
/// gradient checks' and keeps the plain loops).
pub fn as_f32<F: Float>(s: &[F]) -> Option<&[f32]> {
    (TypeId::of::<F>() == TypeId::of::<f32>())
        // SAFETY: F is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// [`as_f32`] for a mutable slice.
pub fn as_f32_mut<F: Float>(s: &mut [F]) -> Option<&mut [f32]> {
    (TypeId::of::<F>() == TypeId::of::<f32>())
        // SAFETY: F is f32, so the slice is one of f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

/// [`as_f32_mut`] for a slice being written.
pub fn as_f32_uninit<F: Float>(s: &mut [MaybeUninit<F>]) -> Option<&mut [MaybeUninit<f32>]> {
    (TypeId::of::<F>() == TypeId::of::<f32>())
        // SAFETY: F is f32, so the slice is one of (maybe unwritten) f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// Whether this CPU runs AVX-512F (std caches the answer).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `acc += x`, element by element, in parallel pieces (large activation
/// gradients: a serial pass on the calling thread leaves the other cores
/// waiting).
pub fn add_into<F: Float>(acc: &mut [F], x: &[F]) {
    use rayon::prelude::*;
    acc.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, &b)| *a += b));
}

/// `out = silu(gate) · up`, element by element: every element of `out`
/// written (the three have one length).
pub fn swiglu_f32(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { swiglu_avx512(gate, up, out) };
        return;
    }
    swiglu_loop(gate, up, out);
}

#[inline(always)]
fn swiglu_loop<F: Float>(gate: &[F], up: &[F], out: &mut [MaybeUninit<F>]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "swiglu: operands differ in length"
    );
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        o.write(g * sigmoid(g) * u);
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn swiglu_avx512(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>]) {
    swiglu_loop(gate, up, out);
}

/// The plain loop on any `F`: what the dispatch falls back to.
pub fn swiglu_plain<F: Float>(gate: &[F], up: &[F], out: &mut [MaybeUninit<F>]) {
    swiglu_loop(gate, up, out);
}

/// SwiGLU's backward: `dgate` and `dup` from `dout`, element by element,
/// every element of both written (all five have one length).
pub fn swiglu_bwd_f32(
    gate: &[f32],
    up: &[f32],
    dout: &[f32],
    dg: &mut [MaybeUninit<f32>],
    du: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { swiglu_bwd_avx512(gate, up, dout, dg, du) };
        return;
    }
    swiglu_bwd_loop(gate, up, dout, dg, du);
}

#[inline(always)]
fn swiglu_bwd_loop<F: Float>(
    gate: &[F],
    up: &[F],
    dout: &[F],
    dg: &mut [MaybeUninit<F>],
    du: &mut [MaybeUninit<F>],
) {
    let n = gate.len();
    assert!(
        up.len() == n && dout.len() == n && dg.len() == n && du.len() == n,
        "swiglu: operands differ in length"
    );
    for i in 0..n {
        let (g, d) = (gate[i], dout[i]);
        let s = sigmoid(g);
        du[i].write(d * (g * s));
        // d silu/dg = s * (1 + g * (1 - s))
        dg[i].write(d * up[i] * s * (F::ONE + g * (F::ONE - s)));
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn swiglu_bwd_avx512(
    gate: &[f32],
    up: &[f32],
    dout: &[f32],
    dg: &mut [MaybeUninit<f32>],
    du: &mut [MaybeUninit<f32>],
) {
    swiglu_bwd_loop(gate, up, dout, dg, du);
}

/// The plain backward loop on any `F`.
pub fn swiglu_bwd_plain<F: Float>(
    gate: &[F],
    up: &[F],
    dout: &[F],
    dg: &mut [MaybeUninit<F>],
    du: &mut [MaybeUninit<F>],
) {
    swiglu_bwd_loop(gate, up, dout, dg, du);
}

/// A softmax row's statistics, the LM head's forward: leaves `exp(x - m)`
/// in `row` and returns `(m, sum)`, `m` the row's maximum. The passes keep
/// fixed partial max/sums (see `exp_row_stats_loop`) and no
/// fused multiply-add, so both versions give the same bits.
pub fn exp_row_stats<F: Float>(row: &mut [F]) -> (F, F) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<F>() == TypeId::of::<f32>() && avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { exp_row_stats_avx512(row) };
    }
    exp_row_stats_loop(row)
}

/// Two passes, not three: the max (in [`MAX_WAYS`] groups of eight lanes,
/// so that it is not one dependent chain: the maximum is exact, so any
/// grouping gives the same value), then `exp` stored and summed at once
/// into the eight partial sums of
/// [`sum_lanes`](crate::engine::float::sum_lanes), in its order: the bits
/// of `exp` then `sum_lanes`, without reading the row a third time and
/// with the sums' chain hidden under `exp` (a 2-core Zen 4 spent 10 % of
/// the tiny dense LM forward in this function).
#[inline(always)]
fn exp_row_stats_loop<F: Float>(row: &mut [F]) -> (F, F) {
    let m = max_wide(row);
    let mut acc = [F::ZERO; 8];
    let mut pairs = row.chunks_exact_mut(16);
    for c in &mut pairs {
        let mut e = [F::ZERO; 16];
        for k in 0..16 {
            e[k] = (c[k] - m).exp();
        }
        c.copy_from_slice(&e);
        // Chunk 2j of eight, then chunk 2j + 1, as sum_lanes adds them.
        for k in 0..8 {
            acc[k] += e[k];
        }
        for k in 0..8 {
            acc[k] += e[8 + k];
        }
    }
    let rest = pairs.into_remainder();
    let mut eights = rest.chunks_exact_mut(8);
    for c in &mut eights {
        for k in 0..8 {
            c[k] = (c[k] - m).exp();
            acc[k] += c[k];
        }
    }
    let tail = eights.into_remainder();
    let mut s = F::ZERO;
    for &a in &acc {
        s += a;
    }
    for x in tail {
        *x = (*x - m).exp();
        s += *x;
    }
    (m, s)
}

/// The maximum of `row` (`-inf` when empty): the LM head's running
/// softmax over vocabulary slices. The same value on every path.
pub fn row_max<F: Float>(row: &[F]) -> F {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<F>() == TypeId::of::<f32>() && avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { row_max_avx512(row) };
    }
    max_wide(row)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_max_avx512<F: Float>(row: &[F]) -> F {
    max_wide(row)
}

/// `Σ exp(x - m)` over `row`, nothing stored: the sum [`exp_row_stats`]
/// makes, in the same eight partial sums and order (the same bits for the
/// same `m`), for a slice of logits read once.
pub fn exp_sum<F: Float>(row: &[F], m: F) -> F {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<F>() == TypeId::of::<f32>() && avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { exp_sum_avx512(row, m) };
    }
    exp_sum_loop(row, m)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_sum_avx512<F: Float>(row: &[F], m: F) -> F {
    exp_sum_loop(row, m)
}

/// The plain loop of [`exp_sum`] on any `F`.
pub fn exp_sum_plain<F: Float>(row: &[F], m: F) -> F {
    exp_sum_loop(row, m)
}

#[inline(always)]
fn exp_sum_loop<F: Float>(row: &[F], m: F) -> F {
    let mut acc = [F::ZERO; 8];
    let mut pairs = row.chunks_exact(16);
    for c in &mut pairs {
        let mut e = [F::ZERO; 16];
        for k in 0..16 {
            e[k] = (c[k] - m).exp();
        }
        for k in 0..8 {
            acc[k] += e[k];
        }
        for k in 0..8 {
            acc[k] += e[8 + k];
        }
    }
    let mut eights = pairs.remainder().chunks_exact(8);
    for c in &mut eights {
        for k in 0..8 {
            acc[k] += (c[k] - m).exp();
        }
    }
    let mut s = F::ZERO;
    for &a in &acc {
        s += a;
    }
    for &x in eights.remainder() {
        s += (x - m).exp();
    }
    s
}

/// Groups of eight lanes [`max_wide`] keeps apart.
const MAX_WAYS: usize = 4;

/// The maximum of `x` (as [`max_lanes`], `-inf` when empty), over
/// `MAX_WAYS` x 8 partial maxima.
#[inline(always)]
fn max_wide<F: Float>(x: &[F]) -> F {
    const W: usize = MAX_WAYS * 8;
    let mut acc = [F::neg_infinity(); W];
    let chunks = x.chunks_exact(W);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..W {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    max_lanes(&acc).max(max_lanes(tail))
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_row_stats_avx512<F: Float>(row: &mut [F]) -> (F, F) {
    exp_row_stats_loop(row)
}

/// The plain loop of [`exp_row_stats`] on any `F`.
pub fn exp_row_stats_plain<F: Float>(row: &mut [F]) -> (F, F) {
    exp_row_stats_loop(row)
}

/// `x = exp(x - m) · scale` along a row: the LM head's backward turning
/// logits back into scaled probabilities (elementwise, same bits either way).
pub fn exp_scaled<F: Float>(row: &mut [F], m: F, scale: F) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<F>() == TypeId::of::<f32>() && avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { exp_scaled_avx512(row, m, scale) };
        return;
    }
    exp_scaled_loop(row, m, scale);
}

#[inline(always)]
fn exp_scaled_loop<F: Float>(row: &mut [F], m: F, scale: F) {
    for x in row.iter_mut() {
        *x = (*x - m).exp() * scale;
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_scaled_avx512<F: Float>(row: &mut [F], m: F, scale: F) {
    exp_scaled_loop(row, m, scale);
}

/// The plain loop of [`exp_scaled`] on any `F`.
pub fn exp_scaled_plain<F: Float>(row: &mut [F], m: F, scale: F) {
    exp_scaled_loop(row, m, scale);
}

/// `x *= f` along a row: the LM head's training pass turning
/// `exp(x - max)` into dlogits (one product per element: the same bits at
/// any width). The crate is built for baseline x86-64, where this loop ran
/// 4 lanes wide.
pub fn scale<F: Float>(row: &mut [F], f: F) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<F>() == TypeId::of::<f32>() && avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { scale_avx512(row, f) };
        return;
    }
    scale_loop(row, f);
}

#[inline(always)]
fn scale_loop<F: Float>(row: &mut [F], f: F) {
    for x in row.iter_mut() {
        *x *= f;
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scale_avx512<F: Float>(row: &mut [F], f: F) {
    scale_loop(row, f);
}

#[cfg(test)]
mod tests {
    use super::super::alloc::as_uninit;
    use super::*;

    /// The LM head's softmax passes: both versions give the same bits, on
    /// a row as long as a vocabulary slice (not a multiple of 16) with
    /// logits far below the max (exp's lower clamp) and ties at the max.
    #[test]
    fn dispatched_softmax_rows_match_the_plain_loops_bit_for_bit() {
        let n = 7013;
        let row: Vec<f32> = (0..n)
            .map(|i| match i % 997 {
                0 => 31.5, // the max, several times
                1 => -200.0,
                j => (j as f32 * 0.37).sin() * 12.0,
            })
            .collect();
        let (mut fast, mut plain) = (row.clone(), row.clone());
        let (mf, sf) = exp_row_stats(&mut fast);
        let (mp, sp) = exp_row_stats_plain(&mut plain);
        assert_eq!((mf.to_bits(), sf.to_bits()), (mp.to_bits(), sp.to_bits()));
        assert_eq!(mf, 31.5);
        for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "element {i}: logit {}", row[i]);
        }
        // The fused pass against the three passes it replaced (the max,
        // exp in place, sum_lanes), bit for bit, at every tail length.
        for len in [n, n - 1, n - 5, n - 8, 16, 15, 9, 8, 1] {
            let part = &row[row.len() - len..];
            let m = max_lanes(part);
            let e: Vec<f32> = part.iter().map(|&x| Float::exp(x - m)).collect();
            let mut got = part.to_vec();
            let (gm, gs) = exp_row_stats(&mut got);
            assert_eq!(
                (gm, gs.to_bits()),
                (m, sum_lanes(&e).to_bits()),
                "length {len}"
            );
            assert!(got.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits()));
            // The sum alone, nothing stored: the same bits, both versions.
            assert_eq!(row_max(part), m);
            assert_eq!(exp_sum(part, m).to_bits(), gs.to_bits(), "length {len}");
            assert_eq!(exp_sum_plain(part, m).to_bits(), gs.to_bits());
        }
        // The sum against f64, and exp(x - m) at the max is exactly 1.
        let want: f64 = row.iter().map(|&x| (x as f64 - 31.5).exp()).sum();
        assert!(((sf as f64) - want).abs() / want < 1e-5, "{sf} vs {want}");
        assert_eq!(fast[0], 1.0);

        let (mut fast, mut plain) = (row.clone(), row.clone());
        exp_scaled(&mut fast, 31.5, 0.25);
        exp_scaled_plain(&mut plain, 31.5, 0.25);
        for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "element {i}: logit {}", row[i]);
        }
        assert_eq!(fast[0], 0.25);
        assert_eq!(fast[1], 0.0);

        let mut scaled = row.clone();
        scale(&mut scaled, 0.3);
        for (i, (a, b)) in scaled.iter().zip(&row).enumerate() {
            assert_eq!(a.to_bits(), (b * 0.3).to_bits(), "element {i}");
        }
    }

    /// Both versions, over the range silu sees and past exp's clamps.
    #[test]
    fn dispatched_swiglu_matches_the_plain_loop_bit_for_bit() {
        let n = 4099; // not a multiple of 16: the tail too
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 2050.0) * 0.05).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.3).collect();
        let (mut fast, mut plain) = (vec![0f32; n], vec![0f32; n]);
        swiglu_f32(&gate, &up, as_uninit(&mut fast));
        swiglu_plain(&gate, &up, as_uninit(&mut plain));
        for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "element {i}: gate {}", gate[i]);
        }
        // silu(g)·u against f64 where it is easy to state.
        let want = |g: f64, u: f64| g / (1.0 + (-g).exp()) * u;
        for i in [0, 1000, 2050, 3000, n - 1] {
            let w = want(gate[i] as f64, up[i] as f64);
            assert!((fast[i] as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{i}");
        }
        assert!(as_f32::<f64>(&[1.0]).is_none());
    }

    /// The backward's two versions, over the same range.
    #[test]
    fn dispatched_swiglu_backward_matches_the_plain_loop_bit_for_bit() {
        let n = 4099;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 2050.0) * 0.05).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.3).collect();
        let dout: Vec<f32> = (0..n).map(|i| 0.5 - (i % 11) as f32 * 0.1).collect();
        let mut fast = (vec![0f32; n], vec![0f32; n]);
        let mut plain = (vec![0f32; n], vec![0f32; n]);
        swiglu_bwd_f32(
            &gate,
            &up,
            &dout,
            as_uninit(&mut fast.0),
            as_uninit(&mut fast.1),
        );
        swiglu_bwd_plain(
            &gate,
            &up,
            &dout,
            as_uninit(&mut plain.0),
            as_uninit(&mut plain.1),
        );
        for i in 0..n {
            assert_eq!(fast.0[i].to_bits(), plain.0[i].to_bits(), "dgate {i}");
            assert_eq!(fast.1[i].to_bits(), plain.1[i].to_bits(), "dup {i}");
        }
        // Against f64 derivatives at a few points.
        for i in [0, 1000, 2050, 3000, n - 1] {
            let (g, u, d) = (gate[i] as f64, up[i] as f64, dout[i] as f64);
            let s = 1.0 / (1.0 + (-g).exp());
            let (wg, wu) = (d * u * s * (1.0 + g * (1.0 - s)), d * g * s);
            assert!(
                (fast.0[i] as f64 - wg).abs() <= 1e-5 * (1.0 + wg.abs()),
                "dgate {i}"
            );
            assert!(
                (fast.1[i] as f64 - wu).abs() <= 1e-5 * (1.0 + wu.abs()),
                "dup {i}"
            );
        }
    }
}
