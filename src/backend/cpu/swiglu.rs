//! SwiGLU activation: `out = silu(gate) * up`.

use std::mem::MaybeUninit;

use super::{alloc, simd};
use crate::engine::float::Float;
use rayon::prelude::*;

const CHUNK: usize = 4096;

/// `out = silu(gate) * up`; `out` overwritten.
pub fn fwd<F: Float>(gate: &[F], up: &[F], out: &mut [F]) {
    fwd_into(gate, up, alloc::as_uninit(out));
}

/// [`fwd`] into a buffer not yet written: all of it written.
pub fn fwd_into<F: Float>(gate: &[F], up: &[F], out: &mut [MaybeUninit<F>]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "swiglu: operands differ in length"
    );
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| fwd_piece(g, u, o));
}

/// [`fwd_into`] of one piece, on the calling thread.
pub(super) fn fwd_piece<F: Float>(g: &[F], u: &[F], o: &mut [MaybeUninit<F>]) {
    match (simd::as_f32(g), simd::as_f32(u)) {
        (Some(g), Some(u)) => {
            simd::swiglu_f32(g, u, simd::as_f32_uninit(o).expect("out is f32 like gate"))
        }
        _ => simd::swiglu_plain(g, u, o),
    }
}

/// [`fwd`] into a new vector (no zero fill first).
pub fn fwd_new<F: Float>(gate: &[F], up: &[F]) -> Vec<F> {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    // SAFETY: `fwd_piece` writes all of each piece (it asserts the lengths).
    unsafe {
        alloc::par_filled(gate.len(), CHUNK, |i, o| {
            let r = i * CHUNK..i * CHUNK + o.len();
            fwd_piece(&gate[r.clone()], &up[r], o)
        })
    }
}

/// [`bwd`] into new vectors `(dgate, dup)` (no zero fill first).
pub fn bwd_new<F: Float>(gate: &[F], up: &[F], dout: &[F]) -> (Vec<F>, Vec<F>) {
    let n = gate.len();
    let (mut dg, mut du) = (alloc::uninit(n), alloc::uninit(n));
    bwd_into(gate, up, dout, &mut dg, &mut du);
    // SAFETY: `bwd_into` wrote every element of both.
    unsafe { (alloc::assume_init(dg), alloc::assume_init(du)) }
}

/// [`bwd_into`] of one piece, on the calling thread.
pub(super) fn bwd_piece<F: Float>(
    g: &[F],
    u: &[F],
    d: &[F],
    dg: &mut [MaybeUninit<F>],
    du: &mut [MaybeUninit<F>],
) {
    match (simd::as_f32(g), simd::as_f32(u), simd::as_f32(d)) {
        (Some(g), Some(u), Some(d)) => simd::swiglu_bwd_f32(
            g,
            u,
            d,
            simd::as_f32_uninit(dg).expect("dgate is f32 like gate"),
            simd::as_f32_uninit(du).expect("dup is f32 like gate"),
        ),
        _ => simd::swiglu_bwd_plain(g, u, d, dg, du),
    }
}

/// `dgate` and `dup` are overwritten.
pub fn bwd<F: Float>(gate: &[F], up: &[F], dout: &[F], dgate: &mut [F], dup: &mut [F]) {
    bwd_into(
        gate,
        up,
        dout,
        alloc::as_uninit(dgate),
        alloc::as_uninit(dup),
    );
}

/// [`bwd`] into buffers not yet written: all of both written.
pub fn bwd_into<F: Float>(
    gate: &[F],
    up: &[F],
    dout: &[F],
    dgate: &mut [MaybeUninit<F>],
    dup: &mut [MaybeUninit<F>],
) {
    let n = gate.len();
    assert!(
        up.len() == n && dout.len() == n && dgate.len() == n && dup.len() == n,
        "swiglu: operands differ in length"
    );
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
