//! Causal multi-head attention with a key padding mask, on head-major
//! tensors `[B, H, S, hd]`. The forward keeps the probabilities
//! `att [B, H, S, S]` for the backward. Query i sees key j when `j <= i` and
//! `mask[b, j] != 0`; a query that sees no key outputs zeros.

use super::attention_f32;
use super::matmul::gemm;
use super::simd::{as_f32, as_f32_mut};
use crate::engine::float::{Float, max_lanes, sum_lanes};
use rayon::prelude::*;

pub use crate::engine::AttnDims as Dims;

#[allow(clippy::too_many_arguments)]
pub fn fwd<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    mask: &[u8],
    dims: &Dims,
    out: &mut [F],
    att: &mut [F],
) {
    let Dims { h, s, hd, .. } = *dims;
    let blk = s * hd;
    out.par_chunks_mut(blk)
        .zip(att.par_chunks_mut(s * s))
        .enumerate()
        .for_each(|(bh, (o, a))| {
            let b = bh / h;
            let (qb, kb, vb) = (
                &q[bh * blk..][..blk],
                &k[bh * blk..][..blk],
                &v[bh * blk..][..blk],
            );
            fwd_block(qb, kb, vb, &mask[b * s..(b + 1) * s], hd, o, a);
        });
}

/// One (batch row, head): `q`, `k`, `v` and `o` are `[S, hd]`, `a` the
/// probabilities `[S, S]`, `m` the row's key mask `[S]`. `o` and `a` are
/// overwritten. In f32 on AVX-512F the vector loops of
/// [`attention_f32`](super::attention_f32), else [`fwd_block_gemm`].
pub(super) fn fwd_block<F: Float>(
    qb: &[F],
    kb: &[F],
    vb: &[F],
    m: &[u8],
    hd: usize,
    o: &mut [F],
    a: &mut [F],
) {
    if attention_f32::supports(hd)
        && attention_f32::fast()
        && let (Some(q), Some(k), Some(v)) = (as_f32(qb), as_f32(kb), as_f32(vb))
        && let (Some(o), Some(a)) = (as_f32_mut(o), as_f32_mut(a))
    {
        return attention_f32::fwd_block(q, k, v, m, hd, o, a);
    }
    fwd_block_gemm(qb, kb, vb, m, hd, o, a)
}

/// `fwd_block` on `gemm` products: any float, any head size.
pub fn fwd_block_gemm<F: Float>(
    qb: &[F],
    kb: &[F],
    vb: &[F],
    m: &[u8],
    hd: usize,
    o: &mut [F],
    a: &mut [F],
) {
    let s = m.len();
    let scale = F::ONE / F::from_usize(hd).sqrt();
    gemm(s, s, hd, qb, false, kb, true, a, false);
    for i in 0..s {
        let row = &mut a[i * s..(i + 1) * s];
        // Hidden keys become -inf, whose exp is 0: no branch in the
        // exp loop, so these passes vectorise.
        let (vis, hidden) = row.split_at_mut(i + 1);
        hidden.iter_mut().for_each(|x| *x = F::ZERO);
        for (x, &mj) in vis.iter_mut().zip(m) {
            *x = if mj != 0 {
                *x * scale
            } else {
                F::neg_infinity()
            };
        }
        let mx = max_lanes(vis);
        if mx == F::neg_infinity() {
            vis.iter_mut().for_each(|x| *x = F::ZERO);
            continue;
        }
        for x in vis.iter_mut() {
            *x = (*x - mx).exp();
        }
        let inv = F::ONE / sum_lanes(vis);
        vis.iter_mut().for_each(|x| *x *= inv);
    }
    gemm(s, hd, s, a, false, vb, false, o, false);
}

/// All of `dq`, `dk`, `dv` are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn bwd<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    att: &[F],
    dout: &[F],
    dims: &Dims,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
) {
    let Dims { s, hd, .. } = *dims;
    let blk = s * hd;
    dq.par_chunks_mut(blk)
        .zip(dk.par_chunks_mut(blk))
        .zip(dv.par_chunks_mut(blk))
        .enumerate()
        .for_each(|(bh, ((dqb, dkb), dvb))| {
            let (qb, kb, vb) = (
                &q[bh * blk..][..blk],
                &k[bh * blk..][..blk],
                &v[bh * blk..][..blk],
            );
            let a = &att[bh * s * s..][..s * s];
            let dob = &dout[bh * blk..][..blk];
            bwd_block(qb, kb, vb, a, dob, hd, dqb, dkb, dvb);
        });
}

