//! The attention block's core as one composite: split the fused QKV
//! projection `[B, S, 3, H, hd]`, apply RoPE to Q and K, run causal masked
//! attention head-major, and merge heads back to `[B, S, H·hd]`.
//!
//! Each (batch row, head) is one parallel block that gathers its own Q, K
//! and V rows from the fused projection (rotating Q and K on the way), so
//! nothing is split, rotated or transposed whole on the calling thread (that
//! serial copying and zero filling was about 5 % of a training step's
//! samples at tiny, while the other core waited), and writes its output
//! (forward) or its Q, K and V gradients (backward) straight into their
//! rows of the merged tensor: one parallel pass per call, not a second one
//! to merge the heads.

use super::alloc;
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

/// Offset of head `h`'s vector in row `(b, s)` of a `[B·S, parts·H·hd]`
/// tensor, in part `p`.
fn row_at(d: &Dims, parts: usize, b: usize, s: usize, p: usize, h: usize) -> usize {
    let w = d.h * d.hd;
    (b * d.s + s) * parts * w + p * w + h * d.hd
}

/// A `[B·S, parts·H·hd]` tensor not yet written, which the (batch row,
/// head) blocks fill in parallel: block `(b, h)` writes head `h`'s vectors
/// of rows `b·S ..` in every part, and no other block touches them. Writing
/// there straight from each block replaces a merge of head-major tensors
/// afterwards (a second parallel pass over all of them).
struct Merged<F> {
    buf: Vec<std::mem::MaybeUninit<F>>,
}

/// The merged tensor's base pointer, shared by the blocks.
struct Rows<F>(*mut std::mem::MaybeUninit<F>);
// SAFETY: each block writes only its own (rows, head) vectors through it.
unsafe impl<F> Sync for Rows<F> {}

impl<F: Float> Merged<F> {
    fn new(d: &Dims, parts: usize) -> Self {
        Merged {
            buf: alloc::uninit(d.b * d.s * parts * d.h * d.hd),
        }
    }

    fn rows(&mut self) -> Rows<F> {
        Rows(self.buf.as_mut_ptr())
    }

    /// # Safety
    /// Every block wrote all of its vectors ([`write_block`]).
    unsafe fn assume_written(self) -> Vec<F> {
        // SAFETY: the caller's contract: every (row, part, head) written.
        unsafe { alloc::assume_init(self.buf) }
    }
}

/// Writes block `(b, h)`'s head-major `[S, hd]` tensors, one per part, into
/// their rows of the merged tensor at `rows`.
///
/// # Safety
/// `rows` is the base of a live `[B·S, heads.len()·H·hd]` buffer; no other
/// thread writes block `(b, h)`'s vectors.
unsafe fn write_block<F: Float>(rows: &Rows<F>, d: &Dims, b: usize, h: usize, heads: &[&[F]]) {
    for (p, x) in heads.iter().enumerate() {
        for (s, v) in x.chunks_exact(d.hd).enumerate() {
            // SAFETY: the caller's contract; the vector lies inside the buffer.
            unsafe {
                let dst = rows.0.add(row_at(d, heads.len(), b, s, p, h));
                std::ptr::copy_nonoverlapping(v.as_ptr(), dst.cast::<F>(), d.hd);
            }
        }
    }
}

/// `qkv` is `[B·S, 3·H·hd]` (Q, K, V blocks per row); returns the output
/// `[B·S, H·hd]` and what the backward needs.
pub fn fwd<F: Float>(qkv: &[F], mask: &[u8], d: &Dims, theta: f64) -> (Vec<F>, MhaSaved<F>) {
    let (hd, blk, half) = (d.hd, d.s * d.hd, d.hd / 2);
    let tab = rope::cached_table::<F>(d.s, hd, theta, 1.0);
    let mut out = Merged::new(d, 1);
    let rows = out.rows();
    let sizes = [blk, blk, blk, d.s * d.s];
    let [q, k, v, att] = alloc::par_pieces(d.b * d.h, sizes, |bh, [q, k, v, a]| {
        let (b, h) = (bh / d.h, bh % d.h);
        for s in 0..d.s {
            let cs = &tab[s * half..][..half];
            let part = |p| &qkv[row_at(d, 3, b, s, p, h)..][..hd];
            let at = s * hd..(s + 1) * hd;
            rope::rotate_row(part(0), cs, &mut q[at.clone()]);
            rope::rotate_row(part(1), cs, &mut k[at.clone()]);
            v[at].copy_from_slice(part(2));
        }
        let mut o = vec![F::ZERO; blk];
        attention::fwd_block(q, k, v, &mask[b * d.s..(b + 1) * d.s], hd, &mut o, a);
        // SAFETY: block (b, h) is this task's alone; `out` outlives the tasks.
        unsafe { write_block(&rows, d, b, h, &[&o]) };
    });
    // SAFETY: every block wrote its vectors.
    (unsafe { out.assume_written() }, MhaSaved { q, k, v, att })
}

