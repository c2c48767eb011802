//! The tied LM head's training forward: loss, `dh` and `dE` in one pass over
//! the logits, for `dloss = 1` (both are linear in it: the backward only
//! scales them, see [`super::lm_head::bwd`]). Three products of `2·T·V·d`
//! instead of the forward's one and the backward's three, and one exp pass
//! instead of two.
//!
//! Rows with a target go a chunk at a time; in each, every fixed slice of
//! the vocabulary makes its logits and per-row partial max and sum, the
//! slices' statistics are combined in slice order, then each slice turns
//! its logits into `dlogits` in place, adds `dlᵀ·h` into its own rows of
//! `dE` and makes a partial `dh`, summed in slice order: the same bits
//! whatever the thread count. Memory: a chunk of `ROWS · V` logits and the
//! `dE` buffer (`V · d`, 29 MB for `tiny`'s 56k vocabulary), kept until the
//! backward.

use super::alloc;
use super::lm_head::{LmHeadSaved, TrainGrads, VOCAB_SLICES, gather, valid_rows};
use super::matmul::{Products, Rhs, gemm_in, gemm_rhs};
use super::simd::{add_into, exp_row_stats, scale};
use crate::engine::float::Float;
use rayon::prelude::*;

/// Rows per chunk: `dE` is read and written once per chunk, so fewer,
/// larger chunks move less memory (57 MB of f32 logits at 56k entries).
const ROWS: usize = 256;

/// Vocabulary entries per slice, at most: a slice's chunk of logits
/// (`ROWS` x 2,048 f32, 2 MiB) is made, exponentiated, scaled and read
/// by both gradient products in turn, so it should stay in cache between
/// those passes. Eight slices of IoT Sentinel's 56,103 entries (7 MiB
/// each) were 12-17 % slower in bf16 mixed precision on a 2-core Zen 5
/// than 32 of them (f32: the same); at least [`VOCAB_SLICES`].
const SLICE_COLS: usize = 2048;

/// How many slices a vocabulary of `v` entries is cut into: fixed by `v`
/// alone, so the sums run in the same order whatever the thread count.
fn slice_count(v: usize) -> usize {
    v.div_ceil(SLICE_COLS).max(VOCAB_SLICES)
}

#[cfg(test)]
thread_local! {
    /// Training forwards run on this thread: tests tell the paths apart.
    pub(crate) static TRAIN_PASSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One vocabulary slice: its table packed both ways (once per op), its own
/// rows of `dE`, and for the current chunk its logits and statistics.
struct Slice<'a, F> {
    v0: usize,
    vs: usize,
    table_t: Rhs<'a, F>,
    table_n: Rhs<'a, F>,
    de: &'a mut [F],
    /// `ROWS · vs` logits, then `dlogits`.
    logits: &'a mut [F],
    /// The chunk's partial `dh`, `ROWS · d`.
    dh: Vec<F>,
    max: Vec<F>,
    sum: Vec<F>,
    /// The target's logit, for rows whose target lies in this slice.
    target: Vec<F>,
    /// `exp(max - m) / (n·s)`: turns this slice's `exp(x - max)` into
    /// the softmax over `n` (the combined `m`, `s`).
    factor: Vec<F>,
}

/// Target `y`'s index in the slice of `vs` entries from `v0`, if it lies there.
fn local(y: usize, v0: usize, vs: usize) -> Option<usize> {
    y.checked_sub(v0).filter(|&j| j < vs)
}

impl<F: Float> Slice<'_, F> {
    /// Logits of the chunk's `m` rows `hc`, left as `exp(x - max)`.
    fn stats(&mut self, hc: &[F], m: usize, tg: &[usize]) {
        let logits = &mut self.logits[..m * self.vs];
        gemm_rhs(m, hc, false, &self.table_t, logits, false);
        for (i, row) in logits.chunks_exact_mut(self.vs).enumerate() {
            if let Some(j) = local(tg[i], self.v0, self.vs) {
                self.target[i] = row[j];
            }
            (self.max[i], self.sum[i]) = exp_row_stats(row);
        }
    }

    /// `dlogits = softmax / n - onehot / n`, then `dE += dlᵀ·h` and the
    /// partial `dh = dl·E`. `first`: `dE` holds nothing yet.
    #[allow(clippy::too_many_arguments)]
    fn grads(
        &mut self,
        products: Products,
        hc: &[F],
        m: usize,
        d: usize,
        tg: &[usize],
        inv_n: F,
        first: bool,
    ) {
        let (v0, vs) = (self.v0, self.vs);
        let rows = self.logits[..m * vs].chunks_exact_mut(vs);
        for ((row, &f), &y) in rows.zip(&self.factor).zip(tg) {
            scale(row, f);
            if let Some(j) = local(y, v0, vs) {
                row[j] -= inv_n;
            }
        }
        let dl = &self.logits[..m * vs];
        gemm_in(products, vs, d, m, dl, true, hc, false, self.de, !first);
        gemm_rhs(m, dl, false, &self.table_n, &mut self.dh[..m * d], false);
    }
}

