//! SwiGLU activation: `out = silu(gate) * up`.

use super::simd;
use crate::engine::float::Float;
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

/// [`fwd`] into a new vector (no serial zero fill first).
pub fn fwd_new<F: Float>(gate: &[F], up: &[F]) -> Vec<F> {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    super::alloc::par_written(gate.len(), CHUNK, |i, o| {
        let (g, u) = (&gate[i * CHUNK..][..o.len()], &up[i * CHUNK..][..o.len()]);
        match (simd::as_f32(g), simd::as_f32(u)) {
            (Some(g), Some(u)) => {
                simd::swiglu_f32(g, u, simd::as_f32_mut(o).expect("out is f32 like gate"))
            }
            _ => simd::swiglu_plain(g, u, o),
        }
    })
}

/// [`bwd`] into new vectors `(dgate, dup)` (no serial zero fill first).
pub fn bwd_new<F: Float>(gate: &[F], up: &[F], dout: &[F]) -> (Vec<F>, Vec<F>) {
    let n = gate.len();
    assert!(
        up.len() == n && dout.len() == n,
        "swiglu: operands differ in length"
    );
    let piece = |i: usize, dg: &mut [F], du: &mut [F]| {
        let r = i * CHUNK..i * CHUNK + dg.len();
        bwd_piece(&gate[r.clone()], &up[r.clone()], &dout[r], dg, du);
    };
    super::alloc::par_written2(n, CHUNK, piece)
}

fn bwd_piece<F: Float>(g: &[F], u: &[F], d: &[F], dg: &mut [F], du: &mut [F]) {
    match (simd::as_f32(g), simd::as_f32(u), simd::as_f32(d)) {
        (Some(g), Some(u), Some(d)) => simd::swiglu_bwd_f32(
            g,
            u,
            d,
            simd::as_f32_mut(dg).expect("dgate is f32 like gate"),
            simd::as_f32_mut(du).expect("dup is f32 like gate"),
        ),
        _ => simd::swiglu_bwd_plain(g, u, d, dg, du),
    }
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
        .for_each(|((dg, du), ((g, u), d))| bwd_piece(g, u, d, dg, du));
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

    /// The new-vector forms (written in parallel pieces, no zero fill) give
    /// the in-place forms' bits, f32 (the AVX-512 path where the CPU has it)
    /// and f64, over several pieces and a short last one.
    #[test]
    fn new_vector_forms_equal_the_in_place_ones() {
        let n = 2 * CHUNK + 5;
        let g: Vec<f64> = vals(n, 1).iter().map(|v| v * 6.0).collect();
        let (u, d) = (vals(n, 2), vals(n, 3));
        let mut y = vec![0.0; n];
        fwd(&g, &u, &mut y);
        assert_eq!(fwd_new(&g, &u), y);
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        bwd(&g, &u, &d, &mut dg, &mut du);
        assert_eq!(bwd_new(&g, &u, &d), (dg, du));
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let (g, u) = (f(&g), f(&u));
        let mut y = vec![0f32; n];
        fwd(&g, &u, &mut y);
        assert_eq!(fwd_new(&g, &u), y);
    }
}
