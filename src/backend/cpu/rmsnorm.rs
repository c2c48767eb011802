//! RMSNorm: `y = x * rstd * w`, `rstd = 1/sqrt(mean(x²) + eps)` per row.

use crate::engine::float::Float;
use rayon::prelude::*;

pub fn fwd<F: Float>(x: &[F], w: &[F], d: usize, eps: F, y: &mut [F], rstd: &mut [F]) {
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(rstd.par_iter_mut())
        .for_each(|((yr, xr), r)| {
            let ms = xr.iter().map(|&v| v * v).sum::<F>() / F::from_usize(d);
            let rs = F::ONE / (ms + eps).sqrt();
            *r = rs;
            for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                *o = v * rs * g;
            }
        });
}

/// `dx` is overwritten; `dw` accumulates (summed over rows in a fixed order).
pub fn bwd<F: Float>(x: &[F], w: &[F], rstd: &[F], dy: &[F], d: usize, dx: &mut [F], dw: &mut [F]) {
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(dy.par_chunks(d))
        .zip(rstd.par_iter())
        .for_each(|(((dxr, xr), dyr), &rs)| {
            // y_i = x_i*r*w_i; dx_i = r*w_i*dy_i - x_i*r³/d * sum_j dy_j*w_j*x_j
            let dot: F = xr
                .iter()
                .zip(dyr)
                .zip(w)
                .map(|((&a, &b), &c)| a * b * c)
                .sum();
            let c = dot * rs * rs * rs / F::from_usize(d);
            for (((o, &xv), &g), &wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
                *o = rs * wv * g - xv * c;
            }
        });
    for ((xr, dyr), &rs) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(rstd) {
        for ((g, &xv), &dv) in dw.iter_mut().zip(xr).zip(dyr) {
            *g += xv * rs * dv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        let (t, d) = (3, 5);
        let x = vals(t * d, 1);
        let w = vals(d, 2);
        let dy = vals(t * d, 3);
        let eps = 1e-5;
        let f = |x: &[f64], w: &[f64]| {
            let mut y = vec![0.0; t * d];
            let mut r = vec![0.0; t];
            fwd(x, w, d, eps, &mut y, &mut r);
            dot(&y, &dy)
        };
        let mut y = vec![0.0; t * d];
        let mut r = vec![0.0; t];
        fwd(&x, &w, d, eps, &mut y, &mut r);
        let ms: f64 = x[..d].iter().map(|v| v * v).sum::<f64>() / d as f64;
        assert!((r[0] - 1.0 / (ms + eps).sqrt()).abs() < 1e-12);
        let mut dx = vec![0.0; t * d];
        let mut dw = vec![0.0; d];
        bwd(&x, &w, &r, &dy, d, &mut dx, &mut dw);
        check_grad(&x, &dx, |p| f(p, &w), "dx");
        check_grad(&w, &dw, |p| f(&x, p), "dw");
    }
}
