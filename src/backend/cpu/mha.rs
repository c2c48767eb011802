//! The attention block's core as one composite: split the fused QKV
//! projection `[B, S, 3, H, hd]`, apply RoPE to Q and K, run causal masked
//! attention head-major, and merge heads back to `[B, S, H·hd]`.

use super::attention::{self, Dims};
use super::rope;
use crate::engine::float::Float;

/// What the backward needs: roped Q, K and V head-major, and the probabilities.
pub struct MhaSaved<F> {
    pub q: Vec<F>,
    pub k: Vec<F>,
    pub v: Vec<F>,
    pub att: Vec<F>,
}

/// `[B, S, H, hd]` <-> `[B, H, S, hd]`.
fn to_heads<F: Float>(x: &[F], d: &Dims, out: &mut [F]) {
    for b in 0..d.b {
        for s in 0..d.s {
            for h in 0..d.h {
                let src = ((b * d.s + s) * d.h + h) * d.hd;
                let dst = ((b * d.h + h) * d.s + s) * d.hd;
                out[dst..dst + d.hd].copy_from_slice(&x[src..src + d.hd]);
            }
        }
    }
}

fn from_heads<F: Float>(x: &[F], d: &Dims, out: &mut [F]) {
    for b in 0..d.b {
        for s in 0..d.s {
            for h in 0..d.h {
                let dst = ((b * d.s + s) * d.h + h) * d.hd;
                let src = ((b * d.h + h) * d.s + s) * d.hd;
                out[dst..dst + d.hd].copy_from_slice(&x[src..src + d.hd]);
            }
        }
    }
}

/// `qkv` is `[B·S, 3·H·hd]` (Q, K, V blocks per row); `out` is `[B·S, H·hd]`.
pub fn fwd<F: Float>(qkv: &[F], mask: &[u8], d: &Dims, theta: f64, out: &mut [F]) -> MhaSaved<F> {
    let w = d.h * d.hd;
    let n = d.b * d.s * w;
    let mut parts = [vec![F::ZERO; n], vec![F::ZERO; n], vec![F::ZERO; n]];
    for (r, row) in qkv.chunks_exact(3 * w).enumerate() {
        for (p, part) in parts.iter_mut().enumerate() {
            part[r * w..(r + 1) * w].copy_from_slice(&row[p * w..(p + 1) * w]);
        }
    }
    let mut tmp = vec![F::ZERO; n];
    let mut heads = |x: &[F], roped: bool| {
        let mut o = vec![F::ZERO; n];
        if roped {
            rope::fwd(x, &mut tmp, d.b, d.s, d.h, d.hd, theta);
            to_heads(&tmp, d, &mut o);
        } else {
            to_heads(x, d, &mut o);
        }
        o
    };
    let q = heads(&parts[0], true);
    let k = heads(&parts[1], true);
    let v = heads(&parts[2], false);
    let mut att = vec![F::ZERO; d.b * d.h * d.s * d.s];
    let mut o = vec![F::ZERO; n];
    attention::fwd(&q, &k, &v, mask, d, &mut o, &mut att);
    from_heads(&o, d, out);
    MhaSaved { q, k, v, att }
}

/// `dqkv` (`[B·S, 3·H·hd]`) is overwritten.
pub fn bwd<F: Float>(saved: &MhaSaved<F>, dout: &[F], d: &Dims, theta: f64, dqkv: &mut [F]) {
    let w = d.h * d.hd;
    let n = d.b * d.s * w;
    let mut dob = vec![F::ZERO; n];
    to_heads(dout, d, &mut dob);
    let (mut dq, mut dk, mut dv) = (vec![F::ZERO; n], vec![F::ZERO; n], vec![F::ZERO; n]);
    attention::bwd(
        &saved.q, &saved.k, &saved.v, &saved.att, &dob, d, &mut dq, &mut dk, &mut dv,
    );
    let mut tmp = vec![F::ZERO; n];
    let mut grads = [vec![F::ZERO; n], vec![F::ZERO; n], vec![F::ZERO; n]];
    for (i, (g, roped)) in [(&dq, true), (&dk, true), (&dv, false)]
        .into_iter()
        .enumerate()
    {
        from_heads(g, d, &mut tmp);
        if roped {
            rope::bwd(&tmp, &mut grads[i], d.b, d.s, d.h, d.hd, theta);
        } else {
            grads[i].copy_from_slice(&tmp);
        }
    }
    for (r, row) in dqkv.chunks_exact_mut(3 * w).enumerate() {
        for (p, g) in grads.iter().enumerate() {
            row[p * w..(p + 1) * w].copy_from_slice(&g[r * w..(r + 1) * w]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        let d = Dims {
            b: 2,
            h: 2,
            s: 3,
            hd: 4,
        };
        let qkv = vals(d.b * d.s * 3 * d.h * d.hd, 1);
        let mask = [1u8, 1, 1, 1, 1, 0];
        let dout = vals(d.b * d.s * d.h * d.hd, 2);
        let mut out = vec![0.0; dout.len()];
        let saved = fwd(&qkv, &mask, &d, 10000.0, &mut out);
        let mut dqkv = vec![0.0; qkv.len()];
        bwd(&saved, &dout, &d, 10000.0, &mut dqkv);
        check_grad(
            &qkv,
            &dqkv,
            |p| {
                let mut o = vec![0.0; dout.len()];
                fwd(p, &mask, &d, 10000.0, &mut o);
                dot(&o, &dout)
            },
            "dqkv",
        );
    }
}