/// One (batch row, head) of [`bwd`]: `a` is the block's probabilities
/// `[S, S]`; `dqb`, `dkb`, `dvb` are overwritten. As [`fwd_block`]: the
/// vector loops in f32 on AVX-512F, else [`bwd_block_gemm`].
#[allow(clippy::too_many_arguments)]
pub(super) fn bwd_block<F: Float>(
    qb: &[F],
    kb: &[F],
    vb: &[F],
    a: &[F],
    dob: &[F],
    hd: usize,
    dqb: &mut [F],
    dkb: &mut [F],
    dvb: &mut [F],
) {
    if attention_f32::supports(hd)
        && attention_f32::fast()
        && let (Some(q), Some(k), Some(v)) = (as_f32(qb), as_f32(kb), as_f32(vb))
        && let (Some(a), Some(dob)) = (as_f32(a), as_f32(dob))
        && let (Some(dq), Some(dk), Some(dv)) = (as_f32_mut(dqb), as_f32_mut(dkb), as_f32_mut(dvb))
    {
        return attention_f32::bwd_block(q, k, v, a, dob, hd, dq, dk, dv);
    }
    bwd_block_gemm(qb, kb, vb, a, dob, hd, dqb, dkb, dvb)
}

/// `bwd_block` on `gemm` products: any float, any head size.
#[allow(clippy::too_many_arguments)]
pub fn bwd_block_gemm<F: Float>(
    qb: &[F],
    kb: &[F],
    vb: &[F],
    a: &[F],
    dob: &[F],
    hd: usize,
    dqb: &mut [F],
    dkb: &mut [F],
    dvb: &mut [F],
) {
    let s = qb.len() / hd;
    let mut ds = vec![F::ZERO; s * s];
    let scale = F::ONE / F::from_usize(hd).sqrt();
    // dV = Pᵀ dO ; dP = dO Vᵀ
    gemm(s, hd, s, a, true, dob, false, dvb, false);
    gemm(s, s, hd, dob, false, vb, true, &mut ds, false);
    // dS = P * (dP - rowsum(dP * P)) * scale
    for i in 0..s {
        let pr = &a[i * s..(i + 1) * s];
        let dr = &mut ds[i * s..(i + 1) * s];
        let dot: F = pr[..=i].iter().zip(&dr[..=i]).map(|(&p, &g)| p * g).sum();
        for j in 0..s {
            dr[j] = if j <= i {
                pr[j] * (dr[j] - dot) * scale
            } else {
                F::ZERO
            };
        }
    }
    gemm(s, hd, s, &ds, false, kb, false, dqb, false);
    gemm(s, hd, s, &ds, true, qb, false, dkb, false);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn causal_masked_attention_and_gradients() {
        let dims = Dims {
            b: 2,
            h: 2,
            s: 4,
            hd: 3,
        };
        let n = dims.b * dims.h * dims.s * dims.hd;
        let (q, k, v) = (vals(n, 1), vals(n, 2), vals(n, 3));
        // second sequence: last position is padding
        let mask = [1u8, 1, 1, 1, 1, 1, 1, 0];
        let mut out = vec![0.0; n];
        let mut att = vec![0.0; dims.b * dims.h * dims.s * dims.s];
        fwd(&q, &k, &v, &mask, &dims, &mut out, &mut att);
        // row 0 attends to key 0 only
        assert_eq!(&out[..3], &v[..3]);
        // padding key gets no weight
        let bh = 3; // b=1, h=1
        assert_eq!(att[bh * 16 + 3 * 4 + 3], 0.0);
        let row: f64 = att[bh * 16 + 2 * 4..bh * 16 + 3 * 4].iter().sum();
        assert!((row - 1.0).abs() < 1e-12);
        let dout = vals(n, 4);
        let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        bwd(&q, &k, &v, &att, &dout, &dims, &mut dq, &mut dk, &mut dv);
        let f = |q: &[f64], k: &[f64], v: &[f64]| {
            let mut o = vec![0.0; n];
            let mut a = vec![0.0; att.len()];
            fwd(q, k, v, &mask, &dims, &mut o, &mut a);
            dot(&o, &dout)
        };
        check_grad(&q, &dq, |p| f(p, &k, &v), "dq");
        check_grad(&k, &dk, |p| f(&q, p, &v), "dk");
        check_grad(&v, &dv, |p| f(&q, &k, p), "dv");
    }
}
