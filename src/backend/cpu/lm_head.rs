//! The tied LM head fused with the cross entropy:
//! `loss = mean over rows with a target of (logsumexp(h·Eᵀ) - (h·Eᵀ)[target])`.
//! The `[T, V]` logits are never kept: the forward makes them a few rows at
//! a time and keeps each row's max and sum of exponentials (apart: their
//! logsumexp `m + ln s` drops `ln s` once `|m|` is large, ~1e8 in f32, as
//! [`super::xent`] and `cuda/xent.cu` avoid too); the backward makes them again, a
//! slice of the vocabulary at a time, turns them into `dlogits` in place and
//! feeds both products (`dh`, `dE`). Rows without a target (padding, last
//! position) are skipped altogether. One extra product in the backward buys
//! no `T·V` buffers (64 MB for `tiny` at batch 8, 270 MB for `small`).
//! Training takes [`super::lm_head_train`] instead, which makes the
//! gradients in the forward's pass; [`bwd`] then only scales them.

use super::alloc;
use super::matmul::{Products, Rhs, gemm_in, gemm_rhs};
use super::simd::{exp_row_stats, exp_scaled};
use crate::engine::float::Float;
use rayon::prelude::*;

/// Rows per forward task (each holds `ROWS_FWD · V` logits). Larger chunks
/// pack the table fewer times (the product repacks it on every call).
const ROWS_FWD: usize = 128;
/// Rows per backward product: the `dE` slice is read and written once per
/// chunk, so fewer, larger chunks move less memory.
const ROWS_BWD: usize = 256;
/// The backward splits the vocabulary into this many slices, whatever the
/// thread count, so its sums run in a fixed order (deterministic); so does
/// the training forward ([`super::lm_head_train`]).
pub(super) const VOCAB_SLICES: usize = 8;

/// What the backward needs: which rows have a target, and each one's logit
/// max `m` and sum `s` of `exp(logit - m)` (softmax = `exp(x - m) / s`);
/// after the training forward, the gradients themselves.
pub struct LmHeadSaved<F> {
    pub rows: Vec<usize>,
    pub max: Vec<F>,
    pub sum: Vec<F>,
    pub grads: Option<TrainGrads<F>>,
}

/// The gradients for `dloss = 1`, made by [`super::lm_head_train::train_fwd`]:
/// `dh` of the rows with a target (`[rows, d]`, in `rows`' order) and `dE`
/// (`[V, d]`).
pub struct TrainGrads<F> {
    pub dh: Vec<F>,
    pub de: Vec<F>,
}

pub(crate) fn valid_rows(targets: &[u32], ignore: u32) -> Vec<usize> {
    (0..targets.len())
        .filter(|&i| targets[i] != ignore)
        .collect()
}

/// The rows of `h` listed in `rows`, packed.
pub(crate) fn gather<F: Float>(h: &[F], rows: &[usize], d: usize) -> Vec<F> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        out.extend_from_slice(&h[r * d..(r + 1) * d]);
    }
    out
}

