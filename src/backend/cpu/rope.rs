//! Rotary position embedding on `[B, S, H, hd]`, half-split convention
//! (GPT-NeoX / HF LLaMA `rotate_half`): pairs are `(i, i + hd/2)`.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

use crate::engine::float::Float;
use rayon::prelude::*;

/// `(cos, sin)` of `sign * pos * theta^(-2i/hd)` for every position
/// `pos < seq` and pair `i < hd/2`, row by position. Angles depend only on
/// `(pos, i)`: one table per call, shared by every batch row and head.
pub(super) fn table<F: Float>(seq: usize, hd: usize, theta: f64, sign: f64) -> Vec<(F, F)> {
    let half = hd / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    (0..seq * half)
        .map(|k| {
            let ang = sign * (k / half) as f64 * inv_freq[k % half];
            (F::from_f64(ang.cos()), F::from_f64(ang.sin()))
        })
        .collect()
}

/// [`table`], kept: the training engine's attention asks for the same two
/// tables (forward and backward angles) at every layer of every step, each
/// `seq · hd/2` sines and cosines in f64 (1,024 pairs at tiny's S = 64)
/// computed on the calling thread before the blocks start, while the other
/// workers wait. The last few tables asked for are kept, by float type,
/// shape, theta and sign.
pub(super) fn cached_table<F: Float>(
    seq: usize,
    hd: usize,
    theta: f64,
    sign: f64,
) -> Arc<Vec<(F, F)>> {
    type Key = (TypeId, usize, usize, u64, u64);
    type Kept = Vec<(Key, Arc<dyn Any + Send + Sync>)>;
    static KEPT: Mutex<Kept> = Mutex::new(Vec::new());
    const KEEP: usize = 8;
    let key = (TypeId::of::<F>(), seq, hd, theta.to_bits(), sign.to_bits());
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = kept
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, t)| t.clone().downcast::<Vec<(F, F)>>().ok())
    {
        return t;
    }
    let t = Arc::new(table::<F>(seq, hd, theta, sign));
    if kept.len() == KEEP {
        kept.remove(0);
    }
    kept.push((key, t.clone()));
    t
}

/// One head's vector `x` (`hd` long) rotated by one position's table row
/// `cs` (`hd/2` pairs) into `o`.
#[inline]
pub(super) fn rotate_row<F: Float>(x: &[F], cs: &[(F, F)], o: &mut [F]) {
    let half = cs.len();
    let (xa, xb) = x[..2 * half].split_at(half);
    let (oa, ob) = o[..2 * half].split_at_mut(half);
    for ((((oa, ob), &a), &b), &(c, s)) in oa.iter_mut().zip(ob).zip(xa).zip(xb).zip(cs) {
        *oa = a * c - b * s;
        *ob = b * c + a * s;
    }
}

/// Rotate each pair by `sign * pos * theta^(-2i/hd)`.
fn rotate<F: Float>(
    x: &[F],
    out: &mut [F],
    seq: usize,
    heads: usize,
    hd: usize,
    theta: f64,
    sign: f64,
) {
    let half = hd / 2;
    let row = heads * hd;
    let table = table::<F>(seq, hd, theta, sign);
    out.par_chunks_mut(row)
        .zip(x.par_chunks(row))
        .enumerate()
        .for_each(|(bs, (o, xi))| {
            let cs = &table[(bs % seq) * half..][..half];
            for (o, xi) in o.chunks_exact_mut(hd).zip(xi.chunks_exact(hd)) {
                rotate_row(xi, cs, o);
            }
        });
}

pub fn fwd<F: Float>(
    x: &[F],
    out: &mut [F],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
) {
    debug_assert_eq!(x.len(), batch * seq * heads * head_dim);
    rotate(x, out, seq, heads, head_dim, theta, 1.0);
}

/// The transpose of a rotation is the rotation by the opposite angle.
pub fn bwd<F: Float>(
    dy: &[F],
    dx: &mut [F],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
) {
    debug_assert_eq!(dy.len(), batch * seq * heads * head_dim);
    rotate(dy, dx, seq, heads, head_dim, theta, -1.0);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn matches_formula_and_backward_is_transpose() {
        let (b, s, h, hd) = (2, 3, 2, 4);
        let x = vals(b * s * h * hd, 1);
        let mut y = vec![0.0; x.len()];
        fwd(&x, &mut y, b, s, h, hd, 10000.0);
        // position 2, head 1, i = 1: ang = 2 * 10000^(-2/4) = 0.02
        let base = (s + 2) * h * hd + hd; // b=1, s=2, h=1
        let ang: f64 = 2.0 * 10000f64.powf(-0.5);
        let (a, bb) = (x[base + 1], x[base + 3]);
        assert!((y[base + 1] - (a * ang.cos() - bb * ang.sin())).abs() < 1e-12);
        assert!((y[base + 3] - (bb * ang.cos() + a * ang.sin())).abs() < 1e-12);
        // position 0 is the identity
        assert_eq!(&y[..h * hd], &x[..h * hd]);
        let dy = vals(x.len(), 2);
        let mut dx = vec![0.0; x.len()];
        bwd(&dy, &mut dx, b, s, h, hd, 10000.0);
        check_grad(
            &x,
            &dx,
            |p| {
                let mut o = vec![0.0; p.len()];
                fwd(p, &mut o, b, s, h, hd, 10000.0);
                dot(&o, &dy)
            },
            "dx",
        );
    }
}
