//! RMSNorm: `y = x * rstd * w`, `rstd = 1/sqrt(mean(x²) + eps)` per row.

use std::mem::MaybeUninit;

use crate::engine::float::{Float, dot_lanes};
use rayon::prelude::*;

/// Writes every element of `y` and `rstd` (not read: they may be
/// unwritten, `alloc::uninit`, so the engine skips a zero fill).
pub fn fwd<F: Float>(
    x: &[F],
    w: &[F],
    d: usize,
    eps: F,
    y: &mut [MaybeUninit<F>],
    rstd: &mut [MaybeUninit<F>],
) {
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(rstd.par_iter_mut())
        .for_each(|((yr, xr), r)| {
            // Eight partial sums: a sequential sum was 4 % of the f32
            // inference engine's forward at tiny, one dependent add per value.
            let ms = dot_lanes(xr, xr) / F::from_usize(d);
            let rs = F::ONE / (ms + eps).sqrt();
            r.write(rs);
            for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                o.write(v * rs * g);
            }
        });
}

/// Rows per block of the backward: each block's `dw` partial sums are
/// formed on the worker that computes its `dx`, then added in block order.
const BWD_ROWS: usize = 32;

/// `dx` is overwritten; `dw` accumulates: per block of `BWD_ROWS` rows in
/// parallel, then the blocks' sums in block order (the same bits whatever
/// the threads). Before, `dw` was one serial pass over every row on the
/// calling thread after the parallel `dx`.
/// Writes every element of `dx` (as `fwd` its outputs); adds into `dw`.
pub fn bwd<F: Float>(
    x: &[F],
    w: &[F],
    rstd: &[F],
    dy: &[F],
    d: usize,
    dx: &mut [MaybeUninit<F>],
    dw: &mut [F],
) {
    let partials: Vec<Vec<F>> = dx
        .par_chunks_mut(BWD_ROWS * d)
        .zip(x.par_chunks(BWD_ROWS * d))
        .zip(dy.par_chunks(BWD_ROWS * d))
        .zip(rstd.par_chunks(BWD_ROWS))
        .map(|(((dxb, xb), dyb), rsb)| {
            let mut part = vec![F::ZERO; d];
            for (((dxr, xr), dyr), &rs) in dxb
                .chunks_exact_mut(d)
                .zip(xb.chunks_exact(d))
                .zip(dyb.chunks_exact(d))
                .zip(rsb)
            {
                // y_i = x_i*r*w_i; dx_i = r*w_i*dy_i - x_i*r³/d * sum_j dy_j*w_j*x_j
                let dot = dot3_lanes(xr, dyr, w);
                let c = dot * rs * rs * rs / F::from_usize(d);
                for (((o, &xv), &g), &wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
                    o.write(rs * wv * g - xv * c);
                }
                for ((p, &xv), &g) in part.iter_mut().zip(xr).zip(dyr) {
                    *p += xv * rs * g;
                }
            }
            part
        })
        .collect();
    for part in partials {
        for (g, p) in dw.iter_mut().zip(part) {
            *g += p;
        }
    }
}

/// `Σ a[i]·b[i]·c[i]` in eight interleaved partial sums (see `dot_lanes`).
fn dot3_lanes<F: Float>(a: &[F], b: &[F], c: &[F]) -> F {
    let mut acc = [F::ZERO; 8];
    let n = a.len() / 8 * 8;
    for ((x, y), z) in a[..n]
        .chunks_exact(8)
        .zip(b[..n].chunks_exact(8))
        .zip(c[..n].chunks_exact(8))
    {
        for k in 0..8 {
            acc[k] += x[k] * y[k] * z[k];
        }
    }
    let mut s = F::ZERO;
    for v in acc {
        s += v;
    }
    for i in n..a.len() {
        s += a[i] * b[i] * c[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::alloc::as_uninit;
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        // 70 rows: two whole blocks of the backward's dw sums and a part;
        // d 13: one 8-lane chunk and a tail.
        let (t, d) = (70, 13);
        let x = vals(t * d, 1);
        let w = vals(d, 2);
        let dy = vals(t * d, 3);
        let eps = 1e-5;
        let f = |x: &[f64], w: &[f64]| {
            let mut y = vec![0.0; t * d];
            let mut r = vec![0.0; t];
            fwd(x, w, d, eps, as_uninit(&mut y), as_uninit(&mut r));
            dot(&y, &dy)
        };
        let mut y = vec![0.0; t * d];
        let mut r = vec![0.0; t];
        fwd(&x, &w, d, eps, as_uninit(&mut y), as_uninit(&mut r));
        let ms: f64 = x[..d].iter().map(|v| v * v).sum::<f64>() / d as f64;
        assert!((r[0] - 1.0 / (ms + eps).sqrt()).abs() < 1e-12);
        let mut dx = vec![0.0; t * d];
        let mut dw = vec![0.0; d];
        bwd(&x, &w, &r, &dy, d, as_uninit(&mut dx), &mut dw);
        check_grad(&x, &dx, |p| f(p, &w), "dx");
        check_grad(&w, &dw, |p| f(&x, p), "dw");
    }
}
