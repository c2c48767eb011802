//! SwiGLU activation: `out = silu(gate) * up`.

use super::simd;
use crate::engine::float::{Float, sigmoid};
use rayon::prelude::*;

const CHUNK: usize = 4096;

pub fn fwd<F: Float>(gate: &[F], up: &[F], out: &mut [F]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| match (simd::as_f32(g), simd::as_f32(u)) {
            (Some(g), Some(u)) => {
                simd::swiglu_f32(g, u, simd::as_f32_mut(o).expect("out is f32 like gate"))
            }
            _ => simd::swiglu_plain(g, u, o),
        });
}

/// `dgate` and `dup` are overwritten.
pub fn bwd<F: Float>(gate: &[F], up: &[F], dout: &[F], dgate: &mut [F], dup: &mut [F]) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(
            gate.par_chunks(CHUNK)
                .zip(up.par_chunks(CHUNK))
                .zip(dout.par_chunks(CHUNK)),
        )
        .for_each(|((dg, du), ((g, u), d))| {
            for i in 0..g.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = d[i] * silu;
                // d silu/dg = s * (1 + g * (1 - s))
                dg[i] = d[i] * u[i] * s * (F::ONE + g[i] * (F::ONE - s));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        let n = 11;
        let g: Vec<f64> = vals(n, 1).iter().map(|v| v * 4.0).collect();
        let u = vals(n, 2);
        let d = vals(n, 3);
        let mut dg = vec![0.0; n];
        let mut du = vec![0.0; n];
        bwd(&g, &u, &d, &mut dg, &mut du);
        let f = |g: &[f64], u: &[f64]| {
            let mut o = vec![0.0; n];
            fwd(g, u, &mut o);
            dot(&o, &d)
        };
        check_grad(&g, &dg, |p| f(p, &u), "dgate");
        check_grad(&u, &du, |p| f(&g, p), "dup");
    }
}