/// [`super::lm_head::fwd`] for training: the same loss (to rounding: the
/// sum of exponentials is combined from the slices'), with `dh` and `dE`
/// for `dloss = 1` kept in the saved state for the backward.
pub fn train_fwd<F: Float>(
    products: Products,
    h: &[F],
    table: &[F],
    d: usize,
    targets: &[u32],
    ignore: u32,
) -> (F, LmHeadSaved<F>) {
    #[cfg(test)]
    TRAIN_PASSES.with(|c| c.set(c.get() + 1));
    let v = table.len() / d;
    let rows = valid_rows(targets, ignore);
    let n = rows.len();
    if n == 0 {
        // Nothing to learn: the backward returns zeros for an empty `rows`.
        let saved = LmHeadSaved {
            rows,
            max: Vec::new(),
            sum: Vec::new(),
            grads: None,
        };
        return (F::ZERO, saved);
    }
    let hv = gather(h, &rows, d);
    let cap = ROWS.min(n);
    let slice = v.div_ceil(slice_count(v));
    let mut de = alloc::zeros(v * d);
    let mut logits = alloc::zeros(cap * v);
    let mut slices: Vec<Slice<F>> = de
        .par_chunks_mut(slice * d)
        .zip(table.par_chunks(slice * d))
        .zip(logits.par_chunks_mut(cap * slice))
        .enumerate()
        .map(|(si, ((de, tb), logits))| {
            let vs = tb.len() / d;
            Slice {
                v0: si * slice,
                vs,
                table_t: Rhs::new(products, d, vs, tb, true),
                table_n: Rhs::new(products, vs, d, tb, false),
                de,
                logits,
                dh: vec![F::ZERO; cap * d],
                max: vec![F::ZERO; cap],
                sum: vec![F::ZERO; cap],
                target: vec![F::ZERO; cap],
                factor: vec![F::ZERO; cap],
            }
        })
        .collect();
    let inv_n = F::ONE / F::from_usize(n);
    let (mut max, mut sum) = (vec![F::ZERO; n], vec![F::ZERO; n]);
    let mut dh = vec![F::ZERO; n * d];
    let mut total = 0f64;
    for (c, hc) in hv.chunks(ROWS * d).enumerate() {
        let (r0, m) = (c * ROWS, hc.len() / d);
        let tg: Vec<usize> = rows[r0..r0 + m]
            .iter()
            .map(|&r| targets[r] as usize)
            .collect();
        slices.par_iter_mut().for_each(|s| s.stats(hc, m, &tg));
        for i in 0..m {
            // Fixed slice order: m = max mᵢ, s = Σ sᵢ·exp(mᵢ - m).
            let mx = slices
                .iter()
                .fold(F::neg_infinity(), |a, s| a.max(s.max[i]));
            let mut s = F::ZERO;
            for sl in &mut slices {
                sl.factor[i] = (sl.max[i] - mx).exp();
                s += sl.sum[i] * sl.factor[i];
            }
            let scale = inv_n / s;
            for sl in &mut slices {
                sl.factor[i] *= scale;
            }
            let x_y = slices[tg[i] / slice].target[i];
            // (m - x_y) + ln s: exact when x_y is the maximum (as fwd).
            total += ((mx - x_y) + s.ln()).to_f64();
            (max[r0 + i], sum[r0 + i]) = (mx, s);
        }
        slices
            .par_iter_mut()
            .for_each(|s| s.grads(products, hc, m, d, &tg, inv_n, c == 0));
        let out = &mut dh[r0 * d..(r0 + m) * d];
        for s in &slices {
            add_into(out, &s.dh[..m * d]);
        }
    }
    drop(slices);
    let loss = F::from_f64(total / n as f64);
    let grads = Some(TrainGrads { dh, de });
    (
        loss,
        LmHeadSaved {
            rows,
            max,
            sum,
            grads,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::backend::Cpu;
    use super::super::lm_head::{bwd, fwd};
    use super::super::testutil::{on_threads, vals};
    use super::*;
    use crate::autograd::tape::Tape;
    use crate::backend::cpu_bf16::Kernel;

    const IGNORE: u32 = 999;

    /// 600 rows (three chunks, the last short), a 61-entry vocabulary
    /// (slices of 8, the last of 5), every 7th row without a target.
    fn case<F: Float>() -> (Vec<F>, Vec<F>, usize, Vec<u32>) {
        case_of(600, 6, 61)
    }

    fn case_of<F: Float>(t: usize, d: usize, v: usize) -> (Vec<F>, Vec<F>, usize, Vec<u32>) {
        let f = |x: Vec<f64>| x.into_iter().map(|x| F::from_f64(3.0 * x)).collect();
        let targets = (0..t as u32)
            .map(|i| {
                if i % 7 == 3 {
                    IGNORE
                } else {
                    (i * 7919) % v as u32 // across every slice
                }
            })
            .collect();
        (f(vals(t * d, 1)), f(vals(v * d, 2)), d, targets)
    }

    /// Loss, `dh` and the accumulated `dtable` (from 0.5) through `fwd`.
    type Run<F> = (F, Vec<F>, Vec<F>);
    fn run<F: Float>(
        products: Products,
        train: bool,
        (h, table, d, targets): &(Vec<F>, Vec<F>, usize, Vec<u32>),
        dloss: F,
    ) -> Run<F> {
        let go = if train { train_fwd } else { fwd };
        let (loss, saved) = go(products, h, table, *d, targets, IGNORE);
        assert_eq!(saved.grads.is_some(), train && !saved.rows.is_empty());
        let mut dtable = vec![F::from_f64(0.5); table.len()];
        let dh = bwd(products, h, table, *d, targets, &saved, dloss, &mut dtable);
        (loss, dh, dtable)
    }

    /// `a` against `b` within `tol` of the largest magnitude in `b`.
    fn close<F: Float>(a: &[F], b: &[F], tol: f64, what: &str) {
        let big = b.iter().fold(0f64, |m, x| m.max(x.to_f64().abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let (x, y) = (x.to_f64(), y.to_f64());
            assert!((x - y).abs() <= tol * big, "{what}[{i}]: {x} vs {y}");
        }
    }

    fn fused_matches_unfused<F: Float>(products: Products, tol: f64) {
        let c = case::<F>();
        for dloss in [1.0, 1.5] {
            let dloss = F::from_f64(dloss);
            let (l0, dh0, dt0) = run(products, false, &c, dloss);
            let (l1, dh1, dt1) = run(products, true, &c, dloss);
            close(&[l1], &[l0], tol, "loss");
            close(&dh1, &dh0, tol, "dh");
            close(&dt1, &dt0, tol, "dtable");
            // Rows without a target get no gradient.
            assert!(dh1[3 * c.2..4 * c.2].iter().all(|&g| g == F::ZERO));
        }
        // No targets at all: zero loss and gradient, dtable untouched.
        let none = (c.0.clone(), c.1.clone(), c.2, vec![IGNORE; c.3.len()]);
        let (l, dh, dt) = run(products, true, &none, F::ONE);
        assert_eq!(l, F::ZERO);
        assert!(dh.iter().all(|&g| g == F::ZERO));
        assert!(dt.iter().all(|&g| g == F::from_f64(0.5)));
    }

    #[test]
    fn fused_training_pass_matches_forward_then_backward() {
        fused_matches_unfused::<f64>(Products::F32, 1e-12);
        fused_matches_unfused::<f32>(Products::F32, 1e-6);
        // bf16 operands: dlogits rounded apart by a few f32 ulps may round
        // to different bf16 values.
        let bf16 = Products::bf16_on(Kernel::Portable).unwrap();
        fused_matches_unfused::<f32>(bf16, 1e-2);
    }

    /// A vocabulary past 8 slices of `SLICE_COLS` is cut into more slices
    /// (10 of 2,000 here), with the same result.
    #[test]
    fn a_large_vocabulary_takes_more_slices_with_the_same_result() {
        assert_eq!((slice_count(61), slice_count(16_384)), (8, 8));
        assert_eq!(slice_count(20_000), 10);
        let c = case_of::<f64>(50, 4, 20_000);
        let (l0, dh0, dt0) = run(Products::F32, false, &c, 1.0);
        let (l1, dh1, dt1) = run(Products::F32, true, &c, 1.0);
        close(&[l1], &[l0], 1e-12, "loss");
        close(&dh1, &dh0, 1e-12, "dh");
        close(&dt1, &dt0, 1e-12, "dtable");
    }

    /// The slices and their sums are fixed: one thread or two, same bits.
    #[test]
    fn fused_training_pass_is_the_same_on_one_or_two_threads() {
        let c = case::<f32>();
        let bf16 = Products::bf16_on(Kernel::Portable).unwrap();
        for products in [Products::F32, bf16] {
            let on = |threads| on_threads(threads, || run(products, true, &c, 1.0));
            let (one, two) = (on(1), on(2));
            assert_eq!(one.0.to_bits(), two.0.to_bits());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one.1), bits(&two.1));
            assert_eq!(bits(&one.2), bits(&two.2));
        }
    }

    /// A recording tape takes the training pass; an inference tape keeps
    /// the forward alone (no `dE` buffer), with its loss bit for bit.
    #[test]
    fn only_a_recording_tape_takes_the_training_pass() {
        let (h, table, d, targets) = case::<f32>();
        let passes = || TRAIN_PASSES.with(|c| c.get());
        let loss_on = |mut tape: Tape<f32, Cpu>| {
            let x = tape.input(h.clone());
            let p = [&table[..]];
            tape.lm_head_xent(&p, x, 0, d, &targets, IGNORE).unwrap().1
        };
        let before = passes();
        let inferred = loss_on(Tape::cpu_inference());
        assert_eq!(passes(), before, "inference made the gradients");
        let (want, _) = fwd(Products::F32, &h, &table, d, &targets, IGNORE);
        assert_eq!(inferred.to_bits(), want.to_bits());
        loss_on(Tape::new());
        assert_eq!(passes(), before + 1, "training kept the forward alone");
    }
}