/// Mean loss over rows whose target is not `ignore` (0 if none), and the saved state.
/// `h` is `[T, d]`, `table` (the embedding) `[V, d]`.
pub fn fwd<F: Float>(
    products: Products,
    h: &[F],
    table: &[F],
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> (F, LmHeadSaved<F>) {
    let v = table.len() / d;
    let table_t = Rhs::new(products, d, v, table, true);
    fwd_by(h, v, d, targets, ignore, ROWS_FWD, |m, hc, logits| {
        gemm_rhs(m, hc, false, &table_t, logits, false)
    })
}

/// [`fwd`] with the logits made by `logits_of(m, rows, out)`: `out[m, v]`
/// = `rows[m, d]` times the table transposed. Rows run in chunks of
/// `chunk` rows in parallel. (The packed engine's loss runs a vocabulary
/// slice at a time instead: `backend::cpu_bf16::lm_head`.)
fn fwd_by<F: Float>(
    h: &[F],
    v: usize,
    d: usize,
    targets: &[u32],
    ignore: u32,
    chunk: usize,
    logits_of: impl Fn(usize, &[F], &mut [F]) + Sync,
) -> (F, LmHeadSaved<F>) {
    let rows = valid_rows(targets, ignore);
    let hv = gather(h, &rows, d);
    let mut max = vec![F::ZERO; rows.len()];
    let mut sum = vec![F::ZERO; rows.len()];
    let mut losses = vec![F::ZERO; rows.len()];
    let chunk = chunk.max(1);
    hv.par_chunks(chunk * d)
        .zip(max.par_chunks_mut(chunk))
        .zip(sum.par_chunks_mut(chunk))
        .zip(losses.par_chunks_mut(chunk))
        .zip(rows.par_chunks(chunk))
        .for_each_init(
            || vec![F::ZERO; chunk * v],
            |logits, ((((hc, mc), sc), oc), rc)| {
                let m = rc.len();
                logits_of(m, hc, &mut logits[..m * v]);
                for (i, row) in logits[..m * v].chunks_exact_mut(v).enumerate() {
                    let target = row[targets[rc[i]] as usize];
                    let (mx, s) = exp_row_stats(row);
                    (mc[i], sc[i]) = (mx, s);
                    // (m - x_y) + ln s: exact when x_y is the maximum.
                    oc[i] = (mx - target) + s.ln();
                }
            },
        );
    let loss = if rows.is_empty() {
        F::ZERO
    } else {
        let total: f64 = losses.iter().map(|l| l.to_f64()).sum();
        F::from_f64(total / rows.len() as f64)
    };
    let saved = LmHeadSaved {
        rows,
        max,
        sum,
        grads: None,
    };
    (loss, saved)
}

/// `dh` (`[T, d]`, zero for rows without a target) is returned; `dtable`
/// accumulates. `dloss` is d(total)/d(mean loss). After the training
/// forward the gradients are only scaled by `dloss` (exact for 1).
#[allow(clippy::too_many_arguments)]
pub fn bwd<F: Float>(
    products: Products,
    h: &[F],
    table: &[F],
    d: usize,
    targets: &[u32],
    saved: &LmHeadSaved<F>,
    dloss: F,
    dtable: &mut [F],
) -> Vec<F> {
    let v = table.len() / d;
    let t = targets.len();
    let rows = &saved.rows;
    let mut dh = alloc::zeros(t * d);
    if rows.is_empty() {
        return dh;
    }
    if let Some(g) = &saved.grads {
        scaled_grads(g, rows, d, dloss, &mut dh, dtable);
        return dh;
    }
    let n = rows.len();
    let scale = dloss / F::from_usize(n);
    let hv = gather(h, rows, d);
    let slice = v.div_ceil(VOCAB_SLICES);
    // Each slice owns its rows of dtable and writes a partial dh.
    let partial: Vec<Vec<F>> = dtable
        .par_chunks_mut(slice * d)
        .zip(table.par_chunks(slice * d))
        .enumerate()
        .map(|(si, (dt, tb))| {
            let (v0, vs) = (si * slice, tb.len() / d);
            let mut dhp = vec![F::ZERO; n * d];
            let mut dl = vec![F::ZERO; ROWS_BWD * vs];
            let (tb_t, tb_n) = (
                Rhs::new(products, d, vs, tb, true),
                Rhs::new(products, vs, d, tb, false),
            );
            for (c, (hc, dhc)) in hv
                .chunks(ROWS_BWD * d)
                .zip(dhp.chunks_mut(ROWS_BWD * d))
                .enumerate()
            {
                let m = hc.len() / d;
                let dl = &mut dl[..m * vs];
                gemm_rhs(m, hc, false, &tb_t, dl, false);
                for (i, row) in dl.chunks_exact_mut(vs).enumerate() {
                    let r = c * ROWS_BWD + i;
                    let (mx, inv) = (saved.max[r], scale / saved.sum[r]);
                    exp_scaled(row, mx, inv);
                    let y = targets[rows[r]] as usize;
                    if (v0..v0 + vs).contains(&y) {
                        row[y - v0] -= scale;
                    }
                }
                gemm_in(products, vs, d, m, dl, true, hc, false, dt, true);
                gemm_rhs(m, dl, false, &tb_n, dhc, false);
            }
            dhp
        })
        .collect();
    for (i, &r) in rows.iter().enumerate() {
        let out = &mut dh[r * d..(r + 1) * d];
        for p in &partial {
            for (o, &g) in out.iter_mut().zip(&p[i * d..(i + 1) * d]) {
                *o += g;
            }
        }
    }
    dh
}

/// The training forward's gradients times `dloss`: `dh` scattered to its
/// rows, `dE` added into `dtable`.
fn scaled_grads<F: Float>(
    g: &TrainGrads<F>,
    rows: &[usize],
    d: usize,
    dloss: F,
    dh: &mut [F],
    dtable: &mut [F],
) {
    for (i, &r) in rows.iter().enumerate() {
        for (o, &x) in dh[r * d..(r + 1) * d].iter_mut().zip(&g.dh[i * d..]) {
            *o = x * dloss;
        }
    }
    dtable
        .par_chunks_mut(1 << 14)
        .zip(g.de.par_chunks(1 << 14))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o += x * dloss;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{linear, xent};
    use super::*;

    /// Same loss and gradients as the unfused linear + cross entropy.
    #[test]
    fn matches_linear_then_cross_entropy() {
        let (t, d, v) = (300, 5, 37); // rows over two backward chunks, uneven slices
        let h = vals(t * d, 1);
        let table = vals(v * d, 2);
        let targets: Vec<u32> = (0..t as u32)
            .map(|i| if i % 7 == 3 { 99 } else { (i * 5) % v as u32 })
            .collect();
        let (loss, saved) = fwd(Products::F32, &h, &table, d, &targets, 99);
        let mut logits = vec![0.0; t * v];
        linear::fwd(&h, &table, None, t, d, v, &mut logits);
        let mut l = vec![0.0; t];
        let want = xent::fwd(&logits, &targets, 99, &mut l);
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");

        let mut dtable = vec![0.5; v * d]; // accumulates
        let dh = bwd(
            Products::F32,
            &h,
            &table,
            d,
            &targets,
            &saved,
            1.5,
            &mut dtable,
        );
        let mut dlogits = vec![0.0; t * v];
        xent::bwd(&logits, &targets, 99, 1.5, &mut dlogits);
        let mut dh_want = vec![0.0; t * d];
        let mut dt_want = vec![0.5; v * d];
        linear::bwd(
            &h,
            &table,
            &dlogits,
            t,
            d,
            v,
            Some(&mut dh_want),
            &mut dt_want,
            None,
        );
        for (a, b) in dh.iter().zip(&dh_want).chain(dtable.iter().zip(&dt_want)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // No targets at all: zero loss, zero gradient.
        let none = vec![99u32; t];
        let (l0, s0) = fwd(Products::F32, &h, &table, d, &none, 99);
        assert_eq!(l0, 0.0);
        let mut dt = vec![0.0; v * d];
        assert!(
            bwd(Products::F32, &h, &table, d, &none, &s0, 1.0, &mut dt)
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    /// Logits of 1e30 (f32): every row all equal, so the loss is ln V and
    /// the softmax 1/V. The logsumexp kept before (m + ln s) lost ln s at
    /// that size: loss 0 and a softmax of 1. So does the training pass,
    /// whose slices' sums are combined.
    #[test]
    fn large_logits_keep_their_log_sum() {
        large_logits_keep_their_log_sum_through(fwd);
        large_logits_keep_their_log_sum_through(super::super::lm_head_train::train_fwd);
    }

    type Fwd = fn(Products, &[f32], &[f32], usize, &[u32], u32) -> (f32, LmHeadSaved<f32>);
    fn large_logits_keep_their_log_sum_through(fwd: Fwd) {
        let (t, d, v) = (3usize, 1usize, 37usize);
        let h = vec![1e15f32; t * d];
        let table = vec![1e15f32; v * d];
        let targets = [0u32, 5, 36];
        let (loss, saved) = fwd(Products::F32, &h, &table, d, &targets, u32::MAX);
        let want = (v as f32).ln();
        assert!((loss - want).abs() < 1e-5, "{loss} vs ln {v} = {want}");
        // d(loss)/d(h) = sum_j (p_j - onehot_j) e_j = (1 - 1) * 1e15 = 0, and
        // d(loss)/d(e_j) = (p_j - onehot_j) h / t summed over rows: 1/V of h
        // for every entry, less h/t where j is a row's target.
        let mut dtable = vec![0f32; v * d];
        let dh = bwd(
            Products::F32,
            &h,
            &table,
            d,
            &targets,
            &saved,
            1.0,
            &mut dtable,
        );
        assert!(dh.iter().all(|g| g.abs() <= 1e15 * 1e-5), "{dh:?}");
        for (j, &g) in dtable.iter().enumerate() {
            let hits = targets.iter().filter(|&&y| y as usize == j).count() as f32;
            let want = 1e15 * (1.0 / v as f32 - hits / t as f32);
            assert!((g - want).abs() <= 1e15 * 1e-5, "dE[{j}] {g} vs {want}");
        }
    }
}