/// The gradient of `qkv` (`[B·S, 3·H·hd]`).
pub fn bwd<F: Float>(saved: &MhaSaved<F>, dout: &[F], d: &Dims, theta: f64) -> Vec<F> {
    use rayon::prelude::*;
    let (hd, blk, half) = (d.hd, d.s * d.hd, d.hd / 2);
    // The transpose of a rotation is the rotation by the opposite angle.
    let tab = rope::cached_table::<F>(d.s, hd, theta, -1.0);
    let mut dqkv = Merged::new(d, 3);
    let rows = dqkv.rows();
    (0..d.b * d.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / d.h, bh % d.h);
        let mut dob = Vec::with_capacity(blk);
        for s in 0..d.s {
            dob.extend_from_slice(&dout[row_at(d, 1, b, s, 0, h)..][..hd]);
        }
        let a = &saved.att[bh * d.s * d.s..][..d.s * d.s];
        let r = bh * blk..(bh + 1) * blk;
        let (q, k, v) = (&saved.q[r.clone()], &saved.k[r.clone()], &saved.v[r]);
        let mut g = vec![F::ZERO; 3 * blk];
        let (dq, rest) = g.split_at_mut(blk);
        let (dk, dv) = rest.split_at_mut(blk);
        attention::bwd_block(q, k, v, a, &dob, hd, dq, dk, dv);
        // Back through RoPE, row by row (dob is free again as scratch).
        let tmp = &mut dob[..hd];
        for g in [&mut *dq, &mut *dk] {
            for (s, row) in g.chunks_exact_mut(hd).enumerate() {
                tmp.copy_from_slice(row);
                rope::rotate_row(tmp, &tab[s * half..][..half], row);
            }
        }
        // SAFETY: block (b, h) is this task's alone; `dqkv` outlives the tasks.
        unsafe { write_block(&rows, d, b, h, &[dq, dk, dv]) };
    });
    // SAFETY: every block wrote its vectors of all three parts.
    unsafe { dqkv.assume_written() }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn dims() -> Dims {
        Dims {
            b: 2,
            h: 2,
            s: 3,
            hd: 4,
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let d = dims();
        let qkv = vals(d.b * d.s * 3 * d.h * d.hd, 1);
        let mask = [1u8, 1, 1, 1, 1, 0];
        let dout = vals(d.b * d.s * d.h * d.hd, 2);
        let (_, saved) = fwd(&qkv, &mask, &d, 10000.0);
        let dqkv = bwd(&saved, &dout, &d, 10000.0);
        check_grad(
            &qkv,
            &dqkv,
            |p| dot(&fwd(p, &mask, &d, 10000.0).0, &dout),
            "dqkv",
        );
    }

    /// `[B, S, H, hd]` <-> `[B, H, S, hd]`, one way or the other.
    fn transpose(x: &[f32], d: &Dims, to_heads: bool) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for (b, s, h) in
            (0..d.b).flat_map(|b| (0..d.s).flat_map(move |s| (0..d.h).map(move |h| (b, s, h))))
        {
            let rows = ((b * d.s + s) * d.h + h) * d.hd;
            let heads = ((b * d.h + h) * d.s + s) * d.hd;
            let (src, dst) = if to_heads {
                (rows, heads)
            } else {
                (heads, rows)
            };
            out[dst..dst + d.hd].copy_from_slice(&x[src..src + d.hd]);
        }
        out
    }

    /// The fused blocks give the bits of the plain composition: split the
    /// projection, rotate whole tensors, transpose, attend, transpose back.
    #[test]
    fn fused_blocks_equal_the_plain_composition_bit_for_bit() {
        let d = Dims {
            b: 3,
            h: 2,
            s: 7,
            hd: 8,
        };
        let (w, n, theta) = (d.h * d.hd, d.b * d.s * d.h * d.hd, 500.0);
        let qkv: Vec<f32> = vals(3 * n, 5).iter().map(|&v| v as f32).collect();
        let dout: Vec<f32> = vals(n, 6).iter().map(|&v| v as f32).collect();
        let mask = [
            1u8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1,
        ];
        let part = |p: usize| -> Vec<f32> {
            qkv.chunks_exact(3 * w)
                .flat_map(|r| r[p * w..(p + 1) * w].to_vec())
                .collect()
        };
        let roped = |x: &[f32], bwd: bool| {
            let mut o = vec![0.0; x.len()];
            let f = if bwd { rope::bwd } else { rope::fwd };
            f(x, &mut o, d.b, d.s, d.h, d.hd, theta);
            o
        };
        let q = transpose(&roped(&part(0), false), &d, true);
        let k = transpose(&roped(&part(1), false), &d, true);
        let v = transpose(&part(2), &d, true);
        let (mut o, mut att) = (vec![0.0; n], vec![0.0; d.b * d.h * d.s * d.s]);
        attention::fwd(&q, &k, &v, &mask, &d, &mut o, &mut att);
        let (out, saved) = fwd(&qkv, &mask, &d, theta);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&transpose(&o, &d, false)), "output");
        assert_eq!(bits(&saved.q), bits(&q), "roped q");
        assert_eq!(bits(&saved.att), bits(&att), "probabilities");

        let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let dob = transpose(&dout, &d, true);
        attention::bwd(&q, &k, &v, &att, &dob, &d, &mut dq, &mut dk, &mut dv);
        let grads = [
            roped(&transpose(&dq, &d, false), true),
            roped(&transpose(&dk, &d, false), true),
            transpose(&dv, &d, false),
        ];
        let want: Vec<f32> = (0..d.b * d.s)
            .flat_map(|r| {
                grads
                    .iter()
                    .flat_map(move |g| g[r * w..(r + 1) * w].to_vec())
            })
            .collect();
        assert_eq!(bits(&bwd(&saved, &dout, &d, theta)), bits(&want), "dqkv");
    }
}
